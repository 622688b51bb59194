//! The watch directory: `name.wasm` files appear, change and go away, and the registry
//! follows — with no restart and no lost call.
//!
//! inotify reports a write as it happens: `cp` over a file fires several modify events
//! (reacting to the first would load half a file), write-then-rename fires renames with
//! no remove, and a move from another directory fires only the arrival. So events are
//! debounced (a burst of writes becomes one reload of the final content), reduced to the
//! names they touch, and each name is then *synced*: the directory is looked at as it is
//! now and the registry made to match it. A file still growing when looked at is left
//! for its next event; one that does not compile or fit the world never replaces the
//! serving version (see [`crate::Registry::install`]), and content identical to what is
//! serving is not reloaded. Changing the sidecar `name.toml` reloads the plugin with
//! the new settings; a bad sidecar keeps the old settings and reports the line and key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::error::LoadError;
use crate::host::validate_name;
use crate::registry::Registry;
use crate::sidecar::Sidecar;

/// How long a file must be quiet before it is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// The directory could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch `{}`: {reason}", dir.display())]
pub struct WatchError {
    dir: PathBuf,
    reason: String,
}

/// Keeps a registry in step with a directory until dropped.
pub struct Watcher {
    dir: PathBuf,
    registry: Registry,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// The directory watched (canonicalised).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks at the whole directory again and makes the registry match it, as if every
    /// file had just changed (the admin API's reload). Returns when done.
    pub fn rescan(&self) {
        sync_dir(&self.registry, &self.dir);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Stopping the debouncer drops its event sender, which ends the worker's loop.
        if let Some(debouncer) = self.debouncer.take() {
            debouncer.stop();
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Registry {
    /// Loads every plugin in `dir`, then keeps the registry in step with it: new files
    /// are loaded, changed files swapped in, removed files unloaded. Returns once the
    /// initial load is done; the watching goes on until the [`Watcher`] is dropped.
    ///
    /// # Errors
    ///
    /// [`WatchError`] when `dir` does not exist or cannot be watched.
    pub fn watch(&self, dir: impl AsRef<Path>) -> Result<Watcher, WatchError> {
        self.watch_with_debounce(dir, DEBOUNCE)
    }

    /// As [`Registry::watch`], with another quiet period than [`DEBOUNCE`]: writes to
    /// one file closer together than `debounce` reload it once. Longer suits writers
    /// that pause mid-file; writing to a temporary name and renaming into place needs
    /// none.
    ///
    /// # Errors
    ///
    /// As [`Registry::watch`].
    pub fn watch_with_debounce(
        &self,
        dir: impl AsRef<Path>,
        debounce: Duration,
    ) -> Result<Watcher, WatchError> {
        let fail = |reason: String| WatchError {
            dir: dir.as_ref().to_owned(),
            reason,
        };
        let dir = dir.as_ref().canonicalize().map_err(|e| fail(e.to_string()))?;
        if !dir.is_dir() {
            return Err(fail("not a directory".into()));
        }
        let (tx, rx) = channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(debounce, None, tx).map_err(|e| fail(e.to_string()))?;
        // Watch before the first scan, so nothing written in between is missed.
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| fail(e.to_string()))?;
        sync_dir(self, &dir);

        let (registry, watched) = (self.clone(), dir.clone());
        let worker = std::thread::Builder::new()
            .name("corral-watch".into())
            .spawn(move || {
                for result in rx {
                    match result {
                        Ok(events) => {
                            // Reading a file (as sync does) fires access events: they
                            // change nothing, and following them would loop.
                            let names: BTreeSet<String> = events
                                .iter()
                                .filter(|e| !matches!(e.kind, EventKind::Access(_)))
                                .flat_map(|e| e.paths.iter())
                                .filter_map(|p| plugin_name(&watched, p))
                                .collect();
                            for name in names {
                                sync(&registry, &watched, &name);
                            }
                        }
                        Err(errors) => {
                            for e in errors {
                                tracing::warn!(dir = %watched.display(), "watch error: {e}");
                            }
                            // Events may have been lost: look at everything again.
                            sync_dir(&registry, &watched);
                        }
                    }
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(Watcher {
            dir,
            registry: self.clone(),
            debouncer: Some(debouncer),
            worker: Some(worker),
        })
    }
}

/// The plugin a path in the watched directory belongs to: `x` for `x.wasm` and
/// `x.toml`; nothing for other files or other directories.
fn plugin_name(dir: &Path, path: &Path) -> Option<String> {
    if path.parent()? != dir {
        return None;
    }
    let extension = path.extension()?.to_str()?;
    if extension != "wasm" && extension != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    // Editors' and copiers' temporary files (`.x.wasm.swp`, `.x.wasm`) are not plugins.
    (!stem.starts_with('.')).then(|| stem.to_owned())
}

/// Syncs every name that has a file in `dir` or was loaded from it.
fn sync_dir(registry: &Registry, dir: &Path) {
    let mut names: BTreeSet<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| plugin_name(dir, &e.ok()?.path()))
            .collect(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list the watch directory: {e}");
            BTreeSet::new()
        }
    };
    names.extend(
        registry
            .statuses()
            .into_iter()
            .filter(|s| s.path.as_ref().and_then(|p| p.parent()) == Some(dir))
            .map(|s| s.name),
    );
    for name in names {
        sync(registry, dir, &name);
    }
}

/// Makes the registry's `name` match `dir/name.wasm` and `dir/name.toml` as they are now.
fn sync(registry: &Registry, dir: &Path, name: &str) {
    let wasm = dir.join(format!("{name}.wasm"));
    let metadata = match std::fs::metadata(&wasm) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Gone (or only a sidecar is left): unload what this file had loaded.
            if registry.path_of(name).as_deref() == Some(wasm.as_path()) {
                registry.unload(name);
            }
            return;
        }
        Err(source) => return registry.fail(name, &LoadError::Read { path: wasm, source }),
    };
    if let Err(error) = validate_name(name) {
        return registry.fail(name, &error);
    }
    if metadata.is_dir() {
        let source = std::io::Error::other("it is a directory, not a file");
        return registry.fail(name, &LoadError::Read { path: wasm, source });
    }
    let bytes = match std::fs::read(&wasm) {
        Ok(bytes) => bytes,
        Err(source) => return registry.fail(name, &LoadError::Read { path: wasm, source }),
    };
    // Still being written: its next write brings another event.
    if std::fs::metadata(&wasm).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
        tracing::debug!(plugin = name, "file still changing, waiting for its next event");
        return;
    }
    let sidecar = match Sidecar::load(&dir.join(format!("{name}.toml"))) {
        Ok(sidecar) => sidecar.unwrap_or_default(),
        Err(error) => return registry.fail(name, &error),
    };
    // Errors are recorded and sent as events by the registry.
    let _ = registry.install_from(name, &bytes, sidecar, Some(wasm));
}

#[cfg(test)]
mod tests {
    use super::plugin_name;
    use std::path::Path;

    #[test]
    fn only_plugin_files_of_the_directory_count() {
        let dir = Path::new("/plugins");
        assert_eq!(
            plugin_name(dir, Path::new("/plugins/cpu.wasm")).as_deref(),
            Some("cpu")
        );
        assert_eq!(
            plugin_name(dir, Path::new("/plugins/cpu.toml")).as_deref(),
            Some("cpu")
        );
        for other in [
            "/plugins/cpu.wasm.tmp",
            "/plugins/.cpu.wasm",
            "/plugins/sub/cpu.wasm",
            "/elsewhere/cpu.wasm",
        ] {
            assert_eq!(plugin_name(dir, Path::new(other)), None, "{other}");
        }
    }
}
