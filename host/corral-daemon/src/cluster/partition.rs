//! One owned partition: its own `Host` (with an in-memory store) and `Registry` over
//! the watch directory, so every plugin has a sandbox instance, state and store per
//! partition; a durable pull consumer on `<subject-prefix>.<partition>`; a thread that
//! hands what it reads to every plugin whose matcher takes it, in order, publishes what
//! they emit, and checkpoints.
//!
//! **Cursors.** Each plugin has its own cursor in the partition, the last stream
//! sequence it took. A plugin new to the partition starts at the stream's end, or at
//! its earliest message with `start-from = "earliest"`; one with a checkpoint resumes
//! after its cursor. A terminated plugin is held: its cursor waits, the others go on,
//! and the consumer is never acked past the lowest cursor. Its replacement goes back to
//! its entry of the last checkpoint (a plugin without state checkpoints where it
//! stopped). When a running plugin is behind what the partition has read, the consumer
//! is recreated from its cursor; what is read again goes only to the plugins behind.
//!
//! **Checkpoint.** About every checkpoint interval, and at a clean stop: every publish
//! of an emitted message is awaited (the output stream has it), each plugin's state is
//! saved, and one JSON document — the last stream sequence processed, and per plugin its
//! cursor, emit counters, saved state and whole store — is written to `p<N>` in
//! `<stream>_checkpoints` by an update expecting the revision this worker read or last
//! wrote; a document over [`INLINE_MAX`] goes to the object store `<stream>_state` and
//! the KV entry names it. Only after the commit is the consumer acked, up to the lowest
//! cursor (ack policy "all"). A worker whose update fails (another daemon wrote) or
//! whose lease expired stops without a checkpoint.
//!
//! **Takeover.** A new owner reads the checkpoint, fills the partition's store with it,
//! loads the plugins, restores each one's saved state (of the same preservation
//! version) and recreates the durable consumer from the sequence after the lowest cursor:
//! nothing lost, state exact, and what it emits again carries the same `corral.id`, which
//! the output stream's duplicate window drops.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, pull};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use base64::Engine as _;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};

use super::lease::PluginInfo;
use super::{Shared, now_ms};
use crate::lock;
use crate::pipeline::{ID_FIELD, MAX_BATCH};
use crate::settings::StartFrom;
use corral::CallError;
use corral::Host;
use corral::Registry;
use corral::Watcher;
use corral::{Field, Message, Value, now_ns};
use corral::{KvStore, MemoryStore};
use corral::{Plugin, PluginState};

/// The field naming the partition of an emitted message.
pub const PARTITION_FIELD: &str = "corral.partition";
/// The largest checkpoint kept in the KV entry itself; larger ones go to the object store.
pub const INLINE_MAX: usize = 256 << 10;
/// Publishes awaited at once, at the latest.
const MAX_UNACKED: usize = 2000;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A partition's checkpoint.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The last stream sequence processed.
    pub seq: u64,
    /// Per plugin.
    pub plugins: BTreeMap<String, PluginCheckpoint>,
    /// The daemon that wrote it, and when.
    pub by: String,
    pub at_ms: u64,
    /// When the document is in the object store: its object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct PluginCheckpoint {
    /// The last stream sequence the plugin took; absent in a checkpoint written before
    /// per-plugin cursors (the partition's `seq` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub emits: u64,
    pub others: u64,
    /// (preservation version, base64 of the saved state)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<(u64, String)>,
    /// key → base64 of the value
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub store: BTreeMap<String, String>,
}

/// Counters of one partition.
#[derive(Debug, Default)]
pub(crate) struct PartitionStats {
    pub seq: AtomicU64,
    pub checkpointed: AtomicU64,
    pub checkpoints: AtomicU64,
    pub lag: AtomicU64,
    pub processed: AtomicU64,
    pub skipped: AtomicU64,
    pub ready: AtomicBool,
    /// Per plugin: messages processed and emitted, its cursor, whether it waits.
    pub per_plugin: Mutex<BTreeMap<String, PluginStats>>,
}

/// One plugin in one partition.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PluginStats {
    pub processed: u64,
    pub emitted: u64,
    /// The last stream sequence it took.
    pub seq: u64,
    /// Terminated: its cursor waits for a replacement.
    pub waiting: bool,
}

