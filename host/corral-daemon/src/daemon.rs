//! `corral run`: the daemon. A watch directory of plugins, messages in from stdin and
//! the admin API appended to a durable log under `--data` and read by each plugin at its
//! own pace, timer events on each plugin's interval, emitted messages out as JSON lines
//! through a log of their own, checkpoints that survive `kill -9` (see `pipeline` and
//! `docs/delivery.md`).
//!
//! Shutdown on SIGINT or SIGTERM is graceful: intake stops (the admin API closes, stdin
//! is no longer read), the watcher stops, every plugin finishes its batch and commits
//! its checkpoint (position, saved state, store writes), the output writes what was
//! emitted and commits its own, and the process exits 0. The next start resumes every
//! plugin from its checkpoint, so a clean restart replays nothing.
//! Shutdown is also bounded: what has not finished within
//! [`DaemonConfig::shutdown_timeout`] (a plugin still in a call that takes its whole
//! deadline) is abandoned with a log line naming the plugin, and the process exits all
//! the same; that plugin resumes from its last committed checkpoint at the next start.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use corral::{Host, Message, Registry, StateStore, StoreError, WatchOptions};

use crate::admin::{self, Admin};
use crate::checkpoint::CheckpointStore;
use crate::persist::RedbStore;
use crate::pipeline::{Output, Pipeline, PipelineOptions};
use crate::settings::DaemonSections;

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
    /// The input log's bound, commit interval and fsync, and the checkpoint interval.
    pub pipeline: PipelineOptions,
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
    /// How long shutdown waits for plugins to finish their queued messages and save
    /// their state before it abandons the ones still busy (default
    /// [`DaemonConfig::DEFAULT_SHUTDOWN_TIMEOUT`]).
    pub shutdown_timeout: Duration,
    /// What a component may hold, and what its compile may take
    /// (`HostBuilder::compile_limits`).
    pub compile_limits: corral::CompileLimits,
    /// Where compiles run under their time and memory bounds
    /// (`HostBuilder::compile_worker`); `None` compiles in the daemon's own process.
    pub compile_worker: Option<corral::CompileWorker>,
    /// Allow directory grants that cover `/`, the watch directory, the data directory
    /// or the compile cache (`HostBuilder::allow_broad_grants`).
    pub allow_broad_grants: bool,
}

impl DaemonConfig {
    /// The default admin address, 127.0.0.1:8000.
    pub const DEFAULT_ADMIN: &str = "127.0.0.1:8000";
    /// The default bound on shutdown.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    /// The default bound on the unread part of the log (`--max-log`).
    pub const DEFAULT_MAX_LOG: &str = "1GiB";
}

/// Saved state as the registry sees it in the daemon: a plugin's checkpoint's, which
/// stays the state at that checkpoint until the next one (restoring it forgets nothing).
#[derive(Debug)]
struct CheckpointState(RedbStore);

impl StateStore for CheckpointState {
    fn save_state(&self, plugin: &str, preservation_version: u64, data: &[u8]) -> Result<(), StoreError> {
        self.0.save_state(plugin, preservation_version, data)
    }

    fn saved_state(&self, plugin: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.0.saved_state(plugin)
    }

