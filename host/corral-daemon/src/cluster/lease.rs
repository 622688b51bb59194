//! Leases and heartbeats. Every `lease_ttl / 3` a daemon:
//!
//! 1. puts its heartbeat under `d.<id>` in `<stream>_daemons` (what it owns, its
//!    plugins and versions, its counters: `corral status` reads them);
//! 2. renews each lease it holds, `p<N>` in `<stream>_leases`, by an update that
//!    expects the revision it last wrote (compare-and-swap): a lease it cannot renew
//!    was taken, and its partition stops at once, without a checkpoint;
//! 3. reads every lease and counts the live daemons (a heartbeat younger than the
//!    lease time, or a lease held and not expired) and, when it holds more than its
//!    fair share (`ceil(partitions / live)`), hands the excess back cleanly (checkpoint,
//!    then delete the lease); when it holds fewer, takes unowned or expired leases, by
//!    create or compare-and-swap, up to its share. A daemon at the rounded-up share
//!    keeps it, so each partition moves at most once when a daemon joins.
//!
//! A partition's worker also stops by itself when its lease's expiry passes without a
//! renewal, so two daemons never process one partition past a lease time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::partition::Worker;
use super::{Shared, now_ms};
use crate::lock;

/// What a lease holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub owner: String,
    pub until_ms: u64,
}

/// A daemon's heartbeat, as `corral status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The daemon's id.
    pub id: String,
    /// Its admin API.
    pub admin: String,
    /// When it was written (ms since the epoch).
    pub beat_ms: u64,
    /// The partitions it owns.
    pub partitions: Vec<u32>,
    /// Its plugins: name → version, or the load error of the last attempt.
    pub plugins: BTreeMap<String, PluginInfo>,
    /// Lease renewals so far.
    pub renewals: u64,
    /// Partitions taken from a daemon whose lease expired.
    pub takeovers: u64,
    /// Messages emitted that the output stream dropped as repeats.
    pub duplicates: u64,
    /// Messages published to the output stream.
    pub published: u64,
    /// Messages behind, over its partitions and plugins.
    pub lag: u64,
}

/// One plugin of a daemon.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginInfo {
    /// The version serving, if any.
    pub version: Option<String>,
    /// The last failed load, if after the last success.
    pub load_error: Option<String>,
}

/// The partitions this daemon owns: lease revision, and the worker.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    pub owned: std::sync::Mutex<BTreeMap<u32, Owned>>,
}

#[derive(Debug)]
pub(crate) struct Owned {
    pub revision: u64,
    pub worker: Worker,
}

pub(crate) fn daemon_key(id: &str) -> String {
    format!("d.{id}")
}

fn lease_key(partition: u32) -> String {
    format!("p{partition}")
}

/// Records the cluster's number of partitions, or refuses another.
pub(crate) async fn check_partitions(
    daemons: &async_nats::jetstream::kv::Store,
    n: u32,
) -> Result<(), String> {
    let value = bytes::Bytes::from(n.to_string());
    if daemons.create("partitions", value).await.is_ok() {
        return Ok(());
    }
    let found = daemons
        .get("partitions")
        .await
        .map_err(|e| format!("cannot read the cluster's partitions: {e}"))?
        .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse::<u32>().ok()));
    match found {
        Some(m) if m == n => Ok(()),
        Some(m) => Err(format!(
            "the cluster has {m} partitions, this daemon was started with --partitions {n}: a \
             partition's state cannot be split or merged; see docs/cluster.md, \"Changing \
             the number of partitions\""
        )),
        None => Ok(()),
    }
}

/// Live daemons' heartbeats.
pub(crate) async fn heartbeats(daemons: &async_nats::jetstream::kv::Store) -> Vec<Heartbeat> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let Ok(mut keys) = daemons.keys().await else {
        return out;
    };
    let mut names = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        if key.starts_with("d.") {
            names.push(key);
        }
    }
    for key in names {
        if let Ok(Some(value)) = daemons.get(&key).await
            && let Ok(beat) = serde_json::from_slice::<Heartbeat>(&value)
        {
            out.push(beat);
        }
    }
    out
}

