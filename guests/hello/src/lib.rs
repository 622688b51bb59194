//! Example plugin: logs and emits a greeting for every message it is given.

use corral_guest::{Failure, Message, OutMessage, Plugin, Value};

struct Hello;

impl Plugin for Hello {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let to = message.logger();
        let text = format!("{}, {to}!", corral_guest::config_or("greeting", "Hello"));
        corral_guest::info!("greeting a {} message", message.type_());
        println!("{text}");
        let greeting = OutMessage::new("hello.greeting").payload(&text);
        corral_guest::emit(&greeting.field("to", Value::String(to)));
        Ok(())
    }
}

corral_guest::export!(Hello);
