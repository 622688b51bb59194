//! Per-message cost of one filter run four ways (and variants), side by side in one
//! process:
//!
//! - (a) native: the filter as a Rust function;
//! - (b) bare wasmtime: the `bench-filter` guest's `process-message` through typed
//!   bindings with the plainest host (no limits, no stats, no output capture,
//!   component-model concurrency off as in Corral), with fuel off, then on, then epochs
//!   on instead, then both (bm), to price each; (b-batch1) and (b-batch64) the `bench-batch` guest's
//!   `process-batch` the same way, and (b-export) the `custom-export` guest's `add`:
//!   the same exports Corral's rows call, with nothing of Corral's around them, and
//!   (bm-batch1), (bm-batch64), (bm-export) metered as Corral meters (fuel and epochs, armed per
//!   call), which leaves Corral's own code as the difference;
//! - (c) Corral: the same guest through [`corral::Plugin::process_message`], every limit,
//!   the stats and the output cap on; then the same filter for the `batch-filter` world
//!   (the `bench-batch` guest, written with the SDK's `Plugin` trait) one message per
//!   call (c1) and 64 per call (c64, [`corral::Plugin::process_messages`], as the
//!   daemon's worker hands over what queued up), (c-base) one per call on the
//!   baseline (Winch) code a plugin new to the host serves from, and (c-export) `add`
//!   by name through [`corral::Plugin::call_export`];
//! - (d) Lua: the same filter as Heka ran it (mlua, vendored Lua 5.4), reading the
//!   message through a `read_message(name)` host function that parses the name on each
//!   call, with an instruction-count hook and an allocator cap as Heka had; (d-fast) the
//!   fastest honest Lua found: the same hook and cap, but `read_message` a plain C
//!   function answering names resolved once, allocating nothing.
//!
//! The filter sums the numeric field `value`, counts messages per type and emits a
//! summary every 1,000th message. Every way that runs it must end with the same summary;
//! the bench checks that before printing anything. Then every Corral row is given
//! against the faster Lua and against the bare call of its export, with issue 17's
//! goals, each ratio the median of the two ways' ratios round by round (see `ROUNDS`).
//! Run with `just bench` or
//! `cargo bench -p corral-test-guests --features lua-bench --bench dispatch`;
//! `dispatch WAY…` (label prefixes) makes and runs only those ways, and
//! `CORRAL_BENCH_CALLS=N` sets how many messages, for a profiler (BENCHMARKS.md counts
//! instructions per message with `valgrind --tool=callgrind
//! --toggle-collect='*Way>::process'`). `CORRAL_BENCH_PERFMAP=1` makes the bare rows'
//! engines write `/tmp/perf-PID.map`, which names each compiled guest function
//! (`wasm[0]::function[N]`) for a profiler; the function's name is in the name section
//! of the guest built with `CARGO_PROFILE_RELEASE_STRIP=none`.

use std::cell::{Cell, RefCell};

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use corral::{Host, Message, PluginOptions, Value};

/// Messages in the working set (Heka-style: a type, a logger, a payload, four fields).
const MESSAGES: usize = 10_000;
/// Measured rounds per way, interleaved: every way runs one round, then every way the
/// next. A way's figure is its median round, and a ratio of two ways the median of their
/// ratios round by round: rounds next to each other in time share whatever the machine
/// was doing, so the ratio holds where the ways' own figures swing (a VM's speed moves
/// by 50–100 % over a run). Many short rounds keep the rounds of one ratio close.
const ROUNDS: usize = 61;
/// Messages per round: a multiple of 64, so that a round of (c64) is whole batches.
const PER_ROUND: usize = 6_400;
const SUMMARY_EVERY: u64 = 1_000;

fn messages() -> Vec<Message> {
    const TYPES: [&str; 8] = [
        "nginx.access",
        "nginx.error",
        "app.request",
        "app.login",
        "db.query",
        "db.slow",
        "cache.miss",
        "cache.hit",
    ];
    (0..MESSAGES)
        .map(|i| {
            Message {
                timestamp: 1_700_000_000_000_000_000 + i as i64,
                type_: TYPES[i * 7 % TYPES.len()].into(),
                logger: "bench".into(),
                severity: 6,
                payload: format!("GET /item/{i} 200"),
                fields: Vec::new(),
            }
            .with_field("status", Value::Int(200))
            .with_field("path", Value::String(format!("/item/{i}")))
            .with_field("bytes", Value::Int(512 + i as i64 % 4096))
            .with_field("value", Value::Int(i as i64 % 100))
        })
        .collect()
}

/// What every way ends with: the last summary, as (sum, seen, per-type counts).
type Summary = (i64, i64, BTreeMap<String, i64>);

fn summary_of(message: &Message) -> Summary {
    let int = |name: &str| match message.field(name) {
        Some(Value::Int(v)) => *v,
        other => panic!("summary field {name}: {other:?}"),
    };
    let per_type = message
        .fields
        .iter()
        .filter(|f| f.name != "sum" && f.name != "seen")
        .map(|f| match f.value {
            Value::Int(v) => (f.name.clone(), v),
            ref other => panic!("{other:?}"),
        })
        .collect();
    (int("sum"), int("seen"), per_type)
}

