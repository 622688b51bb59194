//! Running one call on the plugin's instance: arming its budgets, entering the guest
//! through the entry point of its world, and telling what stopped it.

use wasmtime::Trap;
use wasmtime::component::Resource;

use super::fault::{Fault, classify, panic_message};
use super::{CallError, CallOutcome, Cell, Done, Entry, Facts, Instance, Plugin};
use crate::contract::bindings::corral::plugin::types::{BatchFailure, Failure};
use crate::sandbox::imports::failure_text;
use crate::sandbox::output::escape;
use crate::sandbox::{Entries, Limit, ProcessBatch, Sandbox, cause, hostcall_fuel, lend};

impl Plugin {
    /// Runs one call on the plugin's instance, making a fresh one first if the last call
    /// trapped. Drops the instance again if this call traps. What the host observed of
    /// the call is left in `facts` (all zero for a call that did not start), not
    /// returned with the result: moving both through the call's frames cost time.
    pub(super) fn run(
        &self,
        cell: &mut Cell,
        entry: Entry<'_>,
        restarted: &mut bool,
        facts: &mut Facts,
    ) -> Result<Done, CallError> {
        let plugin = || self.name().to_owned();
        if cell.upgrade.is_some() && self.tier_up(cell) {
            *restarted = true;
        }
        if cell.sandbox.is_none() {
            match self.spec.instantiate(&cell.code) {
                Ok(sandbox) => {
                    *restarted = true;
                    cell.sandbox = Some(Instance {
                        sandbox,
                        tier: cell.code.tier,
                        called: false,
                    });
                }
                Err(e) => return Err(self.start_failed(e)),
            }
        }
        let host_error = |reason: String| CallError::Host {
            plugin: plugin(),
            reason,
            source: None,
        };
        let Cell {
            sandbox,
            batch,
            lists,
            raw,
            ..
        } = cell;
        let instance = sandbox.as_mut().expect("instantiated above");
        instance.called = true;
        let Sandbox {
            store,
            entries,
            instance: handle,
            ..
        } = &mut instance.sandbox;
        let messages = match entry {
            Entry::Messages(messages) => messages.len(),
            Entry::Records(records) => records.len(),
            Entry::Timer(_) | Entry::Export(_) => 1,
        };
        let scale = u32::try_from(messages).unwrap_or(u32::MAX);
        if let Err(e) = self.spec.arm_for(store, scale) {
            let error = CallError::Host {
                plugin: plugin(),
                reason: format!("{e:#}"),
                source: Some(cause(e)),
            };
            return Err(error);
        }
        {
            let data = store.data_mut();
            data.emitted.clear();
            data.emit_refused = false;
            data.violation = None;
            data.limiter.refused = None;
        }
        // Every entry point's answer as the failures it returns, by message (none for a
        // `process-batch` that reports them through `failures` as it goes). Most calls
        // succeed, and get an empty list without one collected from an iterator.
        let single = |r: wasmtime::Result<Result<(), Failure>>| {
            r.map(|r| match r {
                Ok(()) => Vec::new(),
                Err(failure) => vec![(0, failure)],
            })
        };
        let result: wasmtime::Result<Vec<(u32, Failure)>> = match (entry, entries) {
            (Entry::Export(export), _) => {
                if let Err(reason) = export.find(store, handle) {
                    self.spec.output.end();
                    return Err(CallError::Export {
                        plugin: plugin(),
                        export: String::new(),
                        reason,
                    });
                }
                export.call(store).map(|()| Vec::new())
            }
            (Entry::Messages(messages), Entries::Filter(filter)) => {
                debug_assert_eq!(messages.len(), 1, "a filter plugin takes one message per call");
                single(lend(store, messages.get(0), |store| {
                    filter.call_process_message(store, Resource::new_borrow(0))
                }))
            }
            (Entry::Messages(messages), Entries::Batch { process, .. }) => {
                // The guest's copy of the last batch is gone when its call returned; ours
                // is refilled in place and lent to the call.
                let laid_out = match process {
                    ProcessBatch::Flat(_) | ProcessBatch::FlatReturning(_) => messages.lay_out(batch),
                    ProcessBatch::Lists(_) => messages.lay_out_lists(lists),
                };
                if laid_out.is_err() {
                    self.spec.output.end();
                    let error = host_error(format!(
                        "{} messages do not fit one batch (over 4 GiB of text)",
                        messages.len()
                    ));
                    return Err(error);
                }
                let returned = |failures: Vec<BatchFailure>| {
                    if failures.is_empty() {
                        // Most calls: nothing failed, and there is nothing to convert.
                        Vec::new()
                    } else {
                        failures.into_iter().map(|f| (f.index, f.failure)).collect()
                    }
                };
                match process {
                    ProcessBatch::Flat(process) => {
                        store.data_mut().reports.batch = Some(scale);
                        let called = process.call(store, batch);
                        store.data_mut().reports.batch = None;
                        called.map(|()| Vec::new())
                    }
                    ProcessBatch::FlatReturning(process) => {
                        process.call(store, batch).map(|(failures,)| returned(failures))
                    }
                    ProcessBatch::Lists(process) => {
                        process.call(store, lists).map(|(failures,)| returned(failures))
                    }
                }
            }
            (Entry::Records(records), Entries::Decoder { decode, .. }) => {
                if crate::contract::raw::fill(raw, records).is_err() {
                    self.spec.output.end();
                    let error = host_error(format!(
                        "{} records do not fit one batch (over 4 GiB of text)",
                        records.len()
                    ));
                    return Err(error);
                }
                decode.call(store, raw).and_then(|(decoded,)| {
                    // The messages returned are taken as if emitted, one by one: the
                    // same checks, the same caps, the same order.
                    use crate::contract::bindings::corral::plugin::emit::Host as _;
                    for message in decoded.messages {
                        store.data_mut().emit(message)?;
                    }
                    Ok(decoded
                        .failures
                        .into_iter()
                        .map(|f| (f.index, f.failure))
                        .collect())
                })
            }
            (Entry::Records(_), _) | (Entry::Messages(_), Entries::Decoder { .. }) => {
                self.spec.output.end();
                return Err(host_error("the call does not fit the plugin's world".to_owned()));
            }
            (Entry::Timer(now_ns), Entries::Decoder { timer, .. }) => {
                single(timer.call(&mut *store, (now_ns,)).map(|(r,)| r))
            }
            (Entry::Timer(now_ns), Entries::Filter(filter)) => {
                single(filter.call_timer_event(&mut *store, now_ns))
            }
            (Entry::Timer(now_ns), Entries::Batch { timer, .. }) => {
                single(timer.call(&mut *store, (now_ns,)).map(|(r,)| r))
            }
        };
        // Failures returned are held to the rules reported ones were, and charged to the
        // output as they were: every entry point's come out of `reports`.
        let data = store.data_mut();
        let result = result.and_then(|returned| data.returned(returned, scale));
        let failures = std::mem::take(&mut data.reports.failures);
        let result = result.map(|()| failures);
        let output = self.spec.output.end();
        let n = messages as u64;
        let fuel = self.spec.limits.fuel.saturating_mul(n);
        // Per message (a division only for a batch: it is slow, and most calls carry one).
        let per_message = |total: u64| if n == 1 { total } else { total / n };
        facts.fuel_used = per_message(fuel - store.get_fuel().unwrap_or(0));
        facts.output_used = per_message(output.used);
        let data = store.data_mut();
        let emitted = std::mem::take(&mut data.emitted);
        facts.emitted = emitted.len();
        facts.memory = data.limiter.current as u64;
        facts.peak_memory = data.limiter.peak as u64;
        let memory_refused = data.limiter.refused;
        let emit_refused = data.emit_refused;
        let deadline_hit = data.deadline.hit;
        let violation = data.violation.take();

        let limits = &self.spec.limits;
        let limit = |limit: Limit, detail: String| CallError::Limit {
            plugin: plugin(),
            limit,
            detail,
        };
        // What the budgets were, said for one call or for a batch (only on a failure:
        // not worth a string on every call).
        let a_call = || {
            if n == 1 {
                "a call".to_owned()
            } else {
                format!("a batch of {n} messages")
            }
        };
        // Failure reasons are guest text the host writes too: they count against the
        // call's output budget, at their escaped size.
        let output_limit = || {
            limit(
                Limit::Output,
                format!(
                    "{} may write {} bytes (logs, stdout, stderr, emitted messages and failure reasons)",
                    a_call(),
                    limits.output_bytes.saturating_mul(n)
                ),
            )
        };
        match result {
            Ok(failures) if failures.is_empty() => Ok(Done {
                outcome: CallOutcome {
                    emitted,
                    logs: output.lines,
                },
                failed: Vec::new(),
            }),
            Ok(failures) => {
                let fatal = failures.iter().find(|(_, f)| matches!(f, Failure::Fatal(_)));
                match (fatal, &failures[..]) {
                    (Some((_, Failure::Fatal(message))), _) => Err(CallError::Fatal {
                        plugin: plugin(),
                        message: escape(message).into_owned(),
                    }),
                    // One message that failed is a failed call.
                    (_, [(_, Failure::NonFatal(message))]) if n == 1 => Err(CallError::Failed {
                        plugin: plugin(),
                        message: escape(message).into_owned(),
                    }),
                    _ => Ok(Done {
                        outcome: CallOutcome {
                            emitted,
                            logs: output.lines,
                        },
                        failed: failures
                            .into_iter()
                            .map(|(index, failure)| {
                                (
                                    index as usize,
                                    CallError::Failed {
                                        plugin: plugin(),
                                        message: escape(failure_text(&failure)).into_owned(),
                                    },
                                )
                            })
                            .collect(),
                    }),
                }
            }
            Err(trap) => {
                // The instance may not be entered again after a trap.
                *sandbox = None;
                facts.memory = 0;
                let deadline = || {
                    limit(
                        Limit::Deadline,
                        format!(
                            "{} may take {:?}",
                            a_call(),
                            limits.deadline.saturating_mul(scale)
                        ),
                    )
                };
                Err(if deadline_hit {
                    // Cut off in a blocking WASI call: whatever the guest did next is
                    // the deadline's doing.
                    deadline()
                } else if let Some(asked) = memory_refused {
                    limit(
                        Limit::Memory,
                        format!(
                            "the sandbox may hold {} bytes and the guest asked for {asked}",
                            limits.memory_bytes
                        ),
                    )
                } else if let Some(violation) = violation {
                    CallError::Violation {
                        plugin: plugin(),
                        violation,
                    }
                } else if output.exceeded {
                    output_limit()
                } else if emit_refused {
                    limit(
                        Limit::Emits,
                        format!(
                            "{} may emit {} messages",
                            a_call(),
                            u64::from(limits.emits).saturating_mul(n)
                        ),
                    )
                } else {
                    match trap.downcast_ref::<Trap>() {
                        Some(Trap::OutOfFuel) => {
                            facts.fuel_used = limits.fuel;
                            limit(Limit::Fuel, format!("{} may use {fuel} fuel", a_call()))
                        }
                        Some(Trap::Interrupt) => deadline(),
                        Some(&trap) => match panic_message(&output.stderr) {
                            Some(message) if trap == Trap::UnreachableCodeReached => CallError::Panic {
                                plugin: plugin(),
                                message: escape(&message).into_owned(),
                            },
                            _ => CallError::Trap {
                                plugin: plugin(),
                                trap,
                            },
                        },
                        None => match classify(&trap) {
                            Fault::HostCopy => limit(
                                Limit::HostCopy,
                                format!(
                                    "one host call may copy {} bytes out of the sandbox (its memory limit)",
                                    hostcall_fuel(limits)
                                ),
                            ),
                            Fault::Guest(violation) => CallError::Violation {
                                plugin: plugin(),
                                violation,
                            },
                            Fault::Host => CallError::Host {
                                plugin: plugin(),
                                reason: format!("{trap:#}"),
                                source: Some(cause(trap)),
                            },
                        },
                    }
                })
            }
        }
    }
}
