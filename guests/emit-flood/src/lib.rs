//! Hostile plugin: process-message emits messages without end: small ones (to hit the
//! emit cap), or 8 KiB ones when the message's type is `big` (to hit the output cap).

use corral_guest::{Failure, Guest, Message, OutMessage};

struct EmitFlood;

impl Guest for EmitFlood {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let payload = if message.type_() == "big" {
            "x".repeat(8 << 10)
        } else {
            String::new()
        };
        loop {
            corral_guest::emit(&OutMessage::new("flood").payload(payload.clone()));
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(EmitFlood);
