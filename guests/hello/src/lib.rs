//! Example plugin: logs and emits a greeting for every message it is given.

use corral_guest::{Failure, MessageView, OutMessage, Plugin, Value};

struct Hello;

impl Plugin for Hello {
    fn process_message(message: &MessageView<'_>) -> Result<(), Failure> {
        let to = message.logger();
        let text = format!("{}, {to}!", corral_guest::config_or("greeting", "Hello"));
        corral_guest::info!("greeting a {} message", message.type_());
        println!("{text}");
        let greeting = OutMessage::new("hello.greeting").payload(&text);
        corral_guest::emit(&greeting.field("to", Value::String(to.to_owned())));
        Ok(())
    }
}

corral_guest::export_plugin!(Hello);
