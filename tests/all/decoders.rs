//! Decoders and their inputs: the `decoder` world through `Plugin::decode`, the example
//! decoders on the fixtures, and the daemon's `tail`, `udp` and `tcp` inputs end to end
//! (rotation by rename and by copy-truncate, a glob, a cut line, failures, `kill -9`, a
//! swap mid-file, syslog on loopback).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::{CallError, PluginOptions, RawRecord, Value};
use corral_test_guests as guests;
use serde_json::Value as Json;

use crate::support::{eventually, load, load_as};

const BOUND: Duration = Duration::from_secs(60);

fn fixture(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(path)).unwrap()
}

#[test]
fn nginx_access_decodes_the_fixture_into_typed_fields() {
    let plugin = load("nginx-access", guests::NGINX_ACCESS);
    assert!(plugin.decodes());
    assert_eq!(
        plugin.report().world,
        format!("corral:plugin/decoder@{}", corral::PLUGIN_PACKAGE_VERSION)
    );
    let text = fixture("nginx/access.log");
    let lines: Vec<&str> = text.lines().collect();
    let records: Vec<RawRecord<'_>> = lines
        .iter()
        .map(|l| RawRecord {
            path: "/var/log/nginx/access.log",
            ..RawRecord::new(l.as_bytes())
        })
        .collect();
    let outcome = plugin.decode(&records).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.emitted.len(), lines.len());
    let first = &outcome.emitted[0];
    assert_eq!(first.type_, "nginx.access");
    assert_eq!(first.logger, "nginx-access");
    assert_eq!(first.field("status"), Some(&Value::Int(200)));
    assert_eq!(first.field("body_bytes_sent"), Some(&Value::Int(612)));
    assert_eq!(first.field("request_method"), Some(&Value::String("GET".into())));
    assert_eq!(first.field("remote_user"), None, "`-` is no value");
    // 02/Dec/2026:01:14:07 +0000
    assert_eq!(first.timestamp, 1_796_174_047_000_000_000);
    let alice = &outcome.emitted[4];
    assert_eq!(alice.field("remote_user"), Some(&Value::String("alice".into())));
    assert_eq!(alice.field("status"), Some(&Value::Int(201)));
}

#[test]
fn a_configured_log_format_types_request_time_and_bad_lines_fail_alone() {
    let format = r#"$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time"#;
    let plugin = load_as(
        "nginx-custom",
        guests::NGINX_ACCESS,
        PluginOptions::default().config("log_format", format),
    );
    let good = r#"10.0.0.1 [02/Dec/2026:01:14:07 +0000] "GET /a HTTP/1.1" 200 12 0.042"#;
    let records = [
        RawRecord::new(good.as_bytes()),
        RawRecord::new(b"not an access log line"),
        RawRecord::new(good.as_bytes()),
        RawRecord::new(&[0xff, 0xfe]),
    ];
    let outcome = plugin.decode(&records).unwrap();
    assert_eq!(outcome.emitted.len(), 2, "the good lines flow");
    assert_eq!(
        outcome.emitted[0].field("request_time"),
        Some(&Value::Float(0.042))
    );
    let failed: Vec<usize> = outcome.failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, [1, 3]);
    assert!(
        matches!(&outcome.failed[0].1, CallError::Failed { message, .. } if message.contains("remote_addr")),
        "{:?}",
        outcome.failed[0].1
    );
    assert_eq!(plugin.state(), corral::PluginState::Running);
}

