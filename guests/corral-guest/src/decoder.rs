//! The [`Decoder`] trait: a decoder on the `decoder` world, one raw record at a time.

use crate::{BatchFailure, Decoded, DecoderGuest, Failure, OutMessage, RawBatch};

/// Numbers per record in [`RawBatch::records`].
const RECORD_WORDS: usize = 6;

/// Why a record did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is not what the decoder reads: counted, and kept by the host for
    /// inspection (a `corral.decode-failure` message); the next record is decoded.
    Malformed(String),
    /// The decoder cannot go on: the host terminates it.
    Fatal(String),
}

impl DecodeError {
    /// A record that is not what the decoder reads.
    pub fn malformed(why: impl std::fmt::Display) -> DecodeError {
        DecodeError::Malformed(why.to_string())
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) | DecodeError::Fatal(why) => f.write_str(why),
        }
    }
}

/// A decoder: `decode` for each raw record its input read, in order, and `timer_event`
/// on its ticker, which does nothing unless overridden. Every `Decoder` is a
/// [`DecoderGuest`], so [`export_decoder!`](crate::export_decoder) takes it:
///
/// ```ignore
/// use corral_guest::{DecodeError, Decoder, OutMessage, RawRecord, Value};
///
/// struct Lines;
///
/// impl Decoder for Lines {
///     fn decode(record: &RawRecord<'_>) -> Result<Vec<OutMessage>, DecodeError> {
///         let text = record.text().ok_or_else(|| DecodeError::malformed("not UTF-8"))?;
///         Ok(vec![OutMessage::new("line").payload(text)])
///     }
/// }
///
/// corral_guest::export_decoder!(Lines);
/// ```
pub trait Decoder {
    /// The messages of one record (none, one or several). A
    /// [`DecodeError::Malformed`] is counted and the next record is decoded; after a
    /// [`DecodeError::Fatal`] no further record of the batch is.
    fn decode(record: &RawRecord<'_>) -> Result<Vec<OutMessage>, DecodeError>;

    /// Called every `ticker-interval-ms` with the time in nanoseconds since the Unix epoch.
    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

impl<T: Decoder> DecoderGuest for T {
    fn decode(records: RawBatch) -> Decoded {
        let mut decoded = Decoded {
            messages: Vec::new(),
            failures: Vec::new(),
        };
        for (index, record) in records.records().enumerate() {
            match T::decode(&record) {
                Ok(messages) => decoded.messages.extend(messages),
                Err(error) => {
                    let fatal = matches!(error, DecodeError::Fatal(_));
                    decoded.failures.push(BatchFailure {
                        index: index as u32,
                        failure: match error {
                            DecodeError::Malformed(why) => Failure::NonFatal(why),
                            DecodeError::Fatal(why) => Failure::Fatal(why),
                        },
                    });
                    if fatal {
                        break;
                    }
                }
            }
        }
        decoded
    }

    fn timer_event(now_ns: i64) -> Result<(), Failure> {
        <T as Decoder>::timer_event(now_ns)
    }
}

impl RawBatch {
    /// Each record of the batch, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RawRecord<'_>> {
        self.records
            .chunks_exact(RECORD_WORDS)
            .map(move |words| RawRecord { batch: self, words })
    }

    fn bytes(&self, span: u64) -> &[u8] {
        let start = (span >> 32) as usize;
        start
            .checked_add((span & 0xffff_ffff) as usize)
            .and_then(|end| self.text.get(start..end))
            .unwrap_or(&[])
    }

    fn str(&self, span: u64) -> &str {
        std::str::from_utf8(self.bytes(span)).unwrap_or("")
    }
}

/// One raw record of a [`RawBatch`], read in place, with where it came from.
#[derive(Clone, Copy)]
pub struct RawRecord<'a> {
    batch: &'a RawBatch,
    words: &'a [u64],
}

impl<'a> RawRecord<'a> {
    /// The record's bytes: a line without its ending, a datagram, a frame.
    pub fn data(&self) -> &'a [u8] {
        self.batch.bytes(self.words[0])
    }

    /// The record as text, if it is UTF-8.
    pub fn text(&self) -> Option<&'a str> {
        std::str::from_utf8(self.data()).ok()
    }

    /// The name of the input that read it (the decoder's name).
    pub fn input(&self) -> &'a str {
        self.batch.str(self.words[1])
    }

    /// The file it was read from; empty for a socket.
    pub fn path(&self) -> &'a str {
        self.batch.str(self.words[2])
    }

    /// Its byte offset in that file.
    pub fn offset(&self) -> u64 {
        self.words[3]
    }

    /// The peer that sent it (`ip:port`); empty for a file.
    pub fn peer(&self) -> &'a str {
        self.batch.str(self.words[4])
    }

    /// When the input read it, in nanoseconds since the Unix epoch.
    pub fn received_ns(&self) -> i64 {
        self.words[5] as i64
    }
}

impl std::fmt::Debug for RawRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRecord")
            .field("data", &String::from_utf8_lossy(self.data()))
            .field("input", &self.input())
            .field("path", &self.path())
            .field("offset", &self.offset())
            .field("peer", &self.peer())
            .finish()
    }
}
