//! [`Plugin::decode`]: raw records into a `decoder` plugin (the layout is the
//! `contract::raw` module's).

use crate::contract::raw::RawRecord;
use crate::plugin::{BatchOutcome, CallError, Entry, Plugin};

impl Plugin {
    /// Hands the decoder `records`, in order, in one call: each record brings the
    /// budgets of one call (fuel, deadline, output, emits), as a message of a batch
    /// does. [`BatchOutcome::emitted`] holds the messages decoded (their logger is the
    /// plugin's name), [`BatchOutcome::failed`] the records that did not decode, by index.
    ///
    /// # Errors
    ///
    /// A [`CallError`] when the call failed as a whole (a trap, a limit, a fatal
    /// failure, a terminated plugin): every record of it failed, and nothing it decoded
    /// is kept. [`CallError::Export`] when the plugin is not a decoder (nothing ran).
    pub fn decode(&self, records: &[RawRecord<'_>]) -> Result<BatchOutcome, CallError> {
        if records.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let done = self.call(Entry::Records(records))?;
        Ok(BatchOutcome {
            emitted: done.outcome.emitted,
            logs: done.outcome.logs,
            failed: done.failed,
            calls: 1,
        })
    }
}
