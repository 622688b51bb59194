//! The host: one wasmtime engine, one linker, and the plugins loaded through them.
//!
//! Compile once, instantiate many: the engine is shared by every plugin, a component is
//! compiled once per distinct content (remembered by its SHA-256 for as long as it is in
//! the small in-memory memo), checked against the world, and pre-instantiated; each
//! plugin then makes instances from that. An epoch thread ticks the engine so that
//! deadlines hold even in a loop that never calls the host; it stops when the engine
//! is gone.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::cache::CompileCache;
use crate::compile::{self, CompileLimits, CompileWorker, ComponentCost, WorkerError};
use crate::deadline::Ticks;
use crate::embedder::{HostFunctions, HostGetter, HostLinker};
use crate::engine::{self, EngineSettings};
use crate::error::LoadError;
use crate::grants::{GrantPolicy, Protected};
use crate::output::Output;
use crate::plugin::{Plugin, PluginOptions};
use crate::sandbox::{SandboxSpec, SandboxState};
use crate::store::{KvStore, MemoryStore};
use crate::tier::{Code, Tier, Upgrade};
use crate::world::{self, Filter, WorldReport};

/// How many compiled components the memo keeps.
const MEMO_ENTRIES: usize = 16;
/// The longest plugin name.
const MAX_NAME: usize = 64;

/// The host could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Corral host: {0}")]
pub struct HostError(String);

/// Builds a [`Host`] with non-default settings.
#[derive(Debug)]
pub struct HostBuilder {
    store: Option<Arc<dyn KvStore>>,
    epoch_tick: Duration,
    cache_dir: Option<PathBuf>,
    pooling: Option<u32>,
    baseline: bool,
    compile_limits: CompileLimits,
    compile_worker: Option<CompileWorker>,
    protected: Vec<PathBuf>,
    allow_broad_grants: bool,
    host_functions: HostFunctions,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            store: None,
            epoch_tick: HostBuilder::DEFAULT_EPOCH_TICK,
            cache_dir: None,
            pooling: None,
            baseline: false,
            compile_limits: CompileLimits::default(),
            compile_worker: None,
            protected: Vec::new(),
            allow_broad_grants: false,
            host_functions: HostFunctions::default(),
        }
    }
}

impl HostBuilder {
    /// The default epoch tick: deadlines are enforced to within this.
    pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(5);

