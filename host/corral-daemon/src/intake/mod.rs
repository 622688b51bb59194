//! Inputs: what the daemon reads for its decoders. A decoder whose sidecar has an
//! `[input]` (see [`crate::InputConfig`]) gets a thread that reads raw records — lines of
//! tailed files (`tail`), syslog datagrams (`udp`), syslog frames (`tcp`) — hands them to
//! the decoder in batches ([`Registry::decode`]) and appends what it decoded to the
//! durable input log, where filters read it.
//!
//! **Checkpoints.** About once a checkpoint interval, and when it stops, an input
//! commits its decoder's checkpoint in one transaction: the input's position (for
//! `tail`, each file's identity — device and inode — and the offset after the last line
//! whose messages are in the log), the decoder's saved state, and its store writes since
//! the last checkpoint. It commits only once the log has made what it appended durable.
//! So after a crash the input resumes where its last checkpoint says: nothing is
//! skipped, and what it read after that checkpoint is read and decoded again (repeats,
//! bounded by the checkpoint interval). Socket inputs have no position to keep: what a
//! crash caught in memory (one batch) is lost, as a datagram on the wire is.
//!
//! **Swaps.** The input calls the decoder by name, so a new version takes the next
//! batch where the old one left off; a batch the old version refused goes to the new
//! one. Nothing is read twice or lost within one run.
//!
//! **Failures.** A record the decoder fails on (non-fatal) is counted and appended as a
//! `corral.decode-failure` message holding the record, its origin and the reason; the
//! last few are also shown in `/plugins`. A batch that fails as a whole (a trap, a
//! limit) is decoded again record by record, so that only the bad record fails. A
//! terminated decoder's input waits, holding its batch, until the decoder is replaced
//! or restarted.

mod syslog;
mod tail;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointStore;
use corral::{CallError, Event, Message, RawRecord, Registry, Value, now_ns};

use crate::input::{InputConfig, InputKind};
use crate::lock;
use crate::log::{Batch, Log, Position};
use crate::settings::Routes;

/// The message type of a record a decoder failed on.
pub(crate) const DECODE_FAILURE_TYPE: &str = "corral.decode-failure";
/// The most records handed to a decoder in one call.
const MAX_RECORDS: usize = 1024;
/// A batch stops growing once its records hold about this many bytes.
const MAX_BYTES: usize = 256 << 10;
/// How many failed records `/plugins` shows per input.
const RECENT_FAILURES: usize = 8;
/// How much of a failed record `/plugins` shows.
const SHOWN_BYTES: usize = 256;
/// How long a checkpoint waits for the log to make what the input appended durable.
const DURABLE_WAIT: Duration = Duration::from_secs(10);

/// One record read, with where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub data: Vec<u8>,
    pub path: Arc<str>,
    pub offset: u64,
    pub peer: Arc<str>,
    pub received_ns: i64,
}

/// What reads records for an input.
pub(crate) trait Source: Send {
    /// Reads up to `max` records (or about `max_bytes`) into `out`; returns whether
    /// there may be more to read at once. Called only once every record it gave before
    /// was delivered.
    fn read(&mut self, out: &mut Vec<Record>, max: usize, max_bytes: usize) -> bool;
    /// Every record read so far is in the log (not yet durable).
    fn delivered(&mut self);
    /// The position to resume from: after the records delivered.
    fn position(&self) -> Vec<u8>;
    /// Waits for more to read, at most `timeout`.
    fn wait(&mut self, timeout: Duration);
    /// Files followed, for the status (none for a socket).
    fn files(&self) -> Vec<FileStatus>;
    /// Stops any thread of its own.
    fn stop(&mut self) {}
    /// Records cut to the maximum length since it was last asked.
    fn take_cut(&mut self) -> u64 {
        0
    }
}

/// A file a `tail` input follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// Its path (where it was last seen).
    pub path: String,
    /// Its device and inode: which file it is, across renames.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The offset after the last line whose messages are in the log.
    pub offset: u64,
    /// Its size when last looked at.
    pub size: u64,
    /// Whether it was rotated away (its path is another file now): it is read to its end.
    pub rotated: bool,
}

