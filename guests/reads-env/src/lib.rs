//! Hostile plugin: on any process-message, reads what a WASI program's environment offers
//! and emits one `env-report` message with int fields `vars` (environment variables),
//! `args` (arguments) and `stdin-bytes` (bytes read from stdin to its end, -1 on error),
//! and string fields `cwd` ("ok: <path>" or "error: <the error>") and `home` (`$HOME`, or
//! "unset"). timer-event answers at once.

use std::io::Read;

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

struct ReadsEnv;

impl Guest for ReadsEnv {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let mut stdin = Vec::new();
        let stdin_bytes = std::io::stdin().read_to_end(&mut stdin).map_or(-1, |n| n as i64);
        let cwd = match std::env::current_dir() {
            Ok(path) => format!("ok: {}", path.display()),
            Err(e) => format!("error: {e}"),
        };
        let home = std::env::var("HOME").unwrap_or_else(|_| "unset".to_owned());
        corral_guest::emit(
            &OutMessage::new("env-report")
                .field("vars", Value::Int(std::env::vars_os().count() as i64))
                .field("args", Value::Int(std::env::args_os().count() as i64))
                .field("cwd", Value::String(cwd))
                .field("home", Value::String(home))
                .field("stdin-bytes", Value::Int(stdin_bytes)),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(ReadsEnv);
