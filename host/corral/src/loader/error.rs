//! Why a plugin could not be loaded, and why a host could not be built.
//!
//! Every variant names the plugin (or the file) and the reason, and says what to do.
//!
//! A message is whole on its own: it already says its cause, as the daemon and `corral`
//! print it, so print it with `{}`. Where the cause is another library's error (the
//! OS's, wasmtime's, wasmparser's), it is also kept typed as the error's
//! [`source`](std::error::Error::source), for a program that needs to tell one cause
//! from another by type rather than by text; a report that walks the chain shows it
//! twice.

use std::path::PathBuf;

use super::compile::CompileLimit;
use crate::contract::mismatch::{Bulleted, Mismatch};
use crate::sandbox::violation::Escaped;
use crate::sandbox::{Cause, Limit, POOL_FULL};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin file `{}`: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        error: std::io::Error,
    },
    /// The plugin's name cannot be used (it names its store namespace and its logs).
    #[error("invalid plugin name `{}`: {reason}", Escaped(name))]
    InvalidName {
        /// The name, or the path it was taken from.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin's sidecar (`name.toml`) cannot be read or parsed.
    #[error("invalid sidecar `{}`: {reason}", path.display())]
    Sidecar {
        /// The sidecar file.
        path: PathBuf,
        /// What is wrong, with the line, column and key.
        reason: String,
    },
    /// The file is empty.
    #[error("plugin `{plugin}` is empty: expected a WebAssembly component")]
    Empty {
        /// The plugin's name.
        plugin: String,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "plugin `{plugin}` is not a WebAssembly file (it starts with `{prefix}`, not `\\0asm`): \
         build a component with `cargo build --target wasm32-wasip2`"
    )]
    NotWasm {
        /// The plugin's name.
        plugin: String,
        /// The first bytes, escaped.
        prefix: String,
    },
    /// A core WebAssembly module was given where a component is needed.
    #[error(
        "plugin `{plugin}` is a core WebAssembly module, not a component: build it with \
         `cargo build --target wasm32-wasip2` (wasm32-wasip1 and wasm32-unknown-unknown \
         produce core modules), or wrap a core module with `wasm-tools component new`"
    )]
    CoreModule {
        /// The plugin's name.
        plugin: String,
    },
    /// The component is malformed or uses features this host does not enable.
    #[error("plugin `{plugin}` is not a valid component: {reason}")]
    Invalid {
        /// The plugin's name.
        plugin: String,
        /// Wasmtime's (or the parser's) reason.
        reason: String,
        /// The error behind it, when it came from this process (a compile worker's
        /// reason arrives as text).
        #[source]
        source: Option<Cause>,
    },
    /// The component does not fit the world: wrong or missing exports, unknown imports,
    /// or another version of the contract.
    #[error(
        "plugin `{plugin}` does not fit the `{world}` world:{}\n  \
         rebuild it against the WIT files of this Corral (its `wit/` directory, which \
         `corral new` copies into a new project)",
        Bulleted(problems)
    )]
    Incompatible {
        /// The plugin's name.
        plugin: String,
        /// The world it was checked against, e.g. `corral:plugin/batch-filter@0.1.0`:
        /// the one its exports point to.
        world: String,
        /// Every mismatch found, not just the first.
        problems: Vec<Mismatch>,
    },
    /// The component's start-up (its start functions, static constructors) ran into a
    /// limit, such as its deadline in a start function that sleeps.
    #[error("plugin `{plugin}` failed to start: it exceeded its {limit} limit: {detail}")]
    StartLimit {
        /// The plugin's name.
        plugin: String,
        /// Which limit.
        limit: Limit,
        /// The limit's value, in words.
        detail: String,
    },
    /// The component holds more than a compile limit allows (counted before anything is
    /// compiled: see [`crate::CompileLimits`]).
    #[error(
        "plugin `{plugin}` is too costly to compile: {}, more than the {max} allowed (`{limit}`): {}",
        limit.describe(*value),
        limit.advice()
    )]
    TooCostly {
        /// The plugin's name.
        plugin: String,
        /// Which limit.
        limit: CompileLimit,
        /// What the component holds.
        value: u64,
        /// What the limit allows.
        max: u64,
    },
    /// Compiling the component ran past its time or memory bound and was stopped
    /// ([`crate::CompileLimits::time`], [`crate::CompileLimits::memory_bytes`]).
    #[error(
        "plugin `{plugin}` is too costly to compile: {} (`{limit}`), so the compile was \
         stopped: {}",
        limit.describe(*max),
        limit.advice()
    )]
    CompileStopped {
        /// The plugin's name.
        plugin: String,
        /// [`CompileLimit::Time`] or [`CompileLimit::Memory`].
        limit: CompileLimit,
        /// The bound: milliseconds or bytes.
        max: u64,
    },
    /// The compile worker could not be run, or failed for another reason than a bound
    /// (see [`crate::CompileWorker`]).
    #[error("cannot compile plugin `{plugin}`: {reason}")]
    Compile {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        reason: String,
    },
    /// A directory grant covers what a plugin must never reach: `/`, the watch
    /// directory, the data directory or the compile cache (see
    /// [`crate::HostBuilder::allow_broad_grants`]).
    #[error(
        "plugin `{plugin}` may not be granted `{}`: {covers}; grant a narrower directory, or \
         allow broad grants if you mean it (`--allow-broad-grants`, \
         `HostBuilder::allow_broad_grants`)",
        host.display()
    )]
    BroadGrant {
        /// The plugin's name.
        plugin: String,
        /// The granted host directory, as given.
        host: PathBuf,
        /// What it covers, in words.
        covers: String,
    },
    /// The component was compiled but could not be instantiated (its start code trapped
    /// or needed more than its limits).
    #[error("plugin `{plugin}` failed to start: {reason}")]
    Instantiate {
        /// The plugin's name.
        plugin: String,
        /// The reason, in words.
        reason: String,
        /// Wasmtime's error behind it, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The host's pool of sandboxes had no free slot for the plugin's first instance
    /// ([`crate::HostBuilder::pooling`]).
    #[error("plugin `{plugin}` failed to start: {source}: {POOL_FULL}")]
    PoolFull {
        /// The plugin's name.
        plugin: String,
        /// Wasmtime's report of the limit reached.
        #[source]
        source: wasmtime::PoolConcurrencyLimitError,
    },
}

/// The host could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the Corral host: {0}")]
pub struct HostError(pub(super) String);
