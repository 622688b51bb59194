//! Soak: 10,000 traps with re-instantiation, then 1,000 hot swaps under continuous calls.
//! Prints resident memory at the start and end of each phase, calls made, calls that
//! failed though they should not have, and calls lost; exits non-zero when resident
//! memory grew by more than 10 %, or any call failed or was lost.
//!
//! Run with `just soak` (or `cargo bench -p corral --bench soak`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral::{CallError, Event, Host, Message, PluginOptions, Registry, Value, WatchOptions};

const TRAPS: usize = 10_000;
const SWAPS: usize = 1_000;

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Growth from `start` to `end` as a fraction, printed; `true` when within 10 %.
fn report_rss(phase: &str, start: u64, end: u64) -> bool {
    let growth = end as f64 / start as f64 - 1.0;
    println!(
        "{phase}: resident {:.1} MiB at start, {:.1} MiB at end ({:+.1} %)",
        mib(start),
        mib(end),
        growth * 100.0
    );
    growth <= 0.10
}

fn traps(host: &Host) -> bool {
    let bytes = std::fs::read(corral_test_guests::PANICS).unwrap();
    let options = PluginOptions::with_limits(corral::Limits {
        max_consecutive_failures: u32::MAX,
        ..corral::Limits::default()
    });
    let plugin = host.load("panics", &bytes, options).unwrap();
    let message = Message::new("boom");
    // Warm up: allocator pools, the stack of the first instances.
    for _ in 0..200 {
        let _ = plugin.process_message(&message);
    }
    let (start, started) = (rss(), Instant::now());
    let mut unexpected = 0;
    for _ in 0..TRAPS {
        match plugin.process_message(&message) {
            Err(CallError::Panic { .. }) => {}
            other => {
                unexpected += 1;
                eprintln!("unexpected outcome: {other:?}");
            }
        }
    }
    let end = rss();
    let stats = plugin.stats();
    println!(
        "traps: {TRAPS} in {:.1} s ({:.0} µs per trap and fresh instance), {} instances, {unexpected} unexpected outcomes",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() * 1e6 / TRAPS as f64,
        stats.instances
    );
    report_rss("traps", start, end) && unexpected == 0
}

fn swaps(host: &Host) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        std::fs::read(corral_test_guests::SWAP_A).unwrap(),
        std::fs::read(corral_test_guests::SWAP_B).unwrap(),
    );
    std::fs::write(dir.path().join("tally.wasm"), &a).unwrap();
    let registry = Registry::new(host.clone());
    let events = registry.subscribe();
    let options = WatchOptions {
        debounce: Duration::from_millis(5),
        ..WatchOptions::default()
    };
    let _watcher = registry.watch_with(dir.path(), options).unwrap();
    let _ = events.try_iter().count();

    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut made, mut failed, mut last) = (0u64, 0u64, 0i64);
            let mut out_of_order = 0u64;
            while !stop.load(Ordering::SeqCst) {
                made += 1;
                match registry.process_message("tally", &Message::new("x")) {
                    Ok(outcome) => match outcome.emitted[0].field("count") {
                        Some(Value::Int(n)) => {
                            out_of_order += u64::from(*n != last + 1);
                            last = *n;
                        }
                        other => panic!("no count: {other:?}"),
                    },
                    Err(e) => {
                        failed += 1;
                        eprintln!("call failed: {e}");
                    }
                }
            }
            (made, failed, out_of_order, last)
        })
    };
    let temp = dir.path().join(".tally.partial");
    let mut start = 0;
    let started = Instant::now();
    for i in 0..SWAPS {
        if i == 50 {
            start = rss();
        }
        std::fs::write(&temp, if i % 2 == 0 { &b } else { &a }).unwrap();
        std::fs::rename(&temp, dir.path().join("tally.wasm")).unwrap();
        loop {
            match events.recv_timeout(Duration::from_secs(30)) {
                Ok(Event::Replaced { .. }) => break,
                Ok(other) => eprintln!("unexpected event: {other:?}"),
                Err(_) => {
                    eprintln!("swap {i} never happened");
                    return false;
                }
            }
        }
    }
    let end = rss();
    stop.store(true, Ordering::SeqCst);
    let (made, failed, out_of_order, last) = caller.join().unwrap();
    let lost = made - failed - last as u64;
    println!(
        "swaps: {SWAPS} in {:.1} s under {made} calls: {failed} failed, {lost} lost, {out_of_order} out of order",
        started.elapsed().as_secs_f64()
    );
    report_rss("swaps", start, end) && failed == 0 && lost == 0 && out_of_order == 0
}

fn main() -> ExitCode {
    let host = Host::new().unwrap();
    let ok = traps(&host) & swaps(&host);
    if ok {
        println!("soak passed");
        ExitCode::SUCCESS
    } else {
        println!("soak FAILED");
        ExitCode::FAILURE
    }
}
