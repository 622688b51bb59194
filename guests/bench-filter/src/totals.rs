// Shared by bench-filter and bench-batch, which differ only in how they read a message:
// the filter's totals, and its summary every 1,000th message.

use std::cell::RefCell;
use std::collections::BTreeMap;

use corral_guest::OutMessage;

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

/// Counts one message of type `type_` with the field `value`, and emits the summary
/// when it is due.
fn count(type_: &str, value: i64) {
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
                .field("sum", corral_guest::Value::Int(totals.sum))
                .field("seen", corral_guest::Value::Int(totals.seen as i64));
            for (type_, count) in &totals.per_type {
                summary = summary.field(type_.as_str(), corral_guest::Value::Int(*count));
            }
            corral_guest::emit(&summary);
        }
    });
}
