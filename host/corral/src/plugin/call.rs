//! One call into a plugin: what it costs in its stats, and the failure policy that
//! decides, after each call, whether the plugin goes on, loses its instance or is
//! terminated (see the `plugin` module's docs).

use std::time::Instant;

use super::{CallError, Done, Entry, Plugin, PluginState};
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
        let (result, facts) = self.run(&mut cell, entry, &mut restarted);
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
        let max = self.spec.limits.max_consecutive_failures.max(1);
        match &result {
            Ok(done) => {
                stats.emitted += facts.emitted as u64;
                // Failures in a row, counted message by message through the batch, as
                // if each message had been a call of its own.
                let mut next = 0;
                let mut too_many = None;
                // One line for the batch, not one per failed message: the host's log
                // about a plugin is aggregated and rate-limited.
                if let Some((index, error)) = done.failed.first() {
                    self.warn(format_args!(
                        "{} of {messages} messages of a batch failed, the first (message {index}): {error}",
                        done.failed.len()
                    ));
                }
                for (index, error) in &done.failed {
                    if *index != next {
                        cell.consecutive_failures = 0;
                    }
                    cell.consecutive_failures += 1;
                    next = index + 1;
                    stats.last_error = Some(error.to_string());
                    if cell.consecutive_failures >= max && too_many.is_none() {
                        too_many = Some(format!(
                            "{} consecutive failed messages, the last: {error}",
                            cell.consecutive_failures
                        ));
                    }
                }
                if next as u64 != messages.max(1) || done.failed.is_empty() {
                    cell.consecutive_failures = 0;
                }
                if let Some(reason) = too_many {
                    self.terminate(&mut cell, &mut stats, reason);
                }
            }
            Err(error) => {
                stats.discarded += facts.emitted as u64;
                stats.last_error = Some(error.to_string());
                cell.consecutive_failures += 1;
                let reason = match error {
                    CallError::Fatal { .. } => Some(error.to_string()),
                    _ if cell.consecutive_failures >= max => Some(format!(
                        "{} consecutive failed calls, the last: {error}",
                        cell.consecutive_failures
                    )),
                    _ => None,
                };
                if let Some(reason) = reason {
                    self.terminate(&mut cell, &mut stats, reason);
                } else {
                    self.warn(format_args!("call failed: {error}"));
                }
            }
        }
        result
    }
}
