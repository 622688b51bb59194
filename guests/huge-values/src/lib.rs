//! Hostile plugin: pushes config and store values to their size limits, and reports what
//! the host allowed. process-message, by message type:
//!
//! - `config`: reads config `big` and emits `config-len` with int field `len`, its length
//!   in bytes (0 when it is not set);
//! - `store-big`: stores `bytes` (int field, default 2 MiB) bytes of 7 under key `big`
//!   and emits `store-result` with string field `outcome`: "ok" or "error: <Debug of the
//!   store error>";
//! - `store-many`: stores 1 KiB values under keys `k0`, `k1`, … for `count` keys (int
//!   field, default 1000), stopping at the first error, and emits `store-result` with
//!   `outcome` as above and int field `written`, how many were stored;
//! - any other type: nothing.
//!
//! timer-event answers at once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value, store};

fn int_field(message: &Message, name: &str, default: i64) -> i64 {
    match message.field(name) {
        Some(Value::Int(n)) => n,
        _ => default,
    }
}

fn outcome(result: Result<(), store::Error>) -> Value {
    Value::String(match result {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("error: {e:?}"),
    })
}

struct HugeValues;

impl Guest for HugeValues {
    fn process_message(message: &Message) -> Result<(), Failure> {
        match message.type_().as_str() {
            "config" => {
                let len = corral_guest::config::get("big").map_or(0, |v| v.len());
                corral_guest::emit(&OutMessage::new("config-len").field("len", Value::Int(len as i64)));
            }
            "store-big" => {
                let bytes = int_field(message, "bytes", 2 << 20).max(0) as usize;
                let result = store::set("big", &vec![7u8; bytes]);
                corral_guest::emit(&OutMessage::new("store-result").field("outcome", outcome(result)));
            }
            "store-many" => {
                let count = int_field(message, "count", 1000);
                let value = vec![7u8; 1 << 10];
                let mut written = 0i64;
                let mut result = Ok(());
                while written < count {
                    result = store::set(&format!("k{written}"), &value);
                    if result.is_err() {
                        break;
                    }
                    written += 1;
                }
                corral_guest::emit(
                    &OutMessage::new("store-result")
                        .field("outcome", outcome(result))
                        .field("written", Value::Int(written)),
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(HugeValues);
