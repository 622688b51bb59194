//! [`HostBuilder`]: a host's settings, and building one: its engines, linker and epoch
//! thread.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use super::cache::CompileCache;
use super::compile::{CompileLimits, CompileWorker};
use super::engine::{self, EngineSettings};
use super::grants::GrantPolicy;
use super::{Baseline, Compiler, Host, HostError};
use crate::sandbox::SandboxState;
use crate::sandbox::deadline::Ticks;
use crate::sandbox::embedder::{HostFunctions, HostGetter, HostLinker};
use crate::sandbox::store::{KvStore, MemoryStore};

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
        self.host_functions
            .push(Arc::new(crate::sandbox::embedder::Typed {
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
    crate::sandbox::wasi::add_wasi_to_linker(&mut linker)?;
    // `corral:plugin`: the `message` resource by hand (see `add_message_to_linker`), each
    // other interface through its generated bindings.
    crate::sandbox::imports::add_message_to_linker(&mut linker)?;
    {
        use crate::contract::batch_bindings::corral::plugin::failures;
        use crate::contract::bindings::corral::plugin::{config, emit, log, store};
        log::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
        config::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
        store::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
        emit::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
        failures::add_to_linker::<_, HasSelf<SandboxState>>(&mut linker, |s| s)?;
    }
    host_functions.add_to(&mut linker)?;
    Ok(linker)
}
