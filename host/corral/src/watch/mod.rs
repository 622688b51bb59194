//! The watch directory: `name.wasm` files appear, change and go away, and the registry
//! follows — with no restart and no lost call.
//!
//! inotify reports a write as it happens: `cp` over a file fires several modify events
//! (reacting to the first would load half a file), write-then-rename fires renames with
//! no remove, and a move from another directory fires only the arrival. So events are
//! debounced (a burst of writes becomes one reload of the final content) — except
//! renames, which are complete when seen and are synced at once — reduced to the
//! names they touch, and each name is then *synced*: the directory is looked at as it is
//! now and the registry made to match it. A file still growing when looked at is left
//! for its next event; one that does not compile or fit the world never replaces the
//! serving version (see [`crate::Registry::install`]), and content identical to what is
//! serving is not reloaded. Changing the sidecar `name.toml` reloads the plugin with
//! the new settings; a bad sidecar keeps the old settings and reports the line and key.
//!
//! Each name is synced on a thread of its own, one sync per name at a time (a change
//! that comes during a sync brings one more sync after it): a load whose start function
//! takes its whole deadline, or a swap waiting for the old version's call and its
//! `state.save`, holds up only its own name, never the watcher or the other plugins.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::LoadError;
use crate::loader::validate_name;
use crate::registry::Registry;
use crate::registry::{Sidecar, SidecarSections};

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
    renames: Option<notify::RecommendedWatcher>,
    debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    worker: Option<JoinHandle<()>>,
}

/// What a look at a name's files found.
enum Look {
    /// No `.wasm` file.
    Gone,
    /// A file still being written.
    Changing,
    /// A complete file and its sidecar.
    Ready(Vec<u8>, Box<Sidecar>),
}

/// What the watch thread is told.
enum Input {
    /// Events that went quiet for the debounce period.
    Debounced(DebounceEventResult),
    /// A path renamed in or out, reported at once.
    Renamed(PathBuf),
}

/// A watched directory, its registry and its options: what a sync needs.
#[derive(Clone)]
struct Spot {
    registry: Registry,
    dir: PathBuf,
    options: WatchOptions,
    /// The files each name was last synced from: a sync that finds the very same files
    /// (same inode, size and times) has nothing to do. This is what keeps the debounced
    /// echo of a rename, or a reader's access, from re-reading — and from restarting a
    /// terminated plugin that nobody re-dropped.
    seen: Arc<Mutex<HashMap<String, Identity>>>,
    /// The names being synced now, each with whether another sync was asked for
    /// meanwhile; the condvar says when one ends.
    syncing: Arc<(Mutex<HashMap<String, bool>>, Condvar)>,
    /// Set when the watcher is dropped: no sync starts after it.
    closed: Arc<AtomicBool>,
}

/// Which files a name's `.wasm` and `.toml` are, as far as metadata tells.
type Identity = (Option<FileId>, Option<FileId>);