/// A record a decoder failed on, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// Where it came from: a file path or a peer address.
    pub origin: String,
    /// Its offset in the file.
    pub offset: u64,
    /// Why it failed.
    pub reason: String,
    /// Its first bytes, as text.
    pub record: String,
}

/// The counters and files of one input.
#[derive(Debug, Default)]
pub struct InputStats {
    /// `tail`, `udp` or `tcp`.
    pub kind: &'static str,
    /// The path or glob followed, or the address listened on.
    pub source: String,
    /// Records read.
    pub records: AtomicU64,
    /// Bytes read.
    pub bytes: AtomicU64,
    /// Records cut to the maximum line length.
    pub cut: AtomicU64,
    /// Records the decoder failed on.
    pub failures: AtomicU64,
    /// Messages the decoder produced and the input appended to the log.
    pub messages: AtomicU64,
    /// Checkpoints committed.
    pub checkpoints: AtomicU64,
    /// Whether it waits for its terminated decoder.
    pub waiting: AtomicBool,
    /// The files followed.
    pub files: Mutex<Vec<FileStatus>>,
    /// The last records that failed.
    pub recent: Mutex<VecDeque<FailedRecord>>,
}

struct Running {
    config: InputConfig,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    stats: Arc<InputStats>,
    thread: JoinHandle<()>,
}

/// Every decoder's input.
pub(crate) struct Intake {
    registry: Registry,
    routes: Arc<Routes>,
    /// The watch directory: a relative `tail` path is relative to it (the sidecar's).
    dir: PathBuf,
    log: Log,
    store: Arc<CheckpointStore>,
    interval: Duration,
    running: Mutex<HashMap<String, Running>>,
    /// Held while an input is started, stopped or compared with its sidecar: the first
    /// scan's [`Intake::start_all`] and the registry's events reach [`Intake::sync`]
    /// from two threads, and two syncs of a name that both found it not running started
    /// two inputs, each reading every line (not `running`: stopping joins the input's
    /// thread, and the stats are read meanwhile).
    changing: Mutex<()>,
    stopped: AtomicBool,
    started: AtomicBool,
}

