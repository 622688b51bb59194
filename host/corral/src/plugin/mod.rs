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

mod call;
mod decode;
mod error;
mod export;
mod fault;
mod lifecycle;
mod options;
mod restart;
mod run;
mod state;
mod stats;
mod tier;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

pub use error::CallError;
pub use options::{BatchOutcome, CallOutcome, PluginOptions, PluginState};
pub use restart::{RestartPolicy, RestartStatus};
pub use stats::{EntryStats, Stats, TIMING_SAMPLE};
pub(crate) use tier::Upgrade;

use crate::contract::WorldReport;
use crate::contract::batch::Messages;
use crate::contract::bindings::corral::plugin::types::{Batch, RawBatch};
use crate::contract::message::Message;
use crate::lock;
use crate::sandbox::output::LogGate;
use crate::sandbox::{Code, Limits, Sandbox, SandboxSpec, SandboxState, StartError, Tier};
use restart::Restarts;

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
    /// The buffer of the next batch, refilled for each `batch-filter` call.
    batch: Vec<u8>,
    /// The same for a plugin built before the `message-batch`, in three lists.
    lists: Batch,
    /// The same for a `decoder`'s raw records.
    raw: RawBatch,
    state: PluginState,
    consecutive_failures: u32,
    /// `process-message` calls made, to time one in [`crate::plugin::TIMING_SAMPLE`].
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
    Records(&'a [crate::contract::raw::RawRecord<'a>]),
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
#[derive(Default)]
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
    ) -> Result<Plugin, StartError> {
        let sandbox = spec.instantiate(&code)?;
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
                batch: Vec::new(),
                lists: crate::contract::batch::empty(),
                raw: crate::contract::raw::empty(),
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
}

/// The tier as [`Plugin::tier`] keeps it.
fn tier_code(tier: Tier) -> u8 {
    match tier {
        Tier::Baseline => 0,
        Tier::Optimized => 1,
    }
}
