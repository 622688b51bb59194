//! `corral run` end to end: the real binary on a temporary watch directory, fed on stdin
//! and over HTTP, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corral::{Message, Value};
use corral_test_guests as guests;
use serde_json::Value as Json;

use crate::support::daemon::{BOUND, Daemon, Dirs, agent};
use crate::support::eventually_or;

fn of_type(type_: &str) -> impl Fn(&Message) -> bool + '_ {
    move |m| m.type_ == type_
}

fn field<'a>(message: &'a Message, name: &str) -> &'a Value {
    message
        .field(name)
        .unwrap_or_else(|| panic!("no `{name}` in {message:?}"))
}

#[test]
fn messages_from_stdin_and_http_reach_the_plugins_that_match() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO), ("counter.wasm", guests::COUNTER)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"login\"\n")
        .sidecar("counter.toml", "[matcher]\ntype = [\"login\", \"logout\"]\n");
    let mut daemon = dirs.start(&[]);
    daemon.send(r#"{"type":"login","logger":"ann"}"#);
    daemon.send(r#"{"type":"logout","logger":"ann"}"#);
    daemon.send("this is not json");
    // Wanted by no plugin: counted as unmatched, from stdin as over HTTP.
    daemon.send(r#"{"type":"nobody.wants.this"}"#);
    daemon.json("POST", "/messages", Some(r#"{"type":"nor.this"}"#));
    let accepted = daemon.json("POST", "/messages", Some(r#"{"type":"login","logger":"bob"}"#));
    assert_eq!(accepted["accepted"], 1);

    let mut greeted = Vec::new();
    for _ in 0..2 {
        greeted.push(daemon.output("a greeting", of_type("hello.greeting")).payload);
    }
    greeted.sort();
    assert_eq!(greeted, ["Hello, ann!", "Hello, bob!"]);

    // The counter saw all three messages (bounded wait: it may still be at work).
    daemon.eventually("the counter to see three messages", || {
        daemon.plugin("counter")["stats"]["process_message"]["calls"] == 3
    });
    let hello = daemon.plugin("hello");
    assert_eq!(hello["state"], "running");
    assert_eq!(hello["stats"]["process_message"]["calls"], 2);
    assert_eq!(hello["stats"]["emitted"], 2);
    assert_eq!(hello["lag"]["messages"], 0);
    assert!(hello["version"].as_str().unwrap().len() == 64);
    daemon.wait_log("stdin line 3: invalid message JSON");
    daemon.eventually("two unmatched messages", || {
        daemon.get("/status")["unmatched"] == 2
    });
    let (_, metrics) = daemon.request("GET", "/metrics", None);
    assert!(
        metrics.contains(
            "\n# TYPE corral_unmatched_messages_total counter\ncorral_unmatched_messages_total 2\n"
        ),
        "{metrics}"
    );
    let all = daemon.json("GET", "/plugins", None);
    let names: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["counter", "hello"]);
}

#[test]
fn metrics_are_prometheus_text() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\nall = true\n");
    let daemon = dirs.start(&["--no-stdin"]);
    daemon.json(
        "POST",
        "/plugins/hello/call",
        Some(r#"{"type":"x","logger":"cy"}"#),
    );
    let (status, text) = daemon.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert_exposition(&text);
    let samples: std::collections::HashMap<&str, f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series, value.parse().unwrap())
        })
        .collect();
    assert_eq!(
        samples[r#"corral_process_message_calls_total{plugin="hello",entry="process_message"}"#],
        1.0
    );
    assert_eq!(samples[r#"corral_plugin_up{plugin="hello"}"#], 1.0);
    assert!(samples[r#"corral_memory_bytes{plugin="hello"}"#] > 0.0);
}

#[test]
fn reload_picks_up_a_new_file_at_once() {
    let dirs = Dirs::new(&[]);
    let daemon = dirs.start(&["--no-stdin"]);
    std::fs::copy(guests::HELLO, dirs.plugins.path().join("late.wasm")).unwrap();
    let plugins = daemon.json("PUT", "/plugins/reload", None);
    assert_eq!(plugins[0]["name"], "late", "{plugins}");
    assert_eq!(plugins[0]["state"], "running");
}

#[test]
fn reload_waits_for_a_load_the_watcher_has_already_begun() {
    let dirs = Dirs::new(&[]);
    let daemon = dirs.start(&["--no-stdin"]);
    // Its start function sleeps until a deadline well inside the reload's grace, so the
    // load the watcher begins on the copy is still under way when the reload comes.
    dirs.sidecar("sleeps-at-start.toml", "[limits]\ndeadline-ms = 200\n");
    std::fs::copy(
        guests::SLEEPS_AT_START,
        dirs.plugins.path().join("sleeps-at-start.wasm"),
    )
    .unwrap();
    daemon.wait_log("loading plugin");
    let plugins = daemon.json("PUT", "/plugins/reload", None);
    assert_eq!(plugins[0]["name"], "sleeps-at-start", "{plugins}");
    assert_eq!(plugins[0]["state"], "failed-to-load", "{plugins}");
    let error = plugins[0]["load_error"].as_str().unwrap_or_default();
    assert!(error.contains("deadline"), "{plugins}");
}

#[test]
fn a_non_loopback_admin_api_needs_a_token_and_checks_it() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    let refused = Command::new(crate::support::corral_exe())
        .arg("run")
        .arg(dirs.plugins.path())
        .args(["--admin", "0.0.0.0:0", "--no-stdin", "--data"])
        .arg(dirs.data.path())
        .env_remove("CORRAL_TOKEN")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("refusing to serve the admin API on 0.0.0.0:0 without a token"),
        "{stderr}"
    );

    let daemon = dirs.start(&["--admin", "0.0.0.0:0", "--token", "s3cret", "--no-stdin"]);
    let port = daemon.base.rsplit(':').next().unwrap().to_owned();
    let loopback = format!("http://127.0.0.1:{port}");
    let mut denied = agent().get(&format!("{loopback}/plugins")).call().unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    let body: Json = serde_json::from_str(&denied.body_mut().read_to_string().unwrap()).unwrap();
    assert!(body["error"].as_str().unwrap().contains("bearer token"));
    let wrong = agent()
        .get(&format!("{loopback}/plugins"))
        .header("Authorization", "Bearer guess")
        .call()
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = agent()
        .get(&format!("{loopback}/plugins"))
        .header("Authorization", "Bearer s3cret")
        .call()
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
}

#[test]
fn names_in_urls_are_checked_and_errors_are_json() {
    let dirs = Dirs::new(&[]);
    let daemon = dirs.start(&["--no-stdin"]);
    let (status, body) = daemon.request("GET", "/plugins/.hidden", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        serde_json::from_str::<Json>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("invalid plugin name")
    );
    let (status, body) = daemon.request("GET", "/plugins/nobody", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = daemon.request("POST", "/plugins/nobody/call", Some("{}"));
    assert_eq!(status, 404, "{body}");
    let (status, body) = daemon.request("POST", "/messages", Some("{\"fileds\":1}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown field"), "{body}");
    assert_eq!(daemon.json("GET", "/health", None)["status"], "ok");
}

#[test]
fn a_hostile_plugin_is_terminated_and_reported_while_the_others_answer() {
    let dirs = Dirs::new(&[("fails.wasm", guests::FAILS), ("hello.wasm", guests::HELLO)]);
    dirs.sidecar("fails.toml", "ticker-interval-ms = 20\n")
        .sidecar("hello.toml", "[matcher]\ntype = \"login\"\n");
    let mut daemon = dirs.start(&[]);
    let report = daemon.output("a termination report", of_type(corral_daemon::TERMINATED_TYPE));
    assert_eq!(field(&report, "plugin"), &Value::String("fails".into()));
    assert_eq!(
        report.payload,
        "plugin `fails` failed fatally: giving up on purpose"
    );
    daemon.send(r#"{"type":"login","logger":"dee"}"#);
    assert_eq!(
        daemon.output("a greeting", of_type("hello.greeting")).payload,
        "Hello, dee!"
    );
    let fails = daemon.plugin("fails");
    assert_eq!(fails["state"], "terminated");
    assert_eq!(
        fails["reason"],
        "plugin `fails` failed fatally: giving up on purpose"
    );
    daemon.wait_log("plugin terminated");
}

#[test]
fn sigterm_saves_state_and_the_next_start_restores_it() {
    let dirs = Dirs::new(&[
        ("tally.wasm", guests::SWAP_A),
        ("lookup.wasm", guests::LOOKUP_STORE),
    ]);
    dirs.sidecar("tally.toml", "[matcher]\ntype = \"x\"\n")
        .sidecar("lookup.toml", "[matcher]\ntype = \"lookup.*\"\n");
    let mut daemon = dirs.start(&[]);
    for _ in 0..3 {
        daemon.send(r#"{"type":"x"}"#);
    }
    daemon.send(r#"{"type":"lookup.set","fields":{"key":"k","value":"v"}}"#);
    let mut last = 0;
    while last < 3 {
        let tally = daemon.output("a tally", of_type("tally"));
        last = match field(&tally, "count") {
            Value::Int(n) => *n,
            other => panic!("{other:?}"),
        };
    }
    // The set has been processed once the plugin's stats say so.
    daemon.eventually("the lookup set processed", || {
        daemon.plugin("lookup")["stats"]["process_message"]["calls"] == 1
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("saved=[\"tally\"]"), "{log}");

    let mut daemon = dirs.start(&[]);
    assert!(
        daemon.log().contains("state restored from the last shutdown"),
        "{}",
        daemon.log()
    );
    daemon.send(r#"{"type":"x"}"#);
    let tally = daemon.output("a tally", of_type("tally"));
    assert_eq!(field(&tally, "count"), &Value::Int(4), "the count came back");
    daemon.send(r#"{"type":"lookup.get","fields":{"key":"k"}}"#);
    let found = daemon.output("a lookup result", of_type("lookup.result"));
    assert_eq!(
        field(&found, "value"),
        &Value::String("v".into()),
        "the store kept its data"
    );
}

fn fixture_proc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/proc")
        .canonicalize()
        .unwrap()
}

#[test]
fn metric_plugins_read_a_granted_directory_in_place_of_proc() {
    let dirs = Dirs::new(&[
        ("cpu.wasm", guests::CPU),
        ("mem.wasm", guests::MEM),
        ("disk.wasm", guests::DISK),
    ]);
    let proc = fixture_proc();
    for name in ["cpu", "mem", "disk"] {
        dirs.sidecar(
            &format!("{name}.toml"),
            &format!(
                "ticker-interval-ms = 50\n[config]\nproc = \"/proc\"\n[[permissions.dirs]]\nhost = \"{}\"\nguest = \"/proc\"\n",
                proc.display()
            ),
        );
    }
    let daemon = dirs.start(&["--no-stdin"]);
    let cpu = daemon.output("a cpu metric", of_type("metric.cpu"));
    assert_eq!(field(&cpu, "user"), &Value::Int(600));
    assert_eq!(field(&cpu, "busy-percent"), &Value::Float(50.0));
    let mem = daemon.output("a memory metric", of_type("metric.mem"));
    assert_eq!(field(&mem, "used-percent"), &Value::Float(75.0));
    let disk = daemon.output("a disk metric", of_type("metric.disk"));
    assert_eq!(field(&disk, "sda.write-bytes"), &Value::Int(1_536_000));
}

#[test]
fn output_can_go_to_a_file() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\nall = true\n");
    let file = dirs.data.path().join("out.jsonl");
    let daemon = dirs.start(&["--no-stdin", "--output", file.to_str().unwrap()]);
    daemon.json(
        "POST",
        "/messages",
        Some(r#"[{"type":"a","logger":"fay"},{"type":"b","logger":"gus"}]"#),
    );
    let read = || -> Vec<String> {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    };
    daemon.eventually("two lines in the output file", || read().len() == 2);
    let lines = read();
    let payloads: Vec<_> = lines
        .iter()
        .map(|l| Message::from_json(l).unwrap().payload)
        .collect();
    assert_eq!(payloads, ["Hello, fay!", "Hello, gus!"]);
    assert!(daemon.stdout.try_recv().is_err(), "nothing on stdout");
}

#[test]
fn a_slow_plugin_inside_its_limits_does_not_stall_the_others() {
    let dirs = Dirs::new(&[("slow.wasm", guests::SLOW_BUT_OK), ("hello.wasm", guests::HELLO)]);
    dirs.sidecar(
        "slow.toml",
        "[matcher]\ntype = \"slow\"\n[limits]\nfuel = 4_000_000_000\ndeadline-ms = 20000\n",
    )
    .sidecar("hello.toml", "[matcher]\ntype = \"hi\"\n");
    let mut daemon = dirs.start(&[]);
    for _ in 0..4 {
        daemon.send(r#"{"type":"slow","fields":{"iterations":20000000}}"#);
    }
    daemon.send(r#"{"type":"hi","logger":"hal"}"#);
    let mut slow_done_first = 0;
    let deadline = Instant::now() + BOUND;
    loop {
        let line = daemon
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap();
        let message = Message::from_json(&line).unwrap();
        match message.type_.as_str() {
            "slow-done" => slow_done_first += 1,
            "hello.greeting" => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(slow_done_first < 4, "hello waited for all the slow work");
    for _ in slow_done_first..4 {
        daemon.output("the rest of the slow work", of_type("slow-done"));
    }
    let slow = daemon.plugin("slow");
    assert_eq!(slow["stats"]["process_message"]["failures"], 0, "{slow}");
    assert_eq!(slow["state"], "running");
}

#[test]
fn a_python_plugin_compiles_once_and_comes_from_the_cache_after_a_restart() {
    let Some(python) = crate::support::polyglot(guests::PY_COUNTER) else {
        return;
    };
    let dirs = Dirs::new(&[]);
    dirs.sidecar("counter.toml", "[matcher]\ntype = \"x\"\n");
    let mut daemon = dirs.start(&[]);
    // Dropped in after the start, the ~18 MB component compiles in the background:
    // seconds, far more on a loaded machine, hence the long bound.
    dirs.put("counter.wasm", &std::fs::read(python).unwrap());
    let long = Duration::from_secs(300);
    let log = || daemon.log();
    eventually_or(
        "the Python plugin to load",
        long,
        || daemon.request("GET", "/plugins/counter", None).0 == 200,
        log,
    );
    let compiles = |daemon: &Daemon| {
        let metrics = daemon.request("GET", "/metrics", None).1;
        ["memo", "cache", "compiled", "baseline"].map(|source| {
            let line = format!("corral_components_total{{source=\"{source}\"}} ");
            let at = metrics
                .find(&line)
                .unwrap_or_else(|| panic!("no {line} in {metrics}"));
            metrics[at + line.len()..].lines().next().unwrap().to_owned()
        })
    };
    // It serves from Winch's baseline code first; Cranelift's optimised code follows
    // in the background and goes into the cache.
    let [memo, cache, _, baseline] = compiles(&daemon);
    assert_eq!([memo, cache, baseline], ["0", "0", "1"]);
    eventually_or("the optimised code", long, || compiles(&daemon)[2] == "1", log);
    for _ in 0..2 {
        daemon.send(r#"{"type":"x"}"#);
    }
    daemon.eventually("two calls", || {
        daemon.plugin("counter")["stats"]["process_message"]["calls"] == 2
    });
    let (status, log) = daemon.terminate();
    assert!(status.success(), "exit {status}: {log}");

    // The restart finds the compiled code in the data directory's cache, and the
    // in-memory count the plugin saved at shutdown.
    dirs.sidecar(
        "counter.toml",
        "ticker-interval-ms = 50\n[matcher]\ntype = \"x\"\n",
    );
    let daemon = dirs.start(&[]);
    assert_eq!(compiles(&daemon), ["0", "1", "0", "0"]);
    let totals = daemon.output("the totals", of_type("counter.totals"));
    assert_eq!(totals.payload, "2", "{totals:?}");
    assert_eq!(field(&totals, "x"), &Value::Int(2));
}

#[test]
fn with_a_pool_plugins_serve_and_come_back_after_a_trap() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO), ("panics.wasm", guests::PANICS)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"login\"\n")
        .sidecar(
            "panics.toml",
            "ticker-interval-ms = 20\n[matcher]\ntype = \"boom\"\n",
        );
    let mut daemon = dirs.start(&["--pool", "8"]);
    daemon.send(r#"{"type":"boom"}"#);
    daemon.send(r#"{"type":"login","logger":"ann"}"#);
    let greeting = daemon.output("a greeting", of_type("hello.greeting"));
    assert_eq!(greeting.payload, "Hello, ann!");
    // The panic cost `panics` its instance; its timer keeps working on a fresh one.
    daemon.eventually("a timer call on a fresh instance", || {
        let stats = &daemon.plugin("panics")["stats"];
        stats["process_message"]["failures"] == 1
            && stats["instances"] == 2
            && stats["timer_event"]["calls"] != 0
    });
    let stats = &daemon.plugin("panics")["stats"];
    assert_eq!(stats["timer_event"]["failures"], 0, "{stats}");
}

#[test]
fn a_full_pool_refuses_the_plugin_past_it_and_says_why() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO), ("counter.wasm", guests::COUNTER)]);
    let daemon = dirs.start(&["--pool", "1"]);
    let all = daemon.json("GET", "/plugins", None);
    let states: Vec<(&str, &str)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["state"].as_str().unwrap(),
                p["load_error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(states.len(), 2, "{all}");
    assert!(states.iter().any(|(state, _)| *state == "running"), "{all}");
    assert!(
        states.iter().any(|(state, error)| *state == "failed-to-load"
            && error.contains("the host's pool of sandboxes is full")),
        "{all}"
    );
}

/// Times a request: nothing an operator needs may wait on a blocked guest.
fn prompt(daemon: &Daemon, method: &str, path: &str) -> (u16, String) {
    let started = Instant::now();
    let answer = daemon.request(method, path, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{method} {path} took {:?} while a plugin was blocked",
        started.elapsed()
    );
    answer
}

#[test]
fn a_blocked_plugin_holds_up_nothing_else_and_sigterm_abandons_it() {
    let dirs = Dirs::new(&[("sleeper.wasm", guests::SLEEPER), ("hello.wasm", guests::HELLO)]);
    // A deadline far longer than the test: only the daemon's own liveness is under test.
    dirs.sidecar(
        "sleeper.toml",
        "[matcher]\ntype = \"sleep\"\n[limits]\ndeadline-ms = 120000\nfuel = 18446744073709551615\n",
    )
    .sidecar("hello.toml", "[matcher]\ntype = \"ping\"\n");
    let daemon = dirs.start(&["--no-stdin", "--shutdown-timeout", "2s"]);
    daemon.json("POST", "/messages", Some(r#"{"type":"sleep"}"#));
    daemon.eventually("the sleeper in its call", || {
        daemon.plugin("sleeper")["busy"] == true
    });

    // The sleeper is in its call now. The admin API answers at once …
    for path in [
        "/health",
        "/metrics",
        "/plugins",
        "/plugins/sleeper",
        "/plugins/hello",
    ] {
        let (status, text) = prompt(&daemon, "GET", path);
        assert_eq!(status, 200, "{path}: {text}");
    }
    assert_eq!(daemon.plugin("sleeper")["state"], "running");
    // … another plugin keeps processing …
    for _ in 0..3 {
        daemon.json("POST", "/messages", Some(r#"{"type":"ping","logger":"dee"}"#));
        daemon.output("a greeting", of_type("hello.greeting"));
    }
    // … a new plugin dropped into the directory loads, and so does a reload.
    std::fs::copy(guests::COUNTER, dirs.plugins.path().join("counter.wasm")).unwrap();
    daemon.eventually("counter to load", || {
        daemon.request("GET", "/plugins/counter", None).0 == 200
    });
    let (status, _) = prompt(&daemon, "PUT", "/plugins/reload");
    assert_eq!(status, 200);

    // SIGTERM stops the daemon within its shutdown timeout, abandoning the sleeper.
    let started = Instant::now();
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status}: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        log.contains("still in a call at the end of the shutdown timeout") && log.contains("sleeper"),
        "{log}"
    );
}

#[test]
fn a_start_function_that_blocks_holds_up_only_its_own_load() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"ping\"\n");
    let daemon = dirs.start(&["--no-stdin"]);
    dirs.sidecar("sleeps-at-start.toml", "[limits]\ndeadline-ms = 120000\n");
    std::fs::copy(
        guests::SLEEPS_AT_START,
        dirs.plugins.path().join("sleeps-at-start.wasm"),
    )
    .unwrap();
    daemon.wait_log("loading plugin");
    // While its start function sleeps: other loads, reloads, calls and status answer.
    std::fs::copy(guests::COUNTER, dirs.plugins.path().join("counter.wasm")).unwrap();
    daemon.eventually("counter to load", || {
        daemon.request("GET", "/plugins/counter", None).0 == 200
    });
    let (status, _) = prompt(&daemon, "PUT", "/plugins/reload");
    assert_eq!(status, 200);
    daemon.json("POST", "/messages", Some(r#"{"type":"ping","logger":"eve"}"#));
    daemon.output("a greeting", of_type("hello.greeting"));
    prompt(&daemon, "GET", "/metrics");
    let started = Instant::now();
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{status}: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_sidecar_restart_section_brings_a_terminated_plugin_back() {
    let dirs = Dirs::new(&[("fails.wasm", guests::FAILS)]);
    dirs.sidecar(
        "fails.toml",
        "[matcher]\nall = true\n[limits]\nmax-consecutive-failures = 2\n[restart]\ninitial-backoff-ms = 100\n",
    );
    let daemon = dirs.start(&["--no-stdin"]);
    // Every message fails: two in a row terminate it, each time it comes back.
    for restarts in 1..=2 {
        for _ in 0..2 {
            daemon.json("POST", "/messages", Some(r#"{"type":"x"}"#));
        }
        let report = daemon.output("the termination report", of_type("corral.plugin-terminated"));
        assert_eq!(field(&report, "plugin"), &Value::String("fails".into()));
        daemon.eventually("the restart", || {
            let status = daemon.plugin("fails");
            status["state"] == "running" && status["restart"]["restarts"] == restarts
        });
        let status = daemon.plugin("fails");
        assert_eq!(status["stats"]["restarts"], restarts);
        assert_eq!(status["restart"]["next_at_ns"], Json::Null);
    }
}
/// Every line of `text` fits the Prometheus text exposition grammar: a `# HELP` or
/// `# TYPE` comment, or `name{label="value",…} number` with label values escaped.
fn assert_exposition(text: &str) {
    let word = |b: &[u8], mut i: usize| {
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        i
    };
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP corral_") || comment.starts_with("TYPE corral_"),
                "{line:?}"
            );
            continue;
        }
        let b = line.as_bytes();
        let mut i = word(b, 0);
        assert!(line.starts_with("corral_") && i > 0, "bad metric name: {line:?}");
        if b.get(i) == Some(&b'{') {
            i += 1;
            loop {
                let end = word(b, i);
                assert!(end > i && b[end..].starts_with(b"=\""), "bad label: {line:?}");
                i = end + 2;
                loop {
                    match b.get(i) {
                        Some(b'\\') => {
                            assert!(
                                matches!(b.get(i + 1), Some(b'\\' | b'"' | b'n')),
                                "bad escape: {line:?}"
                            );
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => i += 1,
                        None => panic!("unterminated label value: {line:?}"),
                    }
                }
                i += 1;
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => panic!("bad labels: {line:?}"),
                }
            }
        }
        let value = line[i..]
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value: {line:?}");
    }
}

#[test]
fn guest_text_cannot_forge_lines_of_the_daemon_log() {
    let dirs = Dirs::new(&[("forger.wasm", guests::FORGER)]);
    dirs.sidecar("forger.toml", "[matcher]\nall = true\n");
    let mut daemon = dirs.start(&[]);
    daemon.send(r#"{"type":"log","payload":"ok\nINFO victim: forged\n{\"type\":\"x\"}\u001b[31m"}"#);
    daemon.send(r#"{"type":"fail","payload":"bad\nERROR victim: forged"}"#);
    daemon.send(r#"{"type":"panic","payload":"boom\nWARN victim: forged"}"#);
    daemon.wait_log(r"ok\nINFO victim: forged\n{");
    daemon.wait_log(r"bad\nERROR victim: forged");
    daemon.wait_log(r"boom\nWARN victim: forged");
    let (_, log) = daemon.terminate();
    for line in log.lines() {
        assert!(
            !["INFO victim", "ERROR victim", "WARN victim", "{\"type\""]
                .iter()
                .any(|forged| line.starts_with(forged)),
            "a forged line: {line:?}"
        );
    }
    assert!(!log.contains('\x1b'), "a raw escape reached the terminal");
}

#[test]
fn the_daemons_log_about_one_plugin_is_rate_limited() {
    let dirs = Dirs::new(&[("forger.wasm", guests::FORGER)]);
    dirs.sidecar(
        "forger.toml",
        "[matcher]\nall = true\n[limits]\nmax-consecutive-failures = 100000\n",
    );
    let mut daemon = dirs.start(&[]);
    // Fewer than the queue holds (1,024), so none is turned away.
    for i in 0..1_000 {
        daemon.send(&format!(r#"{{"type":"fail","payload":"failure {i}"}}"#));
    }
    daemon.wait_log("suppressed");
    daemon.eventually("1,000 failures", || {
        daemon.plugin("forger")["stats"]["process_message"]["failures"] == 1_000
    });
    let log = daemon.log();
    let lines = log.lines().filter(|l| l.contains("failure ")).count();
    // A burst of 100 and 20 a second after it, for as long as the run took; far from
    // one line per failure.
    assert!(lines < 500, "{lines} lines about one plugin");
}

#[test]
fn a_file_name_that_would_break_metrics_is_refused_and_forgotten() {
    let evil = "evil\"} 1\ncorral_forged{x=\"y";
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    std::fs::copy(guests::HELLO, dirs.plugins.path().join(format!("{evil}.wasm"))).unwrap();
    std::fs::write(dirs.plugins.path().join("broken.wasm"), b"not wasm").unwrap();
    let daemon = dirs.start(&["--no-stdin"]);
    let plugins = daemon.json("GET", "/plugins", None);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "hello"], "{plugins}");
    let (status, metrics) = daemon.request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert_exposition(&metrics);
    assert!(!metrics.contains("corral_forged"), "{metrics}");
    assert!(
        metrics.contains(r#"corral_plugin_up{plugin="broken"} 0"#),
        "{metrics}"
    );
    daemon.wait_log("refused");
    std::fs::remove_file(dirs.plugins.path().join(format!("{evil}.wasm"))).unwrap();
    std::fs::remove_file(dirs.plugins.path().join("broken.wasm")).unwrap();
    let plugins = daemon.json("PUT", "/plugins/reload", None);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hello"],
        "a failure is forgotten with its file: {plugins}"
    );
}
/// Waits until `name`'s last load error contains `needle`.
fn wait_load_error(daemon: &Daemon, name: &str, needle: &str) -> Json {
    let failed = || {
        daemon.plugin(name)["load_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
    };
    eventually_or(
        &format!("`{needle}` in the load error of `{name}`"),
        Duration::from_secs(120),
        failed,
        || format!("{}\n{}", daemon.plugin(name), daemon.log()),
    );
    daemon.plugin(name)
}

#[test]
fn a_compile_bomb_dropped_in_is_refused_and_never_replaces_the_serving_plugin() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"login\"\n");
    let mut daemon = dirs.start(&[]);
    let bomb = crate::bombs::with_module(guests::HELLO, crate::bombs::large_function(3 << 20));
    dirs.put("bomb.wasm", &bomb);
    let refused = "is too costly to compile: its largest function has";
    let status = wait_load_error(&daemon, "bomb", refused);
    assert_eq!(status["state"], "failed-to-load", "{status}");
    // The same bytes in place of a serving plugin: refused, and the old one serves on.
    dirs.put("hello.wasm", &bomb);
    let status = wait_load_error(&daemon, "hello", refused);
    assert_eq!(status["state"], "running", "{status}");
    daemon.send(r#"{"type":"login","logger":"dee"}"#);
    assert_eq!(
        daemon.output("a greeting", of_type("hello.greeting")).payload,
        "Hello, dee!"
    );
    assert_eq!(daemon.json("GET", "/health", None)["status"], "ok");
}

#[test]
fn a_compile_past_its_memory_bound_is_stopped_and_the_daemon_stays_small() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"login\"\n");
    // Half what the bomb needs, and `hello` still compiles: see the library's test of
    // the same bound in `compile.rs`.
    let mut daemon = dirs.start(&["--no-baseline", "--compile-limit", "compile-memory=24MiB"]);
    dirs.put("heavy.wasm", &crate::compile::costly());
    wait_load_error(
        &daemon,
        "heavy",
        "its compile needed more than 25165824 bytes of memory (`compile-memory`), so the \
         compile was stopped",
    );
    let peak = daemon.peak_rss_kib() << 10;
    assert!(peak < 512 << 20, "the daemon's peak memory was {peak} bytes");
    daemon.send(r#"{"type":"login","logger":"dee"}"#);
    assert_eq!(
        daemon.output("a greeting", of_type("hello.greeting")).payload,
        "Hello, dee!"
    );
}

#[test]
fn a_sidecar_granting_the_watch_directory_is_refused_unless_allowed_and_grants_are_logged() {
    let dirs = Dirs::new(&[("selfish.wasm", guests::HELLO), ("cpu.wasm", guests::CPU)]);
    dirs.sidecar(
        "selfish.toml",
        "[[permissions.dirs]]\nhost = \".\"\nguest = \"/plugins\"\nwritable = true\n",
    )
    .sidecar(
        "cpu.toml",
        &format!(
            "[[permissions.dirs]]\nhost = \"{}\"\nguest = \"/proc\"\n",
            fixture_proc().display()
        ),
    );
    let daemon = dirs.start(&["--no-stdin"]);
    let status = wait_load_error(&daemon, "selfish", "it covers the watch directory");
    assert_eq!(status["state"], "failed-to-load", "{status}");
    daemon.wait_log(&format!(
        "directory granted plugin=cpu host={} guest=/proc access=read-only",
        fixture_proc().display()
    ));
    let (status, log) = daemon.terminate();
    assert!(status.success(), "{log}");

    let daemon = dirs.start(&["--no-stdin", "--allow-broad-grants"]);
    daemon.wait_log("broad directory grant allowed (--allow-broad-grants): it covers the watch directory");
    assert_eq!(daemon.plugin("selfish")["state"], "running");
}
