//! Test plugin: a `batch-filter` plugin as it was built before the `message-batch`, its
//! `process-batch` taking the `batch` record's three lists (`text`, `messages`,
//! `fields`; the numbers are those of `wit/plugin.wit`'s `message-batch`, spans counted
//! from the start of `text`). The host still calls such a plugin with that layout
//! (`tests/all/batch.rs`). For each message it does what `batch-probe` does with the
//! types the test sends: `fail` is a non-fatal failure `failed <payload>`; anything else
//! emits a `probe.seen` echoing the message's payload, `type`, `logger`, `severity`,
//! `timestamp`, then each field as `N.name`.

wit_bindgen::generate!({
    inline: "
        package acme:legacy;

        world batch-filter-lists {
            import corral:plugin/log@0.1.0;
            import corral:plugin/config@0.1.0;
            import corral:plugin/store@0.1.0;
            import corral:plugin/emit@0.1.0;

            use corral:plugin/types@0.1.0.{batch, batch-failure, failure};

            export process-batch: func(batch: batch) -> list<batch-failure>;
            export timer-event: func(now-ns: s64) -> result<_, failure>;
        }
    ",
    path: "../../wit",
    generate_all,
});

use corral::plugin::emit::emit;
use corral::plugin::types::{Field, OutMessage, Value};

struct Probe;

/// The text a span (`offset << 32 | length`) names, empty if it lies outside.
fn bytes(text: &[u8], span: u64) -> &[u8] {
    let (at, len) = ((span >> 32) as usize, (span & 0xffff_ffff) as usize);
    text.get(at..at.saturating_add(len)).unwrap_or(&[])
}

fn string(text: &[u8], span: u64) -> String {
    String::from_utf8_lossy(bytes(text, span)).into_owned()
}

/// A field's three numbers: its name, its kind and its value.
fn field(text: &[u8], index: usize, words: &[u64]) -> Field {
    let (name, kind, value) = (words[0], words[1], words[2]);
    Field {
        name: format!("{index}.{}", string(text, name)),
        value: match kind {
            0 => Value::String(string(text, value)),
            1 => Value::Bytes(bytes(text, value).to_vec()),
            2 => Value::Int(value as i64),
            3 => Value::Float(f64::from_bits(value)),
            _ => Value::Bool(value != 0),
        },
    }
}

impl Guest for Probe {
    fn process_batch(batch: Batch) -> Vec<BatchFailure> {
        let text = &batch.text[..];
        let mut failures = Vec::new();
        for (index, m) in batch.messages.chunks_exact(6).enumerate() {
            let type_ = string(text, m[2]);
            let payload = string(text, m[4]);
            if type_ == "fail" {
                failures.push(BatchFailure {
                    index: index as u32,
                    failure: Failure::NonFatal(format!("failed {payload}")),
                });
                continue;
            }
            let mut fields = vec![
                Field {
                    name: "type".into(),
                    value: Value::String(type_),
                },
                Field {
                    name: "logger".into(),
                    value: Value::String(string(text, m[3])),
                },
                Field {
                    name: "severity".into(),
                    value: Value::Int(i64::from(m[1] as i32)),
                },
                Field {
                    name: "timestamp".into(),
                    value: Value::Int(m[0] as i64),
                },
            ];
            let (first, count) = ((m[5] >> 32) as usize, (m[5] & 0xffff_ffff) as usize);
            let own = batch.fields.get(first * 3..(first + count) * 3).unwrap_or(&[]);
            fields.extend(
                own.chunks_exact(3)
                    .enumerate()
                    .map(|(i, words)| field(text, i, words)),
            );
            emit(&OutMessage {
                timestamp: None,
                type_: "probe.seen".into(),
                logger: String::new(),
                severity: 6,
                payload,
                fields,
            });
        }
        failures
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

export!(Probe);