/// How the lease loop steers a worker.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub stop: AtomicBool,
    pub abandon: AtomicBool,
    pub until_ms: AtomicU64,
}

/// A partition's registry and its watcher, once loaded.
type Slot = Mutex<Option<(Registry, Arc<Watcher>)>>;

/// A running partition.
#[derive(Debug)]
pub(crate) struct Worker {
    pub partition: u32,
    pub control: Arc<Control>,
    pub stats: Arc<PartitionStats>,
    registry: Arc<Slot>,
    thread: Option<JoinHandle<bool>>,
}

impl Worker {
    pub(crate) fn start(shared: Arc<Shared>, partition: u32, until_ms: u64) -> Result<Worker, String> {
        let control = Arc::new(Control {
            until_ms: AtomicU64::new(until_ms),
            ..Control::default()
        });
        let stats = Arc::new(PartitionStats::default());
        let registry = Arc::new(Mutex::new(None));
        let thread = {
            let (control, stats, registry) = (control.clone(), stats.clone(), registry.clone());
            std::thread::Builder::new()
                .name(format!("corral-p{partition}"))
                .spawn(
                    move || match run(&shared, partition, &control, &stats, &registry) {
                        Ok(clean) => clean,
                        Err(e) => {
                            tracing::error!(partition, "the partition stopped: {e}");
                            false
                        }
                    },
                )
                .map_err(|e| e.to_string())?
        };
        Ok(Worker {
            partition,
            control,
            stats,
            registry,
            thread: Some(thread),
        })
    }

    /// Its plugins and their versions.
    pub(crate) fn plugins(&self) -> Vec<(String, PluginInfo)> {
        lock(&self.registry)
            .as_ref()
            .map_or_else(Vec::new, |(r, _)| plugin_infos(r))
    }

    /// The registry, once loaded.
    pub(crate) fn registry(&self) -> Option<Registry> {
        lock(&self.registry).as_ref().map(|(r, _)| r.clone())
    }

    /// The watcher of its registry, once loaded.
    pub(crate) fn watcher(&self) -> Option<Arc<Watcher>> {
        lock(&self.registry).as_ref().map(|(_, w)| w.clone())
    }

    /// Stops with a checkpoint; returns whether it committed.
    pub(crate) fn stop(mut self) -> bool {
        self.control.stop.store(true, Ordering::SeqCst);
        self.thread.take().is_some_and(|t| t.join().unwrap_or(false))
    }

    /// Stops without a checkpoint, without waiting.
    pub(crate) fn abandon(mut self) {
        self.control.abandon.store(true, Ordering::SeqCst);
        drop(self.thread.take());
    }
}

pub(crate) fn plugin_infos(registry: &Registry) -> Vec<(String, PluginInfo)> {
    registry
        .statuses()
        .into_iter()
        .map(|s| {
            (
                s.name,
                PluginInfo {
                    version: s.plugin.as_ref().map(|p| p.version().to_owned()),
                    load_error: s.load_error,
                },
            )
        })
        .collect()
}

fn host(shared: &Shared, store: Arc<dyn KvStore>) -> Result<Host, String> {
    let daemon = &shared.daemon;
    let mut host = Host::builder()
        .store(store)
        .cache_dir(daemon.data_dir.join("cache"))
        .baseline(false)
        .compile_limits(daemon.compile_limits.clone())
        .protect_dir(&daemon.data_dir)
        .allow_broad_grants(daemon.allow_broad_grants);
    if let Some(worker) = daemon.compile_worker.clone() {
        host = host.compile_worker(worker);
    }
    host.build().map_err(|e| e.to_string())
}

/// The daemon's own registry over the watch directory, serving no partition: it fills
/// the compile cache before partitions start and tells `corral status` the plugins of a
/// daemon that owns none.
pub(crate) fn template(shared: &Shared) -> Result<(Registry, Arc<Watcher>), String> {
    let registry = Registry::new(host(shared, Arc::new(MemoryStore::new()))?);
    let watcher = registry
        .watch_with(&shared.daemon.dir, watch_options(shared))
        .map_err(|e| e.to_string())?;
    Ok((registry, Arc::new(watcher)))
}

