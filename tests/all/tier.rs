//! The baseline tier: a component new to the host serves from Winch's code at once and
//! moves to Cranelift's where nothing is lost.

use std::time::Duration;

use corral::{Host, Message, Plugin, PluginOptions, Tier, Value};
use corral_test_guests as guests;
use tempfile::TempDir;

use crate::support::message;

/// A host with the baseline tier over a disk cache of its own.
fn baseline_host(cache: &TempDir) -> Host {
    Host::builder()
        .cache_dir(cache.path())
        .baseline(true)
        .build()
        .expect("host starts")
}

fn load(host: &Host, name: &str, path: &str) -> Plugin {
    let bytes = std::fs::read(path).unwrap();
    host.load(name, &bytes, PluginOptions::default())
        .unwrap_or_else(|e| panic!("cannot load `{name}`: {e}"))
}

/// Waits, with a bound, for the background compile of the optimised code to end.
fn wait_for_optimised(host: &Host) {
    crate::support::eventually("the optimised code", Duration::from_secs(120), || {
        host.compile_stats().compiled > 0
    });
}

#[test]
fn a_new_plugin_that_has_not_been_called_moves_to_optimised_code_at_its_first_call() {
    let cache = TempDir::new().unwrap();
    let host = baseline_host(&cache);
    let probe = load(&host, "tier-fresh", guests::BATCH_PROBE);
    let stats = host.compile_stats();
    assert_eq!((stats.baseline_compiled, stats.cache_hits), (1, 0));
    assert_eq!(probe.tier(), Tier::Baseline);

    wait_for_optimised(&host);
    let emitted = probe.process_message(&message("hi", "")).unwrap().emitted;
    assert_eq!(emitted[0].type_, "probe.seen");
    assert_eq!(probe.tier(), Tier::Optimized);
    assert_eq!(probe.stats().instances, 2);
}

#[test]
fn a_plugin_keeps_its_baseline_instance_and_memory_until_its_next_instance() {
    let cache = TempDir::new().unwrap();
    let host = baseline_host(&cache);
    let bench = load(&host, "tier-memory", guests::BENCH_BATCH);
    let value = |v| Message::new("t").with_field("value", Value::Int(v));
    // Served from baseline code at once, counting in its memory.
    for _ in 0..999 {
        assert!(bench.process_message(&value(1)).unwrap().emitted.is_empty());
    }
    assert_eq!(bench.tier(), Tier::Baseline);

    wait_for_optimised(&host);
    // The instance holds a count only the guest could carry over, and this guest does
    // not export `state`: it keeps serving, and its summary counts all 1,000.
    let summary = &bench.process_message(&value(1)).unwrap().emitted[0];
    assert_eq!(summary.field("seen"), Some(&Value::Int(1000)));
    assert_eq!(bench.tier(), Tier::Baseline);

    // After a trap, the fresh instance is made from the optimised code.
    assert!(bench.process_message(&Message::new("bench.trap")).is_err());
    bench.process_message(&value(1)).unwrap();
    assert_eq!(bench.tier(), Tier::Optimized);
}

#[test]
fn a_stateful_plugin_hands_its_state_over_to_optimised_code() {
    let cache = TempDir::new().unwrap();
    let host = baseline_host(&cache);
    // A tally kept in guest memory, handed over through `corral:plugin/state`.
    let tally = load(&host, "tier-stateful", guests::SWAP_A);
    assert!(tally.preserves_state());
    for _ in 0..3 {
        tally.process_message(&message("m", "")).unwrap();
    }
    assert_eq!(tally.tier(), Tier::Baseline);

    wait_for_optimised(&host);
    let report = &tally.process_message(&message("m", "")).unwrap().emitted[0];
    assert_eq!(tally.tier(), Tier::Optimized);
    assert_eq!(
        report.field("count"),
        Some(&Value::Int(4)),
        "the tally came across"
    );
    assert_eq!(tally.stats().instances, 2);
}

#[test]
fn the_optimised_code_is_cached_for_the_next_host() {
    let cache = TempDir::new().unwrap();
    let first = baseline_host(&cache);
    load(&first, "tier-cached", guests::ECHO);
    wait_for_optimised(&first);

    let second = baseline_host(&cache);
    let echo = load(&second, "tier-cached", guests::ECHO);
    let stats = second.compile_stats();
    assert_eq!(
        (stats.cache_hits, stats.baseline_compiled, stats.compiled),
        (1, 0, 0)
    );
    assert_eq!(echo.tier(), Tier::Optimized);
}

#[test]
fn without_the_baseline_tier_a_plugin_is_optimised_from_the_start() {
    let cache = TempDir::new().unwrap();
    let host = Host::builder().cache_dir(cache.path()).build().unwrap();
    let echo = load(&host, "tier-off", guests::ECHO);
    assert_eq!(echo.tier(), Tier::Optimized);
    assert_eq!(host.compile_stats().baseline_compiled, 0);
}
