//! Hostile plugin: process-message panics with a message naming the message's type.

use corral_guest::{Failure, Guest, Message};

struct Panics;

impl Guest for Panics {
    fn process_message(message: &Message) -> Result<(), Failure> {
        panic!("panicking on purpose for a {} message", message.type_());
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(Panics);
