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
//! `state.save`, holds up only its own name, never the watcher or the other plugins —
//! nor, past [`RESCAN_GRACE`], a rescan.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::thread::JoinHandle;
use std::time::Duration;

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

mod sync;

use crate::registry::{Registry, SidecarSections};
use sync::{Spot, plugin_name};

/// How long a file must be quiet before it is looked at.
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// How long [`Watcher::rescan`] waits for a load whose guest code is running (a start
/// function, or an old version's call finishing before a swap) before it returns
/// without it. Reading, checking and compiling a file are always waited for: they are
/// the host's, bounded by the compile limits.
pub const RESCAN_GRACE: Duration = Duration::from_secs(1);

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

/// What the watch thread is told.
enum Input {
    /// Events that went quiet for the debounce period.
    Debounced(DebounceEventResult),
    /// A path renamed in or out, reported at once.
    Renamed(PathBuf),
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
    /// file had just changed (the admin API's reload). Returns when every name's sync is
    /// done, those already under way when it was called (a file just copied in, say)
    /// included — except a load that has been running the guest's code (its start
    /// functions, or the old version's last call before a swap) for [`RESCAN_GRACE`]:
    /// that one goes on, and is looked at once more after it, without holding up the
    /// caller.
    pub fn rescan(&self) {
        // Look again even at files that have not changed: what failed for a reason
        // outside the file (a missing granted directory, say) gets another try.
        crate::lock(&self.spot.seen).clear();
        let names = self.spot.sync_dir();
        self.spot.wait_for(&names, Some(RESCAN_GRACE));
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
        spot.wait_for(&names, None);

        let watched = spot.clone();
        let worker = std::thread::Builder::new()
            .name("corral-watch".into())
            .spawn(move || {
                for input in rx {
                    match input {
                        Input::Renamed(path) => {
                            if let Some(name) = plugin_name(&watched.dir, &path) {
                                watched.request(&name);
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
                                watched.request(&name);
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
