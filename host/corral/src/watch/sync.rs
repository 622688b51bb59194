//! Syncing one name: looking at its files as they are now and making the registry match
//! them, one sync per name at a time, each on a thread of its own.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::WatchOptions;
use crate::loader::{LoadError, validate_name};
use crate::registry::{Registry, Sidecar};

/// What a look at a name's files found.
enum Look {
    /// No `.wasm` file.
    Gone,
    /// A file still being written.
    Changing,
    /// A complete file and its sidecar.
    Ready(Vec<u8>, Box<Sidecar>),
}

/// A watched directory, its registry and its options: what a sync needs.
#[derive(Clone)]
pub(super) struct Spot {
    pub(super) registry: Registry,
    pub(super) dir: PathBuf,
    pub(super) options: WatchOptions,
    /// The files each name was last synced from: a sync that finds the very same files
    /// (same inode, size and times) has nothing to do. This is what keeps the debounced
    /// echo of a rename, or a reader's access, from re-reading — and from restarting a
    /// terminated plugin that nobody re-dropped.
    pub(super) seen: Arc<Mutex<HashMap<String, Identity>>>,
    /// The names being synced now; the condvar says when one ends or enters the
    /// guest's code.
    pub(super) syncing: Arc<Syncing>,
    /// Set when the watcher is dropped: no sync starts after it.
    pub(super) closed: Arc<AtomicBool>,
}

/// The names being synced now, and what says when one ends or enters the guest's code.
pub(super) type Syncing = (Mutex<HashMap<String, Under>>, Condvar);

/// A name's sync under way.
#[derive(Default)]
pub(super) struct Under {
    /// Another sync was asked for meanwhile: one more follows this one.
    again: bool,
    /// When this sync's load reached the guest's code (the instance's start functions,
    /// then for a swap the old version's last call and `state.save`), if it has: how
    /// long that takes is up to the guest, bounded only by its deadline.
    in_guest: Option<Instant>,
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

/// The plugin a path in the watched directory belongs to: `x` for `x.wasm` and
/// `x.toml`; nothing for other files or other directories.
pub(super) fn plugin_name(dir: &Path, path: &Path) -> Option<String> {
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
    pub(super) fn request(&self, name: &str) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let (syncing, _) = &*self.syncing;
        {
            let mut syncing = crate::lock(syncing);
            if let Some(under) = syncing.get_mut(name) {
                under.again = true;
                return;
            }
            syncing.insert(name.to_owned(), Under::default());
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
    }

    /// Syncs `name` until no further sync was asked for meanwhile.
    fn sync_until_settled(&self, name: &str) {
        let (syncing, changed) = &*self.syncing;
        loop {
            if !self.closed.load(Ordering::SeqCst) {
                self.sync(name);
            }
            let mut syncing = crate::lock(syncing);
            match syncing.get_mut(name) {
                Some(under) if under.again && !self.closed.load(Ordering::SeqCst) => {
                    *under = Under::default();
                }
                _ => {
                    syncing.remove(name);
                    changed.notify_all();
                    return;
                }
            }
        }
    }

    /// Waits until none of `names` is being synced; see [`wait_for`].
    pub(super) fn wait_for(&self, names: &BTreeSet<String>, grace: Option<Duration>) {
        wait_for(&self.syncing, names, grace);
    }

    /// Records that `name`'s sync has reached the guest's code.
    fn entering_guest(&self, name: &str) {
        let (syncing, changed) = &*self.syncing;
        if let Some(under) = crate::lock(syncing).get_mut(name) {
            under.in_guest.get_or_insert_with(Instant::now);
        }
        changed.notify_all();
    }

    /// Asks for a sync of every name that has a file in the directory or was loaded
    /// from it; returns every such name, whether it started its sync or one was already
    /// under way (that one then syncs once more after it).
    pub(super) fn sync_dir(&self) -> BTreeSet<String> {
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
        for name in &names {
            self.request(name);
        }
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
                let _ = self
                    .registry
                    .install_from(name, &bytes, *sidecar, Some(wasm), &|| self.entering_guest(name));
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

/// Waits until none of `names` is being synced — except that with a `grace`, a sync
/// that has been running the guest's code for that long is not waited for: a start
/// function that sleeps until its deadline holds up its own load, not the caller.
fn wait_for(syncing: &Syncing, names: &BTreeSet<String>, grace: Option<Duration>) {
    let (syncing, changed) = syncing;
    let mut syncing = crate::lock(syncing);
    loop {
        let now = Instant::now();
        let mut waiting = false;
        // The soonest a sync in the guest's code stops being waited for.
        let mut until: Option<Instant> = None;
        for under in names.iter().filter_map(|name| syncing.get(name)) {
            match (under.in_guest, grace) {
                (Some(since), Some(grace)) => {
                    let end = since + grace;
                    if end > now {
                        waiting = true;
                        until = Some(until.map_or(end, |until| until.min(end)));
                    }
                }
                _ => waiting = true,
            }
        }
        if !waiting {
            return;
        }
        syncing = match until {
            Some(until) => {
                changed
                    .wait_timeout(syncing, until - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => changed.wait(syncing).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::{Syncing, Under, plugin_name, wait_for};
    use std::collections::{BTreeSet, HashMap};
    use std::path::Path;
    use std::sync::{Condvar, Mutex};
    use std::time::{Duration, Instant};

    fn one_sync(in_guest: Option<Instant>) -> (Syncing, BTreeSet<String>) {
        let under = Under {
            again: false,
            in_guest,
        };
        let map = HashMap::from([("slow".to_owned(), under)]);
        (
            (Mutex::new(map), Condvar::new()),
            BTreeSet::from(["slow".to_owned()]),
        )
    }

    #[test]
    fn a_sync_in_the_guests_code_is_waited_for_until_the_grace_and_no_longer() {
        let grace = Duration::from_millis(300);
        let (syncing, names) = one_sync(Some(Instant::now()));
        let started = Instant::now();
        wait_for(&syncing, &names, Some(grace));
        let took = started.elapsed();
        assert!(took >= grace && took < grace * 10, "{took:?}");

        let long_ago = Instant::now().checked_sub(grace * 2).unwrap();
        let (syncing, names) = one_sync(Some(long_ago));
        let started = Instant::now();
        wait_for(&syncing, &names, Some(grace));
        assert!(started.elapsed() < grace, "{:?}", started.elapsed());
    }

    #[test]
    fn a_sync_outside_the_guests_code_is_waited_for_until_it_ends() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (syncing, names) = one_sync(None);
        let syncing = Arc::new(syncing);
        let ended = Arc::new(AtomicBool::new(false));
        let sync = {
            let (syncing, ended) = (syncing.clone(), ended.clone());
            std::thread::spawn(move || {
                // Compiling, say: the host's part, which a grace does not cut short.
                std::thread::sleep(Duration::from_millis(100));
                let mut map = syncing.0.lock().unwrap();
                ended.store(true, Ordering::SeqCst);
                map.clear();
                syncing.1.notify_all();
            })
        };
        wait_for(&syncing, &names, Some(Duration::ZERO));
        assert!(ended.load(Ordering::SeqCst), "returned before the sync ended");
        sync.join().unwrap();
    }

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
