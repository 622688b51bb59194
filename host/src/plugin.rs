//! A loaded plugin: its sandbox, its state (running or terminated) and its stats.
//!
//! Calls are serialised per plugin — a wasm instance runs one call at a time — and
//! different plugins run in parallel. Each call refills fuel, re-arms the deadline and
//! starts a fresh output budget. What happens after a failure follows Heka, with the
//! restart policy its users asked for (heka#1692):
//!
//! - the guest returned `non-fatal`: counted; the instance keeps its state;
//! - the guest returned `fatal`: the plugin is terminated at once;
//! - a limit or a trap: the instance is thrown away and the next call gets a fresh one;
//! - [`Limits::max_consecutive_failures`] failures in a row: terminated.
//!
//! A terminated plugin refuses every call with [`CallError::Terminated`] and keeps its
//! reason in [`PluginState`] until it is replaced by a new load.
//!
//! A call is all or nothing for its output: the messages a failed call emitted are
//! discarded (and counted in [`Stats::discarded`]), so a caller never acts on half a
//! call's work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::Resource;

use crate::error::{CallError, LoadError};
use crate::limits::{Limit, Limits};
use crate::lock;
use crate::message::Message;
use crate::output::LogLine;
use crate::sandbox::{Sandbox, SandboxSpec};
use crate::stats::Stats;
use crate::world::WorldReport;
use crate::world::bindings::corral::plugin::types::Failure;

/// What a plugin is configured with when it is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginOptions {
    /// The limits it runs under.
    pub limits: Limits,
    /// The values its `config` import returns.
    pub config: BTreeMap<String, String>,
    /// Host directories the plugin may open through WASI; none by default.
    pub dirs: Vec<DirGrant>,
}

/// A host directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/proc`.
    pub guest: String,
    /// Whether the plugin may create, change and delete files in it (default: read-only).
    pub writable: bool,
}

impl PluginOptions {
    /// Options with these limits and no config.
    pub fn with_limits(limits: Limits) -> PluginOptions {
        PluginOptions {
            limits,
            ..PluginOptions::default()
        }
    }

    /// Adds a directory grant and returns the options.
    pub fn dir(mut self, grant: DirGrant) -> PluginOptions {
        self.dirs.push(grant);
        self
    }

    /// Adds one config value and returns the options.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> PluginOptions {
        self.config.insert(key.into(), value.into());
        self
    }
}

/// Whether a plugin takes calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginState {
    /// It takes calls.
    Running,
    /// It refuses calls until it is replaced.
    Terminated {
        /// Why, in words; the same text as the error that ended it.
        reason: String,
    },
}

/// What a successful call produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOutcome {
    /// The messages the call emitted, in order.
    pub emitted: Vec<Message>,
    /// The lines the call logged or printed, in order (they were also logged through
    /// `tracing` under the plugin's name).
    pub logs: Vec<LogLine>,
}

/// A plugin loaded into a sandbox. Cheap to share behind an `Arc`: every method takes
/// `&self`, and calls on one plugin wait for each other.
pub struct Plugin {
    spec: SandboxSpec,
    stateful: bool,
    version: String,
    report: WorldReport,
    cell: Mutex<Cell>,
    stats: Mutex<Stats>,
}

struct Cell {
    sandbox: Option<Sandbox>,
    state: PluginState,
    consecutive_failures: u32,
    /// `process-message` calls made, to time one in [`crate::stats::TIMING_SAMPLE`].
    message_calls: u64,
    /// Replaced by a newer version or unloaded: calls are refused with
    /// [`CallError::Unloaded`] so that a registry retries them on the newer version.
    retired: bool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name())
            .field("version", &self.version)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

enum Entry<'a> {
    Message(&'a Message),
    Timer(i64),
}

/// What the host observed about one call, whatever its result.
struct Facts {
    fuel_used: u64,
    output_used: u64,
    memory: u64,
    peak_memory: u64,
    emitted: usize,
}

