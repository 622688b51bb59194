//! Hostile guests: each ends in its exact typed outcome, the host stays up, and other
//! plugins answer while it misbehaves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral::{CallError, Limit, Limits, Message, PluginOptions, Value};
use corral_test_guests as guests;

use crate::support::{host, load, load_as, message};

fn limited(limits: Limits) -> PluginOptions {
    PluginOptions::with_limits(limits)
}

/// Runs `call` on another thread while calling a well-behaved plugin here; returns the
/// misbehaving call's result and how many answers the other plugin gave meanwhile.
fn while_misbehaving<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (T, usize) {
    let hello = load("hello-bystander", guests::HELLO);
    let busy = Arc::new(AtomicBool::new(true));
    let flag = busy.clone();
    let thread = std::thread::spawn(move || {
        let result = call();
        flag.store(false, Ordering::SeqCst);
        result
    });
    let bound = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    while busy.load(Ordering::SeqCst) && Instant::now() < bound {
        hello
            .process_message(&message("ping", "x"))
            .expect("the bystander answers");
        answered += usize::from(busy.load(Ordering::SeqCst));
    }
    (thread.join().unwrap(), answered)
}

fn expect_limit(result: Result<corral::CallOutcome, CallError>, expected: Limit) {
    match result {
        Err(CallError::Limit { limit, .. }) => assert_eq!(limit, expected),
        other => panic!("expected the {expected} limit, got {other:?}"),
    }
}

#[test]
fn a_loop_calling_host_imports_runs_out_of_fuel_or_time() {
    // Time spent in the host burns no fuel: the deadline is what stops a loop that
    // mostly waits on host calls, and fuel when the deadline is generous.
    let fuel_bound = limited(Limits {
        fuel: 5_000_000,
        deadline: Duration::from_secs(120),
        ..Limits::default()
    });
    let calls = load_as("host-call-loop-fuel", guests::HOST_CALL_LOOP, fuel_bound);
    expect_limit(calls.process_message(&message("go", "")), Limit::Fuel);

    let time_bound = limited(Limits {
        fuel: u64::MAX,
        deadline: Duration::from_millis(300),
        ..Limits::default()
    });
    let calls = Arc::new(load_as("host-call-loop-time", guests::HOST_CALL_LOOP, time_bound));
    let looping = calls.clone();
    let (result, answered) = while_misbehaving(move || looping.process_message(&message("go", "")));
    expect_limit(result, Limit::Deadline);
    assert!(answered > 0, "the bystander never answered meanwhile");
    assert!(calls.timer_event(0).is_ok(), "a fresh instance answers");
}

#[test]
fn spinning_on_clocks_and_random_runs_out_of_fuel() {
    // Clock and random calls are host calls: on a loaded machine the default 1 s
    // deadline could come first. A long deadline makes fuel the limit under test.
    let options = limited(Limits {
        deadline: Duration::from_secs(120),
        ..Limits::default()
    });
    let spinner = Arc::new(load_as("clock-spinner", guests::CLOCK_SPINNER, options));
    let spinning = spinner.clone();
    let (result, answered) = while_misbehaving(move || spinning.process_message(&message("go", "")));
    expect_limit(result, Limit::Fuel);
    assert!(answered > 0);
    assert!(spinner.timer_event(0).is_ok());
}

