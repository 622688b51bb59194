//! Messages laid out flat for the `batch-filter` world's `process-batch`.
//!
//! Through the `message` resource, every field a guest reads is a call back into the
//! host, and a component-model call costs hundreds of nanoseconds however little it
//! carries (BENCHMARKS.md). A batch instead carries one or more messages into the guest
//! in one call, as one list of bytes (a `message-batch`): a header, six numbers per
//! message and three per field, then every string and byte string, each number that
//! names a string a span (`offset << 32 | length`) into the list. One list is one
//! allocation in the guest: wasmtime enters the guest's `cabi_realloc` once per list it
//! lowers, and each entry costs about as much as a small call (BENCHMARKS.md). See
//! `wit/plugin.wit` for the layout.
//!
//! Plugins built before the `message-batch` take the same numbers in three lists (the
//! `batch` record, [`Layout::Lists`]); [`fill_lists`] lays a batch out for them.
//!
//! The buffers belong to the plugin and are refilled for each call, so after the first
//! few calls building a batch allocates nothing on the host either.

use std::borrow::Borrow;

use crate::contract::bindings::corral::plugin::types::Batch;
use crate::contract::message::{Message, Value};

/// Numbers per message.
pub(crate) const MESSAGE_WORDS: usize = 6;
/// Numbers per field.
pub(crate) const FIELD_WORDS: usize = 3;
/// Bytes of a `message-batch`'s header: the counts of messages and of fields.
const HEADER: usize = 16;

/// A field's kind.
const STRING: u64 = 0;
const BYTES: u64 = 1;
const INT: u64 = 2;
const FLOAT: u64 = 3;
const BOOL: u64 = 4;

/// How a plugin's `process-batch` takes its messages and gives back its failures, told
/// by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// One `message-batch` (`list<u8>`), the failures reported through
    /// `failures.report`: what the SDK builds today.
    Flat,
    /// One `message-batch`, the failures returned as a `list<batch-failure>`: plugins
    /// built before `failures`.
    FlatReturning,
    /// The `batch` record's three lists, the failures returned: plugins built before
    /// the `message-batch`.
    Lists,
}

/// A run of messages: a slice of messages, or of anything that borrows as one.
///
/// A call takes its messages as `&dyn Messages`; laying them out is one dynamic call
/// for the batch, compiled for each kind of slice, not two for every message.
pub(crate) trait Messages {
    fn len(&self) -> usize;
    fn get(&self, index: usize) -> &Message;
    /// [`fill`] with these messages.
    fn lay_out(&self, batch: &mut Vec<u8>) -> Result<(), TooLarge>;
    /// [`fill_lists`] with these messages.
    fn lay_out_lists(&self, batch: &mut Batch) -> Result<(), TooLarge>;
}

impl<M: Borrow<Message>> Messages for &[M] {
    fn len(&self) -> usize {
        <[M]>::len(self)
    }

    fn get(&self, index: usize) -> &Message {
        self[index].borrow()
    }

    fn lay_out(&self, batch: &mut Vec<u8>) -> Result<(), TooLarge> {
        fill(batch, self)
    }

    fn lay_out_lists(&self, batch: &mut Batch) -> Result<(), TooLarge> {
        fill_lists(batch, self)
    }
}

/// The messages do not fit one batch: offsets and lengths are 32-bit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// The text a message lays out: its strings and byte strings, in bytes.
// (Inline, like every helper of `fill`: `fill` is compiled in the crate that calls the
// library with its own kind of message slice, where a helper not marked inline would be
// a call of its own per string.)
#[inline]
fn text_len(message: &Message) -> usize {
    message.type_.len()
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
            .sum::<usize>()
}

/// Where a layout writes its strings and byte strings, each returning its span.
trait Text {
    fn span(&mut self, bytes: &[u8]) -> u64;
}

/// The `batch` record's `text`: appended to, checked by [`fill_lists`] first.
impl Text for Vec<u8> {
    #[inline]
    fn span(&mut self, bytes: &[u8]) -> u64 {
        span(self, bytes)
    }
}

/// The text of a `message-batch`: the end of the list, sized by [`fill`] first, filled
/// from `at`; spans count from the start of the list, `base` bytes before `bytes`.
struct Tail<'a> {
    bytes: &'a mut [u8],
    at: usize,
    base: usize,
}

impl Text for Tail<'_> {
    #[inline]
    fn span(&mut self, bytes: &[u8]) -> u64 {
        let at = self.at;
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
        ((self.base + at) as u64) << 32 | bytes.len() as u64
    }
}