impl Plugin {
    /// Starts the first instance; a plugin that cannot even start does not load.
    pub(crate) fn start(
        spec: SandboxSpec,
        version: String,
        report: WorldReport,
    ) -> Result<Plugin, LoadError> {
        let sandbox = spec.instantiate().map_err(|e| LoadError::Instantiate {
            plugin: spec.plugin.to_string(),
            reason: format!("{e:#}"),
        })?;
        let memory = sandbox.store.data().limiter.current as u64;
        Ok(Plugin {
            stateful: sandbox.state.is_some(),
            stats: Mutex::new(Stats {
                instances: 1,
                memory_bytes: memory,
                peak_memory_bytes: memory,
                ..Stats::default()
            }),
            cell: Mutex::new(Cell {
                sandbox: Some(sandbox),
                state: PluginState::Running,
                consecutive_failures: 0,
                message_calls: 0,
                retired: false,
            }),
            spec,
            version,
            report,
        })
    }

    /// The plugin's name, which is also its store namespace.
    pub fn name(&self) -> &str {
        &self.spec.plugin
    }

    /// The SHA-256 of the component's bytes, in hex: which build of the plugin this is.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &Limits {
        &self.spec.limits
    }

    /// Its config values.
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.spec.config
    }

    /// Its imports and exports.
    pub fn report(&self) -> &WorldReport {
        &self.report
    }

    /// Whether it takes calls.
    pub fn state(&self) -> PluginState {
        lock(&self.cell).state.clone()
    }

    /// A snapshot of its statistics.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Calls the guest's `process-message` with `message`.
    ///
    /// # Errors
    ///
    /// A [`CallError`] naming the plugin and why the call failed; see the module docs for
    /// what each failure does to the plugin.
    pub fn process_message(&self, message: &Message) -> Result<CallOutcome, CallError> {
        self.call(Entry::Message(message))
    }

    /// Calls the guest's `timer-event` with the time in nanoseconds since the Unix epoch.
    ///
    /// # Errors
    ///
    /// As [`Plugin::process_message`].
    pub fn timer_event(&self, now_ns: i64) -> Result<CallOutcome, CallError> {
        self.call(Entry::Timer(now_ns))
    }

    fn call(&self, entry: Entry<'_>) -> Result<CallOutcome, CallError> {
        let mut cell = lock(&self.cell);
        if cell.retired {
            return Err(CallError::Unloaded {
                plugin: self.name().to_owned(),
            });
        }
        if let PluginState::Terminated { reason } = &cell.state {
            return Err(CallError::Terminated {
                plugin: self.name().to_owned(),
                reason: reason.clone(),
            });
        }
        let is_timer = matches!(entry, Entry::Timer(_));
        // Timer events are rare: every one is timed. Messages are timed one in eight.
        let timed = is_timer || cell.message_calls.is_multiple_of(crate::stats::TIMING_SAMPLE);
        cell.message_calls += u64::from(!is_timer);
        let started = timed.then(Instant::now);
        let mut restarted = false;
        let (result, facts) = self.run(&mut cell, entry, &mut restarted);
        let took = started.map(|started| started.elapsed());

        let mut stats = lock(&self.stats);
        let entry_stats = if is_timer {
            &mut stats.timer_event
        } else {
            &mut stats.process_message
        };
        entry_stats.record(took, result.is_err());
        stats.instances += u64::from(restarted);
        stats.max_fuel_used = stats.max_fuel_used.max(facts.fuel_used);
        stats.max_output_bytes = stats.max_output_bytes.max(facts.output_used);
        stats.memory_bytes = facts.memory;
        stats.peak_memory_bytes = stats.peak_memory_bytes.max(facts.peak_memory);
        match &result {
            Ok(_) => {
                stats.emitted += facts.emitted as u64;
                cell.consecutive_failures = 0;
            }
            Err(error) => {
                stats.discarded += facts.emitted as u64;
                stats.last_error = Some(error.to_string());
                cell.consecutive_failures += 1;
                let max = self.spec.limits.max_consecutive_failures.max(1);
                let reason = match error {
                    CallError::Fatal { .. } => Some(error.to_string()),
                    _ if cell.consecutive_failures >= max => Some(format!(
                        "{} consecutive failed calls, the last: {error}",
                        cell.consecutive_failures
                    )),
                    _ => None,
                };
                if let Some(reason) = reason {
                    tracing::error!(plugin = self.name(), %reason, "plugin terminated");
                    stats.terminations += 1;
                    stats.memory_bytes = 0;
                    cell.sandbox = None;
                    cell.state = PluginState::Terminated { reason };
                } else {
                    tracing::warn!(plugin = self.name(), %error, "call failed");
                }
            }
        }
        result
    }

    /// Runs one call on the plugin's instance, making a fresh one first if the last call
    /// trapped. Drops the instance again if this call traps.
    fn run(
        &self,
        cell: &mut Cell,
        entry: Entry<'_>,
        restarted: &mut bool,
    ) -> (Result<CallOutcome, CallError>, Facts) {
        let mut facts = Facts {
            fuel_used: 0,
            output_used: 0,
            memory: 0,
            peak_memory: 0,
            emitted: 0,
        };
        let plugin = || self.name().to_owned();
        if cell.sandbox.is_none() {
            match self.spec.instantiate() {
                Ok(sandbox) => {
                    *restarted = true;
                    cell.sandbox = Some(sandbox);
                }
                Err(e) => {
                    let error = CallError::Restart {
                        plugin: plugin(),
                        reason: format!("{e:#}"),
                    };
                    return (Err(error), facts);
                }
            }
        }
        let Sandbox { store, filter, .. } = cell.sandbox.as_mut().expect("instantiated above");
        if let Err(e) = self.spec.arm(store) {
            return (
                Err(CallError::Host {
                    plugin: plugin(),
                    reason: format!("{e:#}"),
                }),
                facts,
            );
        }
        {
            let data = store.data_mut();
            data.emitted.clear();
            data.emit_refused = false;
            data.limiter.refused = None;
        }
        let result = match entry {
            Entry::Message(message) => crate::current::lend(store, message, |store| {
                filter.call_process_message(store, Resource::new_borrow(0))
            }),
            Entry::Timer(now_ns) => filter.call_timer_event(&mut *store, now_ns),
        };
        let output = self.spec.output.end();
        facts.fuel_used = self.spec.limits.fuel - store.get_fuel().unwrap_or(0);
        facts.output_used = output.used;
        let data = store.data_mut();
        let emitted = std::mem::take(&mut data.emitted);
        facts.emitted = emitted.len();
        facts.memory = data.limiter.current as u64;
        facts.peak_memory = data.limiter.peak as u64;
        let memory_refused = data.limiter.refused;
        let emit_refused = data.emit_refused;

        let limits = &self.spec.limits;
        let limit = |limit: Limit, detail: String| CallError::Limit {
            plugin: plugin(),
            limit,
            detail,
        };
        let result = match result {
            Ok(Ok(())) => Ok(CallOutcome {
                emitted,
                logs: output.lines,
            }),
            Ok(Err(Failure::NonFatal(message))) => Err(CallError::Failed {
                plugin: plugin(),
                message,
            }),
            Ok(Err(Failure::Fatal(message))) => Err(CallError::Fatal {
                plugin: plugin(),
                message,
            }),
            Err(trap) => {
                // The instance may not be entered again after a trap.
                cell.sandbox = None;
                facts.memory = 0;
                Err(if let Some(asked) = memory_refused {
                    limit(
                        Limit::Memory,
                        format!(
                            "the sandbox may hold {} bytes and the guest asked for {asked}",
                            limits.memory_bytes
                        ),
                    )
                } else if output.exceeded {
                    limit(
                        Limit::Output,
                        format!(
                            "a call may write {} bytes (logs, stdout, stderr and emitted messages)",
                            limits.output_bytes
                        ),
                    )
                } else if emit_refused {
                    limit(Limit::Emits, format!("a call may emit {} messages", limits.emits))
                } else {
                    match trap.downcast_ref::<Trap>() {
                        Some(Trap::OutOfFuel) => {
                            facts.fuel_used = limits.fuel;
                            limit(Limit::Fuel, format!("a call may use {} fuel", limits.fuel))
                        }
                        Some(Trap::Interrupt) => {
                            limit(Limit::Deadline, format!("a call may take {:?}", limits.deadline))
                        }
                        Some(&trap) => match panic_message(&output.stderr) {
                            Some(message) if trap == Trap::UnreachableCodeReached => CallError::Panic {
                                plugin: plugin(),
                                message,
                            },
                            _ => CallError::Trap {
                                plugin: plugin(),
                                trap,
                            },
                        },
                        None => match trap.downcast_ref::<wasmtime_wasi::I32Exit>() {
                            Some(exit) => CallError::Host {
                                plugin: plugin(),
                                reason: format!("the guest called exit({})", exit.0),
                            },
                            None => CallError::Host {
                                plugin: plugin(),
                                reason: format!("{trap:#}"),
                            },
                        },
                    }
                })
            }
        };
        (result, facts)
    }
}

