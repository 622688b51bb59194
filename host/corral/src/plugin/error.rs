//! Why a call into a plugin failed.
//!
//! Errors a guest reports itself ([`CallError::Failed`], [`CallError::Fatal`]) are kept
//! apart from the ones the host imposed (limits, traps), so a caller can tell "the
//! plugin said no" from "the sandbox stopped it".

use crate::sandbox::{Cause, Limit, POOL_FULL, Violation};

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
        /// The reason, in words.
        reason: String,
        /// Wasmtime's error behind it, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// The host's pool of sandboxes had no free slot for a fresh instance
    /// ([`crate::HostBuilder::pooling`]): the call did not run.
    #[error("plugin `{plugin}` has no sandbox to run in: {source}: {POOL_FULL}")]
    PoolFull {
        /// The plugin's name.
        plugin: String,
        /// Wasmtime's report of the limit reached.
        #[source]
        source: wasmtime::PoolConcurrencyLimitError,
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
        /// The reason, in words.
        reason: String,
        /// The error behind it, when there is one: an embedder's host function's own
        /// error can be downcast from here.
        #[source]
        source: Option<Cause>,
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
            | CallError::PoolFull { plugin, .. }
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
