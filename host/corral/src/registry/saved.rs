//! State saved at shutdown and restored at the next start, through a [`StateStore`].

use std::sync::{Arc, Mutex, PoisonError};

use super::{Entry, Registry};
use crate::lock;
use crate::plugin::Plugin;
use crate::registry::Sidecar;
use crate::sandbox::store::StateStore;

impl Registry {
    /// On a plugin's first load, restores the state saved for it at the last shutdown
    /// from `store` (see [`Registry::save_states`]); saved state of another preservation
    /// version is discarded.
    /// Restored state is then forgotten from `store` ([`StateStore::forget_state`]).
    pub fn restore_saved_state_from(&self, store: Arc<dyn StateStore>) {
        *lock(&self.inner.saved) = Some(store);
    }

    pub(super) fn restore_saved(&self, name: &str, plugin: &Plugin, sidecar: &Sidecar) {
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
}
