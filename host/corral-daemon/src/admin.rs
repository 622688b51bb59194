//! The admin HTTP API (axum): plugin status, reload, direct calls, message intake,
//! Prometheus metrics and health.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /` | the live dashboard (`dashboard.rs`), its files under `/dashboard/` |
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /status` | the daemon at a glance, for the dashboard: uptime, compiles, the input and output logs (positions, unread bytes and bound, segments), unmatched messages, recent events, every plugin |
//! | `GET /plugins` | every plugin: name, version, state, loaded-at, stats, reader, lag, errors |
//! | `GET /plugins/{name}` | one plugin |
//! | `PUT /plugins/reload` | rescan the watch directory now; answers with `/plugins` |
//! | `POST /plugins/{name}/call` | run process-message on the JSON message in the body; answers with what it emitted |
//! | `POST /messages` | append a JSON message (or an array of them) to the log as if read from stdin: 202 once durable, 503 with `Retry-After` while the log is full |
//! | `GET /metrics` | Prometheus text exposition of the per-plugin stats |
//!
//! With a token configured, every request must carry `Authorization: Bearer <token>`
//! (401 otherwise), except for the dashboard's page and files, which hold no data. Errors are JSON: `{"error": "..."}`. Plugin names in paths are
//! checked against the same rules as file names before anything is looked up.
//!
//! The same router serves a cluster daemon (`cluster::http`): what differs between one
//! machine and a cluster — where messages go, the daemon's part of `/status`, what a
//! plugin's entry says beyond the registry, its stats, the watch directories to rescan
//! and the daemon's own metrics — is a [`Node`].

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value as Json, json};

use crate::pipeline::Pipeline;
use corral::CallError;
use corral::EntryStats;
use corral::Message;
use corral::PluginState;
use corral::Watcher;
use corral::validate_name;
use corral::{PluginStatus, Registry};

mod dashboard;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct Admin {
    /// The registry whose plugins `/plugins` lists and `/plugins/{name}/call` calls.
    pub registry: Registry,
    /// One machine's daemon or a cluster's.
    pub node: Arc<dyn Node>,
    pub token: Option<Arc<str>>,
}

/// An answer to come, for [`Node::accept`].
pub(crate) type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What a daemon behind the admin API does its own way.
pub(crate) trait Node: Send + Sync + 'static {
    /// The daemon's part of `GET /status` (an object; the API adds the plugins, the
    /// compiles, the events and the times).
    fn status(&self) -> Json;
    /// Completes `status`'s entry of `/plugins` (`out`) with what the daemon knows.
    fn plugin(&self, status: &PluginStatus, out: &mut Json);
    /// The stats of the plugin `status` names, as `/plugins` and `/metrics` show them.
    fn stats(&self, status: &PluginStatus) -> Option<corral::Stats> {
        status.plugin.as_ref().map(|p| p.stats())
    }
    /// Rescans the watch directories now (blocking: it compiles).
    fn rescan(&self);
    /// Takes messages from `POST /messages`, and answers.
    fn accept(self: Arc<Self>, messages: Vec<Message>) -> Answer;
    /// The daemon's own Prometheus families, after the per-plugin ones.
    fn metrics(&self, statuses: &[PluginStatus], out: &mut String);
}

/// The daemon of one machine: its log, its intake, its watch directory.
pub(crate) struct Local {
    pub pipeline: Arc<Pipeline>,
    pub watcher: Arc<Watcher>,
    pub intake: Arc<crate::intake::Intake>,
}

/// The API's routes.
pub(crate) fn router(admin: Admin) -> Router {
    let started = SystemTime::now();
    let events = dashboard::Events::follow(&admin.registry);
    let api = Router::new()
        .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
        .route(
            "/status",
            get(move |State(admin): State<Admin>| async move { daemon_status(&admin, started, &events) }),
        )
        .route("/plugins", get(list))
        .route("/plugins/reload", put(reload))
        .route("/plugins/{name}", get(one))
        .route("/plugins/{name}/call", post(call))
        .route("/messages", post(messages))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(admin.clone(), authorize));
    // The page and its files hold no data: they are served without the token, and ask
    // for it.
    dashboard::routes().merge(api).with_state(admin)
}

fn error(status: StatusCode, message: String) -> Response {
    ApiError(status, message).into_response()
}

/// An error answer: a status and a message, sent as `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn authorize(State(admin): State<Admin>, headers: HeaderMap, request: Request, next: Next) -> Response {
    if let Some(token) = &admin.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send `Authorization: Bearer <token>`".into(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    next.run(request).await
}

