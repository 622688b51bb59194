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
//! reason in [`PluginState`] until it is replaced by a new load, or, with a
//! [`PluginOptions::restart`] policy, until its backoff ends and it restarts (see the
//! `restart` module).
//!
//! The state, tier and stats are published apart from the call's lock: reading them
//! never waits for a call in progress, however long the guest holds it (at most its
//! deadline, blocking WASI calls included: see the `deadline` module).
//!
//! A call is all or nothing for its output: the messages a failed call emitted are
//! discarded (and counted in [`Stats::discarded`]), so a caller never acts on half a
//! call's work.
//!
//! A `batch-filter` plugin takes one or more messages per call
//! ([`Plugin::process_messages`]); each message brings the budgets of one call, and the
//! rules above apply message by message where the guest reports them (a non-fatal
//! failure is listed by index, failures in a row count per message) and to the whole
//! batch where it cannot (a trap or a limit fails every message of it).
//!
//! A plugin new to a host with the baseline tier starts on Winch's code and moves to
//! Cranelift's where nothing is lost (see the `tier` module).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::Resource;

use crate::batch::Messages;
use crate::error::{CallError, LoadError, Violation};
use crate::limits::{Limit, Limits};
use crate::lock;
use crate::message::Message;
use crate::output::{LogGate, LogLine, escape, escaped_len};
use crate::restart::{RestartPolicy, RestartStatus, Restarts};
use crate::sandbox::{Entries, Sandbox, SandboxSpec, SandboxState, StartError};
use crate::stats::Stats;
use crate::tier::{Code, Tier, Upgrade};
use crate::world::WorldReport;
use crate::world::bindings::corral::plugin::types::{Batch, Failure, RawBatch};

/// What a plugin is configured with when it is loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginOptions {
    /// The limits it runs under.
    pub limits: Limits,
    /// The values its `config` import returns.
    pub config: BTreeMap<String, String>,
    /// Host directories the plugin may open through WASI; none by default.
    pub dirs: Vec<DirGrant>,
    /// Whether and when it is restarted after a termination; by default never: it
    /// stays terminated until replaced.
    pub restart: Option<RestartPolicy>,
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

/// What a run of messages produced: see [`Plugin::process_messages`].
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// The messages emitted, in order.
    pub emitted: Vec<Message>,
    /// The lines logged or printed, in order.
    pub logs: Vec<LogLine>,
    /// The messages that failed, by their index in the batch, with why.
    pub failed: Vec<(usize, CallError)>,
    /// The calls into the guest it took: one for a `batch-filter` plugin, one per
    /// message for a `filter` plugin.
    pub calls: u64,
}

/// A plugin loaded into a sandbox. Cheap to share behind an `Arc`: every method takes
/// `&self`, and calls on one plugin wait for each other.
pub struct Plugin {
    spec: SandboxSpec,
    stateful: bool,
    batches: bool,
    decodes: bool,
    version: String,
    report: WorldReport,
    restart: Option<RestartPolicy>,
    cell: Mutex<Cell>,
    stats: Mutex<Stats>,
    /// What the cell holds, published for readers that must not wait on a call in
    /// progress (status, metrics): the state, changed only under the cell's lock, and
    /// the restart status.
    shown: Mutex<(PluginState, Option<RestartStatus>)>,
    /// The tier of the code the instance runs, as of the last call.
    tier: AtomicU8,
    /// The plugin itself, once shared, for a restart that comes due with no call.
    this: OnceLock<Weak<Plugin>>,
    /// The rate of the host's log lines about the plugin, shared with its guest's.
    gate: Arc<Mutex<LogGate>>,
}

