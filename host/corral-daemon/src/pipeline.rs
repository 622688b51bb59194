//! The daemon's pipeline: every accepted message appended to the durable input log
//! (`log`), a worker thread per plugin reading it from the plugin's own position with
//! its matcher, in batches; what plugins emit appended to the output log, which the
//! output writer reads and writes as JSON lines. Nothing is turned away and nothing is
//! dropped: a slow plugin lags, and when the unread part of a log reaches its bound the
//! writer waits (intake stops reading stdin, `POST /messages` answers 503).
//!
//! **Checkpoints.** About once a second ([`PipelineOptions::checkpoint_interval`]), and
//! when it stops, a worker commits its plugin's checkpoint in one transaction of the
//! store's database: its log position, its saved state (a plugin exporting `state`),
//! and its store writes since the last checkpoint (they wait in memory until then; its
//! reads see them, see `checkpoint`). What it emitted before that position is made
//! durable in the output log first. After a crash each plugin resumes from its
//! checkpoint with the state and store it had there, and replays what follows.
//!
//! **Ids.** Every emitted message carries a field `corral.id`, `plugin/k` for the
//! `k`-th message the plugin emitted while processing messages since it first ran in
//! this data directory (`plugin/tk` for timer events and reports). The counters are
//! part of the checkpoint, so a deterministic plugin replaying after a crash emits the
//! same messages under the same ids, whatever the batches or the checkpoints fell on,
//! and a consumer tells a repeat from a new message by its id.
//!
//! **Lifecycle.** A worker follows its plugin's name across swaps (the new version
//! continues from the cursor). A terminated plugin's cursor waits. A plugin without
//! state checkpoints where it stopped; one with state cannot save it any more, so when
//! a new version replaces it the worker rewinds to the last checkpoint, restores that
//! checkpoint's state into the new version and forgets the store writes made since: the
//! new version replays from a consistent point (the message that terminated the old
//! version included). A plugin new to the daemon starts at the
//! end of the log, or at the earliest message kept with `start-from = "earliest"` in
//! its sidecar. A plugin's termination is reported as Heka did: an emitted message of
//! type `corral.plugin-terminated` with the plugin and the reason, and an error log
//! line.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointStore;
use crate::lock;
use crate::log::codec::{self, Cursor};
use crate::log::{Batch, Log, LogError, LogOptions, LogStatus, Position};
use crate::persist::{Checkpointed, OUTPUT_READER};
use crate::settings::{Routes, StartFrom};
use corral::CallError;
use corral::{Event, Registry};
use corral::{Field, Message, Value, now_ns};
use corral::{Plugin, PluginState};

/// The most messages a worker hands a plugin in one call.
pub const MAX_BATCH: usize = 64;
/// A worker stops adding messages to a batch once they hold about this many bytes: a
/// batch is copied into the plugin's memory, which its memory limit caps.
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// The most records a worker reads for one batch when its matcher takes few of them, so
/// that it still checkpoints and runs its timer on time.
const MAX_SCAN: usize = 16 << 10;

/// A message decoded for a batch is kept to decode the next into if it is no larger.
const REUSED_BYTES: usize = 64 << 10;

/// The message type reporting a terminated plugin.
pub const TERMINATED_TYPE: &str = "corral.plugin-terminated";
/// The field holding an emitted message's stable id.
pub const ID_FIELD: &str = "corral.id";

/// How long a checkpoint waits for the output log to make a plugin's emits durable.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// How the pipeline keeps its logs.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The input log's options (`--max-log`, `--commit-interval`, `--no-fsync`); the
    /// output log takes the same.
    pub log: LogOptions,
    /// How often each plugin and the output commit a checkpoint.
    pub checkpoint_interval: Duration,
}

