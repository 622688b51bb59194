//! Hostile plugin for the batch path: `process-batch` reports failures through
//! `failures.report` that do not fit the batch, chosen by the type of the batch's first
//! message:
//!
//! - `out-of-range`: one failure, of the index one past the last message;
//! - `duplicate`: two failures of message 0;
//! - `unsorted`: a failure of the last message, then of message 0;
//! - `too-many`: ten failures for each message, in order;
//! - `huge`: a failure of every message, each with a reason of `bytes` (int field of the
//!   first message) bytes;
//! - `escapes`: a failure of every message, with the message's payload as the reason;
//! - anything else: none.
//!
//! `timer-event` reports a failure of message 0, outside any `process-batch`.
//! `batch-liar-returning` tells the same lies as a plugin built before `failures`
//! did, returning them.

mod lies;

use corral_guest::{Batch, BatchGuest, Failure, MessageBatch};

struct BatchLiar;

impl BatchGuest for BatchLiar {
    fn process_batch(batch: MessageBatch) {
        let batch = Batch::new(batch);
        let messages: Vec<_> = batch.messages().collect();
        let Some(first) = messages.first() else {
            return;
        };
        let bytes = first.field("bytes").and_then(|v| v.as_i64()).unwrap_or(0) as usize;
        let payload = |i: u32| messages[i as usize].payload().to_owned();
        for (index, reason) in lies::lies(messages.len() as u32, first.type_(), bytes, payload) {
            corral_guest::report(index, &Failure::NonFatal(reason));
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        corral_guest::report(0, &Failure::NonFatal("no batch is being processed".into()));
        Ok(())
    }
}

corral_guest::export_plugin!(BatchLiar);
