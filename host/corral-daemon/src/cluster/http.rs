//! A cluster daemon's admin API: the single-machine router of `admin` (the dashboard,
//! `/health`, `/status`, `/plugins`, `/plugins/{name}`, `PUT /plugins/reload`,
//! `POST /plugins/{name}/call`, `POST /messages`, `/metrics`, the token) over this
//! daemon's [`Node`]: `POST /messages` publishes into the input stream (202 once the
//! stream has every message); `/status` adds the partitions owned and the cluster's
//! counters; a plugin's entry adds one item per partition it serves (version, state,
//! processed, emitted, cursor, checkpoint, lag, whether it waits) and sums its stats
//! over them; a reload rescans every partition's watch directory; `/metrics` adds the
//! cluster's families. And stdin intake.

use std::fmt::Write as _;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value as Json, json};

use super::Shared;
use crate::admin::{self, Admin, Answer, Node};
use crate::lock;
use corral::{Message, PluginState, PluginStatus, Registry, Stats, Watcher};

/// A cluster daemon behind the admin API.
struct Cluster {
    shared: Arc<Shared>,
    /// The daemon's own registry's watcher (see `partition::template`).
    watcher: Arc<Watcher>,
}

pub(crate) fn router(shared: Arc<Shared>, template: Registry, watcher: Arc<Watcher>) -> axum::Router {
    let token = shared.daemon.token.as_deref().map(Arc::from);
    admin::router(Admin {
        registry: template,
        node: Arc::new(Cluster { shared, watcher }),
        token,
    })
}

/// Publishes `messages` to their partitions' subjects and waits for the stream's acks.
pub(crate) async fn publish(shared: &Shared, messages: &[Message]) -> Result<(), String> {
    let mut acks = Vec::with_capacity(messages.len());
    for message in messages {
        let subject = shared.config.subject_of(message);
        let ack = shared
            .js
            .publish(subject, message.to_json().into())
            .await
            .map_err(|e| format!("cannot publish: {e}"))?;
        acks.push(ack);
    }
    for ack in acks {
        ack.await
            .map_err(|e| format!("the stream did not take a message: {e}"))?;
    }
    shared
        .stats
        .accepted
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    Ok(())
}

fn partitions_json(shared: &Shared) -> Vec<Json> {
    let owned = lock(&shared.partitions.owned);
    owned
        .values()
        .map(|o| {
            let s = &o.worker.stats;
            let per: Vec<Json> = lock(&s.per_plugin)
                .iter()
                .map(|(name, p)| {
                    json!({
                        "plugin": name,
                        "processed": p.processed,
                        "emitted": p.emitted,
                        "seq": p.seq,
                        "waiting": p.waiting,
                    })
                })
                .collect();
            json!({
                "partition": o.worker.partition,
                "ready": s.ready.load(Ordering::Relaxed),
                "seq": s.seq.load(Ordering::Relaxed),
                "checkpointed": s.checkpointed.load(Ordering::Relaxed),
                "checkpoints": s.checkpoints.load(Ordering::Relaxed),
                "lag": s.lag.load(Ordering::Relaxed),
                "processed": s.processed.load(Ordering::Relaxed),
                "skipped": s.skipped.load(Ordering::Relaxed),
                "plugins": per,
            })
        })
        .collect()
}

/// The sum of `stats` over a plugin's instances (the largest for the maxima).
fn sum(all: impl Iterator<Item = Stats>) -> Stats {
    let entry = |a: &mut corral::EntryStats, b: &corral::EntryStats| {
        a.calls += b.calls;
        a.failures += b.failures;
        a.timed += b.timed;
        a.total_duration += b.total_duration;
        a.max_duration = a.max_duration.max(b.max_duration);
    };
    all.fold(Stats::default(), |mut t, s| {
        entry(&mut t.process_message, &s.process_message);
        entry(&mut t.timer_event, &s.timer_event);
        entry(&mut t.exports, &s.exports);
        t.terminations += s.terminations;
        t.restarts += s.restarts;
        t.instances += s.instances;
        t.max_fuel_used = t.max_fuel_used.max(s.max_fuel_used);
        t.memory_bytes += s.memory_bytes;
        t.peak_memory_bytes = t.peak_memory_bytes.max(s.peak_memory_bytes);
        t.max_output_bytes = t.max_output_bytes.max(s.max_output_bytes);
        t.emitted += s.emitted;
        t.discarded += s.discarded;
        t.last_error = s.last_error.or(t.last_error);
        t
    })
}

impl Node for Cluster {
    fn status(&self) -> Json {
        let shared = &self.shared;
        let stats = &shared.stats;
        json!({
            "id": shared.config.id,
            "stream": shared.config.stream,
            "partitions": shared.config.partitions,
            "owned": partitions_json(shared),
            "renewals": stats.renewals.load(Ordering::Relaxed),
            "takeovers": stats.takeovers.load(Ordering::Relaxed),
            "acquired": stats.acquired.load(Ordering::Relaxed),
            "released": stats.released.load(Ordering::Relaxed),
            "lost": stats.lost.load(Ordering::Relaxed),
            "published": stats.published.load(Ordering::Relaxed),
            "duplicates": stats.duplicates.load(Ordering::Relaxed),
            "accepted": stats.accepted.load(Ordering::Relaxed),
        })
    }

