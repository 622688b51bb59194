//! A JSON line straight into a log record: the JSON shape of `corral::Message` (see
//! `Message::from_json`), decoded with serde_json borrowing its strings from the line
//! and written in the record's binary form (`codec`) without building a `Message`, so
//! stdin intake allocates nothing per message. It takes and refuses exactly what
//! `Message::from_json` does, and writes what `codec::encode` writes for the message
//! that makes (the tests hold the two side by side).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::codec;

const KEYS: &[&str] = &["timestamp", "type", "logger", "severity", "payload", "fields"];

/// Decodes the JSON message `line` and appends its record to `out`; `fields` is scratch
/// space, kept between calls. On an error `out` is as it was.
///
/// # Errors
///
/// The JSON error, as `Message::from_json` gives it.
pub(crate) fn encode(line: &str, out: &mut Vec<u8>, fields: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    fields.clear();
    let mut de = serde_json::Deserializer::from_str(line);
    let head = Top { fields }.deserialize(&mut de)?;
    de.end()?;
    out.extend_from_slice(&head.timestamp.unwrap_or_else(corral::now_ns).to_le_bytes());
    out.extend_from_slice(&head.severity.unwrap_or(corral::DEFAULT_SEVERITY).to_le_bytes());
    codec::string(head.type_.as_deref().unwrap_or(""), out);
    codec::string(head.logger.as_deref().unwrap_or(""), out);
    codec::string(head.payload.as_deref().unwrap_or(""), out);
    out.extend_from_slice(&head.count.to_le_bytes());
    out.extend_from_slice(fields);
    Ok(())
}

/// The headers of a message, borrowed from the line where they need no unescaping.
struct Head<'a> {
    timestamp: Option<i64>,
    type_: Option<Cow<'a, str>>,
    logger: Option<Cow<'a, str>>,
    severity: Option<i32>,
    payload: Option<Cow<'a, str>>,
    /// Fields written to the scratch buffer.
    count: u32,
}

/// The message object; its fields are written to `fields` as they are read.
struct Top<'s> {
    fields: &'s mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Head<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Head<'de>, D::Error> {
        d.deserialize_struct("JsonMessage", KEYS, self)
    }
}

/// A string borrowed from the input where it can be.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_string(V)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Head<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("struct JsonMessage")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Head<'de>, A::Error> {
        let mut head = Head {
            timestamp: None,
            type_: None,
            logger: None,
            severity: None,
            payload: None,
            count: 0,
        };
        let mut seen = [false; 6];
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let Some(index) = KEYS.iter().position(|k| *k == key.0) else {
                return Err(de::Error::unknown_field(&key.0, KEYS));
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(de::Error::duplicate_field(KEYS[index]));
            }
            match index {
                0 => head.timestamp = map.next_value()?,
                1 => head.type_ = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                2 => head.logger = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                3 => head.severity = map.next_value()?,
                4 => head.payload = map.next_value::<Option<Text<'de>>>()?.map(|t| t.0),
                _ => {
                    self.fields.clear();
                    head.count = map.next_value_seed(OptionalFields(&mut *self.fields))?;
                }
            }
        }
        Ok(head)
    }
    // serde_json takes a struct as an array too, its keys in order: so does the
    // library's derived decoding.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Head<'de>, A::Error> {
        const EXPECTED: &str = "struct JsonMessage with 6 elements";
        let missing = |i: usize| de::Error::invalid_length(i, &EXPECTED);
        let timestamp = seq.next_element()?.ok_or_else(|| missing(0))?;
        let type_ = seq
            .next_element::<Option<Text<'de>>>()?
            .ok_or_else(|| missing(1))?;
        let logger = seq
            .next_element::<Option<Text<'de>>>()?
            .ok_or_else(|| missing(2))?;
        let severity = seq.next_element()?.ok_or_else(|| missing(3))?;
        let payload = seq
            .next_element::<Option<Text<'de>>>()?
            .ok_or_else(|| missing(4))?;
        self.fields.clear();
        let count = seq
            .next_element_seed(OptionalFields(&mut *self.fields))?
            .ok_or_else(|| missing(5))?;
        Ok(Head {
            timestamp,
            type_: type_.map(|t| t.0),
            logger: logger.map(|t| t.0),
            severity,
            payload: payload.map(|t| t.0),
            count,
        })
    }
}

/// `fields`, or `null`: the number of fields written.
struct OptionalFields<'s>(&'s mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for OptionalFields<'_> {
    type Value = u32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionalFields<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("option")
    }
    fn visit_none<E: de::Error>(self) -> Result<u32, E> {
        Ok(0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<u32, E> {
        Ok(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_map(Fields(self.0))
    }
}

/// The fields object: each field written as it is read.
struct Fields<'s>(&'s mut Vec<u8>);

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = u32;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of field name to value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u32, A::Error> {
        let mut count = 0u32;
        while let Some(name) = map.next_key::<Text<'de>>()? {
            codec::string(&name.0, self.0);
            map.next_value_seed(FieldValue(&mut *self.0))?;
            count += 1;
        }
        Ok(count)
    }
}