/// The daemon's watch options, with its own sidecar keys (matcher, ticker) welcome.
fn watch_options(shared: &Shared) -> corral::WatchOptions {
    corral::WatchOptions {
        sections: Some(Arc::new(crate::settings::DaemonSections)),
        ..shared.daemon.watch.clone()
    }
}

fn key(partition: u32) -> String {
    format!("p{partition}")
}

async fn read_checkpoint(shared: &Shared, partition: u32) -> Result<(u64, Checkpoint), String> {
    let entry = shared
        .checkpoints
        .entry(key(partition))
        .await
        .map_err(|e| format!("cannot read the checkpoint: {e}"))?;
    let Some(entry) = entry else {
        return Ok((0, Checkpoint::default()));
    };
    let mut checkpoint: Checkpoint =
        serde_json::from_slice(&entry.value).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    if let Some(object) = checkpoint.object.clone() {
        let mut data = Vec::new();
        let mut reader = shared
            .state
            .get(&object)
            .await
            .map_err(|e| format!("cannot read the checkpoint's object `{object}`: {e}"))?;
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut data)
            .await
            .map_err(|e| format!("cannot read the checkpoint's object `{object}`: {e}"))?;
        checkpoint = serde_json::from_slice(&data).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    }
    Ok((entry.revision, checkpoint))
}

async fn write_checkpoint(
    shared: &Shared,
    partition: u32,
    revision: u64,
    checkpoint: &Checkpoint,
    previous_object: Option<&str>,
) -> Result<(u64, Option<String>), String> {
    let data = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
    let (value, object) = if data.len() > INLINE_MAX {
        let name = format!("p{partition}-{}", checkpoint.seq);
        shared
            .state
            .put(name.as_str(), &mut data.as_slice())
            .await
            .map_err(|e| format!("cannot put the checkpoint object: {e}"))?;
        let pointer = Checkpoint {
            seq: checkpoint.seq,
            by: checkpoint.by.clone(),
            at_ms: checkpoint.at_ms,
            object: Some(name.clone()),
            plugins: BTreeMap::new(),
        };
        (
            serde_json::to_vec(&pointer).map_err(|e| e.to_string())?,
            Some(name),
        )
    } else {
        (data, None)
    };
    let result = if revision == 0 {
        shared
            .checkpoints
            .create(key(partition), value.into())
            .await
            .map_err(|e| e.to_string())
    } else {
        shared
            .checkpoints
            .update(key(partition), value.into(), revision)
            .await
            .map_err(|e| e.to_string())
    };
    let revision = result.map_err(|e| format!("cannot commit the checkpoint (taken over?): {e}"))?;
    if let Some(old) = previous_object
        && object.as_deref() != Some(old)
    {
        let _ = shared.state.delete(old).await;
    }
    Ok((revision, object))
}

struct State {
    emits: HashMap<String, (u64, u64)>,
    unacked: Vec<PublishAckFuture>,
    revision: u64,
    object: Option<String>,
    /// The highest stream sequence the partition has read.
    seq: u64,
    checkpointed: u64,
    /// Something changed since the last commit.
    dirty: bool,
    /// Per plugin serving: the last stream sequence it has taken (processed, or passed
    /// because its matcher did not take it).
    cursors: HashMap<String, u64>,
    /// Per plugin: its entry of the last committed checkpoint, what the replacement of
    /// a terminated version resumes from.
    committed: BTreeMap<String, PluginCheckpoint>,
    /// Plugins whose cursor waits: the terminated version each waits to be replaced.
    held: HashMap<String, Arc<Plugin>>,
    /// The newest message read that no plugin's cursor is below: the consumer is acked
    /// up to it after the next commit.
    ack: Option<async_nats::jetstream::Message>,
}

impl State {
    /// The lowest cursor of the plugins serving, held ones included: the consumer is
    /// never acked past it.
    fn floor(&self) -> u64 {
        self.cursors.values().copied().min().unwrap_or(self.seq)
    }
}

