//! Every limit ends the call in its typed error, and the plugin serves the next call on
//! a fresh instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use corral::{CallError, Limit, Limits, PluginOptions, PluginState, Value};
use corral_test_guests as guests;

use crate::support::{load, load_as, message};

fn limited(limits: Limits) -> PluginOptions {
    PluginOptions::with_limits(limits)
}

fn assert_limit(result: Result<corral::CallOutcome, CallError>, plugin: &str, expected: Limit) -> String {
    match result {
        Err(CallError::Limit {
            plugin: p,
            limit,
            detail,
        }) => {
            assert_eq!((p.as_str(), limit), (plugin, expected), "{detail}");
            detail
        }
        other => panic!("expected the {expected} limit, got {other:?}"),
    }
}

#[test]
fn an_infinite_loop_runs_out_of_fuel_and_the_next_call_gets_a_fresh_instance() {
    // A deadline far away, so that fuel is the limit even on a crowded machine.
    let limits = Limits {
        deadline: Duration::from_secs(120),
        ..Limits::default()
    };
    let looping = load_as("loop-fuel", guests::INFINITE_LOOP, limited(limits));
    let detail = assert_limit(
        looping.process_message(&message("spin", "")),
        "loop-fuel",
        Limit::Fuel,
    );
    assert!(detail.contains(&Limits::DEFAULT_FUEL.to_string()), "{detail}");

    // The trapped instance is gone: the new one has started no process-message call.
    let alive = looping.timer_event(0).expect("a fresh instance answers");
    assert_eq!(alive.emitted[0].field("started"), Some(&Value::Int(0)));
    let stats = looping.stats();
    assert_eq!(stats.instances, 2);
    assert_eq!(stats.max_fuel_used, Limits::DEFAULT_FUEL);
    assert_eq!(looping.state(), PluginState::Running);
}

#[test]
fn other_plugins_keep_answering_while_one_spins() {
    let limits = Limits {
        fuel: u64::MAX,
        deadline: Duration::from_millis(400),
        ..Limits::default()
    };
    let looping = Arc::new(load_as("loop-neighbour", guests::INFINITE_LOOP, limited(limits)));
    let hello = load("hello-neighbour", guests::HELLO);

    let spinning = Arc::new(AtomicBool::new(true));
    let spinner = {
        let (looping, spinning) = (looping.clone(), spinning.clone());
        thread::spawn(move || {
            let result = looping.process_message(&message("spin", ""));
            spinning.store(false, Ordering::SeqCst);
            result
        })
    };
    // Answered while the other plugin was still inside its call.
    let mut answered_meanwhile = 0;
    let bound = Instant::now() + Duration::from_secs(30);
    while spinning.load(Ordering::SeqCst) && Instant::now() < bound {
        hello
            .process_message(&message("ping", "test"))
            .expect("hello answers");
        if spinning.load(Ordering::SeqCst) {
            answered_meanwhile += 1;
        }
    }
    assert_limit(spinner.join().unwrap(), "loop-neighbour", Limit::Deadline);
    assert!(
        answered_meanwhile > 0,
        "hello answered no call while the loop ran"
    );
}

#[test]
fn a_loop_with_unlimited_fuel_hits_the_wall_clock_deadline() {
    let deadline = Duration::from_millis(100);
    let limits = Limits {
        fuel: u64::MAX,
        deadline,
        ..Limits::default()
    };
    let looping = load_as("loop-deadline", guests::INFINITE_LOOP, limited(limits));
    let started = Instant::now();
    assert_limit(
        looping.process_message(&message("spin", "")),
        "loop-deadline",
        Limit::Deadline,
    );
    let took = started.elapsed();
    assert!(
        took >= deadline,
        "stopped after {took:?}, before the {deadline:?} deadline"
    );
    assert!(looping.timer_event(0).is_ok());
}

#[test]
fn a_memory_hog_is_refused_at_the_cap() {
    let cap = 8 << 20;
    let limits = Limits {
        memory_bytes: cap,
        ..Limits::default()
    };
    let hog = load_as("memory-hog", guests::MEMORY_HOG, limited(limits));
    let detail = assert_limit(
        hog.process_message(&message("eat", "")),
        "memory-hog",
        Limit::Memory,
    );
    assert!(detail.contains(&cap.to_string()), "{detail}");
    let stats = hog.stats();
    assert!(
        stats.peak_memory_bytes <= cap,
        "peak {} over the cap",
        stats.peak_memory_bytes
    );
    assert!(
        stats.peak_memory_bytes > cap / 2,
        "the hog grew to {} only",
        stats.peak_memory_bytes
    );
    assert!(hog.timer_event(0).is_ok(), "a fresh instance answers");
}

#[test]
fn a_plugin_that_cannot_start_within_its_memory_cap_does_not_load() {
    let limits = Limits {
        memory_bytes: 64 << 10,
        ..Limits::default()
    };
    let bytes = std::fs::read(guests::HELLO).unwrap();
    match crate::support::host().load("hello-tiny", &bytes, limited(limits)) {
        Err(corral::LoadError::Instantiate { plugin, .. }) => assert_eq!(plugin, "hello-tiny"),
        other => panic!("expected a start-up failure, got {other:?}"),
    }
}

#[test]
fn a_log_flood_stops_at_the_output_cap_whatever_the_channel() {
    let cap = 4096;
    let limits = Limits {
        output_bytes: cap,
        ..Limits::default()
    };
    for channel in ["log", "stdout", "stderr"] {
        let name = format!("log-flood-{channel}");
        let flood = load_as(&name, guests::LOG_FLOOD, limited(limits.clone()));
        assert_limit(flood.process_message(&message(channel, "")), &name, Limit::Output);
        let used = flood.stats().max_output_bytes;
        assert!(used <= cap && used > cap / 2, "{channel}: {used} bytes written");
        assert!(flood.timer_event(0).is_ok());
    }
}

#[test]
fn an_emit_flood_stops_at_the_emit_cap_and_its_messages_are_discarded() {
    let limits = Limits {
        emits: 10,
        ..Limits::default()
    };
    let flood = load_as("emit-flood", guests::EMIT_FLOOD, limited(limits));
    let detail = assert_limit(
        flood.process_message(&message("small", "")),
        "emit-flood",
        Limit::Emits,
    );
    assert!(detail.contains("10 messages"), "{detail}");
    let stats = flood.stats();
    assert_eq!((stats.emitted, stats.discarded), (0, 10));
}

#[test]
fn big_emitted_messages_count_against_the_output_cap() {
    let flood = load("emit-flood-big", guests::EMIT_FLOOD);
    assert_limit(
        flood.process_message(&message("big", "")),
        "emit-flood-big",
        Limit::Output,
    );
    // 8 KiB messages against the 64 KiB default: seven fit, the eighth does not.
    assert_eq!(flood.stats().discarded, 7);
}
