//! What sandboxes cost besides their calls, each figure printed, none asserted:
//!
//! - resident memory of 1,000 idle loaded sandboxes (the `bench-filter` guest), per
//!   sandbox — measured first, in a process that has done nothing else;
//! - a fresh instance after a trap: the call after a trap, less a plain call;
//! - 100 distinct plugins ready from the disk compile cache, from a fresh host;
//! - throughput of 2 plugins called from 2 threads against 1 plugin from 1.
//!
//! Each is run with the on-demand allocator (`Host::builder()`) and with the pooling
//! allocator (`HostBuilder::pooling`). Run with `just bench` or
//! `cargo bench -p corral --bench sandboxes`.

use std::time::{Duration, Instant};

use corral::{Host, HostBuilder, Message, PluginOptions, Value};

const IDLE: usize = 1_000;
const READY: usize = 100;

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `bytes` with a custom section appended: the same code, another content hash.
fn variant(bytes: &[u8], i: usize) -> Vec<u8> {
    let name = format!("corral-bench-{i}");
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(u8::try_from(1 + name.len()).unwrap());
    out.push(u8::try_from(name.len()).unwrap());
    out.extend_from_slice(name.as_bytes());
    out
}

fn message(i: usize) -> Message {
    Message::new(if i.is_multiple_of(2) { "a" } else { "b" }).with_field("value", Value::Int(i as i64))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A way to build a host, and its name.
type Builder = (&'static str, fn() -> HostBuilder);

/// Two ways to build a host: on demand, and pooled.
fn builders() -> [Builder; 2] {
    [
        ("on-demand allocator", Host::builder),
        ("pooling allocator", || Host::builder().pooling(IDLE as u32 + 16)),
    ]
}

fn idle_sandboxes(label: &str, builder: HostBuilder, wasm: &[u8]) {
    let host = builder.build().unwrap();
    // The compiled code is shared; count it apart from the sandboxes.
    let first = host.load("warm", wasm, PluginOptions::default()).unwrap();
    first.process_message(&message(0)).unwrap();
    let before = rss();
    let plugins: Vec<_> = (0..IDLE)
        .map(|i| {
            let plugin = host
                .load(&format!("idle-{i}"), wasm, PluginOptions::default())
                .unwrap();
            plugin.process_message(&message(i)).unwrap();
            plugin
        })
        .collect();
    let after = rss();
    println!(
        "{IDLE} idle sandboxes, {label:<20} {:>8.1} KiB resident each ({:.1} MiB in all)   target <= 256 KiB",
        (after - before) as f64 / IDLE as f64 / 1024.0,
        (after - before) as f64 / (1 << 20) as f64,
    );
    drop(plugins);
}

fn fresh_instance(label: &str, builder: HostBuilder, wasm: &[u8]) {
    let host = builder.build().unwrap();
    let plugin = host.load("fresh", wasm, PluginOptions::default()).unwrap();
    let trap = Message::new("bench.trap");
    let (mut plain, mut after_trap) = (Vec::new(), Vec::new());
    let rounds = std::env::var("CORRAL_BENCH_ROUNDS").map_or(2_000, |n| n.parse().unwrap());
    for i in 0..rounds {
        let started = Instant::now();
        plugin.process_message(&message(i)).unwrap();
        plain.push(started.elapsed());
        plugin.process_message(&trap).unwrap_err();
        let started = Instant::now();
        plugin.process_message(&message(i)).unwrap();
        after_trap.push(started.elapsed());
    }
    let (plain, after_trap) = (median(plain), median(after_trap));
    println!(
        "fresh instance after a trap, {label:<20} {:>7.1} µs (the call after a trap {:.1} µs, a plain call {:.1} µs)   target <= 20 µs",
        (after_trap.saturating_sub(plain)).as_secs_f64() * 1e6,
        after_trap.as_secs_f64() * 1e6,
        plain.as_secs_f64() * 1e6,
    );
}

fn ready_from_cache(label: &str, builder: fn() -> HostBuilder, wasm: &[u8]) {
    let cache = tempfile::tempdir().unwrap();
    let variants: Vec<Vec<u8>> = (0..READY).map(|i| variant(wasm, i)).collect();
    {
        let filler = builder().cache_dir(cache.path()).build().unwrap();
        for (i, bytes) in variants.iter().enumerate() {
            filler
                .load(&format!("p{i}"), bytes, PluginOptions::default())
                .unwrap();
        }
    }
    let started = Instant::now();
    let host = builder().cache_dir(cache.path()).build().unwrap();
    let plugins: Vec<_> = variants
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            host.load(&format!("p{i}"), bytes, PluginOptions::default())
                .unwrap()
        })
        .collect();
    for (i, plugin) in plugins.iter().enumerate() {
        plugin.process_message(&message(i)).unwrap();
    }
    let took = started.elapsed();
    assert_eq!(host.compile_stats().cache_hits, READY as u64);
    println!(
        "{READY} plugins ready from the disk cache, {label:<20} {:>7.1} ms   target <= 1000 ms",
        took.as_secs_f64() * 1e3
    );
}

