//! `corral run` end to end: the real binary on a temporary watch directory, fed on stdin
//! and over HTTP, stopped with SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::{Message, Value};
use corral_test_guests as guests;
use serde_json::Value as Json;

const BOUND: Duration = Duration::from_secs(30);

pub(crate) struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) base: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread reading stderr: it ends when the daemon has exited and said all.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    token: Option<String>,
}

/// A watch directory and a data directory that outlive one daemon run.
pub(crate) struct Dirs {
    pub(crate) plugins: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Dirs {
    pub(crate) fn new(files: &[(&str, &str)]) -> Dirs {
        let dirs = Dirs {
            plugins: tempfile::tempdir().unwrap(),
            data: tempfile::tempdir().unwrap(),
        };
        for (name, guest) in files {
            std::fs::copy(guest, dirs.plugins.path().join(name)).unwrap();
        }
        dirs
    }

    pub(crate) fn sidecar(&self, name: &str, text: &str) -> &Dirs {
        std::fs::write(self.plugins.path().join(name), text).unwrap();
        self
    }

    pub(crate) fn start(&self, args: &[&str]) -> Daemon {
        let token = args
            .iter()
            .position(|a| *a == "--token")
            .map(|i| args[i + 1].to_owned());
        let mut child = Command::new(crate::support::corral_exe())
            .arg("run")
            .arg(self.plugins.path())
            .arg("--data")
            .arg(self.data.path())
            .args(if args.contains(&"--admin") {
                &[][..]
            } else {
                &["--admin", "127.0.0.1:0"][..]
            })
            .args(args)
            .env("NO_COLOR", "1")
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stdout) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, log) = (child.stderr.take().unwrap(), stderr.clone());
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + BOUND;
        let base = loop {
            let log = stderr.lock().unwrap().clone();
            if let Some(at) = log.find("admin API listening on ") {
                let rest = &log[at + "admin API listening on ".len()..];
                break rest.lines().next().unwrap().trim().to_owned();
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "the daemon did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        Daemon {
            stdin: child.stdin.take(),
            child,
            base,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            token,
        }
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

impl Daemon {
    fn send(&mut self, json: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{json}").unwrap();
        stdin.flush().unwrap();
    }

    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let agent = agent();
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (_, body) => {
                let mut r = if method == "PUT" {
                    agent.put(&url)
                } else {
                    agent.post(&url)
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.unwrap_or(""))
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    pub(crate) fn json(&self, method: &str, path: &str, body: Option<&str>) -> Json {
        let (status, text) = self.request(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The next emitted message that `matches` accepts; earlier ones are returned too.
    fn output(&self, what: &str, matches: impl Fn(&Message) -> bool) -> Message {
        let deadline = Instant::now() + BOUND;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    let message =
                        Message::from_json(&line).unwrap_or_else(|e| panic!("bad output line {line}: {e}"));
                    if matches(&message) {
                        return message;
                    }
                    seen.push(line);
                }
                Err(_) => panic!("no {what} within {BOUND:?}; saw {seen:#?}\nlog:\n{}", self.log()),
            }
        }
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for `needle` in the daemon's log: stderr is read apart from stdout and
    /// the API, so a line may lag what they show.
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + BOUND;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn plugin(&self, name: &str) -> Json {
        self.json("GET", &format!("/plugins/{name}"), None)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader has every line once it reaches the end of the pipe.
                if let Some(reader) = self.stderr_reader.take() {
                    reader.join().unwrap();
                }
                return (status, self.log());
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        .sidecar("counter.toml", "[matcher]\nall = true\n");
    let mut daemon = dirs.start(&[]);
    daemon.send(r#"{"type":"login","logger":"ann"}"#);
    daemon.send(r#"{"type":"logout","logger":"ann"}"#);
    daemon.send("this is not json");
    let accepted = daemon.json("POST", "/messages", Some(r#"{"type":"login","logger":"bob"}"#));
    assert_eq!(accepted["accepted"], 1);

    let mut greeted = Vec::new();
    for _ in 0..2 {
        greeted.push(daemon.output("a greeting", of_type("hello.greeting")).payload);
    }
    greeted.sort();
    assert_eq!(greeted, ["Hello, ann!", "Hello, bob!"]);

    // The counter saw all three messages (bounded wait: it may still be at work).
    let deadline = Instant::now() + BOUND;
    while daemon.plugin("counter")["stats"]["process_message"]["calls"] != 3 {
        assert!(Instant::now() < deadline, "{}", daemon.plugin("counter"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let hello = daemon.plugin("hello");
    assert_eq!(hello["state"], "running");
    assert_eq!(hello["stats"]["process_message"]["calls"], 2);
    assert_eq!(hello["stats"]["emitted"], 2);
    assert_eq!(hello["lag"]["messages"], 0);
    assert!(hello["version"].as_str().unwrap().len() == 64);
    daemon.wait_log("stdin line 3: invalid message JSON");
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
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP corral_") || comment.starts_with("TYPE corral_"),
                "{line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels: {line}");
        }
        samples.insert(series.to_owned(), value);
    }
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
    let deadline = Instant::now() + BOUND;
    while daemon.plugin("lookup")["stats"]["process_message"]["calls"] != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let deadline = Instant::now() + BOUND;
    let lines = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() == 2 {
            break lines;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
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
    let temp = dirs.plugins.path().join(".counter.wasm.partial");
    std::fs::copy(python, &temp).unwrap();
    std::fs::rename(&temp, dirs.plugins.path().join("counter.wasm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while daemon.request("GET", "/plugins/counter", None).0 != 200 {
        assert!(Instant::now() < deadline, "not loaded: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
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
    while compiles(&daemon)[2] != "1" {
        assert!(Instant::now() < deadline, "never optimised: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..2 {
        daemon.send(r#"{"type":"x"}"#);
    }
    while daemon.plugin("counter")["stats"]["process_message"]["calls"] != 2 {
        assert!(Instant::now() < deadline, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let deadline = Instant::now() + BOUND;
    loop {
        let stats = &daemon.plugin("panics")["stats"];
        if stats["process_message"]["failures"] == 1
            && stats["instances"] == 2
            && stats["timer_event"]["calls"] != 0
        {
            assert_eq!(stats["timer_event"]["failures"], 0, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let deadline = Instant::now() + BOUND;
    while daemon.plugin("sleeper")["busy"] != true {
        assert!(Instant::now() < deadline, "{}", daemon.plugin("sleeper"));
        std::thread::sleep(Duration::from_millis(20));
    }

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
    let deadline = Instant::now() + BOUND;
    while daemon.request("GET", "/plugins/counter", None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "counter did not load:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let deadline = Instant::now() + BOUND;
    while daemon.request("GET", "/plugins/counter", None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "counter did not load:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
        let deadline = Instant::now() + BOUND;
        loop {
            let status = daemon.plugin("fails");
            if status["state"] == "running" && status["restart"]["restarts"] == restarts {
                assert_eq!(status["stats"]["restarts"], restarts);
                assert_eq!(status["restart"]["next_at_ns"], Json::Null);
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            std::thread::sleep(Duration::from_millis(20));
        }
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
    let bound = Instant::now() + BOUND;
    while daemon.plugin("forger")["stats"]["process_message"]["failures"] != 1_000 {
        assert!(Instant::now() < bound, "{}", daemon.plugin("forger"));
        std::thread::sleep(Duration::from_millis(20));
    }
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
/// Writes `bytes` into the watch directory as `name`, whole (a temporary name renamed).
fn drop_in(dirs: &Dirs, name: &str, bytes: &[u8]) {
    let temp = dirs.plugins.path().join(format!(".{name}.partial"));
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, dirs.plugins.path().join(name)).unwrap();
}

/// Waits until `name`'s last load error contains `needle`.
fn wait_load_error(daemon: &Daemon, name: &str, needle: &str) -> Json {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = daemon.request("GET", &format!("/plugins/{name}"), None);
        if status == 200 {
            let plugin: Json = serde_json::from_str(&body).unwrap();
            if plugin["load_error"].as_str().is_some_and(|e| e.contains(needle)) {
                return plugin;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` for `{name}`: {body}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_compile_bomb_dropped_in_is_refused_and_never_replaces_the_serving_plugin() {
    let dirs = Dirs::new(&[("hello.wasm", guests::HELLO)]);
    dirs.sidecar("hello.toml", "[matcher]\ntype = \"login\"\n");
    let mut daemon = dirs.start(&[]);
    let bomb = crate::bombs::with_module(guests::HELLO, crate::bombs::large_function(3 << 20));
    drop_in(&dirs, "bomb.wasm", &bomb);
    let refused = "is too costly to compile: its largest function has";
    let status = wait_load_error(&daemon, "bomb", refused);
    assert_eq!(status["state"], "failed-to-load", "{status}");
    // The same bytes in place of a serving plugin: refused, and the old one serves on.
    drop_in(&dirs, "hello.wasm", &bomb);
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
    let mut daemon = dirs.start(&["--no-baseline", "--compile-limit", "compile-memory=48MiB"]);
    let pid = daemon.child.id().to_string();
    drop_in(&dirs, "heavy.wasm", &crate::compile::costly());
    wait_load_error(
        &daemon,
        "heavy",
        "its compile needed more than 50331648 bytes of memory (`compile-memory`), so the \
         compile was stopped",
    );
    let peak = crate::compile::peak_rss(&pid);
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
