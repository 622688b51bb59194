//! Plugins by name, swapped in place.
//!
//! The registry maps a name to the plugin serving it. The call path takes a read lock
//! long enough to clone an `Arc` — it never waits on a compile, which happens before the
//! swap, away from the map. A swap then:
//!
//! 1. retires the old version: waits for its call in progress, if any, and refuses
//!    later calls on it with [`CallError::Unloaded`];
//! 2. hands state over: `state.save` on the old version, `state.restore` on the new
//!    (unless the sidecar's `preservation-version` changed, or either side does not
//!    export the state interface);
//! 3. publishes the new version in the map, and only then lets go of the old one.
//!
//! A call that raced the swap and reached the old version after step 1 is retried on
//! the new one, so every call is answered by exactly one version and none is lost.
//! Calls already running on the old version finish there; its memory goes when the last
//! of them does. A load that fails leaves the working version in place and records the
//! error in the plugin's status.

mod calls;
mod saved;
mod sidecar;
mod swap;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

pub use sidecar::{Sidecar, SidecarSections};

use crate::contract::message::Message;
use crate::loader::Host;
use crate::lock;
use crate::plugin::{CallError, CallOutcome, Plugin};
use crate::sandbox::store::StateStore;

/// How often a call is retried after finding its plugin retired by a swap. One retry
/// suffices (the new version is published before the old one is let go); the bound only
/// keeps a pathological swap storm from looping forever.
const MAX_RETRIES: usize = 8;

/// Something that happened to a plugin in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A plugin was loaded under a new name.
    Loaded {
        /// Its name.
        name: String,
        /// Its content version (SHA-256 of the component, hex).
        version: String,
    },
    /// A new version replaced a running one.
    Replaced {
        /// Its name.
        name: String,
        /// The version replaced.
        old_version: String,
        /// The version now serving.
        new_version: String,
        /// What became of the old version's state.
        state: StateHandoff,
    },
    /// A plugin was unloaded (its file was removed).
    Unloaded {
        /// Its name.
        name: String,
        /// The version that was serving.
        version: String,
    },
    /// A file or sidecar failed to load; any working version keeps serving.
    Failed {
        /// The plugin's name.
        name: String,
        /// Why, naming the file.
        error: String,
    },
}

/// What became of a plugin's state when it was replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateHandoff {
    /// The old or the new version does not export the state interface.
    NotExported,
    /// There was nothing to save: the old version was terminated or had lost its
    /// instance to a trap.
    Nothing,
    /// Saved from the old version and restored into the new one.
    Restored {
        /// The size of the saved state.
        bytes: usize,
    },
    /// The sidecar's preservation version changed, so the state was not carried over.
    Discarded {
        /// The old sidecar's preservation version.
        old: u64,
        /// The new one.
        new: u64,
    },
    /// `state.save` failed; the new version started empty.
    SaveFailed(String),
    /// `state.restore` failed; the new version started empty.
    RestoreFailed(String),
}

/// What the registry knows of one name.
#[derive(Debug, Clone)]
pub struct PluginStatus {
    /// The name.
    pub name: String,
    /// The version serving, if any loaded; read its state and stats from it.
    pub plugin: Option<Arc<Plugin>>,
    /// When the serving version was loaded.
    pub loaded_at: Option<SystemTime>,
    /// The last failed attempt to load this name, if it failed after the last success.
    pub load_error: Option<String>,
    /// The file the serving version was loaded from, if it came from a file.
    pub path: Option<PathBuf>,
}

/// What [`Registry::install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Loaded under a new name.
    Loaded,
    /// Replaced the running version.
    Replaced(StateHandoff),
    /// The same content and settings were already serving: nothing was done.
    Unchanged,
}

#[derive(Clone, Default)]
struct Entry {
    plugin: Option<Arc<Plugin>>,
    sidecar: Arc<Sidecar>,
    loaded_at: Option<SystemTime>,
    load_error: Option<String>,
    path: Option<PathBuf>,
    /// The file of the last failed load, when it came from a file: a failure is
    /// forgotten with its file (see [`Registry::forget_failed`]).
    failed_path: Option<PathBuf>,
}