/// A way to run the filter over one message.
trait Way {
    fn name(&self) -> &'static str;
    fn process(&mut self, index: usize);
    /// Ends a round: a way that holds messages back for a batch hands them over.
    fn finish(&mut self) {}
    /// The code Corral's plugin runs.
    fn tier(&self) -> Option<corral::Tier> {
        None
    }
    /// Whether it runs the filter, and so must end with the same summary as the others.
    fn checked(&self) -> bool {
        true
    }
    fn last_summary(&self) -> Option<Summary>;
}

// (a) Native.

#[derive(Default)]
struct Totals {
    sum: i64,
    seen: u64,
    per_type: BTreeMap<String, i64>,
}

struct Native {
    messages: Arc<Vec<Message>>,
    totals: Totals,
    last: Option<Message>,
}

impl Way for Native {
    fn name(&self) -> &'static str {
        "(a) native Rust"
    }

    fn process(&mut self, index: usize) {
        let message = &self.messages[index];
        let value = match message.field("value") {
            Some(Value::Int(v)) => *v,
            Some(Value::Float(v)) => *v as i64,
            _ => 0,
        };
        let t = &mut self.totals;
        t.sum += value;
        t.seen += 1;
        match t.per_type.get_mut(&message.type_) {
            Some(count) => *count += 1,
            None => {
                t.per_type.insert(message.type_.clone(), 1);
            }
        }
        if t.seen.is_multiple_of(SUMMARY_EVERY) {
            let mut summary = Message::new("bench.summary")
                .with_field("sum", Value::Int(t.sum))
                .with_field("seen", Value::Int(t.seen as i64));
            for (type_, count) in &t.per_type {
                summary = summary.with_field(type_, Value::Int(*count));
            }
            self.last = Some(summary);
        }
    }

    fn last_summary(&self) -> Option<Summary> {
        self.last.as_ref().map(summary_of)
    }
}

// (b) Bare wasmtime.

mod bare {
    wasmtime::component::bindgen!({ world: "filter", path: "../wit" });
}

use bare::corral::plugin::{config, emit, log, store, types};
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The message of the call in progress, in the working set (`MESSAGE_SET`).
    current: usize,
    last: Option<types::OutMessage>,
    /// What a batch reported through `failures.report`.
    failures: Vec<(u32, types::Failure)>,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn to_value(v: &Value) -> types::Value {
    match v {
        Value::String(s) => types::Value::String(s.clone()),
        Value::Bytes(b) => types::Value::Bytes(b.clone()),
        Value::Int(i) => types::Value::Int(*i),
        Value::Float(f) => types::Value::Float(*f),
        Value::Bool(b) => types::Value::Bool(*b),
    }
}

/// The `message` resource, defined by hand as Corral defines it (`add_message_to_linker`
/// in `sandbox/imports.rs`), so that this baseline copies no string on the host either:
/// the strings are lowered from the working set, `field`'s name read in the guest.
fn add_bare_message(linker: &mut Linker<BareState>) -> wasmtime::Result<()> {
    type Cx<'a> = wasmtime::StoreContextMut<'a, BareState>;
    type Handle = (Resource<types::Message>,);
    fn current(cx: &Cx<'_>) -> &'static Message {
        &MESSAGE_SET.get().expect("made in main")[cx.data().current]
    }
    let mut types = linker.instance("corral:plugin/types@0.1.0")?;
    types.resource(
        "message",
        wasmtime::component::ResourceType::host::<types::Message>(),
        |_, _| Ok(()),
    )?;
    types.func_wrap("[method]message.timestamp", |cx: Cx<'_>, _: Handle| {
        Ok((current(&cx).timestamp,))
    })?;
    types.func_wrap("[method]message.type", |cx: Cx<'_>, _: Handle| {
        Ok((current(&cx).type_.as_str(),))
    })?;
    types.func_wrap("[method]message.logger", |cx: Cx<'_>, _: Handle| {
        Ok((current(&cx).logger.as_str(),))
    })?;
    types.func_wrap("[method]message.severity", |cx: Cx<'_>, _: Handle| {
        Ok((current(&cx).severity,))
    })?;
    types.func_wrap("[method]message.payload", |cx: Cx<'_>, _: Handle| {
        Ok((current(&cx).payload.as_str(),))
    })?;
    types.func_wrap(
        "[method]message.field",
        |cx: Cx<'_>, (_, name): (Resource<types::Message>, wasmtime::component::WasmStr)| {
            let name = name.to_str(&cx)?;
            Ok((current(&cx).field(&name).map(to_value),))
        },
    )?;
    types.func_wrap("[method]message.fields", |cx: Cx<'_>, _: Handle| {
        let fields: Vec<types::Field> = current(&cx)
            .fields
            .iter()
            .map(|f| types::Field {
                name: f.name.clone(),
                value: to_value(&f.value),
            })
            .collect();
        Ok((fields,))
    })?;
    Ok(())
}

impl log::Host for BareState {
    fn log(&mut self, _: log::Level, _: String) {}
}

