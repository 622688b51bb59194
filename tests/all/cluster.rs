//! `corral run --nats`: daemons sharing a JetStream stream by partition, against a real
//! `nats-server` the test starts on a free loopback port (JetStream in a temporary
//! directory) and stops. Skipped when `nats-server` is not installed, unless
//! `CORRAL_REQUIRE_NATS=1` (CI sets it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_test_guests as guests;
use serde_json::{Value as Json, json};

use crate::support::{eventually, eventually_or};

const BOUND: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 8;
/// How many messages the kill test publishes (`CORRAL_CLUSTER_MESSAGES` to change).
const MESSAGES: usize = 100_000;

pub(crate) type Nats = guests::NatsServer;

/// A fresh `nats-server` with JetStream, or `None` (the test is skipped) when there is
/// none and `CORRAL_REQUIRE_NATS` is not set.
pub(crate) fn nats() -> Option<Nats> {
    if !Nats::installed() {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_NATS").is_none(),
            "CORRAL_REQUIRE_NATS is set but `nats-server` is not installed"
        );
        eprintln!("skipped: no `nats-server` (apt-get install nats-server)");
        return None;
    }
    Some(Nats::start(BOUND))
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
        let stderr = guests::capture_stderr(&mut child);
        let mut daemon = Daemon {
            child,
            base: String::new(),
            stderr,
            _plugins: plugins,
            _data: data,
        };
        eventually(&format!("daemon {id} to start"), BOUND, || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("daemon {id} exited with {status}: {}", daemon.log());
            }
            guests::admin_base(&daemon.log()).is_some()
        });
        daemon.base = guests::admin_base(&daemon.log()).unwrap();
        daemon
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its watch directory.
    pub(crate) fn plugins(&self) -> &Path {
        self._plugins.path()
    }

    pub(crate) fn get(&self, path: &str) -> Json {
        let mut response = agent().get(format!("{}{path}", self.base)).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    }

    pub(crate) fn status(&self) -> Json {
        self.get("/status")
    }

    /// `GET /plugins/{name}`.
    pub(crate) fn plugin(&self, name: &str) -> Json {
        self.get(&format!("/plugins/{name}"))
    }

    /// What `name` has processed over this daemon's partitions.
    pub(crate) fn processed(&self, name: &str) -> u64 {
        self.plugin(name)["reader"]["processed"].as_u64().unwrap_or(0)
    }

    /// Posts `body` to `/messages`, expecting a 202.
    pub(crate) fn post(&self, body: &str) {
        let response = agent()
            .post(format!("{}/messages", self.base))
            .send(body)
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "POST /messages {body}");
    }

    /// A clean stop (SIGTERM): every partition checkpoints and is released.
    pub(crate) fn stop(&mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "daemon exited with {status}: {}", self.log());
                break;
            }
            assert!(Instant::now() < deadline, "daemon did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The stderr reader has the last lines once the pipe closes.
        eventually("the daemon's last log line", BOUND, || {
            self.log().contains("stopped")
        });
        self.log()
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

    pub(crate) fn counter(&self, name: &str) -> u64 {
        self.status()[name].as_u64().unwrap()
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

/// Runs `f` with a JetStream context on the server at `url`, on a runtime of its own.
fn with_jetstream<T>(url: &str, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        f(js).await
    })
}

