//! Host functions of the embedder's own: WIT interfaces a program embedding Corral adds
//! to what its plugins may import, next to `corral:plugin/*` and WASI.
//!
//! The embedder generates the host side with `wasmtime::component::bindgen!` in its own
//! crate, implements the generated `Host` trait for [`HostCtx<T>`] (its own state `T`,
//! with the calling plugin's name and config), and hands the generated `add_to_linker`
//! to [`crate::HostBuilder::host_functions`]. See `docs/host-functions.md` and
//! `host/corral/examples/host-functions.rs`.
//!
//! Each registration's data is made afresh for every instance of every plugin (a new
//! plugin, a fresh instance after a trap, a swap), by the function the embedder gave
//! with it, so it lives and dies with the instance whose imports use it. State shared by
//! all plugins (a connection pool, a table) is an `Arc` the function clones in.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::Linker;

use crate::sandbox::SandboxState;

/// The linker an embedder's host functions are added to: every plugin of the host links
/// against it. Its store data is a [`SandboxState`], which an embedder reaches only
/// through the getter [`crate::HostBuilder::host_functions`] hands over.
pub type HostLinker = Linker<SandboxState>;

/// What an embedder's host function sees of the sandbox calling it: the plugin's name
/// and config, and the embedder's own data `T` for this instance.
///
/// Implement the `Host` trait `bindgen!` generated for an interface on `HostCtx<T>`
/// (allowed, since the trait is the embedder's); it dereferences to `T`.
#[derive(Debug)]
pub struct HostCtx<T> {
    plugin: Arc<str>,
    config: Arc<BTreeMap<String, String>>,
    data: T,
}

impl<T> HostCtx<T> {
    /// The name of the plugin whose call is running.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The plugin's config values (the same its `config` import reads).
    pub fn config(&self) -> &BTreeMap<String, String> {
        &self.config
    }

    /// The embedder's data for this instance.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The embedder's data for this instance, to change.
    pub fn data_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

impl<T> std::ops::Deref for HostCtx<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

impl<T> std::ops::DerefMut for HostCtx<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.data
    }
}

/// The getter handed to an embedder's `add_to_linker`: the instance's [`HostCtx<T>`].
pub type HostGetter<T> = fn(&mut SandboxState) -> &mut HostCtx<T>;

/// One call of [`crate::HostBuilder::host_functions`].
pub(crate) trait Registration: Send + Sync {
    /// Adds the embedder's functions to `linker`.
    fn add(&self, linker: &mut HostLinker) -> wasmtime::Result<()>;
    /// The data for a new instance of `plugin`.
    fn data(&self, plugin: &Arc<str>, config: &Arc<BTreeMap<String, String>>) -> Box<dyn Any + Send>;
    /// The type of that data.
    fn data_type(&self) -> TypeId;
}

pub(crate) struct Typed<T, A, D> {
    pub add: A,
    pub data: D,
    pub _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, A, D> Registration for Typed<T, A, D>
where
    T: Send + 'static,
    A: Fn(&mut HostLinker, HostGetter<T>) -> wasmtime::Result<()> + Send + Sync,
    D: Fn(&str, &BTreeMap<String, String>) -> T + Send + Sync,
{
    fn add(&self, linker: &mut HostLinker) -> wasmtime::Result<()> {
        (self.add)(linker, host_ctx::<T>)
    }

    fn data(&self, plugin: &Arc<str>, config: &Arc<BTreeMap<String, String>>) -> Box<dyn Any + Send> {
        Box::new(HostCtx {
            plugin: plugin.clone(),
            config: config.clone(),
            data: (self.data)(plugin, config),
        })
    }

    fn data_type(&self) -> TypeId {
        TypeId::of::<T>()
    }
}

/// The instance's data of type `T`. Every sandbox of a host holds the data of each of its
/// registrations, and only a registration's own functions are given this getter.
fn host_ctx<T: Send + 'static>(state: &mut SandboxState) -> &mut HostCtx<T> {
    state
        .embedder
        .iter_mut()
        .find_map(|data| data.downcast_mut::<HostCtx<T>>())
        .expect("every sandbox holds the data of every host-function registration")
}

/// The embedder's host functions of one host.
#[derive(Default, Clone)]
pub(crate) struct HostFunctions {
    registrations: Vec<Arc<dyn Registration>>,
    /// A linker holding only the embedder's functions, to tell which imports they
    /// provide.
    provided: Option<Arc<HostLinker>>,
}

impl std::fmt::Debug for HostFunctions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostFunctions")
            .field("registrations", &self.registrations.len())
            .finish_non_exhaustive()
    }
}

impl HostFunctions {
    pub fn push(&mut self, registration: Arc<dyn Registration>) {
        self.registrations.push(registration);
    }

    /// Checks the registrations and keeps a linker of theirs for [`HostFunctions::provides`].
    pub fn prepare(&mut self, engine: &wasmtime::Engine) -> Result<(), String> {
        let mut seen = Vec::new();
        for r in &self.registrations {
            if seen.contains(&r.data_type()) {
                return Err(
                    "two `host_functions` registrations have the same data type: give each its own \
                     type, or register their interfaces in one call"
                        .to_owned(),
                );
            }
            seen.push(r.data_type());
        }
        if !self.registrations.is_empty() {
            let mut linker = HostLinker::new(engine);
            self.add_to(&mut linker).map_err(|e| format!("{e:#}"))?;
            self.provided = Some(Arc::new(linker));
        }
        Ok(())
    }

    /// Adds every registration's functions to `linker`.
    pub fn add_to(&self, linker: &mut HostLinker) -> wasmtime::Result<()> {
        for r in &self.registrations {
            r.add(linker)
                .map_err(|e| e.context("cannot add the embedder's host functions"))?;
        }
        Ok(())
    }

    /// The data of every registration for a new instance of `plugin`.
    pub fn data(
        &self,
        plugin: &Arc<str>,
        config: &Arc<BTreeMap<String, String>>,
    ) -> Vec<Box<dyn Any + Send>> {
        self.registrations
            .iter()
            .map(|r| r.data(plugin, config))
            .collect()
    }

    /// Whether the embedder's functions define the import `name` (an interface or a
    /// function), by its exact name: defining it again in a copy of their linker fails
    /// only if it is there.
    pub fn provides(&self, name: &str) -> bool {
        let Some(provided) = &self.provided else {
            return false;
        };
        let mut probe = (**provided).clone();
        probe.allow_shadowing(false);
        probe
            .root()
            .func_wrap(name, |_: wasmtime::StoreContextMut<'_, SandboxState>, (): ()| {
                Ok(())
            })
            .is_err()
    }
}
