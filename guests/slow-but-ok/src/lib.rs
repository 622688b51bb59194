//! Test plugin: process-message does a bounded amount of slow, legal work — `iterations`
//! (int field, default 20,000,000) turns of cheap arithmetic — then emits `slow-done`
//! with int field `iterations`, the number it did. timer-event answers at once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

const DEFAULT_ITERATIONS: i64 = 20_000_000;

struct SlowButOk;

impl Guest for SlowButOk {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let iterations = match message.field("iterations") {
            Some(Value::Int(n)) => n.max(0),
            _ => DEFAULT_ITERATIONS,
        };
        let mut acc: u64 = 0;
        for i in 0..iterations as u64 {
            acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(acc);
        corral_guest::emit(&OutMessage::new("slow-done").field("iterations", Value::Int(iterations)));
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(SlowButOk);
