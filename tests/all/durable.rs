//! The daemon's durable log end to end: nothing turned away under a burst, backpressure
//! at the bound, `kill -9` with exact totals, a corrupt tail, a lagging plugin beside a
//! fast one, a swap mid-stream, reprocessing from the earliest message.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use corral::{Message, Value};
use corral_test_guests as guests;

use crate::support::daemon::{Daemon, Dirs};

/// Starts the daemon on `dirs` with its output to a file in the data directory.
fn start(dirs: &Dirs, args: &[&str]) -> Daemon {
    let output = dirs.output_file();
    let output = output.to_str().unwrap();
    dirs.start(&[&["--output", output][..], args].concat())
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
    let dirs = Dirs::with_sidecars(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let args = ["--checkpoint-interval-ms", "100", "--commit-interval-ms", "5"];
    let mut sent = 0;
    // Crash points: right after a POST (the plugin mid-stream), after the plugin caught
    // up, and after some checkpoints; the last run ends cleanly.
    let crashes = [(20_000, 0), (45_000, 1), (70_000, 2), (90_000, 0)];
    for (until, how) in crashes {
        let daemon = start(&dirs, &args);
        while sent < until {
            daemon.post_durably(&numbered(sent, sent + CHUNK));
            sent += CHUNK;
        }
        match how {
            1 => daemon.eventually("the plugin to catch up", || {
                daemon.processed("tally") > 0 && daemon.plugin("tally")["lag"]["messages"] == 0
            }),
            2 => {
                let before = daemon.plugin("tally")["reader"]["checkpoints"].as_u64().unwrap();
                daemon.eventually("two checkpoints", || {
                    daemon.plugin("tally")["reader"]["checkpoints"].as_u64().unwrap() >= before + 2
                });
            }
            _ => {}
        }
        daemon.crash();
    }
    let daemon = start(&dirs, &args);
    while sent < TOTAL {
        daemon.post_durably(&numbered(sent, sent + CHUNK));
        sent += CHUNK;
    }
    daemon.post_durably(r#"{"type":"tally.report"}"#);
    let path = dirs.output_file();
    let mut report = None;
    daemon.eventually("the report", || {
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
    let dirs = Dirs::with_sidecars(&[("slow", guests::SLOW_BUT_OK, ALL)]);
    // A bound far below the burst: intake must wait for the plugin.
    let mut daemon = start(&dirs, &["--max-log", "2MiB", "--checkpoint-interval-ms", "100"]);
    let mut stdin = daemon.take_stdin();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for n in 0..TOTAL {
            writeln!(out, r#"{{"type":"t","fields":{{"iterations":200,"n":{n}}}}}"#).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        stdin
    });
    daemon.eventually("all messages processed", || {
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
    let dirs = Dirs::with_sidecars(&[("slow", guests::SLOW_BUT_OK, ALL)]);
    let daemon = start(&dirs, &["--max-log", "64KiB", "--checkpoint-interval-ms", "100"]);
    // Each message takes the plugin about a millisecond.
    let body: String = format!(
        "[{}]",
        vec![r#"{"type":"t","fields":{"iterations":1000000}}"#; 200].join(",")
    );
    let mut refused = None;
    for _ in 0..200 {
        match daemon.post_messages(&body) {
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
    let dirs = Dirs::with_sidecars(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let daemon = start(&dirs, &[]);
    daemon.post_durably(&numbered(0, 10));
    daemon.eventually("ten processed", || daemon.processed("tally") == 10);
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

    let daemon = start(&dirs, &[]);
    daemon.wait_log("torn or corrupt tail truncated");
    assert!(daemon.log().contains("after record 9"), "{}", daemon.log());
    daemon.post_durably(&numbered(100, 105));
    daemon.eventually("the new messages", || {
        output(&dirs.output_file())
            .iter()
            .any(|m| m.type_ == "tally" && int(m, "n") == 104)
    });
    daemon.stop();
}

#[test]
fn a_lagging_plugin_does_not_hold_back_a_fast_one() {
    let dirs = Dirs::with_sidecars(&[("slow", guests::SLOW_BUT_OK, ALL), ("hello", guests::HELLO, ALL)]);
    let daemon = start(&dirs, &[]);
    // Each message takes the slow plugin about 50 ms.
    let body: String = format!(
        "[{}]",
        (0..100)
            .map(|i| format!(r#"{{"type":"t","logger":"n{i}","fields":{{"iterations":50000000}}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    daemon.post_durably(&body);
    // Its cursor's position is published after the call's emits are sent on, a moment
    // after `processed` counts them: wait for both.
    daemon.eventually("hello to greet all 100 and catch up", || {
        daemon.processed("hello") == 100 && daemon.plugin("hello")["lag"]["messages"] == 0
    });
    let slow = daemon.plugin("slow");
    assert!(slow["lag"]["messages"].as_u64().unwrap() > 0, "{slow}");
    assert!(slow["lag"]["bytes"].as_u64().unwrap() > 0, "{slow}");
    daemon.eventually("the greetings written", || {
        output(&dirs.output_file())
            .iter()
            .filter(|m| m.type_ == "hello.greeting")
            .count()
            == 100
    });
    let (_, metrics) = daemon.request("GET", "/metrics", None);
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
    let dirs = Dirs::with_sidecars(&[("tally", guests::SWAP_A, ALL)]);
    let daemon = start(&dirs, &[]);
    daemon.post_durably(&numbered(0, 2_000));
    daemon.eventually("some processed", || daemon.processed("tally") > 0);
    std::fs::copy(guests::SWAP_B, dirs.plugins.path().join("tally.wasm")).unwrap();
    daemon.post_durably(&numbered(2_000, 3_000));
    daemon.wait_log("plugin replaced");
    daemon.post_durably(&numbered(3_000, TOTAL as usize));
    daemon.eventually("all processed", || daemon.processed("tally") == TOTAL as u64);
    daemon.stop();
    let tallies: Vec<Message> = output(&dirs.output_file())
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
    let dirs = Dirs::with_sidecars(&[("first", guests::HELLO, ALL)]);
    let daemon = start(&dirs, &[]);
    let body = format!(
        "[{}]",
        (0..5)
            .map(|i| format!(r#"{{"type":"t","logger":"old{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    daemon.post_durably(&body);
    daemon.eventually("the first plugin", || daemon.processed("first") == 5);
    dirs.add(
        "history",
        guests::HELLO,
        "start-from = \"earliest\"\n[matcher]\nall = true\n",
    );
    dirs.add("latest", guests::HELLO, ALL);
    daemon.eventually("both loaded", || {
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
    daemon.eventually("history to reprocess", || daemon.processed("history") == 6);
    daemon.eventually("latest to see the new one", || daemon.processed("latest") == 1);
    daemon.stop();
    let mut greeted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in output(&dirs.output_file()) {
        let plugin = id(&m).split('/').next().unwrap().to_owned();
        greeted.entry(plugin).or_default().push(m.payload);
    }
    assert_eq!(greeted["history"].len(), 6, "{greeted:?}");
    assert_eq!(greeted["latest"], ["Hello, new!"], "{greeted:?}");
}

#[test]
fn a_clean_restart_replays_nothing() {
    let dirs = Dirs::with_sidecars(&[("tally", guests::DURABLE_TALLY, ALL)]);
    let daemon = start(&dirs, &[]);
    daemon.post_durably(&numbered(0, 500));
    daemon.eventually("all processed", || daemon.processed("tally") == 500);
    let log = daemon.stop();
    assert!(log.contains("saved=[\"tally\"]"), "{log}");
    let daemon = start(&dirs, &[]);
    daemon.post_durably(r#"{"type":"tally.report"}"#);
    daemon.eventually("the report", || {
        output(&dirs.output_file())
            .iter()
            .any(|m| m.type_ == "tally.report")
    });
    daemon.stop();
    let out = output(&dirs.output_file());
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
    let dirs = Dirs::with_sidecars(&[("probe", guests::BATCH_PROBE, ALL)]);
    let daemon = start(&dirs, &[]);
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
    daemon.eventually("all processed", || {
        daemon.processed("probe") == MESSAGES as u64 + 1
    });
    let calls = daemon.plugin("probe")["reader"]["calls"].as_u64().unwrap();
    daemon.stop();
    let payloads: Vec<String> = output(&dirs.output_file())
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
    let dirs = Dirs::with_sidecars(&[("probe", guests::BATCH_PROBE, ALL)]);
    let daemon = start(&dirs, &[]);
    daemon.post_durably(r#"{"type":"fatal","payload":"stop"}"#);
    daemon.eventually("the plugin terminated", || {
        daemon.plugin("probe")["state"] == "terminated"
    });
    daemon.post_durably(r#"[{"type":"ok","payload":"a"},{"type":"ok","payload":"b"}]"#);
    daemon.eventually("the reader to wait", || {
        daemon.plugin("probe")["reader"]["waiting"] == true
    });
    assert!(daemon.plugin("probe")["lag"]["messages"].as_u64().unwrap() >= 2);
    // The same file again brings a terminated plugin back.
    std::fs::copy(guests::BATCH_PROBE, dirs.plugins.path().join("probe.wasm")).unwrap();
    daemon.eventually("the waiting messages processed", || {
        let seen: Vec<String> = output(&dirs.output_file())
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
