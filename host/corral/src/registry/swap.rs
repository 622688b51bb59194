//! Loading, replacing and unloading a name: the swap protocol of the module docs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Entry, Event, Installed, Registry, StateHandoff};
use crate::loader::{LoadError, content_version, validate_name};
use crate::plugin::PluginState;
use crate::registry::Sidecar;
use crate::sandbox::output::escape;

impl Registry {
    /// Loads `bytes` under `name` with `sidecar`'s settings, replacing the version
    /// serving it (see the module docs for how). Content and settings identical to the
    /// running version's are not reloaded; a terminated plugin is reloaded even then.
    ///
    /// # Errors
    ///
    /// The [`LoadError`], also recorded in the name's status and sent as
    /// [`Event::Failed`]; the serving version, if any, is untouched.
    pub fn install(&self, name: &str, bytes: &[u8], sidecar: Sidecar) -> Result<Installed, LoadError> {
        self.install_from(name, bytes, sidecar, None, &|| {})
    }

    /// As [`Registry::install`], recording `path` as where the plugin came from, and
    /// calling `starting` when the guest's code is about to run: its instance's start,
    /// then (for a swap) the old version's last call and its `state.save`.
    pub(crate) fn install_from(
        &self,
        name: &str,
        bytes: &[u8],
        sidecar: Sidecar,
        path: Option<PathBuf>,
        starting: &dyn Fn(),
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
        let new = match self
            .inner
            .host
            .load_then(name, bytes, sidecar.options.clone(), starting)
        {
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
    /// ([`crate::validate_name`]) is never recorded: it is not a plugin, and would
    /// carry whatever a file name holds into listings and metrics.
    pub(crate) fn fail(&self, name: &str, error: &LoadError, path: Option<&Path>) {
        let error = error.to_string();
        let shown = escape(name);
        if validate_name(name).is_err() {
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
}
