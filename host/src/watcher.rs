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
use std::io::Read;
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
    spot: Spot,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    worker: Option<JoinHandle<()>>,
}

/// A watched directory, its registry and its options: what a sync needs.
#[derive(Clone)]
struct Spot {
    registry: Registry,
    dir: PathBuf,
    options: WatchOptions,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("dir", &self.spot.dir)
            .field("options", &self.spot.options)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// The directory watched (canonicalised).
    pub fn dir(&self) -> &Path {
        &self.spot.dir
    }

    /// Looks at the whole directory again and makes the registry match it, as if every
    /// file had just changed (the admin API's reload). Returns when done.
    pub fn rescan(&self) {
        self.spot.sync_dir();
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

/// How a directory is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Writes to one file closer together than this reload it once (default
    /// [`DEBOUNCE`]). Longer suits writers that pause mid-file; writing to a temporary
    /// name and renaming into place needs none.
    pub debounce: Duration,
    /// The largest `.wasm` file loaded (default [`WatchOptions::DEFAULT_MAX_FILE_BYTES`]);
    /// a larger one fails to load with its size in the error.
    pub max_file_bytes: u64,
    /// Whether a `.wasm` or sidecar may be a symlink to a file outside the directory
    /// (default: no; links within the directory are always followed).
    pub allow_symlinks_outside: bool,
}

impl WatchOptions {
    /// The default largest plugin file: 64 MiB (interpreted-language guests are tens of
    /// MB).
    pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;
    /// The largest sidecar read.
    pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            debounce: DEBOUNCE,
            max_file_bytes: WatchOptions::DEFAULT_MAX_FILE_BYTES,
            allow_symlinks_outside: false,
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
        self.watch_with(dir, WatchOptions::default())
    }

    /// As [`Registry::watch`], with other [`WatchOptions`].
    ///
    /// # Errors
    ///
    /// As [`Registry::watch`].
    pub fn watch_with(&self, dir: impl AsRef<Path>, options: WatchOptions) -> Result<Watcher, WatchError> {
        let fail = |reason: String| WatchError {
            dir: dir.as_ref().to_owned(),
            reason,
        };
        let dir = dir.as_ref().canonicalize().map_err(|e| fail(e.to_string()))?;
        if !dir.is_dir() {
            return Err(fail("not a directory".into()));
        }
        let (tx, rx) = channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(options.debounce, None, tx).map_err(|e| fail(e.to_string()))?;
        // Watch before the first scan, so nothing written in between is missed.
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| fail(e.to_string()))?;
        let spot = Spot {
            registry: self.clone(),
            dir: dir.clone(),
            options,
        };
        spot.sync_dir();

        let watched = spot.clone();
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
                                .filter_map(|p| plugin_name(&watched.dir, p))
                                .collect();
                            for name in names {
                                watched.sync(&name);
                            }
                        }
                        Err(errors) => {
                            for e in errors {
                                tracing::warn!(dir = %watched.dir.display(), "watch error: {e}");
                            }
                            // Events may have been lost: look at everything again.
                            watched.sync_dir();
                        }
                    }
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(Watcher {
            spot,
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

impl Spot {
    /// Syncs every name that has a file in the directory or was loaded from it.
    fn sync_dir(&self) {
        let dir = &self.dir;
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
            self.registry
                .statuses()
                .into_iter()
                .filter(|s| s.path.as_ref().and_then(|p| p.parent()) == Some(dir.as_path()))
                .map(|s| s.name),
        );
        for name in names {
            self.sync(&name);
        }
    }

    /// Makes the registry's `name` match `name.wasm` and `name.toml` as they are now.
    fn sync(&self, name: &str) {
        let registry = &self.registry;
        let wasm = self.dir.join(format!("{name}.wasm"));
        let bytes = match self.read(&wasm, self.options.max_file_bytes) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                // Gone (or only a sidecar is left): unload what this file had loaded.
                if registry.path_of(name).as_deref() == Some(wasm.as_path()) {
                    registry.unload(name);
                }
                return;
            }
            Err(error) => return registry.fail(name, &error),
        };
        if let Err(error) = validate_name(name) {
            return registry.fail(name, &error);
        }
        // Still being written: its next write brings another event.
        if std::fs::metadata(&wasm).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
            tracing::debug!(plugin = name, "file still changing, waiting for its next event");
            return;
        }
        let toml = self.dir.join(format!("{name}.toml"));
        let sidecar = match self.read(&toml, WatchOptions::MAX_SIDECAR_BYTES) {
            Ok(None) => Sidecar::default(),
            Ok(Some(bytes)) => match String::from_utf8(bytes) {
                Ok(text) => match Sidecar::parse_at(&text, &toml) {
                    Ok(sidecar) => sidecar,
                    Err(error) => return registry.fail(name, &error),
                },
                Err(_) => {
                    let reason = "the file is not UTF-8 text".to_owned();
                    return registry.fail(name, &LoadError::Sidecar { path: toml, reason });
                }
            },
            Err(error) => return registry.fail(name, &error),
        };
        // Errors are recorded and sent as events by the registry.
        let _ = registry.install_from(name, &bytes, sidecar, Some(wasm));
    }

    /// The bytes of `path` if it is a regular file of at most `max` bytes inside the
    /// directory (or a link to one, as the options allow); `None` if it does not exist.
    fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, LoadError> {
        let refuse = |why: String| LoadError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(why),
        };
        let link = match std::fs::symlink_metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LoadError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        if link.file_type().is_symlink() {
            let target = match path.canonicalize() {
                Ok(target) => target,
                // A dangling link is no file at all.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(LoadError::Read {
                        path: path.to_owned(),
                        source,
                    });
                }
            };
            if target.parent() != Some(self.dir.as_path()) && !self.options.allow_symlinks_outside {
                return Err(refuse(format!(
                    "it is a symlink to `{}`, outside the watch directory; copy the file in, \
                     or allow links outside the directory (`--allow-symlinks`)",
                    target.display()
                )));
            }
        }
        let metadata = std::fs::metadata(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        if metadata.is_dir() {
            return Err(refuse("it is a directory, not a file".into()));
        }
        if !metadata.is_file() {
            // A FIFO or a device could block the watcher forever, or never end.
            return Err(refuse("it is not a regular file".into()));
        }
        if metadata.len() > max {
            return Err(refuse(format!(
                "it is {} bytes, more than the {max} allowed",
                metadata.len()
            )));
        }
        let file = std::fs::File::open(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        // Read at most one byte more than allowed, in case it grew since.
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > max {
            return Err(refuse(format!(
                "it grew past the {max} bytes allowed while being read"
            )));
        }
        Ok(Some(bytes))
    }
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
