//! Typed errors at the library boundary.
//!
//! Loading fails with a [`LoadError`], calling with a [`CallError`]. Every variant names
//! the plugin and the reason; load errors also say what to do. Errors a guest reports
//! itself ([`CallError::Failed`], [`CallError::Fatal`]) are kept apart from the ones the
//! host imposed (limits, traps), so a caller can tell "the plugin said no" from "the
//! sandbox stopped it".

use std::fmt;
use std::path::PathBuf;

use crate::compile::CompileLimit;
use crate::limits::Limit;

/// The WIT world a plugin is told about when it fits none: the one every language can
/// target. (A plugin is checked against the world its exports point to; see
/// [`LoadError::Incompatible`].)
pub const WORLD: &str = concat!("corral:plugin/filter@", plugin_version!());

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin file `{}`: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message already, so not also a `source()`, which
        /// would print it twice in a report of the error chain).
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
        /// Wasmtime's reason.
        reason: String,
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
        /// The reason.
        reason: String,
    },
}

/// One way a component does not fit the world.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// A required export is missing.
    MissingExport {
        /// The export's name, e.g. `process-message`.
        name: String,
    },
    /// An export exists but has the wrong type.
    ExportType {
        /// The export's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The component imports an interface this host does not provide.
    UnknownImport {
        /// The import's full name, e.g. `wasi:http/types@0.2.0`.
        name: String,
    },
    /// The component imports a package at a version this host does not provide.
    ImportVersion {
        /// The import's full name.
        name: String,
        /// The version the component was built against.
        found: String,
        /// The versions this host provides.
        expected: String,
    },
    /// An import or export with another type than the world's; wasmtime's reason.
    Type {
        /// Wasmtime's description of the mismatch.
        reason: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingExport { name } => {
                let snake = name.replace('-', "_");
                let mut camel = String::new();
                for (i, word) in name.split('-').enumerate() {
                    let mut chars = word.chars();
                    match chars.next() {
                        Some(c) if i > 0 => camel.extend(c.to_uppercase().chain(chars)),
                        Some(c) => camel.extend(std::iter::once(c).chain(chars)),
                        None => {}
                    }
                }
                write!(
                    f,
                    "missing export `{name}`: the plugin must export it (`fn {snake}` in Rust, \
                     `def {snake}` on the WitWorld class in Python, `export function {camel}` \
                     in JavaScript)"
                )
            }
            Mismatch::ExportType { name, reason } => {
                write!(f, "export `{name}` has the wrong type: {reason}")
            }
            Mismatch::UnknownImport { name } => {
                write!(
                    f,
                    "imports `{name}`, which this host does not provide: plugins may import \
                     only `corral:plugin/*` and WASI 0.2 interfaces"
                )?;
                if name.starts_with("wasi:http/") {
                    write!(
                        f,
                        " (componentize-js imports wasi:http unless it builds with \
                         `--disable http fetch-event`)"
                    )?;
                }
                Ok(())
            }
            Mismatch::ImportVersion {
                name,
                found,
                expected,
            } => {
                write!(
                    f,
                    "imports `{name}`: built against version {found}, this host provides {expected}"
                )?;
                if name.starts_with("wasi:") {
                    write!(
                        f,
                        " (build for the wasm32-wasip2 target, or with a componentize-py or \
                         componentize-js release that targets WASI 0.2)"
                    )?;
                }
                Ok(())
            }
            Mismatch::Type { reason } => write!(f, "{reason}"),
        }
    }
}

struct Bulleted<'a>(&'a [Mismatch]);

impl fmt::Display for Bulleted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in self.0 {
            write!(f, "\n  - {m}")?;
        }
        Ok(())
    }
}

/// Why a call into a plugin failed.
///
/// Every variant counts as a failure in the plugin's stats. The sandbox outlives all of
/// them: after a limit or a trap the instance is thrown away and the next call gets a
/// fresh one, unless the failure terminated the plugin (see [`crate::PluginState`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call ran into one of the plugin's limits.
    #[error("plugin `{plugin}` exceeded its {limit} limit: {detail}")]
    Limit {
        /// The plugin's name.
        plugin: String,
        /// Which limit.
        limit: Limit,
        /// The limit's value and what was asked for, in words.
        detail: String,
    },
    /// The guest panicked; the message is the one it printed.
    #[error("plugin `{plugin}` panicked: {message}")]
    Panic {
        /// The plugin's name.
        plugin: String,
        /// The panic message.
        message: String,
    },
    /// The guest trapped for another reason (stack overflow, unreachable, bad memory
    /// access…).
    #[error("plugin `{plugin}` trapped: {trap}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// Wasmtime's trap code, to match on.
        trap: wasmtime::Trap,
    },
    /// The guest returned a non-fatal failure: counted, the plugin keeps running.
    #[error("plugin `{plugin}` failed: {message}")]
    Failed {
        /// The plugin's name.
        plugin: String,
        /// The guest's message.
        message: String,
    },
    /// The guest returned a fatal failure: the plugin is now terminated.
    #[error("plugin `{plugin}` failed fatally: {message}")]
    Fatal {
        /// The plugin's name.
        plugin: String,
        /// The guest's message.
        message: String,
    },
    /// The plugin is terminated and refuses calls until it is replaced.
    #[error("plugin `{plugin}` is terminated: {reason}")]
    Terminated {
        /// The plugin's name.
        plugin: String,
        /// Why it was terminated.
        reason: String,
    },
    /// The plugin was replaced by a newer version or unloaded; calls through a
    /// [`crate::Registry`] go to the newer version instead.
    #[error("plugin `{plugin}` was replaced or unloaded")]
    Unloaded {
        /// The plugin's name.
        plugin: String,
    },
    /// No plugin of that name is loaded.
    #[error("no plugin named `{plugin}` is loaded")]
    NotFound {
        /// The name asked for.
        plugin: String,
    },
    /// A fresh instance could not be made after a trap.
    #[error("plugin `{plugin}` could not be restarted: {reason}")]
    Restart {
        /// The plugin's name.
        plugin: String,
        /// The reason.
        reason: String,
    },
    /// The guest broke the contract: it emitted a message the host refuses, reported
    /// batch failures that do not fit its batch, or handed the host an invalid
    /// canonical-ABI value. Handled as a trap: the instance is thrown away and the next
    /// call gets a fresh one.
    #[error("plugin `{plugin}` broke the contract: {violation}")]
    Violation {
        /// The plugin's name.
        plugin: String,
        /// What it did.
        violation: Violation,
    },
    /// The export called by name is not there, or has other types than the call's: the
    /// caller's mistake, so nothing ran and it is not counted against the plugin.
    #[error("cannot call `{export}` of plugin `{plugin}`: {reason}")]
    Export {
        /// The plugin's name.
        plugin: String,
        /// The export's name.
        export: String,
        /// What is wrong: no such export, or how its type differs.
        reason: String,
    },
    /// Something else went wrong inside the call: a failure of the host's own, not the
    /// guest's.
    #[error("plugin `{plugin}` failed in the host: {reason}")]
    Host {
        /// The plugin's name.
        plugin: String,
        /// The reason.
        reason: String,
    },
}