impl Default for PipelineOptions {
    fn default() -> PipelineOptions {
        PipelineOptions {
            log: LogOptions::default(),
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

/// Counters of one plugin's reader.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Messages its matcher took and that were passed to the plugin.
    pub processed: AtomicU64,
    /// Calls into the plugin made with them: fewer than `processed` when a
    /// `batch-filter` plugin took them in batches.
    pub calls: AtomicU64,
    /// Timer events run.
    pub ticks: AtomicU64,
    /// Records it could not read (a damaged segment) and skipped, or that were deleted
    /// before it came back for them: counted, never silent.
    pub skipped: AtomicU64,
    /// Checkpoints committed.
    pub checkpoints: AtomicU64,
    /// Its position: the next record's sequence number and byte offset.
    pub seq: AtomicU64,
    /// See `seq`.
    pub byte: AtomicU64,
    /// The sequence number of its last checkpoint.
    pub checkpointed: AtomicU64,
    /// Whether it waits because its plugin is terminated.
    pub waiting: AtomicBool,
}

/// How far a reader is behind the durable end of its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Records (messages) not yet read.
    pub messages: u64,
    /// Their bytes in the log.
    pub bytes: u64,
}

struct Worker {
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    stats: Arc<ReaderStats>,
    thread: JoinHandle<Option<String>>,
}

/// A reader's checkpoint: position and emit counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    at: Position,
    emits: u64,
    others: u64,
}

impl Mark {
    fn stored(self) -> Checkpointed {
        (self.at.seq, self.at.byte, self.emits, self.others)
    }

    fn from_stored((seq, byte, emits, others): Checkpointed) -> Mark {
        Mark {
            at: Position { seq, byte },
            emits,
            others,
        }
    }
}

/// What the output writer shares with the pipeline.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Lines written.
    pub written: AtomicU64,
    /// Its position in the output log.
    pub seq: AtomicU64,
    /// See `seq`.
    pub byte: AtomicU64,
}

/// Where emitted messages go: a writer, and the file under it to `fsync` before the
/// output's checkpoint, if it is one.
pub struct Output {
    /// JSON lines go here.
    pub writer: Box<dyn Write + Send>,
    /// The file, for durability; `None` for stdout or a pipe.
    pub file: Option<std::fs::File>,
}

/// The input log, the plugin workers, the output log and its writer.
pub struct Pipeline {
    registry: Registry,
    /// The daemon's per-plugin settings (matcher, ticker, start), beside the registry.
    routes: Arc<Routes>,
    input: Log,
    output_log: Log,
    store: Arc<CheckpointStore>,
    options: PipelineOptions,
    /// Checkpoints of plugins not running now (from the database at start, and of
    /// plugins stopped since), so one that comes back resumes.
    known: Mutex<HashMap<String, Mark>>,
    workers: Mutex<HashMap<String, Worker>>,
    writer: Mutex<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    output_stats: Arc<OutputStats>,
    /// Messages accepted since the start that no loaded plugin's matcher took.
    unmatched: AtomicU64,
    stopped: AtomicBool,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

/// The pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A log could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The checkpoints could not be read.
    #[error("cannot read the checkpoints: {0}")]
    Store(#[from] corral::StoreError),
}

impl Pipeline {
    /// Opens the logs under `data_dir` (`log/` and `output/`), recovering them, starts
    /// the output writer from its checkpoint and a thread following `registry`'s
    /// events. Create the pipeline before watching a directory, so the first loads start
    /// their workers; `store` must be the store the registry's host uses.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] when a log or the checkpoints cannot be read.
    pub(crate) fn start(
        registry: Registry,
        store: Arc<CheckpointStore>,
        data_dir: &std::path::Path,
        output: Output,
        options: PipelineOptions,
    ) -> Result<Arc<Pipeline>, PipelineError> {
        let mut known: HashMap<String, Mark> = store
            .db()
            .checkpoints()?
            .into_iter()
            .map(|(name, stored)| (name, Mark::from_stored(stored)))
            .collect();
        let output_mark = known.remove(OUTPUT_READER).unwrap_or_default();
        let holds = known.iter().map(|(name, mark)| (name.clone(), mark.at)).collect();
        let input = Log::open(&data_dir.join("log"), options.log.clone(), holds)?;
        let output_log = Log::open(
            &data_dir.join("output"),
            options.log.clone(),
            HashMap::from([(OUTPUT_READER.to_owned(), output_mark.at)]),
        )?;
        let output_start = clamp(&output_log, output_mark.at, OUTPUT_READER).0;
        output_log.hold(OUTPUT_READER, output_start);
        let output_stats = Arc::new(OutputStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, store, stats, stop, interval) = (
                output_log.clone(),
                store.clone(),
                output_stats.clone(),
                stop.clone(),
                options.checkpoint_interval,
            );
            std::thread::Builder::new()
                .name("corral-output".into())
                .spawn(move || write_out(&log, &store, output_start, output, &stats, &stop, interval))
                .map_err(|e| LogError::Io {
                    path: data_dir.to_owned(),
                    reason: format!("cannot start the output thread: {e}"),
                })?
        };
        let events = registry.subscribe();
        let pipeline = Arc::new(Pipeline {
            routes: Arc::new(Routes::new(registry.clone())),
            registry,
            input,
            output_log,
            store,
            options,
            known: Mutex::new(known),
            workers: Mutex::new(HashMap::new()),
            writer: Mutex::new(Some((stop, writer))),
            output_stats,
            unmatched: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&pipeline);
        // The follower ends by itself once the pipeline is gone.
        std::thread::Builder::new()
            .name("corral-follow".into())
            .spawn(move || {
                for event in events {
                    let Some(pipeline) = weak.upgrade() else { break };
                    match event {
                        Event::Loaded { name, .. } => pipeline.start_worker(&name),
                        Event::Unloaded { name, .. } => {
                            pipeline.stop_worker(&name, false);
                        }
                        Event::Replaced { .. } => pipeline.input.wake(),
                        Event::Failed { .. } => {}
                    }
                }
            })
            .expect("cannot start the event thread");
        Ok(pipeline)
    }