impl config::Host for BareState {
    fn get(&mut self, _: String) -> Option<String> {
        None
    }
    fn entries(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl store::Host for BareState {
    fn get(&mut self, _: String) -> Result<Option<Vec<u8>>, store::Error> {
        Ok(None)
    }
    fn set(&mut self, _: String, _: Vec<u8>) -> Result<(), store::Error> {
        Ok(())
    }
    fn delete(&mut self, _: String) -> Result<bool, store::Error> {
        Ok(false)
    }
    fn list_keys(&mut self, _: String) -> Result<Vec<String>, store::Error> {
        Ok(Vec::new())
    }
}

impl emit::Host for BareState {
    fn emit(&mut self, message: types::OutMessage) {
        self.last = Some(message);
    }
}

/// Bare wasmtime calling the guest's `timer-event`, which does nothing: the price of
/// entering the guest and leaving it, without the two host calls a message costs.
struct Empty(Bare);

impl Way for Empty {
    fn name(&self) -> &'static str {
        "(b0) bare, an empty call"
    }

    fn process(&mut self, _: usize) {
        self.0
            .filter
            .call_timer_event(&mut self.0.store, 0)
            .unwrap()
            .unwrap();
    }

    fn checked(&self) -> bool {
        false
    }

    fn last_summary(&self) -> Option<Summary> {
        None
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Interrupt {
    None,
    Fuel,
    Epoch,
    /// Fuel and epochs both, as Corral runs every guest: the bare call with the same
    /// metering, which prices Corral's own code apart from wasmtime's.
    Both,
}

impl Interrupt {
    fn fuel(self) -> bool {
        matches!(self, Interrupt::Fuel | Interrupt::Both)
    }

    fn epochs(self) -> bool {
        matches!(self, Interrupt::Epoch | Interrupt::Both)
    }

    /// Arms one call's budgets, as Corral and any embedder bounding each call must: a
    /// fuel budget and an epoch deadline (far away: no epoch thread runs here).
    fn arm(self, store: &mut Store<BareState>) {
        if self.fuel() {
            store.set_fuel(u64::MAX).unwrap();
        }
        if self.epochs() {
            store.set_epoch_deadline(u64::MAX);
        }
    }
}

struct Bare {
    label: &'static str,
    interrupt: Interrupt,
    store: Store<BareState>,
    filter: bare::Filter,
}

/// The plainest host for `wasm`: its engine (component-model concurrency off, as in
/// Corral), a linker with WASI and Corral's imports, and a store.
fn bare_store(interrupt: Interrupt, wasm: &[u8]) -> (Store<BareState>, Component, Linker<BareState>) {
    let mut config = Config::new();
    config
        .concurrency_support(false)
        .consume_fuel(interrupt.fuel())
        .epoch_interruption(interrupt.epochs());
    // For a profiler: where each guest function's code is (see the module's docs).
    if std::env::var_os("CORRAL_BENCH_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, wasm).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    {
        use wasmtime::component::HasSelf;
        add_bare_message(&mut linker).unwrap();
        log::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s).unwrap();
        config::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s).unwrap();
        store::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s).unwrap();
        emit::add_to_linker::<_, HasSelf<BareState>>(&mut linker, |s| s).unwrap();
    }
    // `batch-filter`'s one import more: the failures of a batch, kept as reported.
    linker
        .instance("corral:plugin/failures@0.1.0")
        .unwrap()
        .func_wrap(
            "report",
            |mut cx: wasmtime::StoreContextMut<'_, BareState>, (index, failure): (u32, types::Failure)| {
                cx.data_mut().failures.push((index, failure));
                Ok(())
            },
        )
        .unwrap();
    let state = BareState {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        current: 0,
        last: None,
        failures: Vec::new(),
    };
    let mut store = Store::new(&engine, state);
    interrupt.arm(&mut store);
    (store, component, linker)
}

/// The summary a bare way's guest emitted last.
fn bare_summary(state: &BareState) -> Option<Summary> {
    let out = state.last.as_ref()?;
    let mut message = Message::new(&out.type_);
    for f in &out.fields {
        let value = match &f.value {
            types::Value::Int(i) => Value::Int(*i),
            other => panic!("{other:?}"),
        };
        message = message.with_field(&f.name, value);
    }
    Some(summary_of(&message))
}

impl Bare {
    fn new(label: &'static str, interrupt: Interrupt, wasm: &[u8]) -> Bare {
        let (mut store, component, linker) = bare_store(interrupt, wasm);
        let filter = bare::Filter::instantiate(&mut store, &component, &linker).unwrap();
        Bare {
            label,
            interrupt,
            store,
            filter,
        }
    }
}

impl Way for Bare {
    fn name(&self) -> &'static str {
        self.label
    }

    fn process(&mut self, index: usize) {
        self.store.data_mut().current = index;
        // Corral arms every call; so does this, to price the same work.
        self.interrupt.arm(&mut self.store);
        self.filter
            .call_process_message(&mut self.store, Resource::new_borrow(0))
            .unwrap()
            .unwrap();
    }

    fn last_summary(&self) -> Option<Summary> {
        bare_summary(self.store.data())
    }
}

/// (b-batch) Bare wasmtime calling the `bench-batch` guest's `process-batch`, `size`
/// messages per call, the batch laid out by Corral's own layout code
/// ([`corral::lay_out_message_batch`]): the same export Corral's (c1) and (c64) call,
/// handed the same bytes, with nothing else of Corral's around it.
struct BareBatch {
    label: &'static str,
    interrupt: Interrupt,
    store: Store<BareState>,
    /// `process-batch`, its type checked at the start as `(&[u8],) -> ...`: it is called
    /// with the batch lent, as Corral calls it (see `Lent` in `sandbox/code.rs`).
    process: wasmtime::component::Func,
    batch: Vec<u8>,
    size: usize,
    pending: Vec<usize>,
    /// The pending messages, kept to be refilled without allocating.
    run: Vec<&'static Message>,
}

