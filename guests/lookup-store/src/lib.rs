//! Example plugin: a key-value lookup kept in the plugin's store — one of two
//! interchangeable backends (the other is `lookup-memory`): replacing one file with the
//! other swaps the backend live, and callers see the same messages.
//!
//! - **process-message**, by message type:
//!   - `lookup.set`, string fields `key` and `value`: stores the pair;
//!   - `lookup.delete`, string field `key`: removes it (absent keys are fine);
//!   - `lookup.get`, string field `key`: emits `lookup.result` with string field `key`,
//!     string field `value` (only when found), bool field `found` and string field
//!     `backend` = "store";
//!   - any other type: nothing.
//!
//!   A missing or non-string `key` (or `value`, for `lookup.set`) is a non-fatal failure,
//!   and so is a store error (e.g. a key or value over the host's size limits).
//! - **timer-event**: emits `lookup.size` with int field `entries` and string field
//!   `backend` = "store".
//! - **config**: none.
//!
//! Each pair is kept in the store under `lookup/<key>`, so the data belongs to the
//! plugin's name: it survives hot swaps, traps and (with a persistent store backend)
//! restarts, with nothing to hand over.

use corral_guest::{Failure, Guest, Message, OutMessage, Value, store};

const BACKEND: &str = "store";
const PREFIX: &str = "lookup/";

fn string_field(message: &Message, name: &str) -> Result<String, Failure> {
    match message.field(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(Failure::non_fatal(format!("field `{name}` is not a string"))),
        None => Err(Failure::non_fatal(format!("missing field `{name}`"))),
    }
}

fn store_failure(error: store::Error) -> Failure {
    Failure::non_fatal(format!("store: {error:?}"))
}

struct Lookup;

impl Guest for Lookup {
    fn process_message(message: &Message) -> Result<(), Failure> {
        match message.type_().as_str() {
            "lookup.set" => {
                let (key, value) = (string_field(message, "key")?, string_field(message, "value")?);
                store::set(&format!("{PREFIX}{key}"), value.as_bytes()).map_err(store_failure)?;
            }
            "lookup.delete" => {
                let key = string_field(message, "key")?;
                store::delete(&format!("{PREFIX}{key}")).map_err(store_failure)?;
            }
            "lookup.get" => {
                let key = string_field(message, "key")?;
                let value = store::get(&format!("{PREFIX}{key}")).map_err(store_failure)?;
                let mut result = OutMessage::new("lookup.result").field("key", Value::String(key));
                if let Some(value) = &value {
                    result = result.field("value", Value::String(String::from_utf8_lossy(value).into()));
                }
                corral_guest::emit(
                    &result
                        .field("found", Value::Bool(value.is_some()))
                        .field("backend", Value::String(BACKEND.into())),
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let entries = store::list_keys(PREFIX).map_err(store_failure)?.len() as i64;
        corral_guest::emit(
            &OutMessage::new("lookup.size")
                .field("entries", Value::Int(entries))
                .field("backend", Value::String(BACKEND.into())),
        );
        Ok(())
    }
}

corral_guest::export!(Lookup);
