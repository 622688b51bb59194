//! The daemon harness: the real `corral run` on a temporary watch directory and data
//! directory, its admin API, its output and its log, stopped by a signal. Shared by the
//! daemon, durable-log and dashboard tests.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::Message;
use serde_json::Value as Json;

/// How long anything awaited from a daemon may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(60);

/// The line the daemon logs once its admin API answers; scripts and tests read the
/// address from it.
const LISTENING: &str = "admin API listening on ";

/// A watch directory and a data directory that outlive one daemon run.
pub(crate) struct Dirs {
    pub(crate) plugins: tempfile::TempDir,
    pub(crate) data: tempfile::TempDir,
}

impl Dirs {
    /// Fresh directories with `files` (file name, guest path) in the watch directory.
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

    /// Fresh directories with `plugins` (name, guest path, sidecar text) in the watch
    /// directory, each as `name.wasm` beside `name.toml`.
    pub(crate) fn with_sidecars(plugins: &[(&str, &str, &str)]) -> Dirs {
        let dirs = Dirs::new(&[]);
        for (name, guest, sidecar) in plugins {
            dirs.add(name, guest, sidecar);
        }
        dirs
    }

    /// Writes the file `name` (a sidecar) into the watch directory.
    pub(crate) fn sidecar(&self, name: &str, text: &str) -> &Dirs {
        std::fs::write(self.plugins.path().join(name), text).unwrap();
        self
    }

    /// Adds the plugin `name`: its sidecar first, so the watcher loads the pair together.
    pub(crate) fn add(&self, name: &str, guest: &str, sidecar: &str) {
        std::fs::write(self.plugins.path().join(format!("{name}.toml")), sidecar).unwrap();
        std::fs::copy(guest, self.plugins.path().join(format!("{name}.wasm"))).unwrap();
    }

    /// Writes `bytes` into the watch directory as `name` the way to deploy: to a
    /// temporary name, renamed into place, so the watcher never sees it half-written.
    pub(crate) fn put(&self, name: &str, bytes: &[u8]) {
        let temp = self.plugins.path().join(format!(".{name}.partial"));
        std::fs::write(&temp, bytes).unwrap();
        std::fs::rename(&temp, self.plugins.path().join(name)).unwrap();
    }

    /// A file in the data directory, for `--output`.
    pub(crate) fn output_file(&self) -> PathBuf {
        self.data.path().join("out.jsonl")
    }

    /// Starts `corral run` on these directories with `args`, the admin API on a free
    /// loopback port unless `args` name one, and waits until the API answers.
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
        let log = || stderr.lock().unwrap().clone();
        crate::support::eventually_or(
            "the daemon to start",
            BOUND,
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("the daemon exited with {status}: {}", log());
                }
                log().contains(LISTENING)
            },
            log,
        );
        let text = log();
        let at = text.find(LISTENING).unwrap() + LISTENING.len();
        let base = text[at..].lines().next().unwrap().trim().to_owned();
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

/// A running `corral run`, killed on drop if a test did not stop it.
pub(crate) struct Daemon {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The admin API's base URL, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
    /// The lines the daemon writes on stdout: what its plugins emitted.
    pub(crate) stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread reading stderr: it ends when the daemon has exited and said all.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    token: Option<String>,
}

/// An HTTP client that returns every status as a response, bounded by [`BOUND`].
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

impl Daemon {
    /// Writes `json` as one line to the daemon's stdin.
    pub(crate) fn send(&mut self, json: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{json}").unwrap();
        stdin.flush().unwrap();
    }

    /// The daemon's stdin, for a test that writes to it from a thread of its own.
    pub(crate) fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin was taken before")
    }

    /// `method path` on the admin API with `body` (and the bearer token, if the daemon
    /// has one): the response, whatever its status.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> ureq::http::Response<ureq::Body> {
        let url = format!("{}{path}", self.base);
        let agent = agent();
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let response = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
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
        response.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `method path`: the status and the body.
    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut response = self.call(method, path, body);
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// `method path`, which must succeed: the JSON it answered.
    pub(crate) fn json(&self, method: &str, path: &str, body: Option<&str>) -> Json {
        let (status, text) = self.request(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `GET path`: the JSON it answered, whatever the status (an error is
    /// `{"error": …}`, so a field read from it is `null`).
    pub(crate) fn get(&self, path: &str) -> Json {
        let (_, text) = self.request("GET", path, None);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// `GET /plugins/{name}`; all `null` while no plugin of that name is loaded.
    pub(crate) fn plugin(&self, name: &str) -> Json {
        self.get(&format!("/plugins/{name}"))
    }

    /// How many messages the plugin's reader has processed (0 before it is loaded).
    pub(crate) fn processed(&self, name: &str) -> u64 {
        self.plugin(name)["reader"]["processed"].as_u64().unwrap_or(0)
    }

    /// POSTs `body` to /messages: the status and the Retry-After header.
    pub(crate) fn post_messages(&self, body: &str) -> (u16, Option<String>) {
        let response = self.call("POST", "/messages", Some(body));
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), retry)
    }

    /// POSTs `body` to /messages until it is accepted (202), waiting out 503s.
    pub(crate) fn post_durably(&self, body: &str) {
        self.eventually("the log to take the messages", || {
            match self.post_messages(body) {
                (202, _) => true,
                (503, Some(_)) => false,
                (status, _) => panic!("POST /messages answered {status}: {}", self.log()),
            }
        });
    }

    /// The next emitted message on stdout that `matches` accepts.
    pub(crate) fn output(&self, what: &str, matches: impl Fn(&Message) -> bool) -> Message {
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

    /// Everything the daemon has logged on stderr so far.
    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `condition` holds, for at most [`BOUND`]; on a timeout the panic
    /// names `what` and shows the daemon's log.
    pub(crate) fn eventually(&self, what: &str, condition: impl FnMut() -> bool) {
        crate::support::eventually_or(what, BOUND, condition, || self.log());
    }

    /// Waits for `needle` in the daemon's log: stderr is read apart from stdout and
    /// the API, so a line may lag what they show.
    pub(crate) fn wait_log(&self, needle: &str) {
        self.eventually(&format!("`{needle}` in the log"), || self.log().contains(needle));
    }

    /// The daemon's peak resident memory in KiB, from `/proc/PID/status`.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        crate::support::peak_rss(&self.child.id().to_string()) >> 10
    }

    /// Sends `signal` (`-TERM`, `-KILL`…) to the daemon.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `kill -9`, as a crash.
    pub(crate) fn crash(mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status and the whole log.
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("-TERM");
        let mut status = None;
        let (child, stderr) = (&mut self.child, &self.stderr);
        crate::support::eventually_or(
            "the daemon to exit after SIGTERM",
            BOUND,
            || {
                status = child.try_wait().unwrap();
                status.is_some()
            },
            || stderr.lock().unwrap().clone(),
        );
        // The reader has every line once it reaches the end of the pipe.
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().unwrap();
        }
        (status.unwrap(), self.log())
    }

    /// SIGTERM, which must end in a clean exit: the whole log.
    pub(crate) fn stop(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "exit {status}: {log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
