//! Drop-to-serving latency: from the rename of a new `.wasm` into a watched directory to
//! the first call answered by that version, on a compile-cache miss and on a hit.
//!
//! Run with `just bench` (or `cargo bench -p corral --bench drop_to_serving`). Each
//! sample is a distinct component — the test guest `swap-a` with a unique custom section
//! appended — so a "miss" really compiles; the "hit" run is a fresh host (empty memory
//! memo) over the disk cache the miss run filled.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

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

fn run(host: Host, variants: &[Vec<u8>]) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new(host);
    let _watcher = registry.watch(dir.path()).unwrap();
    let staging = dir.path().join(".bench.partial");
    let target = dir.path().join("bench.wasm");
    let mut samples = Vec::new();
    for bytes in variants {
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
    }
    samples
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
        let measure = |label: &str, counted: fn(corral::CompileStats) -> u64| {
            let host = Host::builder().cache_dir(cache.path()).build().unwrap();
            let samples = run(host.clone(), &variants);
            assert_eq!(
                counted(host.compile_stats()),
                SAMPLES as u64,
                "{label}: not every sample"
            );
            summary(label, samples)
        };
        let miss = measure("cache miss (compile)", |s| s.compiled);
        let hit = measure("cache hit (deserialize)", |s| s.cache_hits);
        println!(
            "miss/hit median ratio: {:.1}   targets: miss <= 50 ms, hit <= 5 ms",
            miss.as_secs_f64() / hit.as_secs_f64()
        );
        compile_only(&variants);
    }
}

/// Where a miss goes: compiling alone, with Cranelift optimising for speed (Corral's
/// setting) and not optimising at all.
fn compile_only(variants: &[Vec<u8>]) {
    for (label, level) in [
        ("compile only, opt speed", wasmtime::OptLevel::Speed),
        ("compile only, opt none", wasmtime::OptLevel::None),
    ] {
        let mut config = wasmtime::Config::new();
        config
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
