//! The benchmark filter (`just bench`), written as a Heka user wrote such a filter in
//! Lua: it sums the numeric field `value`, counts messages per type, and every 1,000th
//! message emits a `bench.summary` with the sum, the number seen and a field per type.
//! `host/benches/dispatch.rs` runs the same logic natively, in Lua, and through this
//! guest. A message of type `bench.trap` traps, for the fresh-instance benchmark.

use std::cell::RefCell;
use std::collections::BTreeMap;

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

/// Every this many messages, a summary.
const SUMMARY_EVERY: u64 = 1_000;

#[derive(Default)]
struct Totals {
    sum: i64,
    seen: u64,
    per_type: BTreeMap<String, i64>,
}

thread_local! {
    static TOTALS: RefCell<Totals> = RefCell::default();
}

struct BenchFilter;

impl Guest for BenchFilter {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let value = match message.field("value") {
            Some(Value::Int(v)) => v,
            Some(Value::Float(v)) => v as i64,
            _ => 0,
        };
        let type_ = message.type_();
        if type_ == "bench.trap" {
            std::process::abort();
        }
        TOTALS.with_borrow_mut(|totals| {
            totals.sum += value;
            totals.seen += 1;
            match totals.per_type.get_mut(&type_) {
                Some(count) => *count += 1,
                None => {
                    totals.per_type.insert(type_, 1);
                }
            }
            if totals.seen.is_multiple_of(SUMMARY_EVERY) {
                let mut summary = OutMessage::new("bench.summary")
                    .field("sum", Value::Int(totals.sum))
                    .field("seen", Value::Int(totals.seen as i64));
                for (type_, count) in &totals.per_type {
                    summary = summary.field(type_.as_str(), Value::Int(*count));
                }
                corral_guest::emit(&summary);
            }
        });
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(BenchFilter);
