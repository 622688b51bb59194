//! Hostile plugin: tries store keys that might reach outside its own namespace. On
//! process-message of type `escape` it tries, in order, the keys
//!
//! 0. `""` (empty), 1. 4096 `a`s, 2. `../other/count/x`, 3. `other-plugin/count/x`,
//! 4. `count/\0x`, 5. `"\u{fffd}\u{1}\u{7f}"`, 6. `/`, 7. `*`;
//!
//! for each it calls `store.set(key, b"x")`, then `store.get(key)` and
//! `store.list-keys("")`. It then emits one `escape-report` message with string fields
//! `set-<i>` ("ok" or "error: <Debug of the store error>") and `get-<i>` (as `read-other`)
//! per attempt, `keys` (the final `list-keys("")`, joined with ",", or "error: …") and
//! `read-other`: `store.get("count/x")` as "none", "some:<UTF-8, lossy>" or "error: …" —
//! another plugin's key, which this one must not see. Other types: nothing.
//! timer-event answers at once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value, store};

fn render_get(result: Result<Option<Vec<u8>>, store::Error>) -> Value {
    Value::String(match result {
        Ok(None) => "none".to_owned(),
        Ok(Some(value)) => format!("some:{}", String::from_utf8_lossy(&value)),
        Err(e) => format!("error: {e:?}"),
    })
}

fn render_keys(result: Result<Vec<String>, store::Error>) -> Value {
    Value::String(match result {
        Ok(keys) => keys.join(","),
        Err(e) => format!("error: {e:?}"),
    })
}

struct StoreEscape;

impl Guest for StoreEscape {
    fn process_message(message: &Message) -> Result<(), Failure> {
        if message.type_() != "escape" {
            return Ok(());
        }
        let keys = [
            String::new(),
            "a".repeat(4096),
            "../other/count/x".to_owned(),
            "other-plugin/count/x".to_owned(),
            "count/\0x".to_owned(),
            "\u{fffd}\u{1}\u{7f}".to_owned(),
            "/".to_owned(),
            "*".to_owned(),
        ];
        let mut report = OutMessage::new("escape-report");
        for (i, key) in keys.iter().enumerate() {
            let set = match store::set(key, b"x") {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e:?}"),
            };
            let get = render_get(store::get(key));
            std::hint::black_box(store::list_keys("")).ok();
            report = report
                .field(format!("set-{i}"), Value::String(set))
                .field(format!("get-{i}"), get);
        }
        corral_guest::emit(
            &report
                .field("keys", render_keys(store::list_keys("")))
                .field("read-other", render_get(store::get("count/x"))),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(StoreEscape);
