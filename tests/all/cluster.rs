//! `corral run --nats`: daemons sharing a JetStream stream by partition, against a real
//! `nats-server` the test starts on a free loopback port (JetStream in a temporary
//! directory) and stops. Skipped when `nats-server` is not installed, unless
//! `CORRAL_REQUIRE_NATS=1` (CI sets it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_test_guests as guests;
use serde_json::{Value as Json, json};

use crate::support::eventually;

const BOUND: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 8;
/// How many messages the kill test publishes (`CORRAL_CLUSTER_MESSAGES` to change).
const MESSAGES: usize = 100_000;

pub(crate) struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh `nats-server` with JetStream, or `None` (the test is skipped) when there is
/// none and `CORRAL_REQUIRE_NATS` is not set.
pub(crate) fn nats() -> Option<Nats> {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_NATS").is_none(),
            "CORRAL_REQUIRE_NATS is set but `nats-server` is not installed"
        );
        eprintln!("skipped: no `nats-server` (apt-get install nats-server)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("nats-server to listen", BOUND, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some(Nats {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    })
}

pub(crate) struct Daemon {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
    _plugins: tempfile::TempDir,
    _data: tempfile::TempDir,
}

impl Daemon {
    pub(crate) fn start(nats: &Nats, id: &str, files: &[(&str, &str, &str)]) -> Daemon {
        let plugins = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        for (name, guest, sidecar) in files {
            std::fs::write(plugins.path().join(format!("{name}.toml")), sidecar).unwrap();
            std::fs::copy(guest, plugins.path().join(format!("{name}.wasm"))).unwrap();
        }
        // One compile cache for every daemon of the suite.
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-cache");
        std::fs::create_dir_all(&cache).unwrap();
        #[cfg(unix)]
        let _ = std::os::unix::fs::symlink(&cache, data.path().join("cache"));
        let mut child = Command::new(crate::support::corral_exe())
            .arg("run")
            .arg(plugins.path())
            .arg("--data")
            .arg(data.path())
            .args(["--admin", "127.0.0.1:0", "--no-stdin", "--nats", &nats.url])
            .args(["--partitions", &PARTITIONS.to_string(), "--partition-key", "k"])
            .args([
                "--lease-ttl",
                "2s",
                "--checkpoint-interval-ms",
                "300",
                "--daemon-id",
                id,
            ])
            .env("NO_COLOR", "1")
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err, log) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut daemon = Daemon {
            child,
            base: String::new(),
            stderr,
            _plugins: plugins,
            _data: data,
        };
        let marker = "admin API listening on ";
        eventually(&format!("daemon {id} to start"), BOUND, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("daemon {id} exited with {status}: {}", daemon.log());
            }
            daemon.log().contains(marker)
        });
        let log = daemon.log();
        let at = log.find(marker).unwrap() + marker.len();
        daemon.base = log[at..].lines().next().unwrap().trim().to_owned();
        daemon
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub(crate) fn status(&self) -> Json {
        let mut response = agent().get(format!("{}/status", self.base)).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The partitions it owns and has started.
    pub(crate) fn ready(&self) -> Vec<u64> {
        self.status()["owned"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["ready"] == true)
            .map(|p| p["partition"].as_u64().unwrap())
            .collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(BOUND))
        .build()
        .into()
}

const ALL: &str = "[matcher]\nall = true\n";

/// Every message of the output stream.
fn outputs(url: &str, stream: &str, expected: usize) -> Vec<Json> {
    use futures_util::StreamExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(message))) = next else { break };
            out.push(serde_json::from_slice(&message.payload).unwrap());
        }
        out
    })
}

fn stream_messages(url: &str, stream: &str) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.unwrap();
        stream.info().await.unwrap().state.messages
    })
}

fn int(message: &Json, name: &str) -> i64 {
    message["fields"][name]
        .as_i64()
        .unwrap_or_else(|| panic!("no int field `{name}`: {message}"))
}