    /// The key-value backend for every plugin's `store` import (default: a new
    /// [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn KvStore>) -> HostBuilder {
        self.store = Some(store);
        self
    }

    /// How often the engine's epoch advances, which is the resolution of every
    /// plugin's deadline (default 5 ms).
    pub fn epoch_tick(mut self, tick: Duration) -> HostBuilder {
        self.epoch_tick = tick.max(Duration::from_micros(100));
        self
    }

    /// Keeps compiled components on disk under `dir`, keyed by content and engine
    /// settings, so a restart or a re-drop of a known file does not compile again
    /// (default: no disk cache, only the in-memory memo).
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> HostBuilder {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Allocates sandboxes from wasmtime's pooling allocator, with room for
    /// `max_sandboxes` live instances, instead of mapping memory for each one on demand:
    /// a fresh instance (a new plugin, or one after a trap) then reuses a slot whose
    /// pages are already set up. Each sandbox's linear memory is capped at
    /// [`HostBuilder::POOL_MAX_MEMORY`] whatever its `memory_bytes` limit says, and
    /// loading more than `max_sandboxes` plugins (counting instances in use by a swap)
    /// fails with a clear error. See BENCHMARKS.md for what it buys.
    pub fn pooling(mut self, max_sandboxes: u32) -> HostBuilder {
        self.pooling = Some(max_sandboxes.max(1));
        self
    }

    /// Serves a component new to the host (in neither the memo nor the disk cache) from
    /// baseline code at once, compiled by Winch in a fifth of Cranelift's time, while
    /// Cranelift compiles optimised code in the background; each plugin moves to the
    /// optimised code where nothing is lost (see [`Plugin::tier`] and BENCHMARKS.md).
    /// Off by default, and under [`HostBuilder::pooling`]: a baseline instance would live
    /// outside the pool's bound. `corral run` turns it on unless it pools.
    pub fn baseline(mut self, on: bool) -> HostBuilder {
        self.baseline = on;
        self
    }

    /// Adds host functions of the embedder's own to what plugins may import: typically
    /// the `add_to_linker` that `wasmtime::component::bindgen!` generated for a WIT
    /// interface, called with the getter this hands it, and the data `T` each instance
    /// of a plugin gets, made by `data` from the plugin's name and config. The
    /// embedder implements the generated `Host` trait on [`HostCtx<T>`](crate::HostCtx).
    ///
    /// ```
    /// mod bindings {
    ///     corral::wasmtime::component::bindgen!({
    ///         inline: "
    ///             package acme:lookup@0.1.0;
    ///             interface lookup { get: func(key: string) -> option<string>; }
    ///             world host { import lookup; }
    ///         ",
    ///         wasmtime_crate: corral::wasmtime,
    ///     });
    /// }
    /// use bindings::acme::lookup::lookup;
    /// use corral::wasmtime::component::HasSelf;
    /// use corral::{Host, HostCtx};
    ///
    /// struct Table(std::collections::BTreeMap<String, String>);
    ///
    /// impl lookup::Host for HostCtx<Table> {
    ///     fn get(&mut self, key: String) -> Option<String> {
    ///         self.0.get(&key).cloned()
    ///     }
    /// }
    ///
    /// let host = Host::builder()
    ///     .host_functions(
    ///         |linker, get| lookup::add_to_linker::<_, HasSelf<_>>(linker, get),
    ///         |_plugin, _config| Table([("k".to_owned(), "v".to_owned())].into()),
    ///     )
    ///     .build()?;
    /// # Ok::<(), corral::HostError>(())
    /// ```
    ///
    /// The world check then accepts a plugin importing what these functions define (by
    /// its exact name, version included); a plugin importing an interface nobody
    /// provides is still refused, naming it. Time spent in a host function counts
    /// against the call's deadline, but only wasm code can be interrupted: a host
    /// function runs to its end (see `docs/host-functions.md`).
    pub fn host_functions<T, A, D>(mut self, add_to_linker: A, data: D) -> HostBuilder
    where
        T: Send + 'static,
        A: Fn(&mut HostLinker, HostGetter<T>) -> wasmtime::Result<()> + Send + Sync + 'static,
        D: Fn(&str, &BTreeMap<String, String>) -> T + Send + Sync + 'static,
    {
        self.host_functions.push(Arc::new(crate::embedder::Typed {
            add: add_to_linker,
            data,
            _t: std::marker::PhantomData,
        }));
        self
    }

    /// The largest linear memory one sandbox may have under [`HostBuilder::pooling`].
    pub const POOL_MAX_MEMORY: usize = engine::POOL_MAX_MEMORY;

    /// What a component may hold before it is compiled, and how long and how much
    /// memory its compile may take (default [`CompileLimits::default`]). The first kind
    /// always applies; the compile's bounds apply with a [`HostBuilder::compile_worker`].
    pub fn compile_limits(mut self, limits: CompileLimits) -> HostBuilder {
        self.compile_limits = limits;
        self
    }

    /// Compiles in a child process started as `worker` says, under the time and memory
    /// bounds of [`HostBuilder::compile_limits`], instead of in this process (the
    /// default, where a compile's time and memory are not bounded). See
    /// [`CompileWorker`] for what the program must do.
    pub fn compile_worker(mut self, worker: CompileWorker) -> HostBuilder {
        self.compile_worker = Some(worker);
        self
    }

    /// A directory no plugin may be granted, nor any directory above it: the host's own
    /// files (`corral run` protects its data directory and the watch directory; `/` and
    /// the compile cache are always protected). See [`HostBuilder::allow_broad_grants`].
    pub fn protect_dir(mut self, dir: impl Into<PathBuf>) -> HostBuilder {
        self.protected.push(dir.into());
        self
    }

    /// Allows directory grants that cover `/`, the compile cache or a protected
    /// directory (default: such a grant fails the load with [`LoadError::BroadGrant`]).
    pub fn allow_broad_grants(mut self, allow: bool) -> HostBuilder {
        self.allow_broad_grants = allow;
        self
    }

    /// Creates the engine and linker and starts the epoch thread.
    ///
    /// # Errors
    ///
    /// [`HostError`] when wasmtime rejects the configuration or the thread cannot start.
    pub fn build(mut self) -> Result<Host, HostError> {
        let fail = |e: &dyn std::fmt::Display| HostError(e.to_string());
        let settings = EngineSettings {
            pooling: self.pooling,
            baseline: false,
        };
        // A baseline instance would live outside the pool's bound.
        let baseline = if self.baseline && self.pooling.is_none() {
            let settings = EngineSettings {
                baseline: true,
                ..settings
            };
            let engine = Engine::new(&engine::config(&settings)).map_err(|e| fail(&format_args!("{e:#}")))?;
            let linker =
                Arc::new(linker(&engine, &self.host_functions).map_err(|e| fail(&format_args!("{e:#}")))?);
            Some(Baseline {
                engine,
                linker,
                settings,
            })
        } else {
            None
        };
        let config = engine::config(&settings);
        let engine = Engine::new(&config).map_err(|e| fail(&format_args!("{e:#}")))?;
        let linker = linker(&engine, &self.host_functions).map_err(|e| fail(&format_args!("{e:#}")))?;
        self.host_functions.prepare(&engine).map_err(|e| fail(&e))?;

        let engines = [Some(engine.weak()), baseline.as_ref().map(|b| b.engine.weak())];
        let tick = self.epoch_tick;
        let ticks = Ticks::default();
        let epoch_ticks = ticks.clone();
        std::thread::Builder::new()
            .name("corral-epoch".into())
            .spawn(move || {
                let mut next = std::time::Instant::now();
                loop {
                    // One epoch per tick of wall time: on a loaded machine a sleep
                    // overshoots, and the ticks it missed are made up at once, so that a
                    // deadline counts wall time rather than wake-ups.
                    let now = std::time::Instant::now();
                    let mut due = 0;
                    while next <= now {
                        due += 1;
                        next += tick;
                    }
                    let mut alive = false;
                    for engine in engines.iter().flatten().filter_map(|weak| weak.upgrade()) {
                        for _ in 0..due {
                            engine.increment_epoch();
                        }
                        alive = true;
                    }
                    if !alive {
                        break;
                    }
                    epoch_ticks.advance(due);
                    std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
                }
            })
            .map_err(|e| fail(&e))?;

        Ok(Host {
            compiler: Arc::new(Compiler {
                settings,
                limits: self.compile_limits,
                worker: self.compile_worker,
            }),
            grants: Arc::new(GrantPolicy::new(
                self.protected,
                self.cache_dir.clone(),
                self.allow_broad_grants,
            )),
            cache: self.cache_dir.map(|dir| CompileCache::new(&dir, &engine)),
            counters: Arc::default(),
            engine,
            linker: Arc::new(linker),
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            epoch_tick: self.epoch_tick,
            ticks,
            memo: Arc::new(Mutex::new(VecDeque::new())),
            compiling: Arc::default(),
            baseline,
            host_functions: self.host_functions,
        })
    }
}

