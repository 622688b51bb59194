//! Test plugin for the durable log's crash tests: counts every message twice, in guest
//! memory (handed over through the state interface) and under the store key `count`,
//! and emits a `tally` per message with the message's int field `n` and both counts.
//! A message of type `tally.report` is not counted: it emits a `tally.report` with the
//! fields `state` and `store`, the two counts.

wit_bindgen::generate!({
    path: "../../wit",
    world: "stateful-filter",
});

use std::sync::atomic::{AtomicI64, Ordering};

use corral::plugin::emit::emit;
use corral::plugin::store;
use corral::plugin::types::{Field, OutMessage, Value};
use exports::corral::plugin::state;

static COUNT: AtomicI64 = AtomicI64::new(0);

struct Tally;

fn out(type_: &str, fields: Vec<(&str, i64)>) {
    emit(&OutMessage {
        timestamp: None,
        type_: type_.into(),
        logger: String::new(),
        severity: 6,
        payload: String::new(),
        fields: fields
            .into_iter()
            .map(|(name, v)| Field {
                name: name.into(),
                value: Value::Int(v),
            })
            .collect(),
    });
}

fn stored() -> Result<i64, Failure> {
    let bytes = store::get("count").map_err(|e| Failure::Fatal(format!("store get: {e:?}")))?;
    Ok(bytes
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0))
}

impl Guest for Tally {
    fn process_message(message: &Message) -> Result<(), Failure> {
        if message.type_() == "tally.report" {
            out(
                "tally.report",
                vec![("state", COUNT.load(Ordering::Relaxed)), ("store", stored()?)],
            );
            return Ok(());
        }
        let n = match message.field("n") {
            Some(Value::Int(n)) => n,
            _ => -1,
        };
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        let in_store = stored()? + 1;
        store::set("count", &in_store.to_le_bytes())
            .map_err(|e| Failure::Fatal(format!("store set: {e:?}")))?;
        out("tally", vec![("n", n), ("count", count), ("store", in_store)]);
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

impl state::Guest for Tally {
    fn save() -> Result<Vec<u8>, String> {
        Ok(COUNT.load(Ordering::Relaxed).to_le_bytes().to_vec())
    }

    fn restore(data: Vec<u8>) -> Result<(), String> {
        let bytes: [u8; 8] = data
            .try_into()
            .map_err(|d: Vec<u8>| format!("expected 8 bytes, got {}", d.len()))?;
        COUNT.store(i64::from_le_bytes(bytes), Ordering::Relaxed);
        Ok(())
    }
}

export!(Tally);
