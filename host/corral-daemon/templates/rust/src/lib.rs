//! {{name}}: a Corral plugin. It logs each message it is given and emits a
//! `{{name}}.seen` message naming its type.

// `Guest`, `Message` and `Failure` come from the world; `export!` registers the plugin.
wit_bindgen::generate!({ path: "wit", world: "filter" });

use corral::plugin::emit::emit;
use corral::plugin::log::{Level, log};
use corral::plugin::types::{Field, OutMessage, Value};

struct Plugin;

impl Guest for Plugin {
    /// Called for each message the sidecar's [matcher] lets through. Return
    /// `Err(Failure::NonFatal(..))` to count a failure and go on, `Failure::Fatal` to
    /// have the plugin terminated; a panic or a broken limit ends the call too.
    fn process_message(message: &Message) -> Result<(), Failure> {
        let type_ = message.type_();
        log(Level::Info, &format!("seen a {type_} message"));
        emit(&OutMessage {
            timestamp: None,
            type_: "{{name}}.seen".into(),
            logger: String::new(),
            severity: 6,
            payload: String::new(),
            fields: vec![Field {
                name: "type".into(),
                value: Value::String(type_),
            }],
        });
        Ok(())
    }

    /// Called every `ticker-interval-ms` (a sidecar setting) with the time in
    /// nanoseconds since the Unix epoch.
    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

export!(Plugin);
