//! One owned partition: its own `Host` (with an in-memory store) and `Registry` over
//! the watch directory, so every plugin has a sandbox instance, state and store per
//! partition; a durable pull consumer on `<subject-prefix>.<partition>`; a thread that
//! hands what it reads to every plugin whose matcher takes it, in order, publishes what
//! they emit, and checkpoints.
//!
//! **Checkpoint.** About every checkpoint interval, and at a clean stop: every publish
//! of an emitted message is awaited (the output stream has it), each plugin's state is
//! saved, and one JSON document — the last stream sequence processed, and per plugin its
//! emit counters, saved state and whole store — is written to `p<N>` in
//! `<stream>_checkpoints` by an update expecting the revision this worker read or last
//! wrote; a document over [`INLINE_MAX`] goes to the object store `<stream>_state` and
//! the KV entry names it. Only after the commit is the consumer acked up to that
//! sequence (ack policy "all"). A worker whose update fails (another daemon wrote) or
//! whose lease expired stops without a checkpoint.
//!
//! **Takeover.** A new owner reads the checkpoint, fills the partition's store with it,
//! loads the plugins, restores each one's saved state (of the same preservation
//! version) and recreates the durable consumer from the sequence after the checkpoint's:
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
use corral::Host;
use corral::Registry;
use corral::Watcher;
use corral::{Field, Message, Value, now_ns};
use corral::{KvStore, MemoryStore};

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
    /// Per plugin: messages processed and emitted.
    pub per_plugin: Mutex<BTreeMap<String, (u64, u64)>>,
}

/// How the lease loop steers a worker.
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub stop: AtomicBool,
    pub abandon: AtomicBool,
    pub until_ms: AtomicU64,
}

/// A running partition.
#[derive(Debug)]
pub(crate) struct Worker {
    pub partition: u32,
    pub control: Arc<Control>,
    pub stats: Arc<PartitionStats>,
    registry: Arc<Mutex<Option<Registry>>>,
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
        lock(&self.registry).as_ref().map_or_else(Vec::new, plugin_infos)
    }

    /// The registry, once loaded.
    pub(crate) fn registry(&self) -> Option<Registry> {
        lock(&self.registry).clone()
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
pub(crate) fn template(shared: &Shared) -> Result<(Registry, Watcher), String> {
    let registry = Registry::new(host(shared, Arc::new(MemoryStore::new()))?);
    let watcher = registry
        .watch_with(&shared.daemon.dir, watch_options(shared))
        .map_err(|e| e.to_string())?;
    Ok((registry, watcher))
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
    seq: u64,
    checkpointed: u64,
    last: Option<async_nats::jetstream::Message>,
}

fn run(
    shared: &Arc<Shared>,
    partition: u32,
    control: &Control,
    stats: &PartitionStats,
    slot: &Mutex<Option<Registry>>,
) -> Result<bool, String> {
    let rt = shared.rt.clone();
    // The client's streams spawn tasks when dropped: this thread's drops need the runtime.
    let _entered = rt.enter();
    let (revision, checkpoint) = rt.block_on(read_checkpoint(shared, partition))?;
    let store = Arc::new(MemoryStore::new());
    for (name, plugin) in &checkpoint.plugins {
        for (k, v) in &plugin.store {
            let value = b64()
                .decode(v)
                .map_err(|e| format!("checkpoint store of `{name}`: {e}"))?;
            store.set(name, k, &value).map_err(|e| e.to_string())?;
        }
    }
    let registry = Registry::new(host(shared, store.clone())?);
    // The daemon's per-plugin settings (matcher, ticker) beside this partition's names.
    let routes = crate::settings::Routes::new(registry.clone());
    let _watcher = registry
        .watch_with(&shared.daemon.dir, watch_options(shared))
        .map_err(|e| e.to_string())?;
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
    *lock(slot) = Some(registry.clone());
    let consumer_name = format!("{}_p{partition}", shared.config.stream);
    let consumer = rt.block_on(async {
        let stream = shared
            .js
            .get_stream(&shared.config.stream)
            .await
            .map_err(|e| format!("cannot open the stream: {e}"))?;
        let _ = stream.delete_consumer(&consumer_name).await;
        let deliver_policy = if checkpoint.seq == 0 {
            consumer::DeliverPolicy::All
        } else {
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: checkpoint.seq + 1,
            }
        };
        stream
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
            .map_err(|e| format!("cannot create the consumer `{consumer_name}`: {e}"))
    })?;
    let mut messages = rt.block_on(async {
        consumer
            .stream()
            .max_messages_per_batch(512)
            .messages()
            .await
            .map_err(|e| format!("cannot read the consumer: {e}"))
    })?;
    tracing::info!(
        partition,
        seq = checkpoint.seq,
        "partition resumes after its checkpoint"
    );
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
        last: None,
    };
    stats.seq.store(state.seq, Ordering::Relaxed);
    stats.checkpointed.store(state.seq, Ordering::Relaxed);
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
    for message in &batch {
        let Ok(info) = message.info() else { continue };
        let seq = info.stream_sequence;
        stats.lag.store(info.pending, Ordering::Relaxed);
        // A redelivery of what was processed already.
        if seq <= state.seq {
            continue;
        }
        state.seq = seq;
        match std::str::from_utf8(&message.payload)
            .map_err(|e| e.to_string())
            .and_then(|t| Message::from_json(t).map_err(|e| e.to_string()))
        {
            Ok(m) => decoded.push(m),
            Err(e) => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    partition,
                    seq,
                    "skipped a stream message that is not a message: {e}"
                );
            }
        }
    }
    state.last = batch.into_iter().last().or(state.last.take());
    stats.seq.store(state.seq, Ordering::Relaxed);
    stats.processed.fetch_add(decoded.len() as u64, Ordering::Relaxed);
    for name in registry.names() {
        let Some(matcher) = routes.settings(&name).and_then(|s| s.matcher.clone()) else {
            continue;
        };
        let taken: Vec<&Message> = decoded.iter().filter(|m| matcher.matches(m)).collect();
        if taken.is_empty() {
            continue;
        }
        let emitted = match registry.process_messages(&name, &taken) {
            Ok(outcome) => outcome.emitted,
            Err(e) => {
                tracing::debug!(plugin = %name, partition, "call failed: {e}");
                Vec::new()
            }
        };
        let count = emitted.len() as u64;
        publish(shared, partition, &name, emitted, false, state);
        let mut per = lock(&stats.per_plugin);
        let entry = per.entry(name).or_default();
        entry.0 += taken.len() as u64;
        entry.1 += count;
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

/// Commits the partition's checkpoint, then acks the consumer up to it.
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
    if state.seq == state.checkpointed {
        return true;
    }
    let mut checkpoint = Checkpoint {
        seq: state.seq,
        by: shared.config.id.clone(),
        at_ms: now_ms(),
        ..Checkpoint::default()
    };
    let mut names = registry.names();
    names.extend(state.emits.keys().cloned());
    names.sort();
    names.dedup();
    for name in names {
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
        let mut kept = BTreeMap::new();
        for k in store.list_keys(&name, "").unwrap_or_default() {
            if let Ok(Some(v)) = store.get(&name, &k) {
                kept.insert(k, b64().encode(v));
            }
        }
        checkpoint.plugins.insert(
            name,
            PluginCheckpoint {
                emits,
                others,
                state: saved,
                store: kept,
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
            stats.checkpointed.store(state.seq, Ordering::Relaxed);
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            if let Some(last) = state.last.as_ref() {
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