impl BareBatch {
    fn new(label: &'static str, interrupt: Interrupt, size: usize, wasm: &[u8]) -> BareBatch {
        let (mut store, component, linker) = bare_store(interrupt, wasm);
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let process: BatchFunc<'_> = instance.get_typed_func(&mut store, "process-batch").unwrap();
        BareBatch {
            label,
            interrupt,
            store,
            process: *process.func(),
            batch: Vec::new(),
            size,
            pending: Vec::new(),
            run: Vec::new(),
        }
    }
}

/// `process-batch` taking a `message-batch` lent for the call.
type BatchFunc<'a> = wasmtime::component::TypedFunc<(&'a [u8],), ()>;

impl Way for BareBatch {
    fn name(&self) -> &'static str {
        self.label
    }

    fn process(&mut self, index: usize) {
        self.pending.push(index);
        if self.pending.len() == self.size {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let messages: &'static Vec<Message> = MESSAGE_SET.get().expect("made in main");
        self.run.clear();
        self.run.extend(self.pending.iter().map(|&i| &messages[i]));
        // Laid out by Corral's own code, refilling the last list and padding it as a
        // plugin's call does, so that the baseline does exactly the work Corral does
        // (and the SDK's guest is handed its last list here too).
        assert!(corral::lay_out_message_batch(&mut self.batch, &self.run));
        self.interrupt.arm(&mut self.store);
        // SAFETY: `new` checked the function as a `BatchFunc`; the check compares
        // component types, which the borrow's lifetime is not part of.
        #[allow(unsafe_code)]
        let process = unsafe { BatchFunc::new_unchecked(self.process) };
        process.call(&mut self.store, (&self.batch[..],)).unwrap();
        assert!(self.store.data().failures.is_empty());
        self.pending.clear();
    }

    fn last_summary(&self) -> Option<Summary> {
        bare_summary(self.store.data())
    }
}

/// (b-export) Bare wasmtime calling the `custom-export` guest's `add` by its typed
/// function, (bm-export) the same metered as Corral meters, and (c-export) the same
/// through [`corral::Plugin::call_export`]: the embedder's by-name call, priced against
/// the plainest call of the same export.
struct BareAdd {
    label: &'static str,
    interrupt: Interrupt,
    store: Store<BareState>,
    add: wasmtime::component::TypedFunc<(i32, i32), (i32,)>,
}

impl BareAdd {
    fn new(label: &'static str, interrupt: Interrupt, wasm: &[u8]) -> BareAdd {
        let (mut store, component, linker) = bare_store(interrupt, wasm);
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let add = instance.get_typed_func(&mut store, "add").unwrap();
        BareAdd {
            label,
            interrupt,
            store,
            add,
        }
    }
}

impl Way for BareAdd {
    fn name(&self) -> &'static str {
        self.label
    }

    fn process(&mut self, index: usize) {
        self.interrupt.arm(&mut self.store);
        let (sum,) = self.add.call(&mut self.store, (index as i32, 1)).unwrap();
        assert_eq!(sum, index as i32 + 1);
    }

    fn checked(&self) -> bool {
        false
    }

    fn last_summary(&self) -> Option<Summary> {
        None
    }
}

struct CorralAdd(Corral);

impl Way for CorralAdd {
    fn name(&self) -> &'static str {
        "(c-export) Corral, call_export add"
    }

    fn process(&mut self, index: usize) {
        let ((sum,), _) = self
            .0
            .plugin
            .call_export::<(i32, i32), (i32,)>("add", (index as i32, 1))
            .unwrap();
        assert_eq!(sum, index as i32 + 1);
    }

    fn checked(&self) -> bool {
        false
    }

    fn last_summary(&self) -> Option<Summary> {
        None
    }
}

// (c) Corral.

struct Corral {
    label: &'static str,
    messages: Arc<Vec<Message>>,
    plugin: corral::Plugin,
    last: Option<Message>,
    _host: Host,
}

impl Corral {
    fn new(label: &'static str, host: Host, wasm: &[u8], messages: Arc<Vec<Message>>) -> Corral {
        let mut options = PluginOptions::default();
        if std::env::var_os("CORRAL_BENCH_CALLS").is_some() {
            // Under callgrind a call runs 50 times slower than the deadline expects.
            options.limits.deadline = std::time::Duration::from_secs(600);
        }
        let plugin = host.load("bench", wasm, options).unwrap();
        Corral {
            label,
            messages,
            plugin,
            last: None,
            _host: host,
        }
    }
}

impl Way for Corral {
    fn name(&self) -> &'static str {
        self.label
    }

    fn tier(&self) -> Option<corral::Tier> {
        Some(self.plugin.tier())
    }

    fn process(&mut self, index: usize) {
        let outcome = self.plugin.process_message(&self.messages[index]).unwrap();
        if let Some(summary) = outcome.emitted.into_iter().next() {
            self.last = Some(summary);
        }
    }

    fn last_summary(&self) -> Option<Summary> {
        self.last.as_ref().map(summary_of)
    }
}

