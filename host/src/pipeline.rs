//! The daemon's pipeline: messages in, routed by matcher to per-plugin queues, each
//! plugin served by its own worker thread (messages and timer events), emitted messages
//! out as JSON lines.
//!
//! A slow or failing plugin never stalls the others (hindsight#78, heka#214): each
//! plugin has a bounded queue and a thread of its own, routing never blocks — a full
//! queue turns the message away, and what it turns away is counted per plugin and
//! logged, never silently lost. Workers follow the registry: one starts when a plugin
//! is loaded, stops when it is unloaded, and keeps serving across swaps (calls go by
//! name). A plugin's termination is reported as Heka did: an emitted message of type
//! `corral.plugin-terminated` with the plugin and the reason, and an error log line.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::CallError;
use crate::lock;
use crate::message::{Message, Value, now_ns};
use crate::plugin::PluginState;
use crate::registry::{Event, Registry};

/// The most messages a worker hands a plugin in one call.
pub const MAX_BATCH: usize = 64;
/// A worker stops adding messages to a batch once they hold about this many bytes: a
/// batch is copied into the plugin's memory, which its memory limit caps.
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// The message type reporting a terminated plugin.
pub const TERMINATED_TYPE: &str = "corral.plugin-terminated";

/// Counters of one plugin's queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Messages waiting.
    pub depth: AtomicU64,
    /// Messages turned away because the queue was full.
    pub rejected: AtomicU64,
    /// Messages taken from the queue and passed to the plugin.
    pub processed: AtomicU64,
    /// Calls into the plugin made with them: fewer than `processed` when messages
    /// queued up and went to a `batch-filter` plugin in batches.
    pub calls: AtomicU64,
    /// Timer events run.
    pub ticks: AtomicU64,
}

struct Worker {
    /// The plugin's queue. A message is shared by every plugin it was routed to: no copy
    /// per plugin. Dropping the sender stops the worker once it has processed what is
    /// already queued.
    tx: SyncSender<Arc<Message>>,
    stats: Arc<QueueStats>,
    thread: JoinHandle<()>,
}

