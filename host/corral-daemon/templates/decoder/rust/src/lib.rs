//! {{name}}: a Corral decoder. Each raw record its input reads (a line of a tailed
//! file, a syslog datagram or frame) becomes a `{{name}}` message: the record as its
//! payload, its length and where it came from as fields. An empty record fails: the host
//! counts it and keeps it as a `corral.decode-failure` message.

// `Guest`, `RawBatch`, `Decoded` and `Failure` come from the world; `export!` registers
// the decoder.
wit_bindgen::generate!({ path: "wit", world: "decoder" });

use corral::plugin::types::{BatchFailure, Field, OutMessage, Value};

struct Decoder;

/// The bytes of a span of the batch's text: `offset << 32 | length`.
fn span(batch: &RawBatch, span: u64) -> &[u8] {
    let start = (span >> 32) as usize;
    let end = start + (span & 0xffff_ffff) as usize;
    batch.text.get(start..end).unwrap_or(&[])
}

impl Guest for Decoder {
    /// Called with one or more records, in the order they were read: six numbers per
    /// record in `records.records` (the spans of its bytes, input, file path, its byte
    /// offset, the span of its peer, its receive time). Return the messages decoded and
    /// the records that failed, by increasing index: `Failure::NonFatal` is counted and
    /// the next record decoded, `Failure::Fatal` has the decoder terminated.
    fn decode(records: RawBatch) -> Decoded {
        let mut decoded = Decoded {
            messages: Vec::new(),
            failures: Vec::new(),
        };
        for (index, words) in records.records.chunks_exact(6).enumerate() {
            let data = span(&records, words[0]);
            if data.is_empty() {
                decoded.failures.push(BatchFailure {
                    index: index as u32,
                    failure: Failure::NonFatal("an empty record".into()),
                });
                continue;
            }
            let path = String::from_utf8_lossy(span(&records, words[2])).into_owned();
            decoded.messages.push(OutMessage {
                timestamp: None,
                type_: "{{name}}".into(),
                logger: String::new(),
                severity: 6,
                payload: String::from_utf8_lossy(data).into_owned(),
                fields: vec![
                    Field {
                        name: "length".into(),
                        value: Value::Int(data.len() as i64),
                    },
                    Field {
                        name: "path".into(),
                        value: Value::String(path),
                    },
                    Field {
                        name: "offset".into(),
                        value: Value::Int(words[3] as i64),
                    },
                ],
            });
        }
        decoded
    }

    /// Called every `ticker-interval-ms` (a sidecar setting) with the time in
    /// nanoseconds since the Unix epoch.
    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

export!(Decoder);
