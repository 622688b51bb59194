//! Helpers shared by every test module: one host, loading guests, the one bounded
//! wait ([`eventually`]), the watch-directory harness ([`watched`]) and the daemon
//! harness ([`daemon`]).

use std::fs;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use corral::{Event, Host, Message, Plugin, PluginOptions, Registry, Value, Watcher};

/// One host for the whole test binary, as an embedding program would have: plugins
/// share its engine and compile memo, so each guest compiles once, and a disk compile
/// cache under `target/` keeps the large Python and JavaScript guests from compiling
/// again on the next run.
pub fn host() -> &'static Host {
    static HOST: LazyLock<Host> = LazyLock::new(|| {
        Host::builder()
            .cache_dir(compile_cache())
            .build()
            .expect("host starts")
    });
    &HOST
}

pub use corral_test_guests::corral_exe;

/// The test host's disk compile cache.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// The path of a Python or JavaScript guest, or `None` after printing why it was not
/// built (no `python3` or `npm` on this machine). With `CORRAL_REQUIRE_GUEST_TOOLS` set,
/// as in CI, a missing guest fails the test instead.
pub fn polyglot(built: Result<&'static str, &'static str>) -> Option<&'static str> {
    match built {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CORRAL_REQUIRE_GUEST_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0") => {
            panic!("{why}")
        }
        Err(why) => {
            eprintln!("SKIPPED (set CORRAL_REQUIRE_GUEST_TOOLS=1 to fail instead): {why}");
            None
        }
    }
}

/// Loads the guest at `path` under `name` with `options`, or panics with the error.
pub fn load_as(name: &str, path: &str, options: PluginOptions) -> Plugin {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read `{path}`: {e}"));
    host()
        .load(name, &bytes, options)
        .unwrap_or_else(|e| panic!("cannot load `{name}`: {e}"))
}

/// Loads the guest at `path` with the default options, under a name unique to the
/// calling test so that store namespaces never collide between tests.
pub fn load(name: &str, path: &str) -> Plugin {
    load_as(name, path, PluginOptions::default())
}

/// A message of type `type_` from logger `logger`.
pub fn message(type_: &str, logger: &str) -> Message {
    Message {
        logger: logger.to_owned(),
        ..Message::new(type_)
    }
}

/// Waits until `condition` holds, checking every few milliseconds, for at most `bound`;
/// panics naming `what` if it never does. The one bounded wait of the suite: no test
/// sleeps and hopes.
#[track_caller]
pub fn eventually(what: &str, bound: Duration, condition: impl FnMut() -> bool) {
    eventually_or(what, bound, condition, String::new);
}

/// As [`eventually`], with `context()` (a daemon's log, say) in the panic on a timeout.
/// The checks start 5 ms apart and back off to 20 ms, so that a condition that asks a
/// daemon over HTTP does not flood it.
#[track_caller]
pub fn eventually_or(
    what: &str,
    bound: Duration,
    mut condition: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + bound;
    let mut pause = Duration::from_millis(5);
    while !condition() {
        if Instant::now() >= deadline {
            let context = context();
            let sep = if context.is_empty() { "" } else { "\n" };
            panic!("{what}: not within {bound:?}{sep}{context}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The peak resident memory of the process `pid` (or `"self"`) in bytes, from
/// `/proc/PID/status`.
pub fn peak_rss(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() << 10
}

// The daemon harness: `corral run` on temporary directories.
pub mod daemon;

// The watch-directory harness: a temporary directory a registry watches, its events,
// and helpers to change it.

/// How long any awaited event may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(20);

pub(crate) struct Dir {
    _temp: tempfile::TempDir,
    pub path: PathBuf,
    pub registry: Registry,
    pub events: Receiver<Event>,
    pub watcher: Watcher,
}

/// A fresh watch directory with `files` (name, guest path) in it before watching starts.
pub(crate) fn watched(files: &[(&str, &str)]) -> Dir {
    watched_with_debounce(files, corral::DEBOUNCE)
}

pub(crate) fn watched_with_debounce(files: &[(&str, &str)], debounce: Duration) -> Dir {
    watched_with(
        files,
        corral::WatchOptions {
            debounce,
            ..corral::WatchOptions::default()
        },
    )
}

pub(crate) fn watched_with(files: &[(&str, &str)], options: corral::WatchOptions) -> Dir {
    watched_on(host().clone(), files, options)
}

/// As [`watched_with`], loading through `host` (one with host functions, say).
pub(crate) fn watched_on(host: Host, files: &[(&str, &str)], options: corral::WatchOptions) -> Dir {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().canonicalize().unwrap();
    for (name, guest) in files {
        fs::copy(guest, path.join(name)).unwrap();
    }
    let registry = Registry::new(host);
    let events = registry.subscribe();
    let watcher = registry.watch_with(&path, options).unwrap();
    // The initial load happened before `watch` returned: keep only what follows.
    let initial: Vec<Event> = events.try_iter().collect();
    assert_eq!(initial.len(), files.len(), "{initial:?}");
    Dir {
        _temp: temp,
        path,
        registry,
        events,
        watcher,
    }
}

impl Dir {
    /// Waits for the first event `matches` accepts, returning it and the events before it.
    pub fn wait(&self, what: &str, matches: impl Fn(&Event) -> bool) -> (Event, Vec<Event>) {
        let deadline = Instant::now() + BOUND;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if matches(&event) => return (event, before),
                Ok(event) => before.push(event),
                Err(_) => panic!("no {what} within {BOUND:?}; saw {before:#?}"),
            }
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `bytes` as `name` the safe way: to a temporary file, renamed into place.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let temp = self.path.join(format!(".{name}.partial"));
        fs::write(&temp, bytes).unwrap();
        fs::rename(&temp, self.file(name)).unwrap();
    }

    pub fn version_answering(&self, name: &str) -> String {
        let outcome = self
            .registry
            .process_message(name, &Message::new("ping"))
            .unwrap();
        match outcome.emitted[0].field("version") {
            Some(Value::String(v)) => v.clone(),
            other => panic!("no version in {other:?}"),
        }
    }
}

pub(crate) fn bytes(guest: &str) -> Vec<u8> {
    fs::read(guest).unwrap()
}

pub(crate) fn loaded(name: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Loaded { name: n, .. } if n == name)
}

pub(crate) fn replaced(name: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Replaced { name: n, .. } if n == name)
}

pub(crate) fn failed(name: &str) -> impl Fn(&Event) -> bool + '_ {
    move |e| matches!(e, Event::Failed { name: n, .. } if n == name)
}
