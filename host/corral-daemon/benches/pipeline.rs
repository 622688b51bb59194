//! End to end through the daemon: 1,000,000 JSON lines on stdin → the durable log → one
//! `batch-filter` plugin (`bench-batch`: sums a field, counts per type) → the output,
//! with durability on (group commit with fdatasync every 10 ms), then the same with
//! `--no-fsync`, three runs each. Prints messages per second (from the admin API coming
//! up to the plugin having processed the last message) and the daemon's peak resident
//! memory (VmHWM), and the range between runs.
//!
//! Then the storage choice, measured on the same write pattern: 1,000,000 records of the
//! log's size appended in 10 ms groups, each group made durable, to segment files
//! (write + fdatasync) and to a redb table (one durable transaction per group).
//!
//! Run with `just bench-pipeline` (or `cargo bench -p corral --bench pipeline`); set
//! `CORRAL_BENCH_MESSAGES` for another count.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TYPES: [&str; 4] = ["nginx.access", "nginx.error", "app.event", "app.metric"];

fn messages() -> usize {
    std::env::var("CORRAL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn input(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("input.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..n {
        writeln!(
            out,
            r#"{{"timestamp":{},"type":"{}","logger":"nginx","severity":6,"payload":"GET /index.html","fields":{{"value":{},"status":200,"path":"/index.html"}}}}"#,
            1_700_000_000_000_000_000i64 + i as i64,
            TYPES[i % TYPES.len()],
            i % 1000
        )
        .unwrap();
    }
    out.flush().unwrap();
    path
}

fn get(base: &str, path: &str) -> serde_json::Value {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent.get(format!("{base}{path}")).call().unwrap();
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One run: messages per second and peak RSS in MiB.
fn run(input: &std::path::Path, n: usize, extra: &[&str]) -> (f64, f64) {
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(corral_test_guests::BENCH_BATCH, plugins.path().join("bench.wasm")).unwrap();
    std::fs::write(plugins.path().join("bench.toml"), "[matcher]\nall = true\n").unwrap();
    let mut child = Command::new(corral_test_guests::corral_exe())
        .arg("run")
        .arg(plugins.path())
        .arg("--data")
        .arg(data.path())
        .args(["--admin", "127.0.0.1:0", "--output", "/dev/null", "--no-baseline"])
        .args(extra)
        .env("CORRAL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::fs::File::open(input).unwrap())
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
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon did not start");
        if let Some(at) = line.find(marker) {
            break line[at + marker.len()..].trim().to_owned();
        }
    };
    // The plugin is loaded and stdin is read from here on.
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let plugin = get(&base, "/plugins/bench");
        if plugin["reader"]["processed"].as_u64().unwrap_or(0) >= n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {plugin}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = started.elapsed();
    let rss = peak_rss_kib(child.id()) as f64 / 1024.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (n as f64 / took.as_secs_f64(), rss)
}

fn summary(label: &str, runs: &[(f64, f64)]) {
    let rates: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let (lo, hi) = (
        rates.iter().copied().fold(f64::MAX, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    let peak = runs.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "{label}: {} msg/s (runs {}), range ±{:.1} %, peak RSS {peak:.1} MiB",
        (rates.iter().sum::<f64>() / rates.len() as f64) as u64,
        rates
            .iter()
            .map(|r| format!("{}", *r as u64))
            .collect::<Vec<_>>()
            .join(", "),
        (hi - lo) / (hi + lo) * 100.0,
    );
}

/// The log's write pattern on segment files and on redb: records per second.
fn storage(n: usize) {
    const RECORD: usize = 110;
    const GROUP: usize = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let record = vec![0x5au8; RECORD];
    let started = Instant::now();
    {
        let mut file = std::io::BufWriter::with_capacity(
            256 << 10,
            std::fs::File::create(dir.path().join("segment.log")).unwrap(),
        );
        for group in 0..n / GROUP {
            for i in 0..GROUP {
                let payload = &record;
                file.write_all(&(payload.len() as u32).to_le_bytes()).unwrap();
                file.write_all(&((group * GROUP + i) as u32).to_le_bytes())
                    .unwrap();
                file.write_all(payload).unwrap();
            }
            file.flush().unwrap();
            file.get_ref().sync_data().unwrap();
        }
    }
    let files = n as f64 / started.elapsed().as_secs_f64();
    let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("log");
    let db = redb::Database::create(dir.path().join("log.redb")).unwrap();
    let started = Instant::now();
    for group in 0..n / GROUP {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            for i in 0..GROUP {
                t.insert((group * GROUP + i) as u64, record.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let redb = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "storage, {n} records of {RECORD} bytes in durable groups of {GROUP}: segment files {} records/s, redb {} records/s",
        files as u64, redb as u64
    );
}

fn main() {
    let n = messages();
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), n);
    println!(
        "{n} messages, {} bytes of JSON lines",
        std::fs::metadata(&input).unwrap().len()
    );
    let durable: Vec<_> = (0..3).map(|_| run(&input, n, &[])).collect();
    summary("durable (fdatasync every 10 ms)", &durable);
    let no_fsync: Vec<_> = (0..3).map(|_| run(&input, n, &["--no-fsync"])).collect();
    summary("--no-fsync (page cache)", &no_fsync);
    storage(n);
}
