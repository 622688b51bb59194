//! Hostile plugin: process-message emits `flood` messages without end, each with a
//! 1 KiB bytes field named `bytes` and a 2 KiB string field (`text`), so the output cap
//! (64 KiB by default) ends the call well before the emit cap. timer-event answers at
//! once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

struct EmitBytesFlood;

impl Guest for EmitBytesFlood {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let data = vec![0xabu8; 1 << 10];
        let text = "y".repeat(2 << 10);
        for i in 0i64.. {
            corral_guest::emit(
                &OutMessage::new("flood")
                    .field("n", Value::Int(i))
                    .field("bytes", Value::Bytes(data.clone()))
                    .field("text", Value::String(text.clone())),
            );
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(EmitBytesFlood);
