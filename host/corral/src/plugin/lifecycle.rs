//! A plugin's life between calls: termination, restarts after a backoff, and the move
//! from baseline to optimised code.

use std::time::Instant;

use super::{CallError, Cell, Instance, Plugin, PluginState, Stats};
use crate::lock;
use crate::sandbox::StartError;

impl Plugin {
    /// Logs a warning about the plugin, through its log gate (see [`LogGate`]).
    pub(super) fn warn(&self, line: std::fmt::Arguments<'_>) {
        let admitted = lock(&self.gate).admit();
        if crate::sandbox::output::gate_report(self.name(), admitted) {
            tracing::warn!(plugin = self.name(), "{line}");
        }
    }

    pub(super) fn terminate(&self, cell: &mut Cell, stats: &mut Stats, reason: String) {
        tracing::error!(plugin = self.name(), %reason, "plugin terminated");
        stats.terminations += 1;
        stats.memory_bytes = 0;
        cell.sandbox = None;
        cell.state = PluginState::Terminated { reason };
        if let Some(policy) = &self.restart {
            match cell.restarts.terminated(policy, Instant::now()) {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    tracing::info!(plugin = self.name(), ?wait, "restart scheduled");
                    self.schedule_restart(due);
                }
                None => tracing::warn!(
                    plugin = self.name(),
                    restarts = cell.restarts.status.in_a_row,
                    "restarts in a row at the most allowed: the plugin stays terminated until replaced"
                ),
            }
        }
        self.show_state(cell);
    }

    /// Restarts the plugin when `due` comes, unless a call has done it by then (only a
    /// plugin shared through [`Plugin::attach`]; others restart at their next call).
    pub(super) fn schedule_restart(&self, due: Instant) {
        let Some(this) = self.this.get().cloned() else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("corral-restart".into())
            .spawn(move || {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if let Some(plugin) = this.upgrade() {
                    let mut cell = lock(&plugin.cell);
                    let due = !cell.retired
                        && cell.state != PluginState::Running
                        && cell.restarts.is_due(Instant::now());
                    if due {
                        let _ = plugin.restart(&mut cell);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                plugin = self.name(),
                "cannot start a restart timer, the next call restarts it: {e}"
            );
        }
    }

    /// Brings a terminated plugin back: a fresh instance, and calls again. A fresh
    /// instance that cannot start terminates it again, with the next backoff.
    pub(super) fn restart(&self, cell: &mut Cell) -> Result<(), CallError> {
        cell.restarts.restarted(Instant::now());
        cell.consecutive_failures = 0;
        cell.sandbox = None;
        let started = self.spec.instantiate(&cell.code);
        let mut stats = lock(&self.stats);
        stats.restarts += 1;
        match started {
            Ok(sandbox) => {
                stats.instances += 1;
                stats.memory_bytes = sandbox.store.data().limiter.current as u64;
                cell.sandbox = Some(Instance {
                    sandbox,
                    tier: cell.code.tier,
                    called: false,
                });
                cell.state = PluginState::Running;
                tracing::info!(
                    plugin = self.name(),
                    restarts = cell.restarts.status.restarts,
                    "plugin restarted"
                );
                self.show_state(cell);
                self.show_tier(cell);
                Ok(())
            }
            Err(e) => {
                let error = self.start_failed(e);
                stats.last_error = Some(error.to_string());
                self.terminate(cell, &mut stats, format!("restarting failed: {error}"));
                Err(error)
            }
        }
    }

    /// The error of a fresh instance that did not start.
    pub(super) fn start_failed(&self, error: StartError) -> CallError {
        let plugin = self.name().to_owned();
        match error {
            StartError::Limit(limit, detail) => CallError::Limit {
                plugin,
                limit,
                detail,
            },
            StartError::PoolFull(full) => CallError::PoolFull { plugin, source: full },
            StartError::Other { reason, source } => CallError::Restart {
                plugin,
                reason,
                source,
            },
        }
    }

    /// Moves the plugin to its optimised code once that is ready, at the first point
    /// where nothing is lost (see the `tier` module). True when it made a new instance.
    pub(super) fn tier_up(&self, cell: &mut Cell) -> bool {
        let Some(result) = cell.upgrade.as_ref().and_then(|upgrade| upgrade.result()) else {
            return false;
        };
        cell.upgrade = None;
        let plugin = self.name();
        cell.code = match result {
            Ok(code) => code,
            Err(reason) => {
                tracing::warn!(plugin, %reason, "no optimised code: the plugin stays on baseline code");
                return false;
            }
        };
        let Some(instance) = &mut cell.sandbox else {
            return false;
        };
        if !instance.called {
            // Nothing to keep: the next call starts an instance of the optimised code.
            cell.sandbox = None;
            return false;
        }
        let Some(funcs) = instance.sandbox.state else {
            tracing::debug!(plugin, "optimised code ready: it serves from the next instance");
            return false;
        };
        let saved = self.run_state_call(&mut instance.sandbox, |store| {
            funcs.save.call(store, ()).map(|(r,)| r)
        });
        let moved = saved.and_then(|data| {
            let mut fresh = self.spec.instantiate(&cell.code).map_err(|e| e.to_string())?;
            let restore = fresh
                .state
                .ok_or("the optimised code does not export the state interface")?
                .restore;
            self.run_state_call(&mut fresh, |store| restore.call(store, (data,)).map(|(r,)| r))?;
            Ok(fresh)
        });
        match moved {
            Ok(fresh) => {
                cell.sandbox = Some(Instance {
                    sandbox: fresh,
                    tier: cell.code.tier,
                    called: true,
                });
                tracing::debug!(plugin, "moved to optimised code, state handed over");
                true
            }
            Err(reason) => {
                tracing::warn!(
                    plugin,
                    %reason,
                    "cannot hand the state over to optimised code: it serves from the next instance"
                );
                false
            }
        }
    }
}