/// A field's three numbers, its name and its string or bytes written to `text`.
#[inline]
fn field_words(text: &mut impl Text, name: &str, value: &Value) -> [u64; FIELD_WORDS] {
    let name = text.span(name.as_bytes());
    let (kind, value) = match value {
        Value::String(s) => (STRING, text.span(s.as_bytes())),
        Value::Bytes(b) => (BYTES, text.span(b)),
        Value::Int(i) => (INT, *i as u64),
        Value::Float(f) => (FLOAT, f.to_bits()),
        Value::Bool(b) => (BOOL, u64::from(*b)),
    };
    [name, kind, value]
}

/// A message's six numbers, its strings written to `text`; `first` is the index of its
/// first field.
#[inline]
fn message_words(text: &mut impl Text, message: &Message, first: usize) -> [u64; MESSAGE_WORDS] {
    [
        message.timestamp as u64,
        message.severity as u32 as u64,
        text.span(message.type_.as_bytes()),
        text.span(message.logger.as_bytes()),
        text.span(message.payload.as_bytes()),
        (first as u64) << 32 | message.fields.len() as u64,
    ]
}

/// Writes `words` into `slot`, little-endian.
#[inline]
fn put(slot: &mut [u8], words: &[u64]) {
    for (bytes, word) in slot.chunks_exact_mut(8).zip(words) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
}

/// The most padding a `message-batch` carries to keep the last one's length: copying
/// that many bytes more into the guest (and zeroing them here) costs less than the
/// allocation and the free it spares the guest, about 500 instructions (BENCHMARKS.md).
pub(crate) const PADDING: usize = 1024;

/// The length of a `message-batch` whose content takes `needed` bytes, when the last
/// one laid out for the same plugin was `last` bytes long.
///
/// The SDK keeps each call's list for the next call and hands it back to the host only
/// for a list of exactly its length (`guests/corral-guest/src/spare.rs`): then the
/// guest runs neither a `malloc` nor a `free` for the batch, each paying fuel and epoch
/// checks, on every call. So a batch that fits the last one's length takes that length
/// if that pads it by at most [`PADDING`] bytes; any other is padded by a quarter of
/// its length, at most half of [`PADDING`], so that the next batches, a little longer
/// or shorter, fit it. Batches of varying length then mostly keep one length (the
/// longest lately seen, plus its headroom) while a large batch carries little. The
/// bytes past the content are zeros, which a guest ignores: the header and the spans
/// say where everything is.
#[inline]
pub(crate) fn padded_len(needed: usize, last: usize) -> usize {
    if last >= needed && last - needed <= PADDING {
        last
    } else {
        needed
            .saturating_add((needed / 4).min(PADDING / 2))
            .min(u32::MAX as usize)
    }
}

/// Lays `messages` out in `batch` as one `message-batch`, refilling the last batch's
/// list, its length kept if it fits ([`padded_len`]).
///
/// This runs on every call, so it does the least it can: one pass to size the batch and
/// check that it fits 32-bit offsets, then the list sized once and every number and
/// string written in its place, each span computed without a check (if the whole batch
/// fits, every span within it does).
pub(crate) fn fill<M: Borrow<Message>>(batch: &mut Vec<u8>, messages: &[M]) -> Result<(), TooLarge> {
    let (mut fields, mut text) = (0usize, 0usize);
    for message in messages {
        let message = message.borrow();
        fields += message.fields.len();
        text += text_len(message);
    }
    let numbers = HEADER + (messages.len() * MESSAGE_WORDS + fields * FIELD_WORDS) * 8;
    if numbers + text > u32::MAX as usize {
        return Err(TooLarge);
    }
    let len = padded_len(numbers + text, batch.len());
    // Every byte of the content is written below, so the last batch's bytes serve as
    // they are: zeroing them first was a memset of the whole batch on every call. Only
    // the padding is zeroed.
    if batch.len() >= len {
        batch.truncate(len);
    } else {
        batch.resize(len, 0);
    }
    let (header, rest) = batch.split_at_mut(HEADER);
    put(header, &[messages.len() as u64, fields as u64]);
    let (message_slots, rest) = rest.split_at_mut(messages.len() * MESSAGE_WORDS * 8);
    let (field_slots, rest) = rest.split_at_mut(fields * FIELD_WORDS * 8);
    let (tail, padding) = rest.split_at_mut(text);
    padding.fill(0);
    let mut field_slots = field_slots.chunks_exact_mut(FIELD_WORDS * 8);
    let mut tail = Tail {
        bytes: tail,
        at: 0,
        base: numbers,
    };
    let mut first = 0;
    for (message, slot) in messages
        .iter()
        .zip(message_slots.chunks_exact_mut(MESSAGE_WORDS * 8))
    {
        let message = message.borrow();
        for field in &message.fields {
            let slot = field_slots.next().expect("sized by the first pass");
            put(slot, &field_words(&mut tail, &field.name, &field.value));
        }
        put(slot, &message_words(&mut tail, message, first));
        first += message.fields.len();
    }
    debug_assert_eq!(tail.at, tail.bytes.len(), "the text fills the content's end");
    Ok(())
}