fn entry_json(e: &EntryStats) -> Json {
    json!({
        "calls": e.calls,
        "failures": e.failures,
        "timed": e.timed,
        "avg_duration_ns": e.average_duration().as_nanos() as u64,
        "total_duration_ns": e.total_duration.as_nanos() as u64,
        "max_duration_ns": e.max_duration.as_nanos() as u64,
    })
}

fn status_json(admin: &Admin, status: &PluginStatus) -> Json {
    let mut out = plugin_json(status, admin.node.stats(status));
    admin.node.plugin(status, &mut out);
    out
}

/// What the registry says of a plugin, with `stats` for its numbers.
fn plugin_json(status: &PluginStatus, stats: Option<corral::Stats>) -> Json {
    let mut out = json!({
        "name": status.name,
        "state": "failed-to-load",
        "load_error": status.load_error,
        "path": status.path.as_ref().map(|p| p.display().to_string()),
        "loaded_at_ns": status.loaded_at.map(unix_ns),
    });
    if let Some(plugin) = &status.plugin {
        let stats = stats.unwrap_or_else(|| plugin.stats());
        let (state, reason) = match plugin.state() {
            PluginState::Running => ("running", None),
            PluginState::Terminated { reason } => ("terminated", Some(reason)),
        };
        out["state"] = json!(state);
        out["reason"] = json!(reason);
        out["version"] = json!(plugin.version());
        out["preserves_state"] = json!(plugin.preserves_state());
        out["batches"] = json!(plugin.batches());
        out["tier"] = json!(plugin.tier().as_str());
        // Read without waiting: whether a call holds the plugin right now.
        out["busy"] = json!(plugin.is_busy());
        out["restart"] = match plugin.restart_status() {
            None => Json::Null,
            Some(r) => json!({
                "restarts": r.restarts,
                "in_a_row": r.in_a_row,
                "next_at_ns": r.next_at.map(unix_ns),
                "gave_up": r.gave_up,
            }),
        };
        out["world"] = json!(plugin.report().world);
        let limits = plugin.limits();
        out["limits"] = json!({
            "fuel": limits.fuel,
            "memory_bytes": limits.memory_bytes,
            "deadline_ns": limits.deadline.as_nanos() as u64,
            "output_bytes": limits.output_bytes,
            "emits": limits.emits,
            "max_consecutive_failures": limits.max_consecutive_failures,
        });
        out["last_error"] = json!(stats.last_error);
        out["stats"] = json!({
            "process_message": entry_json(&stats.process_message),
            "timer_event": entry_json(&stats.timer_event),
            "terminations": stats.terminations,
            "restarts": stats.restarts,
            "instances": stats.instances,
            "max_fuel_used": stats.max_fuel_used,
            "memory_bytes": stats.memory_bytes,
            "peak_memory_bytes": stats.peak_memory_bytes,
            "max_output_bytes": stats.max_output_bytes,
            "emitted": stats.emitted,
            "discarded": stats.discarded,
        });
    }
    out
}

