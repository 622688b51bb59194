//! Paths of the guest components the integration suite uses, built by `build.rs` from
//! `guests/` into `target/guests/<name>.wasm`. A constant per guest, named after it in
//! upper case (`HELLO`, `INFINITE_LOOP`…), so no test spells a path.
//!
//! The Python and JavaScript guests (`PY_COUNTER`, `JS_COUNTER`…) and their tools
//! (`COMPONENTIZE_PY`, `COMPONENTIZE_JS`) are `Result`s: `Err` says why one was not built
//! (no `python3` or `npm` on this machine), for the tests to report.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The `corral` command under test: the suite's own copy of it (`bin/corral-suite.rs`,
/// the same `corral_daemon::main` as the `corral` binary), which cargo builds beside a
/// test or bench of this package, in the same profile directory.
pub fn corral_exe() -> &'static Path {
    static EXE: LazyLock<PathBuf> = LazyLock::new(|| {
        // target/<profile>/deps/<test or bench>-<hash>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let corral = profile_dir.join(format!("corral-suite{}", std::env::consts::EXE_SUFFIX));
        assert!(
            corral.is_file(),
            "`{}` is missing: cargo builds it with this package's tests and benches \
             (`cargo test -p corral-test-guests`)",
            corral.display()
        );
        corral
    });
    &EXE
}

/// A `nats-server` with JetStream on a free loopback port, its store in a fresh
/// directory under the system's temporary directory; stopped, and the directory
/// removed, when dropped. For the cluster tests (`tests/all/cluster.rs`) and bench
/// (`host/corral-daemon/benches/cluster.rs`).
#[derive(Debug)]
pub struct NatsServer {
    child: std::process::Child,
    dir: PathBuf,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl NatsServer {
    /// Whether `nats-server` is on PATH.
    pub fn installed() -> bool {
        std::process::Command::new("nats-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts one and waits (up to `bound`) until it listens.
    ///
    /// The server picks its own port (`-p -1`) and names it in its ports file once it
    /// listens: a port chosen here and then handed over could be taken in between by
    /// another test's server (which then failed to bind and exited, while the wait saw
    /// the other one listening).
    ///
    /// # Panics
    ///
    /// When it cannot be started, exits, or does not listen in time.
    pub fn start(bound: std::time::Duration) -> NatsServer {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "corral-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for nats-server's store");
        let mut child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        let ports = dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = std::time::Instant::now() + bound;
        let url = loop {
            // {"nats":["nats://127.0.0.1:<port>"], ...}, written once it listens.
            let written = std::fs::read_to_string(&ports).ok().and_then(|text| {
                let at = text.find("\"nats://")? + 1;
                let len = text[at..].find('"')?;
                Some(text[at..at + len].to_owned())
            });
            if let Some(url) = written {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited before it listened: {status}");
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nats-server did not listen within {bound:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        NatsServer { child, dir, url }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Collects `child`'s stderr, line by line, into the string returned, from a thread of
/// its own (a daemon's log, for a test to wait on and to show when it fails).
///
/// # Panics
///
/// When `child`'s stderr was not piped.
pub fn capture_stderr(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (err, sink) = (child.stderr.take().expect("a piped stderr"), log.clone());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// The admin API's base URL in a daemon's `log`, once it says it listens.
pub fn admin_base(log: &str) -> Option<String> {
    const MARKER: &str = "admin API listening on ";
    let at = log.find(MARKER)? + MARKER.len();
    Some(log[at..].lines().next()?.trim().to_owned())
}
