//! Restarting a terminated plugin, when its options ask for it.
//!
//! Heka terminated a sandbox until an operator replaced it, and its users asked for years
//! for a way to bring one back by itself (heka#1692, hindsight#21); Envoy's `FAIL_RELOAD`
//! does it for its filters. A [`RestartPolicy`] gives a plugin that: after a termination
//! it waits a backoff, then starts a fresh instance and takes calls again. The backoff
//! grows by a factor with each restart in a row, up to a cap, and a plugin that stayed
//! up for [`RestartPolicy::reset_after`] starts over from the initial backoff. After
//! [`RestartPolicy::max_restarts`] restarts in a row it stays terminated. Without a
//! policy (the default) termination means "until replaced", as in Heka.

use std::time::{Duration, Instant, SystemTime};

/// When and how often a terminated plugin is restarted (see the module docs).
///
/// ```
/// use std::time::Duration;
/// let policy = corral::RestartPolicy {
///     initial_backoff: Duration::from_secs(5),
///     ..corral::RestartPolicy::default()
/// };
/// assert_eq!(policy.backoff(0), Duration::from_secs(5));
/// assert_eq!(policy.backoff(2), Duration::from_secs(20));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The wait before the first restart after a termination (default 1 s).
    pub initial_backoff: Duration,
    /// Each further restart in a row waits this many times longer (default 2; 1 keeps
    /// the wait constant).
    pub factor: u32,
    /// The longest wait (default 5 minutes).
    pub max_backoff: Duration,
    /// Restarts in a row after which the plugin stays terminated (default: none, it
    /// keeps trying at the capped backoff).
    pub max_restarts: Option<u32>,
    /// A plugin that runs this long after a restart without being terminated again has
    /// recovered: its next termination waits the initial backoff again (default 10
    /// minutes).
    pub reset_after: Duration,
}

impl RestartPolicy {
    /// The default initial backoff.
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
    /// The default factor.
    pub const DEFAULT_FACTOR: u32 = 2;
    /// The default cap on the backoff.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(300);
    /// The default time after which a restarted plugin counts as recovered.
    pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(600);

    /// The wait before restart number `in_a_row` (0 for the first after a recovery):
    /// the initial backoff times the factor to that power, capped.
    pub fn backoff(&self, in_a_row: u32) -> Duration {
        let mut wait = self.initial_backoff.min(self.max_backoff);
        for _ in 0..in_a_row {
            wait = wait.saturating_mul(self.factor.max(1));
            if wait >= self.max_backoff {
                return self.max_backoff;
            }
        }
        wait
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            factor: Self::DEFAULT_FACTOR,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            max_restarts: None,
            reset_after: Self::DEFAULT_RESET_AFTER,
        }
    }
}

/// Where a plugin with a restart policy stands, as [`crate::Plugin::restart_status`]
/// reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestartStatus {
    /// Restarts since it was loaded.
    pub restarts: u64,
    /// Restarts in a row, since it last recovered.
    pub in_a_row: u32,
    /// When the next restart is due, while it is terminated and one is.
    pub next_at: Option<SystemTime>,
    /// It reached [`RestartPolicy::max_restarts`] and stays terminated until replaced.
    pub gave_up: bool,
}

/// A plugin's restart bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    pub status: RestartStatus,
    /// When the next restart is due, on the monotonic clock.
    pub due: Option<Instant>,
    /// When the plugin was last restarted.
    pub last: Option<Instant>,
}

impl Restarts {
    /// Records a termination at `now`: when the next restart is due, or `None` when the
    /// policy gives up.
    pub fn terminated(&mut self, policy: &RestartPolicy, now: Instant) -> Option<Instant> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) >= policy.reset_after)
        {
            self.status.in_a_row = 0;
        }
        if policy.max_restarts.is_some_and(|max| self.status.in_a_row >= max) {
            self.status.gave_up = true;
            self.due = None;
            self.status.next_at = None;
            return None;
        }
        let wait = policy.backoff(self.status.in_a_row);
        self.due = now.checked_add(wait);
        self.status.next_at = SystemTime::now().checked_add(wait);
        self.due
    }

    /// Whether a restart is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due.is_some_and(|due| due <= now)
    }

    /// Records a restart at `now`.
    pub fn restarted(&mut self, now: Instant) {
        self.due = None;
        self.status.next_at = None;
        self.status.restarts += 1;
        self.status.in_a_row += 1;
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            factor: 3,
            max_backoff: Duration::from_secs(20),
            max_restarts: Some(4),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_backoff_grows_by_the_factor_up_to_the_cap() {
        let p = policy();
        let waits: Vec<u64> = (0..5).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 3, 9, 20, 20]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(20));
        let constant = RestartPolicy { factor: 1, ..p };
        assert_eq!(constant.backoff(7), Duration::from_secs(1));
    }

    #[test]
    fn restarts_in_a_row_give_up_at_the_most_and_reset_after_a_recovery() {
        let p = policy();
        let start = Instant::now();
        let mut r = Restarts::default();
        let mut now = start;
        for expected in [1, 3, 9, 20] {
            let due = r.terminated(&p, now).expect("a restart is due");
            assert_eq!(due - now, Duration::from_secs(expected));
            assert!(!r.is_due(now) && r.is_due(due));
            now = due;
            r.restarted(now);
        }
        assert_eq!(r.terminated(&p, now), None, "four in a row is the most");
        assert!(r.status.gave_up && r.status.next_at.is_none());

        let mut r = Restarts::default();
        r.terminated(&p, start);
        r.restarted(start);
        r.terminated(&p, start);
        r.restarted(start);
        let later = start + Duration::from_secs(61);
        let due = r.terminated(&p, later).unwrap();
        assert_eq!(
            due - later,
            Duration::from_secs(1),
            "recovered: back to the initial backoff"
        );
        assert_eq!(r.status.restarts, 2);
    }
}
