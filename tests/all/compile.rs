//! Bounded compiles: a component over a static limit is refused before anything is
//! compiled; one within them whose compile runs past its time or memory bound is
//! stopped in the compile worker; every real guest fits the defaults.

use std::time::{Duration, Instant};

use corral::{CompileLimit, CompileLimits, CompileWorker, ComponentCost, Host, LoadError, PluginOptions};
use corral_test_guests as guests;

use crate::bombs;
use crate::support::{eventually, peak_rss};

/// Generous, for a loaded machine: a refusal takes milliseconds.
const BOUND: Duration = Duration::from_secs(20);

/// The `corral` binary as the compile worker, as `corral run` uses it.
pub fn worker() -> CompileWorker {
    CompileWorker::new(crate::support::corral_exe()).arg("compile-worker")
}

fn host(limits: CompileLimits) -> Host {
    Host::builder()
        .compile_limits(limits)
        .build()
        .expect("host starts")
}

fn host_with_worker(limits: CompileLimits) -> Host {
    Host::builder()
        .compile_limits(limits)
        .compile_worker(worker())
        .build()
        .expect("host starts")
}

#[track_caller]
fn assert_too_costly(error: LoadError, limit: CompileLimit, value: u64, max: u64) {
    let text = error.to_string();
    match error {
        LoadError::TooCostly {
            plugin,
            limit: l,
            value: v,
            max: m,
        } => {
            assert_eq!((plugin.as_str(), l, v, m), ("bomb", limit, value, max), "{text}");
        }
        other => panic!("expected `{limit}` to refuse it, got: {other}"),
    }
    assert!(
        text.starts_with("plugin `bomb` is too costly to compile: ")
            && text.contains(&format!("more than the {max} allowed (`{limit}`)")),
        "{text}"
    );
}

#[test]
fn each_static_limit_refuses_its_bomb_before_compiling() {
    let d = CompileLimits::default();
    let small = CompileLimits {
        max_code_bytes: 1 << 20,
        max_data_bytes: 1 << 20,
        ..CompileLimits::default()
    };
    let function = (d.max_function_bytes + 300_000) as u32;
    // A core module past one limit, inside HELLO, checked against the defaults.
    let module = |limit, module| (limit, bombs::with_module(guests::HELLO, module), d.clone());
    let cases: Vec<(CompileLimit, Vec<u8>, CompileLimits)> = vec![
        module(CompileLimit::FunctionSize, bombs::large_function(function)),
        module(
            CompileLimit::Functions,
            bombs::many_functions(d.max_functions as u32 + 1),
        ),
        module(CompileLimit::Locals, bombs::many_locals(d.max_locals as u32 + 1)),
        module(
            CompileLimit::Nesting,
            bombs::deep_nesting(d.max_nesting as u32 + 1),
        ),
        module(
            CompileLimit::Elements,
            bombs::many_elements(d.max_elements as usize + 1),
        ),
        module(CompileLimit::Types, bombs::many_types(d.max_types as u32 + 1)),
        (
            CompileLimit::Modules,
            bombs::with_modules(guests::HELLO, d.max_modules as usize + 1),
            d.clone(),
        ),
        (
            CompileLimit::Components,
            {
                let empty = wasm_encoder::Component::new();
                let nested = wasm_encoder::NestedComponentSection(&empty);
                let sections = vec![&nested as &dyn bombs::Section; d.max_components as usize + 1];
                bombs::append(guests::HELLO, &sections)
            },
            d.clone(),
        ),
        (
            CompileLimit::Instances,
            bombs::with_instances(guests::HELLO, d.max_instances as u32 + 1),
            d.clone(),
        ),
        (
            CompileLimit::CodeSize,
            bombs::with_module(
                guests::HELLO,
                bombs::module_of(12, 0, |f, _| {
                    for _ in 0..30_000 {
                        f.instruction(&wasm_encoder::Instruction::I32Const(0))
                            .instruction(&wasm_encoder::Instruction::Drop);
                    }
                }),
            ),
            small.clone(),
        ),
        (
            CompileLimit::DataSize,
            bombs::with_module(guests::HELLO, bombs::large_data(2 << 20)),
            small.clone(),
        ),
    ];
    for (limit, bomb, limits) in cases {
        let cost = ComponentCost::measure(&bomb).unwrap();
        let value = match limits.exceeded(&cost) {
            Some((l, v)) => {
                assert_eq!(l, limit, "{cost:?}");
                v
            }
            None => panic!("the `{limit}` bomb is within the limits: {cost:?}"),
        };
        let host = host(limits.clone());
        let started = Instant::now();
        let error = host.load("bomb", &bomb, PluginOptions::default()).unwrap_err();
        assert!(
            started.elapsed() < BOUND,
            "`{limit}` took {:?}",
            started.elapsed()
        );
        assert_too_costly(error, limit, value, limits.get(limit));
        assert_eq!(host.compile_stats().compiled, 0, "`{limit}`: nothing is compiled");
    }
}