/// (c) through `Plugin::process_messages`, `size` messages per call, as the daemon's
/// worker hands a `batch-filter` plugin what queued up.
struct Batched {
    corral: Corral,
    size: usize,
    pending: Vec<usize>,
}

impl Way for Batched {
    fn name(&self) -> &'static str {
        self.corral.label
    }

    fn tier(&self) -> Option<corral::Tier> {
        self.corral.tier()
    }

    fn process(&mut self, index: usize) {
        self.pending.push(index);
        if self.pending.len() == self.size {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let refs: Vec<&Message> = self.pending.iter().map(|&i| &self.corral.messages[i]).collect();
        let outcome = self.corral.plugin.process_messages(&refs).unwrap();
        assert!(outcome.failed.is_empty());
        if let Some(summary) = outcome.emitted.into_iter().last() {
            self.corral.last = Some(summary);
        }
        self.pending.clear();
    }

    fn last_summary(&self) -> Option<Summary> {
        self.corral.last_summary()
    }
}

// (d) Lua, as Heka ran it.

const LUA_FILTER: &str = r#"
local sum, seen, per_type = 0, 0, {}

function process_message()
    local value = read_message("Fields[value]") or 0
    local type_ = read_message("Type")
    sum = sum + value
    seen = seen + 1
    per_type[type_] = (per_type[type_] or 0) + 1
    if seen % 1000 == 0 then
        local fields = {sum = sum, seen = seen}
        for t, c in pairs(per_type) do fields[t] = c end
        inject_message({Type = "bench.summary", Fields = fields})
    end
    return 0
end
"#;

/// Heka's defaults for a sandbox filter: one million instructions, 8 MiB.
const LUA_INSTRUCTIONS: u32 = 1_000_000;
const LUA_MEMORY: usize = 8 << 20;
const HOOK_EVERY: u32 = 1_000;

struct Lua {
    label: &'static str,
    /// Reads through [`fast_read_message`] rather than Heka's parsing closure.
    fast: bool,
    _lua: mlua::Lua,
    current: Rc<Cell<usize>>,
    instructions: Rc<Cell<u32>>,
    process: mlua::Function,
    last: Rc<RefCell<Option<Message>>>,
}

impl Lua {
    fn new(label: &'static str, fast: bool, messages: Arc<Vec<Message>>) -> Lua {
        let lua = mlua::Lua::new();
        lua.set_memory_limit(LUA_MEMORY).unwrap();
        // Heka's count hook, set once: every 1,000 instructions it adds them to the
        // call's count and stops the call past the limit.
        let instructions = Rc::new(Cell::new(0u32));
        let counted = instructions.clone();
        lua.set_hook(
            mlua::HookTriggers::new().every_nth_instruction(HOOK_EVERY),
            move |_, _| {
                counted.set(counted.get() + HOOK_EVERY);
                if counted.get() > LUA_INSTRUCTIONS {
                    return Err(mlua::Error::runtime("instruction limit exceeded"));
                }
                Ok(mlua::VmState::Continue)
            },
        )
        .unwrap();
        let current = Rc::new(Cell::new(0usize));
        let last = Rc::new(RefCell::new(None));

        let at = current.clone();
        let heka_messages = messages.clone();
        let read_message = lua
            .create_function(move |lua, name: mlua::String| {
                let messages = &heka_messages;
                let message = &messages[at.get()];
                let name = name.as_bytes();
                Ok(match &*name {
                    b"Type" => mlua::Value::String(lua.create_string(&message.type_)?),
                    b"Logger" => mlua::Value::String(lua.create_string(&message.logger)?),
                    b"Payload" => mlua::Value::String(lua.create_string(&message.payload)?),
                    b"Severity" => mlua::Value::Integer(i64::from(message.severity)),
                    b"Timestamp" => mlua::Value::Integer(message.timestamp),
                    other => {
                        let field = other
                            .strip_prefix(b"Fields[")
                            .and_then(|rest| rest.strip_suffix(b"]"))
                            .and_then(|f| std::str::from_utf8(f).ok())
                            .and_then(|f| message.field(f));
                        match field {
                            Some(Value::Int(i)) => mlua::Value::Integer(*i),
                            Some(Value::Float(f)) => mlua::Value::Number(*f),
                            Some(Value::Bool(b)) => mlua::Value::Boolean(*b),
                            Some(Value::String(s)) => mlua::Value::String(lua.create_string(s)?),
                            Some(Value::Bytes(b)) => mlua::Value::String(lua.create_string(b)?),
                            None => mlua::Value::Nil,
                        }
                    }
                })
            })
            .unwrap();
        let out = last.clone();
        let inject_message = lua
            .create_function(move |_, table: mlua::Table| {
                let type_: String = table.get("Type")?;
                let mut message = Message::new(type_);
                let fields: mlua::Table = table.get("Fields")?;
                let mut pairs: Vec<(String, i64)> =
                    fields.pairs::<String, i64>().collect::<Result<_, _>>()?;
                // sum and seen first, then the types in order, as the others emit them.
                pairs.sort_by_key(|(name, _)| (name != "sum", name != "seen", name.clone()));
                for (name, value) in pairs {
                    message = message.with_field(&name, Value::Int(value));
                }
                *out.borrow_mut() = Some(message);
                Ok(())
            })
            .unwrap();
        let read_message = if fast {
            FAST.set(Some(FastState {
                messages,
                current: 0,
                names: Vec::new(),
            }));
            #[allow(unsafe_code)]
            // SAFETY: `fast_read_message` reads only its argument and pushes one value.
            unsafe {
                lua.create_c_function(fast_read_message).unwrap()
            }
        } else {
            read_message
        };
        lua.globals().set("read_message", read_message).unwrap();
        lua.globals().set("inject_message", inject_message).unwrap();
        lua.load(LUA_FILTER).exec().unwrap();
        let process = lua.globals().get("process_message").unwrap();
        Lua {
            label,
            fast,
            _lua: lua,
            current,
            instructions,
            process,
            last,
        }
    }
}

