//! A decoder of nginx access logs, after Heka's nginx access decoder: each line is
//! matched against nginx's `log_format` (the `combined` format unless the sidecar's
//! `[config]` gives `log_format`), and each `$variable` becomes a field of an
//! `nginx.access` message (the type is `type` in `[config]`). Numbers are typed:
//! `status`, `body_bytes_sent`, `bytes_sent`, `request_length`, `connection` and
//! `connection_requests` are ints; `request_time`, `upstream_connect_time`,
//! `upstream_header_time` and `upstream_response_time` (the first of a list) are floats.
//! `$time_local` (or `$time_iso8601`) is the message's timestamp; `$request` is also
//! split into `request_method`, `request_uri` and `request_protocol`. A value of `-`
//! means none: the field is left out.
//!
//! ```toml
//! [input]
//! type = "tail"
//! path = "/var/log/nginx/access.log"
//!
//! [config]
//! log_format = '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time'
//! ```

use std::sync::OnceLock;

use corral_guest::{DecodeError, Decoder, OutMessage, RawRecord, Value};

mod format;
pub use format::{Format, Piece};

/// nginx's predefined `combined` format.
pub const COMBINED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent""#;

struct NginxAccess;

/// The format and message type from the config, parsed once.
fn setup() -> &'static Result<(Format, String), String> {
    static SETUP: OnceLock<Result<(Format, String), String>> = OnceLock::new();
    SETUP.get_or_init(|| {
        let text = corral_guest::config_or("log_format", COMBINED);
        let format = Format::parse(&text).map_err(|e| format!("log_format: {e}"))?;
        Ok((format, corral_guest::config_or("type", "nginx.access")))
    })
}

impl Decoder for NginxAccess {
    fn decode(record: &RawRecord<'_>) -> Result<Vec<OutMessage>, DecodeError> {
        let (format, type_) = setup().as_ref().map_err(|e| DecodeError::Fatal(e.clone()))?;
        let line = record
            .text()
            .ok_or_else(|| DecodeError::malformed("the line is not UTF-8"))?;
        let mut message = OutMessage::new(type_.as_str());
        for (name, value) in format.parse_line(line).map_err(DecodeError::Malformed)? {
            match value {
                format::Parsed::Timestamp(ns) => message.timestamp = Some(ns),
                format::Parsed::Field(value) => message = message.field(name, value),
            }
        }
        if message.timestamp.is_none() && record.received_ns() > 0 {
            message.timestamp = Some(record.received_ns());
        }
        if !record.path().is_empty() {
            message = message.field("path", Value::String(record.path().to_owned()));
        }
        Ok(vec![message])
    }
}

corral_guest::export_decoder!(NginxAccess);
