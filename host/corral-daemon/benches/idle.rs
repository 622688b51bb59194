//! What an idle daemon holds: `corral run` on the example plugins (`cpu`, `mem`, `disk`
//! with their sidecars from `plugins/`, as `just run` starts it), left to settle once
//! every plugin serves from optimised code and has ticked, then its resident memory read
//! from `/proc/PID/smaps`: the total, and by kind of mapping (the heap and anonymous
//! mappings, thread stacks, the binary's own pages, compiled guest code, the rest), with
//! the number of threads. Three daemons, one after the other. A figure, not a test
//! (BENCHMARKS.md, "Idle cost"). Run with `cargo bench -p corral-test-guests --bench idle`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(base: &str, path: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(format!("{base}{path}")).call().unwrap();
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// Resident KiB by kind of mapping, from `/proc/PID/smaps`.
fn breakdown(pid: u32, exe: &Path) -> BTreeMap<&'static str, u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let exe = exe.canonicalize().unwrap();
    let mut kinds = BTreeMap::new();
    let mut kind = "other";
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's header: range, perms, offset, dev, inode, path.
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            kind = if path == "[heap]" {
                "heap (brk)"
            } else if path.starts_with("[stack") {
                "main stack"
            } else if Path::new(path) == exe {
                "the corral binary"
            } else if path.starts_with('/') && path.contains(".so") {
                "shared libraries"
            } else if path.starts_with('/') || path.starts_with("memfd:") {
                "other files (code images, data)"
            } else if path.is_empty() && perms.contains('x') {
                "anonymous, executable (guest code)"
            } else if path.is_empty() {
                "anonymous (malloc arenas, stacks, guest memory)"
            } else {
                "other"
            };
        } else if first == "Rss:" {
            let kib: u64 = words.next().unwrap().parse().unwrap();
            *kinds.entry(kind).or_insert(0) += kib;
        }
    }
    kinds
}

fn status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_owned())
        .unwrap_or_default()
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let exe = corral_test_guests::corral_exe();
    for run in 1..=3 {
        let plugins = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for (name, wasm) in [
            ("cpu", corral_test_guests::CPU),
            ("mem", corral_test_guests::MEM),
            ("disk", corral_test_guests::DISK),
        ] {
            std::fs::copy(wasm, plugins.path().join(format!("{name}.wasm"))).unwrap();
            std::fs::copy(
                repo.join("plugins").join(format!("{name}.toml")),
                plugins.path().join(format!("{name}.toml")),
            )
            .unwrap();
        }
        let mut child = Command::new(exe)
            .arg("run")
            .arg(plugins.path())
            .arg("--data")
            .arg(data.path())
            .args(["--admin", "127.0.0.1:0", "--output", "/dev/null"])
            .env("CORRAL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let marker = "admin API listening on ";
        let base = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the daemon did not start");
            if let Some(at) = line.find(marker) {
                break line[at + marker.len()..].trim().to_owned();
            }
        };
        // Settled: every plugin on optimised code and through a few timer events.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let plugins = get(&base, "/plugins");
            let list = plugins.as_array().cloned().unwrap_or_default();
            let ready = list.len() == 3
                && list.iter().all(|p| {
                    p["tier"] == "optimized" && p["stats"]["timer_event"]["calls"].as_u64().unwrap_or(0) >= 2
                });
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "the plugins did not settle: {plugins}");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(3));
        let pid = child.id();
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let field = |key: &str| -> u64 {
            rollup
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        println!(
            "idle daemon, run {run}: RSS {:.1} MiB (anonymous {:.1}, file-backed {:.1}), {} threads, peak {}",
            field("Rss:") as f64 / 1024.0,
            field("Anonymous:") as f64 / 1024.0,
            (field("Rss:") - field("Anonymous:")) as f64 / 1024.0,
            status(pid, "Threads:"),
            status(pid, "VmHWM:"),
        );
        for (kind, kib) in breakdown(pid, exe) {
            println!("  {kind:<50} {:>7.1} MiB", kib as f64 / 1024.0);
        }
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let _ = child.wait();
    }
    println!("goal: <= 16 MiB resident, idle with the example plugins (issue 17)");
}