/// Every message of the output stream.
fn outputs(url: &str, stream: &str, expected: usize) -> Vec<Json> {
    use futures_util::StreamExt;
    with_jetstream(url, async |js| {
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
    with_jetstream(url, async |js| {
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

/// Publishes `messages` (message JSON) straight to the input stream, each to its
/// partition by the field `k`, as the daemons' intake does.
fn publish_direct(url: &str, messages: &[Json]) {
    with_jetstream(url, async |js| {
        for message in messages {
            let key = message["fields"]["k"].as_str().unwrap();
            let partition = corral_daemon::cluster::partition_of_key(key, PARTITIONS);
            js.publish(format!("corral.in.{partition}"), message.to_string().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// The stream sequence the consumer of `partition` is acked up to.
fn ack_floor(url: &str, partition: u32) -> u64 {
    with_jetstream(url, async |js| {
        let stream = js.get_stream("CORRAL").await.unwrap();
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&format!("CORRAL_p{partition}"))
            .await
            .unwrap();
        consumer.info().await.unwrap().ack_floor.stream_sequence
    })
}

/// Greetings (`hello`'s emits) in the output stream, per plugin, by their `corral.id`s.
fn greeted(url: &str, expected: usize) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for message in outputs(url, "CORRAL_OUT", expected) {
        let id = message["fields"]["corral.id"].as_str().unwrap().to_owned();
        let plugin = id.split('/').next().unwrap().to_owned();
        assert!(out.entry(plugin).or_default().insert(id.clone()), "{id} twice");
    }
    out
}

fn hello(k: usize, to: &str) -> Json {
    json!({"type": "t", "logger": to, "fields": {"k": k.to_string()}})
}

/// Whether every partition of `daemon` has given `name` its cursor.
fn in_every_partition(daemon: &Daemon, name: &str) -> bool {
    let status = daemon.status();
    let owned = status["owned"].as_array().unwrap();
    owned.len() == PARTITIONS as usize
        && owned.iter().all(|p| {
            p["ready"] == true
                && p["plugins"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["plugin"] == name)
        })
}

#[test]
fn a_new_plugin_starts_at_the_end_or_the_earliest_and_one_with_a_checkpoint_resumes() {
    let Some(nats) = nats() else { return };
    let files = [("first", guests::HELLO, ALL)];
    let mut daemon = Daemon::start(&nats, "s0", &files);
    eventually_or(
        "the daemon to start every partition",
        BOUND,
        || in_every_partition(&daemon, "first"),
        || daemon.log(),
    );
    let old: Vec<Json> = (0..5).map(|i| hello(i, &format!("old{i}"))).collect();
    daemon.post(&Json::Array(old).to_string());
    eventually("the first plugin", BOUND, || daemon.processed("first") == 5);
    for (name, sidecar) in [
        ("history", "start-from = \"earliest\"\n[matcher]\nall = true\n"),
        ("latest", ALL),
    ] {
        std::fs::write(daemon.plugins().join(format!("{name}.toml")), sidecar).unwrap();
        std::fs::copy(guests::HELLO, daemon.plugins().join(format!("{name}.wasm"))).unwrap();
    }
    eventually_or(
        "both new plugins in every partition",
        BOUND,
        || in_every_partition(&daemon, "history") && in_every_partition(&daemon, "latest"),
        || daemon.log(),
    );
    daemon.post(&hello(5, "new").to_string());
    eventually("history to reprocess", BOUND, || daemon.processed("history") == 6);
    eventually("latest to see the new one", BOUND, || {
        daemon.processed("latest") == 1
    });
    assert_eq!(daemon.processed("first"), 6);
    // The dashboard's plugin entries: one item per partition.
    let latest = daemon.plugin("latest");
    assert_eq!(latest["state"], "running", "{latest}");
    assert_eq!(latest["partitions"].as_array().unwrap().len(), 8, "{latest}");

    // Stopped, the stream goes on; started again, each plugin resumes from its
    // checkpoint: none starts at the end again, none repeats.
    daemon.stop();
    let later: Vec<Json> = (6..9).map(|i| hello(i, &format!("later{i}"))).collect();
    publish_direct(&nats.url, &later);
    let files = [
        ("first", guests::HELLO, ALL),
        (
            "history",
            guests::HELLO,
            "start-from = \"earliest\"\n[matcher]\nall = true\n",
        ),
        ("latest", guests::HELLO, ALL),
    ];
    let daemon = Daemon::start(&nats, "s0", &files);
    for name in ["first", "history", "latest"] {
        eventually(&format!("{name} to read what came while stopped"), BOUND, || {
            daemon.processed(name) == 3
        });
    }
    eventually("every greeting in the output stream", BOUND, || {
        stream_messages(&nats.url, "CORRAL_OUT") >= 22
    });
    let out = greeted(&nats.url, 30);
    let counts: BTreeMap<&str, usize> = out.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
    assert_eq!(
        counts,
        BTreeMap::from([("first", 9), ("history", 9), ("latest", 4)]),
        "{out:?}"
    );
}

#[test]
fn a_terminated_plugins_messages_wait_for_its_replacement_and_are_not_acked() {
    let Some(nats) = nats() else { return };
    let files = [
        ("probe", guests::BATCH_PROBE, ALL),
        ("tally", guests::DURABLE_TALLY, ALL),
    ];
    let daemon = Daemon::start(&nats, "t0", &files);
    eventually_or(
        "the daemon to start every partition",
        BOUND,
        || in_every_partition(&daemon, "probe"),
        || daemon.log(),
    );
    let partition = corral_daemon::cluster::partition_of_key("x", PARTITIONS);
    let one = |type_: &str, payload: &str| json!({"type": type_, "payload": payload, "fields": {"k": "x"}});
    daemon.post(&one("fatal", "stop").to_string());
    eventually("the plugin terminated and waiting", BOUND, || {
        let probe = daemon.plugin("probe");
        probe["state"] == "terminated" && probe["reader"]["waiting"] == true
    });
    daemon.post(&Json::Array(vec![one("ok", "a"), one("ok", "b")]).to_string());
    // The partition goes on for the other plugin, and checkpoints past the messages…
    eventually("tally to count all three", BOUND, || {
        daemon.processed("tally") == 3
    });
    eventually("a checkpoint after them", BOUND, || {
        daemon.status()["owned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["partition"] == partition && p["checkpointed"].as_u64() == Some(3))
    });
    // …but the consumer is not acked past the terminated plugin's cursor (it took the
    // message that terminated it, the first).
    assert!(
        ack_floor(&nats.url, partition) <= 1,
        "acked to {} past the terminated plugin's checkpoint",
        ack_floor(&nats.url, partition)
    );
    // The same file again brings it back: the replacement resumes from the cursor.
    std::fs::copy(guests::BATCH_PROBE, daemon.plugins().join("probe.wasm")).unwrap();
    eventually_or(
        "the waiting messages processed",
        BOUND,
        || {
            let seen: Vec<Json> = outputs(&nats.url, "CORRAL_OUT", 6)
                .into_iter()
                .filter(|m| m["type"] == "probe.seen")
                .map(|m| m["payload"].clone())
                .collect();
            seen == [json!("a"), json!("b")]
        },
        || daemon.log(),
    );
    eventually("the consumer acked past them", BOUND, || {
        ack_floor(&nats.url, partition) >= 3
    });
    let probe = daemon.plugin("probe");
    assert_eq!(probe["state"], "running", "{probe}");
    assert_eq!(probe["reader"]["waiting"], false, "{probe}");
    let reports = outputs(&nats.url, "CORRAL_OUT", 6)
        .into_iter()
        .filter(|m| m["type"] == "corral.plugin-terminated")
        .count();
    assert_eq!(reports, 1, "the termination reported once");
}

/// Each daemon's (acquired, released, lost).
fn moves(daemons: &[&Daemon]) -> Vec<(u64, u64, u64)> {
    daemons
        .iter()
        .map(|d| (d.counter("acquired"), d.counter("released"), d.counter("lost")))
        .collect()
}

/// Waits until every daemon has renewed its leases for `rounds` more lease rounds,
/// then returns the moves: what a settled cluster keeps.
fn after_rounds(daemons: &[&Daemon], rounds: u64) -> Vec<(u64, u64, u64)> {
    let start: Vec<(u64, u64)> = daemons
        .iter()
        .map(|d| (d.counter("renewals"), d.ready().len() as u64))
        .collect();
    eventually("lease rounds to pass", BOUND, || {
        daemons
            .iter()
            .zip(&start)
            .all(|(d, (renewals, owned))| d.counter("renewals") >= renewals + rounds * owned.max(&1))
    });
    moves(daemons)
}

#[test]
fn a_daemon_joining_moves_each_partition_once_and_the_shares_settle() {
    let Some(nats) = nats() else { return };
    let files = [("tally", guests::DURABLE_TALLY, ALL)];
    let d0 = Daemon::start(&nats, "r0", &files);
    eventually("r0 to own every partition", BOUND, || d0.ready().len() == 8);
    assert_eq!(moves(&[&d0]), [(8, 0, 0)]);

    // A second: 8 - ceil(8 / 2) = 4 partitions must move, and no more do.
    let d1 = Daemon::start(&nats, "r1", &files);
    eventually_or(
        "the shares to settle at 4 and 4",
        BOUND,
        || d0.ready().len() == 4 && d1.ready().len() == 4,
        || format!("{}\n{}", d0.log(), d1.log()),
    );
    let settled = moves(&[&d0, &d1]);
    assert_eq!(settled, [(8, 4, 0), (4, 0, 0)], "(acquired, released, lost)");
    assert_eq!(after_rounds(&[&d0, &d1], 3), settled, "ownership kept changing");

    // A third: 3, 3 and 2; the two held ceil(8 / 3) + 1 each, so one moves from each.
    let d2 = Daemon::start(&nats, "r2", &files);
    eventually_or(
        "the shares to settle at 3, 3 and 2",
        BOUND,
        || {
            let mut owned = [d0.ready().len(), d1.ready().len(), d2.ready().len()];
            owned.sort_unstable();
            owned == [2, 3, 3]
        },
        || format!("{}\n{}\n{}", d0.log(), d1.log(), d2.log()),
    );
    let settled = moves(&[&d0, &d1, &d2]);
    let acquired: u64 = settled.iter().map(|m| m.0).sum();
    assert_eq!(
        acquired,
        8 + 4 + 2,
        "ownership changes beyond the partitions moved to reach fair share: {settled:?}"
    );
    assert_eq!(settled[2], (2, 0, 0), "{settled:?}");
    assert!(settled.iter().all(|m| m.2 == 0), "a lease was lost: {settled:?}");
    assert_eq!(
        after_rounds(&[&d0, &d1, &d2], 3),
        settled,
        "ownership kept changing"
    );
}