/// A file's identity: device, inode, size, modification and change times.
type FileId = (u64, u64, u64, i64, i64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
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
    /// file had just changed (the admin API's reload). Returns when the syncs it started
    /// are done; a name whose sync was already under way (a start function taking its
    /// deadline, say) is looked at again after it, without waiting for it.
    pub fn rescan(&self) {
        // Look again even at files that have not changed: what failed for a reason
        // outside the file (a missing granted directory, say) gets another try.
        crate::lock(&self.spot.seen).clear();
        let names = self.spot.sync_dir();
        self.spot.wait_for(&names);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Syncs under way finish on their own threads; none starts after this.
        self.spot.closed.store(true, Ordering::SeqCst);
        // Dropping both watchers drops their event senders, which ends the worker's loop.
        drop(self.renames.take());
        if let Some(debouncer) = self.debouncer.take() {
            debouncer.stop();
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// How a directory is watched.
#[derive(Clone)]
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
    /// The sidecar keys beyond the library's that the plugins' runner reads (see
    /// [`SidecarSections`]); without it (the default), any other key is an error.
    pub sections: Option<Arc<dyn SidecarSections>>,
}

impl std::fmt::Debug for WatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchOptions")
            .field("debounce", &self.debounce)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("allow_symlinks_outside", &self.allow_symlinks_outside)
            .field("sections", &self.sections.as_ref().map(|s| s.keys()))
            .finish()
    }
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
            sections: None,
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
        // A plugin granted its own watch directory could rewrite its code and sidecar.
        self.host().protect_watch_dir(&dir);
        let (tx, rx) = channel::<Input>();
        let debounced = tx.clone();
        let mut debouncer = new_debouncer(options.debounce, None, move |result| {
            let _ = debounced.send(Input::Debounced(result));
        })
        .map_err(|e| fail(e.to_string()))?;
        // A rename into place is complete the moment it is seen: it need not wait for
        // quiet. (Its debounced event follows and finds the content unchanged.)
        let mut renames = notify::recommended_watcher(move |result: notify::Result<notify::Event>| {
            if let Ok(event) = result
                && matches!(event.kind, EventKind::Modify(ModifyKind::Name(_)))
            {
                for path in event.paths {
                    let _ = tx.send(Input::Renamed(path));
                }
            }
        })
        .map_err(|e| fail(e.to_string()))?;
        // Watch before the first scan, so nothing written in between is missed.
        debouncer
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| fail(e.to_string()))?;
        renames
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| fail(e.to_string()))?;
        let spot = Spot {
            registry: self.clone(),
            dir: dir.clone(),
            options,
            seen: Arc::default(),
            syncing: Arc::default(),
            closed: Arc::default(),
        };
        let names = spot.sync_dir();
        spot.wait_for(&names);

        let watched = spot.clone();
        let worker = std::thread::Builder::new()
            .name("corral-watch".into())
            .spawn(move || {
                for input in rx {
                    match input {
                        Input::Renamed(path) => {
                            if let Some(name) = plugin_name(&watched.dir, &path) {
                                let _ = watched.request(&name);
                            }
                        }
                        Input::Debounced(Ok(events)) => {
                            // Reading a file (as sync does) fires access events: they
                            // change nothing, and following them would loop.
                            let names: BTreeSet<String> = events
                                .iter()
                                .filter(|e| !matches!(e.kind, EventKind::Access(_)))
                                .flat_map(|e| e.paths.iter())
                                .filter_map(|p| plugin_name(&watched.dir, p))
                                .collect();
                            for name in names {
                                let _ = watched.request(&name);
                            }
                        }
                        Input::Debounced(Err(errors)) => {
                            for e in errors {
                                tracing::warn!(dir = %watched.dir.display(), "watch error: {e}");
                            }
                            // Events may have been lost: look at everything again.
                            let _ = watched.sync_dir();
                        }
                    }
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(Watcher {
            spot,
            renames: Some(renames),
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
    /// Syncs `name` on a thread of its own, or once more after the sync under way.
    /// True when it started a sync (none was under way).
    fn request(&self, name: &str) -> bool {
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        let (syncing, _) = &*self.syncing;
        {
            let mut syncing = crate::lock(syncing);
            if let Some(again) = syncing.get_mut(name) {
                *again = true;
                return false;
            }
            syncing.insert(name.to_owned(), false);
        }
        let spot = self.clone();
        let owned = name.to_owned();
        let spawned = std::thread::Builder::new()
            .name(format!("corral-sync-{name}"))
            .spawn(move || spot.sync_until_settled(&owned));
        if let Err(e) = spawned {
            tracing::warn!(plugin = name, "cannot start a thread to sync, syncing here: {e}");
            self.sync_until_settled(name);
        }
        true
    }

    /// Syncs `name` until no further sync was asked for meanwhile.
    fn sync_until_settled(&self, name: &str) {
        let (syncing, ended) = &*self.syncing;
        loop {
            if !self.closed.load(Ordering::SeqCst) {
                self.sync(name);
            }
            let mut syncing = crate::lock(syncing);
            match syncing.get_mut(name) {
                Some(again) if *again && !self.closed.load(Ordering::SeqCst) => *again = false,
                _ => {
                    syncing.remove(name);
                    ended.notify_all();
                    return;
                }
            }
        }
    }

    /// Waits until none of `names` is being synced.
    fn wait_for(&self, names: &BTreeSet<String>) {
        let (syncing, ended) = &*self.syncing;
        let mut syncing = crate::lock(syncing);
        while names.iter().any(|name| syncing.contains_key(name)) {
            syncing = ended.wait(syncing).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Asks for a sync of every name that has a file in the directory or was loaded
    /// from it; returns the names whose sync it started.
    fn sync_dir(&self) -> BTreeSet<String> {
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
                .filter(|s| {
                    let from_here =
                        |p: Option<PathBuf>| p.as_ref().and_then(|p| p.parent()) == Some(dir.as_path());
                    from_here(s.path.clone()) || from_here(self.registry.failed_path_of(&s.name))
                })
                .map(|s| s.name),
        );
        names.retain(|name| self.request(name));
        names
    }

    /// Makes the registry's `name` match `name.wasm` and `name.toml` as they are now,
    /// unless they are the very files it was last synced from.
    fn sync(&self, name: &str) {
        let wasm = self.dir.join(format!("{name}.wasm"));
        let toml = self.dir.join(format!("{name}.toml"));
        let identity = (file_id(&wasm), file_id(&toml));
        let seen = || crate::lock(&self.seen);
        if identity.0.is_some() && seen().get(name) == Some(&identity) {
            return;
        }
        let settled = match self.look(name, &wasm, &toml) {
            Ok(Look::Gone) => {
                // Gone (or only a sidecar is left): unload what this file had loaded, and
                // forget a failure it caused.
                if self.registry.path_of(name).as_deref() == Some(wasm.as_path()) {
                    self.registry.unload(name);
                }
                self.registry.forget_failed(name, &wasm);
                // Nothing to remember of a name that is gone: the map does not grow with
                // every name ever seen.
                seen().remove(name);
                return;
            }
            // Still being written: its next write brings another event.
            Ok(Look::Changing) => false,
            Ok(Look::Ready(bytes, sidecar)) => {
                // Errors are recorded and sent as events by the registry.
                let _ = self.registry.install_from(name, &bytes, *sidecar, Some(wasm));
                true
            }
            Err(error) => {
                self.registry.fail(name, &error, Some(&wasm));
                true
            }
        };
        if settled {
            seen().insert(name.to_owned(), identity);
        } else {
            seen().remove(name);
        }
    }

    /// What is on disk for `name`.
    fn look(&self, name: &str, wasm: &Path, toml: &Path) -> Result<Look, LoadError> {
        let Some(bytes) = self.read(wasm, self.options.max_file_bytes)? else {
            return Ok(Look::Gone);
        };
        validate_name(name)?;
        if std::fs::metadata(wasm).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
            tracing::debug!(plugin = name, "file still changing, waiting for its next event");
            return Ok(Look::Changing);
        }
        let sidecar = match self.read(toml, WatchOptions::MAX_SIDECAR_BYTES)? {
            None => Sidecar::default(),
            Some(bytes) => {
                let text = String::from_utf8(bytes).map_err(|_| LoadError::Sidecar {
                    path: toml.to_owned(),
                    reason: "the file is not UTF-8 text".to_owned(),
                })?;
                Sidecar::parse_at_with(&text, toml, self.options.sections.as_deref())?
            }
        };
        Ok(Look::Ready(bytes, Box::new(sidecar)))
    }

    /// The bytes of `path` if it is a regular file of at most `max` bytes inside the
    /// directory (or a link to one, as the options allow); `None` if it does not exist.
    fn read(&self, path: &Path, max: u64) -> Result<Option<Vec<u8>>, LoadError> {
        let io = |error| LoadError::Read {
            path: path.to_owned(),
            error,
        };
        let refuse = |why: String| io(std::io::Error::other(why));
        let link = match std::fs::symlink_metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io(error)),
        };
        if link.file_type().is_symlink() {
            let target = match path.canonicalize() {
                Ok(target) => target,
                // A dangling link is no file at all.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(io(error)),
            };
            if target.parent() != Some(self.dir.as_path()) && !self.options.allow_symlinks_outside {
                return Err(refuse(format!(
                    "it is a symlink to `{}`, outside the watch directory; copy the file in, \
                     or allow links outside the directory (`--allow-symlinks`)",
                    target.display()
                )));
            }
        }
        let metadata = std::fs::metadata(path).map_err(io)?;
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
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        // Read at most one byte more than allowed, in case it grew since.
        file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
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
