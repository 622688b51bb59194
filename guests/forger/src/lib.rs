//! Hostile plugin: forges what it hands the host. process-message, by message type:
//!
//! - `emit`: emits one message built from the given one's fields: `t` (string, the type;
//!   default `forged`), `logger` (string), `sev` (int, default 6), `ts` (int, the
//!   timestamp; none when absent), `payload` (string), then `count` (int) bool fields
//!   named `name` (string, default empty) — all the same name — or, with `unique` (int),
//!   that many fields of distinct short names; `ctl` (int) appends that many control
//!   characters (U+0001) to the payload;
//! - `log`: logs its payload through the `log` import, prints it on stdout and on
//!   stderr;
//! - `fail`: fails (non-fatal) with its payload repeated `repeat` (int, default 1) times;
//! - `fatal`: fails fatally with its payload;
//! - `panic`: panics with its payload;
//! - anything else: nothing.
//!
//! timer-event answers at once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

fn int(message: &Message, name: &str) -> Option<i64> {
    match message.field(name) {
        Some(Value::Int(n)) => Some(n),
        _ => None,
    }
}

fn text(message: &Message, name: &str) -> Option<String> {
    match message.field(name) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// A short name for field `i`: base 36 digits.
fn short_name(mut i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut name = Vec::new();
    loop {
        name.push(DIGITS[i % 36]);
        i /= 36;
        if i == 0 {
            break;
        }
    }
    String::from_utf8(name).unwrap()
}

struct Forger;

impl Guest for Forger {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let payload = message.payload();
        match message.type_().as_str() {
            "emit" => {
                let mut out = OutMessage::new(text(message, "t").unwrap_or_else(|| "forged".into()));
                out.logger = text(message, "logger").unwrap_or_default();
                out.severity = int(message, "sev").unwrap_or(6) as i32;
                out.timestamp = int(message, "ts");
                out.payload = text(message, "payload").unwrap_or_default();
                out.payload.extend(std::iter::repeat_n(
                    '\u{1}',
                    int(message, "ctl").unwrap_or(0) as usize,
                ));
                let name = text(message, "name").unwrap_or_default();
                for _ in 0..int(message, "count").unwrap_or(0) {
                    out.fields.push(corral_guest::Field {
                        name: name.clone(),
                        value: Value::Bool(false),
                    });
                }
                for i in 0..int(message, "unique").unwrap_or(0) as usize {
                    out.fields.push(corral_guest::Field {
                        name: short_name(i),
                        value: Value::Bool(false),
                    });
                }
                corral_guest::emit(&out);
            }
            "log" => {
                corral_guest::info!("{payload}");
                println!("{payload}");
                eprintln!("{payload}");
            }
            "fail" => {
                let repeat = int(message, "repeat").unwrap_or(1).max(0) as usize;
                return Err(Failure::NonFatal(payload.repeat(repeat)));
            }
            "fatal" => return Err(Failure::Fatal(payload)),
            "panic" => panic!("{payload}"),
            _ => {}
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(Forger);