    fn forget_state(&self, _plugin: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The daemon could not start or failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DaemonError(String);

impl DaemonError {
    pub(crate) fn new(reason: String) -> DaemonError {
        DaemonError(reason)
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
///
/// [`DaemonError`] when it cannot start: a non-loopback admin address without a token,
/// an address in use, a watch directory or data directory that cannot be used.
pub fn run(config: DaemonConfig) -> Result<(), DaemonError> {
    let fail = |e: &dyn std::fmt::Display| DaemonError(e.to_string());
    // Before the first thread starts.
    crate::trim::limit_arenas();
    if !config.admin.ip().is_loopback() && config.token.is_none() {
        return Err(DaemonError(format!(
            "refusing to serve the admin API on {} without a token: anyone who can reach it \
             could call and reload plugins. Pass --token TOKEN, or bind to 127.0.0.1",
            config.admin
        )));
    }
    let output = match &config.output {
        OutputTarget::Stdout => Output {
            writer: Box::new(std::io::BufWriter::with_capacity(64 << 10, std::io::stdout())),
            file: None,
        },
        OutputTarget::File(path) => {
            let cannot =
                |e: std::io::Error| DaemonError(format!("cannot open output file `{}`: {e}", path.display()));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(cannot)?;
            Output {
                file: Some(file.try_clone().map_err(cannot)?),
                writer: Box::new(std::io::BufWriter::with_capacity(64 << 10, file)) as Box<dyn Write + Send>,
            }
        }
    };
    let store = RedbStore::open(&config.data_dir.join("store.redb")).map_err(|e| fail(&e))?;
    let checkpoints = Arc::new(CheckpointStore::new(store.clone()));
    let mut host = Host::builder()
        .store(checkpoints.clone())
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
    registry.restore_saved_state_from(Arc::new(CheckpointState(store.clone())));
    let pipeline = Pipeline::start(
        registry.clone(),
        checkpoints.clone(),
        &config.data_dir,
        output,
        config.pipeline.clone(),
    )
    .map_err(|e| fail(&e))?;
    // Decoders' inputs, started after the first scan (see `intake`).
    let intake = crate::intake::Intake::start(
        registry.clone(),
        pipeline.routes().clone(),
        &config.dir,
        pipeline.input().clone(),
        checkpoints,
        config.pipeline.checkpoint_interval,
    );
    // The daemon's own sidecar keys (matcher, ticker, start, input) are welcome and checked.
    let watch = WatchOptions {
        sections: Some(Arc::new(DaemonSections)),
        ..config.watch.clone()
    };
    let watcher = Arc::new(registry.watch_with(&config.dir, watch).map_err(|e| fail(&e))?);
    pipeline.release_absent();
    pipeline.start_workers();
    intake.start_all();
    tracing::info!(dir = %watcher.dir().display(), plugins = registry.names().len(), "watching");

    // The admin API's: its handlers hand every call into a plugin, a rescan or a wait
    // for durability to the blocking pool, so one worker serves them all.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail(&e))?;
    let closing = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        registry: registry.clone(),
        node: Arc::new(admin::Local {
            pipeline: pipeline.clone(),
            watcher: watcher.clone(),
            intake: intake.clone(),
        }),
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
        tokio::spawn(release_when_settled(registry.clone()));
        axum::serve(listener, admin::router(admin))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| DaemonError(format!("admin API failed: {e}")))
    })?;

    tracing::info!("shutting down: committing every plugin's checkpoint");
    closing.store(true, Ordering::SeqCst);
    // An admin call still waiting on a plugin is not waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match Arc::try_unwrap(watcher) {
        Ok(watcher) => drop(watcher),
        Err(_) => tracing::warn!("the watcher is still in use; it stops at exit"),
    }
    // Inputs first: what they decoded is appended before the log closes.
    intake.shutdown();
    let (done, finished) = std::sync::mpsc::channel();
    let finishing = std::thread::Builder::new()
        .name("corral-shutdown".into())
        .spawn(move || {
            let _ = done.send(pipeline.shutdown(OUTPUT_WAIT));
        })
        .map_err(|e| fail(&e))?;
    match finished.recv_timeout(config.shutdown_timeout) {
        Ok(saved) => {
            let _ = finishing.join();
            store.flush().map_err(|e| fail(&e))?;
            tracing::info!(saved = ?saved, "stopped");
        }
        Err(_) => {
            for status in registry.statuses() {
                if status.plugin.is_some_and(|p| p.is_busy()) {
                    tracing::error!(
                        plugin = %status.name,
                        timeout = ?config.shutdown_timeout,
                        "still in a call at the end of the shutdown timeout: abandoned; it \
                         resumes from its last checkpoint at the next start"
                    );
                }
            }
            store.flush().map_err(|e| fail(&e))?;
            tracing::warn!("stopped, abandoning what did not finish in time");
        }
    }
    Ok(())
}

/// How often [`release_when_settled`] looks at what serves.
const SETTLE_CHECK: Duration = Duration::from_secs(2);

/// Gives back the pages loading touched (`trim`) once what serves has settled — every
/// plugin loaded and on optimised code, as after start-up — and again after each change
/// (a swap, an unload, a tier-up), when that has settled too.
async fn release_when_settled(registry: Registry) {
    let mut released: Option<Vec<(String, String, corral::Tier)>> = None;
    let mut check = tokio::time::interval(SETTLE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        check.tick().await;
        let serving: Vec<_> = registry
            .statuses()
            .into_iter()
            .filter_map(|s| s.plugin.map(|p| (s.name, p.version().to_owned(), p.tier())))
            .collect();
        let settled = serving
            .iter()
            .all(|(_, _, tier)| *tier == corral::Tier::Optimized);
        if !settled || released.as_ref() == Some(&serving) {
            continue;
        }
        match crate::trim::release_startup_pages() {
            Ok(r) => tracing::debug!(
                program_kib = r.program_kib,
                rss_before_kib = r.rss_before_kib,
                rss_after_kib = r.rss_after_kib,
                "gave back the pages loading touched"
            ),
            Err(e) => tracing::debug!("cannot give back the pages loading touched: {e}"),
        }
        released = Some(serving);
    }
}

