//! One instance of a plugin in its own wasmtime `Store`, and what it is allowed.
//!
//! The store's data ([`SandboxState`]) is everything the guest can reach: a WASI context
//! that grants nothing (no files, no sockets, no environment, no arguments, an empty
//! stdin; stdout and stderr captured) beyond the directories its options grant, the
//! plugin's config and store namespace, and the per-call budgets. A guest sees clocks
//! and random, and nothing else of the host.
//!
//! After a trap an instance must not be entered again (wasmtime answers
//! `CannotEnterComponent`), and its memory stays allocated as long as its store lives,
//! so a trapped sandbox is dropped whole and the next call gets a new one from the
//! plugin's pre-instantiated component.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{ComponentExportIndex, InstancePre, ResourceTable, TypedFunc};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::current::Current;
use crate::deadline::{Deadline, Ticks};
use crate::limits::{Limit, Limits};
use crate::message::Message;
use crate::output::{LogSource, Output};
use crate::plugin::DirGrant;
use crate::store::KvStore;
use crate::tier::Code;
use crate::world::bindings::corral::plugin::types::{Batch, BatchFailure, Decoded, Failure, RawBatch};
use crate::world::{self, Filter, FilterIndices};

/// Bytes counted for one table element against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;

/// The host-side state of one instance: what its imports read and write (its wasmtime
/// store's data). Opaque outside Corral: an embedder's host functions reach their own
/// data through [`crate::HostCtx`].
pub struct SandboxState {
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: Output,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) limits: Arc<Limits>,
    /// Messages emitted by the call in progress.
    pub(crate) emitted: Vec<Message>,
    /// How many messages the call in progress may emit.
    pub(crate) emit_cap: usize,
    /// Set when the call in progress tried to emit past the emit cap.
    pub(crate) emit_refused: bool,
    /// How the guest broke the contract in the call in progress, if it did (an emitted
    /// message the host refused).
    pub(crate) violation: Option<crate::error::Violation>,
    /// The message the call in progress was given, lent without a copy; the guest's
    /// `borrow<message>` handle always refers to it.
    pub(crate) message: Current,
    /// The data of the embedder's host functions, one per registration.
    pub(crate) embedder: Vec<Box<dyn std::any::Any + Send>>,
    /// When the call in progress must end, for the WASI calls that can block.
    pub(crate) deadline: Deadline,
    /// The exports called by name in this instance, each found and type-checked once:
    /// its name, the call's types and its function (see the `export` module).
    pub(crate) found: Vec<(Box<str>, std::any::TypeId, Box<dyn std::any::Any + Send>)>,
}

impl SandboxState {
    /// The WASI context, its resources and the deadline, borrowed apart.
    pub(crate) fn bounded(&mut self) -> (&mut WasiCtx, &mut ResourceTable, &mut Deadline) {
        (&mut self.wasi, &mut self.table, &mut self.deadline)
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Enforces [`Limits::memory_bytes`] over all of an instance's memories and tables, and
/// remembers a refusal: a Rust guest whose allocation is refused aborts with a plain
/// `unreachable` trap, so the refusal is the only reliable sign that memory was the cause.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap: usize,
    pub current: usize,
    pub peak: usize,
    /// The total the guest asked for when it was refused, during the call in progress.
    pub refused: Option<usize>,
}

impl MemoryLimiter {
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.current.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            self.refused = Some(total);
            return false;
        }
        self.current = total;
        self.peak = self.peak.max(total);
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

/// The optional `corral:plugin/state` export.
pub(crate) const STATE_INTERFACE: &str = concat!("corral:plugin/state@", plugin_version!());

/// `state.save` and `state.restore`, when the plugin exports them.
#[derive(Clone, Copy)]
pub(crate) struct StateFuncs {
    pub save: TypedFunc<(), (Result<Vec<u8>, String>,)>,
    pub restore: TypedFunc<(Vec<u8>,), (Result<(), String>,)>,
}

/// `batch-filter`'s entry point: the batch is shared, not moved, so that its buffers
/// are refilled for the next call instead of allocated again.
pub(crate) type ProcessBatch = TypedFunc<(Arc<Batch>,), (Vec<BatchFailure>,)>;
/// `decoder`'s entry point, its raw batch shared for the same reason.
pub(crate) type Decode = TypedFunc<(Arc<RawBatch>,), (Decoded,)>;
type TimerEvent = TypedFunc<(i64,), (Result<(), Failure>,)>;

/// An instance's entry points, by world.
pub(crate) enum Entries {
    /// `filter`: one message per call, read through the `message` resource.
    Filter(Filter),
    /// `batch-filter`: one or more messages per call, laid out in a [`Batch`].
    Batch {
        process: ProcessBatch,
        timer: TimerEvent,
    },
    /// `decoder`: raw records in, messages out, laid out in a [`RawBatch`].
    Decoder { decode: Decode, timer: TimerEvent },
}

/// A live instance and its store.
pub(crate) struct Sandbox {
    pub store: Store<SandboxState>,
    /// The instance, for exports called by name.
    pub instance: wasmtime::component::Instance,
    pub entries: Entries,
    pub state: Option<StateFuncs>,
}

/// Where a plugin's exports are, found once at load so that a fresh instance does not
/// look them up by name again.
pub(crate) struct Exports {
    world: WorldExports,
    /// `state.save` and `state.restore`, when the plugin exports the interface.
    state: Option<(ComponentExportIndex, ComponentExportIndex)>,
}

enum WorldExports {
    Filter(FilterIndices),
    Batch {
        process: ComponentExportIndex,
        timer: ComponentExportIndex,
    },
    Decoder {
        decode: ComponentExportIndex,
        timer: ComponentExportIndex,
    },
}

impl Exports {
    /// The exports of `pre`'s component; an error when it lacks an entry point, or
    /// exports the state interface without both of its functions.
    pub fn of(pre: &InstancePre<SandboxState>) -> wasmtime::Result<Exports> {
        let component = pre.component();
        let export = |interface: Option<&ComponentExportIndex>, name: &str| {
            component
                .get_export_index(interface, name)
                .ok_or_else(|| wasmtime::format_err!("no export `{name}`"))
        };
        let state = match component.get_export_index(None, STATE_INTERFACE) {
            None => None,
            Some(interface) => {
                let func = |name: &str| {
                    export(Some(&interface), name)
                        .map_err(|_| wasmtime::format_err!("`{STATE_INTERFACE}` does not export `{name}`"))
                };
                Some((func("save")?, func("restore")?))
            }
        };
        let world = match (
            component.get_export_index(None, world::DECODE),
            component.get_export_index(None, world::PROCESS_BATCH),
        ) {
            (Some(decode), _) => WorldExports::Decoder {
                decode,
                timer: export(None, world::TIMER_EVENT)?,
            },
            (None, Some(process)) => WorldExports::Batch {
                process,
                timer: export(None, world::TIMER_EVENT)?,
            },
            (None, None) => WorldExports::Filter(FilterIndices::new(pre)?),
        };
        Ok(Exports { world, state })
    }