impl Intake {
    /// Follows `registry`'s loads and unloads; inputs start with [`Intake::start_all`].
    pub(crate) fn start(
        registry: Registry,
        routes: Arc<Routes>,
        dir: &Path,
        log: Log,
        store: Arc<CheckpointStore>,
        interval: Duration,
    ) -> Arc<Intake> {
        let events = registry.subscribe();
        let intake = Arc::new(Intake {
            registry,
            routes,
            dir: dir.to_owned(),
            log,
            store,
            interval,
            running: Mutex::default(),
            changing: Mutex::default(),
            stopped: AtomicBool::new(false),
            started: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&intake);
        std::thread::Builder::new()
            .name("corral-intake".into())
            .spawn(move || {
                for event in events {
                    let Some(intake) = weak.upgrade() else { break };
                    if !intake.started.load(Ordering::SeqCst) {
                        continue;
                    }
                    match event {
                        Event::Loaded { name, .. } | Event::Replaced { name, .. } => intake.sync(&name),
                        Event::Unloaded { name, .. } => intake.stop_input(&name, false),
                        Event::Failed { .. } => {}
                    }
                }
            })
            .expect("cannot start the intake thread");
        intake
    }

    /// Starts the input of every decoder loaded now (after the first scan).
    pub(crate) fn start_all(&self) {
        self.started.store(true, Ordering::SeqCst);
        for name in self.registry.names() {
            self.sync(&name);
        }
    }

    /// The counters of `name`'s input, if it has one.
    pub(crate) fn stats(&self, name: &str) -> Option<Arc<InputStats>> {
        lock(&self.running).get(name).map(|r| r.stats.clone())
    }

    /// Every input's counters, by decoder.
    pub(crate) fn all_stats(&self) -> Vec<(String, Arc<InputStats>)> {
        let mut all: Vec<_> = lock(&self.running)
            .iter()
            .map(|(name, r)| (name.clone(), r.stats.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Starts, restarts or stops `name`'s input to match its sidecar now.
    fn sync(&self, name: &str) {
        let _changing = lock(&self.changing);
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let wanted = self
            .registry
            .get(name)
            .filter(|p| p.decodes())
            .and_then(|_| self.routes.settings(name))
            .and_then(|settings| settings.input.clone())
            .map(|mut input| {
                if let InputKind::Tail(tail) = &mut input.kind {
                    tail.path = self.dir.join(&tail.path);
                }
                input
            });
        let current = lock(&self.running).get(name).map(|r| r.config.clone());
        if current == wanted {
            return;
        }
        if current.is_some() {
            // Another input: the old one commits where it is, the new one starts anew.
            self.stop_running(name, true);
        }
        if let Some(config) = wanted {
            self.start_input(name, config);
        }
    }

    /// Starts `name`'s input; `changing` is held and it has none running.
    fn start_input(&self, name: &str, config: InputConfig) {
        let saved = match self.store.db().input_position(name) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(
                    plugin = name,
                    "cannot read the input's checkpoint, not starting it: {e}"
                );
                return;
            }
        };
        let mut stats = InputStats::default();
        let source: Result<Box<dyn Source>, String> = match &config.kind {
            InputKind::Tail(tail) => {
                stats.kind = "tail";
                stats.source = tail.path.display().to_string();
                Ok(Box::new(tail::Tail::new(
                    name,
                    tail.clone(),
                    config.max_line,
                    saved.as_deref(),
                )))
            }
            InputKind::Udp { address } => {
                stats.kind = "udp";
                syslog::Listener::udp(name, *address, config.max_line).map(|s| {
                    // The address bound: the port chosen, for a configured port 0.
                    stats.source = s.local().to_string();
                    Box::new(s) as Box<dyn Source>
                })
            }
            InputKind::Tcp {
                address,
                max_connections,
            } => {
                stats.kind = "tcp";
                syslog::Listener::tcp(name, *address, config.max_line, *max_connections).map(|s| {
                    stats.source = s.local().to_string();
                    Box::new(s) as Box<dyn Source>
                })
            }
        };
        let source = match source {
            Ok(source) => source,
            Err(e) => {
                tracing::error!(plugin = name, "cannot start the input: {e}");
                return;
            }
        };
        tracing::info!(plugin = name, input = stats.kind, source = %stats.source, "input started");
        let stats = Arc::new(stats);
        let stop = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let mut work = Work {
            name: name.to_owned(),
            registry: self.registry.clone(),
            routes: self.routes.clone(),
            log: self.log.clone(),
            store: self.store.clone(),
            interval: self.interval,
            stats: stats.clone(),
            stop: stop.clone(),
            leave: leave.clone(),
            source,
            first: saved.is_none(),
            appended_to: None,
            checkpointed: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("corral-input-{name}"))
            .spawn(move || work.run())
            .expect("cannot start an input thread");
        let before = lock(&self.running).insert(
            name.to_owned(),
            Running {
                config,
                stop,
                leave,
                stats,
                thread,
            },
        );
        debug_assert!(before.is_none(), "{name} had an input running already");
    }

    /// Stops `name`'s input: with its final checkpoint, or (its decoder gone) leaving
    /// its store writes since the last one.
    fn stop_input(&self, name: &str, checkpoint: bool) {
        let _changing = lock(&self.changing);
        self.stop_running(name, checkpoint);
    }

    /// [`Intake::stop_input`] with `changing` held.
    fn stop_running(&self, name: &str, checkpoint: bool) {
        let Some(running) = lock(&self.running).remove(name) else {
            return;
        };
        running.leave.store(!checkpoint, Ordering::SeqCst);
        running.stop.store(true, Ordering::SeqCst);
        let _ = running.thread.join();
        if !checkpoint {
            // Gone: what it wrote since its last checkpoint goes with the position.
            self.store.discard(name);
        }
        tracing::info!(plugin = name, "input stopped");
    }

    /// Stops every input, each with its final checkpoint. Call before the log closes.
    pub(crate) fn shutdown(&self) {
        // After a sync under way: none starts an input once this has drained them.
        let _changing = lock(&self.changing);
        self.stopped.store(true, Ordering::SeqCst);
        let all: Vec<(String, Running)> = lock(&self.running).drain().collect();
        for (_, running) in &all {
            running.stop.store(true, Ordering::SeqCst);
        }
        for (_, running) in all {
            let _ = running.thread.join();
        }
    }
}

/// One input's thread.
struct Work {
    name: String,
    registry: Registry,
    routes: Arc<Routes>,
    log: Log,
    store: Arc<CheckpointStore>,
    interval: Duration,
    stats: Arc<InputStats>,
    stop: Arc<AtomicBool>,
    leave: Arc<AtomicBool>,
    source: Box<dyn Source>,
    /// No checkpoint yet: commit one at once, so a crash does not make it new again.
    first: bool,
    /// The log's end after the last append.
    appended_to: Option<Position>,
    /// The position of the last checkpoint.
    checkpointed: Option<Vec<u8>>,
}

impl Work {
    fn run(&mut self) {
        let mut pending: Vec<Record> = Vec::new();
        let mut out = Batch::default();
        let mut next_checkpoint = Instant::now() + self.interval;
        let mut interval = self.routes.settings(&self.name).and_then(|s| s.ticker_interval);
        let mut next_tick = interval.map(|i| Instant::now() + i);
        if self.first {
            self.checkpoint();
        }
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let mut more = false;
            if pending.is_empty() {
                more = self.source.read(&mut pending, MAX_RECORDS, MAX_BYTES);
                self.stats
                    .records
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                let bytes: usize = pending.iter().map(|r| r.data.len()).sum();
                self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                self.stats
                    .cut
                    .fetch_add(self.source.take_cut(), Ordering::Relaxed);
            }
            if !pending.is_empty() {
                match self.decode(&pending, &mut out) {
                    Some(()) => {
                        self.stats.waiting.store(false, Ordering::Relaxed);
                        let stop = self.stop.clone();
                        match self.log.append(&out, &|| stop.load(Ordering::SeqCst)) {
                            Ok(end) => {
                                self.appended_to = Some(end);
                                self.source.delivered();
                                pending.clear();
                            }
                            Err(e) => {
                                tracing::warn!(plugin = %self.name, "cannot append what the input decoded; it is read again from the last checkpoint at the next start: {e}");
                                return;
                            }
                        }
                    }
                    None => {
                        // The decoder is terminated or gone: hold the batch and wait.
                        self.stats.waiting.store(true, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            if let Some(at) = next_tick
                && at <= Instant::now()
            {
                next_tick = interval.map(|i| Instant::now() + i);
                if let Ok(outcome) = self.registry.timer_event(&self.name, now_ns()) {
                    out.clear();
                    for message in &outcome.emitted {
                        out.push(|buf| crate::log::codec::encode(message, buf));
                    }
                    let stop = self.stop.clone();
                    if let Ok(end) = self.log.append(&out, &|| stop.load(Ordering::SeqCst)) {
                        self.appended_to = Some(end);
                    }
                }
            }
            if Instant::now() >= next_checkpoint {
                next_checkpoint = Instant::now() + self.interval;
                self.checkpoint();
                let now_interval = self.routes.settings(&self.name).and_then(|s| s.ticker_interval);
                if now_interval != interval {
                    interval = now_interval;
                    next_tick = interval.map(|i| Instant::now() + i);
                }
            }
            *lock(&self.stats.files) = self.source.files();
            if !more && pending.is_empty() {
                let mut until = next_checkpoint;
                if let Some(tick) = next_tick {
                    until = until.min(tick);
                }
                let wait = until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200));
                self.source.wait(wait);
            }
        }
        self.source.stop();
        if !self.leave.load(Ordering::SeqCst) {
            self.checkpoint();
        }
        *lock(&self.stats.files) = self.source.files();
    }

    /// Decodes `records` into `out` (their messages, and a failure message for each
    /// record that failed). `None` when the decoder does not take them now (terminated,
    /// unloaded): they are to be tried again.
    fn decode(&self, records: &[Record], out: &mut Batch) -> Option<()> {
        out.clear();
        let raw: Vec<RawRecord<'_>> = records
            .iter()
            .map(|r| RawRecord {
                data: &r.data,
                input: &self.name,
                path: &r.path,
                offset: r.offset,
                peer: &r.peer,
                received_ns: r.received_ns,
            })
            .collect();
        let refused = |e: &CallError| {
            matches!(
                e,
                CallError::Terminated { .. } | CallError::NotFound { .. } | CallError::Unloaded { .. }
            )
        };
        let mut failed: Vec<(usize, String)> = Vec::new();
        let mut messages = Vec::new();
        match self.registry.decode(&self.name, &raw) {
            Ok(outcome) => {
                if outcome.failed.iter().any(|(_, e)| refused(e)) {
                    return None;
                }
                messages = outcome.emitted;
                failed = outcome
                    .failed
                    .into_iter()
                    .map(|(i, e)| (i, e.to_string()))
                    .collect();
            }
            Err(e) if refused(&e) => return None,
            Err(e) if raw.len() == 1 => failed.push((0, e.to_string())),
            Err(_) => {
                // One bad record failed the batch: each on its own, so that only it fails.
                for (index, record) in raw.iter().enumerate() {
                    match self.registry.decode(&self.name, std::slice::from_ref(record)) {
                        Ok(outcome) => {
                            messages.extend(outcome.emitted);
                            failed.extend(outcome.failed.into_iter().map(|(_, e)| (index, e.to_string())));
                        }
                        // Terminated on the way (a fatal failure, too many in a row): the
                        // records from here wait for the replacement. What the decoder
                        // did before is kept.
                        Err(e) if refused(&e) && index == 0 => return None,
                        Err(e) => failed.push((index, e.to_string())),
                    }
                }
            }
        }
        for message in &messages {
            out.push(|buf| crate::log::codec::encode(message, buf));
        }
        self.stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        if !failed.is_empty() {
            self.stats
                .failures
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
            let mut recent = lock(&self.stats.recent);
            for (index, reason) in failed {
                let record = &records[index];
                let message = failure_message(&self.name, record, &reason);
                out.push(|buf| crate::log::codec::encode(&message, buf));
                let shown = &record.data[..record.data.len().min(SHOWN_BYTES)];
                if recent.len() == RECENT_FAILURES {
                    recent.pop_front();
                }
                recent.push_back(FailedRecord {
                    origin: if record.path.is_empty() {
                        record.peer.to_string()
                    } else {
                        record.path.to_string()
                    },
                    offset: record.offset,
                    reason,
                    record: String::from_utf8_lossy(shown).into_owned(),
                });
            }
        }
        Some(())
    }

    /// Commits the checkpoint: the input's position, the decoder's state and store
    /// writes, once what was appended is durable.
    fn checkpoint(&mut self) -> bool {
        let position = self.source.position();
        let plugin = self.registry.get(&self.name);
        let unchanged = self.checkpointed.as_ref() == Some(&position);
        if unchanged && self.store.pending_writes_of(&self.name) == 0 && !self.first {
            return true;
        }
        if let Some(end) = self.appended_to
            && !self.log.wait_durable(end, DURABLE_WAIT)
        {
            tracing::warn!(plugin = %self.name, "input checkpoint put off: the log did not make what it appended durable");
            return false;
        }
        let state = match plugin
            .as_ref()
            .filter(|p| p.preserves_state())
            .map(|p| p.save_state())
        {
            Some(Some(Ok(data))) => Some(data),
            Some(Some(Err(e))) => {
                tracing::warn!(plugin = %self.name, "input checkpoint put off: state.save failed: {e}");
                return false;
            }
            _ => None,
        };
        let version = self.registry.preservation_version(&self.name);
        match self
            .store
            .checkpoint_input(&self.name, &position, state.as_deref().map(|d| (version, d)))
        {
            Ok(()) => {
                self.first = false;
                self.checkpointed = Some(position);
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(plugin = %self.name, "cannot commit the input's checkpoint: {e}");
                false
            }
        }
    }
}

/// The `corral.decode-failure` message of a record the decoder `plugin` failed on.
fn failure_message(plugin: &str, record: &Record, reason: &str) -> Message {
    let mut message = Message {
        logger: plugin.to_owned(),
        severity: 4,
        timestamp: record.received_ns,
        payload: String::from_utf8_lossy(&record.data).into_owned(),
        ..Message::new(DECODE_FAILURE_TYPE)
    }
    .with_field("reason", Value::String(reason.to_owned()));
    if !record.path.is_empty() {
        message = message
            .with_field("path", Value::String(record.path.to_string()))
            .with_field("offset", Value::Int(record.offset as i64));
    }
    if !record.peer.is_empty() {
        message = message.with_field("peer", Value::String(record.peer.to_string()));
    }
    if std::str::from_utf8(&record.data).is_err() {
        message = message.with_field("record", Value::Bytes(record.data.clone()));
    }
    message
}

/// An input's part of `/plugins/NAME`.
pub(crate) fn status_json(stats: &InputStats) -> serde_json::Value {
    let files: Vec<serde_json::Value> = lock(&stats.files)
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "dev": f.dev,
                "inode": f.ino,
                "offset": f.offset,
                "size": f.size,
                "behind_bytes": f.size.saturating_sub(f.offset),
                "rotated": f.rotated,
            })
        })
        .collect();
    let recent: Vec<serde_json::Value> = lock(&stats.recent)
        .iter()
        .map(|r| {
            serde_json::json!({
                "origin": r.origin,
                "offset": r.offset,
                "reason": r.reason,
                "record": r.record,
            })
        })
        .collect();
    serde_json::json!({
        "type": stats.kind,
        "source": stats.source,
        "records": stats.records.load(Ordering::Relaxed),
        "bytes": stats.bytes.load(Ordering::Relaxed),
        "cut": stats.cut.load(Ordering::Relaxed),
        "decode_failures": stats.failures.load(Ordering::Relaxed),
        "messages": stats.messages.load(Ordering::Relaxed),
        "checkpoints": stats.checkpoints.load(Ordering::Relaxed),
        "waiting": stats.waiting.load(Ordering::Relaxed),
        "files": files,
        "recent_failures": recent,
    })
}