/// How long a clean stop waits for the output to write what plugins emitted; the rest
/// is in the output log, written at the next start.
const OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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

/// Reads JSON lines from stdin and appends them to the log in batches (what one read
/// brought), until stdin ends or the daemon closes. While the log is at its bound the
/// append waits, and stdin is not read. The end of stdin ends intake from stdin only.
fn read_stdin(pipeline: Arc<Pipeline>, closing: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("corral-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::BufReader::with_capacity(256 << 10, std::io::stdin().lock());
            let mut batch = crate::log::Batch::default();
            let mut partial: Vec<u8> = Vec::new();
            let mut number = 0u64;
            let log = pipeline.input();
            let stop = || closing.load(Ordering::SeqCst);
            // Asked of every line whether a plugin takes it; looked up again per read.
            let mut lines_in = Lines::new(pipeline.routes().matchers());
            loop {
                let buf = match stdin.fill_buf() {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("cannot read stdin: {e}");
                        break;
                    }
                };
                if buf.is_empty() {
                    if !partial.is_empty() {
                        number += 1;
                        lines_in.push(&mut batch, &partial, number);
                    }
                    break;
                }
                let n = buf.len();
                let mut lines = buf.split(|b| *b == b'\n').peekable();
                while let Some(line) = lines.next() {
                    if lines.peek().is_none() {
                        // No newline yet: the rest of the line comes with the next read.
                        partial.extend_from_slice(line);
                        break;
                    }
                    number += 1;
                    if partial.is_empty() {
                        lines_in.push(&mut batch, line, number);
                    } else {
                        partial.extend_from_slice(line);
                        lines_in.push(&mut batch, &partial, number);
                        partial.clear();
                    }
                }
                stdin.consume(n);
                if stop() {
                    break;
                }
                if !batch.is_empty() {
                    if log.append(&batch, &stop).is_err() {
                        break;
                    }
                    batch.clear();
                    pipeline.count_unmatched(std::mem::take(&mut lines_in.unmatched));
                    lines_in.matchers = pipeline.routes().matchers();
                }
            }
            if !batch.is_empty() && log.append(&batch, &stop).is_ok() {
                pipeline.count_unmatched(lines_in.unmatched);
            }
            tracing::info!("stdin closed: intake goes on over the admin API");
        });
    if let Err(e) = spawned {
        tracing::error!("cannot read stdin: {e}");
    }
}

/// What stdin intake keeps between lines: the matchers asked, the lines of the batch
/// being built that none of them takes, and scratch space.
struct Lines {
    matchers: crate::settings::Matchers,
    unmatched: u64,
    /// A line's fields, encoded while it is read.
    fields: Vec<u8>,
    /// The message a record decodes to, for matchers that look at it.
    message: Message,
}

impl Lines {
    fn new(matchers: crate::settings::Matchers) -> Lines {
        Lines {
            matchers,
            unmatched: 0,
            fields: Vec::new(),
            message: crate::log::codec::empty(),
        }
    }

    /// Decodes one stdin line into a record of `batch` (straight from the JSON, see
    /// `log::json`), counting it if no plugin matches it; a line that is not a message
    /// is logged and skipped.
    fn push(&mut self, batch: &mut crate::log::Batch, line: &[u8], number: u64) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let fields = &mut self.fields;
        let pushed = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                batch
                    .try_push(|out| crate::log::json::encode(text, out, fields))
                    .map_err(|e| e.to_string())
            });
        match pushed {
            Ok(record) => {
                let taken = self.matchers.take_all()
                    || (crate::log::codec::Cursor(record)
                        .message_into(&mut self.message)
                        .is_ok()
                        && self.matchers.any(&self.message));
                if !taken {
                    self.unmatched += 1;
                }
            }
            Err(e) => tracing::warn!("stdin line {number}: invalid message JSON, skipped: {e}"),
        }
        // One huge line must not pin its memory for good.
        if crate::log::codec::capacity(&self.message) > REUSED_BYTES {
            self.message = crate::log::codec::empty();
        }
        if self.fields.capacity() > REUSED_BYTES {
            self.fields = Vec::new();
        }
    }
}

/// Scratch space stdin intake keeps between lines, at most.
const REUSED_BYTES: usize = 64 << 10;
