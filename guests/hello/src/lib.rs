//! Example plugin: logs and emits a greeting for every message it is given.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

struct Hello;

impl Guest for Hello {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let greeting = corral_guest::config_or("greeting", "Hello");
        let text = format!("{greeting}, {}!", message.logger());
        corral_guest::info!("greeting a {} message", message.type_());
        println!("{text}");
        corral_guest::emit(
            &OutMessage::new("hello.greeting")
                .payload(&text)
                .field("to", Value::String(message.logger())),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(Hello);