/// One field's value, written with its tag.
struct FieldValue<'s>(&'s mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for FieldValue<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldValue<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, bool, or {\"bytes\": \"<base64>\"}")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(0);
        codec::string(v, self.0);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(4);
        self.0.push(u8::from(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(2);
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        let v = i64::try_from(v)
            .map_err(|_| E::custom(format_args!("integer {v} does not fit in a signed 64-bit int")))?;
        self.visit_i64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(3);
        self.0.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let key: Option<Text<'de>> = map.next_key()?;
        if key.as_ref().map(|k| &*k.0) != Some("bytes") {
            return Err(de::Error::custom(
                "an object field value must be {\"bytes\": \"<base64>\"}",
            ));
        }
        let text: Text<'de> = map.next_value()?;
        if map.next_key::<Text<'de>>()?.is_some() {
            return Err(de::Error::custom("a bytes value takes only the key `bytes`"));
        }
        let bytes = BASE64
            .decode(text.0.as_bytes())
            .map_err(|e| de::Error::custom(format_args!("invalid base64 in bytes: {e}")))?;
        self.0.push(1);
        self.0.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(&bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use corral::Message;

    /// What the library's decoding and the record encoding make of `line`.
    fn library(line: &str) -> Result<Vec<u8>, String> {
        let message = Message::from_json(line).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        super::codec::encode(&message, &mut out);
        Ok(out)
    }

    fn direct(line: &str) -> Result<Vec<u8>, String> {
        let mut out = vec![7u8];
        let mut fields = vec![1, 2, 3];
        match super::encode(line, &mut out, &mut fields) {
            Ok(()) => Ok(out[1..].to_vec()),
            Err(e) => {
                assert_eq!(out, [7], "nothing is written on an error");
                Err(e.to_string())
            }
        }
    }

    #[test]
    fn takes_and_refuses_what_the_library_does_and_writes_the_same_record() {
        let lines = [
            r#"{"timestamp":5,"type":"t","logger":"l","severity":3,"payload":"p","fields":{"s":"x","i":-7,"u":7,"f":0.5,"e":1e3,"b":true,"raw":{"bytes":"AAE="}}}"#,
            r#"{"fields":{"b":false},"payload":"esc\"aped \u00fc\n","type":"nginx.access","timestamp":1700000000000000000,"severity":6}"#,
            r#"{"timestamp":1,"type":null,"logger":null,"payload":null,"severity":null,"fields":null}"#,
            r#"  {"timestamp":1,"fields":{}}  "#,
            r#"{"timestamp":1,"fields":{"a\"b":"c\\d","a\"b":"dup names stay"}}"#,
            // Refused, with the same error.
            r#"{"timestamp":1,"fileds":{}}"#,
            r#"{"timestamp":1,"type":"a","type":"b"}"#,
            r#"{"timestamp":1,"fields":{"x":null}}"#,
            r#"{"timestamp":1,"fields":{"x":[1]}}"#,
            r#"{"timestamp":1,"fields":{"x":{"byte":"AA=="}}}"#,
            r#"{"timestamp":1,"fields":{"x":{"bytes":"AA==","more":1}}}"#,
            r#"{"timestamp":1,"fields":{"x":{"bytes":"!!"}}}"#,
            r#"{"timestamp":1,"fields":{"x":18446744073709551615}}"#,
            r#"{"timestamp":1,"severity":4294967296}"#,
            r#"{"timestamp":"1"}"#,
            r#"{"timestamp":1} trailing"#,
            r#"{"timestamp":1"#,
            r#"[1,2]"#,
            r#"[1,"t","l",3,"p",{"a":1}]"#,
            r#"[1,"t","l",3,"p",{"a":1},7]"#,
            r#"[1,"t"]"#,
            r#"[]"#,
            r#"nope"#,
            "",
        ];
        for line in lines {
            assert_eq!(direct(line), library(line), "{line}");
        }
        // Without a timestamp both stamp the time of decoding.
        let before = corral::now_ns();
        let record = direct(r#"{"type":"t"}"#).unwrap();
        let stamped = i64::from_le_bytes(record[..8].try_into().unwrap());
        assert!(stamped >= before && stamped <= corral::now_ns());
        assert_eq!(
            &record[8..],
            &library(r#"{"timestamp":0,"type":"t"}"#).unwrap()[8..]
        );
    }
}