/// Routes messages to plugin workers and writes what they emit.
pub struct Pipeline {
    registry: Registry,
    capacity: usize,
    workers: Mutex<HashMap<String, Worker>>,
    output: Mutex<Option<Sender<Message>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Messages that matched no plugin.
    pub unmatched: AtomicU64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts the output writer and a thread following `registry`'s events. Create the
    /// pipeline before watching a directory, so the first loads start their workers.
    pub fn start(registry: Registry, output: Box<dyn Write + Send>, capacity: usize) -> Arc<Pipeline> {
        let (tx, rx) = channel();
        let writer = std::thread::Builder::new()
            .name("corral-output".into())
            .spawn(move || write_out(rx, output))
            .expect("cannot start the output thread");
        let events = registry.subscribe();
        let pipeline = Arc::new(Pipeline {
            registry,
            capacity: capacity.max(1),
            workers: Mutex::new(HashMap::new()),
            output: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            unmatched: AtomicU64::new(0),
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
                        Event::Unloaded { name, .. } => pipeline.stop_worker(&name),
                        _ => {}
                    }
                }
            })
            .expect("cannot start the event thread");
        pipeline
    }

    /// The queue capacity of each plugin.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The queue counters of `name`, if it has a worker.
    pub fn queue(&self, name: &str) -> Option<Arc<QueueStats>> {
        lock(&self.workers).get(name).map(|w| w.stats.clone())
    }

    /// Queues `message` for every plugin whose matcher accepts it; returns how many
    /// took it. A plugin whose queue is full turns it away (counted in its
    /// [`QueueStats::rejected`]). The plugins share the one message.
    pub fn route(&self, message: impl Into<Arc<Message>>) -> usize {
        let message = message.into();
        let workers = lock(&self.workers);
        let (mut matched, mut taken) = (0, 0);
        self.registry.for_each_matching(&message, |name| {
            matched += 1;
            let Some(worker) = workers.get(name) else {
                return;
            };
            worker.stats.depth.fetch_add(1, Ordering::Relaxed);
            match worker.tx.try_send(Arc::clone(&message)) {
                Ok(()) => taken += 1,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    worker.stats.depth.fetch_sub(1, Ordering::Relaxed);
                    let rejected = worker.stats.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                    // One line per power of two keeps a flood from flooding the log.
                    if rejected.is_power_of_two() {
                        tracing::warn!(plugin = %name, rejected, capacity = self.capacity, "queue full: message turned away");
                    }
                }
            }
        });
        if matched == 0 {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    fn start_worker(&self, name: &str) {
        let mut workers = lock(&self.workers);
        if workers.contains_key(name) {
            return;
        }
        let Some(output) = lock(&self.output).clone() else {
            return;
        };
        let (tx, rx) = sync_channel(self.capacity);
        let stats = Arc::new(QueueStats::default());
        let (registry, worker_stats, worker_name) = (self.registry.clone(), stats.clone(), name.to_owned());
        let thread = std::thread::Builder::new()
            .name(format!("corral-{name}"))
            .spawn(move || work(&worker_name, &registry, &rx, &worker_stats, &output))
            .expect("cannot start a worker thread");
        workers.insert(name.to_owned(), Worker { tx, stats, thread });
    }

    fn stop_worker(&self, name: &str) {
        let worker = lock(&self.workers).remove(name);
        if let Some(Worker { tx, thread, .. }) = worker {
            // The worker stops after the messages already queued.
            drop(tx);
            let _ = thread.join();
        }
    }

    /// Stops routing, lets every worker finish the messages already queued, then
    /// flushes and closes the output. Idempotent.
    pub fn shutdown(&self) {
        let workers: Vec<Worker> = lock(&self.workers).drain().map(|(_, w)| w).collect();
        // Closing every queue first lets the workers drain theirs in parallel.
        let threads: Vec<JoinHandle<()>> = workers.into_iter().map(|w| w.thread).collect();
        for thread in threads {
            let _ = thread.join();
        }
        lock(&self.output).take();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

/// One plugin's worker: its queued messages and its timer, until stopped.
///
/// What has queued up when the worker comes for a message goes to the plugin in one
/// batch (see [`Registry::process_messages`]), up to [`MAX_BATCH`] messages and about
/// [`MAX_BATCH_BYTES`]: a plugin that keeps up gets its messages one at a time, and one
/// that falls behind gets them in fewer, cheaper calls. The worker never waits for a
/// batch to fill.
fn work(
    name: &str,
    registry: &Registry,
    rx: &Receiver<Arc<Message>>,
    stats: &QueueStats,
    output: &Sender<Message>,
) {
    let mut interval = registry.ticker_interval(name);
    let mut next_tick = interval.map(|i| Instant::now() + i);
    let mut reported: Option<(String, u64)> = None;
    let mut batch: Vec<Arc<Message>> = Vec::new();
    loop {
        // A timer that is due goes first, even when messages keep coming.
        let due = next_tick.is_some_and(|at| at <= Instant::now());
        let job = if due {
            Err(RecvTimeoutError::Timeout)
        } else {
            match next_tick {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            }
        };
        match job {
            Ok(message) => {
                let mut bytes = message.approximate_size();
                batch.push(message);
                while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                    let Ok(message) = rx.try_recv() else { break };
                    bytes += message.approximate_size();
                    batch.push(message);
                }
                let n = batch.len();
                stats.depth.fetch_sub(n as u64, Ordering::Relaxed);
                stats.processed.fetch_add(n as u64, Ordering::Relaxed);
                let result = registry.process_messages(name, &batch);
                batch.clear();
                let calls = result.as_ref().map_or(1, |outcome| outcome.calls);
                stats.calls.fetch_add(calls, Ordering::Relaxed);
                match result {
                    Ok(outcome) => {
                        let failed = !outcome.failed.is_empty();
                        deliver(name, registry, Ok(outcome.emitted), failed, output, &mut reported);
                    }
                    Err(error) => deliver(name, registry, Err(error), true, output, &mut reported),
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                stats.ticks.fetch_add(1, Ordering::Relaxed);
                next_tick = interval.map(|i| Instant::now() + i);
                let result = registry.timer_event(name, now_ns());
                let failed = result.is_err();
                deliver(
                    name,
                    registry,
                    result.map(|o| o.emitted),
                    failed,
                    output,
                    &mut reported,
                );
            }
        }
        // A swap may have brought a sidecar with another interval.
        let now_interval = registry.ticker_interval(name);
        if now_interval != interval {
            interval = now_interval;
            next_tick = interval.map(|i| Instant::now() + i);
        }
    }
}

/// Sends what a call emitted on, and reports the plugin's termination once per version
/// and termination (a restart policy may bring it back to be terminated again) when a
/// call failed.
fn deliver(
    name: &str,
    registry: &Registry,
    result: Result<Vec<Message>, CallError>,
    failed: bool,
    output: &Sender<Message>,
    reported: &mut Option<(String, u64)>,
) {
    match result {
        Ok(emitted) => {
            for message in emitted {
                let _ = output.send(message);
            }
        }
        Err(CallError::NotFound { .. }) => return,
        Err(_) => {}
    }
    if !failed {
        return;
    }
    let Some(plugin) = registry.get(name) else { return };
    let this = (plugin.version().to_owned(), plugin.stats().terminations);
    if let PluginState::Terminated { reason } = plugin.state()
        && reported.as_ref() != Some(&this)
    {
        *reported = Some(this);
        let _ = output.send(terminated_message(name, plugin.version(), &reason));
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

/// Writes messages as JSON lines, flushing whenever the channel runs dry.
fn write_out(rx: Receiver<Message>, mut out: Box<dyn Write + Send>) {
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut write = |m: Message| {
            if let Err(e) = writeln!(out, "{}", m.to_json())
                && !failed
            {
                failed = true;
                tracing::error!("cannot write output: {e}");
            }
        };
        write(first);
        for more in rx.try_iter() {
            write(more);
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}
