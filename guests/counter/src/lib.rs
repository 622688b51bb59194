//! Example plugin: counts messages per type in its store, and emits the totals on every
//! timer event as one `counter.totals` message with a field per type and the number of
//! messages counted as its payload. `py-counter` and `js-counter` are the same plugin in
//! Python and JavaScript.

use corral_guest::{Failure, Guest, Message, OutMessage, Value, store};

const PREFIX: &str = "count/";

struct Counter;

fn read(key: &str) -> Result<i64, Failure> {
    let bytes = store::get(key).map_err(|e| Failure::non_fatal(format!("store get: {e:?}")))?;
    Ok(bytes
        .and_then(|b| b.try_into().ok())
        .map(i64::from_le_bytes)
        .unwrap_or(0))
}

impl Guest for Counter {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let key = format!("{PREFIX}{}", message.type_());
        let count = read(&key)? + 1;
        store::set(&key, &count.to_le_bytes()).map_err(|e| Failure::non_fatal(format!("store set: {e:?}")))
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        let keys = store::list_keys(PREFIX).map_err(|e| Failure::non_fatal(format!("store list: {e:?}")))?;
        let mut totals = OutMessage::new("counter.totals");
        let mut all = 0;
        for key in keys {
            let count = read(&key)?;
            all += count;
            totals = totals.field(&key[PREFIX.len()..], Value::Int(count));
        }
        corral_guest::emit(&totals.payload(all.to_string()));
        Ok(())
    }
}

corral_guest::export!(Counter);
