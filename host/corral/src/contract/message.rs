//! Heka's message, and the JSON shape it takes everywhere outside WIT.
//!
//! Inside a call the message stays on the host and the guest reads it lazily through the
//! `message` resource (see `wit/plugin.wit`); this module is the host's own value and its
//! JSON form, used by the CLI and by embedding programs:
//!
//! ```json
//! {"timestamp": 1700000000000000000, "type": "nginx.access", "logger": "nginx",
//!  "severity": 6, "payload": "GET /",
//!  "fields": {"status": 200, "path": "/", "ratio": 0.5, "cached": false,
//!             "raw": {"bytes": "AAE="}}}
//! ```
//!
//! Every key is optional. A missing `timestamp` becomes the time of decoding, a missing
//! `severity` becomes 7 (debug, Heka's default), missing strings are empty. A JSON
//! integer becomes an `int` field, a number with a fraction or exponent a `float`, and
//! `{"bytes": "<base64>"}` a `bytes` field. Unknown keys are refused, so a typo
//! (`"fileds"`) is an error rather than a silently empty message.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Heka's default severity: 7, debug.
pub const DEFAULT_SEVERITY: i32 = 7;

/// The field that keeps the logger a plugin gave an emitted message when it was not the
/// plugin's own name: the host writes the plugin's name as the logger (see
/// `docs/security.md`, "What the host writes for a guest").
pub const GUEST_LOGGER_FIELD: &str = "guest_logger";

/// A Heka-style message: headers, a payload and typed fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    /// The message type, e.g. `nginx.access`.
    pub type_: String,
    /// What produced the message.
    pub logger: String,
    /// Syslog severity, 0 (emergency) to 7 (debug).
    pub severity: i32,
    /// Free-form body.
    pub payload: String,
    /// Named, typed fields in order.
    pub fields: Vec<Field>,
}

/// One named field of a [`Message`].
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field's name.
    pub name: String,
    /// The field's value.
    pub value: Value,
}

/// The value of a [`Field`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UTF-8 text.
    String(String),
    /// Raw bytes; `{"bytes": "<base64>"}` in JSON.
    Bytes(Vec<u8>),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Message {
    /// About how many bytes the message's strings and fields hold: what it takes in a
    /// batch.
    pub fn approximate_size(&self) -> usize {
        const FIXED: usize = 64;
        let value = |v: &Value| match v {
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 8,
        };
        FIXED
            + self.type_.len()
            + self.logger.len()
            + self.payload.len()
            + self
                .fields
                .iter()
                .map(|f| 16 + f.name.len() + value(&f.value))
                .sum::<usize>()
    }

    /// An empty message of the given type, stamped now, with the default severity.
    pub fn new(type_: impl Into<String>) -> Message {
        Message {
            timestamp: now_ns(),
            type_: type_.into(),
            logger: String::new(),
            severity: DEFAULT_SEVERITY,
            payload: String::new(),
            fields: Vec::new(),
        }
    }

    /// Adds a field and returns the message, for building messages in one expression.
    pub fn with_field(mut self, name: impl Into<String>, value: Value) -> Message {
        self.fields.push(Field {
            name: name.into(),
            value,
        });
        self
    }

    /// The value of the first field called `name`.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|f| f.name == name).map(|f| &f.value)
    }

    /// Decodes the JSON shape described in the module docs.
    ///
    /// # Errors
    ///
    /// Returns the JSON error, which names the line, column and the offending key or
    /// value, when `json` is not an object of that shape.
    pub fn from_json(json: &str) -> Result<Message, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Encodes the message as one line of JSON in the shape described in the module docs.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a message always serialises")
    }

    /// The bytes this message counts for against a plugin's output cap: the length of
    /// its JSON line ([`Message::to_json`]) exactly, counted without building it. Counting
    /// stops early once past `max` (the result is then some number above `max`), so a
    /// huge message costs no more to count than the cap it is refused by.
    pub fn output_size(&self, max: u64) -> u64 {
        let mut counter = Counter { bytes: 0, max };
        // The counter refuses to go on past `max`: the error is that, nothing else.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.bytes
    }
}

