//! `corral run DIR --nats URL`: daemons sharing a NATS JetStream stream by partition
//! (docs/cluster.md). The second backend of the log, cursor and checkpoint contract of
//! `pipeline` (docs/delivery.md):
//!
//! - **Intake.** `POST /messages` and stdin publish each message's JSON to
//!   `<subject-prefix>.<partition>` of the input stream; the partition is a hash of the
//!   message's `--partition-key` field (its type when the field is absent or not set).
//! - **Partitions and leases** (`lease`). Each partition is owned by one daemon at a
//!   time through a lease in the KV bucket `<stream>_leases`, renewed by compare-and-swap
//!   on its revision; daemons announce themselves in `<stream>_daemons` with a heartbeat
//!   and take unowned or expired partitions up to a fair share.
//! - **Checkpoints** (`partition`). Each owned partition has its own sandbox instance of
//!   every plugin (its own `Host` and `Registry` over the watch directory), read from a
//!   durable consumer. About every checkpoint interval the partition's checkpoint — the
//!   stream sequence and, per plugin, its saved state, its store and its emit counters —
//!   is committed to `<stream>_checkpoints` by compare-and-swap (a large one goes to the
//!   object store `<stream>_state`), and only then is the consumer acked up to it.
//! - **Outputs.** Emitted messages go to `<output-prefix>.<plugin>` of the stream
//!   `<stream>_OUT` with `Nats-Msg-Id` set to their `corral.id`, so the stream's
//!   duplicate window drops what a takeover emits again; every publish is acked by the
//!   stream before the checkpoint that covers it.
//! - **Deploy** (`ops`). `corral deploy` puts a component into the object store
//!   `<stream>_plugins`; every daemon copies what changes there into its watch directory,
//!   where the watch directory's checks apply.

mod http;
mod lease;
pub mod ops;
mod partition;

pub use lease::{Heartbeat, PluginInfo};
pub use partition::{INLINE_MAX, PARTITION_FIELD};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

use crate::daemon::{DaemonConfig, DaemonError};
use corral::{Message, Value};

/// How a daemon joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The input stream's name; the buckets and the output stream are named after it.
    pub stream: String,
    /// Input subjects are `<subject_prefix>.<partition>`.
    pub subject_prefix: String,
    /// Emitted messages go to `<output_prefix>.<plugin>`.
    pub output_prefix: String,
    /// How many partitions; every daemon of a cluster must agree.
    pub partitions: u32,
    /// The field whose value picks a message's partition; its type when absent.
    pub partition_key: Option<String>,
    /// How long a lease and a heartbeat last without renewal.
    pub lease_ttl: Duration,
    /// This daemon's name in the cluster.
    pub id: String,
}

impl ClusterConfig {
    /// The default stream.
    pub const DEFAULT_STREAM: &str = "CORRAL";
    /// The default input subject prefix.
    pub const DEFAULT_SUBJECT_PREFIX: &str = "corral.in";
    /// The default output subject prefix.
    pub const DEFAULT_OUTPUT_PREFIX: &str = "corral.out";
    /// The default number of partitions.
    pub const DEFAULT_PARTITIONS: u32 = 8;
    /// The default lease time.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

    /// A default daemon id: the host name and the process id.
    pub fn default_id() -> String {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "corral".to_owned());
        sanitize(&format!("{host}-{}", std::process::id()))
    }

    fn bucket(&self, what: &str) -> String {
        format!("{}_{what}", self.stream)
    }

    /// The subject a message goes to.
    pub fn subject_of(&self, message: &Message) -> String {
        format!("{}.{}", self.subject_prefix, self.partition_of(message))
    }

    /// The partition a message belongs to: FNV-1a of its key, modulo the partitions.
    pub fn partition_of(&self, message: &Message) -> u32 {
        let key = self
            .partition_key
            .as_deref()
            .and_then(|field| message.field(field))
            .map_or_else(|| message.type_.clone(), value_key);
        partition_of_key(&key, self.partitions)
    }
}