fn heartbeat(shared: &Shared) -> Heartbeat {
    let owned = lock(&shared.partitions.owned);
    let mut plugins = BTreeMap::new();
    let mut lag = 0;
    for owned in owned.values() {
        for (name, info) in owned.worker.plugins() {
            plugins.insert(name, info);
        }
        lag += owned.worker.stats.lag.load(Ordering::Relaxed);
    }
    if let Some(template) = lock(&shared.template).as_ref() {
        for status in template.statuses() {
            plugins.entry(status.name.clone()).or_insert(PluginInfo {
                version: status.plugin.as_ref().map(|p| p.version().to_owned()),
                load_error: status.load_error.clone(),
            });
        }
    }
    let stats = &shared.stats;
    Heartbeat {
        id: shared.config.id.clone(),
        admin: lock(&shared.admin_address).clone(),
        beat_ms: now_ms(),
        partitions: owned.keys().copied().collect(),
        plugins,
        renewals: stats.renewals.load(Ordering::Relaxed),
        takeovers: stats.takeovers.load(Ordering::Relaxed),
        duplicates: stats.duplicates.load(Ordering::Relaxed),
        published: stats.published.load(Ordering::Relaxed),
        lag,
    }
}

/// The lease loop; ends when the daemon closes.
pub(crate) async fn manage(shared: Arc<Shared>) {
    let ttl = shared.config.lease_ttl;
    let period = ttl / 3;
    // One round of heartbeats first, so daemons started together see each other
    // before they take their shares.
    beat(&shared).await;
    tokio::time::sleep(period).await;
    while !shared.closing.load(Ordering::SeqCst) {
        let started = tokio::time::Instant::now();
        beat(&shared).await;
        renew(&shared).await;
        balance(&shared).await;
        tokio::time::sleep_until(started + period).await;
    }
}

async fn beat(shared: &Shared) {
    let beat = heartbeat(shared);
    let Ok(value) = serde_json::to_vec(&beat) else {
        return;
    };
    if let Err(e) = shared
        .daemons
        .put(daemon_key(&shared.config.id), value.into())
        .await
    {
        tracing::warn!("cannot write the heartbeat: {e}");
    }
}

fn lease_value(shared: &Shared) -> bytes::Bytes {
    let lease = Lease {
        owner: shared.config.id.clone(),
        until_ms: now_ms() + shared.config.lease_ttl.as_millis() as u64,
    };
    serde_json::to_vec(&lease).unwrap_or_default().into()
}

async fn renew(shared: &Shared) {
    let held: Vec<(u32, u64)> = lock(&shared.partitions.owned)
        .iter()
        .map(|(p, o)| (*p, o.revision))
        .collect();
    for (partition, revision) in held {
        let until = now_ms() + shared.config.lease_ttl.as_millis() as u64;
        match shared
            .leases
            .update(lease_key(partition), lease_value(shared), revision)
            .await
        {
            Ok(revision) => {
                shared.stats.renewals.fetch_add(1, Ordering::Relaxed);
                if let Some(owned) = lock(&shared.partitions.owned).get_mut(&partition) {
                    owned.revision = revision;
                    owned.worker.control.until_ms.store(until, Ordering::SeqCst);
                }
            }
            Err(e) => {
                shared.stats.lost.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    partition,
                    "lease lost, stopping the partition without a checkpoint: {e}"
                );
                let owned = lock(&shared.partitions.owned).remove(&partition);
                if let Some(owned) = owned {
                    owned.worker.abandon();
                }
            }
        }
    }
}

/// The fair share of `partitions` among `live` daemons: `ceil(partitions / live)`. A
/// daemon takes up to it and hands back only what is above it, so a daemon holding the
/// rounded-up share (over the exact share by less than one) keeps it: shares settle
/// with each partition moved at most once.
pub(crate) fn fair_share(partitions: u32, live: usize) -> u32 {
    partitions.div_ceil(u32::try_from(live.max(1)).unwrap_or(u32::MAX))
}

