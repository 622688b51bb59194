// Shared by swap-a and swap-b, which differ only in VERSION: a tally of messages kept in
// guest memory and handed over through the state interface when the plugin is swapped.
// Every process-message emits `{version, count}`; timer-event emits the same.

wit_bindgen::generate!({
    path: "../../wit",
    world: "stateful-filter",
});

use std::sync::atomic::{AtomicI64, Ordering};

use corral::plugin::emit::emit;
use corral::plugin::types::{Field, OutMessage, Value};
use exports::corral::plugin::state;

static COUNT: AtomicI64 = AtomicI64::new(0);

struct Tally;

fn report(count: i64) {
    emit(&OutMessage {
        timestamp: None,
        type_: "tally".into(),
        logger: String::new(),
        severity: 6,
        payload: String::new(),
        fields: vec![
            Field { name: "version".into(), value: Value::String(VERSION.into()) },
            Field { name: "count".into(), value: Value::Int(count) },
        ],
    });
}

impl Guest for Tally {
    fn process_message(_: &Message) -> Result<(), Failure> {
        report(COUNT.fetch_add(1, Ordering::Relaxed) + 1);
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        report(COUNT.load(Ordering::Relaxed));
        Ok(())
    }
}

impl state::Guest for Tally {
    fn save() -> Result<Vec<u8>, String> {
        Ok(COUNT.load(Ordering::Relaxed).to_le_bytes().to_vec())
    }

    fn restore(data: Vec<u8>) -> Result<(), String> {
        let bytes: [u8; 8] = data.try_into().map_err(|d: Vec<u8>| format!("expected 8 bytes, got {}", d.len()))?;
        COUNT.store(i64::from_le_bytes(bytes), Ordering::Relaxed);
        Ok(())
    }
}

export!(Tally);