impl CallError {
    /// The plugin the error is about.
    pub fn plugin(&self) -> &str {
        match self {
            CallError::Limit { plugin, .. }
            | CallError::Panic { plugin, .. }
            | CallError::Trap { plugin, .. }
            | CallError::Failed { plugin, .. }
            | CallError::Fatal { plugin, .. }
            | CallError::Terminated { plugin, .. }
            | CallError::Unloaded { plugin }
            | CallError::NotFound { plugin }
            | CallError::Restart { plugin, .. }
            | CallError::Violation { plugin, .. }
            | CallError::Export { plugin, .. }
            | CallError::Host { plugin, .. } => plugin,
        }
    }

    /// The limit the call ran into, if that is why it failed.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            CallError::Limit { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// How a guest broke the contract, in [`CallError::Violation`]. Guest text in it (a type,
/// a field name, wasmtime's reason) is shown with control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// It emitted a message with an empty type.
    #[error("it emitted a message with an empty type")]
    EmptyType,
    /// It emitted a message whose type starts with `corral.`, which only the host writes.
    #[error(
        "it emitted a message of type `{}`: the `corral.` prefix is reserved for the host",
        Escaped(type_)
    )]
    ReservedType {
        /// The type it gave.
        type_: String,
    },
    /// It emitted a message with a severity outside 0 to 7.
    #[error("it emitted a message of severity `{severity}`: a severity is 0 (emergency) to 7 (debug)")]
    Severity {
        /// The severity it gave.
        severity: i32,
    },
    /// It emitted a message stamped before the Unix epoch.
    #[error(
        "it emitted a message stamped `{timestamp}`, before the Unix epoch: give nanoseconds \
         since 1970, or no timestamp to have the host stamp it"
    )]
    Timestamp {
        /// The timestamp it gave.
        timestamp: i64,
    },
    /// It emitted a message with a field of empty name.
    #[error("it emitted a message whose field {index} has an empty name")]
    EmptyFieldName {
        /// The field's position in the message, from 0.
        index: usize,
    },
    /// It emitted a message with two fields of the same name (`guest_logger` counts as
    /// taken when the message names another logger than the plugin).
    #[error("it emitted a message with more than one field named `{}`", Escaped(name))]
    DuplicateField {
        /// The repeated name.
        name: String,
    },
    /// `process-batch` reported a failure for an index past the end of its batch.
    #[error("`process-batch` reported a failure of message {index} in a batch of {messages}")]
    FailureOutOfRange {
        /// The index it reported.
        index: u32,
        /// The messages in the batch.
        messages: usize,
    },
    /// `process-batch` reported failures out of order or more than once for a message.
    #[error(
        "`process-batch` reported a failure of message {index} after one of message {previous}: \
         failures are listed once per message, in increasing order"
    )]
    FailureOrder {
        /// The index it reported.
        index: u32,
        /// The index reported before it.
        previous: u32,
    },
    /// It handed the host a value the canonical ABI does not allow: a pointer or length
    /// outside its memory, a misaligned pointer, a bad `cabi_realloc` result, invalid
    /// UTF-8, an unknown variant case, a handle it does not own.
    #[error("it handed the host an invalid value: {}", Escaped(reason))]
    InvalidValue {
        /// Wasmtime's reason.
        reason: String,
    },
    /// It holds more resource handles at once than the host allows.
    #[error("it holds too many resource handles: {}", Escaped(reason))]
    TooManyHandles {
        /// Wasmtime's reason.
        reason: String,
    },
    /// It called WASI's `exit`.
    #[error("it called exit({code})")]
    Exit {
        /// The exit code.
        code: i32,
    },
}

/// Guest text shown with control characters escaped (see [`crate::output::escape`]).
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::output::escape(self.0))
    }
}
