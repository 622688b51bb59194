//! Getting a component compiled: from the memo, from the disk cache, or by a compiler —
//! once per content however many loads ask at the same time, within the compile limits,
//! and with the baseline tier, by Winch first and by Cranelift behind it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::compile::{self, ComponentCost, WorkerError};
use super::engine::EngineSettings;
use super::{Host, LoadError};
use crate::plugin::Upgrade;
use crate::sandbox::Cause;

/// How many compiled components the memo keeps.
const MEMO_ENTRIES: usize = 16;

/// Takes a digest off [`Host::compiling`] when its compile ends, however it ends.
pub(super) struct Compiling<'a> {
    host: &'a Host,
    digest: [u8; 32],
}

impl Drop for Compiling<'_> {
    fn drop(&mut self) {
        let (list, done) = &*self.host.compiling;
        list.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|d| *d != self.digest);
        done.notify_all();
    }
}

/// Recently compiled components by the SHA-256 of their bytes, oldest first.
pub(super) type Memo = VecDeque<([u8; 32], Compiled)>;

/// A compiled component: optimised, or baseline with its optimised code on the way.
#[derive(Clone)]
pub(super) struct Compiled {
    pub(super) component: Component,
    pub(super) upgrade: Option<Arc<Upgrade>>,
}

impl Host {
    pub(super) fn compile(&self, name: &str, bytes: &[u8], digest: [u8; 32]) -> Result<Compiled, LoadError> {
        let memo = || crate::lock(&self.memo);
        let count = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        let _compiling = loop {
            // The memo is read under the list's lock: a compile that ends puts its
            // component in the memo before it leaves the list.
            let (list, done) = &*self.compiling;
            let mut list = crate::lock(list);
            if let Some((_, c)) = memo().iter().find(|(d, _)| *d == digest) {
                count(&self.counters.memo_hits);
                return Ok(c.clone());
            }
            if !list.contains(&digest) {
                list.push(digest);
                break Compiling { host: self, digest };
            }
            // Another load is compiling these bytes: wait for it, then look again (it
            // may have failed, and then this load compiles and fails on its own).
            drop(done.wait_while(list, |list| list.contains(&digest)));
        };
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, &digest));
        if cached.is_none() {
            // What is found compiled costs nothing; what is not is counted first.
            self.check_cost(name, bytes)?;
        }
        // Winch does not take every module Cranelift does (some SIMD, for one): a
        // component it refuses is compiled by Cranelift as if there were no baseline.
        // One that is too costly for Winch is too costly for Cranelift.
        let baseline = match (&cached, &self.baseline) {
            (None, Some(baseline)) => {
                match self.compile_for(name, bytes, baseline.settings, &baseline.engine) {
                    Ok(component) => Some(component),
                    Err(LoadError::Invalid { reason, .. }) => {
                        tracing::debug!(plugin = name, "no baseline code: {reason}");
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let compiled = match (cached, baseline) {
            (Some(component), _) => {
                count(&self.counters.cache_hits);
                Compiled {
                    component,
                    upgrade: None,
                }
            }
            (None, Some(component)) => {
                count(&self.counters.baseline_compiled);
                let upgrade = Arc::new(Upgrade::default());
                self.optimize_behind(name, bytes.to_vec(), digest, upgrade.clone());
                Compiled {
                    component,
                    upgrade: Some(upgrade),
                }
            }
            (None, None) => {
                count(&self.counters.compiled);
                // Compiling takes milliseconds to seconds: never hold the memo's lock
                // meanwhile.
                let component = self.compile_for(name, bytes, self.compiler.settings, &self.engine)?;
                if let Some(cache) = &self.cache {
                    cache.put(&digest, &component);
                }
                Compiled {
                    component,
                    upgrade: None,
                }
            }
        };
        self.remember(digest, compiled.clone());
        Ok(compiled)
    }

    /// Refuses a component that holds more than the compile limits allow.
    pub(super) fn check_cost(&self, name: &str, bytes: &[u8]) -> Result<(), LoadError> {
        let limits = &self.compiler.limits;
        let cost = ComponentCost::measure(bytes).map_err(|e| LoadError::Invalid {
            plugin: name.to_owned(),
            reason: e.to_string(),
            source: Some(Box::new(e)),
        })?;
        match limits.exceeded(&cost) {
            None => Ok(()),
            Some((limit, value)) => {
                tracing::warn!(
                    plugin = name,
                    limit = limit.key(),
                    value,
                    "refused before compiling"
                );
                Err(LoadError::TooCostly {
                    plugin: name.to_owned(),
                    limit,
                    value,
                    max: limits.get(limit),
                })
            }
        }
    }

    /// Compiles `bytes` for `engine` (built from `settings`): in the compile worker under
    /// its bounds when there is one, in this process otherwise.
    pub(super) fn compile_for(
        &self,
        name: &str,
        bytes: &[u8],
        settings: EngineSettings,
        engine: &Engine,
    ) -> Result<Component, LoadError> {
        let invalid = |reason: String, source: Option<Cause>| LoadError::Invalid {
            plugin: name.to_owned(),
            reason,
            source,
        };
        let Some(worker) = &self.compiler.worker else {
            return Component::from_binary(engine, bytes)
                .map_err(|e| invalid(format!("{e:#}"), Some(crate::sandbox::cause(e))));
        };
        let started = std::time::Instant::now();
        let code =
            compile::in_worker(worker, settings, &self.compiler.limits, bytes).map_err(|e| match e {
                WorkerError::Invalid(reason) => invalid(reason, None),
                WorkerError::Stopped(limit, max) => {
                    tracing::warn!(plugin = name, limit = limit.key(), max, "compile stopped");
                    LoadError::CompileStopped {
                        plugin: name.to_owned(),
                        limit,
                        max,
                    }
                }
                WorkerError::Failed(reason) => LoadError::Compile {
                    plugin: name.to_owned(),
                    reason,
                },
            })?;
        tracing::debug!(
            plugin = name,
            baseline = settings.baseline,
            ms = started.elapsed().as_millis() as u64,
            bytes = code.len(),
            "compiled in the worker"
        );
        // SAFETY: the bytes are what `Engine::precompile_component` made in the compile
        // worker, a program the embedder named to run for this purpose (trusted as this
        // one is), for an engine built from the same settings by the same function
        // (`engine::config`); wasmtime checks its own header (version, target, settings)
        // before using them.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &code) };
        component.map_err(|e| LoadError::Compile {
            plugin: name.to_owned(),
            reason: format!("the compile worker's code does not load: {e:#}"),
        })
    }

    /// Puts a compiled component in the memo, in place of what it held for `digest`.
    pub(super) fn remember(&self, digest: [u8; 32], compiled: Compiled) {
        let mut memo = crate::lock(&self.memo);
        memo.retain(|(d, _)| *d != digest);
        if memo.len() == MEMO_ENTRIES {
            memo.pop_front();
        }
        memo.push_back((digest, compiled));
    }

    /// Compiles `bytes` with Cranelift on a thread of its own, then caches the result,
    /// remembers it, and hands it to the plugins serving from baseline code.
    pub(super) fn optimize_behind(
        &self,
        name: &str,
        bytes: Vec<u8>,
        digest: [u8; 32],
        upgrade: Arc<Upgrade>,
    ) {
        let host = self.clone();
        let name = name.to_owned();
        let optimize = move || {
            let component = host.compile_for(&name, &bytes, host.compiler.settings, &host.engine);
            let result = component.map_err(|e| e.to_string()).and_then(|component| {
                if let Some(cache) = &host.cache {
                    cache.put(&digest, &component);
                }
                let (code, _) = host
                    .link_component(&name, &component)
                    .map_err(|e| e.to_string())?;
                host.remember(
                    digest,
                    Compiled {
                        component,
                        upgrade: None,
                    },
                );
                Ok(code)
            });
            if let Err(reason) = &result {
                tracing::warn!(plugin = name, %reason, "compiling optimised code failed");
            }
            upgrade.finish(result);
            host.counters.compiled.fetch_add(1, Ordering::Relaxed);
        };
        let spawned = std::thread::Builder::new()
            .name("corral-optimize".into())
            .spawn(optimize);
        if let Err(e) = spawned {
            // The plugin serves from baseline code: slower, never wrong.
            tracing::warn!("cannot start a thread to compile optimised code: {e}");
        }
    }
}