/// The last sequence the input stream holds.
async fn stream_end(shared: &Shared) -> Result<u64, String> {
    shared
        .js
        .get_stream(&shared.config.stream)
        .await
        .map(|s| s.cached_info().state.last_sequence)
        .map_err(|e| format!("cannot read the stream: {e}"))
}

/// (Re)creates the partition's durable consumer to deliver from the sequence after
/// `after`.
async fn open_consumer(shared: &Shared, partition: u32, after: u64) -> Result<pull::Stream, String> {
    let consumer_name = format!("{}_p{partition}", shared.config.stream);
    let stream = shared
        .js
        .get_stream(&shared.config.stream)
        .await
        .map_err(|e| format!("cannot open the stream: {e}"))?;
    let _ = stream.delete_consumer(&consumer_name).await;
    let deliver_policy = if after == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        }
    };
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(consumer_name.clone()),
            filter_subject: format!("{}.{partition}", shared.config.subject_prefix),
            deliver_policy,
            ack_policy: consumer::AckPolicy::All,
            ack_wait: Duration::from_secs(300),
            max_ack_pending: 1_000_000,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the consumer `{consumer_name}`: {e}"))?;
    consumer
        .stream()
        .max_messages_per_batch(512)
        .messages()
        .await
        .map_err(|e| format!("cannot read the consumer `{consumer_name}`: {e}"))
}