/// [`fill`], for a program that calls a plugin's `process-batch` without Corral and
/// hands it the bytes Corral would (the dispatch bench's bare rows, which so lay a batch
/// out exactly as Corral does): `false` when the messages do not fit one batch. Not part
/// of the library's API.
#[doc(hidden)]
pub fn lay_out_message_batch(batch: &mut Vec<u8>, messages: &[&Message]) -> bool {
    fill(batch, messages).is_ok()
}

/// Empties `batch` and lays `messages` out in it as the `batch` record's three lists,
/// for a plugin built before the `message-batch`; checked and reserved as [`fill`] is,
/// message by message.
pub(crate) fn fill_lists<M: Borrow<Message>>(batch: &mut Batch, messages: &[M]) -> Result<(), TooLarge> {
    batch.text.clear();
    batch.messages.clear();
    batch.fields.clear();
    batch.messages.reserve(messages.len() * MESSAGE_WORDS);
    for message in messages {
        let message = message.borrow();
        let text = text_len(message);
        let first = batch.fields.len() / FIELD_WORDS;
        if batch.text.len() + text > u32::MAX as usize || first + message.fields.len() > u32::MAX as usize {
            return Err(TooLarge);
        }
        batch.text.reserve(text);
        batch.fields.reserve(message.fields.len() * FIELD_WORDS);
        for field in &message.fields {
            let words = field_words(&mut batch.text, &field.name, &field.value);
            batch.fields.extend_from_slice(&words);
        }
        let words = message_words(&mut batch.text, message, first);
        batch.messages.extend_from_slice(&words);
    }
    Ok(())
}

