//! Example plugin: a key-value lookup kept in guest memory — one of two interchangeable
//! backends (the other is `lookup-store`): replacing one file with the other swaps the
//! backend live, and callers see the same messages.
//!
//! - **process-message**, by message type:
//!   - `lookup.set`, string fields `key` and `value`: stores the pair;
//!   - `lookup.delete`, string field `key`: removes it (absent keys are fine);
//!   - `lookup.get`, string field `key`: emits `lookup.result` with string field `key`,
//!     string field `value` (only when found), bool field `found` and string field
//!     `backend` = "memory";
//!   - any other type: nothing.
//!
//!   A missing or non-string `key` (or `value`, for `lookup.set`) is a non-fatal failure.
//! - **timer-event**: emits `lookup.size` with int field `entries` and string field
//!   `backend` = "memory".
//! - **config**: none.
//!
//! The map lives in guest memory, so it is lost when the instance traps or the host
//! restarts. It survives a hot swap: this plugin targets the `stateful-filter` world and
//! exports `state`, whose `save` writes the map as a header line followed by
//! netstrings (`<length>:<bytes>,`, key then value) and whose `restore` reads it back,
//! refusing malformed bytes with an error.

wit_bindgen::generate!({
    path: "../../wit",
    world: "stateful-filter",
});

use std::cell::RefCell;
use std::collections::BTreeMap;

use corral::plugin::emit::emit;
use corral::plugin::types::{Field, OutMessage, Value};
use exports::corral::plugin::state;

const BACKEND: &str = "memory";
/// The first bytes of the saved state: what it is, and the version of its format.
const HEADER: &[u8] = b"corral-lookup-memory 1\n";

thread_local! {
    static ENTRIES: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
}

fn string_field(message: &Message, name: &str) -> Result<String, Failure> {
    match message.field(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Failure::NonFatal(format!("field `{name}` is not a string"))),
        None => Err(Failure::NonFatal(format!("missing field `{name}`"))),
    }
}

fn send(type_: &str, fields: Vec<(&str, Value)>) {
    emit(&OutMessage {
        timestamp: None,
        type_: type_.into(),
        logger: String::new(),
        severity: 6,
        payload: String::new(),
        fields: fields
            .into_iter()
            .map(|(name, value)| Field {
                name: name.into(),
                value,
            })
            .collect(),
    });
}

struct Lookup;

impl Guest for Lookup {
    fn process_message(message: &Message) -> Result<(), Failure> {
        match message.type_().as_str() {
            "lookup.set" => {
                let (key, value) = (string_field(message, "key")?, string_field(message, "value")?);
                ENTRIES.with_borrow_mut(|entries| entries.insert(key, value));
            }
            "lookup.delete" => {
                let key = string_field(message, "key")?;
                ENTRIES.with_borrow_mut(|entries| entries.remove(&key));
            }
            "lookup.get" => {
                let key = string_field(message, "key")?;
                let value = ENTRIES.with_borrow(|entries| entries.get(&key).cloned());
                let mut fields = vec![("key", Value::String(key))];
                fields.extend(value.clone().map(|value| ("value", Value::String(value))));
                fields.push(("found", Value::Bool(value.is_some())));
                fields.push(("backend", Value::String(BACKEND.into())));
                send("lookup.result", fields);
            }
            _ => {}
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let entries = ENTRIES.with_borrow(BTreeMap::len) as i64;
        send(
            "lookup.size",
            vec![
                ("entries", Value::Int(entries)),
                ("backend", Value::String(BACKEND.into())),
            ],
        );
        Ok(())
    }
}

/// Appends `text` as a netstring: `<length>:<bytes>,`.
fn put(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("{}:", text.len()).as_bytes());
    out.extend_from_slice(text.as_bytes());
    out.push(b',');
}

/// Takes one netstring off the front of `rest`.
fn take(rest: &mut &[u8]) -> Result<String, String> {
    let colon = rest
        .iter()
        .position(|&b| b == b':')
        .ok_or("truncated: no `<length>:`")?;
    let digits = &rest[..colon];
    let length: usize = std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(digits)))?;
    let body = &rest[colon + 1..];
    if body.get(length) != Some(&b',') {
        return Err(format!("truncated: a {length}-byte string does not end with `,`"));
    }
    let text = String::from_utf8(body[..length].to_vec()).map_err(|_| "a string is not UTF-8")?;
    *rest = &body[length + 1..];
    Ok(text)
}

impl state::Guest for Lookup {
    fn save() -> Result<Vec<u8>, String> {
        let mut out = HEADER.to_vec();
        ENTRIES.with_borrow(|entries| {
            for (key, value) in entries {
                put(&mut out, key);
                put(&mut out, value);
            }
        });
        Ok(out)
    }

    fn restore(data: Vec<u8>) -> Result<(), String> {
        let mut rest = data
            .strip_prefix(HEADER)
            .ok_or("not lookup-memory state: unknown header")?;
        let mut entries = BTreeMap::new();
        while !rest.is_empty() {
            let key = take(&mut rest)?;
            let value = take(&mut rest)?;
            entries.insert(key, value);
        }
        ENTRIES.set(entries);
        Ok(())
    }
}

export!(Lookup);
