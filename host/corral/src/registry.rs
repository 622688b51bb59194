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

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use crate::error::{CallError, LoadError};
use crate::host::{Host, content_version};
use crate::lock;
use crate::message::Message;
use crate::plugin::{BatchOutcome, CallOutcome, Plugin, PluginState};
use crate::sidecar::Sidecar;
use crate::store::StateStore;

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

    /// Calls `process-message` on the version serving `name`.
    ///
    /// # Errors
    ///
    /// [`CallError::NotFound`] when no plugin of that name is loaded, or the call's own
    /// error.
    pub fn process_message(&self, name: &str, message: &Message) -> Result<CallOutcome, CallError> {
        self.call(name, |p| p.process_message(message))
    }

    /// Calls `timer-event` on the version serving `name`.
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn timer_event(&self, name: &str, now_ns: i64) -> Result<CallOutcome, CallError> {
        self.call(name, |p| p.timer_event(now_ns))
    }

    /// Hands several messages, in order, to the version serving `name`: in one call
    /// if it takes batches (see [`Plugin::process_messages`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::process_message`].
    pub fn process_messages<M: Borrow<Message>>(
        &self,
        name: &str,
        messages: &[M],
    ) -> Result<BatchOutcome, CallError> {
        let mut all = BatchOutcome::default();
        let mut done = 0;
        let mut retries = 0;
        // A swap may come between two messages, or refuse a batch: what is left goes to
        // the version serving the name then.
        while done < messages.len() {
            let rest = &messages[done..];
            let result = match self.get(name) {
                Some(plugin) => plugin.process_messages(rest),
                None => Err(CallError::NotFound {
                    plugin: name.to_owned(),
                }),
            };
            match result {
                Ok(mut outcome) => {
                    let mut taken = rest.len();
                    if let Some((index, CallError::Unloaded { .. })) = outcome.failed.last()
                        && retries < MAX_RETRIES
                    {
                        taken = *index;
                        outcome.failed.pop();
                        retries += 1;
                    }
                    all.emitted.extend(outcome.emitted);
                    all.logs.extend(outcome.logs);
                    all.calls += outcome.calls;
                    all.failed
                        .extend(outcome.failed.into_iter().map(|(i, e)| (done + i, e)));
                    done += taken;
                }
                Err(CallError::Unloaded { .. }) if retries < MAX_RETRIES => retries += 1,
                Err(e) if done == 0 => return Err(e),
                // Part of the run went through: the rest failed with this error.
                Err(e) => {
                    all.failed.push((done, e));
                    break;
                }
            }
        }
        Ok(all)
    }

    fn call<R>(&self, name: &str, call: impl Fn(&Plugin) -> Result<R, CallError>) -> Result<R, CallError> {
        let mut result = Err(CallError::NotFound {
            plugin: name.to_owned(),
        });
        for _ in 0..MAX_RETRIES {
            let Some(plugin) = self.get(name) else {
                return Err(CallError::NotFound {
                    plugin: name.to_owned(),
                });
            };
            result = call(&plugin);
            if !matches!(result, Err(CallError::Unloaded { .. })) {
                break;
            }
        }
        result
    }

    /// Loads `bytes` under `name` with `sidecar`'s settings, replacing the version
    /// serving it (see the module docs for how). Content and settings identical to the
    /// running version's are not reloaded; a terminated plugin is reloaded even then.
    ///
    /// # Errors
    ///
    /// The [`LoadError`], also recorded in the name's status and sent as
    /// [`Event::Failed`]; the serving version, if any, is untouched.
    pub fn install(&self, name: &str, bytes: &[u8], sidecar: Sidecar) -> Result<Installed, LoadError> {
        self.install_from(name, bytes, sidecar, None)
    }

    pub(crate) fn install_from(
        &self,
        name: &str,
        bytes: &[u8],
        sidecar: Sidecar,
        path: Option<PathBuf>,
    ) -> Result<Installed, LoadError> {
        let _changing = self.changing(name);
        let current = self.read().get(name).cloned().unwrap_or_default();
        if let Some(old) = &current.plugin
            && old.version() == content_version(bytes)
            && *current.sidecar == sidecar
            && old.state() == PluginState::Running
        {
            if current.load_error.is_some() {
                self.write().entry(name.to_owned()).or_default().load_error = None;
            }
            return Ok(Installed::Unchanged);
        }
        tracing::info!(plugin = name, "loading plugin");
        let new = match self.inner.host.load(name, bytes, sidecar.options.clone()) {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                plugin.attach();
                plugin
            }
            Err(error) => {
                self.fail(name, &error, path.as_deref());
                return Err(error);
            }
        };
        let sidecar = Arc::new(sidecar);
        let entry = Entry {
            plugin: Some(new.clone()),
            sidecar: sidecar.clone(),
            loaded_at: Some(SystemTime::now()),
            load_error: None,
            path,
            failed_path: None,
        };
        let Some(old) = current.plugin else {
            self.restore_saved(name, &new, &sidecar);
            self.write().insert(name.to_owned(), entry);
            tracing::info!(plugin = name, version = new.version(), "plugin loaded");
            self.send(Event::Loaded {
                name: name.to_owned(),
                version: new.version().to_owned(),
            });
            return Ok(Installed::Loaded);
        };

        let mut retiring = old.retire();
        let handoff = if !old.preserves_state() || !new.preserves_state() {
            StateHandoff::NotExported
        } else if current.sidecar.preservation_version != sidecar.preservation_version {
            StateHandoff::Discarded {
                old: current.sidecar.preservation_version,
                new: sidecar.preservation_version,
            }
        } else {
            match retiring.save() {
                None => StateHandoff::Nothing,
                Some(Err(e)) => StateHandoff::SaveFailed(e),
                Some(Ok(data)) => {
                    let bytes = data.len();
                    match new.restore_state(data) {
                        Ok(()) => StateHandoff::Restored { bytes },
                        Err(e) => StateHandoff::RestoreFailed(e),
                    }
                }
            }
        };
        retiring.drop_instance();
        self.write().insert(name.to_owned(), entry);
        drop(retiring);

        match &handoff {
            StateHandoff::SaveFailed(e) | StateHandoff::RestoreFailed(e) => {
                tracing::warn!(
                    plugin = name,
                    "state not carried over, the new version starts empty: {e}"
                )
            }
            _ => {}
        }
        tracing::info!(plugin = name, old = old.version(), new = new.version(), state = ?handoff, "plugin replaced");
        self.send(Event::Replaced {
            name: name.to_owned(),
            old_version: old.version().to_owned(),
            new_version: new.version().to_owned(),
            state: handoff.clone(),
        });
        Ok(Installed::Replaced(handoff))
    }

    /// On a plugin's first load, restores the state saved for it at the last shutdown
    /// from `store` (see [`Registry::save_states`]); saved state of another preservation
    /// version is discarded.
    /// Restored state is then forgotten from `store` ([`StateStore::forget_state`]).
    pub fn restore_saved_state_from(&self, store: Arc<dyn StateStore>) {
        *lock(&self.inner.saved) = Some(store);
    }

    fn restore_saved(&self, name: &str, plugin: &Plugin, sidecar: &Sidecar) {
        let Some(store) = lock(&self.inner.saved).clone() else {
            return;
        };
        let saved = match store.saved_state(name) {
            Ok(Some(saved)) => saved,
            Ok(None) => return,
            Err(e) => return tracing::warn!(plugin = name, "cannot read saved state: {e}"),
        };
        match saved {
            (version, _) if version != sidecar.preservation_version => tracing::info!(
                plugin = name,
                "saved state discarded: preservation version {version}, now {}",
                sidecar.preservation_version
            ),
            (_, _) if !plugin.preserves_state() => {
                tracing::info!(
                    plugin = name,
                    "saved state discarded: the plugin no longer exports state"
                )
            }
            (_, data) => match plugin.restore_state(data) {
                Ok(()) => tracing::info!(plugin = name, "state restored from the last shutdown"),
                Err(e) => tracing::warn!(plugin = name, "state restore failed, starting empty: {e}"),
            },
        }
        if let Err(e) = store.forget_state(name) {
            tracing::warn!(plugin = name, "cannot forget restored state: {e}");
        }
    }

    /// Retires every plugin (waiting for its call in progress) and saves the state of
    /// those that export the state interface into `store`, for
    /// [`Registry::restore_saved_state_from`] on the next start. Returns the names
    /// whose state was saved. Calls made afterwards are refused.
    ///
    /// The plugins are saved in parallel, so one that is slow to finish its call or to
    /// save (each bounded by its deadline) holds up only itself.
    pub fn save_states(&self, store: &dyn StateStore) -> Vec<String> {
        let entries: Vec<(String, Entry)> = self.read().iter().map(|(n, e)| (n.clone(), e.clone())).collect();
        let saved = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for (name, entry) in entries {
                let Some(plugin) = entry.plugin else { continue };
                let saved = &saved;
                let save = move || {
                    let _changing = self.changing(&name);
                    let mut retiring = plugin.retire();
                    match retiring.save() {
                        Some(Ok(data)) => {
                            match store.save_state(&name, entry.sidecar.preservation_version, &data) {
                                Ok(()) => lock(saved).push(name),
                                Err(e) => tracing::warn!(plugin = %name, "cannot write saved state: {e}"),
                            }
                        }
                        Some(Err(e)) => tracing::warn!(plugin = %name, "state.save failed at shutdown: {e}"),
                        None => {}
                    }
                    retiring.drop_instance();
                };
                let spawned = std::thread::Builder::new()
                    .name("corral-save".into())
                    .spawn_scoped(scope, save);
                if let Err(e) = spawned {
                    tracing::warn!("cannot start a thread to save state: {e}");
                }
            }
        });
        let mut saved = saved.into_inner().unwrap_or_else(PoisonError::into_inner);
        saved.sort();
        saved
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

    /// The preservation version from `name`'s sidecar (0 when nothing serves it).
    pub fn preservation_version(&self, name: &str) -> u64 {
        self.read()
            .get(name)
            .map_or(0, |e| e.sidecar.preservation_version)
    }

    /// Unloads `name` once its call in progress, if any, has finished. Returns whether a
    /// plugin was serving it.
    pub fn unload(&self, name: &str) -> bool {
        let _changing = self.changing(name);
        let Some(old) = self.get(name) else {
            self.write().remove(name);
            return false;
        };
        let mut retiring = old.retire();
        retiring.drop_instance();
        self.write().remove(name);
        drop(retiring);
        tracing::info!(plugin = name, version = old.version(), "plugin unloaded");
        self.send(Event::Unloaded {
            name: name.to_owned(),
            version: old.version().to_owned(),
        });
        true
    }

    /// Records a failed load of `name` (a bad file or sidecar, from `path` if it came from
    /// a file) without touching the serving version. A name outside the policy
    /// ([`crate::host::validate_name`]) is never recorded: it is not a plugin, and would
    /// carry whatever a file name holds into listings and metrics.
    pub(crate) fn fail(&self, name: &str, error: &LoadError, path: Option<&Path>) {
        let error = error.to_string();
        let shown = crate::output::escape(name);
        if crate::host::validate_name(name).is_err() {
            // The name is not a plugin's: it is shown escaped, and only here.
            tracing::warn!(name = %shown, "refused: {error}");
            return;
        }
        tracing::warn!(plugin = name, "load failed, any serving version stays: {error}");
        {
            let mut entries = self.write();
            let entry = entries.entry(name.to_owned()).or_default();
            entry.load_error = Some(error.clone());
            entry.failed_path = path.map(Path::to_owned);
        }
        self.send(Event::Failed {
            name: name.to_owned(),
            error,
        });
    }

    /// Forgets the failed load of `name` from `path` when nothing serves the name: its
    /// file is gone. Returns whether it did.
    pub(crate) fn forget_failed(&self, name: &str, path: &Path) -> bool {
        let mut entries = self.write();
        let forget = entries
            .get(name)
            .is_some_and(|e| e.plugin.is_none() && e.failed_path.as_deref() == Some(path));
        if forget {
            entries.remove(name);
        }
        forget
    }

    /// The file of the last failed load of `name`, if it came from one and nothing
    /// serves the name.
    pub(crate) fn failed_path_of(&self, name: &str) -> Option<PathBuf> {
        self.read()
            .get(name)
            .filter(|e| e.plugin.is_none())
            .and_then(|e| e.failed_path.clone())
    }

    /// The file `name` was loaded from, if any.
    pub(crate) fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.read().get(name).and_then(|e| e.path.clone())
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