/// A linker with everything a plugin may import: WASI 0.2, `corral:plugin`, and the
/// embedder's host functions.
fn linker(engine: &Engine, host_functions: &HostFunctions) -> wasmtime::Result<Linker<SandboxState>> {
    let mut linker = Linker::new(engine);
    // WASI 0.2, with every function that can block bounded by the call's deadline.
    crate::deadline::add_wasi_to_linker(&mut linker)?;
    Filter::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
    host_functions.add_to(&mut linker)?;
    Ok(linker)
}

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

/// Takes a digest off [`Host::compiling`] when its compile ends, however it ends.
struct Compiling<'a> {
    host: &'a Host,
    digest: [u8; 32],
}

impl Drop for Compiling<'_> {
    fn drop(&mut self) {
        let (list, done) = &*self.host.compiling;
        list.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|d| *d != self.digest);
        done.notify_all();
    }
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

/// Recently compiled components by the SHA-256 of their bytes, oldest first.
type Memo = VecDeque<([u8; 32], Compiled)>;

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

/// A compiled component: optimised, or baseline with its optimised code on the way.
#[derive(Clone)]
struct Compiled {
    component: Component,
    upgrade: Option<Arc<Upgrade>>,
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
        Plugin::start(spec, code, upgrade, hex(&digest), report, options.restart)
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
        let (pre, exports, report) = world::link(name, engine, linker, component, &provided)?;
        let code = Code {
            pre,
            exports: Arc::new(exports),
            tier,
        };
        Ok((code, report))
    }

    fn compile(&self, name: &str, bytes: &[u8], digest: [u8; 32]) -> Result<Compiled, LoadError> {
        let memo = || crate::lock(&self.memo);
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        let _compiling = loop {
            // The memo is read under the list's lock: a compile that ends puts its
            // component in the memo before it leaves the list.
            let (list, done) = &*self.compiling;
            let mut list = crate::lock(list);
            if let Some((_, c)) = memo().iter().find(|(d, _)| *d == digest) {
                count(&self.counters.memo_hits);
                return Ok(c.clone());
            }
            if !list.contains(&digest) {
                list.push(digest);
                break Compiling { host: self, digest };
            }
            // Another load is compiling these bytes: wait for it, then look again (it
            // may have failed, and then this load compiles and fails on its own).
            drop(done.wait_while(list, |list| list.contains(&digest)));
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &digest));
        if cached.is_none() {
            // What is found compiled costs nothing; what is not is counted first.
            self.check_cost(name, bytes)?;
        }
        // Winch does not take every module Cranelift does (some SIMD, for one): a
        // component it refuses is compiled by Cranelift as if there were no baseline.
        // One that is too costly for Winch is too costly for Cranelift.
        let baseline = match (&cached, &self.baseline) {
            (None, Some(baseline)) => {
                match self.compile_for(name, bytes, baseline.settings, &baseline.engine) {
                    Ok(component) => Some(component),
                    Err(LoadError::Invalid { reason, .. }) => {
                        tracing::debug!(plugin = name, "no baseline code: {reason}");
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let compiled = match (cached, baseline) {
            (Some(component), _) => {
                count(&self.counters.cache_hits);
                Compiled {
                    component,
                    upgrade: None,
                }
            }
            (None, Some(component)) => {
                count(&self.counters.baseline_compiled);
                let upgrade = Arc::new(Upgrade::default());
                self.optimize_behind(name, bytes.to_vec(), digest, upgrade.clone());
                Compiled {
                    component,
                    upgrade: Some(upgrade),
                }
            }
            (None, None) => {
                count(&self.counters.compiled);
                // Compiling takes milliseconds to seconds: never hold the memo's lock
                // meanwhile.
                let component = self.compile_for(name, bytes, self.compiler.settings, &self.engine)?;
                if let Some(cache) = &self.cache {
                    cache.put(&digest, &component);
                }
                Compiled {
                    component,
                    upgrade: None,
                }
            }
        };
        self.remember(digest, compiled.clone());
        Ok(compiled)
    }

    /// Refuses a component that holds more than the compile limits allow.
    fn check_cost(&self, name: &str, bytes: &[u8]) -> Result<(), LoadError> {
        let limits = &self.compiler.limits;
        let cost = ComponentCost::measure(bytes).map_err(|e| LoadError::Invalid {
            plugin: name.to_owned(),
            reason: e.to_string(),
        })?;
        match limits.exceeded(&cost) {
            None => Ok(()),
            Some((limit, value)) => {
                tracing::warn!(
                    plugin = name,
                    limit = limit.key(),
                    value,
                    "refused before compiling"
                );
                Err(LoadError::TooCostly {
                    plugin: name.to_owned(),
                    limit,
                    value,
                    max: limits.get(limit),
                })
            }
        }
    }

    /// Compiles `bytes` for `engine` (built from `settings`): in the compile worker under
    /// its bounds when there is one, in this process otherwise.
    fn compile_for(
        &self,
        name: &str,
        bytes: &[u8],
        settings: EngineSettings,
        engine: &Engine,
    ) -> Result<Component, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            plugin: name.to_owned(),
            reason,
        };
        let Some(worker) = &self.compiler.worker else {
            return Component::from_binary(engine, bytes).map_err(|e| invalid(format!("{e:#}")));
        };
        let started = std::time::Instant::now();
        let code =
            compile::in_worker(worker, settings, &self.compiler.limits, bytes).map_err(|e| match e {
                WorkerError::Invalid(reason) => invalid(reason),
                WorkerError::Stopped(limit, max) => {
                    tracing::warn!(plugin = name, limit = limit.key(), max, "compile stopped");
                    LoadError::CompileStopped {
                        plugin: name.to_owned(),
                        limit,
                        max,
                    }
                }
                WorkerError::Failed(reason) => LoadError::Compile {
                    plugin: name.to_owned(),
                    reason,
                },
            })?;
        tracing::debug!(
            plugin = name,
            baseline = settings.baseline,
            ms = started.elapsed().as_millis() as u64,
            bytes = code.len(),
            "compiled in the worker"
        );
        // SAFETY: the bytes are what `Engine::precompile_component` made in the compile
        // worker, a program the embedder named to run for this purpose (trusted as this
        // one is), for an engine built from the same settings by the same function
        // (`engine::config`); wasmtime checks its own header (version, target, settings)
        // before using them.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &code) };
        component.map_err(|e| LoadError::Compile {
            plugin: name.to_owned(),
            reason: format!("the compile worker's code does not load: {e:#}"),
        })
    }

    /// Puts a compiled component in the memo, in place of what it held for `digest`.
    fn remember(&self, digest: [u8; 32], compiled: Compiled) {
        let mut memo = crate::lock(&self.memo);
        memo.retain(|(d, _)| *d != digest);
        if memo.len() == MEMO_ENTRIES {
            memo.pop_front();
        }
        memo.push_back((digest, compiled));
    }

    /// Compiles `bytes` with Cranelift on a thread of its own, then caches the result,
    /// remembers it, and hands it to the plugins serving from baseline code.
    fn optimize_behind(&self, name: &str, bytes: Vec<u8>, digest: [u8; 32], upgrade: Arc<Upgrade>) {
        let host = self.clone();
        let name = name.to_owned();
        let optimize = move || {
            let component = host.compile_for(&name, &bytes, host.compiler.settings, &host.engine);
            let result = component.map_err(|e| e.to_string()).and_then(|component| {
                if let Some(cache) = &host.cache {
                    cache.put(&digest, &component);
                }
                let (code, _) = host
                    .link_component(&name, &component)
                    .map_err(|e| e.to_string())?;
                host.remember(
                    digest,
                    Compiled {
                        component,
                        upgrade: None,
                    },
                );
                Ok(code)
            });
            if let Err(reason) = &result {
                tracing::warn!(plugin = name, %reason, "compiling optimised code failed");
            }
            upgrade.finish(result);
            host.counters.compiled.fetch_add(1, Ordering::Relaxed);
        };
        let spawned = std::thread::Builder::new()
            .name("corral-optimize".into())
            .spawn(optimize);
        if let Err(e) = spawned {
            // The plugin serves from baseline code: slower, never wrong.
            tracing::warn!("cannot start a thread to compile optimised code: {e}");
        }
    }
}