    /// The daemon's per-plugin settings (matcher, ticker, input), beside the registry.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// The log intake appends to.
    pub fn input(&self) -> &Log {
        &self.input
    }

    /// The input log's status.
    pub fn input_status(&self) -> LogStatus {
        self.input.status()
    }

    /// The output log's status.
    pub fn output_status(&self) -> LogStatus {
        self.output_log.status()
    }

    /// Lines the output has written.
    pub fn output_written(&self) -> u64 {
        self.output_stats.written.load(Ordering::Relaxed)
    }

    /// How far the output writer is behind what plugins emitted.
    pub fn output_lag(&self) -> Lag {
        let durable = self.output_log.durable();
        lag(
            durable,
            self.output_stats.seq.load(Ordering::Relaxed),
            self.output_stats.byte.load(Ordering::Relaxed),
        )
    }

    /// The reader counters of `name`, if it has a worker.
    pub fn reader(&self, name: &str) -> Option<Arc<ReaderStats>> {
        lock(&self.workers).get(name).map(|w| w.stats.clone())
    }

    /// How far `name`'s reader is behind the input log's durable end.
    pub fn lag(&self, name: &str) -> Option<Lag> {
        let stats = self.reader(name)?;
        let durable = self.input.durable();
        Some(lag(
            durable,
            stats.seq.load(Ordering::Relaxed),
            stats.byte.load(Ordering::Relaxed),
        ))
    }

    /// Store writes waiting for their plugins' next checkpoint.
    pub fn pending_store_writes(&self) -> usize {
        self.store.pending_writes()
    }

    /// Appends `messages` to the input log without waiting: for intake that answers
    /// (HTTP). Returns the end to wait on with [`Pipeline::wait_durable`].
    ///
    /// # Errors
    ///
    /// [`LogError::Full`] when the log is at its bound; nothing was appended.
    pub fn try_accept(&self, messages: &[Message]) -> Result<Position, LogError> {
        let mut batch = Batch::default();
        for message in messages {
            batch.push(|out| codec::encode(message, out));
        }
        let end = self.input.try_append(&batch)?;
        let matchers = self.routes.matchers();
        let unmatched = messages.iter().filter(|m| !matchers.any(m)).count();
        self.count_unmatched(unmatched as u64);
        Ok(end)
    }