fn corral_status(nats: &Nats) -> Json {
    let out = Command::new(crate::support::corral_exe())
        .args(["status", "--json", "--lease-ttl", "2s", "--nats", &nats.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deploy(nats: &Nats, file: &Path) {
    let out = Command::new(crate::support::corral_exe())
        .arg("deploy")
        .arg(file)
        .args(["--nats", &nats.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The versions of `name` every live daemon reports, and their load errors.
fn versions(nats: &Nats, name: &str) -> Vec<(Option<String>, Option<String>)> {
    corral_status(nats)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let p = &d["plugins"][name];
            (
                p["version"].as_str().map(str::to_owned),
                p["load_error"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn three_daemons_share_partitions_survive_kill_9_and_deploy_through_the_object_store() {
    let Some(nats) = nats() else { return };
    let n: usize = std::env::var("CORRAL_CLUSTER_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MESSAGES);
    let files = [("tally", guests::DURABLE_TALLY, ALL)];
    let mut daemons: Vec<Daemon> = ["d0", "d1", "d2"]
        .iter()
        .map(|id| Daemon::start(&nats, id, &files))
        .collect();
    eventually("the three daemons to share the 8 partitions", BOUND, || {
        let ready: Vec<Vec<u64>> = daemons.iter().map(Daemon::ready).collect();
        ready.iter().all(|r| r.len() >= 2) && ready.iter().map(Vec::len).sum::<usize>() == 8
    });

    // Publish through d0 and d1 while d2 is killed mid-stream.
    let published = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let publisher = {
        let bases = [daemons[0].base.clone(), daemons[1].base.clone()];
        let published = published.clone();
        std::thread::spawn(move || {
            for (i, chunk) in (0..n).collect::<Vec<_>>().chunks(500).enumerate() {
                let body = Json::Array(
                    chunk
                        .iter()
                        .map(|&i| json!({"type": "tally.in", "fields": {"k": i.to_string(), "n": i}}))
                        .collect(),
                )
                .to_string();
                let base = &bases[i % 2];
                let response = agent().post(format!("{base}/messages")).send(&body).unwrap();
                assert_eq!(response.status().as_u16(), 202);
                published.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    eventually("a third of the messages published", BOUND, || {
        published.load(Ordering::SeqCst) >= n / 3
    });
    let victim = daemons[2].ready();
    daemons[2].kill();
    let killed = Instant::now();
    eventually("the two survivors to take every partition", BOUND, || {
        daemons[..2].iter().map(|d| d.ready().len()).sum::<usize>() == 8
    });
    let takeover = killed.elapsed();
    publisher.join().unwrap();
    let publish_time = started.elapsed();
    eventually(
        "every message's tally in the output stream",
        Duration::from_secs(120),
        || stream_messages(&nats.url, "CORRAL_OUT") >= n as u64,
    );
    let elapsed = started.elapsed();
    let out = outputs(&nats.url, "CORRAL_OUT", n + 10);
    let duplicates: u64 = daemons[..2]
        .iter()
        .map(|d| d.status()["duplicates"].as_u64().unwrap())
        .sum();
    eprintln!(
        "cluster: {n} messages, published in {publish_time:?}, all processed in {elapsed:?}; \
         d2 (partitions {victim:?}) killed, taken over in {takeover:?}; {duplicates} repeats \
         dropped by the output stream"
    );
    assert_eq!(
        out.len(),
        n,
        "the output stream kept exactly one tally per message"
    );
    // Per partition: counts 1..=m, each once, and the store agrees: state exact.
    let mut seen = BTreeSet::new();
    let mut counts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for message in &out {
        assert_eq!(message["type"], "tally");
        let number = int(message, "n");
        let partition = int(message, "corral.partition");
        assert_eq!(
            partition,
            i64::from(corral_daemon::cluster::partition_of_key(
                &number.to_string(),
                PARTITIONS
            )),
            "{message}"
        );
        let count = int(message, "count");
        assert_eq!(count, int(message, "store"), "state and store agree: {message}");
        assert!(seen.insert(number), "message {number} tallied twice");
        counts.entry(partition).or_default().push(count);
    }
    assert_eq!(seen.len(), n, "every message was tallied");
    for (partition, mut c) in counts {
        c.sort_unstable();
        let expected: Vec<i64> = (1..=c.len() as i64).collect();
        assert!(
            c == expected,
            "partition {partition}: counts are not exactly 1..={}",
            c.len()
        );
    }
    assert!(
        duplicates > 0,
        "a takeover emits again what followed the last checkpoint"
    );

    // d2 comes back and gets its share again; then deploys reach all three.
    daemons[2] = Daemon::start(&nats, "d2", &files);
    eventually("d2 to take its share back", BOUND, || {
        daemons[2].ready().len() >= 2
    });
    let a = std::fs::read(guests::SWAP_A).unwrap();
    let b = std::fs::read(guests::SWAP_B).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swap.wasm");
    for bytes in [&a, &b] {
        std::fs::write(&file, bytes).unwrap();
        deploy(&nats, &file);
        let version = corral::content_version(bytes);
        eventually("the deployed version serving on all three", BOUND, || {
            let v = versions(&nats, "swap");
            v.len() == 3 && v.iter().all(|(got, _)| got.as_deref() == Some(&version))
        });
    }
    std::fs::write(&file, b"not a component").unwrap();
    deploy(&nats, &file);
    let good = corral::content_version(&b);
    eventually("the bad version refused on all three", BOUND, || {
        let v = versions(&nats, "swap");
        v.len() == 3
            && v.iter()
                .all(|(got, error)| got.as_deref() == Some(&good) && error.is_some())
    });
    for daemon in &daemons {
        assert!(daemon.log().contains("swap"), "{}", daemon.log());
    }
    let metrics = agent()
        .get(format!("{}/metrics", daemons[0].base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("corral_cluster_lease_renewals_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corral_cluster_lag_messages{plugin=\"tally\""),
        "{metrics}"
    );
}
