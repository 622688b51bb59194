//! A decoder of syslog messages, for a `udp` or `tcp` input or a tailed syslog file:
//! RFC 5424 (`<165>1 2003-10-11T22:14:15.003Z host app 1234 ID47 [sd@1 k="v"] text`)
//! and RFC 3164 / BSD (`<34>Oct 11 22:14:15 host su[12]: text`), the priority optional
//! (rsyslog's files leave it out). The priority gives `facility` (an int field) and the
//! message's severity; `hostname`, `app_name`, `procid` and `msgid` are string fields
//! (left out when `-`), each structured-data parameter a field `sd.ID.NAME`, the text the
//! payload, and the time the timestamp (a BSD time has no year: the year it was
//! received, or the one before for a date ahead of that).
//!
//! The message type is `syslog`, or `type` in the sidecar's `[config]`.

use std::sync::OnceLock;

use corral_guest::{DecodeError, Decoder, OutMessage, RawRecord, Value};

mod parse;
pub use parse::{Syslog, parse};

struct SyslogDecoder;

fn message_type() -> &'static str {
    static TYPE: OnceLock<String> = OnceLock::new();
    TYPE.get_or_init(|| corral_guest::config_or("type", "syslog"))
}

impl Decoder for SyslogDecoder {
    fn decode(record: &RawRecord<'_>) -> Result<Vec<OutMessage>, DecodeError> {
        let text = record
            .text()
            .ok_or_else(|| DecodeError::malformed("the message is not UTF-8"))?;
        let parsed = parse(text, record.received_ns()).map_err(DecodeError::Malformed)?;
        let mut message = OutMessage::new(message_type()).payload(parsed.message);
        message.severity = parsed.severity;
        message.timestamp = parsed.timestamp.or(Some(record.received_ns()).filter(|t| *t > 0));
        if let Some(facility) = parsed.facility {
            message = message.field("facility", Value::Int(facility));
        }
        for (name, value) in [
            ("hostname", parsed.hostname),
            ("app_name", parsed.app_name),
            ("procid", parsed.procid),
            ("msgid", parsed.msgid),
        ] {
            if let Some(value) = value {
                message = message.field(name, Value::String(value.to_owned()));
            }
        }
        for (name, value) in parsed.structured {
            // A repeated parameter keeps its first value: field names are unique.
            if !message.fields.iter().any(|f| f.name == name) {
                message = message.field(name, Value::String(value));
            }
        }
        if !record.peer().is_empty() {
            message = message.field("peer", Value::String(record.peer().to_owned()));
        }
        Ok(vec![message])
    }
}

corral_guest::export_decoder!(SyslogDecoder);
