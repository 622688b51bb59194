//! The message of the call in progress, lent to the sandbox without a copy.
//!
//! Heka's `read_message` read the message a sandbox was given in place, and so does the
//! `message` resource here: `SandboxState::lend` puts a pointer to the caller's message in the
//! sandbox's state for exactly the duration of one call, and the imports read through
//! it: a string the guest asks for is lowered into its memory straight from the lent
//! message (`imports::add_message_to_linker`). Copying the message into the state instead (a clone per call, a dozen
//! allocations for a Heka-sized message) was the largest part of Corral's own cost per
//! message; see BENCHMARKS.md.

use std::ptr::NonNull;

use crate::contract::message::Message;

/// The message lent for the call in progress, or none between calls.
#[derive(Debug, Default)]
pub(crate) struct Current(pub(super) Option<NonNull<Message>>);

// SAFETY: `Current` stands for a `&Message`, which is `Send` because `Message` is `Sync`;
// the pointer is only ever set by `SandboxState::lend`, from such a reference.
#[allow(unsafe_code)]
unsafe impl Send for Current {}

impl Current {
    /// The message of the call in progress.
    pub fn get(&self) -> Option<&Message> {
        // SAFETY: only `SandboxState::lend` sets the pointer, from a `&Message` that outlives the call
        // it runs, and it clears the pointer before it returns, unwinding included. The
        // reference returned here borrows the state, which `lend` holds mutably for the
        // whole call, so it cannot outlive the call either.
        #[allow(unsafe_code)]
        self.0.map(|message| unsafe { message.as_ref() })
    }
}
