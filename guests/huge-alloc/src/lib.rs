//! Hostile plugin: process-message asks for one 1 GiB allocation
//! (`Vec::with_capacity(1 << 30)`) and writes its last byte; the host's memory cap must
//! refuse the growth. timer-event answers at once.

use corral_guest::{Failure, Guest, Message};

struct HugeAlloc;

impl Guest for HugeAlloc {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let mut block = Vec::<u8>::with_capacity(1 << 30);
        block.resize(1, 0);
        // Touch the last byte of the reserved block through the spare capacity, so the
        // allocation cannot be optimised away and no `unsafe` is needed.
        let spare = block.spare_capacity_mut();
        let last = spare.len() - 1;
        spare[last].write(1);
        std::hint::black_box(&block);
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(HugeAlloc);
