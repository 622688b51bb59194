//! Test plugin: on process-message, tries what a WASI program can reach — files, sockets,
//! the environment, arguments, stdin, clocks and random — and emits one `probe` message
//! with a field per attempt: "allowed", or "denied: <the error>" (numbers for counts).
//! With config `read = PATH` it also reads that file (`read-config-path`, and its text
//! in `read-text`), and with `write = PATH` writes `probe` to it (`write-config-path`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use corral_guest::{Failure, Guest, Message, OutMessage, Value};

struct Probe;

fn outcome<T, E: std::fmt::Display>(result: Result<T, E>) -> Value {
    Value::String(match result {
        Ok(_) => "allowed".to_owned(),
        Err(e) => format!("denied: {e}"),
    })
}

impl Guest for Probe {
    fn process_message(_: &Message) -> Result<(), Failure> {
        let mut stdin = String::new();
        let stdin_read = std::io::stdin().read_to_string(&mut stdin).map(|_| stdin.len());
        let after_2020 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() > 1_577_836_800)
            .unwrap_or(false);
        let hashes_differ = RandomState::new().hash_one(1u8) != RandomState::new().hash_one(1u8);
        let mut report = OutMessage::new("probe");
        if let Some(path) = corral_guest::config::get("read") {
            let read = std::fs::read_to_string(&path);
            if let Ok(text) = &read {
                report = report.field("read-text", Value::String(text.clone()));
            }
            report = report.field("read-config-path", outcome(read));
        }
        if let Some(path) = corral_guest::config::get("write") {
            report = report.field("write-config-path", outcome(std::fs::write(&path, b"probe")));
        }
        corral_guest::emit(
            &report
                .field("env-vars", Value::Int(std::env::vars_os().count() as i64))
                .field("args", Value::Int(std::env::args_os().count() as i64))
                .field(
                    "stdin-bytes",
                    Value::Int(stdin_read.map(|n| n as i64).unwrap_or(-1)),
                )
                .field("read-etc-passwd", outcome(std::fs::read("/etc/passwd")))
                .field("list-root", outcome(std::fs::read_dir("/")))
                .field("list-cwd", outcome(std::fs::read_dir(".")))
                .field("write-tmp", outcome(std::fs::write("/tmp/corral-probe", b"x")))
                .field(
                    "tcp-connect",
                    outcome(std::net::TcpStream::connect("127.0.0.1:80")),
                )
                .field("tcp-listen", outcome(std::net::TcpListener::bind("127.0.0.1:0")))
                .field("udp-bind", outcome(std::net::UdpSocket::bind("127.0.0.1:0")))
                .field(
                    "dns",
                    outcome(std::net::ToSocketAddrs::to_socket_addrs("localhost:80")),
                )
                .field("clock-after-2020", Value::Bool(after_2020))
                .field("random-differs", Value::Bool(hashes_differ)),
        );
        Ok(())
    }

    fn timer_event(_now_ns: i64) -> Result<(), Failure> {
        Ok(())
    }
}

corral_guest::export!(Probe);
