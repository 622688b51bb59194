//! The benchmark filter (`just bench`) on the batch path: `bench-filter`'s logic, written
//! as a [`Plugin`] over a [`MessageView`], so the host hands it every queued message in
//! one call and each field is read in the guest's own memory. It sums the numeric field
//! `value`, counts messages per type, and every 1,000th message emits a `bench.summary`
//! with the sum, the number seen and a field per type. A message of type `bench.trap`
//! traps, for the fresh-instance benchmark.

use corral_guest::{Failure, FieldValue, MessageView, Plugin};

include!("../../bench-filter/src/totals.rs");

struct BenchBatch;

impl Plugin for BenchBatch {
    fn process_message(message: &MessageView<'_>) -> Result<(), Failure> {
        let value = match message.field("value") {
            Some(FieldValue::Int(v)) => v,
            Some(FieldValue::Float(v)) => v as i64,
            _ => 0,
        };
        let type_ = message.type_();
        if type_ == "bench.trap" {
            std::process::abort();
        }
        count(type_, value);
        Ok(())
    }
}

corral_guest::export_plugin!(BenchBatch);
