//! The daemon's durable log end to end: nothing turned away under a burst, backpressure
//! at the bound, `kill -9` with exact totals, a corrupt tail, a lagging plugin beside a
//! fast one, a swap mid-stream, reprocessing from the earliest message.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::{Message, Value};
use corral_test_guests as guests;
use serde_json::Value as Json;

const BOUND: Duration = Duration::from_secs(60);

/// Waits for `condition`, up to [`BOUND`], saying `what` on a timeout.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Dirs {
    plugins: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Dirs {
    fn new(files: &[(&str, &str, &str)]) -> Dirs {
        let dirs = Dirs {
            plugins: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
        };
        for (name, guest, sidecar) in files {
            dirs.add(name, guest, sidecar);
        }
        dirs
    }

    fn add(&self, name: &str, guest: &str, sidecar: &str) {
        // The sidecar first: the watcher loads the pair together.
        std::fs::write(self.plugins.path().join(format!("{name}.toml")), sidecar).unwrap();
        std::fs::copy(guest, self.plugins.path().join(format!("{name}.wasm"))).unwrap();
    }

    fn output(&self) -> PathBuf {
        self.data.path().join("out.jsonl")
    }

    fn start(&self, args: &[&str]) -> Daemon {
        let mut child = Command::new(crate::support::corral_exe())
            .arg("run")
            .arg(self.plugins.path())
            .arg("--data")
            .arg(self.data.path())
            .args(["--admin", "127.0.0.1:0", "--output"])
            .arg(self.output())
            .args(args)
            .env("NO_COLOR", "1")
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, log) = (child.stderr.take().unwrap(), stderr.clone());
        let reader = std::thread::spawn(move || {
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
            reader: Some(reader),
        };
        let marker = "admin API listening on ";
        wait_until("the daemon to start", || {
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

struct Daemon {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

impl Daemon {
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_log(&self, needle: &str) {
        wait_until(&format!("`{needle}` in the log"), || self.log().contains(needle));
    }

    fn get(&self, path: &str) -> Json {
        let mut response = agent().get(format!("{}{path}", self.base)).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// POSTs `body` to /messages: the status and the Retry-After header.
    fn post(&self, body: &str) -> (u16, Option<String>) {
        let response = agent()
            .post(format!("{}/messages", self.base))
            .send(body)
            .unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), retry)
    }

    /// POSTs `body` until it is accepted (202), waiting out 503s.
    fn post_durably(&self, body: &str) {
        wait_until("the log to take the messages", || match self.post(body) {
            (202, _) => true,
            (503, Some(_)) => false,
            (status, _) => panic!("POST /messages answered {status}: {}", self.log()),
        });
    }

    fn plugin(&self, name: &str) -> Json {
        self.get(&format!("/plugins/{name}"))
    }

    fn processed(&self, name: &str) -> u64 {
        self.plugin(name)["reader"]["processed"].as_u64().unwrap_or(0)
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`, as a crash.
    fn crash(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(mut self) -> String {
        self.signal("-TERM");
        let mut status = None;
        wait_until("the daemon to exit after SIGTERM", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log();
        assert!(status.unwrap().success(), "exit {status:?}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The emitted messages written to `path` so far (a line cut short at the end is left).
fn output(path: &Path) -> Vec<Message> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| Message::from_json(l).ok())
        .collect()
}

fn int(message: &Message, name: &str) -> i64 {
    match message.field(name) {
        Some(Value::Int(n)) => *n,
        other => panic!("field `{name}` of {message:?}: {other:?}"),
    }
}

fn id(message: &Message) -> String {
    match message.field(corral_daemon::ID_FIELD) {
        Some(Value::String(id)) => id.clone(),
        other => panic!("no id on {message:?}: {other:?}"),
    }
}

fn numbered(from: usize, to: usize) -> String {
    let items: Vec<String> = (from..to)
        .map(|n| format!(r#"{{"type":"t","fields":{{"n":{n}}}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

const ALL: &str = "[matcher]\nall = true\n";

#[test]
fn kill_9_at_several_points_loses_nothing_and_the_totals_are_exact() {
    const TOTAL: usize = 100_000;
    const CHUNK: usize = 2_000;
    let dirs = Dirs::new(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let args = ["--checkpoint-interval-ms", "100", "--commit-interval-ms", "5"];
    let mut sent = 0;
    // Crash points: right after a POST (the plugin mid-stream), after the plugin caught
    // up, and after some checkpoints; the last run ends cleanly.
    let crashes = [(20_000, 0), (45_000, 1), (70_000, 2), (90_000, 0)];
    for (until, how) in crashes {
        let daemon = dirs.start(&args);
        while sent < until {
            daemon.post_durably(&numbered(sent, sent + CHUNK));
            sent += CHUNK;
        }
        match how {
            1 => wait_until("the plugin to catch up", || {
                daemon.processed("tally") > 0 && daemon.plugin("tally")["lag"]["messages"] == 0
            }),
            2 => {
                let before = daemon.plugin("tally")["reader"]["checkpoints"].as_u64().unwrap();
                wait_until("two checkpoints", || {
                    daemon.plugin("tally")["reader"]["checkpoints"].as_u64().unwrap() >= before + 2
                });
            }
            _ => {}
        }
        daemon.crash();
    }
    let daemon = dirs.start(&args);
    while sent < TOTAL {
        daemon.post_durably(&numbered(sent, sent + CHUNK));
        sent += CHUNK;
    }
    daemon.post_durably(r#"{"type":"tally.report"}"#);
    let path = dirs.output();
    let mut report = None;
    wait_until("the report", || {
        report = output(&path).into_iter().find(|m| m.type_ == "tally.report");
        report.is_some()
    });
    let report = report.unwrap();
    assert_eq!(
        int(&report, "state"),
        TOTAL as i64,
        "the count in the plugin's state is exact"
    );
    assert_eq!(
        int(&report, "store"),
        TOTAL as i64,
        "the count in the plugin's store is exact"
    );
    daemon.stop();

    // Every message's tally was written at least once; a repeat has the id and the
    // content of the first.
    let mut by_id: HashMap<String, (i64, i64, i64)> = HashMap::new();
    let mut seen = vec![0u32; TOTAL];
    let mut lines = 0;
    for message in output(&path).iter().filter(|m| m.type_ == "tally") {
        lines += 1;
        let content = (int(message, "n"), int(message, "count"), int(message, "store"));
        if let Some(first) = by_id.insert(id(message), content) {
            assert_eq!(first, content, "a repeat carries its first's id and content");
        }
        seen[content.0 as usize] += 1;
    }
    let missing: Vec<usize> = (0..TOTAL).filter(|n| seen[*n] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} messages never came out, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut ids_of: HashMap<i64, Vec<&String>> = HashMap::new();
    for (id, content) in &by_id {
        ids_of.entry(content.0).or_default().push(id);
    }
    let mut twice: Vec<_> = ids_of.iter().filter(|(_, ids)| ids.len() > 1).collect();
    twice.sort();
    assert_eq!(
        by_id.len(),
        TOTAL,
        "one id per message; under two: {:?}",
        &twice[..twice.len().min(12)]
    );
    let counts: std::collections::BTreeSet<i64> = by_id.values().map(|v| v.1).collect();
    assert_eq!(
        counts.len(),
        TOTAL,
        "every count from 1 to {TOTAL} once: nothing counted twice"
    );
    println!(
        "kill -9 ×{}: {TOTAL} messages, {lines} output lines, {} repeats (identified by id)",
        crashes.len(),
        lines - TOTAL
    );
}

#[test]
fn a_burst_against_a_slow_plugin_turns_nothing_away_with_memory_bounded() {
    const TOTAL: usize = 200_000;
    let dirs = Dirs::new(&[("slow", guests::SLOW_BUT_OK, ALL)]);
    // A bound far below the burst: intake must wait for the plugin.
    let mut daemon = dirs.start(&["--max-log", "2MiB", "--checkpoint-interval-ms", "100"]);
    let mut stdin = daemon.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for n in 0..TOTAL {
            writeln!(out, r#"{{"type":"t","fields":{{"iterations":200,"n":{n}}}}}"#).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        stdin
    });
    wait_until("all messages processed", || {
        let processed = daemon.processed("slow");
        processed >= TOTAL as u64
    });
    let _stdin = writer.join().unwrap();
    let plugin = daemon.plugin("slow");
    assert_eq!(plugin["reader"]["processed"], TOTAL as u64, "{plugin}");
    assert_eq!(plugin["reader"]["skipped"], 0, "{plugin}");
    let status = daemon.get("/status");
    assert!(
        status["log"]["full_waits"].as_u64().unwrap() > 0,
        "intake waited at the bound: {status}"
    );
    assert!(
        status["log"]["unread_bytes"].as_u64().unwrap() <= 2 << 20,
        "{status}"
    );
    let peak = daemon.peak_rss_kib();
    println!(
        "burst: {TOTAL} messages, none turned away, peak RSS {} MiB",
        peak / 1024
    );
    assert!(peak < 256 << 10, "peak RSS {peak} KiB");
    let log = daemon.stop();
    assert!(!log.contains("turned away"), "{log}");
}

#[test]
fn at_the_bound_post_answers_503_with_retry_after_then_resumes() {
    let dirs = Dirs::new(&[("slow", guests::SLOW_BUT_OK, ALL)]);
    let daemon = dirs.start(&["--max-log", "64KiB", "--checkpoint-interval-ms", "100"]);
    // Each message takes the plugin about a millisecond.
    let body: String = format!(
        "[{}]",
        vec![r#"{"type":"t","fields":{"iterations":1000000}}"#; 200].join(",")
    );
    let mut refused = None;
    for _ in 0..200 {
        match daemon.post(&body) {
            (202, _) => {}
            (503, retry) => {
                refused = Some(retry);
                break;
            }
            (status, _) => panic!("{status}"),
        }
    }
    let retry = refused.expect("the log never filled");
    assert_eq!(retry.as_deref(), Some("1"), "503 says when to retry");
    // Intake resumes once the plugin has read enough.
    daemon.post_durably(&body);
    let status = daemon.get("/status");
    assert!(status["log"]["max_bytes"] == 64 << 10, "{status}");
}

#[test]
fn a_corrupt_tail_is_truncated_at_the_last_good_record_and_said() {
    let dirs = Dirs::new(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let daemon = dirs.start(&[]);
    daemon.post_durably(&numbered(0, 10));
    wait_until("ten processed", || daemon.processed("tally") == 10);
    daemon.stop();
    // A torn record at the end of the last segment, and the last good one damaged.
    let log_dir = dirs.data.path().join("log");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x55;
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    std::fs::write(last, &bytes).unwrap();

    let daemon = dirs.start(&[]);
    daemon.wait_log("torn or corrupt tail truncated");
    assert!(daemon.log().contains("after record 9"), "{}", daemon.log());
    daemon.post_durably(&numbered(100, 105));
    wait_until("the new messages", || {
        output(&dirs.output())
            .iter()
            .any(|m| m.type_ == "tally" && int(m, "n") == 104)
    });
    daemon.stop();
}

#[test]
fn a_lagging_plugin_does_not_hold_back_a_fast_one() {
    let dirs = Dirs::new(&[("slow", guests::SLOW_BUT_OK, ALL), ("hello", guests::HELLO, ALL)]);
    let daemon = dirs.start(&[]);
    // Each message takes the slow plugin about 50 ms.
    let body: String = format!(
        "[{}]",
        (0..100)
            .map(|i| format!(r#"{{"type":"t","logger":"n{i}","fields":{{"iterations":50000000}}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    daemon.post_durably(&body);
    wait_until("hello to greet all 100", || daemon.processed("hello") == 100);
    let slow = daemon.plugin("slow");
    assert!(slow["lag"]["messages"].as_u64().unwrap() > 0, "{slow}");
    assert!(slow["lag"]["bytes"].as_u64().unwrap() > 0, "{slow}");
    assert_eq!(daemon.plugin("hello")["lag"]["messages"], 0);
    wait_until("the greetings written", || {
        output(&dirs.output())
            .iter()
            .filter(|m| m.type_ == "hello.greeting")
            .count()
            == 100
    });
    let metrics = agent()
        .get(format!("{}/metrics", daemon.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("corral_lag_messages{plugin=\"slow\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_lag_bytes{plugin=\"hello\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_swap_mid_stream_hands_the_cursor_over_with_no_gap_and_no_repeat() {
    const TOTAL: i64 = 4_000;
    let dirs = Dirs::new(&[("tally", guests::SWAP_A, ALL)]);
    let daemon = dirs.start(&[]);
    daemon.post_durably(&numbered(0, 2_000));
    wait_until("some processed", || daemon.processed("tally") > 0);
    std::fs::copy(guests::SWAP_B, dirs.plugins.path().join("tally.wasm")).unwrap();
    daemon.post_durably(&numbered(2_000, 3_000));
    daemon.wait_log("plugin replaced");
    daemon.post_durably(&numbered(3_000, TOTAL as usize));
    wait_until("all processed", || daemon.processed("tally") == TOTAL as u64);
    daemon.stop();
    let tallies: Vec<Message> = output(&dirs.output())
        .into_iter()
        .filter(|m| m.type_ == "tally")
        .collect();
    let counts: Vec<i64> = tallies.iter().map(|m| int(m, "count")).collect();
    assert_eq!(counts, (1..=TOTAL).collect::<Vec<_>>(), "no gap, no repeat");
    let versions: Vec<&Value> = tallies.iter().filter_map(|m| m.field("version")).collect();
    assert_eq!(versions.first(), Some(&&Value::String("a".into())));
    assert_eq!(versions.last(), Some(&&Value::String("b".into())));
}

#[test]
fn a_new_plugin_reads_from_the_end_or_from_the_earliest_message_kept() {
    let dirs = Dirs::new(&[("first", guests::HELLO, ALL)]);
    let daemon = dirs.start(&[]);
    let body = format!(
        "[{}]",
        (0..5)
            .map(|i| format!(r#"{{"type":"t","logger":"old{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    daemon.post_durably(&body);
    wait_until("the first plugin", || daemon.processed("first") == 5);
    dirs.add(
        "history",
        guests::HELLO,
        "start-from = \"earliest\"\n[matcher]\nall = true\n",
    );
    dirs.add("latest", guests::HELLO, ALL);
    wait_until("both loaded", || {
        daemon
            .get("/plugins")
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["reader"].is_object())
            .count()
            == 3
    });
    daemon.post_durably(r#"{"type":"t","logger":"new"}"#);
    wait_until("history to reprocess", || daemon.processed("history") == 6);
    wait_until("latest to see the new one", || daemon.processed("latest") == 1);
    daemon.stop();
    let mut greeted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in output(&dirs.output()) {
        let plugin = id(&m).split('/').next().unwrap().to_owned();
        greeted.entry(plugin).or_default().push(m.payload);
    }
    assert_eq!(greeted["history"].len(), 6, "{greeted:?}");
    assert_eq!(greeted["latest"], ["Hello, new!"], "{greeted:?}");
}

#[test]
fn a_clean_restart_replays_nothing() {
    let dirs = Dirs::new(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let daemon = dirs.start(&[]);
    daemon.post_durably(&numbered(0, 500));
    wait_until("all processed", || daemon.processed("tally") == 500);
    let log = daemon.stop();
    assert!(log.contains("saved=[\"tally\"]"), "{log}");
    let daemon = dirs.start(&[]);
    daemon.post_durably(r#"{"type":"tally.report"}"#);
    wait_until("the report", || {
        output(&dirs.output()).iter().any(|m| m.type_ == "tally.report")
    });
    daemon.stop();
    let out = output(&dirs.output());
    assert_eq!(
        out.iter().filter(|m| m.type_ == "tally").count(),
        500,
        "nothing written twice"
    );
    let report = out.iter().find(|m| m.type_ == "tally.report").unwrap();
    assert_eq!((int(report, "state"), int(report, "store")), (500, 500));
}

#[test]
fn a_plugin_that_fell_behind_gets_its_messages_in_batches_in_order() {
    const MESSAGES: usize = 200;
    let dirs = Dirs::new(&[("probe", guests::BATCH_PROBE, ALL)]);
    let daemon = dirs.start(&[]);
    // A slow first message: the others are in the log behind it.
    daemon.post_durably(r#"{"type":"wait","payload":"slow","fields":{"ms":300}}"#);
    let body = format!(
        "[{}]",
        (0..MESSAGES)
            .map(|i| format!(r#"{{"type":"ok","payload":"{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    daemon.post_durably(&body);
    wait_until("all processed", || {
        daemon.processed("probe") == MESSAGES as u64 + 1
    });
    let calls = daemon.plugin("probe")["reader"]["calls"].as_u64().unwrap();
    daemon.stop();
    let payloads: Vec<String> = output(&dirs.output())
        .into_iter()
        .filter(|m| m.type_ == "probe.seen")
        .map(|m| m.payload)
        .collect();
    let expected: Vec<String> = std::iter::once("slow".to_owned())
        .chain((0..MESSAGES).map(|i| i.to_string()))
        .collect();
    assert_eq!(payloads, expected, "every message, in order");
    assert!(
        calls <= 1 + MESSAGES.div_ceil(corral_daemon::MAX_BATCH) as u64 + 2,
        "{calls} calls for {} messages: not batched",
        MESSAGES + 1
    );
}

#[test]
fn a_terminated_plugins_cursor_waits_for_its_replacement() {
    let dirs = Dirs::new(&[("probe", guests::BATCH_PROBE, ALL)]);
    let daemon = dirs.start(&[]);
    daemon.post_durably(r#"{"type":"fatal","payload":"stop"}"#);
    wait_until("the plugin terminated", || {
        daemon.plugin("probe")["state"] == "terminated"
    });
    daemon.post_durably(r#"[{"type":"ok","payload":"a"},{"type":"ok","payload":"b"}]"#);
    wait_until("the reader to wait", || {
        daemon.plugin("probe")["reader"]["waiting"] == true
    });
    assert!(daemon.plugin("probe")["lag"]["messages"].as_u64().unwrap() >= 2);
    // The same file again brings a terminated plugin back.
    std::fs::copy(guests::BATCH_PROBE, dirs.plugins.path().join("probe.wasm")).unwrap();
    wait_until("the waiting messages processed", || {
        let seen: Vec<String> = output(&dirs.output())
            .into_iter()
            .filter(|m| m.type_ == "probe.seen")
            .map(|m| m.payload)
            .collect();
        seen == ["a", "b"]
    });
    let log = daemon.stop();
    assert!(
        log.contains("plugin terminated") || log.contains("terminated"),
        "{log}"
    );
}
