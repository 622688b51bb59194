//! Bounded compiles: what a component may hold before it is compiled, and how long and
//! how much memory compiling it may take.
//!
//! Compiling is the one thing a host does with a plugin before any sandbox limit
//! applies, and its cost is not linear in the file: Cranelift's register allocator
//! and optimiser grow faster than the function they work on, so a valid 5 MiB
//! component of the right world (one huge function) took 15 s and 2.3 GiB to compile,
//! and a slightly larger one was still compiling after two minutes. Two bounds close
//! that, and both hold for `corral check` as much as for the watch directory:
//!
//! 1. **What a component may hold** ([`CompileLimits`]), counted by `wasmparser` before
//!    anything is compiled, in one linear pass over the bytes (tens of milliseconds for
//!    the 18 MB Python guest): the total code, the number of functions, the largest
//!    function body, locals and block nesting per function, data and element segments,
//!    core modules and components, instances and types. A component over any of them is
//!    refused with [`LoadError::TooCostly`], naming the limit and the value. These apply
//!    in every host.
//! 2. **The compile itself**: with a [`CompileWorker`], each compile (Cranelift's, and
//!    Winch's for the baseline tier) runs in a child process — the embedding program
//!    started again with an argument of its choosing, which calls
//!    [`compile_worker_main`] — under `RLIMIT_DATA` ([`CompileLimits::memory_bytes`]),
//!    `RLIMIT_CPU` and a wall-clock timeout ([`CompileLimits::time`]). The worker reads
//!    the component on stdin and writes wasmtime's precompiled bytes on stdout; the host
//!    loads them into its own engine of identical settings (the `engine` module builds
//!    both) and keeps them in the disk cache, so a cache hit compiles nothing. A compile
//!    past its bound is killed and refused with [`LoadError::CompileStopped`]; the
//!    host's own memory never holds the compiler's working set. `corral run`, `check` and
//!    `call` turn the worker on; a library host compiles in-process unless given one,
//!    and then only the first bound holds.
//!
//! `RLIMIT_DATA`, not `RLIMIT_AS`: wasmtime reserves address space it never touches
//! (guard regions, the pooling allocator's slots), which `RLIMIT_AS` would count; the
//! kernel counts the heap and every private writable mapping in `RLIMIT_DATA`, which
//! is where a compiler's memory goes.

mod cost;
mod limits;
mod worker;

pub use cost::ComponentCost;
pub use limits::{CompileLimit, CompileLimits};
pub use worker::{CompileWorker, compile_worker_main};
pub(crate) use worker::{WorkerError, in_worker};