/// The partition of `key` among `partitions` (FNV-1a, 64 bits).
pub fn partition_of_key(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

fn value_key(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// A KV key or bucket name: letters, digits, `-` and `_`.
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counters of one daemon.
#[derive(Debug, Default)]
pub(crate) struct DaemonStats {
    pub renewals: AtomicU64,
    pub takeovers: AtomicU64,
    pub acquired: AtomicU64,
    pub released: AtomicU64,
    pub lost: AtomicU64,
    pub published: AtomicU64,
    pub duplicates: AtomicU64,
    pub accepted: AtomicU64,
}

/// What every part of one daemon shares.
pub(crate) struct Shared {
    pub config: ClusterConfig,
    pub daemon: DaemonConfig,
    pub js: jetstream::Context,
    pub rt: tokio::runtime::Handle,
    pub leases: kv::Store,
    pub daemons: kv::Store,
    pub checkpoints: kv::Store,
    pub state: object_store::ObjectStore,
    pub plugins: object_store::ObjectStore,
    pub stats: DaemonStats,
    pub closing: AtomicBool,
    pub partitions: lease::Partitions,
    /// The daemon's own registry (see `partition::template`).
    pub template: std::sync::Mutex<Option<corral::Registry>>,
    /// The admin API's address, once bound.
    pub admin_address: std::sync::Mutex<String>,
    /// Deployed objects copied so far: name → digest.
    pub deployed: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

/// The stream's and buckets' handles of a cluster.
pub(crate) struct Handles {
    pub js: jetstream::Context,
    pub leases: kv::Store,
    pub daemons: kv::Store,
    pub checkpoints: kv::Store,
    pub state: object_store::ObjectStore,
    pub plugins: object_store::ObjectStore,
}

pub(crate) async fn connect(url: &str) -> Result<jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .name("corral")
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to NATS at {url}: {e}"))?;
    Ok(jetstream::ContextBuilder::new()
        .max_ack_inflight(100_000)
        .timeout(Duration::from_secs(10))
        .build(client))
}

async fn key_value(js: &jetstream::Context, bucket: String) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(&bucket).await {
        return Ok(store);
    }
    // The bucket's stream as `create_key_value` would make it, without its account
    // query, whose answer nats-server 2.9 gives in a shape the client does not read.
    let created = js
        .create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    match js.get_key_value(&bucket).await {
        Ok(store) => Ok(store),
        Err(e) => Err(match created {
            Err(c) => format!("cannot create the KV bucket `{bucket}`: {c}"),
            Ok(_) => format!("cannot open the KV bucket `{bucket}`: {e}"),
        }),
    }
}

async fn objects(js: &jetstream::Context, bucket: String) -> Result<object_store::ObjectStore, String> {
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    match js
        .create_object_store(object_store::Config {
            bucket: bucket.clone(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        Err(e) => js
            .get_object_store(&bucket)
            .await
            .map_err(|_| format!("cannot create the object store `{bucket}`: {e}")),
    }
}

async fn ensure_stream(js: &jetstream::Context, name: String, subject: String) -> Result<(), String> {
    js.get_or_create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
    .map_err(|e| format!("cannot create the stream `{name}`: {e}"))
}

/// Connects and makes sure the streams and buckets of `config` exist.
pub(crate) async fn open(config: &ClusterConfig) -> Result<Handles, String> {
    let js = connect(&config.url).await?;
    ensure_stream(&js, config.stream.clone(), format!("{}.>", config.subject_prefix)).await?;
    ensure_stream(&js, config.bucket("OUT"), format!("{}.>", config.output_prefix)).await?;
    Ok(Handles {
        leases: key_value(&js, config.bucket("leases")).await?,
        daemons: key_value(&js, config.bucket("daemons")).await?,
        checkpoints: key_value(&js, config.bucket("checkpoints")).await?,
        state: objects(&js, config.bucket("state")).await?,
        plugins: objects(&js, config.bucket("plugins")).await?,
        js,
    })
}

/// Runs a cluster daemon until SIGINT or SIGTERM.
///
/// # Errors
///
/// [`DaemonError`] when it cannot start: NATS unreachable, a cluster with another number
/// of partitions, an admin address in use or not loopback without a token.
pub fn run(daemon: DaemonConfig, config: ClusterConfig) -> Result<(), DaemonError> {
    let fail = |e: String| DaemonError::new(e);
    if !daemon.admin.ip().is_loopback() && daemon.token.is_none() {
        return Err(fail(format!(
            "refusing to serve the admin API on {} without a token: pass --token TOKEN, or \
             bind to 127.0.0.1",
            daemon.admin
        )));
    }
    if config.partitions == 0 {
        return Err(fail("--partitions must be at least 1".into()));
    }
    std::fs::create_dir_all(&daemon.data_dir)
        .map_err(|e| fail(format!("cannot create `{}`: {e}", daemon.data_dir.display())))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let handles = runtime.block_on(open(&config)).map_err(fail)?;
    runtime
        .block_on(lease::check_partitions(&handles.daemons, config.partitions))
        .map_err(fail)?;
    let shared = Arc::new(Shared {
        js: handles.js,
        rt: runtime.handle().clone(),
        leases: handles.leases,
        daemons: handles.daemons,
        checkpoints: handles.checkpoints,
        state: handles.state,
        plugins: handles.plugins,
        stats: DaemonStats::default(),
        closing: AtomicBool::new(false),
        partitions: lease::Partitions::default(),
        template: std::sync::Mutex::default(),
        admin_address: std::sync::Mutex::default(),
        deployed: std::sync::Mutex::default(),
        config,
        daemon,
    });
    // Deployed components first, so partitions start with them.
    runtime.block_on(ops::sync_deployed(&shared));
    let template = partition::template(&shared).map_err(fail)?;
    *crate::lock(&shared.template) = Some(template.0.clone());
    tracing::info!(
        id = %shared.config.id,
        stream = %shared.config.stream,
        partitions = shared.config.partitions,
        plugins = template.0.names().len(),
        "joining the cluster"
    );
    runtime.spawn(ops::follow_deployed(shared.clone()));
    let manager = runtime.spawn(lease::manage(shared.clone()));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(shared.daemon.admin)
            .await
            .map_err(|e| {
                fail(format!(
                    "cannot serve the admin API on {}: {e}",
                    shared.daemon.admin
                ))
            })?;
        let address = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        tracing::info!("admin API listening on http://{address}");
        *crate::lock(&shared.admin_address) = format!("http://{address}");
        if shared.daemon.stdin {
            http::read_stdin(shared.clone());
        }
        axum::serve(
            listener,
            http::router(shared.clone(), template.0.clone(), template.1.clone()),
        )
        .with_graceful_shutdown(crate::daemon::shutdown_signal())
        .await
        .map_err(|e| fail(format!("admin API failed: {e}")))
    })?;
    tracing::info!("shutting down: checkpointing and releasing every partition");
    shared.closing.store(true, Ordering::SeqCst);
    manager.abort();
    let releasing = shared.clone();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        lease::release_all(&releasing);
        let _ = done.send(());
    });
    if finished.recv_timeout(shared.daemon.shutdown_timeout).is_err() {
        tracing::warn!("stopped, abandoning what did not finish in time; the leases expire");
    }
    runtime.block_on(async {
        let _ = shared.daemons.delete(lease::daemon_key(&shared.config.id)).await;
    });
    drop(template);
    runtime.shutdown_timeout(Duration::from_millis(200));
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_keys_and_are_stable() {
        let counts = (0..8000).fold([0u32; 8], |mut counts, i| {
            counts[partition_of_key(&format!("key-{i}"), 8) as usize] += 1;
            counts
        });
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of_key("a", 8), partition_of_key("a", 8));
        let config = ClusterConfig {
            url: String::new(),
            stream: "S".into(),
            subject_prefix: "in".into(),
            output_prefix: "out".into(),
            partitions: 8,
            partition_key: Some("k".into()),
            lease_ttl: Duration::from_secs(1),
            id: "d".into(),
        };
        let keyed = Message::new("t").with_field("k", Value::String("a".into()));
        assert_eq!(config.partition_of(&keyed), partition_of_key("a", 8));
        assert_eq!(config.partition_of(&Message::new("t")), partition_of_key("t", 8));
        assert_eq!(sanitize("a.b/c"), "a-b-c");
    }
}