async fn balance(shared: &Arc<Shared>) {
    let now = now_ms();
    let ttl = shared.config.lease_ttl.as_millis() as u64;
    let total = shared.config.partitions;
    let me = shared.config.id.as_str();
    // Every lease, read once for the round.
    let mut leases = Vec::with_capacity(total as usize);
    for partition in 0..total {
        match shared.leases.entry(lease_key(partition)).await {
            Ok(entry) => {
                let lease = entry
                    .as_ref()
                    .and_then(|e| serde_json::from_slice::<Lease>(&e.value).ok());
                leases.push((partition, entry.map(|e| e.revision), lease));
            }
            Err(e) => {
                tracing::warn!(partition, "cannot read the lease, balancing next round: {e}");
                return;
            }
        }
    }
    // Live: a heartbeat younger than the lease time, or a lease held and not expired (a
    // heartbeat written late does not make its daemon's partitions look spare, which
    // would have them taken and handed back).
    let mut live: BTreeSet<String> = heartbeats(&shared.daemons)
        .await
        .into_iter()
        .filter(|b| b.beat_ms + ttl > now)
        .map(|b| b.id)
        .collect();
    live.insert(me.to_owned());
    for (_, _, lease) in &leases {
        if let Some(lease) = lease
            && lease.until_ms > now
        {
            live.insert(lease.owner.clone());
        }
    }
    let share = fair_share(total, live.len());
    let owned: Vec<u32> = lock(&shared.partitions.owned).keys().copied().collect();
    if owned.len() as u32 > share {
        // Over the share by at least one: hand back the excess, each after a checkpoint.
        let excess = owned.len() - share as usize;
        for &partition in owned.iter().rev().take(excess) {
            release(shared, partition).await;
        }
        return;
    }
    let mut have = owned.len() as u32;
    // Start looking at a place of our own, so daemons do not all race for partition 0.
    let offset = super::partition_of_key(me, total);
    for i in 0..total {
        if have >= share || shared.closing.load(Ordering::SeqCst) {
            break;
        }
        let partition = (offset + i) % total;
        if owned.contains(&partition) {
            continue;
        }
        let (_, revision, lease) = &leases[partition as usize];
        let key = lease_key(partition);
        let (taken, takeover) = match (revision, lease) {
            (None, _) => (shared.leases.create(&key, lease_value(shared)).await.ok(), false),
            (Some(_), Some(lease)) if lease.until_ms > now && lease.owner != me => continue,
            (Some(revision), lease) => (
                shared
                    .leases
                    .update(&key, lease_value(shared), *revision)
                    .await
                    .ok(),
                lease.as_ref().is_some_and(|l| l.owner != me),
            ),
        };
        let Some(revision) = taken else { continue };
        let until = now_ms() + ttl;
        let worker = match Worker::start(shared.clone(), partition, until) {
            Ok(worker) => worker,
            Err(e) => {
                tracing::error!(partition, "cannot start the partition: {e}");
                let _ = shared.leases.delete_expect_revision(&key, Some(revision)).await;
                continue;
            }
        };
        shared.stats.acquired.fetch_add(1, Ordering::Relaxed);
        if takeover {
            shared.stats.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(partition, takeover, "partition acquired");
        lock(&shared.partitions.owned).insert(partition, Owned { revision, worker });
        have += 1;
    }
}

/// Stops `partition` with a checkpoint, then deletes its lease.
async fn release(shared: &Arc<Shared>, partition: u32) {
    let Some(owned) = lock(&shared.partitions.owned).remove(&partition) else {
        return;
    };
    let revision = owned.revision;
    let stopped = tokio::task::spawn_blocking(move || owned.worker.stop()).await;
    if matches!(stopped, Ok(true)) {
        let _ = shared
            .leases
            .delete_expect_revision(lease_key(partition), Some(revision))
            .await;
        shared.stats.released.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partition, "partition handed back");
    }
}

/// Stops every partition with a checkpoint and deletes the leases (a clean stop).
pub(crate) fn release_all(shared: &Arc<Shared>) {
    let owned = std::mem::take(&mut *lock(&shared.partitions.owned));
    let stopped: Vec<(u32, u64, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = owned
            .into_iter()
            .map(|(partition, owned)| scope.spawn(move || (partition, owned.revision, owned.worker.stop())))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    shared.rt.block_on(async {
        for (partition, revision, clean) in stopped {
            if clean {
                let _ = shared
                    .leases
                    .delete_expect_revision(lease_key(partition), Some(revision))
                    .await;
            }
        }
    });
}