/// Appends `bytes` to `text` and returns their span, unchecked: [`fill`] and
/// [`fill_lists`] check that the text fits first.
#[inline]
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

    /// Two messages with every kind of field but bool, and headers of every sign.
    fn two() -> [Message; 2] {
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
        [first, second]
    }

    fn at(bytes: &[u8], span: u64) -> &[u8] {
        let (offset, len) = ((span >> 32) as usize, (span & 0xffff_ffff) as usize);
        &bytes[offset..offset + len]
    }

    /// Checks the numbers of [`two`], `m` its messages' and `f` its fields', each span
    /// read from `text`.
    fn check_two(text: &[u8], m: &[u64], f: &[u64]) {
        assert_eq!(m.len(), 2 * MESSAGE_WORDS);
        assert_eq!(f.len(), 4 * FIELD_WORDS);
        assert_eq!((m[0] as i64, m[1] as u32 as i32), (-5, -2));
        assert_eq!(at(text, m[2]), b"login");
        assert_eq!(at(text, m[3]), b"auth");
        assert_eq!(at(text, m[4]), b"hi");
        assert_eq!(m[5], 3, "fields 0.. , three of them");
        assert_eq!(at(text, f[0]), b"user");
        assert_eq!((f[1], at(text, f[2])), (STRING, &b"ann"[..]));
        assert_eq!((f[4], f[5] as i64), (INT, -3));
        assert_eq!((f[7], f64::from_bits(f[8])), (FLOAT, 0.5));
        let m = &m[MESSAGE_WORDS..];
        assert_eq!(at(text, m[2]), b"raw");
        assert_eq!(m[5], 3 << 32 | 1, "field 3, one of it");
        assert_eq!((f[10], at(text, f[11])), (BYTES, &[0, 255][..]));
    }

    /// The little-endian numbers of `bytes[from..to]`.
    fn words(bytes: &[u8], from: usize, to: usize) -> Vec<u64> {
        bytes[from..to]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn a_message_batch_is_a_header_then_numbers_then_text_with_spans_from_its_start() {
        let mut batch = Vec::new();
        fill(&mut batch, &two()[..]).unwrap();
        assert_eq!(words(&batch, 0, HEADER), [2, 4], "two messages, four fields");
        let fields_at = HEADER + 2 * MESSAGE_WORDS * 8;
        let text_at = fields_at + 4 * FIELD_WORDS * 8;
        let m = words(&batch, HEADER, fields_at);
        let f = words(&batch, fields_at, text_at);
        check_two(&batch, &m, &f);
        assert_eq!(
            &batch[text_at..text_at + 4],
            b"user",
            "the text follows the numbers"
        );
        let content = text_at + "userannnrloginauthhib".len() + 2 + "raw".len();
        assert_eq!(batch.len(), padded_len(content, 0), "a first batch is padded");
        assert!(batch.len() > content);
        assert!(batch[content..].iter().all(|&b| b == 0), "the padding is zeros");
    }

    #[test]
    fn the_lists_layout_has_the_same_numbers_with_spans_into_text() {
        let mut batch = empty();
        fill_lists(&mut batch, &two()[..]).unwrap();
        check_two(&batch.text, &batch.messages, &batch.fields);
    }

    #[test]
    fn an_empty_run_is_a_header_of_zeros() {
        let mut batch = vec![1, 2, 3];
        let none: &[Message] = &[];
        fill(&mut batch, none).unwrap();
        assert!(batch.len() >= HEADER);
        assert!(batch.iter().all(|&b| b == 0), "{batch:?}");
    }

    #[test]
    fn refilling_reuses_the_buffers() {
        let messages: Vec<Message> = (0..8).map(|i| Message::new(format!("t{i}"))).collect();
        let mut flat = Vec::new();
        fill(&mut flat, &messages[..]).unwrap();
        let capacity = flat.capacity();
        fill(&mut flat, &messages[..4]).unwrap();
        assert_eq!(words(&flat, 0, 8), [4]);
        assert_eq!(flat.capacity(), capacity);

        let mut batch = empty();
        fill_lists(&mut batch, &messages[..]).unwrap();
        let capacity = (batch.text.capacity(), batch.messages.capacity());
        fill_lists(&mut batch, &messages[..4]).unwrap();
        assert_eq!(batch.messages.len(), 4 * MESSAGE_WORDS);
        assert_eq!((batch.text.capacity(), batch.messages.capacity()), capacity);
    }

    #[test]
    fn a_refilled_batch_holds_nothing_of_the_last_one() {
        // The list is not zeroed between calls: every byte must be written afresh.
        let long: Vec<Message> = (0..8)
            .map(|i| {
                let mut message = Message::new(format!("type-{i}-{}", "x".repeat(40)));
                message.payload = "p".repeat(100);
                message
            })
            .collect();
        for messages in [&two()[..], &two()[1..], &[][..]] {
            let mut fresh = Vec::new();
            fill(&mut fresh, messages).unwrap();
            let mut reused = Vec::new();
            fill(&mut reused, &long[..]).unwrap();
            fill(&mut reused, messages).unwrap();
            assert_eq!(reused, fresh, "{} messages after eight long ones", messages.len());
        }
    }

    /// `a` and `b` are the same batch: the same bytes up to the shorter's end, zeros
    /// past it.
    fn same_batch(a: &[u8], b: &[u8]) -> bool {
        let common = a.len().min(b.len());
        a[..common] == b[..common] && a[common..].iter().chain(&b[common..]).all(|&b| b == 0)
    }

    #[test]
    fn a_batch_a_little_shorter_than_the_last_keeps_its_length_zero_padded() {
        // (`Message::new` stamps the time: one pair, and a longer copy of it.)
        let two = two();
        let mut longer = two.clone();
        longer[0].payload = "p".repeat(12);
        let mut reused = Vec::new();
        fill(&mut reused, &longer[..]).unwrap();
        let kept = reused.len();
        fill(&mut reused, &two[..]).unwrap();
        assert_eq!(reused.len(), kept, "within the padding: the last length is kept");
        let mut fresh = Vec::new();
        fill(&mut fresh, &two[..]).unwrap();
        assert_ne!(fresh.len(), kept);
        assert!(
            same_batch(&reused, &fresh),
            "the longer batch's bytes were left in the padding"
        );
        let fields_at = HEADER + 2 * MESSAGE_WORDS * 8;
        let text_at = fields_at + 4 * FIELD_WORDS * 8;
        check_two(
            &reused,
            &words(&reused, HEADER, fields_at),
            &words(&reused, fields_at, text_at),
        );
    }

    #[test]
    fn batches_of_varying_length_keep_one_length() {
        // What makes the SDK's kept list serve: batches of one message, as long as log
        // lines vary, are laid out at one length once the longest has come.
        let mut last = 0;
        let mut lengths = Vec::new();
        for needed in [228, 300, 251, 380, 222, 410, 390, 260, 480, 301] {
            last = padded_len(needed, last);
            assert!(
                last >= needed && last - needed <= PADDING,
                "{needed} laid out at {last}"
            );
            lengths.push(last);
        }
        assert_eq!(lengths, [285, 375, 375, 475, 475, 475, 475, 475, 600, 600]);
        // Padded by a quarter, at most half of `PADDING`; much shorter than the last: a
        // length of its own.
        assert_eq!(padded_len(100, 0), 125);
        assert_eq!(padded_len(10_000, 9_000), 10_512);
        assert_eq!(padded_len(100, 100 + PADDING + 1), 125);
        assert_eq!(padded_len(0, 0), 0);
        assert_eq!(padded_len(u32::MAX as usize, 0), u32::MAX as usize);
    }
}
