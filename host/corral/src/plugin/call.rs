//! One call into a plugin: what it costs in its stats, and the failure policy that
//! decides, after each call, whether the plugin goes on, loses its instance or is
//! terminated (see the `plugin` module's docs).

use std::time::Instant;

use super::{CallError, Done, Entry, Facts, Plugin, PluginState};
use crate::lock;

impl Plugin {
    pub(crate) fn call(&self, entry: Entry<'_>) -> Result<Done, CallError> {
        let wrong_world = |export: &str, reason: &str| CallError::Export {
            plugin: self.name().to_owned(),
            export: export.to_owned(),
            reason: reason.to_owned(),
        };
        match (&entry, self.decodes) {
            (Entry::Messages(_), true) => {
                return Err(wrong_world(
                    "process-message",
                    "it is a decoder: it takes raw records (`decode`), not messages",
                ));
            }
            (Entry::Records(_), false) => {
                return Err(wrong_world("decode", "it is not a decoder: it takes messages"));
            }
            _ => {}
        }
        let mut cell = lock(&self.cell);
        if cell.retired {
            return Err(CallError::Unloaded {
                plugin: self.name().to_owned(),
            });
        }
        if let PluginState::Terminated { reason } = &cell.state {
            if !cell.restarts.is_due(Instant::now()) {
                return Err(CallError::Terminated {
                    plugin: self.name().to_owned(),
                    reason: reason.clone(),
                });
            }
            self.restart(&mut cell)?;
        }
        let messages = match entry {
            Entry::Messages(messages) => messages.len() as u64,
            Entry::Records(records) => records.len() as u64,
            Entry::Timer(_) | Entry::Export(_) => 0,
        };
        let is_export = matches!(entry, Entry::Export(_));
        let is_timer = matches!(entry, Entry::Timer(_));
        // Timer events are rare: every one is timed. Messages are timed one in eight: a
        // call is timed when it holds a message whose number is a multiple of eight.
        // Calls by name likewise, one in eight.
        let (count, n) = if is_export {
            (&mut cell.export_calls, 1)
        } else {
            (&mut cell.message_calls, messages)
        };
        let timed = is_timer || count.next_multiple_of(crate::plugin::TIMING_SAMPLE) < *count + n;
        *count += n;
        let started = timed.then(Instant::now);
        let mut restarted = false;
        let mut facts = Facts::default();
        let result = self.run(&mut cell, entry, &mut restarted, &mut facts);
        let took = started.map(|started| started.elapsed());
        self.show_tier(&cell);

        let mut stats = lock(&self.stats);
        stats.instances += u64::from(restarted);
        if let Err(error @ CallError::Export { .. }) = result {
            // Nothing ran: the caller asked for an export that is not there.
            return Err(error);
        }
        let entry_stats = if is_export {
            &mut stats.exports
        } else if is_timer {
            &mut stats.timer_event
        } else {
            &mut stats.process_message
        };
        let failed = match &result {
            Ok(done) => done.failed.len() as u64,
            Err(_) => messages.max(1),
        };
        entry_stats.record(messages.max(1), took, failed);
        stats.max_fuel_used = stats.max_fuel_used.max(facts.fuel_used);
        stats.max_output_bytes = stats.max_output_bytes.max(facts.output_used);
        stats.memory_bytes = facts.memory;
        stats.peak_memory_bytes = stats.peak_memory_bytes.max(facts.peak_memory);
        let max = self.spec.limits.max_consecutive_failures;
        let failures = match &result {
            Ok(done) => {
                stats.emitted += facts.emitted as u64;
                // One line for the batch, not one per failed message: the host's log
                // about a plugin is aggregated and rate-limited.
                if let Some((index, error)) = done.failed.first() {
                    self.warn(format_args!(
                        "{} of {messages} messages of a batch failed, the first (message {index}): {error}",
                        done.failed.len()
                    ));
                }
                if let Some((_, error)) = done.failed.last() {
                    stats.last_error = Some(error.to_string());
                }
                Ok(&done.failed[..])
            }
            Err(error) => {
                stats.discarded += facts.emitted as u64;
                stats.last_error = Some(error.to_string());
                Err(error)
            }
        };
        match judge(&mut cell.consecutive_failures, max, messages, failures) {
            Some(reason) => self.terminate(&mut cell, &mut stats, reason),
            None => {
                if let Err(error) = &result {
                    self.warn(format_args!("call failed: {error}"));
                }
            }
        }
        result
    }
}

