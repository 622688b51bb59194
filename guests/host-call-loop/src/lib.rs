//! Hostile plugin: process-message never returns, and spends its time in the host: it
//! calls `config.get("x")` and `store.get("k")` in turn, forever (fuel or the deadline
//! must stop it even so). timer-event answers at once.

use corral_guest::{Failure, Guest, Message, config, store};

struct HostCallLoop;

impl Guest for HostCallLoop {
    fn process_message(_: &Message) -> Result<(), Failure> {
        loop {
            std::hint::black_box(config::get("x"));
            std::hint::black_box(store::get("k")).ok();
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(HostCallLoop);