/// Exclusive hold on a plugin that is being replaced or unloaded: no call runs while it
/// is held, and every later call is refused with [`CallError::Unloaded`].
pub(crate) struct Retiring<'a> {
    plugin: &'a Plugin,
    cell: MutexGuard<'a, Cell>,
}

impl Plugin {
    /// Whether the plugin exports the `corral:plugin/state` interface, and so keeps its
    /// state when it is replaced.
    pub fn preserves_state(&self) -> bool {
        self.stateful
    }

    /// Waits for the call in progress, if any, then retires the plugin.
    pub(crate) fn retire(&self) -> Retiring<'_> {
        let mut cell = lock(&self.cell);
        cell.retired = true;
        Retiring { plugin: self, cell }
    }

    /// Hands `data` to the guest's `state.restore`. On failure the instance is dropped,
    /// so the plugin starts empty rather than half-restored.
    pub(crate) fn restore_state(&self, data: Vec<u8>) -> Result<(), String> {
        let mut cell = lock(&self.cell);
        let result = match cell.sandbox.as_mut() {
            Some(sandbox) => match sandbox.state {
                Some(funcs) => {
                    self.run_state_call(sandbox, |store| funcs.restore.call(store, (data,)).map(|(r,)| r))
                }
                None => Err("the new version does not export the state interface".to_owned()),
            },
            None => Err("the new version has no instance".to_owned()),
        };
        if result.is_err() {
            cell.sandbox = None;
        }
        result
    }

    fn run_state_call<R>(
        &self,
        sandbox: &mut Sandbox,
        call: impl FnOnce(
            &mut wasmtime::Store<crate::sandbox::SandboxState>,
        ) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, String> {
        self.spec.arm(&mut sandbox.store).map_err(|e| format!("{e:#}"))?;
        let result = call(&mut sandbox.store);
        self.spec.output.end();
        match result {
            Ok(result) => result,
            Err(trap) => Err(match trap.downcast_ref::<Trap>() {
                Some(trap) => format!("trapped: {trap}"),
                None => format!("{trap:#}"),
            }),
        }
    }
}