    /// Whether the plugin takes messages in batches (the `batch-filter` world).
    pub fn batches(&self) -> bool {
        matches!(self.world, WorldExports::Batch { .. })
    }

    /// Whether the plugin is a decoder (the `decoder` world).
    pub fn decodes(&self) -> bool {
        matches!(self.world, WorldExports::Decoder { .. })
    }
}

/// What every instance of one plugin shares.
#[derive(Clone)]
pub(crate) struct SandboxSpec {
    pub plugin: Arc<str>,
    pub limits: Arc<Limits>,
    pub config: Arc<BTreeMap<String, String>>,
    pub dirs: Arc<Vec<DirGrant>>,
    pub kv: Arc<dyn KvStore>,
    pub output: Output,
    pub epoch_tick: Duration,
    /// The host's epoch clock, which the deadline of a blocking WASI call is read from.
    pub ticks: Ticks,
    /// The embedder's host functions, whose data each instance holds.
    pub host_functions: crate::embedder::HostFunctions,
}

/// Why a new instance did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// Its start-up ran into a limit.
    Limit(Limit, String),
    /// Anything else, in words.
    Other(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Limit(limit, detail) => write!(f, "it exceeded its {limit} limit: {detail}"),
            StartError::Other(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for StartError {}

impl SandboxSpec {
    /// A new instance in a new store. Its start-up runs under the same fuel, deadline
    /// and memory cap as a call, and what it prints is logged.
    pub fn instantiate(&self, code: &Code) -> Result<Sandbox, StartError> {
        self.try_instantiate(code)
            .map_err(|e| match e.downcast::<StartError>() {
                Ok(start) => start,
                Err(e) => StartError::Other(format!("{e:#}")),
            })
    }

    fn try_instantiate(&self, code: &Code) -> wasmtime::Result<Sandbox> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(self.output.stream(LogSource::Stdout))
            .stderr(self.output.stream(LogSource::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        for grant in self.dirs.iter() {
            let perms = if grant.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&grant.host, &grant.guest, perms)
                .map_err(|e| {
                    wasmtime::format_err!("cannot grant directory `{}`: {e:#}", grant.host.display())
                })?;
        }
        let wasi = wasi.build();
        let state = SandboxState {
            plugin: self.plugin.clone(),
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: usize::try_from(self.limits.memory_bytes).unwrap_or(usize::MAX),
                current: 0,
                peak: 0,
                refused: None,
            },
            output: self.output.clone(),
            config: self.config.clone(),
            kv: self.kv.clone(),
            limits: self.limits.clone(),
            emitted: Vec::new(),
            emit_cap: 0,
            emit_refused: false,
            violation: None,
            message: Current::default(),
            deadline: Deadline::new(self.ticks.clone(), self.epoch_tick),
            embedder: self.host_functions.data(&self.plugin, &self.config),
            found: Vec::new(),
        };
        let mut store = Store::new(code.pre.component().engine(), state);
        store.limiter(|s| &mut s.limiter);
        // What one host call may copy out of the guest (wasmtime's default is 128 MiB):
        // no more than the sandbox may hold. Running out is `Limit::HostCopy`.
        store.set_hostcall_fuel(crate::plugin::hostcall_fuel(&self.limits));
        self.arm(&mut store)?;
        let instance = code.pre.instantiate(&mut store);
        self.output.end();
        let deadline_hit = store.data().deadline.hit || is_interrupt(instance.as_ref().err());
        let instance = instance.map_err(|e| match store.data().limiter.refused {
            None if deadline_hit => wasmtime::Error::new(StartError::Limit(
                Limit::Deadline,
                format!("starting an instance may take {:?}", self.limits.deadline),
            )),
            Some(asked) => wasmtime::format_err!(
                "it needs {asked} bytes of memory to start, more than its memory limit of {} bytes: \
                 raise `memory` in its sidecar's [limits] (or --memory)",
                self.limits.memory_bytes
            ),
            None if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
                wasmtime::format_err!(
                    "{e}: the host's pool of sandboxes is full (`HostBuilder::pooling`); give it \
                 more room, or unload plugins"
                )
            }
            None => e,
        })?;
        let entries = match &code.exports.world {
            WorldExports::Filter(indices) => Entries::Filter(indices.load(&mut store, &instance)?),
            WorldExports::Batch { process, timer } => Entries::Batch {
                process: instance.get_typed_func(&mut store, process)?,
                timer: instance.get_typed_func(&mut store, timer)?,
            },
            WorldExports::Decoder { decode, timer } => Entries::Decoder {
                decode: instance.get_typed_func(&mut store, decode)?,
                timer: instance.get_typed_func(&mut store, timer)?,
            },
        };
        let state = match code.exports.state {
            Some((save, restore)) => Some(StateFuncs {
                save: instance.get_typed_func(&mut store, save)?,
                restore: instance.get_typed_func(&mut store, restore)?,
            }),
            None => None,
        };
        Ok(Sandbox {
            store,
            instance,
            entries,
            state,
        })
    }

    /// Refills fuel and sets the deadline for the next entry into the guest.
    pub fn arm(&self, store: &mut Store<SandboxState>) -> wasmtime::Result<()> {
        self.arm_for(store, 1)
    }

    /// Arms the store for a call carrying `messages` messages: each brings the budgets
    /// of one call (fuel, deadline, output, emits).
    pub fn arm_for(&self, store: &mut Store<SandboxState>, messages: u32) -> wasmtime::Result<()> {
        let n = u64::from(messages.max(1));
        store.set_fuel(self.limits.fuel.saturating_mul(n))?;
        let ticks = deadline_ticks(
            self.limits.deadline.saturating_mul(messages.max(1)),
            self.epoch_tick,
        );
        store.set_epoch_deadline(ticks);
        store.data_mut().deadline.arm(ticks);
        store.data_mut().emit_cap =
            usize::try_from(u64::from(self.limits.emits).saturating_mul(n)).unwrap_or(usize::MAX);
        if n > 1 {
            self.output.scale(n);
        }
        Ok(())
    }
}

/// Whether `error` is the epoch deadline's trap.
fn is_interrupt(error: Option<&wasmtime::Error>) -> bool {
    error.and_then(|e| e.downcast_ref::<wasmtime::Trap>()) == Some(&wasmtime::Trap::Interrupt)
}

/// Epoch ticks for a deadline: rounded up, plus one because the first tick may come at
/// once after the deadline is set.
fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    // In u64 where it fits, as every real deadline does: this runs on every call, and a
    // u128 division is a library call.
    if let (Ok(deadline), Ok(tick)) = (u64::try_from(deadline.as_nanos()), u64::try_from(tick.as_nanos())) {
        return deadline.div_ceil(tick.max(1)).saturating_add(1);
    }
    let tick = tick.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX - 1).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_ticks_round_up_and_never_reach_zero() {
        let ms = Duration::from_millis;
        assert_eq!(deadline_ticks(ms(10), ms(5)), 3);
        assert_eq!(deadline_ticks(ms(11), ms(5)), 4);
        assert_eq!(deadline_ticks(Duration::ZERO, ms(5)), 1);
    }

    #[test]
    fn limiter_counts_every_memory_and_remembers_a_refusal() {
        let mut l = MemoryLimiter {
            cap: 100,
            current: 0,
            peak: 0,
            refused: None,
        };
        assert!(l.grow(0, 60));
        assert!(l.grow(0, 40), "a second memory fits exactly");
        assert!(!l.grow(60, 61));
        assert_eq!((l.current, l.peak, l.refused), (100, 100, Some(101)));
    }
}