    /// Counts `n` messages accepted at intake that no loaded plugin's matcher takes
    /// (Heka's router counted these too), asked with [`Routes::matchers`]. Each reader
    /// applies its own matcher later, so this is the one place the question "did anyone
    /// want it?" is asked: against the plugins loaded when the message's batch came in.
    /// A plugin loaded later with `start-from = "earliest"` may still read it.
    pub(crate) fn count_unmatched(&self, n: u64) {
        if n > 0 {
            self.unmatched.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Messages accepted since the start that matched no loaded plugin.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for everything up to `end` to be durable.
    pub fn wait_durable(&self, end: Position, timeout: Duration) -> bool {
        self.input.wait_durable(end, timeout)
    }

    /// Forgets the checkpoints of plugins that are not loaded (after the first scan of
    /// the watch directory), so they do not hold the log. They stay in the database: a
    /// plugin that comes back resumes from its checkpoint if the log still holds it.
    pub fn release_absent(&self) {
        let loaded: std::collections::HashSet<String> = self
            .registry
            .statuses()
            .into_iter()
            .filter(|s| s.plugin.is_some())
            .map(|s| s.name)
            .collect();
        self.input.release_all_but(&|name| loaded.contains(name));
    }

    /// Starts a worker for every loaded plugin that has none yet: call it after the
    /// first scan of the watch directory and before intake starts, so a plugin new to
    /// the daemon starts at the end of the log as it was when it was loaded.
    pub fn start_workers(&self) {
        for status in self.registry.statuses() {
            if status.plugin.is_some() {
                self.start_worker(&status.name);
            }
        }
    }

    fn start_worker(&self, name: &str) {
        // A decoder reads no log: it writes it, fed by its input (see `intake`).
        if self.registry.get(name).is_some_and(|p| p.decodes()) {
            return;
        }
        let mut workers = lock(&self.workers);
        // Checked under the lock: `shutdown` sets `stopped` before it drains the workers,
        // so no worker starts after it.
        if self.stopped.load(Ordering::SeqCst) || workers.contains_key(name) {
            return;
        }
        let mark = match lock(&self.known).remove(name) {
            Some(mark) => {
                let (at, skipped) = clamp(&self.input, mark.at, name);
                if skipped > 0 {
                    tracing::warn!(
                        plugin = name,
                        skipped,
                        "the log no longer holds messages after the plugin's checkpoint: skipped"
                    );
                }
                Mark { at, ..mark }
            }
            None => {
                let start_from = self
                    .routes
                    .settings(name)
                    .map_or_else(Default::default, |s| s.start_from);
                let at = match start_from {
                    StartFrom::End => self.input.status().durable,
                    StartFrom::Earliest => self.input.first(),
                };
                tracing::info!(
                    plugin = name,
                    seq = at.seq,
                    "a plugin new to the daemon reads the log from {}",
                    at.seq
                );
                let mark = Mark {
                    at,
                    ..Mark::default()
                };
                // Its first checkpoint, at once: a crash before the next must not make it
                // new again (and skip to the end).
                if let Err(e) = self.store.checkpoint(name, mark.stored(), None) {
                    tracing::warn!(plugin = name, "cannot commit the first checkpoint: {e}");
                }
                mark
            }
        };
        self.input.hold(name, mark.at);
        let stats = Arc::new(ReaderStats::default());
        stats.seq.store(mark.at.seq, Ordering::Relaxed);
        stats.byte.store(mark.at.byte, Ordering::Relaxed);
        stats.checkpointed.store(mark.at.seq, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let mut worker = Work {
            leave: leave.clone(),
            name: name.to_owned(),
            registry: self.registry.clone(),
            routes: self.routes.clone(),
            reader: self.input.reader(mark.at),
            output: self.output_log.clone(),
            store: self.store.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
            interval: self.options.checkpoint_interval,
            mark,
            emits: mark.emits,
            others: mark.others,
            emitted_to: None,
            out: Batch::default(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("corral-worker-{name}"))
            .spawn(move || worker.run())
            .expect("cannot start a worker thread");
        workers.insert(
            name.to_owned(),
            Worker {
                stop,
                leave,
                stats,
                thread,
            },
        );
    }

    /// Stops `name`'s worker. Unless `checkpoint`, its work since the last checkpoint is
    /// left to be replayed (the plugin is gone: its state cannot be saved with it).
    fn stop_worker(&self, name: &str, checkpoint: bool) -> Option<String> {
        let worker = lock(&self.workers).remove(name)?;
        // Without a checkpoint, the worker leaves its work since the last one.
        worker.leave.store(!checkpoint, Ordering::SeqCst);
        worker.stop.store(true, Ordering::SeqCst);
        self.input.wake();
        let saved = worker.thread.join().ok().flatten();
        if !checkpoint {
            self.store.discard(name);
            self.input.release(name);
        }
        let stored = self
            .store
            .db()
            .checkpoints()
            .ok()
            .and_then(|mut all| all.remove(name));
        if let Some(stored) = stored {
            lock(&self.known).insert(name.to_owned(), Mark::from_stored(stored));
        }
        saved
    }

    /// Stops intake, lets every worker finish its batch and commit its checkpoint, then
    /// lets the output write what was emitted (for up to `output_wait`) and commit its
    /// own, and closes the logs. Returns the plugins whose state was saved. Idempotent.
    pub fn shutdown(&self, output_wait: Duration) -> Vec<String> {
        self.stopped.store(true, Ordering::SeqCst);
        self.input.wake();
        let workers: Vec<(String, Worker)> = lock(&self.workers).drain().collect();
        for (_, worker) in &workers {
            worker.stop.store(true, Ordering::SeqCst);
        }
        self.input.wake();
        let mut saved = Vec::new();
        for (name, worker) in workers {
            if let Ok(Some(state)) = worker.thread.join() {
                debug_assert_eq!(state, name);
                saved.push(state);
            }
        }
        saved.sort();
        self.input.close();
        if let Some((stop, writer)) = lock(&self.writer).take() {
            let end = self.output_log.status().durable;
            let deadline = Instant::now() + output_wait;
            while self.output_stats.seq.load(Ordering::Relaxed) < end.seq && Instant::now() < deadline {
                self.output_log.wait_for(u64::MAX, Duration::from_millis(20));
            }
            stop.store(true, Ordering::SeqCst);
            self.output_log.wake();
            let _ = writer.join();
        }
        self.output_log.close();
        saved
    }
}

fn lag(durable: Position, seq: u64, byte: u64) -> Lag {
    Lag {
        messages: durable.seq.saturating_sub(seq),
        bytes: durable.byte.saturating_sub(byte),
    }
}

/// `at`, moved into what `log` holds; and how many records that skipped.
fn clamp(log: &Log, at: Position, reader: &str) -> (Position, u64) {
    let (first, durable) = (log.first(), log.durable());
    if at < first {
        (first, first.seq - at.seq)
    } else if at > durable {
        tracing::warn!(
            reader,
            "checkpoint at record {} is past the log's end at {} (its tail was lost): reading from the end",
            at.seq,
            durable.seq
        );
        (durable, 0)
    } else {
        (at, 0)
    }
}

/// One plugin's worker.
struct Work {
    name: String,
    registry: Registry,
    routes: Arc<Routes>,
    reader: crate::log::Reader,
    output: Log,
    store: Arc<CheckpointStore>,
    stats: Arc<ReaderStats>,
    stop: Arc<AtomicBool>,
    /// Set with `stop` when the plugin is gone: leave without a checkpoint.
    leave: Arc<AtomicBool>,
    interval: Duration,
    /// The last checkpoint.
    mark: Mark,
    /// Messages emitted since the plugin first ran, by messages and by timer events or
    /// reports: the ids' counters.
    emits: u64,
    others: u64,
    /// The output log's end after this plugin's last emit, to make durable before a
    /// checkpoint.
    emitted_to: Option<Position>,
    out: Batch,
}

impl Work {
    /// The ticker interval `name` serves with now (a swap may bring another).
    fn ticker_interval(&self) -> Option<Duration> {
        self.routes.settings(&self.name).and_then(|s| s.ticker_interval)
    }

    /// Serves the plugin until stopped; returns its name if its state was saved in the
    /// final checkpoint.
    fn run(&mut self) -> Option<String> {
        let mut interval = self.ticker_interval();
        let mut next_tick = interval.map(|i| Instant::now() + i);
        let mut next_checkpoint = Instant::now() + self.interval;
        let mut terminated: Option<Arc<Plugin>> = None;
        let mut reported: Option<(Arc<Plugin>, u64)> = None;
        // The batch's messages are decoded into the same `Message`s batch after batch
        // (their strings reused): `batch[..starts.len()]` is the batch.
        let mut batch: Vec<Message> = Vec::new();
        let mut starts: Vec<Position> = Vec::new();
        let mut saved = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let plugin = self.registry.get(&self.name);
            // A terminated plugin's cursor waits; its replacement resumes from the
            // last checkpoint.
            match (&terminated, &plugin) {
                (Some(old), Some(now)) if !Arc::ptr_eq(old, now) => {
                    self.rewind(now);
                    terminated = None;
                }
                _ => {}
            }
            if terminated.is_none()
                && let Some(p) = &plugin
                && matches!(p.state(), PluginState::Terminated { .. })
            {
                // A plugin without state checkpoints where it stopped (its store writes
                // and position agree), so its replacement does not meet the message that
                // terminated it again; one with state resumes from its last checkpoint,
                // the state it had there.
                if !p.preserves_state() {
                    self.checkpoint();
                }
                terminated = Some(p.clone());
            }
            self.stats.waiting.store(terminated.is_some(), Ordering::Relaxed);
            let mut busy = false;
            if terminated.is_none() {
                if next_tick.is_some_and(|at| at <= Instant::now()) {
                    self.stats.ticks.fetch_add(1, Ordering::Relaxed);
                    next_tick = interval.map(|i| Instant::now() + i);
                    let result = self.registry.timer_event(&self.name, now_ns());
                    let failed = result.is_err();
                    let emitted = match result {
                        Ok(outcome) => outcome.emitted,
                        Err(_) => Vec::new(),
                    };
                    if !self.emit(emitted, true) {
                        return None;
                    }
                    if failed {
                        self.report(&mut reported);
                    }
                }
                busy = self.read_batch(&mut batch, &mut starts);
                if !starts.is_empty() {
                    self.process(&mut batch, &mut starts, &mut reported)?;
                }
            }
            self.stats
                .seq
                .store(self.reader.position().seq, Ordering::Relaxed);
            self.stats
                .byte
                .store(self.reader.position().byte, Ordering::Relaxed);
            if Instant::now() >= next_checkpoint {
                next_checkpoint = Instant::now() + self.interval;
                if terminated.is_none() {
                    self.checkpoint();
                }
            }
            // A swap may have brought a sidecar with another interval.
            let now_interval = self.ticker_interval();
            if now_interval != interval {
                interval = now_interval;
                next_tick = interval.map(|i| Instant::now() + i);
            }
            if !busy {
                let mut until = next_checkpoint;
                // A terminated plugin's timer does not run: its time is no reason to wake.
                if let Some(tick) = next_tick.filter(|_| terminated.is_none()) {
                    until = until.min(tick);
                }
                let wait = until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200));
                self.reader.log().wait_for(self.reader.position().seq, wait);
            }
        }
        if !self.leave.load(Ordering::SeqCst) && terminated.is_none() && self.checkpoint() {
            saved = self
                .registry
                .get(&self.name)
                .is_some_and(|p| p.preserves_state())
                .then(|| self.name.clone());
        }
        saved
    }

    /// Reads the next records its matcher takes into `batch` (decoded into the messages
    /// already there, reusing their strings; the batch is `batch[..starts.len()]`, each
    /// message's position in `starts`); returns whether there may be more to read at
    /// once.
    fn read_batch(&mut self, batch: &mut Vec<Message>, starts: &mut Vec<Position>) -> bool {
        let settings = self.routes.settings(&self.name);
        let Some(matcher) = settings.as_ref().and_then(|s| s.matcher.as_ref()) else {
            // No matcher: the plugin takes nothing, and its cursor keeps up.
            let durable = self.reader.log().durable();
            self.reader.seek(durable);
            return false;
        };
        let mut bytes = 0;
        for _ in 0..MAX_SCAN {
            let start = self.reader.position();
            match self.reader.next() {
                Ok(Some(record)) => {
                    let taken = starts.len();
                    if batch.len() == taken {
                        batch.push(codec::empty());
                    }
                    match Cursor(record).message_into(&mut batch[taken]) {
                        Ok(()) => {
                            if matcher.matches(&batch[taken]) {
                                bytes += record.len();
                                starts.push(start);
                                if starts.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                                    return true;
                                }
                            }
                        }
                        Err(e) => {
                            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(plugin = %self.name, seq = start.seq, "skipped a log record: {e}");
                        }
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    let skipped = self.reader.skip_segment();
                    self.stats.skipped.fetch_add(skipped, Ordering::Relaxed);
                    tracing::error!(plugin = %self.name, skipped, "cannot read the log, skipped to the next segment: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// Hands `batch` to the plugin and sends on what it emitted. `None` when the emits
    /// could not be kept: the worker leaves without a checkpoint.
    fn process(
        &mut self,
        batch: &mut Vec<Message>,
        starts: &mut Vec<Position>,
        reported: &mut Option<(Arc<Plugin>, u64)>,
    ) -> Option<()> {
        let n = starts.len();
        let result = self.registry.process_messages(&self.name, &batch[..n]);
        let calls = result.as_ref().map_or(1, |outcome| outcome.calls);
        self.stats.calls.fetch_add(calls, Ordering::Relaxed);
        // Messages a terminated or unloaded plugin refused were not taken: the cursor
        // goes back to the first of them, to wait for the plugin's replacement.
        let refused = |e: &CallError| {
            matches!(
                e,
                CallError::Terminated { .. } | CallError::NotFound { .. } | CallError::Unloaded { .. }
            )
        };
        let (taken, emitted, failed) = match result {
            Ok(outcome) => {
                let first_refused = outcome.failed.iter().find(|(_, e)| refused(e)).map(|(i, _)| *i);
                (
                    first_refused.unwrap_or(n),
                    outcome.emitted,
                    !outcome.failed.is_empty(),
                )
            }
            Err(e) if refused(&e) => (0, Vec::new(), true),
            Err(_) => (n, Vec::new(), true),
        };
        if taken < n {
            self.reader.seek(starts[taken]);
        }
        self.stats.processed.fetch_add(taken as u64, Ordering::Relaxed);
        // Kept for the next batch, but not a message that grew large: one big record
        // must not pin its memory for good.
        batch.retain(|m| codec::capacity(m) <= REUSED_BYTES);
        starts.clear();
        if !self.emit(emitted, false) {
            return None;
        }
        if failed {
            self.report(reported);
        }
        Some(())
    }

    /// Appends `emitted` to the output log with their ids. `false` when it could not (the
    /// pipeline is stopping with the output full, or the log failed).
    fn emit(&mut self, emitted: Vec<Message>, other: bool) -> bool {
        if emitted.is_empty() {
            return true;
        }
        self.out.clear();
        for message in &emitted {
            let id = if other {
                self.others += 1;
                format!("{}/t{}", self.name, self.others - 1)
            } else {
                self.emits += 1;
                format!("{}/{}", self.name, self.emits - 1)
            };
            self.out.push(|out| {
                codec::string(&id, out);
                codec::encode(message, out);
            });
        }
        let stop = self.stop.clone();
        match self.output.append(&self.out, &|| stop.load(Ordering::SeqCst)) {
            Ok(end) => {
                self.emitted_to = Some(end);
                true
            }
            Err(e) => {
                tracing::error!(plugin = %self.name, "cannot keep what the plugin emitted; it replays from its last checkpoint at the next start: {e}");
                false
            }
        }
    }

    /// Reports the plugin's termination once per version and termination (a restart
    /// policy may bring it back to be terminated again).
    fn report(&mut self, reported: &mut Option<(Arc<Plugin>, u64)>) {
        let Some(plugin) = self.registry.get(&self.name) else {
            return;
        };
        let terminations = plugin.stats().terminations;
        if let PluginState::Terminated { reason } = plugin.state()
            && !reported
                .as_ref()
                .is_some_and(|(r, n)| Arc::ptr_eq(r, &plugin) && *n == terminations)
        {
            *reported = Some((plugin.clone(), terminations));
            let message = terminated_message(&self.name, plugin.version(), &reason);
            self.emit(vec![message], true);
        }
    }

    /// Commits the checkpoint at the reader's position. Returns whether it did.
    fn checkpoint(&mut self) -> bool {
        let at = self.reader.position();
        let unchanged =
            at == self.mark.at && self.emits == self.mark.emits && self.others == self.mark.others;
        let plugin = self.registry.get(&self.name);
        if unchanged && self.store.pending_writes_of(&self.name) == 0 {
            return true;
        }
        if let Some(end) = self.emitted_to
            && !self.output.wait_durable(end, DURABLE_WAIT)
        {
            tracing::warn!(plugin = %self.name, "checkpoint put off: the output log did not make the plugin's emits durable");
            return false;
        }
        let state = match plugin
            .as_ref()
            .filter(|p| p.preserves_state())
            .map(|p| p.save_state())
        {
            Some(Some(Ok(data))) => Some(data),
            Some(Some(Err(e))) => {
                tracing::warn!(plugin = %self.name, "checkpoint put off: state.save failed: {e}");
                return false;
            }
            _ => None,
        };
        let version = self.registry.preservation_version(&self.name);
        let mark = Mark {
            at,
            emits: self.emits,
            others: self.others,
        };
        let state = state.as_deref().map(|d| (version, d));
        match self.store.checkpoint(&self.name, mark.stored(), state) {
            Ok(()) => {
                self.mark = mark;
                self.emits = mark.emits;
                self.others = mark.others;
                self.reader.log().hold(&self.name, at);
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.stats.checkpointed.store(at.seq, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(plugin = %self.name, "cannot commit the checkpoint: {e}");
                false
            }
        }
    }

    /// Goes back to the last checkpoint for `plugin`, which replaced a terminated version:
    /// the store writes since are forgotten and the checkpoint's state restored into it.
    fn rewind(&mut self, plugin: &Plugin) {
        self.store.discard(&self.name);
        self.reader.seek(self.mark.at);
        self.emits = self.mark.emits;
        self.others = self.mark.others;
        if plugin.preserves_state() {
            match self.store.db().saved_state(&self.name) {
                Ok(Some((version, data))) if version == self.registry.preservation_version(&self.name) => {
                    if let Err(e) = plugin.restore_state(data) {
                        tracing::warn!(plugin = %self.name, "the checkpoint's state could not be restored: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(plugin = %self.name, "cannot read the checkpoint's state: {e}"),
            }
        }
        tracing::info!(plugin = %self.name, seq = self.mark.at.seq, "a replacement for the terminated plugin resumes from its last checkpoint");
    }
}

/// Heka's `heka.sandbox-terminated`, in Corral's name.
pub fn terminated_message(plugin: &str, version: &str, reason: &str) -> Message {
    Message {
        logger: "corral".into(),
        severity: 3,
        payload: reason.to_owned(),
        ..Message::new(TERMINATED_TYPE)
    }
    .with_field("plugin", Value::String(plugin.to_owned()))
    .with_field("version", Value::String(version.to_owned()))
    .with_field("reason", Value::String(reason.to_owned()))
}

/// Reads the output log and writes each message as a JSON line with its id; commits
/// its position about every `interval` (after a flush, and an fsync for a file), and
/// when stopped.
fn write_out(
    log: &Log,
    store: &CheckpointStore,
    start: Position,
    mut output: Output,
    stats: &OutputStats,
    stop: &AtomicBool,
    interval: Duration,
) {
    let mut reader = log.reader(start);
    let mut committed = start;
    let mut next_commit = Instant::now() + interval;
    let mut failed = false;
    let mut line = Vec::with_capacity(1024);
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let mut wrote = 0;
        while wrote < 4096 {
            let record = match reader.next() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(e) => {
                    let skipped = reader.skip_segment();
                    tracing::error!(
                        skipped,
                        "cannot read the output log, skipped to the next segment: {e}"
                    );
                    break;
                }
            };
            let mut cursor = Cursor(record);
            let decoded = cursor
                .str()
                .map(str::to_owned)
                .and_then(|id| Ok((id, cursor.message()?)));
            match decoded {
                Ok((id, mut message)) => {
                    message.fields.push(Field {
                        name: ID_FIELD.into(),
                        value: Value::String(id),
                    });
                    line.clear();
                    line.extend_from_slice(message.to_json().as_bytes());
                    line.push(b'\n');
                    if let Err(e) = output.writer.write_all(&line)
                        && !failed
                    {
                        failed = true;
                        tracing::error!("cannot write output: {e}");
                    }
                    wrote += 1;
                }
                Err(e) => tracing::error!("skipped an output log record: {e}"),
            }
        }
        stats.written.fetch_add(wrote, Ordering::Relaxed);
        let at = reader.position();
        stats.seq.store(at.seq, Ordering::Relaxed);
        stats.byte.store(at.byte, Ordering::Relaxed);
        if wrote > 0 || stopping {
            let _ = output.writer.flush();
        }
        if at != committed && (stopping || Instant::now() >= next_commit) {
            next_commit = Instant::now() + interval;
            let synced = output.file.as_ref().is_none_or(|f| f.sync_data().is_ok());
            if synced {
                match store.db().commit_position(OUTPUT_READER, (at.seq, at.byte, 0, 0)) {
                    Ok(()) => {
                        committed = at;
                        log.hold(OUTPUT_READER, at);
                    }
                    Err(e) => tracing::warn!("cannot commit the output's position: {e}"),
                }
            }
        }
        if stopping {
            break;
        }
        if Instant::now() >= next_commit {
            // Nothing to commit (or the commit failed): the next try is an interval
            // away, so the wait below is not zero and the writer does not spin.
            next_commit = Instant::now() + interval;
        }
        if wrote < 4096 {
            let wait = next_commit
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200));
            log.wait_for(at.seq, wait);
        }
    }
}
