//! The host: one wasmtime engine, one linker, and the plugins loaded through them.
//!
//! Compile once, instantiate many: the engine is shared by every plugin, a component is
//! compiled once per distinct content (remembered by its SHA-256 for as long as it is in
//! the small in-memory memo), checked against the world, and pre-instantiated; each
//! plugin then makes instances from that. An epoch thread ticks the engine so that
//! deadlines hold even in a loop that never calls the host; it stops when the engine
//! is gone.

mod builder;
mod cache;
pub(crate) mod compile;
mod compiling;
mod engine;
mod error;
mod grants;
mod link;
mod names;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use builder::HostBuilder;
use cache::CompileCache;
pub use compile::{CompileLimit, CompileLimits, CompileWorker, ComponentCost, compile_worker_main};
use compiling::Memo;
use engine::EngineSettings;
pub use error::{HostError, LoadError};
use grants::{GrantPolicy, Protected};
pub use names::{content_version, validate_name};
use names::{hex, plugin_name, sniff};

use crate::contract::WorldReport;
use crate::plugin::{Plugin, PluginOptions, Upgrade};
use crate::sandbox::deadline::Ticks;
use crate::sandbox::embedder::HostFunctions;
use crate::sandbox::output::Output;
use crate::sandbox::store::KvStore;
use crate::sandbox::{Code, SandboxSpec, SandboxState, StartError, Tier};

/// The baseline compiler's engine, and its linker.
#[derive(Clone)]
struct Baseline {
    engine: Engine,
    linker: Arc<Linker<SandboxState>>,
    settings: EngineSettings,
}

/// How components are compiled: the optimising engine's settings, the limits, and the
/// worker to compile in, if any.
#[derive(Debug)]
struct Compiler {
    settings: EngineSettings,
    limits: CompileLimits,
    worker: Option<CompileWorker>,
}

/// Loads plugins into sandboxes. Cloning a host is cheap and shares its engine, store
/// backend and compile memo.
#[derive(Clone)]
pub struct Host {
    engine: Engine,
    linker: Arc<Linker<SandboxState>>,
    store: Arc<dyn KvStore>,
    epoch_tick: Duration,
    /// Counted with the engine's epoch, for the deadline of blocking WASI calls.
    ticks: Ticks,
    memo: Arc<Mutex<Memo>>,
    /// The digests being compiled now, so that a second load of the same bytes waits
    /// for the first compile instead of doing it again (seconds, for a Python guest).
    compiling: Arc<(Mutex<Vec<[u8; 32]>>, Condvar)>,
    cache: Option<CompileCache>,
    counters: Arc<Counters>,
    baseline: Option<Baseline>,
    compiler: Arc<Compiler>,
    grants: Arc<GrantPolicy>,
    host_functions: HostFunctions,
}

#[derive(Debug, Default)]
struct Counters {
    memo_hits: AtomicU64,
    cache_hits: AtomicU64,
    compiled: AtomicU64,
    baseline_compiled: AtomicU64,
}

/// Where the components a host loaded came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompileStats {
    /// Found compiled in memory.
    pub memo_hits: u64,
    /// Found in the disk cache.
    pub cache_hits: u64,
    /// Compiled by Cranelift (optimised code), on the call path or, behind baseline
    /// code, in the background.
    pub compiled: u64,
    /// Compiled by Winch to serve while Cranelift compiles ([`HostBuilder::baseline`]).
    pub baseline_compiled: u64,
}

/// A component compiled, checked and linked, ready to start.
struct Linked {
    /// What instances are made from.
    code: Code,
    /// The optimised code on its way, when `code` is baseline code.
    upgrade: Option<Arc<Upgrade>>,
    report: WorldReport,
    /// The SHA-256 of the component's bytes.
    digest: [u8; 32],
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("store", &self.store)
            .field("epoch_tick", &self.epoch_tick)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host with the defaults: an in-memory store, a 5 ms epoch tick.
    ///
    /// # Errors
    ///
    /// See [`HostBuilder::build`].
    pub fn new() -> Result<Host, HostError> {
        HostBuilder::default().build()
    }

    /// A builder for a host with other settings.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The key-value backend behind every plugin's `store` import.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Loads a plugin from a `.wasm` file; its name is the file's stem (`hello` for
    /// `plugins/hello.wasm`).
    ///
    /// # Errors
    ///
    /// [`LoadError::Read`] when the file cannot be read, and everything
    /// [`Host::load`] returns.
    pub fn load_file(&self, path: impl AsRef<Path>, options: PluginOptions) -> Result<Plugin, LoadError> {
        let path = path.as_ref();
        let name = plugin_name(path)?;
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load(&name, &bytes, options)
    }

