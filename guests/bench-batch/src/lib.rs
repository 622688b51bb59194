//! The benchmark filter (`just bench`) on the batch path: `bench-filter`'s logic, written
//! as a [`Plugin`] over a [`MessageView`], so the host hands it every queued message in
//! one call and each field is read in the guest's own memory. It sums the numeric field
//! `value`, counts messages per type, and every 1,000th message emits a `bench.summary`
//! with the sum, the number seen and a field per type. A message of type `bench.trap`
//! traps, for the fresh-instance benchmark.

use std::cell::RefCell;
use std::collections::BTreeMap;

use corral_guest::{Failure, FieldValue, MessageView, OutMessage, Plugin, Value};

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
        TOTALS.with_borrow_mut(|totals| {
            totals.sum += value;
            totals.seen += 1;
            // A type already counted costs no allocation.
            match totals.per_type.get_mut(type_) {
                Some(count) => *count += 1,
                None => {
                    totals.per_type.insert(type_.to_owned(), 1);
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
}

corral_guest::export_plugin!(BenchBatch);
