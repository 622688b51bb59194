//! Test plugin: re-emits the message it is given, read through every accessor of the
//! `message` resource. If the message has a string field `look-up`, the field it names
//! is also read by name and emitted as `found` (absent when there is no such field).

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

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
        corral_guest::emit(&OutMessage::new("tick").field("now-ns", Value::Int(now_ns)));
        Ok(())
    }
}

corral_guest::export!(Echo);
