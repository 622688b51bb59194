//! Test plugin: re-emits the message it is given, read through every accessor of the
//! `message` resource. If the message has a string field `look-up`, the field it names
//! is also read by name and emitted as `found` (absent when there is no such field).
//! Each timer event emits a `tick` with the time it was given and how many timer events
//! this instance has seen, kept in guest memory.

use std::sync::atomic::{AtomicI64, Ordering};

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

static TICKS: AtomicI64 = AtomicI64::new(0);

struct Echo;

impl Guest for Echo {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let mut out = OutMessage {
            timestamp: Some(message.timestamp()),
            type_: message.type_(),
            logger: message.logger(),
            severity: message.severity(),
            payload: message.payload(),
            fields: message.fields(),
        };
        if let Some(Value::String(name)) = message.field("look-up")
            && let Some(value) = message.field(&name)
        {
            out = out.field("found", value);
        }
        corral_guest::emit(&out);
        Ok(())
    }

    fn timer_event(now_ns: i64) -> Result<(), Failure> {
        let ticks = TICKS.fetch_add(1, Ordering::Relaxed) + 1;
        corral_guest::emit(
            &OutMessage::new("tick")
                .field("now-ns", Value::Int(now_ns))
                .field("ticks", Value::Int(ticks)),
        );
        Ok(())
    }
}

corral_guest::export!(Echo);