#[test]
fn one_huge_allocation_is_refused_at_the_memory_cap() {
    let hog = load("huge-alloc", guests::HUGE_ALLOC);
    match hog.process_message(&message("go", "")) {
        Err(CallError::Limit {
            limit: Limit::Memory,
            detail,
            ..
        }) => {
            assert!(
                detail.contains(&format!("may hold {} bytes", Limits::DEFAULT_MEMORY_BYTES)),
                "{detail}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(hog.stats().peak_memory_bytes <= Limits::DEFAULT_MEMORY_BYTES);
    assert!(hog.timer_event(0).is_ok());
}

#[test]
fn huge_config_and_store_values_meet_their_limits() {
    let big = "x".repeat(200_000);
    let options = PluginOptions::default().config("big", big.clone());
    let values = load_as("huge-values", guests::HUGE_VALUES, options);
    let read = values
        .process_message(&message("config", ""))
        .unwrap()
        .emitted
        .remove(0);
    assert_eq!(read.field("len"), Some(&Value::Int(big.len() as i64)));

    let store_big = |bytes: i64| {
        let m = message("store-big", "").with_field("bytes", Value::Int(bytes));
        values
            .process_message(&m)
            .unwrap()
            .emitted
            .remove(0)
            .field("outcome")
            .cloned()
    };
    let max = i64::from(Limits::DEFAULT_STORE_VALUE_BYTES);
    assert_eq!(store_big(max), Some(Value::String("ok".into())));
    match store_big(max + 1) {
        Some(Value::String(s)) => assert!(s.starts_with("error: Error::TooLarge("), "{s}"),
        other => panic!("{other:?}"),
    }
    // A config value larger than the memory cap cannot even be read: the call fails,
    // the host does not.
    let options = PluginOptions::with_limits(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    })
    .config("big", "y".repeat(8 << 20));
    let starved = load_as("huge-values-starved", guests::HUGE_VALUES, options);
    expect_limit(starved.process_message(&message("config", "")), Limit::Memory);
}

#[test]
fn store_keys_never_reach_another_namespace() {
    let store = host().store().clone();
    store.set("escape-victim", "count/x", b"secret").unwrap();
    let escape = load("store-escape", guests::STORE_ESCAPE);
    let report = escape
        .process_message(&message("escape", ""))
        .unwrap()
        .emitted
        .remove(0);
    let text = |name: &str| match report.field(name) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    assert!(
        text("set-0").contains("InvalidKey(\"the key is empty\")"),
        "{}",
        text("set-0")
    );
    assert!(
        text("set-1").contains("more than the 1024 allowed"),
        "{}",
        text("set-1")
    );
    assert_eq!(text("read-other"), "none", "another plugin's key was visible");
    // Whatever the key, it lands in the plugin's own namespace, and nowhere else.
    let own = store.list_keys("store-escape", "").unwrap();
    for key in ["../other/count/x", "other-plugin/count/x", "count/\0x", "/", "*"] {
        assert!(own.iter().any(|k| k == key), "{key:?} not in {own:?}");
    }
    assert_eq!(store.list_keys("escape-victim", "").unwrap(), ["count/x"]);
    assert_eq!(
        store.get("escape-victim", "count/x").unwrap().as_deref(),
        Some(&b"secret"[..])
    );
    assert!(store.list_keys("other", "").unwrap().is_empty());
    assert!(store.list_keys("other-plugin", "").unwrap().is_empty());
}

fn report(name: &str, path: &str) -> Message {
    load(name, path)
        .process_message(&message("go", ""))
        .unwrap()
        .emitted
        .remove(0)
}

fn denied(report: &Message, fields: &[&str]) {
    for name in fields {
        match report.field(name) {
            Some(Value::String(s)) => assert!(s.starts_with("denied: "), "{name}: {s}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn reading_etc_passwd_or_listing_the_root_is_denied() {
    let report = report("reads-etc-passwd", guests::READS_ETC_PASSWD);
    denied(&report, &["etc-passwd", "list-root", "list-cwd"]);
}

#[test]
fn sockets_and_name_lookups_are_denied() {
    let report = report("opens-socket", guests::OPENS_SOCKET);
    denied(
        &report,
        &[
            "tcp-connect-local",
            "tcp-connect-remote",
            "tcp-listen",
            "udp-bind",
            "udp-send",
            "dns-localhost",
            "dns-remote",
        ],
    );
}

#[test]
fn the_host_environment_is_invisible() {
    let report = report("reads-env", guests::READS_ENV);
    assert_eq!(report.field("vars"), Some(&Value::Int(0)));
    assert_eq!(report.field("args"), Some(&Value::Int(0)));
    assert_eq!(report.field("home"), Some(&Value::String("unset".into())));
    assert_eq!(report.field("stdin-bytes"), Some(&Value::Int(0)));
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test itself has an environment to hide"
    );
}

#[test]
fn a_flood_of_large_emits_stops_at_the_output_cap() {
    let flood = load("emit-bytes-flood", guests::EMIT_BYTES_FLOOD);
    expect_limit(flood.process_message(&message("go", "")), Limit::Output);
    let stats = flood.stats();
    assert!(stats.max_output_bytes <= Limits::DEFAULT_OUTPUT_BYTES);
    assert!(stats.discarded > 0 && stats.emitted == 0, "{stats:?}");
    assert!(flood.timer_event(0).is_ok());
}

#[test]
fn a_store_namespace_holds_at_most_its_key_quota() {
    let options = limited(Limits {
        store_keys: 20,
        ..Limits::default()
    });
    let values = load_as("huge-values-quota", guests::HUGE_VALUES, options);
    let many = message("store-many", "").with_field("count", Value::Int(50));
    let result = values.process_message(&many).unwrap().emitted.remove(0);
    assert_eq!(result.field("written"), Some(&Value::Int(20)));
    match result.field("outcome") {
        Some(Value::String(s)) => assert!(s.contains("the store holds 20 keys, the most allowed"), "{s}"),
        other => panic!("{other:?}"),
    }
    // Overwriting a key that exists is still allowed at the quota.
    let again = message("store-many", "").with_field("count", Value::Int(5));
    let result = values.process_message(&again).unwrap().emitted.remove(0);
    assert_eq!(result.field("outcome"), Some(&Value::String("ok".into())));
    assert_eq!(host().store().count("huge-values-quota").unwrap(), 20);
}
