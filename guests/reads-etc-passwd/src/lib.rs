//! Hostile plugin: on any process-message, tries to read `/etc/passwd` and to list `/`
//! and `.`, and emits one `denied-report` message with string fields `etc-passwd`,
//! `list-root` and `list-cwd`: "allowed: <the file's first 40 characters, or the number
//! of entries>" or "denied: <the error>". timer-event answers at once.

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

fn report<T: std::fmt::Display>(result: std::io::Result<T>) -> Value {
    Value::String(match result {
        Ok(seen) => format!("allowed: {seen}"),
        Err(e) => format!("denied: {e}"),
    })
}

fn count_entries(path: &str) -> std::io::Result<usize> {
    std::fs::read_dir(path).map(|entries| entries.count())
}

struct ReadsEtcPasswd;

impl Guest for ReadsEtcPasswd {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let passwd =
            std::fs::read_to_string("/etc/passwd").map(|text| text.chars().take(40).collect::<String>());
        corral_guest::emit(
            &OutMessage::new("denied-report")
                .field("etc-passwd", report(passwd))
                .field("list-root", report(count_entries("/")))
                .field("list-cwd", report(count_entries("."))),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(ReadsEtcPasswd);