/// A writer that only counts, and gives up past its maximum.
struct Counter {
    bytes: u64,
    max: u64,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.bytes > self.max {
            return Err(std::io::Error::other("past the maximum"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// The JSON form. Written by hand rather than derived because fields are an object of
// name → untagged value, which must keep order and tell integers from floats.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    timestamp: Option<i64>,
    #[serde(rename = "type")]
    type_: Option<String>,
    logger: Option<String>,
    severity: Option<i32>,
    payload: Option<String>,
    fields: Option<JsonFields>,
}

struct JsonFields(Vec<Field>);

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = JsonMessage::deserialize(d)?;
        Ok(Message {
            timestamp: m.timestamp.unwrap_or_else(now_ns),
            type_: m.type_.unwrap_or_default(),
            logger: m.logger.unwrap_or_default(),
            severity: m.severity.unwrap_or(DEFAULT_SEVERITY),
            payload: m.payload.unwrap_or_default(),
            fields: m.fields.map(|f| f.0).unwrap_or_default(),
        })
    }
}

impl<'de> Deserialize<'de> for JsonFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = JsonFields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of field name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonFields, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((name, value)) = map.next_entry::<String, Value>()? {
                    fields.push(Field { name, value });
                }
                Ok(JsonFields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, bool, or {\"bytes\": \"<base64>\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
                Ok(Value::String(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                i64::try_from(v)
                    .map(Value::Int)
                    .map_err(|_| E::custom(format_args!("integer {v} does not fit in a signed 64-bit int")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some("bytes") {
                    return Err(de::Error::custom(
                        "an object field value must be {\"bytes\": \"<base64>\"}",
                    ));
                }
                let text: String = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("a bytes value takes only the key `bytes`"));
                }
                BASE64
                    .decode(text.as_bytes())
                    .map(Value::Bytes)
                    .map_err(|e| de::Error::custom(format_args!("invalid base64 in bytes: {e}")))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(6))?;
        map.serialize_entry("timestamp", &self.timestamp)?;
        map.serialize_entry("type", &self.type_)?;
        map.serialize_entry("logger", &self.logger)?;
        map.serialize_entry("severity", &self.severity)?;
        map.serialize_entry("payload", &self.payload)?;
        map.serialize_entry("fields", &FieldsRef(&self.fields))?;
        map.end()
    }
}

struct FieldsRef<'a>(&'a [Field]);

impl Serialize for FieldsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for f in self.0 {
            map.serialize_entry(&f.name, &f.value)?;
        }
        map.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::String(v) => s.serialize_str(v),
            Value::Int(v) => s.serialize_i64(*v),
            // JSON has no NaN or infinity and serde_json would write null, losing the
            // value: write its text ("NaN", "inf") instead.
            Value::Float(v) if !v.is_finite() => s.serialize_str(&v.to_string()),
            Value::Float(v) => s.serialize_f64(*v),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Bytes(v) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("bytes", &BASE64.encode(v))?;
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_every_value_type() {
        let json = r#"{"timestamp":5,"type":"t","logger":"l","severity":3,"payload":"p",
            "fields":{"s":"x","i":-2,"f":1.5,"whole":2.0,"b":true,"raw":{"bytes":"AAE="}}}"#;
        let m = Message::from_json(json).unwrap();
        assert_eq!(m.field("i"), Some(&Value::Int(-2)));
        assert_eq!(m.field("whole"), Some(&Value::Float(2.0)));
        assert_eq!(m.field("raw"), Some(&Value::Bytes(vec![0, 1])));
        assert_eq!(Message::from_json(&m.to_json()).unwrap(), m);
        let names: Vec<_> = m.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["s", "i", "f", "whole", "b", "raw"]);
    }

    #[test]
    fn floats_round_trip_exactly() {
        // Found by the message_json fuzz target: without serde_json's exact float
        // parsing, a huge integer read as a float came back one ulp off.
        let json = r#"{"fields":{"i":-66666666666666666666666666666666666666666662,"x":0.1,"y":2.2250738585072014e-308}}"#;
        let m = Message::from_json(json).unwrap();
        assert_eq!(Message::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.field("i"), Some(&Value::Float(-6.666666666666666e43)));
    }

    #[test]
    fn output_size_is_the_json_length() {
        let mut m = Message::new("t\u{1}\"");
        m.payload = "\u{0}\u{1f}\\é".into();
        m.fields = (0..50)
            .map(|i| Field {
                name: format!("f{i}"),
                value: match i % 4 {
                    0 => Value::Bool(false),
                    1 => Value::Float(0.1 * i as f64),
                    2 => Value::Bytes(vec![1; i]),
                    _ => Value::Float(f64::NAN),
                },
            })
            .collect();
        let len = m.to_json().len() as u64;
        assert_eq!(m.output_size(u64::MAX), len);
        assert_eq!(m.output_size(len), len);
        assert!(m.output_size(10) > 10, "counting stops past the maximum");
    }

    #[test]
    fn missing_keys_take_heka_defaults() {
        let before = now_ns();
        let m = Message::from_json("{}").unwrap();
        assert!(m.timestamp >= before);
        assert_eq!(m.severity, DEFAULT_SEVERITY);
        assert!(m.type_.is_empty() && m.fields.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_reason() {
        let err = Message::from_json(r#"{"fileds":{}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `fileds`"), "{err}");
        let err = Message::from_json(r#"{"fields":{"x":[1]}}"#).unwrap_err();
        assert!(err.to_string().contains("a string, number, bool"), "{err}");
        let err = Message::from_json(r#"{"fields":{"x":{"bytes":"!!"}}}"#).unwrap_err();
        assert!(err.to_string().contains("invalid base64"), "{err}");
        let err = Message::from_json(r#"{"fields":{"x":18446744073709551615}}"#).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