#[test]
fn the_bombs_fit_their_world_and_compile_without_the_limit() {
    // Only the limit stops a bomb: with a limit raised, the very same bytes load.
    let bomb = bombs::with_module(guests::HELLO, bombs::deep_nesting(1_200));
    let limits = CompileLimits {
        max_nesting: 2_000,
        ..CompileLimits::default()
    };
    let plugin = host(limits)
        .load("bomb", &bomb, PluginOptions::default())
        .unwrap();
    let outcome = plugin
        .process_message(&crate::support::message("login", "dee"))
        .unwrap();
    assert_eq!(outcome.emitted[0].payload, "Hello, dee!");
    let many = bombs::with_instances(guests::HELLO, 3);
    host(CompileLimits::default())
        .load("instances", &many, PluginOptions::default())
        .unwrap();
}

/// A component within every static limit whose optimising compile takes seconds and
/// hundreds of MiB.
pub fn costly() -> Vec<u8> {
    bombs::with_module(guests::HELLO, bombs::costly_function(15_000, 200_000))
}

#[test]
fn a_compile_past_its_time_bound_is_stopped_in_the_worker() {
    let bomb = costly();
    // Far under what the bomb takes to compile (it has finished inside 300 ms on a quiet
    // 2-core machine), so that a fast machine cannot finish it inside the bound.
    let limits = CompileLimits {
        time: Duration::from_millis(30),
        ..CompileLimits::default()
    };
    assert_eq!(limits.exceeded(&ComponentCost::measure(&bomb).unwrap()), None);
    let host = host_with_worker(limits);
    let started = Instant::now();
    let error = host.check("bomb", &bomb).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            error,
            LoadError::CompileStopped {
                limit: CompileLimit::Time,
                max: 30,
                ..
            }
        ),
        "{error}"
    );
    assert!(took < BOUND, "stopped after {took:?}");
    assert_eq!(
        error.to_string(),
        "plugin `bomb` is too costly to compile: its compile ran for more than 30 ms \
         (`compile-time`), so the compile was stopped: rebuild it smaller (a release build, \
         optimised for size), or raise the limit if you trust it (`--compile-limit \
         compile-time=N`, `CompileLimits`)"
    );
}

#[test]
fn a_compile_past_its_memory_bound_is_stopped_and_the_host_stays_small() {
    let bomb = costly();
    // Half what the bomb needs: it compiles inside 52 MiB and not inside 48 MiB, where
    // `hello` compiles inside 16 MiB, so a bound of 48 MiB left the test 4 MiB from
    // passing for the wrong reason.
    let limits = CompileLimits {
        memory_bytes: 24 << 20,
        ..CompileLimits::default()
    };
    let host = host_with_worker(limits);
    let before = peak_rss("self");
    let started = Instant::now();
    let error = host.check("bomb", &bomb).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::CompileStopped {
                limit: CompileLimit::Memory,
                max,
                ..
            } if max == 24 << 20
        ),
        "{error}"
    );
    assert!(started.elapsed() < BOUND, "stopped after {:?}", started.elapsed());
    let grew = peak_rss("self").saturating_sub(before);
    assert!(grew < 256 << 20, "the host's peak memory grew by {grew} bytes");
}

#[test]
fn a_worker_compile_loads_serves_and_fills_the_disk_cache() {
    let cache = tempfile::tempdir().unwrap();
    let build = || {
        Host::builder()
            .cache_dir(cache.path())
            .compile_worker(worker())
            .build()
            .unwrap()
    };
    let host = build();
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let plugin = host.load("hello", &bytes, PluginOptions::default()).unwrap();
    let outcome = plugin
        .process_message(&crate::support::message("login", "dee"))
        .unwrap();
    assert_eq!(outcome.emitted[0].payload, "Hello, dee!");
    assert_eq!(host.compile_stats().compiled, 1);
    // A new host finds it on disk: no compile, no worker.
    let again = build();
    again.load("hello", &bytes, PluginOptions::default()).unwrap();
    assert_eq!(
        (again.compile_stats().cache_hits, again.compile_stats().compiled),
        (1, 0)
    );
}