impl Way for Lua {
    fn name(&self) -> &'static str {
        self.label
    }

    fn process(&mut self, index: usize) {
        if self.fast {
            FAST.with_borrow_mut(|fast| fast.as_mut().expect("set up").current = index);
        } else {
            self.current.set(index);
        }
        // The instruction count starts afresh with every call, as in Heka.
        self.instructions.set(0);
        let status: i64 = self.process.call(()).unwrap();
        assert_eq!(status, 0);
    }

    fn last_summary(&self) -> Option<Summary> {
        self.last.borrow().as_ref().map(summary_of)
    }
}

// (d-fast) Lua with the fastest honest `read_message`.

/// A name `read_message` answers, resolved once: what it reads of the current message.
enum Name {
    Type,
    Logger,
    Payload,
    Severity,
    Timestamp,
    /// `Fields[name]`, with the index where the field was last found: messages of one
    /// source lay their fields out alike, so the next message usually has it there too.
    Field(Box<str>, std::cell::Cell<usize>),
    Unknown,
}

impl Name {
    fn resolve(name: &[u8]) -> Name {
        match name {
            b"Type" => Name::Type,
            b"Logger" => Name::Logger,
            b"Payload" => Name::Payload,
            b"Severity" => Name::Severity,
            b"Timestamp" => Name::Timestamp,
            other => other
                .strip_prefix(b"Fields[")
                .and_then(|rest| rest.strip_suffix(b"]"))
                .and_then(|f| std::str::from_utf8(f).ok())
                .map_or(Name::Unknown, |f| Name::Field(f.into(), std::cell::Cell::new(0))),
        }
    }
}

/// What the fast `read_message` reads: the messages, the current one, and every name it
/// has been asked for, resolved.
struct FastState {
    messages: Arc<Vec<Message>>,
    current: usize,
    names: Vec<(Box<[u8]>, Name)>,
}

thread_local! {
    static FAST: RefCell<Option<FastState>> = const { RefCell::new(None) };
}

/// `read_message(name)` as a plain C function, as Heka's was, with none of mlua's
/// callback machinery, but without Heka's parsing per call: the name's bytes are matched
/// against the names already resolved (a filter reads a handful), a field is looked for
/// first where it was last found, and nothing is allocated: integers are pushed as they
/// are, and a short string (the type) is interned by Lua, found in its string table.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn fast_read_message(state: *mut mlua::lua_State) -> std::ffi::c_int {
    use mlua::ffi;
    let mut len = 0usize;
    // SAFETY: a C function called by Lua with its own state; index 1 is its argument.
    let ptr = unsafe { ffi::lua_tolstring(state, 1, &mut len) };
    if ptr.is_null() {
        unsafe { ffi::lua_pushnil(state) };
        return 1;
    }
    // SAFETY: Lua keeps the string alive while it is on the stack.
    let name = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let push_str = |s: &[u8]| unsafe {
        ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
    };
    FAST.with_borrow_mut(|fast| {
        let fast = fast.as_mut().expect("the fast Lua is set up");
        let at = match fast.names.iter().position(|(n, _)| **n == *name) {
            Some(at) => at,
            None => {
                fast.names.push((name.into(), Name::resolve(name)));
                fast.names.len() - 1
            }
        };
        let message = &fast.messages[fast.current];
        match &fast.names[at].1 {
            Name::Type => push_str(message.type_.as_bytes()),
            Name::Logger => push_str(message.logger.as_bytes()),
            Name::Payload => push_str(message.payload.as_bytes()),
            Name::Severity => unsafe { ffi::lua_pushinteger(state, i64::from(message.severity)) },
            Name::Timestamp => unsafe { ffi::lua_pushinteger(state, message.timestamp) },
            Name::Field(field, hint) => {
                let fields = &message.fields;
                let found = match fields.get(hint.get()) {
                    Some(f) if f.name == **field => Some(&f.value),
                    _ => fields.iter().position(|f| f.name == **field).map(|i| {
                        hint.set(i);
                        &fields[i].value
                    }),
                };
                match found {
                    Some(Value::Int(i)) => unsafe { ffi::lua_pushinteger(state, *i) },
                    Some(Value::Float(f)) => unsafe { ffi::lua_pushnumber(state, *f) },
                    Some(Value::Bool(b)) => unsafe { ffi::lua_pushboolean(state, i32::from(*b)) },
                    Some(Value::String(s)) => push_str(s.as_bytes()),
                    Some(Value::Bytes(b)) => push_str(b),
                    None => unsafe { ffi::lua_pushnil(state) },
                }
            }
            Name::Unknown => unsafe { ffi::lua_pushnil(state) },
        }
    });
    1
}

