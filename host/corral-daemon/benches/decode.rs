//! Raw nginx lines end to end through the daemon, with durability on: a file of
//! `combined`-format lines → a `tail` input → the `nginx-access` decoder → the durable
//! log (group commit with fdatasync every 10 ms) → one `batch-filter` plugin
//! (`bench-batch`, matched on `nginx.access`) → the output. Three runs. Prints lines per
//! second, from the lines being appended to the file (the daemon up and following it)
//! to the filter having processed the last one, and the daemon's peak resident memory,
//! beside Hindsight's 114,851 lines/s for the same job on a 2-core laptop.
//!
//! Run with `cargo bench -p corral-test-guests --bench decode`; set
//! `CORRAL_BENCH_LINES` for another count (default 500,000).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn lines() -> usize {
    std::env::var("CORRAL_BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

const AGENTS: [&str; 3] = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "curl/8.5.0",
];

fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 200);
    for i in 0..n {
        writeln!(
            out,
            r#"192.0.2.{} - - [02/Dec/2026:01:{:02}:{:02} +0000] "GET /products/{} HTTP/1.1" {} {} "https://www.example.com/" "{}""#,
            i % 250,
            (i / 60) % 60,
            i % 60,
            i % 5000,
            if i % 20 == 0 { 404 } else { 200 },
            500 + i % 40_000,
            AGENTS[i % AGENTS.len()]
        )
        .unwrap();
    }
    out
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

/// One run: lines per second and peak RSS in MiB.
fn run(body: &[u8], n: usize) -> (f64, f64) {
    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    std::fs::write(&log, b"").unwrap();
    std::fs::copy(
        corral_test_guests::NGINX_ACCESS,
        plugins.path().join("nginx.wasm"),
    )
    .unwrap();
    std::fs::write(
        plugins.path().join("nginx.toml"),
        format!(
            "[input]\ntype = \"tail\"\npath = {:?}\nstart-at = \"beginning\"\npoll-ms = 20\n",
            log.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(corral_test_guests::BENCH_BATCH, plugins.path().join("bench.wasm")).unwrap();
    std::fs::write(
        plugins.path().join("bench.toml"),
        "[matcher]\ntype = \"nginx.access\"\n",
    )
    .unwrap();
    let mut child = Command::new(corral_test_guests::corral_exe())
        .arg("run")
        .arg(plugins.path())
        .arg("--data")
        .arg(data.path())
        .args(["--admin", "127.0.0.1:0", "--no-stdin", "--output"])
        .arg(data.path().join("out.jsonl"))
        .env("NO_COLOR", "1")
        .env("CORRAL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let marker = "admin API listening on ";
    let base = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the daemon exited");
        if let Some(at) = line.find(marker) {
            break line[at + marker.len()..].trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    // Up and following the file: its offset is in the input's status.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&base, "/plugins/nginx")["input"]["files"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "the input never followed the file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(body)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let processed = get(&base, "/plugins/bench")["reader"]["processed"]
            .as_u64()
            .unwrap_or(0);
        if processed >= n as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "only {processed} of {n} lines through");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let input = get(&base, "/plugins/nginx")["input"].clone();
    assert_eq!(input["decode_failures"], 0, "{input}");
    let rss = peak_rss_kib(child.id()) as f64 / 1024.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (n as f64 / elapsed.as_secs_f64(), rss)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("decode: bench");
        return;
    }
    let n = lines();
    let body = text(n);
    println!(
        "{n} raw nginx lines ({:.1} MiB), tail → nginx-access → durable log → bench-batch, fsync on",
        body.len() as f64 / (1 << 20) as f64
    );
    let mut rates = Vec::new();
    for round in 1..=3 {
        let (rate, rss) = run(&body, n);
        println!("  run {round}: {rate:>9.0} lines/s, peak RSS {rss:.1} MiB");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "  best {:.0}, mean {mean:.0}, worst {:.0} lines/s; Hindsight: 114,851 lines/s ({:.2}× at the mean)",
        rates[rates.len() - 1],
        rates[0],
        mean / 114_851.0
    );
}
