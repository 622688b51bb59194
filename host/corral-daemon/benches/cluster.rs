//! The cluster end to end (`corral run --nats`, docs/cluster.md): a `nats-server` with
//! JetStream on a free loopback port; 1, 2 and 3 daemons sharing 8 partitions, each
//! with the stateful `durable-tally` plugin (one output message per input message);
//! N messages published straight to the input stream; timed from the first publish to
//! the output stream holding N messages. Prints messages per second and the CPU time
//! the NATS server and the daemons used over the run (their share of the machine's two
//! cores). Then, with three daemons, one is killed (`kill -9`) and the time until the
//! other two have started every partition is printed.
//!
//! Run with `cargo bench -p corral-test-guests --bench cluster`; `CORRAL_BENCH_MESSAGES`
//! sets N (default 50,000). Needs `nats-server` on PATH.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PARTITIONS: u32 = 8;

fn messages() -> usize {
    std::env::var("CORRAL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

fn wait(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

struct Daemon {
    child: Child,
    base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(url: &str, id: &str, plugins: &std::path::Path, data: &std::path::Path) -> Daemon {
    let mut child = Command::new(corral_test_guests::corral_exe())
        .arg("run")
        .arg(plugins)
        .arg("--data")
        .arg(data)
        .args([
            "--admin",
            "127.0.0.1:0",
            "--no-stdin",
            "--nats",
            url,
            "--daemon-id",
            id,
        ])
        .args([
            "--partitions",
            &PARTITIONS.to_string(),
            "--partition-key",
            "k",
            "--lease-ttl",
            "2s",
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = corral_test_guests::capture_stderr(&mut child);
    let mut base = None;
    wait("a daemon to start", Duration::from_secs(120), || {
        base = corral_test_guests::admin_base(&log.lock().unwrap());
        base.is_some()
    });
    Daemon {
        child,
        base: base.unwrap(),
    }
}

fn ready(daemon: &Daemon) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let Ok(mut response) = agent.get(format!("{}/status", daemon.base)).call() else {
        return 0;
    };
    let status: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    status["owned"]
        .as_array()
        .map_or(0, |o| o.iter().filter(|p| p["ready"] == true).count())
}

/// One run with `daemons` daemons: (messages per second, server CPU s, daemons' CPU s,
/// seconds, takeover time if measured).
fn run(daemons: usize, n: usize, takeover: bool) -> (f64, f64, f64, f64, Option<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let server = corral_test_guests::NatsServer::start(Duration::from_secs(20));
    let url = server.url.clone();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::write(plugins.join("tally.toml"), "[matcher]\nall = true\n").unwrap();
    std::fs::copy(corral_test_guests::DURABLE_TALLY, plugins.join("tally.wasm")).unwrap();
    let mut running: Vec<Daemon> = (0..daemons)
        .map(|i| {
            let data = dir.path().join(format!("data{i}"));
            std::fs::create_dir_all(&data).unwrap();
            start_daemon(&url, &format!("b{i}"), &plugins, &data)
        })
        .collect();
    wait("the partitions shared", Duration::from_secs(120), || {
        running.iter().map(ready).sum::<usize>() == PARTITIONS as usize
            && running.iter().all(|d| ready(d) >= PARTITIONS as usize / daemons)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let js = runtime.block_on(async { async_nats::jetstream::new(async_nats::connect(&url).await.unwrap()) });
    let server_cpu = cpu_seconds(server.pid());
    let daemon_cpu: f64 = running.iter().map(|d| cpu_seconds(d.child.id())).sum();
    let start = Instant::now();
    runtime.block_on(async {
        let mut acks = Vec::new();
        for i in 0..n {
            let key = i.to_string();
            let partition = corral_daemon::cluster::partition_of_key(&key, PARTITIONS);
            let body = format!(r#"{{"type":"tally.in","fields":{{"k":"{key}","n":{i}}}}}"#);
            acks.push(
                js.publish(format!("corral.in.{partition}"), body.into())
                    .await
                    .unwrap(),
            );
            if acks.len() >= 2000 {
                for ack in acks.drain(..) {
                    ack.await.unwrap();
                }
            }
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
    let outputs = |js: &async_nats::jetstream::Context| {
        runtime.block_on(async {
            js.get_stream("CORRAL_OUT")
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        })
    };
    wait("every output", Duration::from_secs(600), || {
        outputs(&js) >= n as u64
    });
    let seconds = start.elapsed().as_secs_f64();
    let server_cpu = cpu_seconds(server.pid()) - server_cpu;
    let daemon_cpu = running.iter().map(|d| cpu_seconds(d.child.id())).sum::<f64>() - daemon_cpu;
    let mut took = None;
    if takeover {
        let mut victim = running.pop().unwrap();
        let _ = victim.child.kill();
        let killed = Instant::now();
        let _ = victim.child.wait();
        wait("the takeover", Duration::from_secs(60), || {
            running.iter().map(ready).sum::<usize>() == PARTITIONS as usize
        });
        took = Some(killed.elapsed());
    }
    drop(running);
    drop(server);
    (n as f64 / seconds, server_cpu, daemon_cpu, seconds, took)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = messages();
    println!("cluster: {n} messages published straight to the input stream, 8 partitions, durable-tally");
    for daemons in 1..=3 {
        let (rate, server, daemon, seconds, took) = run(daemons, n, daemons == 3);
        println!(
            "{daemons} daemon(s): {rate:>9.0} messages/s end to end ({seconds:.1} s); CPU: nats-server \
             {server:.1} s ({:.0} % of one core), daemons {daemon:.1} s ({:.0} %)",
            100.0 * server / seconds,
            100.0 * daemon / seconds,
        );
        if let Some(took) = took {
            println!("takeover after kill -9 of one of three daemons (lease 2 s): {took:.2?}");
        }
    }
}
