//! Calls by name: each goes to the version serving the name at that moment, and a call
//! that finds its version retired by a swap is retried on the next.

use std::borrow::Borrow;

use wasmtime::component::{ComponentNamedList, Lift, Lower, Val};

use super::{MAX_RETRIES, Registry};
use crate::contract::message::Message;
use crate::contract::raw::RawRecord;
use crate::plugin::{BatchOutcome, CallError, CallOutcome, Plugin};

impl Registry {
    /// Calls `process-message` on the version serving `name`.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`] when no plugin of that name is loaded, or the call's own
    /// error.
    pub fn process_message(&self, name: &str, message: &Message) -> Result<CallOutcome, CallError> {
        self.call(name, |p| p.process_message(message))
    }

    /// Calls `timer-event` on the version serving `name`.
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn timer_event(&self, name: &str, now_ns: i64) -> Result<CallOutcome, CallError> {
        self.call(name, |p| p.timer_event(now_ns))
    }

    /// Hands several messages, in order, to the version serving `name`: in one call
    /// if it takes batches (see [`Plugin::process_messages`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn process_messages<M: Borrow<Message>>(
        &self,
        name: &str,
        messages: &[M],
    ) -> Result<BatchOutcome, CallError> {
        split_across_swaps(messages, |rest| match self.get(name) {
            Some(plugin) => plugin.process_messages(rest),
            None => Err(CallError::NotFound {
                plugin: name.to_owned(),
            }),
        })
    }

    pub(super) fn call<R>(
        &self,
        name: &str,
        call: impl Fn(&Plugin) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let mut result = Err(CallError::NotFound {
            plugin: name.to_owned(),
        });
        for _ in 0..MAX_RETRIES {
            let Some(plugin) = self.get(name) else {
                return Err(CallError::NotFound {
                    plugin: name.to_owned(),
                });
            };
            result = call(&plugin);
            if !matches!(result, Err(CallError::Unloaded { .. })) {
                break;
            }
        }
        result
    }

    /// Hands `records` to the decoder serving `name` (see [`Plugin::decode`]). A swap
    /// that comes during the call hands what the old version refused to the new one, so
    /// no record is lost or decoded twice.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`] when no plugin of that name is loaded, or the call's own
    /// error.
    pub fn decode(&self, name: &str, records: &[RawRecord<'_>]) -> Result<BatchOutcome, CallError> {
        // A retired version refuses the whole call before running it: retry on the
        // version that serves the name now.
        let mut last = None;
        for _ in 0..8 {
            let Some(plugin) = self.get(name) else {
                return Err(CallError::NotFound {
                    plugin: name.to_owned(),
                });
            };
            match plugin.decode(records) {
                Err(error @ CallError::Unloaded { .. }) => last = Some(error),
                result => return result,
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// Calls the export `export` of the version serving `name`, typed (see
    /// [`Plugin::call_export`]), with the same limits, stats and failure policy as its
    /// world's entry points.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`] when no plugin of that name is loaded, or the call's own
    /// error.
    pub fn call_export<P, R>(
        &self,
        name: &str,
        export: &str,
        params: P,
    ) -> Result<(R, CallOutcome), CallError>
    where
        P: ComponentNamedList + Lower + Clone + Send + Sync + 'static,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        self.call(name, |plugin| plugin.call_export(export, params.clone()))
    }

    /// Calls the export `export` of the version serving `name` with dynamically typed
    /// `params` (see [`Plugin::call_export_dynamic`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::call_export`].
    pub fn call_export_dynamic(
        &self,
        name: &str,
        export: &str,
        params: &[Val],
    ) -> Result<(Vec<Val>, CallOutcome), CallError> {
        self.call(name, |plugin| plugin.call_export_dynamic(export, params))
    }
}

/// Hands `messages` to `serve` — the version serving a name at each moment — until
/// every one is taken. A version replaced or unloaded during the run refuses the rest
/// (its last failure is [`CallError::Unloaded`], or the whole call is): the rest goes to
/// whichever version serves next, so each message is answered by exactly one version,
/// and the indices of the failures are the run's.
fn split_across_swaps<M>(
    messages: &[M],
    mut serve: impl FnMut(&[M]) -> Result<BatchOutcome, CallError>,
) -> Result<BatchOutcome, CallError> {
    let mut all = BatchOutcome::default();
    let mut done = 0;
    let mut retries = 0;
    // A swap may come between two messages, or refuse a batch: what is left goes to
    // the version serving the name then.
    while done < messages.len() {
        let rest = &messages[done..];
        let result = serve(rest);
        match result {
            Ok(mut outcome) => {
                let mut taken = rest.len();
                if let Some((index, CallError::Unloaded { .. })) = outcome.failed.last()
                    && retries < MAX_RETRIES
                {
                    taken = *index;
                    outcome.failed.pop();
                    retries += 1;
                }
                all.emitted.extend(outcome.emitted);
                all.logs.extend(outcome.logs);
                all.calls += outcome.calls;
                all.failed
                    .extend(outcome.failed.into_iter().map(|(i, e)| (done + i, e)));
                done += taken;
            }
            Err(CallError::Unloaded { .. }) if retries < MAX_RETRIES => retries += 1,
            Err(e) if done == 0 => return Err(e),
            // Part of the run went through: the rest failed with this error.
            Err(e) => {
                all.failed.push((done, e));
                break;
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use wasmtime::Trap;

    use super::*;

    /// What the version serving the name does with the run it is handed.
    #[derive(Clone, Copy)]
    enum Version {
        /// Takes the first `take` messages (all, if fewer are left), failing those at
        /// these indices of the run it was handed, and is replaced before the rest.
        Takes(usize, &'static [usize]),
        /// Was replaced before the call: refuses the whole run.
        Retired,
        /// Fails the whole call (a trap).
        Traps,
    }

    /// Runs `messages` messages through versions answering as `script` says, in turn:
    /// the outcome, and which version answered each message.
    fn split(messages: usize, script: &[Version]) -> (Result<BatchOutcome, CallError>, Vec<Vec<usize>>) {
        let run: Vec<usize> = (0..messages).collect();
        let mut answered = vec![Vec::new(); messages];
        let mut turn = 0;
        let result = split_across_swaps(&run, |rest| {
            let version = *script.get(turn).unwrap_or(&Version::Retired);
            let this = turn;
            turn += 1;
            let plugin = || "p".to_owned();
            match version {
                Version::Retired => Err(CallError::Unloaded { plugin: plugin() }),
                Version::Traps => Err(CallError::Trap {
                    plugin: plugin(),
                    trap: Trap::UnreachableCodeReached,
                }),
                Version::Takes(take, fail) => {
                    let take = take.min(rest.len());
                    for &message in &rest[..take] {
                        answered[message].push(this);
                    }
                    let mut failed: Vec<(usize, CallError)> = fail
                        .iter()
                        .filter(|&&i| i < take)
                        .map(|&i| {
                            let error = CallError::Failed {
                                plugin: plugin(),
                                message: format!("{i}"),
                            };
                            (i, error)
                        })
                        .collect();
                    if take < rest.len() {
                        failed.push((take, CallError::Unloaded { plugin: plugin() }));
                    }
                    Ok(BatchOutcome {
                        failed,
                        calls: 1,
                        ..BatchOutcome::default()
                    })
                }
            }
        });
        (result, answered)
    }

    fn indices(outcome: &BatchOutcome) -> Vec<usize> {
        outcome.failed.iter().map(|(i, _)| *i).collect()
    }

    /// A row of the table below.
    type Row = (usize, &'static [Version], &'static [usize], &'static [usize], u64);

    #[test]
    fn a_run_split_by_swaps_is_answered_once_per_message_with_the_runs_indices() {
        use Version::*;
        // (messages, the versions in turn) -> (failed indices of the run, the version
        // that answered each message, calls)
        #[rustfmt::skip]
        let table: &[Row] = &[
            // No swap: one version takes it all.
            (5, &[Takes(9, &[1, 3])], &[1, 3], &[0, 0, 0, 0, 0], 1),
            // Replaced after two messages: the next takes the rest, its failures
            // shifted to the run's indices.
            (5, &[Takes(2, &[1]), Takes(9, &[0])], &[1, 2], &[0, 0, 1, 1, 1], 2),
            // Replaced before the call: the whole run goes to the next.
            (3, &[Retired, Takes(9, &[])], &[], &[1, 1, 1], 1),
            // Three versions, one message each time.
            (3, &[Takes(1, &[]), Takes(1, &[0]), Takes(1, &[0])], &[1, 2], &[0, 1, 2], 3),
            // The next version fails the whole call: the rest of the run failed with it.
            (4, &[Takes(1, &[]), Traps], &[1], &[0], 1),
        ];
        for (row, (messages, script, failed, by, calls)) in table.iter().enumerate() {
            let (result, answered) = split(*messages, script);
            let outcome = result.unwrap_or_else(|e| panic!("row {row}: {e}"));
            assert_eq!(indices(&outcome), *failed, "row {row}: failed");
            assert_eq!(outcome.calls, *calls, "row {row}: calls");
            for (message, versions) in answered.iter().enumerate() {
                let expected: Vec<usize> = by.get(message).map(|&v| vec![v]).unwrap_or_default();
                assert_eq!(*versions, expected, "row {row}: message {message} answered by");
            }
        }
    }

    #[test]
    fn a_run_that_fails_before_any_message_is_taken_is_the_calls_error() {
        let (result, _) = split(3, &[Version::Traps]);
        assert!(matches!(result, Err(CallError::Trap { .. })), "{result:?}");
        // A name that keeps being swapped gives up after a bound, with the refusal.
        let (result, answered) = split(3, &[Version::Retired; MAX_RETRIES + 1]);
        assert!(matches!(result, Err(CallError::Unloaded { .. })), "{result:?}");
        assert!(answered.iter().all(Vec::is_empty));
    }
}
