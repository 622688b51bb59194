//! Hostile plugin: process-message keeps allocating 1 MiB blocks (and touching them)
//! until the host refuses to grow its memory. timer-event answers at once.

use corral_guest::{Failure, Guest, Message};

struct MemoryHog;

impl Guest for MemoryHog {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        loop {
            blocks.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&blocks);
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(MemoryHog);
