//! Corral: WebAssembly component sandboxes for plugins, after Heka's Lua sandboxes.
//!
//! A plugin is a WebAssembly component built against the `corral:plugin/filter` world
//! (`wit/plugin.wit`). The host loads it into a sandbox with hard limits — fuel per call,
//! a memory cap, a wall-clock deadline, an output cap and an emit cap — and calls its
//! two entry points, `process-message` and `timer-event`, as Heka called a sandbox's
//! `process_message` and `timer_event`. A plugin that breaks a limit or traps loses its
//! instance, not the host; one that fails fatally, or too often in a row, is terminated
//! and says why.
//!
//! ```no_run
//! use corral::{Host, Message, PluginOptions, Value};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::new()?;
//! let plugin = host.load_file("target/guests/counter.wasm", PluginOptions::default())?;
//! plugin.process_message(&Message::new("nginx.access").with_field("status", Value::Int(200)))?;
//! let outcome = plugin.timer_event(corral::now_ns())?;
//! for message in &outcome.emitted {
//!     println!("{}", message.to_json());
//! }
//! println!("{} calls", plugin.stats().calls());
//! # Ok(())
//! # }
//! ```
//!
//! `host/corral/examples/embed.rs` is the same walk-through as a program. The guides,
//! `docs/embedding.md` and `docs/host-functions.md` (host functions of the embedder's
//! own), are compiled with the crate's doctests.

#![deny(missing_docs)]

/// Locks `m`, poisoned or not. Nothing panics while Corral's locks are held except
/// through a bug, and the data they guard stays consistent field by field: keep serving
/// rather than poison every later call.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The version of `corral:plugin`, spelled once: every name carrying it is built from
/// it, and a unit test checks that `wit/plugin.wit` declares it.
macro_rules! plugin_version {
    () => {
        "0.1.0"
    };
}

mod batch;
mod cache;
mod compile;
mod current;
mod deadline;
mod decoder;
mod embedder;
mod engine;
mod error;
mod export;
mod grants;
mod host;
mod imports;
mod limits;
mod message;
mod output;
mod plugin;
mod registry;
mod restart;
mod sandbox;
mod sidecar;
mod stats;
mod store;
mod tier;
mod watcher;
mod world;

// The guides' code, compiled and run as doctests so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/embedding.md")]
struct EmbeddingGuide;
#[cfg(doctest)]
#[doc = include_str!("../../../docs/host-functions.md")]
struct HostFunctionsGuide;

pub use compile::{CompileLimit, CompileLimits, CompileWorker, ComponentCost, compile_worker_main};
pub use decoder::RawRecord;
pub use embedder::{HostCtx, HostGetter, HostLinker};
pub use error::{CallError, LoadError, Mismatch, Violation, WORLD};
pub use host::{CompileStats, Host, HostBuilder, HostError, content_version, validate_name};
pub use limits::{Limit, Limits, parse_size};
pub use message::{DEFAULT_SEVERITY, Field, GUEST_LOGGER_FIELD, Message, Value, now_ns};
pub use output::{LogLevel, LogLine, LogSource, escape};
pub use plugin::{BatchOutcome, CallOutcome, DirGrant, Plugin, PluginOptions, PluginState};
pub use registry::{Event, Installed, PluginHandle, PluginStatus, Registry, StateHandoff};
pub use restart::{RestartPolicy, RestartStatus};
pub use sandbox::SandboxState;
pub use sidecar::{Sidecar, SidecarSections};
pub use stats::{EntryStats, Stats, TIMING_SAMPLE};
pub use store::{KvStore, MemoryStore, StateStore, StoreError};
pub use tier::Tier;
/// The wasmtime this Corral is built on, for an embedder's `bindgen!` and `Val`s: use it
/// rather than a `wasmtime` dependency of your own, so the two never differ.
pub use wasmtime;
pub use wasmtime::Trap;
pub use watcher::{DEBOUNCE, WatchError, WatchOptions, Watcher};
pub use world::{PLUGIN_PACKAGE_VERSION, WASI_VERSION, WorldReport};
