//! Two compilers: a plugin new to the host serves from baseline code within milliseconds
//! while optimised code is compiled behind it.
//!
//! Cranelift makes fast code slowly: 80–150 ms for a 50–100 KB Rust guest on two cores,
//! and turning its optimisations off saves only a sixth (BENCHMARKS.md). Winch, wasmtime's
//! baseline compiler, translates each function in one pass and compiles the same guest
//! four to five times faster, into code that runs slower. With
//! [`crate::HostBuilder::baseline`], a component that is neither in memory nor in the
//! disk cache is compiled by Winch and serves at once, while a background thread compiles
//! it with Cranelift, writes that to the disk cache and hands it over through an
//! [`Upgrade`]. Each plugin then moves to the optimised code at the first point where
//! nothing can be lost:
//!
//! - an instance that has not yet been called is replaced by one of the optimised code;
//! - a plugin that exports `corral:plugin/state` hands its state over, as in a hot swap;
//! - any other instance keeps running its baseline code (its memory is the plugin's
//!   in-memory state, which only the guest can carry over), and the next instance, after
//!   a trap or a restart, is made from the optimised code.
//!
//! A component found in the disk cache is already optimised, so the baseline tier only
//! ever serves the first minutes of a new build.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sandbox::Code;

/// The optimised code for a component that is serving from baseline code: empty until
/// the background compile ends.
#[derive(Default)]
pub(crate) struct Upgrade {
    ready: AtomicBool,
    result: Mutex<Option<Result<Code, String>>>,
}

impl Upgrade {
    /// Whether the compile has ended. An atomic load: cheap enough for every call.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Hands over the optimised code, or why it could not be made.
    pub fn finish(&self, result: Result<Code, String>) {
        *crate::lock(&self.result) = Some(result);
        self.ready.store(true, Ordering::Release);
    }

    /// The result, once ready; every plugin serving the component gets a copy.
    pub fn result(&self) -> Option<Result<Code, String>> {
        if !self.is_ready() {
            return None;
        }
        crate::lock(&self.result).clone()
    }
}
