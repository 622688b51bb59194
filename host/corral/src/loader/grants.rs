//! Directory grants a plugin may not have: what would hand it the host.
//!
//! A grant of `/` gives a plugin every file the host can reach; a grant of the watch
//! directory (`host = "."` in a sidecar) lets it rewrite its own `.wasm` and sidecar,
//! and so its own limits and grants; a grant of the data directory or the compile cache
//! reaches native code the host runs (cache entries) and every plugin's store. So a
//! grant that *covers* one of these — the granted directory is it, or above it — is
//! refused with [`LoadError::BroadGrant`] unless the operator allowed broad grants
//! (`--allow-broad-grants`, [`crate::HostBuilder::allow_broad_grants`]). A grant inside
//! the compile cache or the data directory is refused too (it reaches the same files);
//! one inside the watch directory is not (a plugin's data directory beside it is the
//! usual layout, and the watcher does not look into subdirectories).
//!
//! Paths are compared after canonicalisation, so `..`, `.` and symlinks cannot hide
//! what a grant reaches; a protected directory that does not exist yet (the cache
//! before its first entry) is compared through its deepest existing ancestor. Inside a
//! granted directory, WASI (cap-std) never follows a symlink out of it.
//!
//! Every grant is logged at load with the plugin, both paths and the access.

use std::path::{Component, Path, PathBuf};

use super::LoadError;
use crate::sandbox::DirGrant;

/// What a protected directory is, for the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protected {
    /// The compile cache: native code the host runs.
    Cache,
    /// The watch directory: plugins' code and sidecars.
    Watch,
    /// A directory the embedder protected (the daemon's data directory).
    Host,
}

/// The directories no grant may cover, and whether broad grants are allowed anyway.
#[derive(Debug)]
pub(crate) struct GrantPolicy {
    protected: std::sync::RwLock<Vec<(PathBuf, Protected)>>,
    allow: bool,
}

impl GrantPolicy {
    pub fn new(host_dirs: Vec<PathBuf>, cache: Option<PathBuf>, allow: bool) -> GrantPolicy {
        let mut protected: Vec<_> = host_dirs.into_iter().map(|d| (d, Protected::Host)).collect();
        protected.extend(cache.map(|d| (d, Protected::Cache)));
        GrantPolicy {
            protected: std::sync::RwLock::new(protected),
            allow,
        }
    }

    /// Protects one more directory (the watcher protects its own).
    pub fn protect(&self, dir: &Path, kind: Protected) {
        let mut protected = self
            .protected
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !protected.iter().any(|(d, k)| d == dir && *k == kind) {
            protected.push((dir.to_owned(), kind));
        }
    }

    /// Refuses a grant that covers a protected directory (unless allowed), and logs
    /// every grant.
    pub fn check(&self, plugin: &str, grants: &[DirGrant]) -> Result<(), LoadError> {
        for grant in grants {
            if let Some(covers) = self.covers(&grant.host) {
                if !self.allow {
                    tracing::warn!(plugin = %plugin, host = %grant.host.display(), "directory grant refused: {covers}");
                    return Err(LoadError::BroadGrant {
                        plugin: plugin.to_owned(),
                        host: grant.host.clone(),
                        covers,
                    });
                }
                tracing::warn!(
                    plugin = %plugin,
                    host = %grant.host.display(),
                    "broad directory grant allowed (--allow-broad-grants): {covers}"
                );
            }
            let access = if grant.writable { "writable" } else { "read-only" };
            tracing::info!(
                plugin = %plugin,
                host = %grant.host.display(),
                guest = %grant.guest,
                access = %access,
                "directory granted"
            );
        }
        Ok(())
    }

    /// What `host` covers that it must not, in words.
    fn covers(&self, host: &Path) -> Option<String> {
        let granted = resolve(host);
        if granted.parent().is_none() {
            return Some("it is `/`, every file the host can reach".into());
        }
        let protected = self
            .protected
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (dir, kind) in protected.iter() {
            let dir_resolved = resolve(dir);
            let above = dir_resolved.starts_with(&granted);
            let inside = granted.starts_with(&dir_resolved);
            let shown = dir_resolved.display();
            let what = match kind {
                Protected::Watch if above => format!(
                    "it covers the watch directory `{shown}`, so the plugin could rewrite its own \
                     code and sidecar"
                ),
                Protected::Cache if above || inside => {
                    format!("it covers the compile cache `{shown}`, native code the host runs")
                }
                Protected::Host if above || inside => {
                    format!("it covers `{shown}`, the host's own data (the store and the compile cache)")
                }
                _ => continue,
            };
            return Some(what);
        }
        None
    }
}

/// `path` made absolute and canonical: symlinks resolved through its deepest existing
/// ancestor, `.` and `..` removed from the rest.
fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    if let Ok(canonical) = absolute.canonicalize() {
        return canonical;
    }
    // Walk up to what exists, then add the rest lexically.
    let mut rest = Vec::new();
    let mut base = absolute.as_path();
    let canonical_base = loop {
        if let Ok(c) = base.canonicalize() {
            break c;
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => break PathBuf::from("/"),
        }
    };
    let mut out = canonical_base;
    for part in rest.iter().rev() {
        for c in Path::new(part).components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(host: &Path) -> DirGrant {
        DirGrant {
            host: host.to_owned(),
            guest: "/data".into(),
            writable: true,
        }
    }

    #[test]
    fn grants_that_cover_protected_directories_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let (watch, data) = (root.join("plugins"), root.join("data"));
        std::fs::create_dir_all(watch.join("own-data")).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&watch, root.join("link")).unwrap();
        let cache = data.join("cache");
        let policy = GrantPolicy::new(vec![data.clone()], Some(cache.clone()), false);
        policy.protect(&watch, Protected::Watch);
        let refused = |p: &Path| matches!(policy.check("p", &[grant(p)]), Err(LoadError::BroadGrant { .. }));
        for bad in [
            PathBuf::from("/"),
            root.clone(),
            watch.clone(),
            watch.join("own-data/.."),
            root.join("link"),
            data.clone(),
            cache.join("wasmtime-x"),
            cache.clone(),
        ] {
            assert!(refused(&bad), "{}", bad.display());
        }
        for good in [watch.join("own-data"), root.join("link/own-data")] {
            assert!(!refused(&good), "{}", good.display());
        }
        let allowed = GrantPolicy::new(vec![data], Some(cache), true);
        assert!(allowed.check("p", &[grant(Path::new("/"))]).is_ok());
    }
}
