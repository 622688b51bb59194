//! Hostile plugin: process-message recurses until the WebAssembly stack runs out.

use corral_guest::{Failure, Guest, Message};

struct StackOverflow;

#[inline(never)]
#[allow(unconditional_recursion, reason = "recursing without end is the point")]
fn deeper(n: u64) -> u64 {
    // The addition after the call keeps it from becoming a loop.
    std::hint::black_box(deeper(n + 1)).wrapping_add(n)
}

impl Guest for StackOverflow {
    fn process_message(_: &Message) -> Result<(), Failure> {
        std::hint::black_box(deeper(0));
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(StackOverflow);
