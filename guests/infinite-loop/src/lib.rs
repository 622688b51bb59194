//! Hostile plugin: process-message spins forever (fuel or the deadline must stop it).
//! timer-event answers at once and emits how many process-message calls this instance
//! has started, so a test can see that a fresh instance replaced a trapped one.

use std::sync::atomic::{AtomicU64, Ordering};

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

static STARTED: AtomicU64 = AtomicU64::new(0);

struct InfiniteLoop;

impl Guest for InfiniteLoop {
    fn process_message(_: &Message) -> Result<(), Failure> {
        STARTED.fetch_add(1, Ordering::Relaxed);
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let started = STARTED.load(Ordering::Relaxed) as i64;
        corral_guest::emit(&OutMessage::new("alive").field("started", Value::Int(started)));
        Ok(())
    }
}

corral_guest::export!(InfiniteLoop);
