//! What instances are made from: a component compiled, linked and pre-instantiated
//! ([`Code`]), where its exports are, and the entry points of a live instance.

use std::marker::PhantomData;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, ComponentType, Func, Instance, InstancePre, Lift, Lower,
    TypedFunc,
};

use super::SandboxState;
use crate::contract::batch::Layout;
use crate::contract::bindings::corral::plugin::types::{Batch, BatchFailure, Decoded, Failure, RawBatch};
use crate::contract::{self, Filter, FilterIndices, STATE_INTERFACE};

/// Which compiler made the code a plugin's instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Winch's baseline code, compiled fast, serving while Cranelift's compiles.
    Baseline,
    /// Cranelift's optimised code.
    Optimized,
}

impl Tier {
    /// `baseline` or `optimized`, as the admin API and metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }
}

/// A component compiled, checked against the world and linked: what instances are made
/// from.
#[derive(Clone)]
pub(crate) struct Code {
    pub pre: InstancePre<SandboxState>,
    pub exports: Arc<Exports>,
    pub tier: Tier,
}

/// `state.save` and `state.restore`, when the plugin exports them.
#[derive(Clone, Copy)]
pub(crate) struct StateFuncs {
    pub save: TypedFunc<(), (Result<Vec<u8>, String>,)>,
    pub restore: TypedFunc<(Vec<u8>,), (Result<(), String>,)>,
}

/// An export that takes one parameter, lent to it for the call rather than moved, so that
/// the plugin's buffers are refilled for the next call instead of allocated again.
///
/// A [`TypedFunc`] names its parameter's lifetime in its type, so one kept from the
/// instance's start could only take a `'static` borrow. This keeps the function, its
/// type checked once when the instance starts, and makes the typed function for each
/// call's borrow. (Sharing the buffer through an `Arc` instead cost three atomic
/// read-modify-writes a call: a clone, its drop and the `get_mut` before refilling.)
pub(crate) struct Lent<P: ?Sized, R> {
    func: Func,
    types: PhantomData<fn(&P) -> R>,
}

impl<P: ?Sized, R> Clone for Lent<P, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: ?Sized, R> Copy for Lent<P, R> {}

impl<P, R> Lent<P, R>
where
    P: ComponentType + Lower + ?Sized,
    R: ComponentNamedList + Lift,
{
    /// The export at `index`, if it takes a `P` and returns `R`.
    pub fn get(
        instance: &Instance,
        store: &mut Store<SandboxState>,
        index: &ComponentExportIndex,
    ) -> wasmtime::Result<Self> {
        let typed: TypedFunc<(&P,), R> = instance.get_typed_func(store, index)?;
        Ok(Lent {
            func: *typed.func(),
            types: PhantomData,
        })
    }

    /// Calls the export with `param`, lent for the call.
    pub fn call(&self, store: &mut Store<SandboxState>, param: &P) -> wasmtime::Result<R> {
        // SAFETY: `get` checked `func` against `(&P,) -> R` through `get_typed_func`.
        // That check compares component types, which a borrow's lifetime is not part
        // of, so it holds for `(&P,)` with this call's lifetime as well.
        #[allow(unsafe_code)]
        let typed = unsafe { TypedFunc::<(&P,), R>::new_unchecked(self.func) };
        typed.call(store, (param,))
    }
}

/// `batch-filter`'s entry point, by the layout it takes.
#[derive(Clone, Copy)]
pub(crate) enum ProcessBatch {
    /// A `message-batch`, one list; the failures come through `failures.report`.
    Flat(Lent<[u8], ()>),
    /// A `message-batch`, the failures returned (plugins built before `failures`).
    FlatReturning(Lent<[u8], (Vec<BatchFailure>,)>),
    /// The `batch` record of plugins built before the `message-batch`.
    Lists(Lent<Batch, (Vec<BatchFailure>,)>),
}
/// `decoder`'s entry point, its raw batch lent likewise.
pub(crate) type Decode = Lent<RawBatch, (Decoded,)>;
pub(crate) type TimerEvent = TypedFunc<(i64,), (Result<(), Failure>,)>;