#[test]
fn syslog_decodes_rfc5424_and_rfc3164() {
    let plugin = load("syslog", guests::SYSLOG);
    let text = fixture("syslog/rfc5424.log") + &fixture("syslog/rfc3164.log");
    let records: Vec<RawRecord<'_>> = text
        .lines()
        .map(|l| RawRecord {
            peer: "127.0.0.1:514",
            ..RawRecord::new(l.as_bytes())
        })
        .collect();
    let outcome = plugin.decode(&records).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let m = &outcome.emitted;
    assert_eq!(m.len(), 10);
    assert_eq!((m[0].type_.as_str(), m[0].severity), ("syslog", 5));
    assert_eq!(m[0].field("facility"), Some(&Value::Int(20)));
    assert_eq!(
        m[0].field("hostname"),
        Some(&Value::String("mymachine.example.com".into()))
    );
    assert_eq!(m[0].field("app_name"), Some(&Value::String("evntslog".into())));
    assert_eq!(m[0].field("msgid"), Some(&Value::String("ID47".into())));
    assert_eq!(
        m[0].field("sd.exampleSDID@32473.eventID"),
        Some(&Value::String("1011".into()))
    );
    assert_eq!(m[0].payload, "An application event log entry");
    assert_eq!(m[1].field("procid"), Some(&Value::String("2211".into())));
    assert_eq!(m[1].severity, 2);
    assert_eq!(m[5].field("app_name"), Some(&Value::String("su".into())));
    assert_eq!(m[5].field("procid"), Some(&Value::String("230".into())));
    assert_eq!(
        m[7].field("facility"),
        None,
        "rsyslog's file lines have no priority"
    );
    assert_eq!(m[7].field("app_name"), Some(&Value::String("kernel".into())));
    assert_eq!(m[0].field("peer"), Some(&Value::String("127.0.0.1:514".into())));
}

#[test]
fn a_filter_is_not_a_decoder_and_a_decoder_takes_no_messages() {
    let filter = load("echo-not-decoder", guests::ECHO);
    assert!(matches!(
        filter.decode(&[RawRecord::new(b"x")]),
        Err(CallError::Export { .. })
    ));
    let decoder = load("nginx-no-messages", guests::NGINX_ACCESS);
    assert!(matches!(
        decoder.process_message(&corral::Message::new("x")),
        Err(CallError::Export { .. })
    ));
    assert_eq!(decoder.stats().process_message.calls, 0, "nothing ran");
}

// The daemon end to end.

struct Dirs {
    plugins: tempfile::TempDir,
    data: tempfile::TempDir,
    logs: tempfile::TempDir,
}

/// The echo filter, taking what the decoders decode.
const ECHO: &str = "[matcher]\ntype = [\"nginx.*\", \"syslog\"]\n";

impl Dirs {
    fn new() -> Dirs {
        let dirs = Dirs {
            plugins: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
            logs: tempfile::tempdir().unwrap(),
        };
        dirs.add("echo", guests::ECHO, ECHO);
        dirs
    }

    fn add(&self, name: &str, guest: &str, sidecar: &str) {
        std::fs::write(self.plugins.path().join(format!("{name}.toml")), sidecar).unwrap();
        std::fs::copy(guest, self.plugins.path().join(format!("{name}.wasm"))).unwrap();
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(name)
    }

    fn output(&self) -> PathBuf {
        self.data.path().join("out.jsonl")
    }

    /// The output's messages.
    fn out(&self) -> Vec<Json> {
        std::fs::read_to_string(self.output())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How often each request number (`GET /n/NUMBER`) is in the output.
    fn seen(&self) -> BTreeMap<u64, usize> {
        let mut seen = BTreeMap::new();
        for message in self.out() {
            let uri = field(&message, "request_uri");
            if let Some(n) = uri.as_str().and_then(|u| u.strip_prefix("/n/")) {
                *seen.entry(n.parse().unwrap()).or_default() += 1;
            }
        }
        seen
    }

    fn start(&self) -> Daemon {
        let mut child = Command::new(guests::corral_exe())
            .arg("run")
            .arg(self.plugins.path())
            .arg("--data")
            .arg(self.data.path())
            .args(["--admin", "127.0.0.1:0", "--output"])
            .arg(self.output())
            .args(["--checkpoint-interval-ms", "200"])
            .env("NO_COLOR", "1")
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, log) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = Daemon {
            child,
            base: String::new(),
            stderr,
        };
        let marker = "admin API listening on ";
        eventually("the daemon to start", BOUND, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("the daemon exited with {status}: {}", daemon.log());
            }
            daemon.log().contains(marker)
        });
        let log = daemon.log();
        let at = log.find(marker).unwrap() + marker.len();
        daemon.base = log[at..].lines().next().unwrap().trim().to_owned();
        daemon
    }
}