fn run(
    shared: &Arc<Shared>,
    partition: u32,
    control: &Control,
    stats: &PartitionStats,
    slot: &Slot,
) -> Result<bool, String> {
    let rt = shared.rt.clone();
    // The client's streams spawn tasks when dropped: this thread's drops need the runtime.
    let _entered = rt.enter();
    let (revision, mut checkpoint) = rt.block_on(read_checkpoint(shared, partition))?;
    let store = Arc::new(MemoryStore::new());
    for (name, plugin) in &mut checkpoint.plugins {
        // A checkpoint written before per-plugin cursors: the partition's sequence.
        plugin.seq.get_or_insert(checkpoint.seq);
        for (k, v) in &plugin.store {
            let value = b64()
                .decode(v)
                .map_err(|e| format!("checkpoint store of `{name}`: {e}"))?;
            store.set(name, k, &value).map_err(|e| e.to_string())?;
        }
    }
    let registry = Registry::new(host(shared, store.clone())?);
    // The daemon's per-plugin settings (matcher, ticker, start-from) beside this
    // partition's names.
    let routes = crate::settings::Routes::new(registry.clone());
    let watcher = Arc::new(
        registry
            .watch_with(&shared.daemon.dir, watch_options(shared))
            .map_err(|e| e.to_string())?,
    );
    for name in registry.names() {
        let (Some(plugin), Some((version, data))) = (
            registry.get(&name),
            checkpoint.plugins.get(&name).and_then(|p| p.state.clone()),
        ) else {
            continue;
        };
        if version != registry.preservation_version(&name) || !plugin.preserves_state() {
            tracing::info!(plugin = %name, partition, "checkpoint state of another preservation version discarded");
            continue;
        }
        let data = b64()
            .decode(data)
            .map_err(|e| format!("checkpoint state of `{name}`: {e}"))?;
        if let Err(e) = plugin.restore_state(data) {
            tracing::warn!(plugin = %name, partition, "state restore failed, starting empty: {e}");
        }
    }
    *lock(slot) = Some((registry.clone(), watcher.clone()));
    let mut state = State {
        emits: checkpoint
            .plugins
            .iter()
            .map(|(n, p)| (n.clone(), (p.emits, p.others)))
            .collect(),
        unacked: Vec::new(),
        revision,
        object: checkpoint.object.clone(),
        seq: checkpoint.seq,
        checkpointed: checkpoint.seq,
        dirty: false,
        cursors: HashMap::new(),
        committed: checkpoint.plugins.clone(),
        held: HashMap::new(),
        ack: None,
    };
    // Every plugin's cursor: its checkpoint's, or where `start-from` puts a new one.
    follow(shared, partition, &registry, &routes, &store, &mut state)?;
    if state.cursors.is_empty() && revision == 0 {
        // No plugin yet: a partition new to the cluster begins at the stream's end.
        state.seq = rt.block_on(stream_end(shared))?;
    }
    let from = state.floor();
    state.seq = state.seq.max(from);
    let mut messages = rt.block_on(open_consumer(shared, partition, from))?;
    // Where new plugins start is part of the checkpoint at once: a takeover before the
    // first interval does not move them to a later end.
    if state.dirty && !commit(shared, partition, &registry, &store, &mut state, stats) {
        return Ok(false);
    }
    tracing::info!(
        partition,
        seq = checkpoint.seq,
        from,
        "partition resumes after its checkpoint"
    );
    stats.seq.store(state.seq, Ordering::Relaxed);
    stats.checkpointed.store(state.checkpointed, Ordering::Relaxed);
    publish_cursors(&state, stats);
    stats.ready.store(true, Ordering::SeqCst);
    let interval = shared.daemon.pipeline.checkpoint_interval;
    let mut next_checkpoint = Instant::now() + interval;
    let mut ticks: HashMap<String, Instant> = HashMap::new();
    loop {
        if control.abandon.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if now_ms() > control.until_ms.load(Ordering::SeqCst) {
            tracing::warn!(
                partition,
                "the lease expired without a renewal: stopping without a checkpoint"
            );
            return Ok(false);
        }
        if control.stop.load(Ordering::SeqCst) {
            return Ok(commit(shared, partition, &registry, &store, &mut state, stats));
        }
        // New plugins, terminated ones, replacements: a plugin serving behind the
        // others (a replacement, a new one reading history) has the consumer rewound.
        if let Some(behind) = follow(shared, partition, &registry, &routes, &store, &mut state)? {
            tracing::info!(
                partition,
                from = behind + 1,
                "rewinding the consumer for a plugin behind"
            );
            state.ack = None;
            messages = rt.block_on(open_consumer(shared, partition, behind))?;
        }
        let batch = rt.block_on(async {
            let mut out = Vec::new();
            match tokio::time::timeout(Duration::from_millis(100), messages.next()).await {
                Ok(Some(Ok(m))) => out.push(m),
                Ok(Some(Err(e))) => tracing::debug!(partition, "consumer: {e}"),
                Ok(None) | Err(_) => {}
            }
            while !out.is_empty() && out.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => out.push(m),
                    _ => break,
                }
            }
            out
        });
        if !batch.is_empty() {
            process(shared, partition, &registry, &routes, &mut state, stats, batch);
        }
        for name in registry.names() {
            if state.held.contains_key(&name) {
                continue;
            }
            let Some(every) = routes.settings(&name).and_then(|s| s.ticker_interval) else {
                continue;
            };
            let next = ticks
                .entry(name.clone())
                .or_insert_with(|| Instant::now() + every);
            if *next <= Instant::now() {
                *next = Instant::now() + every;
                if let Ok(outcome) = registry.timer_event(&name, now_ns()) {
                    publish(shared, partition, &name, outcome.emitted, true, &mut state);
                }
            }
        }
        publish_cursors(&state, stats);
        if state.unacked.len() >= MAX_UNACKED && !settle(shared, &mut state) {
            return Ok(false);
        }
        if Instant::now() >= next_checkpoint {
            next_checkpoint = Instant::now() + interval;
            if !commit(shared, partition, &registry, &store, &mut state, stats) {
                return Ok(false);
            }
        }
    }
}

/// Tells the admin API where each plugin's cursor is and whether it waits.
fn publish_cursors(state: &State, stats: &PartitionStats) {
    let mut per = lock(&stats.per_plugin);
    per.retain(|name, _| state.cursors.contains_key(name));
    for (name, cursor) in &state.cursors {
        let entry = per.entry(name.clone()).or_default();
        entry.seq = *cursor;
        entry.waiting = state.held.contains_key(name);
    }
}

