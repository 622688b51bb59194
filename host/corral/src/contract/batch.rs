//! Messages laid out flat for the `batch-filter` world's `process-batch`.
//!
//! Through the `message` resource, every field a guest reads is a call back into the
//! host, and a component-model call costs hundreds of nanoseconds however little it
//! carries (BENCHMARKS.md). A batch instead carries one or more messages into the guest
//! in one call, as three lists: every string and byte string in one `text`, six numbers
//! per message and three per field, pointing into `text` by span (`offset << 32 |
//! length`). The layout is plain numbers on purpose: wasmtime copies a list of numbers
//! into the guest as one block, where a list of records is stored field by field (an
//! early layout with records cost 1.5 µs to lower for one Heka-sized message, more than
//! the two host calls it replaced). See `wit/plugin.wit` for the layout.
//!
//! The buffers belong to the plugin and are refilled for each call, so after the first
//! few calls building a batch allocates nothing on the host either.

use std::borrow::Borrow;

use crate::contract::bindings::corral::plugin::types::Batch;
use crate::contract::message::{Message, Value};

/// Numbers per message in `Batch::messages`.
pub(crate) const MESSAGE_WORDS: usize = 6;
/// Numbers per field in `Batch::fields`.
pub(crate) const FIELD_WORDS: usize = 3;

/// A field's kind in `Batch::fields`.
const STRING: u64 = 0;
const BYTES: u64 = 1;
const INT: u64 = 2;
const FLOAT: u64 = 3;
const BOOL: u64 = 4;

/// A run of messages: a slice of messages, or of anything that borrows as one.
pub(crate) trait Messages {
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> &Message;
}

impl<M: Borrow<Message>> Messages for &[M] {
    fn len(&self) -> usize {
        <[M]>::len(self)
    }

    fn get(&self, index: usize) -> &Message {
        self[index].borrow()
    }
}

/// The messages do not fit one batch: offsets and lengths are 32-bit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Empties `batch` and lays `messages` out in it.
///
/// This runs on every call, so it does the least it can per message: one check that
/// the message fits 32-bit offsets and one reservation for each list, then spans
/// computed without checks (if the whole text fits, every span within it does).
pub(crate) fn fill(batch: &mut Batch, messages: &dyn Messages) -> Result<(), TooLarge> {
    batch.text.clear();
    batch.messages.clear();
    batch.fields.clear();
    batch.messages.reserve(messages.len() * MESSAGE_WORDS);
    for index in 0..messages.len() {
        let message = messages.get(index);
        let text = message.type_.len()
            + message.logger.len()
            + message.payload.len()
            + message
                .fields
                .iter()
                .map(|field| {
                    field.name.len()
                        + match &field.value {
                            Value::String(s) => s.len(),
                            Value::Bytes(b) => b.len(),
                            _ => 0,
                        }
                })
                .sum::<usize>();
        let first = batch.fields.len() / FIELD_WORDS;
        if batch.text.len() + text > u32::MAX as usize || first + message.fields.len() > u32::MAX as usize {
            return Err(TooLarge);
        }
        batch.text.reserve(text);
        batch.fields.reserve(message.fields.len() * FIELD_WORDS);
        for field in &message.fields {
            let name = span(&mut batch.text, field.name.as_bytes());
            let (kind, value) = match &field.value {
                Value::String(s) => (STRING, span(&mut batch.text, s.as_bytes())),
                Value::Bytes(b) => (BYTES, span(&mut batch.text, b)),
                Value::Int(i) => (INT, *i as u64),
                Value::Float(f) => (FLOAT, f.to_bits()),
                Value::Bool(b) => (BOOL, u64::from(*b)),
            };
            batch.fields.extend_from_slice(&[name, kind, value]);
        }
        let words: [u64; MESSAGE_WORDS] = [
            message.timestamp as u64,
            message.severity as u32 as u64,
            span(&mut batch.text, message.type_.as_bytes()),
            span(&mut batch.text, message.logger.as_bytes()),
            span(&mut batch.text, message.payload.as_bytes()),
            (first as u64) << 32 | message.fields.len() as u64,
        ];
        batch.messages.extend_from_slice(&words);
    }
    Ok(())
}

