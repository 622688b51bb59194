//! The `decoder` world: raw records (a line of a file, a datagram, a frame of a stream)
//! laid out flat for its `decode` (the call is `Plugin::decode`).
//!
//! A raw batch is laid out as a `batch` is (see the `batch` module): one `text` holding
//! every record's bytes and the strings of its origin, and six numbers per record
//! pointing into it by span (`offset << 32 | length`). The decoder returns its messages
//! as `out-message`s, which the host checks and counts exactly as it does an `emit`'s,
//! and its failures by record, as `process-batch` does.

use crate::contract::batch::{TooLarge, push};
use crate::contract::bindings::corral::plugin::types::RawBatch;

/// Numbers per record in `RawBatch::records`.
pub(crate) const RECORD_WORDS: usize = 6;

/// One raw record for a decoder, borrowed from whoever read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawRecord<'a> {
    /// The record's bytes, without its line ending or framing.
    pub data: &'a [u8],
    /// The name of the input that read it.
    pub input: &'a str,
    /// The file it was read from; empty for a socket.
    pub path: &'a str,
    /// Its byte offset in that file; 0 for a socket.
    pub offset: u64,
    /// The peer that sent it (`ip:port`); empty for a file.
    pub peer: &'a str,
    /// When it was read, in nanoseconds since the Unix epoch.
    pub received_ns: i64,
}

impl<'a> RawRecord<'a> {
    /// A record of `data` and nothing else: no origin, received now.
    pub fn new(data: &'a [u8]) -> RawRecord<'a> {
        RawRecord {
            data,
            received_ns: crate::contract::message::now_ns(),
            ..RawRecord::default()
        }
    }
}

/// Empties `batch` and lays `records` out in it.
pub(crate) fn fill(batch: &mut RawBatch, records: &[RawRecord<'_>]) -> Result<(), TooLarge> {
    batch.text.clear();
    batch.records.clear();
    for record in records {
        let words: [u64; RECORD_WORDS] = [
            push(&mut batch.text, record.data)?,
            push(&mut batch.text, record.input.as_bytes())?,
            push(&mut batch.text, record.path.as_bytes())?,
            record.offset,
            push(&mut batch.text, record.peer.as_bytes())?,
            record.received_ns as u64,
        ];
        batch.records.extend_from_slice(&words);
    }
    Ok(())
}

/// An empty raw batch, to be filled.
pub(crate) fn empty() -> RawBatch {
    RawBatch {
        text: Vec::new(),
        records: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_laid_out_as_numbers_with_spans_into_one_text() {
        let mut batch = empty();
        let records = [
            RawRecord {
                data: b"GET /",
                input: "nginx",
                path: "/var/log/a.log",
                offset: 42,
                peer: "",
                received_ns: -1,
            },
            RawRecord {
                data: b"<34>hi",
                input: "sys",
                peer: "127.0.0.1:9",
                ..RawRecord::default()
            },
        ];
        fill(&mut batch, &records).unwrap();
        let text = |span: u64| &batch.text[(span >> 32) as usize..][..(span & 0xffff_ffff) as usize];
        let r = &batch.records;
        assert_eq!(r.len(), 2 * RECORD_WORDS);
        assert_eq!(text(r[0]), b"GET /");
        assert_eq!(text(r[1]), b"nginx");
        assert_eq!(text(r[2]), b"/var/log/a.log");
        assert_eq!((r[3], r[5] as i64), (42, -1));
        assert_eq!(text(r[4]), b"");
        assert_eq!(text(r[6]), b"<34>hi");
        assert_eq!(text(r[10]), b"127.0.0.1:9");
    }
}
