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

//!
//! # Layout
//!
//! The crate is six rooms, each a folder, and data flows one way: a room uses the rooms
//! before it and never one after it, so a change to how plugins are swapped cannot
//! reach into how a guest's memory is counted.
//!
//! 1. **`contract`** — what `wit/` says, as Rust: the generated bindings, the versions
//!    this host speaks, [`Message`], the flat layouts that carry messages (`batch`) and
//!    raw records ([`RawRecord`]) into a guest, and the engine-free half of the check that
//!    a component fits its world ([`Mismatch`]).
//! 2. **`sandbox`** — one instance in its own store and what it may do: [`Limits`], the
//!    memory limiter, the deadline (blocking WASI calls included), output capture and
//!    the log gate, the host side of `corral:plugin/*` (`imports`), the key-value
//!    [`KvStore`], directory grants, contract [`Violation`]s, and the embedder's host
//!    functions ([`HostCtx`]).
//! 3. **`plugin`** — a [`Plugin`]: calls into its sandbox (`call`, `run`), the failure
//!    policy and termination, restarts, the move from baseline to optimised code,
//!    saved state, calls of exports by name, and its [`Stats`] and [`CallError`]s.
//! 4. **`loader`** — the [`Host`]: engines, linker and epoch thread (`builder`), compile
//!    limits and the compile worker (`compile`), the memo, single-flight compiles and the
//!    disk cache (`compiling`, `cache`), the check against the world (`link`), name policy
//!    and file sniffing (`names`), and [`LoadError`].
//! 5. **`registry`** — plugins by name, swapped in place: the swap protocol (`swap`), calls
//!    that follow the name across swaps (`calls`), saved state across restarts (`saved`)
//!    through a [`StateStore`], and the [`Sidecar`] a plugin is installed with.
//! 6. **`watch`** — the watch directory: files and sidecars turned into installs and
//!    unloads ([`Watcher`]).
//!
//! Inside a room, files may refer to each other (an `impl Plugin` split by concept across
//! `plugin/*.rs`); between rooms, only forward. Everything an embedder uses is
//! re-exported here at the crate root, so the rooms can move without breaking them.

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

mod contract;
mod loader;
mod plugin;
mod registry;
mod sandbox;
mod watch;

// The guides' code, compiled and run as doctests so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/embedding.md")]
struct EmbeddingGuide;
#[cfg(doctest)]
#[doc = include_str!("../../../docs/host-functions.md")]
struct HostFunctionsGuide;

#[doc(hidden)]
pub use contract::batch::lay_out_message_batch;
pub use contract::message::{DEFAULT_SEVERITY, Field, GUEST_LOGGER_FIELD, Message, Value, now_ns};
pub use contract::mismatch::Mismatch;
pub use contract::raw::RawRecord;
pub use contract::{PLUGIN_PACKAGE_VERSION, WASI_VERSION, WORLD, WorldReport};
pub use loader::{
    CompileLimit, CompileLimits, CompileStats, CompileWorker, ComponentCost, Host, HostBuilder, HostError,
    LoadError, compile_worker_main, content_version, validate_name,
};
pub use plugin::{
    BatchOutcome, CallError, CallOutcome, EntryStats, Plugin, PluginOptions, PluginState, RestartPolicy,
    RestartStatus, Stats, TIMING_SAMPLE,
};
pub use registry::{
    Event, Installed, PluginHandle, PluginStatus, Registry, Sidecar, SidecarSections, StateHandoff,
};
pub use sandbox::embedder::{HostCtx, HostGetter, HostLinker};
pub use sandbox::limits::{Limit, Limits, parse_size};
pub use sandbox::output::{LogLevel, LogLine, LogSource, escape};
pub use sandbox::store::{KvStore, MemoryStore, StateStore, StoreError};
pub use sandbox::{Cause, DirGrant, SandboxState, Tier, Violation};
/// The wasmtime this Corral is built on, for an embedder's `bindgen!` and `Val`s: use it
/// rather than a `wasmtime` dependency of your own, so the two never differ.
pub use wasmtime;
pub use wasmtime::Trap;
pub use watch::{DEBOUNCE, RESCAN_GRACE, WatchError, WatchOptions, Watcher};

#[cfg(test)]
mod tests {
    /// The rooms of the Layout essay, in order.
    const ROOMS: [&str; 6] = ["contract", "sandbox", "plugin", "loader", "registry", "watch"];

    /// Every `.rs` file under `dir`, with its text.
    fn sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                all.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                all.push((path, text));
            }
        }
        all
    }

    #[test]
    fn each_room_uses_only_the_rooms_before_it() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut wrong = Vec::new();
        for (position, room) in ROOMS.iter().enumerate() {
            for (path, text) in sources(&src.join(room)) {
                for (number, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for (at, _) in code.match_indices("crate::") {
                        let rest = &code[at + "crate::".len()..];
                        let named: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        let later = ROOMS[position + 1..].contains(&named.as_str());
                        // Code names the room an item lives in, not its re-export at
                        // the root, so that this check sees every use.
                        let reexport = named.starts_with(char::is_uppercase);
                        if later || reexport {
                            wrong.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "uses against the layout:\n{}", wrong.join("\n"));
    }
}
