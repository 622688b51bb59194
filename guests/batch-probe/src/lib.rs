//! Test plugin for the batch path (`tests/all`): a [`Plugin`] that does, for each message
//! of a batch, what its type asks, so the tests can check the order of processing, the
//! failures by index and what a [`MessageView`] reads:
//!
//! - `fail`: a non-fatal failure, `failed <payload>`;
//! - `fatal`: a fatal failure, `fatal <payload>`;
//! - `trap`: aborts (a trap);
//! - `loop`: spins until the fuel limit ends the call;
//! - `reused`: emits a `probe.reused` whose field `reused` says whether the SDK handed
//!   this batch the last call's list (`corral_guest::spare::reused`), then goes on as
//!   below;
//! - `wait`: waits for the number of milliseconds in its `ms` field (a slow message, so
//!   that the next ones queue up behind it), then goes on as below;
//! - anything else: emits a `probe.seen` whose payload is the message's and whose fields
//!   echo what the view read: `type`, `logger`, `severity`, `timestamp`, then every field
//!   of the message with its own type, in order, named `N.name` for the field at index N
//!   (the host refuses an emit that repeats a name, and a message may repeat one).
//!
//! Its timer emits a `probe.timer` with the time in the field `now`.

use corral_guest::{Failure, MessageView, OutMessage, Plugin, Value};

struct BatchProbe;

impl Plugin for BatchProbe {
    fn process_message(message: &MessageView<'_>) -> Result<(), Failure> {
        match message.type_() {
            "fail" => Err(Failure::non_fatal(format_args!("failed {}", message.payload()))),
            "fatal" => Err(Failure::fatal(format_args!("fatal {}", message.payload()))),
            "trap" => std::process::abort(),
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "reused" => {
                let reused = corral_guest::spare::reused();
                corral_guest::emit(&OutMessage::new("probe.reused").field("reused", Value::Bool(reused)));
                seen(message)
            }
            "wait" => {
                let ms = message.field("ms").and_then(|v| v.as_i64()).unwrap_or(0);
                let until = std::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                seen(message)
            }
            _ => seen(message),
        }
    }

    fn timer_event(now_ns: i64) -> Result<(), Failure> {
        corral_guest::emit(&OutMessage::new("probe.timer").field("now", Value::Int(now_ns)));
        Ok(())
    }
}

/// Emits what the view read.
fn seen(message: &MessageView<'_>) -> Result<(), Failure> {
    let mut seen = OutMessage::new("probe.seen")
        .payload(message.payload())
        .field("type", Value::String(message.type_().to_owned()))
        .field("logger", Value::String(message.logger().to_owned()))
        .field("severity", Value::Int(message.severity().into()))
        .field("timestamp", Value::Int(message.timestamp()));
    for (index, (name, value)) in message.fields().enumerate() {
        seen = seen.field(format!("{index}.{name}"), value.to_value());
    }
    corral_guest::emit(&seen);
    Ok(())
}

corral_guest::export_plugin!(BatchProbe);
