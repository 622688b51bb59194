//! A cluster daemon's admin API: `POST /messages` publishes into the input stream
//! (202 once the stream has every message), `GET /status` this daemon's view,
//! `GET /plugins` every (plugin, partition) it runs with its position, checkpoint and
//! lag, `GET /metrics` the same in Prometheus' text format. And stdin intake.

use std::fmt::Write as _;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};

use super::Shared;
use crate::lock;
use corral::Message;
use corral::Registry;

#[derive(Clone)]
struct Api {
    shared: Arc<Shared>,
    template: Registry,
}

pub(crate) fn router(shared: Arc<Shared>, template: Registry) -> axum::Router {
    axum::Router::new()
        .route("/messages", post(messages))
        .route("/status", get(status))
        .route("/plugins", get(plugins))
        .route("/metrics", get(metrics))
        .with_state(Api { shared, template })
}

fn authorized(api: &Api, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = api.shared.daemon.token.as_deref() else {
        return Ok(());
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token) {
        Ok(())
    } else {
        Err(Box::new(
            (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response(),
        ))
    }
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

async fn messages(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorized(&api, &headers) {
        return *denied;
    }
    let parsed: Result<Vec<Message>, String> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(&body).map_err(|e| e.to_string()),
        _ => std::str::from_utf8(&body)
            .map_err(|e| e.to_string())
            .and_then(|t| Message::from_json(t).map_err(|e| e.to_string()))
            .map(|m| vec![m]),
    };
    let messages = match parsed {
        Ok(messages) => messages,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "error": format!("invalid message JSON: {e}") })),
            )
                .into_response();
        }
    };
    match publish(&api.shared, &messages).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "accepted": messages.len() })),
        )
            .into_response(),
        Err(e) => {
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({ "error": e }))).into_response();
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            response
        }
    }
}

fn partitions_json(shared: &Shared) -> Vec<Json> {
    let owned = lock(&shared.partitions.owned);
    owned
        .values()
        .map(|o| {
            let s = &o.worker.stats;
            let per: Vec<Json> = lock(&s.per_plugin)
                .iter()
                .map(|(name, (processed, emitted))| json!({ "plugin": name, "processed": processed, "emitted": emitted }))
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

fn status_json(api: &Api) -> Json {
    let shared = &api.shared;
    let stats = &shared.stats;
    let plugins: serde_json::Map<String, Json> = super::partition::plugin_infos(&api.template)
        .into_iter()
        .map(|(name, info)| {
            (
                name,
                json!({ "version": info.version, "load_error": info.load_error }),
            )
        })
        .collect();
    json!({
        "id": shared.config.id,
        "stream": shared.config.stream,
        "partitions": shared.config.partitions,
        "owned": partitions_json(shared),
        "plugins": plugins,
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

async fn status(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorized(&api, &headers) {
        return *denied;
    }
    axum::Json(status_json(&api)).into_response()
}

async fn plugins(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorized(&api, &headers) {
        return *denied;
    }
    let owned = lock(&api.shared.partitions.owned);
    let mut out = Vec::new();
    for o in owned.values() {
        let s = &o.worker.stats;
        let per = lock(&s.per_plugin).clone();
        let Some(registry) = o.worker.registry() else {
            continue;
        };
        for (name, info) in super::partition::plugin_infos(&registry) {
            let (processed, emitted) = per.get(&name).copied().unwrap_or_default();
            out.push(json!({
                "name": name,
                "partition": o.worker.partition,
                "version": info.version,
                "load_error": info.load_error,
                "processed": processed,
                "emitted": emitted,
                "seq": s.seq.load(Ordering::Relaxed),
                "checkpointed": s.checkpointed.load(Ordering::Relaxed),
                "lag": { "messages": s.lag.load(Ordering::Relaxed) },
            }));
        }
    }
    axum::Json(Json::Array(out)).into_response()
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> Response {
    if let Err(denied) = authorized(&api, &headers) {
        return *denied;
    }
    let shared = &api.shared;
    let stats = &shared.stats;
    let mut text = String::new();
    let owned = lock(&shared.partitions.owned);
    let counters = [
        ("corral_cluster_partitions_owned", "gauge", owned.len() as u64),
        (
            "corral_cluster_lease_renewals_total",
            "counter",
            stats.renewals.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_takeovers_total",
            "counter",
            stats.takeovers.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_partitions_released_total",
            "counter",
            stats.released.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_leases_lost_total",
            "counter",
            stats.lost.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_published_total",
            "counter",
            stats.published.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_duplicates_total",
            "counter",
            stats.duplicates.load(Ordering::Relaxed),
        ),
        (
            "corral_cluster_accepted_total",
            "counter",
            stats.accepted.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, value) in counters {
        let _ = writeln!(text, "# TYPE {name} {kind}\n{name} {value}");
    }
    let _ = writeln!(text, "# TYPE corral_cluster_lag_messages gauge");
    let _ = writeln!(text, "# TYPE corral_cluster_processed_total counter");
    for o in owned.values() {
        let s = &o.worker.stats;
        let p = o.worker.partition;
        for (name, (processed, _)) in lock(&s.per_plugin).iter() {
            let lag = s.lag.load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "corral_cluster_lag_messages{{plugin=\"{name}\",partition=\"{p}\"}} {lag}\n\
                 corral_cluster_processed_total{{plugin=\"{name}\",partition=\"{p}\"}} {processed}"
            );
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
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
