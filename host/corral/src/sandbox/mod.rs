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

pub(crate) mod code;
pub(crate) mod current;
pub(crate) mod deadline;
pub(crate) mod embedder;
pub(crate) mod imports;
pub(crate) mod limits;
pub(crate) mod output;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod violation;
pub(crate) mod wasi;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::contract::batch::Layout;
pub use code::Tier;
use code::WorldExports;
pub(crate) use code::{Code, Entries, Exports, Lent, ProcessBatch, StateFuncs};
use current::Current;
use deadline::{Deadline, Ticks};
pub(crate) use limits::{Limit, Limits};
use output::{LogSource, Output};
pub use state::SandboxState;
pub(crate) use state::{MemoryLimiter, lend};
use store::KvStore;
pub use violation::Violation;

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

/// A live instance and its store.
pub(crate) struct Sandbox {
    pub store: Store<SandboxState>,
    /// The instance, for exports called by name.
    pub instance: wasmtime::component::Instance,
    pub entries: Entries,
    pub state: Option<StateFuncs>,
}

/// The bytes one host call may copy out of a sandbox with these limits (wasmtime's
/// hostcall fuel, 128 MiB by default): its memory limit, since a guest that hands the
/// host more than it can hold is repeating itself (the same string a million times).
pub(crate) fn hostcall_fuel(limits: &Limits) -> usize {
    usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX)
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
    /// One call's deadline in epoch ticks ([`deadline_ticks`]), worked out once: a
    /// division on every call otherwise.
    pub call_ticks: u64,
    /// The host's epoch clock, which the deadline of a blocking WASI call is read from.
    pub ticks: Ticks,
    /// The embedder's host functions, whose data each instance holds.
    pub host_functions: embedder::HostFunctions,
}

/// The cause of an error, kept typed for [`std::error::Error::source`]: an embedder can
/// downcast it (to a `std::io::Error`, a [`wasmtime::Trap`]…) where the message is not
/// enough.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A wasmtime error as a [`Cause`], its chain kept.
pub(crate) fn cause(error: wasmtime::Error) -> Cause {
    error.into_boxed_dyn_error()
}

/// Why a new instance did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// Its start-up ran into a limit.
    Limit(Limit, String),
    /// The host's pool of sandboxes has no free slot (`HostBuilder::pooling`).
    PoolFull(wasmtime::PoolConcurrencyLimitError),
    /// Anything else: the reason in words, and wasmtime's error behind it if there is
    /// one.
    Other { reason: String, source: Option<Cause> },
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Limit(limit, detail) => write!(f, "it exceeded its {limit} limit: {detail}"),
            StartError::PoolFull(full) => write!(f, "{full}: {POOL_FULL}"),
            StartError::Other { reason, .. } => f.write_str(reason),
        }
    }
}

impl std::error::Error for StartError {}

/// What to do about a full pool, in every message that reports one.
pub(crate) const POOL_FULL: &str =
    "the host's pool of sandboxes is full (`HostBuilder::pooling`); give it more room, or unload plugins";

impl SandboxSpec {
    /// A new instance in a new store. Its start-up runs under the same fuel, deadline
    /// and memory cap as a call, and what it prints is logged.
    pub fn instantiate(&self, code: &Code) -> Result<Sandbox, StartError> {
        self.try_instantiate(code)
            .map_err(|e| match e.downcast::<StartError>() {
                Ok(start) => start,
                Err(e) => match e.downcast::<wasmtime::PoolConcurrencyLimitError>() {
                    Ok(full) => StartError::PoolFull(full),
                    Err(e) => StartError::Other {
                        reason: format!("{e:#}"),
                        source: Some(cause(e)),
                    },
                },
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
            reports: Default::default(),
            found: Vec::new(),
        };
        let mut store = Store::new(code.pre.component().engine(), state);
        store.limiter(|s| &mut s.limiter);
        // What one host call may copy out of the guest (wasmtime's default is 128 MiB):
        // no more than the sandbox may hold. Running out is `Limit::HostCopy`.
        store.set_hostcall_fuel(hostcall_fuel(&self.limits));
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
            None => e,
        })?;
        let entries = match &code.exports.world {
            WorldExports::Filter(indices) => Entries::Filter(indices.load(&mut store, &instance)?),
            WorldExports::Batch {
                process,
                layout,
                timer,
            } => Entries::Batch {
                process: match layout {
                    Layout::Flat => ProcessBatch::Flat(Lent::get(&instance, &mut store, process)?),
                    Layout::FlatReturning => {
                        ProcessBatch::FlatReturning(Lent::get(&instance, &mut store, process)?)
                    }
                    Layout::Lists => ProcessBatch::Lists(Lent::get(&instance, &mut store, process)?),
                },
                timer: instance.get_typed_func(&mut store, timer)?,
            },
            WorldExports::Decoder { decode, timer } => Entries::Decoder {
                decode: Lent::get(&instance, &mut store, decode)?,
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
        let ticks = match messages {
            0 | 1 => self.call_ticks,
            _ => deadline_ticks(self.limits.deadline.saturating_mul(messages), self.epoch_tick),
        };
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
/// once after the deadline is set, plus one for an epoch thread running late. A thread
/// the machine starved makes up the ticks it missed at once (so that a deadline counts
/// wall time, not wake-ups), and a call armed while it was behind would have that lag
/// counted against it: on a loaded 2-core CI machine a 100 ms deadline ended at 99.8 ms.
/// With the extra tick a call gets its whole deadline unless the thread is more than a
/// tick late, and a breach still ends within two ticks of it.
pub(crate) fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    // In u64 where it fits, as every real deadline does: this runs on every call, and a
    // u128 division is a library call. (Reading the clock here to measure the thread's
    // lag would cost about 30 ns a call.)
    if let (Ok(deadline), Ok(tick)) = (u64::try_from(deadline.as_nanos()), u64::try_from(tick.as_nanos())) {
        return deadline.div_ceil(tick.max(1)).saturating_add(2);
    }
    let tick = tick.as_nanos().max(1);
    let ticks = deadline.as_nanos().div_ceil(tick);
    u64::try_from(ticks).unwrap_or(u64::MAX - 2).saturating_add(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_ticks_round_up_and_never_reach_zero() {
        let ms = Duration::from_millis;
        assert_eq!(deadline_ticks(ms(10), ms(5)), 4);
        assert_eq!(deadline_ticks(ms(11), ms(5)), 5);
        assert_eq!(deadline_ticks(Duration::ZERO, ms(5)), 2);
        assert_eq!(deadline_ticks(Duration::MAX, Duration::from_nanos(1)), u64::MAX);
    }
}