impl Local {
    /// The reader and the input of a plugin.
    fn plugin_entry(&self, status: &PluginStatus, out: &mut Json) {
        let admin = self;
        if let (Some(reader), Some(lag)) = (
            admin.pipeline.reader(&status.name),
            admin.pipeline.lag(&status.name),
        ) {
            out["lag"] = json!({ "messages": lag.messages, "bytes": lag.bytes });
            out["reader"] = json!({
                "position": reader.seq.load(Ordering::Relaxed),
                "checkpointed": reader.checkpointed.load(Ordering::Relaxed),
                "checkpoints": reader.checkpoints.load(Ordering::Relaxed),
                "processed": reader.processed.load(Ordering::Relaxed),
                "calls": reader.calls.load(Ordering::Relaxed),
                "ticks": reader.ticks.load(Ordering::Relaxed),
                "skipped": reader.skipped.load(Ordering::Relaxed),
                "waiting": reader.waiting.load(Ordering::Relaxed),
            });
        }
        if let Some(input) = admin.intake.stats(&status.name) {
            out["input"] = crate::intake::status_json(&input);
        }
    }
}

fn log_json(status: &crate::log::LogStatus) -> Json {
    json!({
        "first": status.first.seq,
        "end": status.durable.seq,
        "end_bytes": status.durable.byte,
        "unread_bytes": status.unread_bytes,
        "max_bytes": status.max_bytes,
        "segments": status.segments,
        "disk_bytes": status.disk_bytes,
        "full_waits": status.full_waits,
    })
}

/// The daemon-level status: the logs.
fn daemon_json(admin: &Local) -> Json {
    let lag = admin.pipeline.output_lag();
    let mut output = log_json(&admin.pipeline.output_status());
    output["written"] = json!(admin.pipeline.output_written());
    output["lag"] = json!({ "messages": lag.messages, "bytes": lag.bytes });
    json!({
        "log": log_json(&admin.pipeline.input_status()),
        "output": output,
        "unmatched": admin.pipeline.unmatched(),
        "pending_store_writes": admin.pipeline.pending_store_writes(),
    })
}

fn all_json(admin: &Admin) -> Json {
    Json::Array(
        admin
            .registry
            .statuses()
            .iter()
            .map(|s| status_json(admin, s))
            .collect(),
    )
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `GET /status`: what the dashboard shows, in one answer.
fn daemon_status(admin: &Admin, started: SystemTime, events: &dashboard::Events) -> Response {
    let compiles = admin.registry.host().compile_stats();
    let mut out = admin.node.status();
    out["started_at_ns"] = json!(unix_ns(started));
    out["now_ns"] = json!(unix_ns(SystemTime::now()));
    out["compiles"] = json!({
        "memo": compiles.memo_hits,
        "cache": compiles.cache_hits,
        "compiled": compiles.compiled,
        "baseline": compiles.baseline_compiled,
    });
    out["events"] = events.json();
    out["plugins"] = all_json(admin);
    axum::Json(out).into_response()
}

async fn list(State(admin): State<Admin>) -> Response {
    axum::Json(all_json(&admin)).into_response()
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn one(State(admin): State<Admin>, Path(name): Path<String>) -> Response {
    if let Err(e) = checked_name(&name) {
        return e.into_response();
    }
    match admin.registry.status(&name) {
        Some(status) => axum::Json(status_json(&admin, &status)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no plugin named `{name}`")),
    }
}

async fn reload(State(admin): State<Admin>) -> Response {
    let node = admin.node.clone();
    // A rescan compiles: keep it off the async workers.
    match tokio::task::spawn_blocking(move || node.rescan()).await {
        Ok(()) => axum::Json(all_json(&admin)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}")),
    }
}

fn parse_message(body: &[u8]) -> Result<Message, ApiError> {
    let bad = |why: String| ApiError(StatusCode::BAD_REQUEST, why);
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("body is not UTF-8: {e}")))?;
    Message::from_json(text).map_err(|e| bad(format!("invalid message JSON: {e}")))
}

async fn call(State(admin): State<Admin>, Path(name): Path<String>, body: Bytes) -> Response {
    if let Err(e) = checked_name(&name) {
        return e.into_response();
    }
    let message = match parse_message(&body) {
        Ok(message) => message,
        Err(e) => return e.into_response(),
    };
    let registry = admin.registry.clone();
    let result = tokio::task::spawn_blocking(move || registry.process_message(&name, &message)).await;
    match result {
        Ok(Ok(outcome)) => {
            let emitted: Vec<Json> = outcome
                .emitted
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or(Json::Null))
                .collect();
            axum::Json(json!({ "emitted": emitted })).into_response()
        }
        Ok(Err(e @ CallError::NotFound { .. })) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("call failed: {e}")),
    }
}