struct Cell {
    sandbox: Option<Instance>,
    /// What new instances are made from.
    code: Code,
    /// Optimised code on its way, while `code` is baseline code.
    upgrade: Option<Arc<Upgrade>>,
    /// The buffers of the next batch, refilled for each `batch-filter` call.
    batch: Arc<Batch>,
    /// The same for a `decoder`'s raw records.
    raw: Arc<RawBatch>,
    state: PluginState,
    consecutive_failures: u32,
    /// `process-message` calls made, to time one in [`crate::stats::TIMING_SAMPLE`].
    message_calls: u64,
    /// Calls of exports by name made, likewise.
    export_calls: u64,
    /// Replaced by a newer version or unloaded: calls are refused with
    /// [`CallError::Unloaded`] so that a registry retries them on the newer version.
    retired: bool,
    restarts: Restarts,
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

pub(crate) enum Entry<'a> {
    /// One or more messages: one for a `filter` plugin.
    Messages(&'a dyn Messages),
    /// One or more raw records, for a `decoder`.
    Records(&'a [crate::decoder::RawRecord<'a>]),
    Timer(i64),
    /// An export called by name: the first step finds it (an `Err` is the caller's
    /// mistake, nothing ran), the second calls it.
    Export(&'a mut dyn ExportCall),
}

/// A call of an export by name, for [`Entry::Export`].
pub(crate) trait ExportCall {
    /// Finds the export in `instance` and checks its type.
    fn find(
        &mut self,
        store: &mut wasmtime::Store<SandboxState>,
        instance: &wasmtime::component::Instance,
    ) -> Result<(), String>;
    /// Calls it.
    fn call(&mut self, store: &mut wasmtime::Store<SandboxState>) -> wasmtime::Result<()>;
}

/// A live sandbox and what it has run.
struct Instance {
    sandbox: Sandbox,
    /// The code it runs: `Cell::code` when it was made, which may have moved on.
    tier: Tier,
    /// Whether it has been entered since it started: until then it holds no state.
    called: bool,
}

/// A call that ran: its outcome, and the messages of a batch that failed in it.
pub(crate) struct Done {
    pub(crate) outcome: CallOutcome,
    pub(crate) failed: Vec<(usize, CallError)>,
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
    /// `upgrade` brings optimised code later when `code` is baseline code.
    pub(crate) fn start(
        spec: SandboxSpec,
        code: Code,
        upgrade: Option<Arc<Upgrade>>,
        version: String,
        report: WorldReport,
        restart: Option<RestartPolicy>,
    ) -> Result<Plugin, LoadError> {
        let sandbox = spec.instantiate(&code).map_err(|e| match e {
            StartError::Limit(limit, detail) => LoadError::StartLimit {
                plugin: spec.plugin.to_string(),
                limit,
                detail,
            },
            StartError::Other(reason) => LoadError::Instantiate {
                plugin: spec.plugin.to_string(),
                reason,
            },
        })?;
        let memory = sandbox.store.data().limiter.current as u64;
        let code_tier = code.tier;
        Ok(Plugin {
            stateful: sandbox.state.is_some(),
            batches: code.exports.batches(),
            decodes: code.exports.decodes(),
            stats: Mutex::new(Stats {
                instances: 1,
                memory_bytes: memory,
                peak_memory_bytes: memory,
                ..Stats::default()
            }),
            cell: Mutex::new(Cell {
                sandbox: Some(Instance {
                    sandbox,
                    tier: code.tier,
                    called: false,
                }),
                code,
                upgrade,
                batch: Arc::new(crate::batch::empty()),
                raw: Arc::new(crate::decoder::empty()),
                state: PluginState::Running,
                consecutive_failures: 0,
                message_calls: 0,
                export_calls: 0,
                retired: false,
                restarts: Restarts::default(),
            }),
            shown: Mutex::new((
                PluginState::Running,
                restart.as_ref().map(|_| RestartStatus::default()),
            )),
            tier: AtomicU8::new(tier_code(code_tier)),
            this: OnceLock::new(),
            restart,
            gate: spec.output.gate(),
            spec,
            version,
            report,
        })
    }

    /// Which compiler made the code the plugin's instance runs: baseline for a plugin
    /// new to the host, until the optimised code is ready and can take over (see
    /// [`crate::HostBuilder::baseline`]).
    pub fn tier(&self) -> Tier {
        match self.tier.load(Ordering::Relaxed) {
            0 => Tier::Baseline,
            _ => Tier::Optimized,
        }
    }

    /// Publishes the tier of the code the plugin runs now.
    fn show_tier(&self, cell: &Cell) {
        let tier = cell.sandbox.as_ref().map_or(cell.code.tier, |i| i.tier);
        self.tier.store(tier_code(tier), Ordering::Relaxed);
    }

