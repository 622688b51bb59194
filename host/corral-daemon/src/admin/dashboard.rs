//! The live dashboard at `GET /`: one page, its script and style, and the vendored
//! charting library, all embedded in the binary — no build step, no network.
//!
//! The page holds no data: it fetches `GET /status` once a second with the bearer
//! token, if the daemon has one, which is why these routes are the only ones served
//! without it. Every response carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline script, no framing, no form submission), so
//! even markup a plugin smuggled into a reason could not run; the page inserts guest
//! text as text in the first place.
//!
//! The registry's events (loads, swaps, unloads, failed loads) are kept here, the last
//! [`RECENT_EVENTS`] of them, for the page's event list: a plugin swapped twice between
//! two polls still shows both swaps.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::Admin;
use crate::lock;
use corral::{Event, Registry, StateHandoff};

/// The uPlot version vendored under `assets/uplot/` (see its README there).
pub(super) const UPLOT_VERSION: &str = "1.6.32";

/// How many registry events the dashboard keeps.
pub(super) const RECENT_EVENTS: usize = 64;

/// Scripts, styles, images and requests from this origin only; nothing inline, nothing
/// framed, no form ever submitted by the browser (the token form is handled in script).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The files the page is made of: path under `/dashboard/`, content type, content.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/dashboard.css"),
    ),
    ("icon.svg", "image/svg+xml", include_bytes!("assets/icon.svg")),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uplot/uPlot.min.css"),
    ),
    (
        "uPlot-LICENSE.txt",
        "text/plain; charset=utf-8",
        include_bytes!("assets/uplot/LICENSE"),
    ),
];

const INDEX: &str = include_str!("assets/index.html");

/// The page and its assets, served without the token: they hold no data.
pub(super) fn routes() -> Router<Admin> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/{file}", get(asset))
}

fn page(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Embedded in the binary: a new binary may bring a new page, so always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    page(
        "text/html; charset=utf-8",
        INDEX.replace("{{UPLOT_VERSION}}", UPLOT_VERSION),
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, *body),
        None => super::error(StatusCode::NOT_FOUND, format!("no dashboard file `{file}`")),
    }
}

/// One registry event, numbered and timed.
struct Recorded {
    seq: u64,
    at: SystemTime,
    event: Event,
}

/// The registry's last [`RECENT_EVENTS`] events, for the page.
pub(super) struct Events {
    recent: Mutex<(u64, VecDeque<Recorded>)>,
}

impl Events {
    /// Starts keeping `registry`'s events; a thread follows them until the returned
    /// `Events` is dropped (it notices at the next event).
    pub(super) fn follow(registry: &Registry) -> Arc<Events> {
        let events = Arc::new(Events {
            recent: Mutex::new((0, VecDeque::with_capacity(RECENT_EVENTS))),
        });
        let receiver = registry.subscribe();
        let weak: Weak<Events> = Arc::downgrade(&events);
        let spawned = std::thread::Builder::new()
            .name("corral-admin-events".into())
            .spawn(move || {
                for event in receiver {
                    let Some(events) = weak.upgrade() else { break };
                    events.record(event);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot follow the registry's events, the dashboard lists none: {e}");
        }
        events
    }

    fn record(&self, event: Event) {
        let mut recent = lock(&self.recent);
        recent.0 += 1;
        let seq = recent.0;
        if recent.1.len() == RECENT_EVENTS {
            recent.1.pop_front();
        }
        recent.1.push_back(Recorded {
            seq,
            at: SystemTime::now(),
            event,
        });
    }

    /// The kept events, oldest first.
    pub(super) fn json(&self) -> Json {
        Json::Array(lock(&self.recent).1.iter().map(event_json).collect())
    }
}

fn event_json(recorded: &Recorded) -> Json {
    let at_ns = recorded
        .at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut out = match &recorded.event {
        Event::Loaded { name, version } => json!({"kind": "loaded", "name": name, "version": version}),
        Event::Replaced {
            name,
            old_version,
            new_version,
            state,
        } => json!({
            "kind": "replaced",
            "name": name,
            "old_version": old_version,
            "version": new_version,
            "state": handoff_text(state),
        }),
        Event::Unloaded { name, version } => json!({"kind": "unloaded", "name": name, "version": version}),
        Event::Failed { name, error } => json!({"kind": "failed", "name": name, "error": error}),
    };
    out["seq"] = json!(recorded.seq);
    out["at_ns"] = json!(at_ns);
    out
}

/// What became of the state on a swap, in words.
fn handoff_text(handoff: &StateHandoff) -> String {
    match handoff {
        StateHandoff::NotExported => "state not exported".into(),
        StateHandoff::Nothing => "no state to hand over".into(),
        StateHandoff::Restored { bytes } => format!("state restored ({bytes} bytes)"),
        StateHandoff::Discarded { old, new } => {
            format!("state discarded: preservation version {old} → {new}")
        }
        StateHandoff::SaveFailed(e) => format!("state save failed, started empty: {e}"),
        StateHandoff::RestoreFailed(e) => format!("state restore failed, started empty: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_events_are_kept_numbered_in_order() {
        let events = Events {
            recent: Mutex::new((0, VecDeque::new())),
        };
        for i in 0..RECENT_EVENTS + 3 {
            events.record(Event::Failed {
                name: format!("p{i}"),
                error: "bad".into(),
            });
        }
        let json = events.json();
        let list = json.as_array().unwrap();
        assert_eq!(list.len(), RECENT_EVENTS);
        assert_eq!(list[0]["seq"], 4);
        assert_eq!(list[0]["name"], "p3");
        assert_eq!(list[RECENT_EVENTS - 1]["seq"], RECENT_EVENTS as u64 + 3);
        assert_eq!(list[0]["kind"], "failed");
    }

    #[test]
    fn every_asset_the_page_names_is_served() {
        let page = INDEX.to_owned() + std::str::from_utf8(ASSETS[0].2).unwrap();
        for (name, _, _) in ASSETS {
            if name.ends_with(".txt") || *name == "dashboard.js" {
                continue;
            }
            assert!(page.contains(&format!("/dashboard/{name}")), "{name} is not used");
        }
        for (at, _) in INDEX.match_indices("/dashboard/") {
            let rest = &INDEX[at + "/dashboard/".len()..];
            let file = &rest[..rest.find('"').unwrap()];
            assert!(
                ASSETS.iter().any(|(name, _, _)| *name == file),
                "`{file}` is not served"
            );
        }
    }
}