/// Brings the cursors in line with the plugins serving: a new plugin starts where its
/// `start-from` says; a terminated one is held (its cursor waits, and the consumer is
/// not acked past it); a replacement of a held one goes back to its last checkpoint.
/// Returns the sequence to rewind the consumer to when a running plugin is behind what
/// the partition has read.
fn follow(
    shared: &Shared,
    partition: u32,
    registry: &Registry,
    routes: &crate::settings::Routes,
    store: &MemoryStore,
    state: &mut State,
) -> Result<Option<u64>, String> {
    let names = registry.names();
    state.cursors.retain(|name, _| names.contains(name));
    state.held.retain(|name, _| names.contains(name));
    let mut end = None;
    for name in &names {
        let plugin = registry.get(name);
        if !state.cursors.contains_key(name) {
            let from = match state.committed.get(name).and_then(|p| p.seq) {
                Some(seq) => seq,
                None => match routes.settings(name).map(|s| s.start_from).unwrap_or_default() {
                    StartFrom::Earliest => 0,
                    StartFrom::End => match end {
                        Some(end) => end,
                        None => *end.insert(shared.rt.block_on(stream_end(shared))?),
                    },
                },
            };
            tracing::info!(plugin = %name, partition, after = from, "a plugin new to the partition");
            state.cursors.insert(name.clone(), from);
            state.committed.entry(name.clone()).or_insert(PluginCheckpoint {
                seq: Some(from),
                ..PluginCheckpoint::default()
            });
            state.dirty = true;
        }
        let Some(plugin) = plugin else { continue };
        let replaced = state
            .held
            .get(name)
            .map(|old| !Arc::ptr_eq(old, &plugin) || plugin.state() == PluginState::Running);
        if replaced == Some(true) {
            state.held.remove(name);
            resume(partition, registry, store, state, name, &plugin)?;
        } else if replaced.is_none()
            && let PluginState::Terminated { reason } = plugin.state()
        {
            tracing::error!(plugin = %name, partition, "plugin terminated, its messages wait for a replacement: {reason}");
            let report = crate::pipeline::terminated_message(name, plugin.version(), &reason);
            publish(shared, partition, name, vec![report], true, state);
            if !plugin.preserves_state() {
                // It checkpoints where it stopped: its replacement goes on from there.
                let (emits, others) = state.emits.get(name).copied().unwrap_or_default();
                state.committed.insert(
                    name.clone(),
                    PluginCheckpoint {
                        seq: state.cursors.get(name).copied(),
                        emits,
                        others,
                        state: None,
                        store: store_of(store, name),
                    },
                );
            } else if let Some(seq) = state.committed.get(name).and_then(|p| p.seq) {
                // It cannot save its state any more: its replacement replays from its
                // last checkpoint, with that checkpoint's state.
                state.cursors.insert(name.clone(), seq);
            }
            state.held.insert(name.clone(), plugin.clone());
            state.dirty = true;
        }
    }
    // Only a plugin that can take messages now: one that failed to load waits, and is
    // behind once it loads.
    let behind = state
        .cursors
        .iter()
        .filter(|(name, _)| {
            !state.held.contains_key(*name)
                && registry
                    .get(name)
                    .is_some_and(|p| p.state() == PluginState::Running)
        })
        .map(|(_, seq)| *seq)
        .min();
    Ok(behind.filter(|&seq| seq < state.seq))
}

/// `plugin` replaced a held version of `name`: back to `name`'s last checkpoint, its
/// store, emit counters and state.
fn resume(
    partition: u32,
    registry: &Registry,
    store: &MemoryStore,
    state: &mut State,
    name: &str,
    plugin: &Plugin,
) -> Result<(), String> {
    let entry = state.committed.get(name).cloned().unwrap_or_default();
    for key in store.list_keys(name, "").map_err(|e| e.to_string())? {
        store.delete(name, &key).map_err(|e| e.to_string())?;
    }
    for (key, value) in &entry.store {
        let value = b64()
            .decode(value)
            .map_err(|e| format!("checkpoint store of `{name}`: {e}"))?;
        store.set(name, key, &value).map_err(|e| e.to_string())?;
    }
    state.emits.insert(name.to_owned(), (entry.emits, entry.others));
    let seq = entry.seq.unwrap_or(state.checkpointed);
    state.cursors.insert(name.to_owned(), seq);
    if plugin.preserves_state()
        && let Some((version, data)) = &entry.state
        && *version == registry.preservation_version(name)
    {
        let data = b64()
            .decode(data)
            .map_err(|e| format!("checkpoint state of `{name}`: {e}"))?;
        if let Err(e) = plugin.restore_state(data) {
            tracing::warn!(plugin = %name, partition, "the checkpoint's state could not be restored: {e}");
        }
    }
    state.dirty = true;
    tracing::info!(plugin = %name, partition, seq, "a replacement for the terminated plugin resumes from its last checkpoint");
    Ok(())
}