    fn plugin(&self, status: &PluginStatus, out: &mut Json) {
        let owned = lock(&self.shared.partitions.owned);
        let mut partitions = Vec::new();
        let (mut processed, mut lag, mut waiting) = (0, 0, false);
        let mut terminated = None;
        for o in owned.values() {
            let Some(one) = o.worker.registry().and_then(|r| r.status(&status.name)) else {
                continue;
            };
            let s = &o.worker.stats;
            let per = lock(&s.per_plugin).get(&status.name).copied().unwrap_or_default();
            let (state, reason) = match one.plugin.as_ref().map(|p| p.state()) {
                Some(PluginState::Running) => ("running", None),
                Some(PluginState::Terminated { reason }) => ("terminated", Some(reason)),
                None => ("failed-to-load", None),
            };
            if state == "terminated" && terminated.is_none() {
                terminated = reason.clone();
            }
            let partition_lag = s.lag.load(Ordering::Relaxed);
            processed += per.processed;
            lag += partition_lag;
            waiting |= per.waiting;
            partitions.push(json!({
                "partition": o.worker.partition,
                "version": one.plugin.as_ref().map(|p| p.version().to_owned()),
                "load_error": one.load_error,
                "state": state,
                "reason": reason,
                "processed": per.processed,
                "emitted": per.emitted,
                "seq": per.seq,
                "waiting": per.waiting,
                "checkpointed": s.checkpointed.load(Ordering::Relaxed),
                "lag": { "messages": partition_lag },
            }));
        }
        if let Some(reason) = terminated {
            out["state"] = json!("terminated");
            out["reason"] = json!(reason);
        }
        out["reader"] = json!({ "processed": processed, "waiting": waiting });
        out["lag"] = json!({ "messages": lag });
        out["partitions"] = Json::Array(partitions);
    }

    fn stats(&self, status: &PluginStatus) -> Option<Stats> {
        let owned = lock(&self.shared.partitions.owned);
        let instances: Vec<Stats> = owned
            .values()
            .filter_map(|o| o.worker.registry()?.get(&status.name).map(|p| p.stats()))
            .collect();
        if instances.is_empty() {
            // No partition serves it here: the daemon's own instance, which processes
            // nothing.
            return status.plugin.as_ref().map(|p| p.stats());
        }
        Some(sum(instances.into_iter()))
    }

    fn rescan(&self) {
        self.watcher.rescan();
        let watchers: Vec<Arc<Watcher>> = lock(&self.shared.partitions.owned)
            .values()
            .filter_map(|o| o.worker.watcher())
            .collect();
        for watcher in watchers {
            watcher.rescan();
        }
    }

    fn accept(self: Arc<Self>, messages: Vec<Message>) -> Answer {
        Box::pin(async move {
            match publish(&self.shared, &messages).await {
                Ok(()) => (
                    StatusCode::ACCEPTED,
                    axum::Json(json!({ "accepted": messages.len() })),
                )
                    .into_response(),
                Err(e) => admin::unavailable(e),
            }
        })
    }

    fn metrics(&self, _statuses: &[PluginStatus], text: &mut String) {
        cluster_metrics(&self.shared, text);
    }
}

fn cluster_metrics(shared: &Shared, text: &mut String) {
    let stats = &shared.stats;
    let owned = lock(&shared.partitions.owned);
    let _ = writeln!(
        text,
        "# TYPE corral_cluster_partitions_owned gauge\ncorral_cluster_partitions_owned {}",
        owned.len()
    );
    let counters = [
        ("lease_renewals_total", &stats.renewals),
        ("takeovers_total", &stats.takeovers),
        ("partitions_released_total", &stats.released),
        ("leases_lost_total", &stats.lost),
        ("published_total", &stats.published),
        ("duplicates_total", &stats.duplicates),
        ("accepted_total", &stats.accepted),
    ];
    for (name, value) in counters {
        let value = value.load(Ordering::Relaxed);
        let _ = writeln!(
            text,
            "# TYPE corral_cluster_{name} counter\ncorral_cluster_{name} {value}"
        );
    }
    let _ = writeln!(text, "# TYPE corral_cluster_lag_messages gauge");
    let _ = writeln!(text, "# TYPE corral_cluster_processed_total counter");
    for o in owned.values() {
        let s = &o.worker.stats;
        let p = o.worker.partition;
        for (name, per) in lock(&s.per_plugin).iter() {
            let processed = per.processed;
            let lag = s.lag.load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "corral_cluster_lag_messages{{plugin=\"{name}\",partition=\"{p}\"}} {lag}\n\
                 corral_cluster_processed_total{{plugin=\"{name}\",partition=\"{p}\"}} {processed}"
            );
        }
    }
}

/// Reads JSON lines from stdin and publishes them in batches (what one read brought).
pub(crate) fn read_stdin(shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("corral-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::BufReader::with_capacity(256 << 10, std::io::stdin().lock());
            let mut batch = Vec::new();
            let mut line = String::new();
            let mut number = 0u64;
            loop {
                line.clear();
                match stdin.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("cannot read stdin: {e}");
                        break;
                    }
                }
                number += 1;
                if !line.trim().is_empty() {
                    match Message::from_json(line.trim_end()) {
                        Ok(message) => batch.push(message),
                        Err(e) => tracing::warn!("stdin line {number}: invalid message JSON, skipped: {e}"),
                    }
                }
                // What one read brought is a batch.
                if !batch.is_empty() && (batch.len() >= 512 || stdin.buffer().is_empty()) {
                    if let Err(e) = shared.rt.block_on(publish(&shared, &batch)) {
                        tracing::error!("{e}");
                    }
                    batch.clear();
                }
                if shared.closing.load(Ordering::SeqCst) {
                    break;
                }
            }
            if !batch.is_empty()
                && let Err(e) = shared.rt.block_on(publish(&shared, &batch))
            {
                tracing::error!("{e}");
            }
            tracing::info!("stdin closed: intake goes on over the admin API");
        });
    if let Err(e) = spawned {
        tracing::error!("cannot read stdin: {e}");
    }
}