#[test]
fn baseline_and_optimised_compiles_both_run_in_the_worker() {
    let host = Host::builder()
        .baseline(true)
        .compile_worker(worker())
        .build()
        .unwrap();
    let bytes = std::fs::read(guests::ECHO).unwrap();
    let plugin = host.load("echo", &bytes, PluginOptions::default()).unwrap();
    assert_eq!(plugin.tier(), corral::Tier::Baseline);
    eventually("the optimised compile", Duration::from_secs(120), || {
        host.compile_stats().compiled == 1
    });
    assert_eq!(host.compile_stats().baseline_compiled, 1);

    // A bomb too costly for Winch's time bound is refused, not handed to Cranelift.
    let limited = Host::builder()
        .baseline(true)
        .compile_limits(CompileLimits {
            time: Duration::from_millis(1),
            ..CompileLimits::default()
        })
        .compile_worker(worker())
        .build()
        .unwrap();
    let error = limited.check("bomb", &costly()).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::CompileStopped {
                limit: CompileLimit::Time,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(limited.compile_stats().compiled, 0);
}

#[test]
fn a_missing_worker_program_is_a_clear_error() {
    let host = Host::builder()
        .compile_worker(CompileWorker::new("/nonexistent/corral"))
        .build()
        .unwrap();
    let error = host
        .check("hello", &std::fs::read(guests::HELLO).unwrap())
        .unwrap_err();
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
    assert!(
        error.to_string().starts_with(
            "cannot compile plugin `hello`: cannot start the compile worker `/nonexistent/corral`"
        ),
        "{error}"
    );
}

#[test]
fn limits_are_set_by_their_keys() {
    let mut limits = CompileLimits::default();
    limits.set("max-function-size", "4MiB").unwrap();
    limits.set("compile-time", "90s").unwrap();
    limits.set("compile-memory", "1GiB").unwrap();
    limits.set("max-locals", "30_000").unwrap();
    assert_eq!(limits.max_function_bytes, 4 << 20);
    assert_eq!(limits.time, Duration::from_secs(90));
    assert_eq!(limits.memory_bytes, 1 << 30);
    assert_eq!(limits.max_locals, 30_000);
    let error = limits.set("max-fuction-size", "1").unwrap_err();
    assert!(
        error.contains("unknown compile limit `max-fuction-size`"),
        "{error}"
    );
    assert!(limits.set("max-locals", "0").is_err());
}

/// Every guest built here, with what it holds: the figures the defaults are set from.
#[test]
fn every_real_guest_is_well_within_the_default_limits() {
    let dir = std::path::Path::new(guests::HELLO).parent().unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    paths.sort();
    let defaults = CompileLimits::default();
    let quarter = CompileLimits {
        max_code_bytes: defaults.max_code_bytes / 4,
        max_functions: defaults.max_functions / 4,
        max_function_bytes: defaults.max_function_bytes / 4,
        max_locals: defaults.max_locals / 4,
        max_nesting: defaults.max_nesting / 4,
        max_data_bytes: defaults.max_data_bytes / 4,
        max_elements: defaults.max_elements / 4,
        max_modules: defaults.max_modules / 4,
        max_components: defaults.max_components / 4,
        max_instances: defaults.max_instances / 4,
        max_types: defaults.max_types / 4,
        ..defaults.clone()
    };
    let mut most = ComponentCost::default();
    println!(
        "{:<22} {:>10} {:>7} {:>9} {:>7} {:>5} {:>9} {:>7} {:>4} {:>5} {:>5} {:>6}",
        "guest",
        "code",
        "funcs",
        "largest",
        "locals",
        "nest",
        "data",
        "elems",
        "mods",
        "comps",
        "insts",
        "types"
    );
    for path in &paths {
        let bytes = std::fs::read(path).unwrap();
        if !bytes.starts_with(b"\0asm\x0d\0\x01\0") {
            continue;
        }
        let c = ComponentCost::measure(&bytes).unwrap();
        println!(
            "{:<22} {:>10} {:>7} {:>9} {:>7} {:>5} {:>9} {:>7} {:>4} {:>5} {:>5} {:>6}",
            path.file_stem().unwrap().to_string_lossy(),
            c.code_bytes,
            c.functions,
            c.largest_function,
            c.most_locals,
            c.deepest_nesting,
            c.data_bytes,
            c.elements,
            c.modules,
            c.components,
            c.instances,
            c.types
        );
        // Each figure at most a quarter of its default: a wide margin.
        assert_eq!(
            quarter.exceeded(&c),
            None,
            "{} is near a default limit: {c:?}",
            path.display()
        );
        most = ComponentCost {
            code_bytes: most.code_bytes.max(c.code_bytes),
            functions: most.functions.max(c.functions),
            largest_function: most.largest_function.max(c.largest_function),
            most_locals: most.most_locals.max(c.most_locals),
            deepest_nesting: most.deepest_nesting.max(c.deepest_nesting),
            data_bytes: most.data_bytes.max(c.data_bytes),
            elements: most.elements.max(c.elements),
            modules: most.modules.max(c.modules),
            components: most.components.max(c.components),
            instances: most.instances.max(c.instances),
            types: most.types.max(c.types),
        };
    }
    println!("largest of each: {most:?}");
    assert!(paths.len() > 20, "the guests are built");
}