fn store_of(store: &MemoryStore, name: &str) -> BTreeMap<String, String> {
    let mut kept = BTreeMap::new();
    for k in store.list_keys(name, "").unwrap_or_default() {
        if let Ok(Some(v)) = store.get(name, &k) {
            kept.insert(k, b64().encode(v));
        }
    }
    kept
}

fn process(
    shared: &Shared,
    partition: u32,
    registry: &Registry,
    routes: &crate::settings::Routes,
    state: &mut State,
    stats: &PartitionStats,
    batch: Vec<async_nats::jetstream::Message>,
) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut last = 0;
    for message in &batch {
        let Ok(info) = message.info() else { continue };
        let seq = info.stream_sequence;
        stats.lag.store(info.pending, Ordering::Relaxed);
        last = last.max(seq);
        match std::str::from_utf8(&message.payload)
            .map_err(|e| e.to_string())
            .and_then(|t| Message::from_json(t).map_err(|e| e.to_string()))
        {
            Ok(m) => decoded.push((seq, m)),
            Err(e) => {
                if seq > state.seq {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        partition,
                        seq,
                        "skipped a stream message that is not a message: {e}"
                    );
                }
            }
        }
    }
    let new = decoded.iter().filter(|(seq, _)| *seq > state.seq).count();
    state.seq = state.seq.max(last);
    state.dirty = true;
    stats.seq.store(state.seq, Ordering::Relaxed);
    stats.processed.fetch_add(new as u64, Ordering::Relaxed);
    for name in registry.names() {
        if state.held.contains_key(&name) {
            continue;
        }
        let Some(&cursor) = state.cursors.get(&name) else {
            continue;
        };
        if registry.get(&name).is_none() {
            // Failed to load: its cursor waits for a version that loads.
            continue;
        }
        let matcher = routes.settings(&name).and_then(|s| s.matcher.clone());
        let taken: Vec<(u64, &Message)> = decoded
            .iter()
            .filter(|(seq, m)| *seq > cursor && matcher.as_ref().is_some_and(|x| x.matches(m)))
            .map(|(seq, m)| (*seq, m))
            .collect();
        let mut next = cursor.max(last);
        if !taken.is_empty() {
            let messages: Vec<&Message> = taken.iter().map(|(_, m)| *m).collect();
            // Messages a terminated or unloaded plugin refused were not taken: its cursor
            // stays before the first of them, for its replacement.
            let refused = |e: &CallError| {
                matches!(
                    e,
                    CallError::Terminated { .. } | CallError::NotFound { .. } | CallError::Unloaded { .. }
                )
            };
            let (count, emitted) = match registry.process_messages(&name, &messages) {
                Ok(outcome) => {
                    let first = outcome.failed.iter().find(|(_, e)| refused(e)).map(|(i, _)| *i);
                    (first.unwrap_or(messages.len()), outcome.emitted)
                }
                Err(e) if refused(&e) => (0, Vec::new()),
                Err(e) => {
                    tracing::debug!(plugin = %name, partition, "call failed: {e}");
                    (messages.len(), Vec::new())
                }
            };
            if count < taken.len() {
                next = taken[count].0 - 1;
            }
            let emits = emitted.len() as u64;
            publish(shared, partition, &name, emitted, false, state);
            let mut per = lock(&stats.per_plugin);
            let entry = per.entry(name.clone()).or_default();
            entry.processed += count as u64;
            entry.emitted += emits;
        }
        state.cursors.insert(name, next);
    }
    let floor = state.floor();
    for message in batch {
        if message.info().is_ok_and(|i| i.stream_sequence <= floor) {
            state.ack = Some(message);
        }
    }
}