    /// Loads a plugin from the bytes of a component: compiles it (or finds it in the
    /// memo), checks it against the world, and starts its first instance.
    ///
    /// # Errors
    ///
    /// A [`LoadError`] naming the plugin and the reason: a bad name, bytes that are not
    /// a component, a component that does not fit the world, or one that cannot start
    /// within its limits.
    pub fn load(&self, name: &str, bytes: &[u8], options: PluginOptions) -> Result<Plugin, LoadError> {
        self.load_then(name, bytes, options, &|| {})
    }

    /// As [`Host::load`], calling `starting` once the component is compiled and
    /// checked, just before its instance starts (and the guest's code first runs).
    pub(crate) fn load_then(
        &self,
        name: &str,
        bytes: &[u8],
        options: PluginOptions,
        starting: &dyn Fn(),
    ) -> Result<Plugin, LoadError> {
        validate_name(name)?;
        self.grants.check(name, &options.dirs)?;
        let Linked {
            code,
            upgrade,
            report,
            digest,
        } = self.link(name, bytes)?;
        let plugin: Arc<str> = name.into();
        let spec = SandboxSpec {
            call_ticks: crate::sandbox::deadline_ticks(options.limits.deadline, self.epoch_tick),
            output: Output::new(plugin.clone(), options.limits.output_bytes),
            plugin,
            limits: Arc::new(options.limits),
            config: Arc::new(options.config),
            dirs: Arc::new(options.dirs),
            kv: self.store.clone(),
            epoch_tick: self.epoch_tick,
            ticks: self.ticks.clone(),
            host_functions: self.host_functions.clone(),
        };
        starting();
        Plugin::start(spec, code, upgrade, hex(&digest), report, options.restart).map_err(|e| match e {
            StartError::Limit(limit, detail) => LoadError::StartLimit {
                plugin: name.to_owned(),
                limit,
                detail,
            },
            StartError::PoolFull(full) => LoadError::PoolFull {
                plugin: name.to_owned(),
                source: full,
            },
            StartError::Other { reason, source } => LoadError::Instantiate {
                plugin: name.to_owned(),
                reason,
                source,
            },
        })
    }

    /// Protects a watch directory from directory grants (see
    /// [`HostBuilder::allow_broad_grants`]); the watcher protects its own.
    pub(crate) fn protect_watch_dir(&self, dir: &Path) {
        self.grants.protect(dir, Protected::Watch);
    }

    /// How many components were found in memory, found in the disk cache, or compiled.
    pub fn compile_stats(&self) -> CompileStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CompileStats {
            memo_hits: read(&self.counters.memo_hits),
            cache_hits: read(&self.counters.cache_hits),
            compiled: read(&self.counters.compiled),
            baseline_compiled: read(&self.counters.baseline_compiled),
        }
    }

    /// Checks that `bytes` are a component fitting the world, without running it.
    ///
    /// # Errors
    ///
    /// As [`Host::load`], except that start-up is not tried.
    pub fn check(&self, name: &str, bytes: &[u8]) -> Result<WorldReport, LoadError> {
        self.link(name, bytes).map(|linked| linked.report)
    }

    /// Compiles (or finds) and links `bytes`.
    fn link(&self, name: &str, bytes: &[u8]) -> Result<Linked, LoadError> {
        validate_name(name)?;
        sniff(name, bytes)?;
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let compiled = self.compile(name, bytes, digest)?;
        let (code, report) = self.link_component(name, &compiled.component)?;
        Ok(Linked {
            code,
            upgrade: compiled.upgrade,
            report,
            digest,
        })
    }

    /// Checks `component` against the world with the linker of the engine that compiled
    /// it.
    fn link_component(&self, name: &str, component: &Component) -> Result<(Code, WorldReport), LoadError> {
        let (engine, linker, tier) = match &self.baseline {
            Some(b) if Engine::same(component.engine(), &b.engine) => (&b.engine, &*b.linker, Tier::Baseline),
            _ => (&self.engine, &*self.linker, Tier::Optimized),
        };
        let provided = |import: &str| self.host_functions.provides(import);
        let (pre, exports, report) = link::link(name, engine, linker, component, &provided)?;
        let code = Code {
            pre,
            exports: Arc::new(exports),
            tier,
        };
        Ok((code, report))
    }
}
