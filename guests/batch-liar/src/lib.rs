//! Hostile plugin for the batch path: `process-batch` returns failures that do not fit
//! the batch, chosen by the type of the batch's first message:
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
//! timer-event answers at once.

use corral_guest::{Batch, BatchFailure, BatchGuest, Failure, MessageBatch};

struct BatchLiar;

fn failure(index: u32, reason: String) -> BatchFailure {
    BatchFailure {
        index,
        failure: Failure::NonFatal(reason),
    }
}

impl BatchGuest for BatchLiar {
    fn process_batch(batch: MessageBatch) -> Vec<BatchFailure> {
        let batch = Batch::new(batch);
        let messages: Vec<_> = batch.messages().collect();
        let n = messages.len() as u32;
        let Some(first) = messages.first() else {
            return Vec::new();
        };
        match first.type_() {
            "out-of-range" => vec![failure(n, "past the end".into())],
            "duplicate" => vec![failure(0, "once".into()), failure(0, "twice".into())],
            "unsorted" => vec![failure(n - 1, "last".into()), failure(0, "first".into())],
            "too-many" => (0..n)
                .flat_map(|i| (0..10).map(move |k| failure(i, format!("failure {k}"))))
                .collect(),
            "huge" => {
                let bytes = first.field("bytes").and_then(|v| v.as_i64()).unwrap_or(0) as usize;
                (0..n).map(|i| failure(i, "x".repeat(bytes))).collect()
            }
            "escapes" => messages
                .iter()
                .enumerate()
                .map(|(i, m)| failure(i as u32, m.payload().to_owned()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export_plugin!(BatchLiar);