/// Every input's families for `/metrics`.
pub(crate) fn write_metrics(
    intake: &Intake,
    out: &mut String,
    escape: &dyn Fn(&str) -> std::borrow::Cow<'_, str>,
) {
    use std::fmt::Write as _;
    let all = intake.all_stats();
    type Pick = fn(&InputStats) -> u64;
    let counters: [(&str, &str, Pick); 6] = [
        ("input_records_total", "Records the input read.", |s| {
            s.records.load(Ordering::Relaxed)
        }),
        ("input_bytes_total", "Bytes of records the input read.", |s| {
            s.bytes.load(Ordering::Relaxed)
        }),
        ("input_cut_total", "Records cut to the input's max-line.", |s| {
            s.cut.load(Ordering::Relaxed)
        }),
        (
            "input_decode_failures_total",
            "Records the decoder failed on.",
            |s| s.failures.load(Ordering::Relaxed),
        ),
        (
            "input_messages_total",
            "Messages decoded and appended to the log.",
            |s| s.messages.load(Ordering::Relaxed),
        ),
        (
            "input_checkpoints_total",
            "Checkpoints the input committed.",
            |s| s.checkpoints.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, pick) in counters {
        let _ = writeln!(out, "# HELP corral_{name} {help}\n# TYPE corral_{name} counter");
        for (plugin, stats) in &all {
            let _ = writeln!(
                out,
                "corral_{name}{{plugin=\"{}\"}} {}",
                escape(plugin),
                pick(stats)
            );
        }
    }
    for (name, help) in [
        (
            "input_file_offset_bytes",
            "Where the input has delivered a followed file to.",
        ),
        (
            "input_file_behind_bytes",
            "Bytes of a followed file past what the input delivered.",
        ),
    ] {
        let _ = writeln!(out, "# HELP corral_{name} {help}\n# TYPE corral_{name} gauge");
        for (plugin, stats) in &all {
            for file in lock(&stats.files).iter() {
                let value = if name == "input_file_offset_bytes" {
                    file.offset
                } else {
                    file.size.saturating_sub(file.offset)
                };
                let _ = writeln!(
                    out,
                    "corral_{name}{{plugin=\"{}\",path=\"{}\"}} {value}",
                    escape(plugin),
                    escape(&file.path)
                );
            }
        }
    }
}
