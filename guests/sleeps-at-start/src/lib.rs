//! Hostile plugin: sleeps for an hour while its instance starts, in the core module's
//! `_initialize` (where static constructors run), before any entry point is called. Its
//! entry points answer at once.

use std::time::Duration;

use corral_guest::{Failure, Guest, Message};

/// The core module's initialiser, which the component calls as it starts, before any
/// entry point: where a C or C++ guest runs its static constructors.
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    std::thread::sleep(Duration::from_secs(3600));
}

struct SleepsAtStart;

impl Guest for SleepsAtStart {
    fn process_message(_: &Message) -> Result<(), Failure> {
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(SleepsAtStart);
