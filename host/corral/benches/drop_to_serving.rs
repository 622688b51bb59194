//! Drop-to-serving latency: from the rename of a new `.wasm` into a watched directory to
//! the first call answered by that version, on a compile-cache miss and on a hit.
//!
//! Run with `just bench` (or `cargo bench -p corral --bench drop_to_serving`). Each
//! sample is a distinct component — the test guest `swap-a` with a unique custom section
//! appended — so a "miss" really compiles; the "hit" run is a fresh host (empty memory
//! memo) over the disk cache the miss run filled. A miss is measured twice: with the
//! baseline tier (`HostBuilder::baseline`, what `corral run` does: Winch's code serves
//! while Cranelift compiles behind it; the time until the optimised code is ready is
//! printed too), and with Cranelift alone.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use corral::wasmtime;
use corral::{Host, Message, Registry};

const SAMPLES: usize = 40;

/// `bytes` with a custom section named `corral-bench-<i>` appended: a valid component
/// with its own content hash.
fn variant(bytes: &[u8], i: usize) -> Vec<u8> {
    let name = format!("corral-bench-{i}");
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(1 + name.len()).unwrap()); // section size (LEB128, < 128)
    out.push(u8::try_from(name.len()).unwrap()); // name length
    out.extend_from_slice(name.as_bytes());
    out
}

/// The time to serve each variant, and, with the baseline tier, the time until its
/// optimised code was ready (each sample waits for it, so that no background compile
/// slows the next sample).
fn run(host: Host, variants: &[Vec<u8>]) -> (Vec<Duration>, Vec<Duration>) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(host.clone());
    let _watcher = registry.watch(dir.path()).unwrap();
    let staging = dir.path().join(".bench.partial");
    let target = dir.path().join("bench.wasm");
    let mut samples = Vec::new();
    let mut optimised = Vec::new();
    for (i, bytes) in variants.iter().enumerate() {
        let version = corral::content_version(bytes);
        fs::write(&staging, bytes).unwrap();
        let started = Instant::now();
        fs::rename(&staging, &target).unwrap();
        loop {
            if let Some(plugin) = registry.get("bench")
                && plugin.version() == version
            {
                plugin.process_message(&Message::new("x")).unwrap();
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never served");
            std::thread::sleep(Duration::from_micros(50));
        }
        samples.push(started.elapsed());
        if host.compile_stats().baseline_compiled > 0 {
            while host.compile_stats().compiled <= i as u64 {
                assert!(started.elapsed() < Duration::from_secs(30), "never optimised");
                std::thread::sleep(Duration::from_micros(200));
            }
            optimised.push(started.elapsed());
        }
    }
    (samples, optimised)
}

fn summary(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<28} median {:7.2} ms   p95 {:7.2} ms   min {:7.2} ms   max {:7.2} ms   ({} samples)",
        ms(at(0.5)),
        ms(at(0.95)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
    at(0.5)
}

fn main() {
    // The 44 KiB stateful tally the swap tests use, and the `cpu` metric plugin, the
    // guest nearest the ~100 KB of issue 7's target.
    for (name, path) in [
        ("swap-a", corral_test_guests::SWAP_A),
        ("cpu", corral_test_guests::CPU),
    ] {
        let bytes = fs::read(Path::new(path)).unwrap();
        let variants: Vec<Vec<u8>> = (0..SAMPLES).map(|i| variant(&bytes, i)).collect();
        let cache = tempfile::tempdir().unwrap();
        println!(
            "drop-to-serving, guest {name} ({} KiB), debounce {} ms, {} cores",
            bytes.len() / 1024,
            corral::DEBOUNCE.as_millis(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );

        // Each run is a fresh host over the same disk cache: the first fills it (every
        // sample compiles), the second finds every sample there.
        let measure =
            |label: &str, cache: &Path, baseline: bool, counted: fn(corral::CompileStats) -> u64| {
                let host = Host::builder()
                    .cache_dir(cache)
                    .baseline(baseline)
                    .build()
                    .unwrap();
                let (samples, optimised) = run(host.clone(), &variants);
                assert_eq!(
                    counted(host.compile_stats()),
                    SAMPLES as u64,
                    "{label}: not every sample"
                );
                if !optimised.is_empty() {
                    summary("  then optimised code ready", optimised);
                }
                summary(label, samples)
            };
        // The baseline tier first, over a cache of its own, then Cranelift alone.
        let baseline_cache = tempfile::tempdir().unwrap();
        let baseline = measure("cache miss, baseline tier", baseline_cache.path(), true, |s| {
            s.baseline_compiled
        });
        let miss = measure("cache miss, Cranelift only", cache.path(), false, |s| s.compiled);
        let hit = measure("cache hit (deserialize)", cache.path(), true, |s| s.cache_hits);
        println!(
            "median ratios: Cranelift miss/baseline miss {:.1}, baseline miss/hit {:.1}   targets: miss <= 50 ms, hit <= 5 ms",
            miss.as_secs_f64() / baseline.as_secs_f64(),
            baseline.as_secs_f64() / hit.as_secs_f64()
        );
        compile_only(&variants);
    }
}

/// Where a miss goes: compiling alone, with Cranelift optimising for speed (Corral's
/// setting), Cranelift not optimising at all, and Winch (the baseline tier, its
/// trampolines unoptimised as the baseline engine has them).
fn compile_only(variants: &[Vec<u8>]) {
    for (label, strategy, level) in [
        (
            "compile only, opt speed",
            wasmtime::Strategy::Cranelift,
            wasmtime::OptLevel::Speed,
        ),
        (
            "compile only, opt none",
            wasmtime::Strategy::Cranelift,
            wasmtime::OptLevel::None,
        ),
        (
            "compile only, Winch",
            wasmtime::Strategy::Winch,
            wasmtime::OptLevel::None,
        ),
    ] {
        let mut config = wasmtime::Config::new();
        config
            .strategy(strategy)
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_opt_level(level);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let samples = variants
            .iter()
            .map(|bytes| {
                let started = Instant::now();
                wasmtime::component::Component::new(&engine, bytes).unwrap();
                started.elapsed()
            })
            .collect();
        summary(label, samples);
    }
}