/// An instance's entry points, by world.
pub(crate) enum Entries {
    /// `filter`: one message per call, read through the `message` resource.
    Filter(Filter),
    /// `batch-filter`: one or more messages per call, laid out flat.
    Batch {
        process: ProcessBatch,
        timer: TimerEvent,
    },
    /// `decoder`: raw records in, messages out, laid out in a [`RawBatch`].
    Decoder { decode: Decode, timer: TimerEvent },
}

/// Where a plugin's exports are, found once at load so that a fresh instance does not
/// look them up by name again.
pub(crate) struct Exports {
    pub(super) world: WorldExports,
    /// `state.save` and `state.restore`, when the plugin exports the interface.
    pub(super) state: Option<(ComponentExportIndex, ComponentExportIndex)>,
}

pub(super) enum WorldExports {
    Filter(FilterIndices),
    Batch {
        process: ComponentExportIndex,
        layout: Layout,
        timer: ComponentExportIndex,
    },
    Decoder {
        decode: ComponentExportIndex,
        timer: ComponentExportIndex,
    },
}

impl Exports {
    /// The exports of `pre`'s component; an error when it lacks an entry point, or
    /// exports the state interface without both of its functions.
    pub fn of(pre: &InstancePre<SandboxState>) -> wasmtime::Result<Exports> {
        let component = pre.component();
        let export = |interface: Option<&ComponentExportIndex>, name: &str| {
            component
                .get_export_index(interface, name)
                .ok_or_else(|| wasmtime::format_err!("no export `{name}`"))
        };
        let state = match component.get_export_index(None, STATE_INTERFACE) {
            None => None,
            Some(interface) => {
                let func = |name: &str| {
                    export(Some(&interface), name)
                        .map_err(|_| wasmtime::format_err!("`{STATE_INTERFACE}` does not export `{name}`"))
                };
                Some((func("save")?, func("restore")?))
            }
        };
        let world = match (
            component.get_export_index(None, contract::DECODE),
            component.get_export_index(None, contract::PROCESS_BATCH),
        ) {
            (Some(decode), _) => WorldExports::Decoder {
                decode,
                timer: export(None, contract::TIMER_EVENT)?,
            },
            (None, Some(process)) => WorldExports::Batch {
                process,
                layout: batch_layout(pre),
                timer: export(None, contract::TIMER_EVENT)?,
            },
            (None, None) => WorldExports::Filter(FilterIndices::new(pre)?),
        };
        Ok(Exports { world, state })
    }

    /// Whether the plugin takes messages in batches (the `batch-filter` world).
    pub fn batches(&self) -> bool {
        matches!(self.world, WorldExports::Batch { .. })
    }

    /// Whether the plugin is a decoder (the `decoder` world).
    pub fn decodes(&self) -> bool {
        matches!(self.world, WorldExports::Decoder { .. })
    }
}

/// The layout `pre`'s `process-batch` takes: the `batch` record of plugins built before
/// the `message-batch`; the `message-batch` with its failures returned, as plugins were
/// built before `failures`; or what the world says today (a wrong type is told apart
/// when the typed function is looked up, and was refused at load).
fn batch_layout(pre: &InstancePre<SandboxState>) -> Layout {
    use wasmtime::component::types::{ComponentItem, Type};
    let component = pre.component();
    let ty = component.component_type();
    match ty
        .get_export(component.engine(), contract::PROCESS_BATCH)
        .map(|e| e.ty)
    {
        Some(ComponentItem::ComponentFunc(func))
            if matches!(func.params().next(), Some((_, Type::Record(_)))) =>
        {
            Layout::Lists
        }
        Some(ComponentItem::ComponentFunc(func)) if func.results().len() > 0 => Layout::FlatReturning,
        _ => Layout::Flat,
    }
}
