//! Hostile plugin: process-message fails non-fatally every time; timer-event fails
//! fatally.

use corral_guest::{Failure, Guest, Message};

struct Fails;

impl Guest for Fails {
    fn process_message(message: &Message) -> Result<(), Failure> {
        Err(Failure::non_fatal(format!("cannot handle {}", message.type_())))
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Err(Failure::fatal("giving up on purpose"))
    }
}

corral_guest::export!(Fails);
