//! The data of an instance's store: everything the guest can reach.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::current::Current;
use super::deadline::Deadline;
use super::output::Output;
use super::store::KvStore;
use super::{Limits, Violation};
use crate::contract::bindings::corral::plugin::types::Failure;
use crate::contract::message::Message;

/// Bytes counted for one table element against the memory cap.
const TABLE_ELEMENT_BYTES: usize = 8;

/// The host-side state of one instance: what its imports read and write (its wasmtime
/// store's data). Opaque outside Corral: an embedder's host functions reach their own
/// data through [`crate::HostCtx`].
pub struct SandboxState {
    pub(crate) plugin: Arc<str>,
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) output: Output,
    pub(crate) config: Arc<BTreeMap<String, String>>,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) limits: Arc<Limits>,
    /// Messages emitted by the call in progress.
    pub(crate) emitted: Vec<Message>,
    /// How many messages the call in progress may emit.
    pub(crate) emit_cap: usize,
    /// Set when the call in progress tried to emit past the emit cap.
    pub(crate) emit_refused: bool,
    /// How the guest broke the contract in the call in progress, if it did (an emitted
    /// message the host refused).
    pub(crate) violation: Option<Violation>,
    /// The message the call in progress was given, lent without a copy; the guest's
    /// `borrow<message>` handle always refers to it.
    pub(crate) message: Current,
    /// The data of the embedder's host functions, one per registration.
    pub(crate) embedder: Vec<Box<dyn std::any::Any + Send>>,
    /// When the call in progress must end, for the WASI calls that can block.
    pub(crate) deadline: Deadline,
    /// The failures the `process-batch` call in progress reported.
    pub(crate) reports: Reports,
    /// The exports called by name in this instance, each found and type-checked once:
    /// its name, the call's types and its function (see the `export` module).
    pub(crate) found: Vec<(Box<str>, std::any::TypeId, Box<dyn std::any::Any + Send>)>,
}

impl SandboxState {
    /// The WASI context, its resources and the deadline, borrowed apart.
    pub(crate) fn bounded(&mut self) -> (&mut WasiCtx, &mut ResourceTable, &mut Deadline) {
        (&mut self.wasi, &mut self.table, &mut self.deadline)
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// What a `process-batch` call reports through `failures.report`: accepted only during
/// the call, each within the batch and after the one before (so there are never more
/// than the batch's messages).
#[derive(Debug, Default)]
pub(crate) struct Reports {
    /// The number of messages in the batch being processed; `None` outside
    /// `process-batch`.
    pub batch: Option<u32>,
    /// The failures reported so far, by increasing index.
    pub failures: Vec<(u32, Failure)>,
}

/// Enforces [`Limits::memory_bytes`] over all of an instance's memories and tables, and
/// remembers a refusal: a Rust guest whose allocation is refused aborts with a plain
/// `unreachable` trap, so the refusal is the only reliable sign that memory was the cause.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    pub(super) cap: usize,
    pub current: usize,
    pub peak: usize,
    /// The total the guest asked for when it was refused, during the call in progress.
    pub refused: Option<usize>,
}

impl MemoryLimiter {
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.current.saturating_sub(current).saturating_add(desired);
        if total > self.cap {
            self.refused = Some(total);
            return false;
        }
        self.current = total;
        self.peak = self.peak.max(total);
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("plugin", &self.plugin)
            .finish_non_exhaustive()
    }
}

/// Runs `call` with `message` readable through the state's [`Current`].
pub(crate) fn lend<R>(
    store: &mut Store<SandboxState>,
    message: &Message,
    call: impl FnOnce(&mut Store<SandboxState>) -> R,
) -> R {
    /// Clears the pointer however the call ends.
    struct Lent<'s>(&'s mut Store<SandboxState>);

    impl Drop for Lent<'_> {
        fn drop(&mut self) {
            self.0.data_mut().message = Current(None);
        }
    }

    let lent = Lent(store);
    lent.0.data_mut().message = Current(Some(NonNull::from(message)));
    call(&mut *lent.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_every_memory_and_remembers_a_refusal() {
        let mut l = MemoryLimiter {
            cap: 100,
            current: 0,
            peak: 0,
            refused: None,
        };
        assert!(l.grow(0, 60));
        assert!(l.grow(0, 40), "a second memory fits exactly");
        assert!(!l.grow(60, 61));
        assert_eq!((l.current, l.peak, l.refused), (100, 100, Some(101)));
    }
}