struct Inner {
    host: Host,
    /// Where state saved at the last shutdown is found, for a plugin's first load.
    saved: Mutex<Option<Arc<dyn StateStore>>>,
    entries: RwLock<HashMap<String, Entry>>,
    subscribers: Mutex<Vec<Sender<Event>>>,
    /// The names being loaded, swapped or unloaded now: changes to one name happen one
    /// at a time, changes to different names never wait for each other (a start
    /// function or a `state.save` holds only its own name), and calls never wait here.
    changing: (Mutex<HashSet<String>>, Condvar),
}

/// Holds one name's changes until dropped.
struct Changing<'a> {
    registry: &'a Registry,
    name: String,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let (names, freed) = &self.registry.inner.changing;
        lock(names).remove(&self.name);
        freed.notify_all();
    }
}

/// Plugins by name, replaceable while they serve. Cheap to clone: clones share the
/// plugins.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

/// A plugin's name bound to a registry: every call goes to whichever version serves the
/// name at that moment.
#[derive(Debug, Clone)]
pub struct PluginHandle {
    registry: Registry,
    name: String,
}

impl PluginHandle {
    /// The name it calls.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `process-message` on the version serving the name.
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn process_message(&self, message: &Message) -> Result<CallOutcome, CallError> {
        self.registry.process_message(&self.name, message)
    }

    /// Calls `timer-event` on the version serving the name.
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn timer_event(&self, now_ns: i64) -> Result<CallOutcome, CallError> {
        self.registry.timer_event(&self.name, now_ns)
    }

    /// The name's status.
    pub fn status(&self) -> Option<PluginStatus> {
        self.registry.status(&self.name)
    }
}

impl Registry {
    /// An empty registry loading through `host`.
    pub fn new(host: Host) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                host,
                entries: RwLock::new(HashMap::new()),
                saved: Mutex::new(None),
                subscribers: Mutex::new(Vec::new()),
                changing: (Mutex::new(HashSet::new()), Condvar::new()),
            }),
        }
    }

    /// The host plugins are loaded through.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The version serving `name`, if one is loaded.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().get(name).and_then(|e| e.plugin.clone())
    }

    /// A handle that calls whichever version serves `name`.
    pub fn handle(&self, name: impl Into<String>) -> PluginHandle {
        PluginHandle {
            registry: self.clone(),
            name: name.into(),
        }
    }

    /// Every name the registry knows, loaded or failed, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// What the registry knows of `name`.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        self.read().get(name).map(|e| status(name, e))
    }

    /// The status of every name, sorted by name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let mut all: Vec<PluginStatus> = self.read().iter().map(|(n, e)| status(n, e)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The sidecar settings `name` serves with, if a plugin serves it. Extra sections
    /// (see [`Sidecar::extra`]) are there for whoever runs the plugins to read.
    pub fn sidecar(&self, name: &str) -> Option<Arc<Sidecar>> {
        self.read()
            .get(name)
            .filter(|e| e.plugin.is_some())
            .map(|e| e.sidecar.clone())
    }

    /// The version serving `name` and the sidecar settings it was loaded with, read
    /// together: a swap never pairs one version with another's settings.
    pub fn serving(&self, name: &str) -> Option<(Arc<Plugin>, Arc<Sidecar>)> {
        self.read()
            .get(name)
            .and_then(|e| Some((e.plugin.clone()?, e.sidecar.clone())))
    }

    /// A channel of every event from now on. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    /// Waits until no other change to `name` is under way, and holds off the next until
    /// the guard is dropped.
    fn changing(&self, name: &str) -> Changing<'_> {
        let (names, freed) = &self.inner.changing;
        let mut names = lock(names);
        while names.contains(name) {
            names = freed.wait(names).unwrap_or_else(PoisonError::into_inner);
        }
        names.insert(name.to_owned());
        Changing {
            registry: self,
            name: name.to_owned(),
        }
    }

    fn send(&self, event: Event) {
        lock(&self.inner.subscribers).retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

fn status(name: &str, entry: &Entry) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        plugin: entry.plugin.clone(),
        loaded_at: entry.loaded_at,
        load_error: entry.load_error.clone(),
        path: entry.path.clone(),
    }
}