fn field(message: &Json, name: &str) -> Json {
    message["fields"][name].clone()
}

struct Daemon {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn get(&self, path: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(BOUND))
            .build()
            .into();
        let mut response = agent.get(format!("{}{path}", self.base)).call().unwrap();
        response.body_mut().read_to_string().unwrap()
    }

    fn input(&self, name: &str) -> Json {
        let plugin: Json = serde_json::from_str(&self.get(&format!("/plugins/{name}"))).unwrap();
        plugin["input"].clone()
    }

    /// The offset delivered in the followed file at `path`, if it is followed.
    fn offset(&self, name: &str, path: &Path) -> Option<u64> {
        let input = self.input(name);
        input["files"]
            .as_array()?
            .iter()
            .find(|f| f["path"] == path.display().to_string().as_str() && f["rotated"] == false)?["offset"]
            .as_u64()
    }

    fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "exit {status:?}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_line(n: u64) -> String {
    format!(
        "192.0.2.{} - - [02/Dec/2026:01:14:07 +0000] \"GET /n/{n} HTTP/1.1\" 200 {} \"-\" \"curl/8.5.0\"\n",
        n % 250,
        n * 3
    )
}

fn append(path: &Path, from: u64, to: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let text: String = (from..to).map(nginx_line).collect();
    file.write_all(text.as_bytes()).unwrap();
}

fn tail_sidecar(path: &Path, extra: &str) -> String {
    format!(
        "[input]\ntype = \"tail\"\npath = {:?}\nstart-at = \"beginning\"\npoll-ms = 20\nrotated-grace-ms = 300\n{extra}",
        path.display().to_string()
    )
}

fn exactly_once(seen: &BTreeMap<u64, usize>, n: u64) {
    let missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    let doubled: Vec<(&u64, &usize)> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
    assert!(doubled.is_empty(), "lines doubled: {doubled:?}");
}

