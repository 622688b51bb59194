//! What a plugin is loaded with, and what its calls produce.

use std::collections::BTreeMap;

use crate::contract::message::Message;
use crate::sandbox::output::LogLine;
use crate::sandbox::{DirGrant, Limits};

use super::{CallError, RestartPolicy};

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