/// Appends `bytes` to `text` and returns their span, unchecked: [`fill`] checks that
/// the message's text fits first.
fn span(text: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let span = (text.len() as u64) << 32 | bytes.len() as u64;
    text.extend_from_slice(bytes);
    span
}

/// Appends `bytes` to `text` and returns their span, checked: the raw layout's, which
/// appends record by record.
pub(crate) fn push(text: &mut Vec<u8>, bytes: &[u8]) -> Result<u64, TooLarge> {
    let offset = u32::try_from(text.len()).map_err(|_| TooLarge)?;
    let len = u32::try_from(bytes.len()).map_err(|_| TooLarge)?;
    offset.checked_add(len).ok_or(TooLarge)?;
    text.extend_from_slice(bytes);
    Ok(u64::from(offset) << 32 | u64::from(len))
}

/// An empty batch, to be filled.
pub(crate) fn empty() -> Batch {
    Batch {
        text: Vec::new(),
        messages: Vec::new(),
        fields: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::message::Field;

    fn text(batch: &Batch, span: u64) -> &[u8] {
        let (offset, len) = ((span >> 32) as usize, (span & 0xffff_ffff) as usize);
        &batch.text[offset..offset + len]
    }

    #[test]
    fn messages_are_laid_out_as_numbers_with_spans_into_one_text() {
        let mut first = Message::new("login");
        first.logger = "auth".into();
        first.payload = "hi".into();
        first.severity = -2;
        first.timestamp = -5;
        first.fields = vec![
            Field {
                name: "user".into(),
                value: Value::String("ann".into()),
            },
            Field {
                name: "n".into(),
                value: Value::Int(-3),
            },
            Field {
                name: "r".into(),
                value: Value::Float(0.5),
            },
        ];
        let mut second = Message::new("raw");
        second.fields = vec![Field {
            name: "b".into(),
            value: Value::Bytes(vec![0, 255]),
        }];
        let mut batch = empty();
        fill(&mut batch, &&[first, second][..]).unwrap();

        assert_eq!(batch.messages.len(), 2 * MESSAGE_WORDS);
        let m = &batch.messages[..MESSAGE_WORDS];
        assert_eq!((m[0] as i64, m[1] as u32 as i32), (-5, -2));
        assert_eq!(text(&batch, m[2]), b"login");
        assert_eq!(text(&batch, m[3]), b"auth");
        assert_eq!(text(&batch, m[4]), b"hi");
        assert_eq!(m[5], 3, "fields 0.. , three of them");
        let f = &batch.fields;
        assert_eq!(text(&batch, f[0]), b"user");
        assert_eq!((f[1], text(&batch, f[2])), (STRING, &b"ann"[..]));
        assert_eq!((f[4], f[5] as i64), (INT, -3));
        assert_eq!((f[7], f64::from_bits(f[8])), (FLOAT, 0.5));
        let m = &batch.messages[MESSAGE_WORDS..];
        assert_eq!(text(&batch, m[2]), b"raw");
        assert_eq!(m[5], 3 << 32 | 1, "field 3, one of it");
        assert_eq!((f[10], text(&batch, f[11])), (BYTES, &[0, 255][..]));
    }

    #[test]
    fn refilling_reuses_the_buffers() {
        let mut batch = empty();
        let messages: Vec<Message> = (0..8).map(|i| Message::new(format!("t{i}"))).collect();
        fill(&mut batch, &&messages[..]).unwrap();
        let capacity = (batch.text.capacity(), batch.messages.capacity());
        fill(&mut batch, &&messages[..4]).unwrap();
        assert_eq!(batch.messages.len(), 4 * MESSAGE_WORDS);
        assert_eq!((batch.text.capacity(), batch.messages.capacity()), capacity);
    }
}