#[test]
fn tail_follows_rename_and_copy_truncate_rotation_losing_and_doubling_nothing() {
    let dirs = Dirs::new();
    let log = dirs.log("access.log");
    append(&log, 0, 100);
    dirs.add("nginx", guests::NGINX_ACCESS, &tail_sidecar(&log, ""));
    let daemon = dirs.start();
    // Written while it reads: small appends.
    for chunk in 0..10 {
        append(&log, 100 + chunk * 50, 150 + chunk * 50);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Rotation by rename: the old file has lines the tail has not read yet.
    std::fs::rename(&log, dirs.log("access.log.1")).unwrap();
    append(&log, 600, 700);
    for chunk in 0..6 {
        append(&log, 700 + chunk * 50, 750 + chunk * 50);
    }
    // Copy-truncate, at a point the tail has read up to (what logrotate's copytruncate
    // writes between its copy and its truncation is lost for any reader).
    let size = std::fs::metadata(&log).unwrap().len();
    eventually("the tail to read the file to its end", BOUND, || {
        daemon.offset("nginx", &log) == Some(size)
    });
    std::fs::copy(&log, dirs.log("access.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    eventually("the tail to see the truncation", BOUND, || {
        daemon.offset("nginx", &log) == Some(0)
    });
    append(&log, 1000, 1200);
    eventually("every line in the output", BOUND, || dirs.seen().len() == 1200);
    let input = daemon.input("nginx");
    assert_eq!(input["records"], 1200, "{input}");
    assert_eq!(input["decode_failures"], 0, "{input}");
    let metrics = daemon.get("/metrics");
    assert!(
        metrics.contains("corral_input_records_total{plugin=\"nginx\"} 1200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_input_file_behind_bytes{plugin=\"nginx\""),
        "{metrics}"
    );
    daemon.stop();
    exactly_once(&dirs.seen(), 1200);
}

#[test]
fn a_glob_picks_up_new_files_cuts_long_lines_and_counts_failures() {
    let dirs = Dirs::new();
    let old = dirs.log("a.log");
    // There before the input started: read from its end.
    std::fs::write(&old, "not read: it was there before\n").unwrap();
    let glob = dirs.log("*.log");
    let sidecar =
        tail_sidecar(&glob, "max-line = 300\n").replace("start-at = \"beginning\"", "start-at = \"end\"");
    dirs.add("nginx", guests::NGINX_ACCESS, &sidecar);
    let daemon = dirs.start();
    eventually("the input to follow a.log", BOUND, || {
        daemon.offset("nginx", &old).is_some()
    });
    append(&old, 0, 50);
    let new = dirs.log("b.log");
    let long = format!("{}\n", "x".repeat(5000));
    std::fs::write(&new, format!("{}{long}garbage line\n", nginx_line(50))).unwrap();
    append(&new, 51, 100);
    eventually("the good lines in the output", BOUND, || dirs.seen().len() == 100);
    eventually("the failures counted", BOUND, || {
        daemon.input("nginx")["decode_failures"] == 2
    });
    let input = daemon.input("nginx");
    assert_eq!(input["cut"], 1, "{input}");
    assert_eq!(input["records"], 102, "{input}");
    let recent = input["recent_failures"].as_array().unwrap();
    assert_eq!(recent.len(), 2, "{input}");
    assert_eq!(
        recent[0]["record"].as_str().unwrap().len(),
        256,
        "shown cut: {input}"
    );
    assert_eq!(recent[1]["record"], "garbage line");
    assert!(
        recent[1]["reason"].as_str().unwrap().contains("remote_addr"),
        "{input}"
    );
    let log = daemon.stop();
    // The first scan and the registry's load event both sync the input: it must start
    // once (two inputs read every line twice).
    assert_eq!(log.matches("input started").count(), 1, "{log}");
    exactly_once(&dirs.seen(), 100);
}

#[test]
fn kill_9_mid_file_resumes_from_the_checkpoint() {
    let dirs = Dirs::new();
    let log = dirs.log("access.log");
    const N: u64 = 20_000;
    append(&log, 0, N);
    dirs.add("nginx", guests::NGINX_ACCESS, &tail_sidecar(&log, ""));
    let daemon = dirs.start();
    eventually("some lines in the output", BOUND, || dirs.seen().len() > 2_000);
    daemon.crash();
    let daemon = dirs.start();
    eventually("every line in the output", BOUND, || {
        dirs.seen().len() == N as usize
    });
    daemon.stop();
    let seen = dirs.seen();
    let repeats: usize = seen.values().map(|c| c - 1).sum();
    assert!((0..N).all(|i| seen.contains_key(&i)), "nothing skipped");
    // What was read after the last checkpoint (200 ms) is read again, and no more.
    assert!(repeats < N as usize / 2, "{repeats} repeats");
    // A clean stop replays nothing: a third run adds nothing.
    let before = dirs.out().len();
    let daemon = dirs.start();
    std::thread::sleep(Duration::from_millis(500));
    daemon.stop();
    assert_eq!(dirs.out().len(), before, "a clean restart reads nothing again");
}

#[test]
fn a_decoder_swapped_mid_file_keeps_its_place() {
    let dirs = Dirs::new();
    let log = dirs.log("access.log");
    let sidecar = |type_: &str| tail_sidecar(&log, &format!("[config]\ntype = \"{type_}\"\n"));
    dirs.add("nginx", guests::NGINX_ACCESS, &sidecar("nginx.a"));
    append(&log, 0, 200);
    let daemon = dirs.start();
    eventually("some lines decoded", BOUND, || !dirs.seen().is_empty());
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for chunk in 0..20 {
                append(&log, 200 + chunk * 100, 300 + chunk * 100);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The new version: another config, the same input.
    std::fs::write(dirs.plugins.path().join("nginx.toml"), sidecar("nginx.b")).unwrap();
    writer.join().unwrap();
    eventually("every line in the output", BOUND, || dirs.seen().len() == 2200);
    daemon.stop();
    exactly_once(&dirs.seen(), 2200);
    // Each line decoded by one version, the old before the new.
    let types: Vec<String> = dirs
        .out()
        .iter()
        .filter(|m| {
            field(m, "request_uri")
                .as_str()
                .is_some_and(|u| u.starts_with("/n/"))
        })
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    let switch = types
        .iter()
        .position(|t| t == "nginx.b")
        .expect("the new version decoded");
    assert!(types[switch..].iter().all(|t| t == "nginx.b"), "{types:?}");
}

/// The port `name`'s input listens on, once it does: its `source`, the address bound.
fn listening_port(daemon: &Daemon, name: &str) -> Option<u16> {
    let source = daemon.input(name)["source"]
        .as_str()?
        .parse::<std::net::SocketAddr>()
        .ok()?;
    Some(source.port()).filter(|&port| port != 0)
}

#[test]
fn syslog_over_udp_and_tcp_on_loopback() {
    let dirs = Dirs::new();
    // Port 0: each listener takes a free port and says which (a port chosen here and
    // released could be taken before the daemon binds it).
    dirs.add(
        "sys-udp",
        guests::SYSLOG,
        "[input]\ntype = \"udp\"\naddress = \"127.0.0.1:0\"\n",
    );
    dirs.add(
        "sys-tcp",
        guests::SYSLOG,
        "[input]\ntype = \"tcp\"\naddress = \"127.0.0.1:0\"\n",
    );
    let daemon = dirs.start();
    eventually("both listening", BOUND, || {
        listening_port(&daemon, "sys-udp").is_some() && listening_port(&daemon, "sys-tcp").is_some()
    });
    let (udp, tcp) = (
        listening_port(&daemon, "sys-udp").unwrap(),
        listening_port(&daemon, "sys-tcp").unwrap(),
    );
    let log = daemon.log();
    assert!(
        log.contains(&format!("udp 127.0.0.1:{udp}")) && log.contains(&format!("tcp 127.0.0.1:{tcp}")),
        "the log names the ports bound: {log}"
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for line in fixture("syslog/rfc5424.log").lines() {
        socket.send_to(line.as_bytes(), ("127.0.0.1", udp)).unwrap();
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    // Octet counting and newline framing, on one connection.
    let counted = "<34>1 2026-12-02T01:14:16Z tcphost app 1 - - counted frame";
    write!(stream, "{} {counted}", counted.len()).unwrap();
    for line in fixture("syslog/rfc3164.log").lines() {
        writeln!(stream, "{line}").unwrap();
    }
    stream.flush().unwrap();
    drop(stream);
    let syslog = |logger: &str| {
        dirs.out()
            .into_iter()
            .filter(|m| m["type"] == "syslog" && m["logger"] == "echo" && field(m, "guest_logger") == logger)
            .count()
    };
    eventually("the messages decoded", BOUND, || {
        syslog("sys-udp") == 5 && syslog("sys-tcp") == 6
    });
    let out = dirs.out();
    assert!(
        out.iter()
            .any(|m| field(m, "hostname") == "tcphost" && m["payload"] == "counted frame"),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|m| field(m, "app_name") == "sshd" && m["severity"] == 2)
    );
    assert_eq!(daemon.input("sys-udp")["records"], 5);
    daemon.stop();
}
