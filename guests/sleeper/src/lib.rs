//! Hostile plugin: blocks in the host, where the epoch deadline cannot reach it.
//!
//! process-message by the message's type, for `ms` milliseconds (the message's `ms`
//! field, else config `ms`, else one hour):
//!
//! - `sleep`: `std::thread::sleep`;
//! - `block`: `subscribe-duration`, then `pollable.block`;
//! - `poll`: `subscribe-duration`, then `poll`;
//! - `poll-never`: `poll` on an instant no clock reaches;
//! - `ready-loop`: spins on `pollable.ready` of a pollable that is never ready in time;
//! - `read`: reads the file at config `path` (a FIFO with no writer blocks);
//! - anything else: answers at once, emitting `calls`, the calls this instance took.
//!
//! timer-event answers at once. `state.save` sleeps `ms` when config `sleep-in` is
//! `save`, and `state.restore` when it is `restore`; otherwise they hand over nothing.

wit_bindgen::generate!({
    path: "wit",
    world: "sleeper",
    generate_all,
});

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use corral::plugin::config;
use corral::plugin::emit::emit;
use corral::plugin::types::{Field, OutMessage, Value};
use exports::corral::plugin::state;
use wasi::clocks::monotonic_clock;
use wasi::io::poll;

static CALLS: AtomicI64 = AtomicI64::new(0);

struct Sleeper;

fn millis(message: Option<&Message>) -> u64 {
    let field = message.and_then(|m| match m.field("ms") {
        Some(Value::Int(ms)) => u64::try_from(ms).ok(),
        _ => None,
    });
    field
        .or_else(|| config::get("ms").and_then(|ms| ms.parse().ok()))
        .unwrap_or(3_600_000)
}

fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}

fn sleep_if(place: &str) {
    if config::get("sleep-in").as_deref() == Some(place) {
        std::thread::sleep(Duration::from_millis(millis(None)));
    }
}

impl Guest for Sleeper {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        let ms = millis(Some(message));
        match message.type_().as_str() {
            "sleep" => std::thread::sleep(Duration::from_millis(ms)),
            "block" => monotonic_clock::subscribe_duration(nanos(ms)).block(),
            "poll" => {
                poll::poll(&[&monotonic_clock::subscribe_duration(nanos(ms))]);
            }
            "poll-never" => {
                poll::poll(&[&monotonic_clock::subscribe_instant(u64::MAX)]);
            }
            "ready-loop" => {
                let pollable = monotonic_clock::subscribe_duration(nanos(ms));
                while !pollable.ready() {}
            }
            "read" => {
                let path = config::get("path").unwrap_or_default();
                let read = std::fs::read(&path).map_err(|e| Failure::NonFatal(format!("{path}: {e}")))?;
                return Err(Failure::NonFatal(format!("read {} bytes", read.len())));
            }
            _ => emit(&OutMessage {
                timestamp: None,
                type_: "sleeper".into(),
                logger: String::new(),
                severity: 6,
                payload: String::new(),
                fields: vec![Field {
                    name: "calls".into(),
                    value: Value::Int(calls),
                }],
            }),
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

impl state::Guest for Sleeper {
    fn save() -> Result<Vec<u8>, String> {
        sleep_if("save");
        Ok(Vec::new())
    }

    fn restore(_: Vec<u8>) -> Result<(), String> {
        sleep_if("restore");
        Ok(())
    }
}

export!(Sleeper);
