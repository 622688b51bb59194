//! The rate limit on the host's log lines about one plugin.

use std::time::Instant;

/// A token bucket over the host's log lines about one plugin: a burst of
/// [`LogGate::BURST`] lines, then [`LogGate::PER_SECOND`] a second. A line that finds the
/// bucket empty is counted, not written. The first line of a run left out is replaced by
/// a notice that lines are being suppressed (so a plugin that goes quiet after a flood
/// still leaves a trace of it), and the next line let through is preceded by a summary
/// of how many were.
#[derive(Debug)]
pub(crate) struct LogGate {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

/// What [`LogGate::admit`] lets a line do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write it, after reporting the `suppressed` lines left out before it (if any).
    Write { suppressed: u64 },
    /// Leave it out; `first` when it starts a run of lines left out.
    Suppress { first: bool },
}

impl LogGate {
    /// Lines written at once before the rate applies.
    pub const BURST: f64 = 100.0;
    /// Lines a second after the burst.
    pub const PER_SECOND: f64 = 20.0;

    pub fn new() -> LogGate {
        LogGate {
            tokens: Self::BURST,
            last: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether a line may be written now.
    pub fn admit(&mut self) -> Admit {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return Admit::Suppress {
                first: self.suppressed == 1,
            };
        }
        self.tokens -= 1.0;
        Admit::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// Reports, under the plugin's name, what a [`LogGate`] decided: lines left out before
/// a line written, or the start of a run of them. Returns whether the line is written.
pub(crate) fn gate_report(plugin: &str, admit: Admit) -> bool {
    match admit {
        Admit::Write { suppressed } => {
            if suppressed > 0 {
                tracing::warn!(
                    target: "corral::guest",
                    plugin,
                    suppressed,
                    "suppressed {suppressed} log lines about this plugin (more than {} a second)",
                    LogGate::PER_SECOND
                );
            }
            true
        }
        Admit::Suppress { first: true } => {
            tracing::warn!(
                target: "corral::guest",
                plugin,
                "log lines about this plugin are suppressed: more than {} a second after a \
                 burst of {}; their count is logged before the next line let through",
                LogGate::PER_SECOND,
                LogGate::BURST
            );
            false
        }
        Admit::Suppress { first: false } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gate_lets_a_burst_through_then_announces_and_counts_what_it_leaves_out() {
        let mut gate = LogGate::new();
        for _ in 0..LogGate::BURST as usize {
            assert_eq!(gate.admit(), Admit::Write { suppressed: 0 });
        }
        assert_eq!(gate.admit(), Admit::Suppress { first: true });
        assert_eq!(gate.admit(), Admit::Suppress { first: false });
        assert_eq!(gate.admit(), Admit::Suppress { first: false });
        // A token back (1/20 s): the next line is written after the count of three.
        gate.last -= std::time::Duration::from_millis(60);
        assert_eq!(gate.admit(), Admit::Write { suppressed: 3 });
    }
}
