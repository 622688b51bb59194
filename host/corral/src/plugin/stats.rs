//! Per-plugin statistics, as Heka reported them for each sandbox.
//!
//! Heka's report listed memory, max memory, max instructions, max output, message and
//! failure counts, inject counts and average durations. Corral keeps the same figures
//! (fuel stands for instructions) per entry point, plus terminations and restarts.

use std::time::Duration;

/// One `process-message` call in this many is timed, and one call of an export by name
/// (every `timer-event` is). Two
/// clock reads cost about 4% of a plain call (see BENCHMARKS.md), so, as Heka sampled
/// its durations, Corral times a sample: the first call and every eighth after it.
pub const TIMING_SAMPLE: u64 = 8;

/// Counters for one entry point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryStats {
    /// Calls made, failed or not, a batch counting one per message; calls refused
    /// because the plugin was terminated are not counted.
    pub calls: u64,
    /// Calls that failed, for any reason.
    pub failures: u64,
    /// Calls that were timed: one `process-message` in [`TIMING_SAMPLE`], one call of an
    /// export by name in [`TIMING_SAMPLE`], every `timer-event`.
    pub timed: u64,
    /// Time spent in the timed calls.
    pub total_duration: Duration,
    /// The longest timed call.
    pub max_duration: Duration,
}

impl EntryStats {
    /// The mean duration of a timed call, zero before the first call.
    pub fn average_duration(&self) -> Duration {
        match u32::try_from(self.timed) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_duration / n,
            Err(_) => Duration::from_secs_f64(self.total_duration.as_secs_f64() / self.timed as f64),
        }
    }

    /// Counts a call of `messages` messages (1 for a plain call), `failed` of them
    /// failed, with its duration when it was timed. A batch counts as that many calls,
    /// each taking the batch's mean.
    pub(crate) fn record(&mut self, messages: u64, took: Option<Duration>, failed: u64) {
        self.calls += messages;
        self.failures += failed;
        if let Some(took) = took {
            self.timed += messages;
            self.total_duration += took;
            let each = match u32::try_from(messages) {
                Ok(n) if n > 1 => took / n,
                _ => took,
            };
            self.max_duration = self.max_duration.max(each);
        }
    }
}

/// A snapshot of one plugin's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `process-message` calls.
    pub process_message: EntryStats,
    /// `timer-event` calls.
    pub timer_event: EntryStats,
    /// Calls of other exports by name ([`crate::Plugin::call_export`]), one in [`TIMING_SAMPLE`] timed.
    pub exports: EntryStats,
    /// Times the plugin was terminated (0 or 1 for one loaded plugin without a restart
    /// policy).
    pub terminations: u64,
    /// Times it was restarted after a termination, by its restart policy.
    pub restarts: u64,
    /// Instances created: 1 at load, plus one after each trap and one when the plugin
    /// moves from baseline to optimised code in a new instance.
    pub instances: u64,
    /// The most fuel one call used.
    pub max_fuel_used: u64,
    /// Linear memory (and tables) the current instance holds, in bytes.
    pub memory_bytes: u64,
    /// The most memory any instance of the plugin held, in bytes.
    pub peak_memory_bytes: u64,
    /// The most output (log, stdout, stderr and emitted bytes) of one call.
    pub max_output_bytes: u64,
    /// Messages emitted by calls that succeeded.
    pub emitted: u64,
    /// Messages emitted by calls that then failed, and so discarded.
    pub discarded: u64,
    /// The last error, if any call failed.
    pub last_error: Option<String>,
}

impl Stats {
    /// Calls to both entry points and to other exports.
    pub fn calls(&self) -> u64 {
        self.process_message.calls + self.timer_event.calls + self.exports.calls
    }

    /// Failed calls to both entry points and to other exports.
    pub fn failures(&self) -> u64 {
        self.process_message.failures + self.timer_event.failures + self.exports.failures
    }
}