impl Retiring<'_> {
    /// The state saved by the guest's `state.save`: `None` when there is nothing to save
    /// (the plugin does not export the interface, is terminated, or lost its instance
    /// to a trap on its last call).
    pub fn save(&mut self) -> Option<Result<Vec<u8>, String>> {
        if self.cell.state != PluginState::Running {
            return None;
        }
        let sandbox = self.cell.sandbox.as_mut()?;
        let funcs = sandbox.state?;
        Some(
            self.plugin
                .run_state_call(sandbox, |store| funcs.save.call(store, ()).map(|(r,)| r)),
        )
    }

    /// Frees the instance now rather than when the last handle to the plugin goes.
    pub fn drop_instance(&mut self) {
        self.cell.sandbox = None;
    }
}

/// Why the guest aborted, from what its language's runtime printed on stderr before the
/// `unreachable` trap: an uncaught Python exception (componentize-py), a Rust panic, or
/// an uncaught JavaScript exception (componentize-js). `None` for a bare trap.
fn panic_message(stderr: &str) -> Option<String> {
    python_exception(stderr)
        .or_else(|| rust_panic(stderr))
        .or_else(|| js_exception(stderr))
}

/// The message of a Rust panic printed on stderr:
///
/// ```text
/// thread '<unnamed>' panicked at src/lib.rs:10:5:
/// the message
/// note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
/// ```
///
/// gives `the message (at src/lib.rs:10:5)`.
fn rust_panic(stderr: &str) -> Option<String> {
    let rest = &stderr[stderr.find("panicked at ")? + "panicked at ".len()..];
    let mut lines = rest.lines();
    let location = lines.next().unwrap_or("").trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    let message = message.join("\n");
    Some(if message.trim().is_empty() {
        location.to_owned()
    } else {
        format!("{} (at {location})", message.trim_end())
    })
}

