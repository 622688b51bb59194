//! Cluster-wide deploys and `corral status --nats`.
//!
//! `corral deploy FILE.wasm [--sidecar NAME.toml]` puts the sidecar and then the
//! component into the object store `<stream>_plugins` under `NAME.toml` and
//! `NAME.wasm`. Every daemon lists the store about every second and copies what changed
//! into its watch directory (a hidden temporary file renamed into place, the sidecar
//! first), where the watch directory's checks apply as for a file dropped by hand: a
//! component that does not load is refused and the version serving goes on serving, on
//! every daemon.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::lease::Heartbeat;
use super::{ClusterConfig, Shared, now_ms};

/// Copies into the watch directory every deployed object whose digest changed since
/// `seen`; sidecars before components.
async fn sync(shared: &Shared, seen: &mut HashMap<String, String>) {
    let Ok(mut list) = shared.plugins.list().await else {
        return;
    };
    let mut changed = Vec::new();
    while let Some(Ok(info)) = list.next().await {
        if info.deleted {
            continue;
        }
        let digest = info.digest.clone().unwrap_or_else(|| info.nuid.clone());
        if seen.get(&info.name) != Some(&digest) {
            changed.push((info.name.clone(), digest));
        }
    }
    changed.sort_by_key(|(name, _)| !name.ends_with(".toml"));
    for (name, digest) in changed {
        let valid = Path::new(&name)
            .extension()
            .is_some_and(|e| e == "wasm" || e == "toml")
            && !name.starts_with('.')
            && !name.contains('/');
        if !valid {
            seen.insert(name, digest);
            continue;
        }
        let mut data = Vec::new();
        let read = match shared.plugins.get(&name).await {
            Ok(mut object) => tokio::io::AsyncReadExt::read_to_end(&mut object, &mut data)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = read {
            tracing::warn!(object = %name, "cannot read a deployed object: {e}");
            continue;
        }
        let dir = &shared.daemon.dir;
        let part = dir.join(format!(".{name}.corral-deploy"));
        let result = std::fs::write(&part, &data).and_then(|()| std::fs::rename(&part, dir.join(&name)));
        match result {
            Ok(()) => {
                tracing::info!(object = %name, bytes = data.len(), "deployed object copied into the watch directory");
                seen.insert(name, digest);
            }
            Err(e) => {
                tracing::error!(object = %name, "cannot write a deployed object into the watch directory: {e}")
            }
        }
    }
}

/// One pass at start, so partitions start with what was deployed.
pub(crate) async fn sync_deployed(shared: &Shared) {
    let mut seen = HashMap::new();
    sync(shared, &mut seen).await;
    *crate::lock(&shared.deployed) = seen;
}

/// Follows the object store until the daemon closes.
pub(crate) async fn follow_deployed(shared: std::sync::Arc<Shared>) {
    let mut seen = crate::lock(&shared.deployed).clone();
    while !shared.closing.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sync(&shared, &mut seen).await;
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `corral deploy`: puts `file` (and its sidecar) into the cluster's object store.
///
/// # Errors
///
/// When a file cannot be read or the cluster not reached.
pub fn deploy(config: &ClusterConfig, file: &Path, sidecar: Option<&Path>) -> anyhow::Result<String> {
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|_| file.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| anyhow::anyhow!("`{}` is not a NAME.wasm file", file.display()))?
        .to_owned();
    corral::validate_name(&name).map_err(|e| anyhow::anyhow!("`{}`: {e}", file.display()))?;
    let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", file.display()))?;
    let toml = sidecar
        .map(|s| std::fs::read(s).map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", s.display())))
        .transpose()?;
    runtime()?.block_on(async {
        let handles = super::open(config).await.map_err(anyhow::Error::msg)?;
        if let Some(toml) = toml {
            handles
                .plugins
                .put(format!("{name}.toml").as_str(), &mut toml.as_slice())
                .await
                .map_err(|e| anyhow::anyhow!("cannot put the sidecar: {e}"))?;
        }
        handles
            .plugins
            .put(format!("{name}.wasm").as_str(), &mut bytes.as_slice())
            .await
            .map_err(|e| anyhow::anyhow!("cannot put the component: {e}"))?;
        anyhow::Ok(())
    })?;
    Ok(format!(
        "deployed `{name}` (version {}) to the cluster of stream {}",
        corral::content_version(&bytes),
        config.stream
    ))
}

/// `corral status --nats`: the live daemons' heartbeats.
///
/// # Errors
///
/// When the cluster cannot be reached.
pub fn status(config: &ClusterConfig) -> anyhow::Result<Vec<Heartbeat>> {
    runtime()?.block_on(async {
        let handles = super::open(config).await.map_err(anyhow::Error::msg)?;
        let ttl = config.lease_ttl.as_millis() as u64;
        let now = now_ms();
        let mut beats: Vec<Heartbeat> = super::lease::heartbeats(&handles.daemons)
            .await
            .into_iter()
            .filter(|b| b.beat_ms + ttl > now)
            .collect();
        beats.sort_by(|a, b| a.id.cmp(&b.id));
        anyhow::Ok(beats)
    })
}

/// The status as text, one block per daemon.
pub fn status_text(beats: &[Heartbeat]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if beats.is_empty() {
        out.push_str("no live daemons\n");
    }
    for b in beats {
        let _ = writeln!(
            out,
            "{}  admin {}  partitions {:?}  lag {}  renewals {}  takeovers {}  published {}  duplicates dropped {}",
            b.id, b.admin, b.partitions, b.lag, b.renewals, b.takeovers, b.published, b.duplicates
        );
        for (name, info) in &b.plugins {
            let _ = writeln!(
                out,
                "  {name}  {}{}",
                info.version.as_deref().unwrap_or("(not loaded)"),
                info.load_error
                    .as_deref()
                    .map(|e| format!("  last load failed: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    out
}
