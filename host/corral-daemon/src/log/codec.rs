//! A message as a log record: a compact binary form, written by intake and read by each
//! plugin's reader, cheaper to decode than JSON and decoded on the reader's own thread
//! (the thread that frees it), so intake and workers do not contend for the allocator.
//!
//! ```text
//! timestamp i64 | severity i32 | type str | logger str | payload str | n u32 | n × field
//! str   = len u32 | UTF-8 bytes
//! field = name str | tag u8 | value   (0 string, 1 bytes, 2 int, 3 float, 4 bool)
//! ```
//!
//! Every integer is little-endian. A record emitted by a plugin carries its stable id
//! (see `pipeline`) before the message: `id str | message`.

use corral::{Field, Message, Value};

/// Appends `message` to `out`.
pub(crate) fn encode(message: &Message, out: &mut Vec<u8>) {
    out.extend_from_slice(&message.timestamp.to_le_bytes());
    out.extend_from_slice(&message.severity.to_le_bytes());
    string(&message.type_, out);
    string(&message.logger, out);
    string(&message.payload, out);
    out.extend_from_slice(&(message.fields.len() as u32).to_le_bytes());
    for field in &message.fields {
        string(&field.name, out);
        match &field.value {
            Value::String(s) => {
                out.push(0);
                string(s, out);
            }
            Value::Bytes(b) => {
                out.push(1);
                bytes(b, out);
            }
            Value::Int(i) => {
                out.push(2);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(3);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::Bool(b) => {
                out.push(4);
                out.push(u8::from(*b));
            }
        }
    }
}

pub(crate) fn string(s: &str, out: &mut Vec<u8>) {
    bytes(s.as_bytes(), out);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// A record that is not a message: only a bug or a damaged file makes one.
#[derive(Debug, thiserror::Error)]
#[error("malformed log record: {0}")]
pub(crate) struct Malformed(&'static str);

/// Reads a record from a slice, front to back.
pub(crate) struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("a string is not UTF-8"))
    }

    /// Decodes the message at the front into `message`, reusing its strings (a worker
    /// decodes batch after batch into the same messages, without allocating). On an
    /// error `message` holds part of the record and is not to be used.
    pub(crate) fn message_into(&mut self, message: &mut Message) -> Result<(), Malformed> {
        fn set(to: &mut String, from: &str) {
            to.clear();
            to.push_str(from);
        }
        message.timestamp = i64::from_le_bytes(self.array()?);
        message.severity = i32::from_le_bytes(self.array()?);
        set(&mut message.type_, self.str()?);
        set(&mut message.logger, self.str()?);
        set(&mut message.payload, self.str()?);
        let n = self.u32()? as usize;
        // Each field takes at least 6 bytes: a bogus count cannot grow the vector much.
        let fields = &mut message.fields;
        fields.truncate(n);
        fields.reserve(n.saturating_sub(fields.len()).min(self.0.len() / 6));
        for i in 0..n {
            let name = self.str()?;
            let tag = self.array::<1>()?[0];
            if i == fields.len() {
                fields.push(Field {
                    name: String::new(),
                    value: Value::Bool(false),
                });
            }
            let field = &mut fields[i];
            set(&mut field.name, name);
            match tag {
                0 => {
                    let s = self.str()?;
                    match &mut field.value {
                        Value::String(to) => set(to, s),
                        other => *other = Value::String(s.to_owned()),
                    }
                }
                1 => {
                    let b = self.bytes()?;
                    match &mut field.value {
                        Value::Bytes(to) => {
                            to.clear();
                            to.extend_from_slice(b);
                        }
                        other => *other = Value::Bytes(b.to_vec()),
                    }
                }
                2 => field.value = Value::Int(i64::from_le_bytes(self.array()?)),
                3 => field.value = Value::Float(f64::from_le_bytes(self.array()?)),
                4 => field.value = Value::Bool(self.array::<1>()?[0] != 0),
                _ => return Err(Malformed("unknown field tag")),
            }
        }
        Ok(())
    }

    /// Decodes the message at the front.
    pub(crate) fn message(&mut self) -> Result<Message, Malformed> {
        let timestamp = i64::from_le_bytes(self.array()?);
        let severity = i32::from_le_bytes(self.array()?);
        let type_ = self.str()?.to_owned();
        let logger = self.str()?.to_owned();
        let payload = self.str()?.to_owned();
        let n = self.u32()? as usize;
        // Each field takes at least 6 bytes: a bogus count cannot reserve much.
        let mut fields = Vec::with_capacity(n.min(self.0.len() / 6));
        for _ in 0..n {
            let name = self.str()?.to_owned();
            let value = match self.array::<1>()?[0] {
                0 => Value::String(self.str()?.to_owned()),
                1 => Value::Bytes(self.bytes()?.to_vec()),
                2 => Value::Int(i64::from_le_bytes(self.array()?)),
                3 => Value::Float(f64::from_le_bytes(self.array()?)),
                4 => Value::Bool(self.array::<1>()?[0] != 0),
                _ => return Err(Malformed("unknown field tag")),
            };
            fields.push(Field { name, value });
        }
        Ok(Message {
            timestamp,
            type_,
            logger,
            severity,
            payload,
            fields,
        })
    }
}

/// A message with nothing in it, to decode into ([`Cursor::message_into`]).
pub(crate) fn empty() -> Message {
    Message {
        timestamp: 0,
        type_: String::new(),
        logger: String::new(),
        severity: 0,
        payload: String::new(),
        fields: Vec::new(),
    }
}

/// The bytes `message`'s strings and fields have allocated (not only use).
pub(crate) fn capacity(message: &Message) -> usize {
    let value = |v: &Value| match v {
        Value::String(s) => s.capacity(),
        Value::Bytes(b) => b.capacity(),
        _ => 0,
    };
    message.type_.capacity()
        + message.logger.capacity()
        + message.payload.capacity()
        + message.fields.capacity() * std::mem::size_of::<Field>()
        + message
            .fields
            .iter()
            .map(|f| f.name.capacity() + value(&f.value))
            .sum::<usize>()
}

/// Decodes a whole record as a message.
#[cfg(test)]
pub(crate) fn decode(record: &[u8]) -> Result<Message, Malformed> {
    Cursor(record).message()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips() {
        let message = Message {
            logger: "web".into(),
            severity: 3,
            payload: "GET / ü".into(),
            ..Message::new("nginx.access")
        }
        .with_field("s", Value::String("x".into()))
        .with_field("b", Value::Bytes(vec![0, 1, 255]))
        .with_field("i", Value::Int(-7))
        .with_field("f", Value::Float(0.5))
        .with_field("t", Value::Bool(true));
        let mut out = Vec::new();
        encode(&message, &mut out);
        assert_eq!(decode(&out).unwrap(), message);
        // Into a message that held another, with more fields of other kinds.
        let mut into = Message {
            payload: "an older, longer payload".into(),
            ..Message::new("other")
        }
        .with_field("i", Value::Int(1))
        .with_field("s", Value::String("y".into()))
        .with_field("x", Value::Bytes(vec![9]))
        .with_field("y", Value::Float(1.5))
        .with_field("z", Value::Bool(false))
        .with_field("extra", Value::Int(2));
        Cursor(&out).message_into(&mut into).unwrap();
        assert_eq!(into, message);
        let mut empty = empty();
        Cursor(&out).message_into(&mut empty).unwrap();
        assert_eq!(empty, message);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "a record cut at {cut} is refused");
        }
    }
}