/// The last uncaught exception of a Python traceback on stderr:
///
/// ```text
/// Traceback (most recent call last):
///   File "/0/app.py", line 21, in process_message
/// ValueError: boom
/// ```
///
/// gives `ValueError: boom (at app.py, line 21, in process_message)`. componentize-py
/// prints a Rust panic after it, which says only that Python raised.
fn python_exception(stderr: &str) -> Option<String> {
    let traceback = &stderr[stderr.rfind("Traceback (most recent call last):")?..];
    let mut location = None;
    let mut exception = None;
    for line in traceback.lines().skip(1) {
        if line.starts_with("thread '") {
            break;
        } else if let Some(file) = line.trim_start().strip_prefix("File \"") {
            // componentize-py mounts each Python path entry as `/0`, `/1`…
            let file = file.trim_start_matches(|c: char| c == '/' || c.is_ascii_digit());
            location = Some(file.replacen('"', "", 1));
        } else if !line.starts_with(' ') && !line.trim().is_empty() {
            exception = Some(line.trim());
        }
    }
    let exception = exception?;
    Some(match location {
        Some(location) => format!("{exception} (at {location})"),
        None => exception.to_owned(),
    })
}

/// What componentize-js printed before aborting on an uncaught exception: the lines
/// before its `Stack:`, when its `abort()` notice follows.
fn js_exception(stderr: &str) -> Option<String> {
    if !stderr.contains("Redirecting call to abort()") {
        return None;
    }
    let message: Vec<&str> = stderr
        .lines()
        .take_while(|l| l.trim() != "Stack:")
        .filter(|l| !l.trim().is_empty())
        .collect();
    (!message.is_empty()).then(|| message.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_found_in_stderr() {
        let stderr = "noise\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom\nagain\n\
                      note: run with `RUST_BACKTRACE=1` environment variable\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom\nagain (at src/lib.rs:10:5)")
        );
        assert_eq!(panic_message("just an abort"), None);
    }

    #[test]
    fn python_exceptions_are_found_in_stderr() {
        let stderr = "Traceback (most recent call last):\n  File \"/0/app.py\", line 21, in process_message\n\
                      ValueError: boom\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
                      Python function threw an unexpected exception\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("ValueError: boom (at app.py, line 21, in process_message)")
        );
    }

    #[test]
    fn javascript_exceptions_are_found_in_stderr() {
        let stderr = "invalid variant tag value `undefined` (received `Error: boom`)\nStack:\n  \
                      export_processMessage@initializer.js:1146:17\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("invalid variant tag value `undefined` (received `Error: boom`)")
        );
        assert_eq!(panic_message("Stack:\nsomething\n"), None);
    }
}