/// The first quartile, the median and the third quartile of `values`.
fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() - 1) * q / 4];
    (at(1), at(2), at(3))
}

/// The working set, for the ways that need it for `'static`.
static MESSAGE_SET: std::sync::OnceLock<Vec<Message>> = std::sync::OnceLock::new();

fn main() {
    let messages = Arc::new(messages());
    MESSAGE_SET.set(messages.to_vec()).unwrap();
    let custom_wasm = std::fs::read(corral_test_guests::CUSTOM_EXPORT).unwrap();
    let wasm = std::fs::read(corral_test_guests::BENCH_FILTER).unwrap();
    let batch_wasm = std::fs::read(corral_test_guests::BENCH_BATCH).unwrap();
    // `dispatch WAY…` (a prefix such as `(b)`) makes and runs only those ways, for
    // profiling.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |label: &str| only.is_empty() || only.iter().any(|o| label.starts_with(o.as_str()));
    let mut ways: Vec<Box<dyn Way>> = Vec::new();
    macro_rules! way {
        ($label:expr, $make:expr) => {
            if want($label) {
                ways.push(Box::new($make));
            }
        };
    }
    way!(
        "(a) native Rust",
        Native {
            messages: messages.clone(),
            totals: Totals::default(),
            last: None,
        }
    );
    for (label, interrupt) in [
        ("(b) bare wasmtime", Interrupt::None),
        ("(b+fuel) bare, fuel on", Interrupt::Fuel),
        ("(b+epoch) bare, epochs on", Interrupt::Epoch),
        ("(bm) bare, fuel and epochs on", Interrupt::Both),
    ] {
        way!(label, Bare::new(label, interrupt, &wasm));
    }
    way!("(b0)", Empty(Bare::new("", Interrupt::None, &wasm)));
    let corral = |label, wasm: &[u8]| Corral::new(label, Host::new().unwrap(), wasm, messages.clone());
    way!(
        "(c) Corral, filter world",
        corral("(c) Corral, filter world", &wasm)
    );
    way!(
        "(c1) Corral, batch of 1",
        corral("(c1) Corral, batch of 1", &batch_wasm)
    );
    way!(
        "(c64) Corral, batch of 64",
        Batched {
            corral: corral("(c64) Corral, batch of 64", &batch_wasm),
            size: 64,
            pending: Vec::new(),
        }
    );
    // The filter on baseline code: called at once, before Cranelift's code is ready, it
    // keeps its Winch instance (it holds the running totals).
    way!("(c-base) Corral, baseline code", {
        let baseline = Corral::new(
            "(c-base) Corral, baseline code",
            Host::builder().baseline(true).build().unwrap(),
            &batch_wasm,
            messages.clone(),
        );
        baseline.plugin.timer_event(0).unwrap();
        baseline
    });
    for (label, interrupt, size) in [
        ("(b-batch1) bare, process-batch of 1", Interrupt::None, 1),
        ("(b-batch64) bare, process-batch of 64", Interrupt::None, 64),
        ("(bm-batch1) bare+fuel+epochs, batch of 1", Interrupt::Both, 1),
        ("(bm-batch64) bare+fuel+epochs, batch of 64", Interrupt::Both, 64),
    ] {
        way!(label, BareBatch::new(label, interrupt, size, &batch_wasm));
    }
    for (label, interrupt) in [
        ("(b-export) bare, add(a, b)", Interrupt::None),
        ("(bm-export) bare+fuel+epochs, add", Interrupt::Both),
    ] {
        way!(label, BareAdd::new(label, interrupt, &custom_wasm));
    }
    way!("(c-export)", CorralAdd(corral("", &custom_wasm)));
    way!(
        "(d) Lua, Heka-style",
        Lua::new("(d) Lua, Heka-style", false, messages.clone())
    );
    way!(
        "(d-fast) Lua, resolved names",
        Lua::new("(d-fast) Lua, resolved names", true, messages.clone())
    );

    if !only.is_empty() {
        // `CORRAL_BENCH_CALLS` messages per way (fewer under callgrind).
        let calls = std::env::var("CORRAL_BENCH_CALLS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10 * ROUNDS * PER_ROUND);
        for way in &mut ways {
            for i in 0..calls {
                way.process(i % MESSAGES);
            }
            way.finish();
        }
        return;
    }

    // Warm up, then rounds interleaved so that a noisy moment hits every way alike.
    let mut next = vec![0usize; ways.len()];
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); ways.len()];
    for round in 0..=ROUNDS {
        for (i, way) in ways.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..PER_ROUND {
                way.process(next[i]);
                next[i] = (next[i] + 1) % MESSAGES;
            }
            way.finish();
            let ns = started.elapsed().as_nanos() as f64 / PER_ROUND as f64;
            if round > 0 {
                rounds[i].push(ns);
            }
        }
    }

    let expected = ways[0].last_summary().expect("a summary");
    for way in ways.iter().filter(|w| w.checked()) {
        assert_eq!(
            way.last_summary().as_ref(),
            Some(&expected),
            "{} ends with another summary",
            way.name()
        );
    }
    let spreads: Vec<(f64, f64, f64)> = rounds.iter().map(|r| quartiles(r.clone())).collect();
    let medians: Vec<f64> = spreads.iter().map(|q| q.1).collect();

    println!(
        "dispatch: {PER_ROUND} messages per round, {ROUNDS} rounds, median round; all ways end with the same summary ({} seen)",
        expected.1
    );
    println!("{:<32} {:>10} {:>10}  code", "way", "ns/msg", "IQR");
    for (way, (low, median, high)) in ways.iter().zip(&spreads) {
        let tier = way.tier().map_or("", |t| t.as_str());
        let spread = (high - low) / median * 100.0;
        println!("{:<32} {:>10.1} {:>9.0}%  {tier}", way.name(), median, spread);
    }
    let index = |name: &str| ways.iter().position(|w| w.name().starts_with(name)).unwrap();
    let by = |name: &str| medians[index(name)];
    // Two ways compared round by round (see `ROUNDS`): the quartiles of `compare` of
    // their rounds, pair by pair.
    let paired = |x: &str, y: &str, compare: fn(f64, f64) -> f64| {
        let (x, y) = (&rounds[index(x)], &rounds[index(y)]);
        quartiles(x.iter().zip(y).map(|(&x, &y)| compare(x, y)).collect())
    };
    // A ratio: its median, and the middle half of the rounds' ratios.
    let ratio = |x: &str, y: &str| paired(x, y, |x, y| x / y);
    let (d, d_fast) = (by("(d) "), by("(d-fast)"));
    // Every Corral row against the faster of the two Lua rows (issue 17).
    let lua = if d_fast <= d { "(d-fast)" } else { "(d) " };
    println!(
        "Lua: Heka-style {d:.0} ns, resolved names {d_fast:.0} ns; against the faster {}, ratios round by round (median, and the middle half of the rounds):",
        lua.trim()
    );
    let goal = |name: &str, (low, ratio, high): (f64, f64, f64), goal: f64| {
        let met = if ratio <= goal { "met" } else { "NOT met" };
        println!("  {name:<48} {ratio:>5.2}  ({low:.2}–{high:.2})  goal <= {goal:.2}  {met}");
    };
    goal(
        "c1/lua (batch-filter, one message per call)",
        ratio("(c1)", lua),
        1.0,
    );
    goal(
        "c/lua (filter world, one message per call)",
        ratio("(c) ", lua),
        1.5,
    );
    goal("c64/lua (batch-filter, 64 per call)", ratio("(c64)", lua), 0.25);
    println!("Corral over a bare wasmtime call of the same export:");
    goal("c/b (process-message)", ratio("(c) ", "(b) "), 1.2);
    goal(
        "c1/b-batch1 (process-batch of 1)",
        ratio("(c1)", "(b-batch1)"),
        1.2,
    );
    goal(
        "c64/b-batch64 (process-batch of 64)",
        ratio("(c64)", "(b-batch64)"),
        1.2,
    );
    goal(
        "c-export/b-export (call_export add)",
        ratio("(c-export)", "(b-export)"),
        1.2,
    );
    // The same, against a bare call metered as Corral meters every guest (fuel and
    // epochs on, armed per call): what Corral's own code adds. Reported beside the
    // goals, not as them: the goals are against the unmetered call, the faster.
    let median = |x: &str, y: &str| ratio(x, y).1;
    println!(
        "over a bare call with the same metering (fuel and epochs): c/bm {:.2}, c1/bm-batch1 {:.2}, c64/bm-batch64 {:.2}, c-export/bm-export {:.2}",
        median("(c) ", "(bm) "),
        median("(c1)", "(bm-batch1)"),
        median("(c64)", "(bm-batch64)"),
        median("(c-export)", "(bm-export)")
    );
    println!(
        "the metering alone: bm/b {:.2}, bm-batch1/b-batch1 {:.2}, bm-batch64/b-batch64 {:.2}, bm-export/b-export {:.2}",
        median("(bm) ", "(b) "),
        median("(bm-batch1)", "(b-batch1)"),
        median("(bm-batch64)", "(b-batch64)"),
        median("(bm-export)", "(b-export)")
    );
    println!(
        "against Heka-style Lua: c/d {:.2}, c1/d {:.2}, c64/d {:.2}; the bare calls against the faster Lua: b/lua {:.2}, b-batch1/lua {:.2}, b-batch64/lua {:.2}",
        median("(c) ", "(d) "),
        median("(c1)", "(d) "),
        median("(c64)", "(d) "),
        median("(b) ", lua),
        median("(b-batch1)", lua),
        median("(b-batch64)", lua)
    );
    println!(
        "baseline code over optimised code, batch of 1: {:.2}",
        median("(c-base)", "(c1)")
    );
    // What metering adds, likewise round by round.
    let more = |x: &str, y: &str| paired(x, y, |x, y| x - y).1;
    println!(
        "fuel costs {:+.1} ns/msg over no interruption, epochs {:+.1}, both {:+.1}; in a batch of 1 both {:+.1}, of 64 {:+.1}",
        more("(b+fuel)", "(b) "),
        more("(b+epoch)", "(b) "),
        more("(bm) ", "(b) "),
        more("(bm-batch1)", "(b-batch1)"),
        more("(bm-batch64)", "(b-batch64)")
    );
}
