//! Hostile plugin: process-message writes lines without end, through the log import, or
//! to stdout when the message's type is `stdout`, or stderr when it is `stderr`.

use std::io::Write;

use corral_guest::{Failure, Guest, Level, Message};

struct LogFlood;

impl Guest for LogFlood {
    fn process_message(message: &Message) -> Result<(), Failure> {
        let kind = message.type_();
        for i in 0u64.. {
            let line = format!("flooding, line {i}");
            match kind.as_str() {
                "stdout" => writeln!(std::io::stdout(), "{line}").map_err(Failure::non_fatal)?,
                "stderr" => writeln!(std::io::stderr(), "{line}").map_err(Failure::non_fatal)?,
                _ => corral_guest::log(Level::Info, &line),
            }
        }
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(LogFlood);