    /// Publishes the state and restart status of `cell`, after a change.
    fn show_state(&self, cell: &Cell) {
        let restart = self.restart.as_ref().map(|_| cell.restarts.status.clone());
        *lock(&self.shown) = (cell.state.clone(), restart);
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

    /// Whether it takes calls. Never waits for a call in progress.
    pub fn state(&self) -> PluginState {
        lock(&self.shown).0.clone()
    }

    /// Its restarts so far and when the next is due, if it has a restart policy
    /// ([`PluginOptions::restart`]). Never waits for a call in progress.
    pub fn restart_status(&self) -> Option<RestartStatus> {
        lock(&self.shown).1.clone()
    }

    /// Lets the plugin restart itself when a restart comes due with no call to make it
    /// (a plugin not held in an `Arc` restarts at the first call after its backoff).
    pub(crate) fn attach(self: &Arc<Self>) {
        let _ = self.this.set(Arc::downgrade(self));
    }

    /// A snapshot of its statistics.
    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    /// Calls the guest with `message`: its `process-message`, or its `process-batch`
    /// with a batch of one.
    ///
    /// # Errors
    ///
    /// A [`CallError`] naming the plugin and why the call failed; see the module docs for
    /// what each failure does to the plugin.
    pub fn process_message(&self, message: &Message) -> Result<CallOutcome, CallError> {
        self.call(Entry::Messages(&std::slice::from_ref(message)))
            .map(|done| done.outcome)
    }

    /// Hands the guest several messages, in order. A `batch-filter` plugin takes them in
    /// one call, each message bringing the limits of one call (fuel, deadline, output,
    /// emits); a `filter` plugin takes them one call each.
    ///
    /// A message that fails without failing the call is listed in
    /// [`BatchOutcome::failed`], and the others' emits are kept: the host cannot tell
    /// which message of a batch emitted what.
    ///
    /// # Errors
    ///
    /// For a `batch-filter` plugin, a [`CallError`] when the call failed as a whole (a
    /// trap, a limit, a fatal failure, a terminated plugin): every message of the batch
    /// failed with it, and its emits are discarded. A `filter` plugin's messages are
    /// separate calls: each failure is listed in [`BatchOutcome::failed`] and the next
    /// message is still delivered, so it never returns an error — except that once the
    /// plugin is replaced or unloaded, the first message it refuses is listed with
    /// [`CallError::Unloaded`] and the rest are not tried.
    pub fn process_messages<M: Borrow<Message>>(&self, messages: &[M]) -> Result<BatchOutcome, CallError> {
        if messages.is_empty() {
            return Ok(BatchOutcome::default());
        }
        if self.batches() {
            let done = self.call(Entry::Messages(&messages))?;
            return Ok(BatchOutcome {
                emitted: done.outcome.emitted,
                logs: done.outcome.logs,
                failed: done.failed,
                calls: 1,
            });
        }
        let mut all = BatchOutcome::default();
        for (index, message) in messages.iter().enumerate() {
            match self.process_message(message.borrow()) {
                Ok(outcome) => {
                    all.emitted.extend(outcome.emitted);
                    all.logs.extend(outcome.logs);
                }
                // Replaced or unloaded: it refuses the rest, which a registry hands to
                // the version serving the name now.
                Err(error @ CallError::Unloaded { .. }) => {
                    all.failed.push((index, error));
                    break;
                }
                Err(error) => all.failed.push((index, error)),
            }
            all.calls += 1;
        }
        Ok(all)
    }

    /// Whether the plugin takes messages in batches: it targets the `batch-filter`
    /// world (its `process-batch`) rather than `filter` (its `process-message`).
    pub fn batches(&self) -> bool {
        self.batches
    }

    /// Whether it is a decoder (the `decoder` world): it takes raw records through
    /// [`Plugin::decode`], not messages.
    pub fn decodes(&self) -> bool {
        self.decodes
    }

    /// Calls the guest's `timer-event` with the time in nanoseconds since the Unix epoch.
    ///
    /// # Errors
    ///
    /// As [`Plugin::process_message`].
    pub fn timer_event(&self, now_ns: i64) -> Result<CallOutcome, CallError> {
        self.call(Entry::Timer(now_ns)).map(|done| done.outcome)
    }

    /// The component its new instances are made from.
    pub(crate) fn component(&self) -> wasmtime::component::Component {
        lock(&self.cell).code.pre.component().clone()
    }

    /// Calls an export by name (see the `export` module).
    pub(crate) fn call_export_inner(&self, call: &mut dyn ExportCall) -> Result<CallOutcome, CallError> {
        self.call(Entry::Export(call)).map(|done| done.outcome)
    }

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
        let timed = is_timer || count.next_multiple_of(crate::stats::TIMING_SAMPLE) < *count + n;
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

    /// Logs a warning about the plugin, through its log gate (see [`LogGate`]).
    fn warn(&self, line: std::fmt::Arguments<'_>) {
        let admitted = lock(&self.gate).admit();
        if crate::output::gate_report(self.name(), admitted) {
            tracing::warn!(plugin = self.name(), "{line}");
        }
    }

    fn terminate(&self, cell: &mut Cell, stats: &mut Stats, reason: String) {
        tracing::error!(plugin = self.name(), %reason, "plugin terminated");
        stats.terminations += 1;
        stats.memory_bytes = 0;
        cell.sandbox = None;
        cell.state = PluginState::Terminated { reason };
        if let Some(policy) = &self.restart {
            match cell.restarts.terminated(policy, Instant::now()) {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    tracing::info!(plugin = self.name(), ?wait, "restart scheduled");
                    self.schedule_restart(due);
                }
                None => tracing::warn!(
                    plugin = self.name(),
                    restarts = cell.restarts.status.in_a_row,
                    "restarts in a row at the most allowed: the plugin stays terminated until replaced"
                ),
            }
        }
        self.show_state(cell);
    }