/// The failure policy, after one call: counts the failures in a row in `in_a_row` and
/// returns why the plugin is terminated, if it is.
///
/// `result` is the call's: the messages of it that failed by index (a `batch-filter`
/// call's non-fatal failures; none for a call that succeeded), or the error that failed
/// the whole call. Failures in a row are counted message by message through a batch, as
/// if each message had been a call of its own: a message that went through breaks the
/// run. A fatal failure terminates at once; `max` failures in a row (at least one)
/// terminate, named by the failure that reached `max`.
pub(super) fn judge(
    in_a_row: &mut u32,
    max: u32,
    messages: u64,
    result: Result<&[(usize, CallError)], &CallError>,
) -> Option<String> {
    let max = max.max(1);
    match result {
        Ok(failed) => {
            let mut next = 0;
            let mut too_many = None;
            for (index, error) in failed {
                if *index != next {
                    *in_a_row = 0;
                }
                *in_a_row += 1;
                next = index + 1;
                if *in_a_row >= max && too_many.is_none() {
                    too_many = Some(format!(
                        "{in_a_row} consecutive failed messages, the last: {error}"
                    ));
                }
            }
            if next as u64 != messages.max(1) || failed.is_empty() {
                *in_a_row = 0;
            }
            too_many
        }
        Err(error) => {
            *in_a_row += 1;
            match error {
                CallError::Fatal { .. } => Some(error.to_string()),
                _ if *in_a_row >= max => {
                    Some(format!("{in_a_row} consecutive failed calls, the last: {error}"))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::Trap;

    use super::*;

    fn failed(message: &str) -> CallError {
        CallError::Failed {
            plugin: "p".into(),
            message: message.into(),
        }
    }

    /// One call's result, as the table gives it: the indices of a batch's failed
    /// messages, or a whole call failing.
    enum Call {
        Batch(u64, &'static [usize]),
        Whole(fn() -> CallError),
    }

    #[test]
    fn the_failure_policy_counts_failures_in_a_row_and_terminates_at_the_limit() {
        let trap = || CallError::Trap {
            plugin: "p".into(),
            trap: Trap::UnreachableCodeReached,
        };
        let fatal = || CallError::Fatal {
            plugin: "p".into(),
            message: "gone".into(),
        };
        // (failures in a row before, max, the call) -> (in a row after, the start of
        // the termination reason, if terminated)
        #[rustfmt::skip]
        let table: &[(u32, u32, Call, u32, Option<&str>)] = &[
            // Calls of one message.
            (2, 3, Call::Batch(1, &[]), 0, None),
            (0, 3, Call::Batch(1, &[0]), 1, None),
            (2, 3, Call::Batch(1, &[0]), 3, Some("3 consecutive failed messages, the last: plugin `p` failed: m0")),
            (1, 3, Call::Whole(trap), 2, None),
            (2, 3, Call::Whole(trap), 3, Some("3 consecutive failed calls, the last: plugin `p` trapped")),
            // A fatal failure ends it whatever the count; a limit of 0 acts as 1.
            (0, 10, Call::Whole(fatal), 1, Some("plugin `p` failed fatally: gone")),
            (0, 0, Call::Whole(trap), 1, Some("1 consecutive failed calls")),
            // Batches: a message that went through breaks the run.
            (5, 10, Call::Batch(4, &[1, 2]), 0, None),
            (0, 10, Call::Batch(4, &[2, 3]), 2, None),
            (7, 10, Call::Batch(4, &[0, 1]), 0, None),
            (7, 10, Call::Batch(2, &[0, 1]), 9, None),
            // The failure that reached the limit names it, not the last of the batch.
            (1, 3, Call::Batch(3, &[0, 1, 2]), 4, Some("3 consecutive failed messages, the last: plugin `p` failed: m1")),
            // A run broken inside the batch starts again from 0.
            (2, 3, Call::Batch(4, &[0, 2, 3]), 2, Some("3 consecutive failed messages, the last: plugin `p` failed: m0")),
        ];
        for (row, (before, max, call, after, reason)) in table.iter().enumerate() {
            let mut in_a_row = *before;
            let verdict = match call {
                Call::Batch(messages, indices) => {
                    let failures: Vec<(usize, CallError)> =
                        indices.iter().map(|&i| (i, failed(&format!("m{i}")))).collect();
                    judge(&mut in_a_row, *max, *messages, Ok(&failures))
                }
                Call::Whole(error) => judge(&mut in_a_row, *max, 1, Err(&error())),
            };
            assert_eq!(in_a_row, *after, "row {row}: failures in a row");
            match (reason, &verdict) {
                (None, None) => {}
                (Some(expected), Some(got)) => assert!(got.starts_with(expected), "row {row}: {got}"),
                _ => panic!("row {row}: expected {reason:?}, got {verdict:?}"),
            }
        }
    }
}