fn scaling(label: &str, builder: fn() -> HostBuilder, wasm: &[u8]) {
    const CALLS: usize = 100_000;
    // Two plugins on one host (one engine, one linker), and two on hosts of their own.
    let shared = builder().build().unwrap();
    let apart: Vec<Host> = (0..2).map(|_| builder().build().unwrap()).collect();
    let load = |host: &Host, i: usize| {
        host.load(&format!("scale-{i}"), wasm, PluginOptions::default())
            .unwrap()
    };
    let together = [load(&shared, 0), load(&shared, 1)];
    let separate = [load(&apart[0], 0), load(&apart[1], 1)];
    let messages: Vec<Message> = (0..1_000).map(message).collect();
    let work = |plugin: &corral::Plugin| {
        for i in 0..CALLS {
            plugin.process_message(&messages[i % messages.len()]).unwrap();
        }
    };
    let rate = |plugins: &[corral::Plugin]| {
        let started = Instant::now();
        std::thread::scope(|s| {
            for plugin in plugins {
                s.spawn(|| work(plugin));
            }
        });
        (plugins.len() * CALLS) as f64 / started.elapsed().as_secs_f64()
    };
    rate(&together);
    rate(&separate);
    // Rounds alternate, so that a noisy moment hits every figure alike.
    let mut figures: [Vec<f64>; 4] = Default::default();
    for _ in 0..5 {
        figures[0].push(rate(&together[..1]));
        figures[1].push(rate(&together));
        figures[2].push(rate(&separate[..1]));
        figures[3].push(rate(&separate));
    }
    let [one, two, one_apart, two_apart] = figures.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    println!(
        "2 plugins on 2 threads, {label:<20} one host: {:>4.0}k calls/s against {:.0}k for 1: {:.2}x;   a host each: {:.0}k against {:.0}k: {:.2}x   target >= 1.8x",
        two / 1e3,
        one / 1e3,
        two / one,
        two_apart / 1e3,
        one_apart / 1e3,
        two_apart / one_apart,
    );
}

/// What this machine gives two threads of plain computation against one: the ceiling
/// for the plugins' scaling (two vCPUs may share a physical core).
fn machine_scaling() {
    fn spin() -> u64 {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut sum = 0u64;
        for _ in 0..50_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sum = sum.wrapping_add(x);
        }
        sum
    }
    let (mut ones, mut twos) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let started = Instant::now();
        std::hint::black_box(spin());
        ones.push(1.0 / started.elapsed().as_secs_f64());
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| std::hint::black_box(spin()));
            }
        });
        twos.push(2.0 / started.elapsed().as_secs_f64());
    }
    ones.sort_by(f64::total_cmp);
    twos.sort_by(f64::total_cmp);
    println!(
        "2 threads of plain computation against 1, this machine:   {:.2}x (the ceiling for the line below)",
        twos[2] / ones[2]
    );
}

fn main() {
    let wasm = std::fs::read(corral_test_guests::BENCH_FILTER).unwrap();
    if !std::env::args().any(|a| a == "--idle") {
        println!(
            "sandboxes: guest bench-filter ({} KiB), {} cores",
            wasm.len() / 1024,
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    // Memory in a fresh process of its own for each allocator, so that neither
    // measures the heap the other left behind.
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--idle") {
        let (label, builder) = builders()[args[at + 1].parse::<usize>().unwrap()];
        idle_sandboxes(label, builder(), &wasm);
        return;
    }
    // `sandboxes [idle|fresh|ready|scaling]…` runs only those.
    let wanted = |section: &str| {
        let named: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
        named.is_empty() || named.iter().any(|a| *a == section)
    };
    if wanted("idle") {
        for which in 0..builders().len() {
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--idle", &which.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    if wanted("fresh") {
        for (label, builder) in builders() {
            fresh_instance(label, builder(), &wasm);
        }
    }
    if wanted("ready") {
        for (label, builder) in builders() {
            ready_from_cache(label, builder, &wasm);
        }
    }
    if wanted("scaling") {
        machine_scaling();
        for (label, builder) in builders() {
            scaling(label, builder, &wasm);
        }
    }
}
