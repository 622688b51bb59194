//! The engine's settings: the one function that builds every wasmtime [`Config`] Corral
//! uses.
//!
//! Compiled code is only valid in an engine of the same settings (fuel and epochs change
//! the code; so do the enabled proposals), and code is made in three places — the host's
//! Cranelift engine, its Winch engine for the baseline tier, and the compile worker, a
//! child process that compiles for either (see the `compile` module). All three build
//! their `Config` here from an [`EngineSettings`], so they cannot drift apart; the
//! worker is handed the same settings and wasmtime checks the header of what it returns.
//!
//! What is turned off, and why, is recorded in docs/security.md ("wasmtime: version and
//! advisories"): proposals no world and no guest here needs only widen what a hostile
//! component can reach in the compiler and the runtime, and component-model concurrency
//! (`Config::concurrency_support`) is off because Corral's worlds are synchronous.

use serde::{Deserialize, Serialize};
use wasmtime::Config;

/// What an engine is built for: the settings that change compiled code or what is
/// allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EngineSettings {
    /// Sandboxes come from a pool of this many (`HostBuilder::pooling`).
    pub pooling: Option<u32>,
    /// Winch's baseline code rather than Cranelift's optimised code.
    pub baseline: bool,
}

/// Bytes of a pooled memory or table reset in place rather than released to the kernel.
const POOL_KEEP_RESIDENT: usize = 256 << 10;

/// The largest linear memory one sandbox may have under pooling.
pub(crate) const POOL_MAX_MEMORY: usize = 256 << 20;

/// The configuration for `settings`. Every engine Corral makes is made from this.
pub(crate) fn config(settings: &EngineSettings) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        // Corral's worlds are synchronous: no component-model async (streams, futures,
        // tasks), whose runtime is where several advisories since 48.0.8 live, and
        // whose bookkeeping doubles the cost of entering a component.
        .concurrency_support(false)
        // Proposals that no world needs and no guest here uses (Rust, Python and
        // JavaScript guests all load without them; tests/all/engine.rs): each is more
        // compiler and runtime a hostile component could reach.
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .wasm_tail_call(false)
        .wasm_relaxed_simd(false)
        .wasm_features(wasmtime::WasmFeatures::FUNCTION_REFERENCES, false)
        // Built without the `gc` feature, wasmtime 48.0.8 still takes the GC proposal's
        // function subtypes and aborts the process on their run-time check
        // (GHSA-rc4p-x33f-vpr2): refused at validation instead.
        .wasm_gc(false)
        .wasm_custom_page_sizes(false)
        .wasm_wide_arithmetic(false)
        .wasm_stack_switching(false)
        .wasm_shared_everything_threads(false)
        .wasm_features(wasmtime::WasmFeatures::CM_ASYNC, false)
        .wasm_component_model_error_context(false)
        .wasm_component_model_gc(false);
    if let Some(sandboxes) = settings.pooling {
        // A Rust guest for wasm32-wasip2 holds about 5 core instances, 2 memories and 2
        // tables (its code, the WASI adapter and their shims); a Python or JavaScript
        // one holds more. Leave room for twice that.
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(sandboxes)
            .total_core_instances(sandboxes.saturating_mul(12))
            .total_memories(sandboxes.saturating_mul(4))
            .total_tables(sandboxes.saturating_mul(6))
            .max_memories_per_module(2)
            .max_tables_per_module(2)
            .table_elements(100_000)
            .max_memory_size(POOL_MAX_MEMORY)
            // Reset the pages an instance dirtied with memset, found by the PAGEMAP_SCAN
            // ioctl where the kernel has it (Linux 6.7), instead of handing them back to
            // the kernel: the next instance in the slot then takes no page faults on them.
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(POOL_KEEP_RESIDENT)
            .table_keep_resident(POOL_KEEP_RESIDENT);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    if settings.baseline {
        // The same settings (fuel and epochs are enforced alike), another compiler.
        // Winch leaves the trampolines between host and guest to Cranelift: unoptimised,
        // they compile a tenth faster (BENCHMARKS.md).
        config
            .strategy(wasmtime::Strategy::Winch)
            .cranelift_opt_level(wasmtime::OptLevel::None);
    }
    config
}