async fn messages(State(admin): State<Admin>, body: Bytes) -> Response {
    let parsed: Result<Vec<Message>, ApiError> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid message JSON: {e}"))),
        _ => parse_message(&body).map(|m| vec![m]),
    };
    let messages = match parsed {
        Ok(messages) => messages,
        Err(e) => return e.into_response(),
    };
    admin.node.clone().accept(messages).await
}

/// A 503 with `Retry-After: 1`.
pub(crate) fn unavailable(message: String) -> Response {
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

impl Local {
    /// Appends `messages` to the log; 202 once durable.
    async fn append(self: Arc<Self>, messages: Vec<Message>) -> Response {
        let admin = self;
        let accepted = messages.len();
        let end = match admin.pipeline.try_accept(&messages) {
            Ok(end) => end,
            Err(e @ crate::log::LogError::Full { .. }) => {
                return unavailable(format!(
                    "{e}: the plugins are behind; retry after the time in Retry-After"
                ));
            }
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot accept messages: {e}"),
                );
            }
        };
        // 202 only once the messages are durable.
        let pipeline = admin.pipeline.clone();
        let durable = tokio::task::spawn_blocking(move || pipeline.wait_durable(end, DURABLE_WAIT)).await;
        match durable {
            Ok(true) => (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "accepted": accepted, "durable": end.seq })),
            )
                .into_response(),
            _ => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the messages were appended but not made durable within {DURABLE_WAIT:?}: see the daemon's log"
                ),
            ),
        }
    }
}

impl Node for Local {
    fn status(&self) -> Json {
        daemon_json(self)
    }

    fn plugin(&self, status: &PluginStatus, out: &mut Json) {
        self.plugin_entry(status, out);
    }

    fn rescan(&self) {
        self.watcher.rescan();
    }

    fn accept(self: Arc<Self>, messages: Vec<Message>) -> Answer {
        Box::pin(self.append(messages))
    }

    fn metrics(&self, statuses: &[PluginStatus], out: &mut String) {
        local_metrics(self, statuses, out);
    }
}

/// How long `POST /messages` waits for its messages to be durable.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn metrics(State(admin): State<Admin>) -> Response {
    let text = prometheus(&admin);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// A label value as the Prometheus text format writes it: backslash, double quote and
/// line feed escaped. Plugin names are kept to a safe alphabet where they enter (see
/// `validate_name`), so this is the second of two guards, not the only one.
fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A per-plugin number: metric name, type, help, and how to read it from the stats.
type Gauge = (
    &'static str,
    &'static str,
    &'static str,
    fn(&corral::Stats) -> u64,
);

/// One metric family: its help, its type, and a line per (labels, value).
fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &mut dyn Iterator<Item = (String, f64)>,
) {
    let _ = writeln!(out, "# HELP corral_{name} {help}\n# TYPE corral_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "corral_{name}{{{labels}}} {value}");
    }
}

/// `plugin="<name>"`, escaped.
fn label(name: &str) -> String {
    format!("plugin=\"{}\"", label_value(name))
}

