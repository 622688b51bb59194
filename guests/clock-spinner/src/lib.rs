//! Hostile plugin: process-message never returns: it reads the wall clock and the
//! monotonic clock and hashes them with a fresh `RandomState` (random keys from the
//! host) on every turn, forever (fuel or the deadline must stop it). timer-event answers
//! at once.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Instant, SystemTime};

use corral_guest::{Failure, Guest, Message};

struct ClockSpinner;

impl Guest for ClockSpinner {
    fn process_message(_: &Message) -> Result<(), Failure> {
        loop {
            let wall = SystemTime::now();
            let mono = Instant::now();
            std::hint::black_box(RandomState::new().hash_one((wall, mono)));
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(ClockSpinner);
