//! A plugin's saved state (`corral:plugin/state`), and the hold a registry takes on a
//! plugin while it is replaced or unloaded.

use std::sync::MutexGuard;

use wasmtime::Trap;

use super::{Cell, Plugin, PluginState};
use crate::lock;
use crate::sandbox::Sandbox;
use crate::sandbox::output::escape;

/// Exclusive hold on a plugin that is being replaced or unloaded: no call runs while it
/// is held, and every later call is refused with [`CallError::Unloaded`].
pub(crate) struct Retiring<'a> {
    plugin: &'a Plugin,
    cell: MutexGuard<'a, Cell>,
}

impl Plugin {
    /// Whether a call (or a swap, or a save) holds the plugin now.
    pub fn is_busy(&self) -> bool {
        self.cell.try_lock().is_err()
    }

    /// Whether the plugin exports the `corral:plugin/state` interface, and so keeps its
    /// state when it is replaced.
    pub fn preserves_state(&self) -> bool {
        self.stateful
    }

    /// Waits for the call in progress, if any, then retires the plugin.
    pub(crate) fn retire(&self) -> Retiring<'_> {
        let mut cell = lock(&self.cell);
        cell.retired = true;
        Retiring { plugin: self, cell }
    }

    /// The guest's `state.save` now, without retiring the plugin (a checkpoint's state):
    /// `None` when it does not export the interface, is terminated, retired, or has no
    /// instance (after a trap).
    ///
    /// # Errors
    ///
    /// Why `state.save` failed: the guest's reason, a trap, or its deadline.
    pub fn save_state(&self) -> Option<Result<Vec<u8>, String>> {
        let mut cell = lock(&self.cell);
        if cell.retired || cell.state != PluginState::Running {
            return None;
        }
        let sandbox = &mut cell.sandbox.as_mut()?.sandbox;
        let funcs = sandbox.state?;
        Some(self.run_state_call(sandbox, |store| funcs.save.call(store, ()).map(|(r,)| r)))
    }

    /// Hands `data` to the guest's `state.restore`. On failure the instance is dropped,
    /// so the plugin starts empty rather than half-restored.
    ///
    /// # Errors
    ///
    /// Why `state.restore` failed, or that the plugin cannot take state.
    pub fn restore_state(&self, data: Vec<u8>) -> Result<(), String> {
        let mut cell = lock(&self.cell);
        let result = match cell.sandbox.as_mut() {
            Some(instance) => {
                // It holds state now: a move to optimised code must hand it over.
                instance.called = true;
                match instance.sandbox.state {
                    Some(funcs) => self.run_state_call(&mut instance.sandbox, |store| {
                        funcs.restore.call(store, (data,)).map(|(r,)| r)
                    }),
                    None => Err("the new version does not export the state interface".to_owned()),
                }
            }
            None => Err("the new version has no instance".to_owned()),
        };
        if result.is_err() {
            cell.sandbox = None;
        }
        result
    }

    pub(super) fn run_state_call<R>(
        &self,
        sandbox: &mut Sandbox,
        call: impl FnOnce(
            &mut wasmtime::Store<crate::sandbox::SandboxState>,
        ) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, String> {
        self.spec.arm(&mut sandbox.store).map_err(|e| format!("{e:#}"))?;
        let result = call(&mut sandbox.store);
        self.spec.output.end();
        let deadline_hit = sandbox.store.data().deadline.hit;
        match result {
            // The guest's own reason, escaped: it reaches the host's log.
            Ok(result) => result.map_err(|reason| escape(&reason).into_owned()),
            Err(trap) => Err(match trap.downcast_ref::<Trap>() {
                _ if deadline_hit => self.deadline_text(),
                Some(Trap::Interrupt) => self.deadline_text(),
                Some(trap) => format!("trapped: {trap}"),
                None => format!("{trap:#}"),
            }),
        }
    }
}

impl Plugin {
    pub(super) fn deadline_text(&self) -> String {
        format!(
            "exceeded its deadline limit: a call may take {:?}",
            self.spec.limits.deadline
        )
    }
}

impl Retiring<'_> {
    /// The state saved by the guest's `state.save`: `None` when there is nothing to save
    /// (the plugin does not export the interface, is terminated, or lost its instance
    /// to a trap on its last call).
    pub fn save(&mut self) -> Option<Result<Vec<u8>, String>> {
        if self.cell.state != PluginState::Running {
            return None;
        }
        let sandbox = &mut self.cell.sandbox.as_mut()?.sandbox;
        let funcs = sandbox.state?;
        Some(
            self.plugin
                .run_state_call(sandbox, |store| funcs.save.call(store, ()).map(|(r,)| r)),
        )
    }

    /// Frees the instance now rather than when the last handle to the plugin goes.
    pub fn drop_instance(&mut self) {
        self.cell.sandbox = None;
    }
}
