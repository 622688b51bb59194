//! The message of the call in progress, lent to the sandbox without a copy.
//!
//! Heka's `read_message` read the message a sandbox was given in place, and so does the
//! `message` resource here: [`lend`] puts a pointer to the caller's message in the
//! sandbox's state for exactly the duration of one call, and the imports read through
//! it. Copying the message into the state instead (a clone per call, a dozen
//! allocations for a Heka-sized message) was the largest part of Corral's own cost per
//! message; see BENCHMARKS.md.

use std::ptr::NonNull;

use wasmtime::Store;

use crate::message::Message;
use crate::sandbox::SandboxState;

/// The message lent for the call in progress, or none between calls.
#[derive(Debug, Default)]
pub(crate) struct Current(Option<NonNull<Message>>);

// SAFETY: `Current` stands for a `&Message`, which is `Send` because `Message` is `Sync`;
// the pointer is only ever set by `lend`, from such a reference.
#[allow(unsafe_code)]
unsafe impl Send for Current {}

impl Current {
    /// The message of the call in progress.
    pub fn get(&self) -> Option<&Message> {
        // SAFETY: only `lend` sets the pointer, from a `&Message` that outlives the call
        // it runs, and it clears the pointer before it returns, unwinding included. The
        // reference returned here borrows the state, which `lend` holds mutably for the
        // whole call, so it cannot outlive the call either.
        #[allow(unsafe_code)]
        self.0.map(|message| unsafe { message.as_ref() })
    }
}

/// Runs `call` with `message` readable through the state's [`Current`].
pub(crate) fn lend<R>(
    store: &mut Store<SandboxState>,
    message: &Message,
    call: impl FnOnce(&mut Store<SandboxState>) -> R,
) -> R {
    /// Clears the pointer however the call ends.
    struct Lent<'s>(&'s mut Store<SandboxState>);

    impl Drop for Lent<'_> {
        fn drop(&mut self) {
            self.0.data_mut().message = Current(None);
        }
    }

    let lent = Lent(store);
    lent.0.data_mut().message = Current(Some(NonNull::from(message)));
    call(&mut *lent.0)
}