/// The Prometheus text exposition of every plugin's stats.
fn prometheus(admin: &Admin) -> String {
    let statuses = admin.registry.statuses();
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, f64)>| {
            write_family(&mut out, name, kind, help, samples);
        };
    let loaded: Vec<_> = statuses
        .iter()
        .filter_map(|s| {
            s.plugin.as_ref().map(|p| {
                (
                    s.name.as_str(),
                    p.clone(),
                    admin.node.stats(s).unwrap_or_else(|| p.stats()),
                )
            })
        })
        .collect();
    family(
        "plugin_up",
        "gauge",
        "1 if the plugin is running, 0 if terminated or failed to load.",
        &mut statuses.iter().map(|s| {
            let up = s
                .plugin
                .as_ref()
                .is_some_and(|p| p.state() == PluginState::Running);
            (label(&s.name), f64::from(u8::from(up)))
        }),
    );
    for (entry, pick) in [
        (
            "process_message",
            (|s: &corral::Stats| s.process_message.clone()) as fn(&corral::Stats) -> EntryStats,
        ),
        ("timer_event", |s: &corral::Stats| s.timer_event.clone()),
    ] {
        let with_entry = |name: &str| format!("plugin=\"{}\",entry=\"{entry}\"", label_value(name));
        family(
            &format!("{entry}_calls_total"),
            "counter",
            &format!("Calls to {entry}."),
            &mut loaded
                .iter()
                .map(|(n, _, s)| (with_entry(n), pick(s).calls as f64)),
        );
        family(
            &format!("{entry}_failures_total"),
            "counter",
            &format!("Failed calls to {entry}."),
            &mut loaded
                .iter()
                .map(|(n, _, s)| (with_entry(n), pick(s).failures as f64)),
        );
        family(
            &format!("{entry}_duration_seconds_avg"),
            "gauge",
            &format!("Mean duration of a call to {entry}."),
            &mut loaded
                .iter()
                .map(|(n, _, s)| (with_entry(n), pick(s).average_duration().as_secs_f64())),
        );
        family(
            &format!("{entry}_duration_seconds_max"),
            "gauge",
            &format!("Longest call to {entry}."),
            &mut loaded
                .iter()
                .map(|(n, _, s)| (with_entry(n), pick(s).max_duration.as_secs_f64())),
        );
    }
    let gauges: [Gauge; 9] = [
        (
            "terminations_total",
            "counter",
            "Times the plugin was terminated.",
            |s| s.terminations,
        ),
        (
            "restarts_total",
            "counter",
            "Times the plugin was restarted after a termination, by its restart policy.",
            |s| s.restarts,
        ),
        (
            "instances_total",
            "counter",
            "Instances created (1 at load, 1 after each trap).",
            |s| s.instances,
        ),
        ("fuel_used_max", "gauge", "The most fuel one call used.", |s| {
            s.max_fuel_used
        }),
        (
            "memory_bytes",
            "gauge",
            "Memory the current instance holds.",
            |s| s.memory_bytes,
        ),
        (
            "memory_peak_bytes",
            "gauge",
            "The most memory any instance held.",
            |s| s.peak_memory_bytes,
        ),
        (
            "output_bytes_max",
            "gauge",
            "The most output one call wrote.",
            |s| s.max_output_bytes,
        ),
        (
            "emitted_total",
            "counter",
            "Messages emitted by successful calls.",
            |s| s.emitted,
        ),
        (
            "discarded_total",
            "counter",
            "Messages emitted by failed calls, discarded.",
            |s| s.discarded,
        ),
    ];
    for (name, kind, help, pick) in gauges {
        family(
            name,
            kind,
            help,
            &mut loaded.iter().map(|(n, _, s)| (label(n), pick(s) as f64)),
        );
    }
    let compiles = admin.registry.host().compile_stats();
    family(
        "components_total",
        "counter",
        "Components loaded, by where their compiled code came from: the in-memory memo, the disk cache, Cranelift (optimised code), or Winch (baseline code, serving while Cranelift compiles).",
        &mut [
            ("memo", compiles.memo_hits),
            ("cache", compiles.cache_hits),
            ("compiled", compiles.compiled),
            ("baseline", compiles.baseline_compiled),
        ]
        .into_iter()
        .map(|(source, n)| (format!("source=\"{source}\""), n as f64)),
    );
    admin.node.metrics(&statuses, &mut out);
    out
}