/// A plugin's name from its file name.
fn plugin_name(path: &Path) -> Result<String, LoadError> {
    let invalid = |why: &str| LoadError::InvalidName {
        name: path.display().to_string(),
        reason: why.to_owned(),
    };
    let stem = path
        .file_stem()
        .ok_or_else(|| invalid("the path has no file name"))?;
    stem.to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid("the file name is not UTF-8"))
}

/// Checks a plugin name against the policy every name passes: 1 to 64 bytes of ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` or `-`. Plugin names become
/// store namespaces, log fields and URL segments: keep them to a safe alphabet.
///
/// # Errors
///
/// [`LoadError::InvalidName`] saying why.
pub fn validate_name(name: &str) -> Result<(), LoadError> {
    let reason = if name.is_empty() {
        "the name is empty"
    } else if name.len() > MAX_NAME {
        "the name is longer than 64 bytes"
    } else if name.starts_with(['.', '-']) {
        "the name starts with `.` or `-`"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        "the name may hold only ASCII letters, digits, `-`, `_` and `.`"
    } else {
        return Ok(());
    };
    Err(LoadError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Tells the common wrong files apart before wasmtime sees them, for clearer errors.
fn sniff(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.is_empty() {
        return Err(LoadError::Empty {
            plugin: name.to_owned(),
        });
    }
    if !bytes.starts_with(b"\0asm") {
        let prefix: String = bytes
            .iter()
            .take(8)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        return Err(LoadError::NotWasm {
            plugin: name.to_owned(),
            prefix,
        });
    }
    if bytes.get(4..8) == Some(&CORE_VERSION[..]) {
        return Err(LoadError::CoreModule {
            plugin: name.to_owned(),
        });
    }
    Ok(())
}

/// The version of a plugin with these bytes, as [`crate::Plugin::version`] reports it:
/// their SHA-256 in hex.
pub fn content_version(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_to_a_safe_alphabet() {
        for good in ["hello", "cpu-metrics", "a_b.v2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc", "a/b", ".hidden", "-x", "sp ace", &"x".repeat(65)] {
            assert!(
                matches!(validate_name(bad), Err(LoadError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_files_are_told_apart() {
        assert!(matches!(sniff("p", b""), Err(LoadError::Empty { .. })));
        assert!(matches!(sniff("p", b"#!/bin/sh"), Err(LoadError::NotWasm { .. })));
        assert!(matches!(
            sniff("p", b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(sniff("p", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