    /// Restarts the plugin when `due` comes, unless a call has done it by then (only a
    /// plugin shared through [`Plugin::attach`]; others restart at their next call).
    fn schedule_restart(&self, due: Instant) {
        let Some(this) = self.this.get().cloned() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("corral-restart".into())
            .spawn(move || {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if let Some(plugin) = this.upgrade() {
                    let mut cell = lock(&plugin.cell);
                    let due = !cell.retired
                        && cell.state != PluginState::Running
                        && cell.restarts.is_due(Instant::now());
                    if due {
                        let _ = plugin.restart(&mut cell);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                plugin = self.name(),
                "cannot start a restart timer, the next call restarts it: {e}"
            );
        }
    }

    /// Brings a terminated plugin back: a fresh instance, and calls again. A fresh
    /// instance that cannot start terminates it again, with the next backoff.
    fn restart(&self, cell: &mut Cell) -> Result<(), CallError> {
        cell.restarts.restarted(Instant::now());
        cell.consecutive_failures = 0;
        cell.sandbox = None;
        let started = self.spec.instantiate(&cell.code);
        let mut stats = lock(&self.stats);
        stats.restarts += 1;
        match started {
            Ok(sandbox) => {
                stats.instances += 1;
                stats.memory_bytes = sandbox.store.data().limiter.current as u64;
                cell.sandbox = Some(Instance {
                    sandbox,
                    tier: cell.code.tier,
                    called: false,
                });
                cell.state = PluginState::Running;
                tracing::info!(
                    plugin = self.name(),
                    restarts = cell.restarts.status.restarts,
                    "plugin restarted"
                );
                self.show_state(cell);
                self.show_tier(cell);
                Ok(())
            }
            Err(e) => {
                let error = self.start_failed(e);
                stats.last_error = Some(error.to_string());
                self.terminate(cell, &mut stats, format!("restarting failed: {error}"));
                Err(error)
            }
        }
    }

    /// The error of a fresh instance that did not start.
    fn start_failed(&self, error: StartError) -> CallError {
        let plugin = self.name().to_owned();
        match error {
            StartError::Limit(limit, detail) => CallError::Limit {
                plugin,
                limit,
                detail,
            },
            StartError::Other(reason) => CallError::Restart { plugin, reason },
        }
    }

    /// Moves the plugin to its optimised code once that is ready, at the first point
    /// where nothing is lost (see the `tier` module). True when it made a new instance.
    fn tier_up(&self, cell: &mut Cell) -> bool {
        let Some(result) = cell.upgrade.as_ref().and_then(|upgrade| upgrade.result()) else {
            return false;
        };
        cell.upgrade = None;
        let plugin = self.name();
        cell.code = match result {
            Ok(code) => code,
            Err(reason) => {
                tracing::warn!(plugin, %reason, "no optimised code: the plugin stays on baseline code");
                return false;
            }
        };
        let Some(instance) = &mut cell.sandbox else {
            return false;
        };
        if !instance.called {
            // Nothing to keep: the next call starts an instance of the optimised code.
            cell.sandbox = None;
            return false;
        }
        let Some(funcs) = instance.sandbox.state else {
            tracing::debug!(plugin, "optimised code ready: it serves from the next instance");
            return false;
        };
        let saved = self.run_state_call(&mut instance.sandbox, |store| {
            funcs.save.call(store, ()).map(|(r,)| r)
        });
        let moved = saved.and_then(|data| {
            let mut fresh = self.spec.instantiate(&cell.code).map_err(|e| e.to_string())?;
            let restore = fresh
                .state
                .ok_or("the optimised code does not export the state interface")?
                .restore;
            self.run_state_call(&mut fresh, |store| restore.call(store, (data,)).map(|(r,)| r))?;
            Ok(fresh)
        });
        match moved {
            Ok(fresh) => {
                cell.sandbox = Some(Instance {
                    sandbox: fresh,
                    tier: cell.code.tier,
                    called: true,
                });
                tracing::debug!(plugin, "moved to optimised code, state handed over");
                true
            }
            Err(reason) => {
                tracing::warn!(
                    plugin,
                    %reason,
                    "cannot hand the state over to optimised code: it serves from the next instance"
                );
                false
            }
        }
    }

    /// Runs one call on the plugin's instance, making a fresh one first if the last call
    /// trapped. Drops the instance again if this call traps.
    fn run(
        &self,
        cell: &mut Cell,
        entry: Entry<'_>,
        restarted: &mut bool,
    ) -> (Result<Done, CallError>, Facts) {
        let mut facts = Facts {
            fuel_used: 0,
            output_used: 0,
            memory: 0,
            peak_memory: 0,
            emitted: 0,
        };
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
                Err(e) => return (Err(self.start_failed(e)), facts),
            }
        }
        let host_error = |reason: String| CallError::Host {
            plugin: plugin(),
            reason,
        };
        let Cell {
            sandbox, batch, raw, ..
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
            return (Err(host_error(format!("{e:#}"))), facts);
        }
        {
            let data = store.data_mut();
            data.emitted.clear();
            data.emit_refused = false;
            data.violation = None;
            data.limiter.refused = None;
        }
        // Every entry point's answer as the failures it reports, by message.
        let single = |r: wasmtime::Result<Result<(), Failure>>| {
            r.map(|r| r.err().map(|f| (0, f)).into_iter().collect())
        };
        let result: wasmtime::Result<Vec<(u32, Failure)>> = match (entry, entries) {
            (Entry::Export(export), _) => {
                if let Err(reason) = export.find(store, handle) {
                    self.spec.output.end();
                    return (
                        Err(CallError::Export {
                            plugin: plugin(),
                            export: String::new(),
                            reason,
                        }),
                        facts,
                    );
                }
                export.call(store).map(|()| Vec::new())
            }
            (Entry::Messages(messages), Entries::Filter(filter)) => {
                debug_assert_eq!(messages.len(), 1, "a filter plugin takes one message per call");
                single(crate::current::lend(store, messages.get(0), |store| {
                    filter.call_process_message(store, Resource::new_borrow(0))
                }))
            }
            (Entry::Messages(messages), Entries::Batch { process, .. }) => {
                // The guest's copy of the last batch is gone when its call returned; ours
                // is shared with nobody now, and is refilled in place.
                let Some(buffers) = Arc::get_mut(batch) else {
                    unreachable!("a batch is shared only during its call")
                };
                if crate::batch::fill(buffers, messages).is_err() {
                    self.spec.output.end();
                    let error = host_error(format!(
                        "{} messages do not fit one batch (over 4 GiB of text)",
                        messages.len()
                    ));
                    return (Err(error), facts);
                }
                process
                    .call(&mut *store, (batch.clone(),))
                    .map(|(failures,)| failures.into_iter().map(|f| (f.index, f.failure)).collect())
            }
            (Entry::Records(records), Entries::Decoder { decode, .. }) => {
                let Some(buffers) = Arc::get_mut(raw) else {
                    unreachable!("a raw batch is shared only during its call")
                };
                if crate::decoder::fill(buffers, records).is_err() {
                    self.spec.output.end();
                    let error = host_error(format!(
                        "{} records do not fit one batch (over 4 GiB of text)",
                        records.len()
                    ));
                    return (Err(error), facts);
                }
                decode.call(&mut *store, (raw.clone(),)).and_then(|(decoded,)| {
                    // The messages returned are taken as if emitted, one by one: the
                    // same checks, the same caps, the same order.
                    use crate::world::bindings::corral::plugin::emit::Host as _;
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
                return (
                    Err(host_error("the call does not fit the plugin's world".to_owned())),
                    facts,
                );
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
        let output = self.spec.output.end();
        let n = messages as u64;
        let fuel = self.spec.limits.fuel.saturating_mul(n);
        facts.fuel_used = (fuel - store.get_fuel().unwrap_or(0)) / n;
        facts.output_used = output.used / n;
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
        let result = match result.map(|failures| check_failures(failures, messages)) {
            Ok(Ok(failures)) if failures.is_empty() => Ok(Done {
                outcome: CallOutcome {
                    emitted,
                    logs: output.lines,
                },
                failed: Vec::new(),
            }),
            Ok(Err(violation)) => {
                // Handled as a trap: what else the instance believes is not to be trusted.
                *sandbox = None;
                facts.memory = 0;
                Err(CallError::Violation {
                    plugin: plugin(),
                    violation,
                })
            }
            Ok(Ok(failures))
                if output.used.saturating_add(
                    failures
                        .iter()
                        .map(|(_, f)| escaped_len(failure_text(f)) as u64)
                        .sum::<u64>(),
                ) > limits.output_bytes.saturating_mul(n) =>
            {
                *sandbox = None;
                facts.memory = 0;
                Err(output_limit())
            }
            Ok(Ok(failures)) => {
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
    /// Whether a call (or a swap, or a save) holds the plugin now.
    pub fn is_busy(&self) -> bool {
        self.cell.try_lock().is_err()
    }

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

    /// The guest's `state.save` now, without retiring the plugin (a checkpoint's state):
    /// `None` when it does not export the interface, is terminated, retired, or has no
    /// instance (after a trap).
    ///
    /// # Errors
    ///
    /// Why `state.save` failed: the guest's reason, a trap, or its deadline.
    pub fn save_state(&self) -> Option<Result<Vec<u8>, String>> {
        let mut cell = lock(&self.cell);
        if cell.retired || cell.state != PluginState::Running {
            return None;
        }
        let sandbox = &mut cell.sandbox.as_mut()?.sandbox;
        let funcs = sandbox.state?;
        Some(self.run_state_call(sandbox, |store| funcs.save.call(store, ()).map(|(r,)| r)))
    }

    /// Hands `data` to the guest's `state.restore`. On failure the instance is dropped,
    /// so the plugin starts empty rather than half-restored.
    ///
    /// # Errors
    ///
    /// Why `state.restore` failed, or that the plugin cannot take state.
    pub fn restore_state(&self, data: Vec<u8>) -> Result<(), String> {
        let mut cell = lock(&self.cell);
        let result = match cell.sandbox.as_mut() {
            Some(instance) => {
                // It holds state now: a move to optimised code must hand it over.
                instance.called = true;
                match instance.sandbox.state {
                    Some(funcs) => self.run_state_call(&mut instance.sandbox, |store| {
                        funcs.restore.call(store, (data,)).map(|(r,)| r)
                    }),
                    None => Err("the new version does not export the state interface".to_owned()),
                }
            }
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
        let deadline_hit = sandbox.store.data().deadline.hit;
        match result {
            // The guest's own reason, escaped: it reaches the host's log.
            Ok(result) => result.map_err(|reason| escape(&reason).into_owned()),
            Err(trap) => Err(match trap.downcast_ref::<Trap>() {
                _ if deadline_hit => self.deadline_text(),
                Some(Trap::Interrupt) => self.deadline_text(),
                Some(trap) => format!("trapped: {trap}"),
                None => format!("{trap:#}"),
            }),
        }
    }
}

impl Plugin {
    fn deadline_text(&self) -> String {
        format!(
            "exceeded its deadline limit: a call may take {:?}",
            self.spec.limits.deadline
        )
    }
}

/// The tier as [`Plugin::tier`] keeps it.
fn tier_code(tier: Tier) -> u8 {
    match tier {
        Tier::Baseline => 0,
        Tier::Optimized => 1,
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
        let sandbox = &mut self.cell.sandbox.as_mut()?.sandbox;
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

/// The bytes one host call may copy out of a sandbox with these limits (wasmtime's
/// hostcall fuel, 128 MiB by default): its memory limit, since a guest that hands the
/// host more than it can hold is repeating itself (the same string a million times).
pub(crate) fn hostcall_fuel(limits: &Limits) -> usize {
    usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX)
}

/// The failures `process-batch` returned, if they are strictly increasing indices inside
/// the batch (so at most one per message); the contract it broke otherwise.
fn check_failures(failures: Vec<(u32, Failure)>, messages: usize) -> Result<Vec<(u32, Failure)>, Violation> {
    let mut previous: Option<u32> = None;
    for &(index, _) in &failures {
        if index as usize >= messages {
            return Err(Violation::FailureOutOfRange { index, messages });
        }
        if let Some(previous) = previous.filter(|p| index <= *p) {
            return Err(Violation::FailureOrder { index, previous });
        }
        previous = Some(index);
    }
    Ok(failures)
}

fn failure_text(failure: &Failure) -> &str {
    match failure {
        Failure::NonFatal(message) | Failure::Fatal(message) => message,
    }
}

/// Whose fault an error that is not a wasm trap is.
#[derive(Debug, PartialEq)]
enum Fault {
    /// The guest made the host copy more than its hostcall fuel.
    HostCopy,
    /// The guest broke the canonical ABI or called `exit`.
    Guest(Violation),
    /// Something of the host's own.
    Host,
}

/// Tells the guest's own faults from the host's in an error that ended a call without a
/// wasm trap. Wasmtime reports canonical-ABI faults (a pointer outside memory, a bad
/// `cabi_realloc` result, an invalid discriminant, too many handles) as untyped errors,
/// so they are recognised by their text, as wasmtime 48 writes it: the hostile tests
/// (`tests/all/integrity.rs`) catch a wasmtime upgrade that changes one.
fn classify(error: &wasmtime::Error) -> Fault {
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Fault::Guest(Violation::Exit { code: exit.0 });
    }
    // The root cause: what went wrong, without the wasm backtrace wrapped around it.
    let text = error.root_cause().to_string();
    if error.downcast_ref::<std::str::Utf8Error>().is_some() {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        return Fault::HostCopy;
    }
    if text.contains("handle limit exceeded") || text.contains("too many active lends") {
        return Fault::Guest(Violation::TooManyHandles { reason: text });
    }
    if error
        .downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some()
    {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    const ABI: &[&str] = &[
        "realloc return:",
        "pointer out of bounds",
        "out of bounds of memory",
        "not aligned",
        "pointer size overflow",
        "size overflow copying",
        "byte length overflow",
        "byte length too large",
        "discriminant",
        "invalid utf8 encoding",
        "invalid utf16 encoding",
        "out of range for `char`",
        "unknown handle index",
        "is not a resource",
        "is not an own resource",
        "handle is not",
        "cannot lift own resource from a borrow",
        "cannot lower a `borrow` resource into an `own`",
        "cannot remove owned resource while borrowed",
        "borrow handles still remain",
        "resource type mismatch",
        "mismatched resource types",
        "host resource already consumed",
    ];
    let lower = text.to_ascii_lowercase();
    if ABI.iter().any(|pattern| lower.contains(pattern)) {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    Fault::Host
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