/// One machine's families: the plugins' readers, the logs, intake.
fn local_metrics(admin: &Local, statuses: &[PluginStatus], out: &mut String) {
    let mut family =
        |name: &str, kind: &str, help: &str, samples: &mut dyn Iterator<Item = (String, f64)>| {
            write_family(out, name, kind, help, samples);
        };
    let readers: Vec<_> = statuses
        .iter()
        .filter_map(|s| {
            let reader = admin.pipeline.reader(&s.name)?;
            Some((s.name.clone(), reader, admin.pipeline.lag(&s.name)?))
        })
        .collect();
    family(
        "lag_messages",
        "gauge",
        "Messages in the log the plugin has not read yet.",
        &mut readers.iter().map(|(n, _, l)| (label(n), l.messages as f64)),
    );
    family(
        "lag_bytes",
        "gauge",
        "Bytes of the log the plugin has not read yet.",
        &mut readers.iter().map(|(n, _, l)| (label(n), l.bytes as f64)),
    );
    family(
        "processed_total",
        "counter",
        "Messages the plugin's matcher took from the log and handed to it.",
        &mut readers
            .iter()
            .map(|(n, r, _)| (label(n), r.processed.load(Ordering::Relaxed) as f64)),
    );
    family(
        "skipped_total",
        "counter",
        "Log records the plugin could not read (damage) or that were deleted before it came back.",
        &mut readers
            .iter()
            .map(|(n, r, _)| (label(n), r.skipped.load(Ordering::Relaxed) as f64)),
    );
    family(
        "checkpoints_total",
        "counter",
        "Checkpoints the plugin committed.",
        &mut readers
            .iter()
            .map(|(n, r, _)| (label(n), r.checkpoints.load(Ordering::Relaxed) as f64)),
    );
    let (input, output) = (admin.pipeline.input_status(), admin.pipeline.output_status());
    for (name, help, value) in [
        (
            "log_end",
            "Messages appended to the log since it began.",
            input.durable.seq,
        ),
        (
            "log_unread_bytes",
            "Bytes of the log some plugin has not read yet.",
            input.unread_bytes,
        ),
        (
            "log_max_bytes",
            "The bound on unread bytes (--max-log): intake waits at it.",
            input.max_bytes,
        ),
        (
            "log_disk_bytes",
            "Bytes of the log's segments on disk.",
            input.disk_bytes,
        ),
        (
            "log_full_waits_total",
            "Appends that waited for room in the log.",
            input.full_waits,
        ),
        (
            "output_end",
            "Messages emitted into the output log since it began.",
            output.durable.seq,
        ),
        (
            "output_written_total",
            "Lines the output wrote since the start.",
            admin.pipeline.output_written(),
        ),
        (
            "output_lag_messages",
            "Emitted messages the output has not written yet.",
            admin.pipeline.output_lag().messages,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP corral_{name} {help}\n# TYPE corral_{name} gauge\ncorral_{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP corral_unmatched_messages_total Messages accepted since the start that no loaded plugin's matcher took.\n\
         # TYPE corral_unmatched_messages_total counter\ncorral_unmatched_messages_total {}",
        admin.pipeline.unmatched()
    );
    crate::intake::write_metrics(&admin.intake, out, &label_value);
}

#[cfg(test)]
mod tests {
    use super::label_value;

    #[test]
    fn label_values_are_escaped_per_the_exposition_format() {
        assert_eq!(label_value("cpu"), "cpu");
        assert_eq!(
            label_value("a\"} 1\ncorral_forged{x=\"\\"),
            "a\\\"} 1\\ncorral_forged{x=\\\"\\\\"
        );
    }
}
