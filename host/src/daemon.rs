//! `corral run`: the daemon. A watch directory of plugins, messages in from stdin and
//! the admin API, routed by matcher, timer events on each plugin's interval, emitted
//! messages out as JSON lines, state and store kept across restarts.
//!
//! Shutdown on SIGINT or SIGTERM is graceful: intake stops (the admin API closes, stdin
//! is no longer read), the watcher stops, every plugin finishes the messages already
//! queued for it, plugins that export the state interface save their state into the
//! store, the store is flushed, and the process exits 0. The next start restores the
//! saved state into each plugin's first instance (unless its preservation version
//! changed).

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::admin::{self, Admin};
use crate::host::Host;
use crate::message::Message;
use crate::persist::RedbStore;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use crate::watcher::WatchOptions;

/// Where emitted messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The watch directory of plugins.
    pub dir: PathBuf,
    /// Where the store (`store.redb`) and the compile cache (`cache/`) live.
    pub data_dir: PathBuf,
    /// The admin API's address.
    pub admin: SocketAddr,
    /// The bearer token the admin API requires; required for a non-loopback address.
    pub token: Option<String>,
    /// Where emitted messages go.
    pub output: OutputTarget,
    /// Messages each plugin's queue holds before it turns more away.
    pub queue_capacity: usize,
    /// Whether to read messages from stdin.
    pub stdin: bool,
    /// How the watch directory is watched: debounce, file size limit, symlinks.
    pub watch: WatchOptions,
    /// Take sandboxes from a pool of this many (`HostBuilder::pooling`) instead of
    /// allocating each on demand.
    pub pool: Option<u32>,
    /// Serve a plugin new to the host from baseline code while its optimised code
    /// compiles (`HostBuilder::baseline`; ignored with `pool`).
    pub baseline: bool,
    /// What a component may hold, and what its compile may take
    /// (`HostBuilder::compile_limits`).
    pub compile_limits: crate::CompileLimits,
    /// Where compiles run under their time and memory bounds
    /// (`HostBuilder::compile_worker`); `None` compiles in the daemon's own process.
    pub compile_worker: Option<crate::CompileWorker>,
    /// Allow directory grants that cover `/`, the watch directory, the data directory
    /// or the compile cache (`HostBuilder::allow_broad_grants`).
    pub allow_broad_grants: bool,
}

impl DaemonConfig {
    /// The default admin address, 127.0.0.1:8000.
    pub const DEFAULT_ADMIN: &str = "127.0.0.1:8000";
    /// The default queue capacity per plugin.
    pub const DEFAULT_QUEUE: usize = 1024;
}

/// The daemon could not start or failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DaemonError(String);

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
///
/// [`DaemonError`] when it cannot start: a non-loopback admin address without a token,
/// an address in use, a watch directory or data directory that cannot be used.
pub fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let fail = |e: &dyn std::fmt::Display| DaemonError(e.to_string());
    if !config.admin.ip().is_loopback() && config.token.is_none() {
        return Err(DaemonError(format!(
            "refusing to serve the admin API on {} without a token: anyone who can reach it \
             could call and reload plugins. Pass --token TOKEN, or bind to 127.0.0.1",
            config.admin
        )));
    }
    let output: Box<dyn Write + Send> = match &config.output {
        OutputTarget::Stdout => Box::new(std::io::stdout()),
        OutputTarget::File(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| DaemonError(format!("cannot open output file `{}`: {e}", path.display())))?,
        ),
    };
    let store = RedbStore::open(&config.data_dir.join("store.redb")).map_err(|e| fail(&e))?;
    let mut host = Host::builder()
        .store(Arc::new(store.clone()))
        .cache_dir(config.data_dir.join("cache"))
        .baseline(config.baseline)
        .compile_limits(config.compile_limits.clone())
        .protect_dir(&config.data_dir)
        .allow_broad_grants(config.allow_broad_grants);
    if let Some(worker) = config.compile_worker.clone() {
        host = host.compile_worker(worker);
    }
    if let Some(sandboxes) = config.pool {
        host = host.pooling(sandboxes);
    }
    let host = host.build().map_err(|e| fail(&e))?;
    let registry = Registry::new(host);
    registry.restore_saved_state_from(store.clone());
    let pipeline = Pipeline::start(registry.clone(), output, config.queue_capacity);
    let watcher = Arc::new(
        registry
            .watch_with(&config.dir, config.watch.clone())
            .map_err(|e| fail(&e))?,
    );
    tracing::info!(dir = %watcher.dir().display(), plugins = registry.names().len(), "watching");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(&e))?;
    let closing = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        registry: registry.clone(),
        pipeline: pipeline.clone(),
        watcher: watcher.clone(),
        token: config.token.as_deref().map(Arc::from),
    };
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.admin)
            .await
            .map_err(|e| DaemonError(format!("cannot serve the admin API on {}: {e}", config.admin)))?;
        let address = listener.local_addr().map_err(|e| fail(&e))?;
        // Tests and scripts wait for this line to learn the port.
        tracing::info!("admin API listening on http://{address}");
        if config.stdin {
            read_stdin(pipeline.clone(), closing.clone());
        }
        axum::serve(listener, admin::router(admin))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| DaemonError(format!("admin API failed: {e}")))
    })?;

    tracing::info!("shutting down: finishing queued messages and saving state");
    closing.store(true, Ordering::SeqCst);
    drop(runtime);
    match Arc::try_unwrap(watcher) {
        Ok(watcher) => drop(watcher),
        Err(_) => tracing::warn!("the watcher is still in use; it stops at exit"),
    }
    pipeline.shutdown();
    let saved = registry.save_states(&store);
    store.flush().map_err(|e| fail(&e))?;
    tracing::info!(saved = ?saved, "stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}

/// Reads JSON lines from stdin and routes them, until stdin ends or the daemon closes.
/// The end of stdin ends intake from stdin only.
fn read_stdin(pipeline: Arc<Pipeline>, closing: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("corral-stdin".into())
        .spawn(move || {
            for (number, line) in std::io::stdin().lock().lines().enumerate() {
                if closing.load(Ordering::SeqCst) {
                    break;
                }
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!("cannot read stdin: {e}");
                        break;
                    }
                };
                if line.trim().is_empty() {
                    continue;
                }
                match Message::from_json(&line) {
                    Ok(message) => {
                        pipeline.route(message);
                    }
                    Err(e) => tracing::warn!("stdin line {}: invalid message JSON, skipped: {e}", number + 1),
                }
            }
            tracing::info!("stdin closed: intake goes on over the admin API");
        });
    if let Err(e) = spawned {
        tracing::error!("cannot read stdin: {e}");
    }
}
