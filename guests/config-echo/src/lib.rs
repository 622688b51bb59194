//! Example plugin: emits its configuration values as one `config-echo` message, a string
//! field per key, on every message and every timer event.

use corral_guest::{Failure, Guest, Message, OutMessage, Value, config};

struct ConfigEcho;

fn echo() -> Result<(), Failure> {
    let mut message = OutMessage::new("config-echo");
    for (key, value) in config::entries() {
        message = message.field(key, Value::String(value));
    }
    corral_guest::emit(&message);
    Ok(())
}

impl Guest for ConfigEcho {
    fn process_message(_: &Message) -> Result<(), Failure> {
        echo()
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        echo()
    }
}

corral_guest::export!(ConfigEcho);
