//! The benchmark filter (`just bench`), written as a Heka user wrote such a filter in
//! Lua: it sums the numeric field `value`, counts messages per type, and every 1,000th
//! message emits a `bench.summary` with the sum, the number seen and a field per type.
//! `host/benches/dispatch.rs` runs the same logic natively, in Lua, and through this
//! guest. A message of type `bench.trap` traps, for the fresh-instance benchmark.

use corral_guest::{Failure, Guest, Message, Value};

include!("totals.rs");

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
        count(&type_, value);
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(BenchFilter);
