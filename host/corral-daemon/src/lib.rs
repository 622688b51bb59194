//! The daemon behind the `corral` command, on the library `corral`.
//!
//! Data flows one way: intake (stdin, `POST /messages`) appends to the durable input log
//! (`log`); a worker per plugin reads it at its own pace, routes each message with the
//! plugin's matcher (`settings`, the daemon's own per-plugin table beside the library's
//! registry) and calls the plugin through the registry (`pipeline`); what plugins emit
//! goes through the output log to JSON lines. Checkpoints and saved state live in a
//! redb database (`persist`, `checkpoint`); the admin API and the dashboard (`admin`)
//! read the registry and the pipeline. `daemon` ties them together and runs them.
//!
//! The library knows none of this: a matcher, a ticker or a database never appears in
//! its API. The daemon reads its sidecar keys (`[matcher]`, `ticker-interval-ms`,
//! `start-from`) through the library's [`corral::SidecarSections`].
//!
//! This crate is the command's implementation, public for the integration suite; it
//! makes no promise of a stable API.

#![deny(missing_docs)]

/// Locks `m`, poisoned or not (as the library does: the data its locks guard stays
/// consistent field by field).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod admin;
mod checkpoint;
mod cli;
pub mod cluster;
mod daemon;
mod input;
mod intake;
mod invoke;
mod log;
mod matcher;
mod new;
mod persist;
mod pipeline;
mod settings;
mod trim;

pub use cluster::ClusterConfig;

/// The `corral` command: parses the arguments, runs the subcommand, prints an error
/// with its causes. The binary is this one call, so that the integration suite's copy
/// of the command (built with the suite's features, not a second build) is the same
/// program.
pub fn main() -> std::process::ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
pub use daemon::{DaemonConfig, DaemonError, OutputTarget, run};
pub use input::{DEFAULT_MAX_LINE, InputConfig, InputKind, StartAt, TailConfig};
pub use log::{LogOptions, Position};
pub use matcher::{FieldCondition, Matcher, Names};
pub use persist::{FLUSH_INTERVAL, OpenError, RedbStore};
pub use pipeline::{
    ID_FIELD, MAX_BATCH, MAX_BATCH_BYTES, PipelineOptions, TERMINATED_TYPE, terminated_message,
};
pub use settings::{DaemonSections, Matchers, Routes, Settings, StartFrom};