fn publish(
    shared: &Shared,
    partition: u32,
    plugin: &str,
    emitted: Vec<Message>,
    other: bool,
    state: &mut State,
) {
    if emitted.is_empty() {
        return;
    }
    let subject = format!("{}.{plugin}", shared.config.output_prefix);
    let counters = state.emits.entry(plugin.to_owned()).or_default();
    let mut sends = Vec::with_capacity(emitted.len());
    for mut message in emitted {
        let id = if other {
            counters.1 += 1;
            format!("{plugin}/p{partition}/t{}", counters.1 - 1)
        } else {
            counters.0 += 1;
            format!("{plugin}/p{partition}/{}", counters.0 - 1)
        };
        message.fields.push(Field {
            name: ID_FIELD.into(),
            value: Value::String(id.clone()),
        });
        message.fields.push(Field {
            name: PARTITION_FIELD.into(),
            value: Value::Int(i64::from(partition)),
        });
        sends.push((id, message.to_json()));
    }
    let futures = shared.rt.block_on(async {
        let mut out = Vec::with_capacity(sends.len());
        for (id, json) in sends {
            match shared
                .js
                .send_publish(
                    subject.clone(),
                    PublishMessage::build().payload(json.into()).message_id(id),
                )
                .await
            {
                Ok(future) => out.push(future),
                Err(e) => tracing::warn!(plugin, partition, "cannot publish an emitted message: {e}"),
            }
        }
        out
    });
    state.unacked.extend(futures);
}

/// Awaits every publish; `false` if one failed (the worker then stops without a
/// checkpoint, and the next owner emits again from the last one).
fn settle(shared: &Shared, state: &mut State) -> bool {
    let pending = std::mem::take(&mut state.unacked);
    let results = shared.rt.block_on(futures_util::future::join_all(
        pending.into_iter().map(std::future::IntoFuture::into_future),
    ));
    let mut ok = true;
    for result in results {
        match result {
            Ok(ack) => {
                shared.stats.published.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    shared.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                if ok {
                    tracing::error!("the output stream did not take an emitted message: {e}");
                }
                ok = false;
            }
        }
    }
    ok
}

/// Commits the partition's checkpoint, then acks the consumer up to the lowest cursor.
fn commit(
    shared: &Shared,
    partition: u32,
    registry: &Registry,
    store: &MemoryStore,
    state: &mut State,
    stats: &PartitionStats,
) -> bool {
    if !settle(shared, state) {
        return false;
    }
    if !state.dirty {
        return true;
    }
    let mut checkpoint = Checkpoint {
        seq: state.seq,
        by: shared.config.id.clone(),
        at_ms: now_ms(),
        // Plugins held or gone keep their last entry.
        plugins: state.committed.clone(),
        object: None,
    };
    for name in registry.names() {
        if state.held.contains_key(&name) {
            continue;
        }
        let Some(&seq) = state.cursors.get(&name) else {
            continue;
        };
        let (emits, others) = state.emits.get(&name).copied().unwrap_or_default();
        let saved = match registry
            .get(&name)
            .filter(|p| p.preserves_state())
            .map(|p| p.save_state())
        {
            Some(Some(Ok(data))) => Some((registry.preservation_version(&name), b64().encode(data))),
            Some(Some(Err(e))) => {
                tracing::warn!(plugin = %name, partition, "checkpoint put off: state.save failed: {e}");
                return true;
            }
            _ => None,
        };
        checkpoint.plugins.insert(
            name.clone(),
            PluginCheckpoint {
                seq: Some(seq),
                emits,
                others,
                state: saved,
                store: store_of(store, &name),
            },
        );
    }
    let written = shared.rt.block_on(write_checkpoint(
        shared,
        partition,
        state.revision,
        &checkpoint,
        state.object.as_deref(),
    ));
    match written {
        Ok((revision, object)) => {
            state.revision = revision;
            state.object = object;
            state.checkpointed = state.seq;
            state.committed = checkpoint.plugins;
            state.dirty = false;
            stats.checkpointed.store(state.seq, Ordering::Relaxed);
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            if let Some(last) = state.ack.take() {
                let acked = shared.rt.block_on(last.ack());
                if let Err(e) = acked {
                    tracing::warn!(partition, "cannot ack the consumer: {e}");
                }
            }
            true
        }
        Err(e) => {
            tracing::error!(partition, "{e}: stopping the partition");
            false
        }
    }
}
