//! The deadline bounds every moment a guest holds, in wall time, including time blocked
//! in host calls: sleeps, polls, blocking reads, start functions, `state.save` and
//! `state.restore`. Each breach is the typed deadline error within a generous bound of
//! the deadline (never the sleep's length), the next call gets a fresh instance, and
//! another plugin is served meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corral::{
    CallError, DirGrant, Installed, Limit, Limits, LoadError, Message, Plugin, PluginOptions, Registry,
    Sidecar, StateHandoff, Value,
};
use corral_test_guests as guests;

use crate::support::{host, load, load_as, message};

const DEADLINE: Duration = Duration::from_secs(1);
/// How far past its deadline a blocked call may end on a loaded machine.
const SLACK: Duration = Duration::from_secs(2);

fn options() -> PluginOptions {
    PluginOptions::with_limits(Limits {
        deadline: DEADLINE,
        // Fuel is not what is under test: blocked in the host, a guest burns none.
        fuel: u64::MAX,
        ..Limits::default()
    })
}

fn sleeper(name: &str, options: PluginOptions) -> Arc<Plugin> {
    Arc::new(load_as(name, guests::SLEEPER, options))
}

/// A message of type `mode`, asking the sleeper to block for `ms`.
fn block_for(mode: &str, ms: i64) -> Message {
    message(mode, "").with_field("ms", Value::Int(ms))
}

/// Runs `call` on another thread while a bystander plugin answers here; returns the
/// call's result, how long it took, and how many answers the bystander gave meanwhile.
fn while_blocked<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (T, Duration, usize) {
    let bystander = load("deadline-bystander", guests::HELLO);
    let busy = Arc::new(AtomicBool::new(true));
    let flag = busy.clone();
    let started = Instant::now();
    let thread = std::thread::spawn(move || {
        let result = call();
        let took = started.elapsed();
        flag.store(false, Ordering::SeqCst);
        (result, took)
    });
    let mut answered = 0;
    while busy.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
        bystander
            .process_message(&message("ping", "x"))
            .expect("the bystander answers");
        answered += usize::from(busy.load(Ordering::SeqCst));
    }
    let (result, took) = thread.join().unwrap();
    (result, took, answered)
}

fn expect_deadline(result: Result<corral::CallOutcome, CallError>) {
    match result {
        Err(CallError::Limit {
            limit: Limit::Deadline,
            ..
        }) => {}
        other => panic!("expected the deadline limit, got {other:?}"),
    }
}

fn within_the_deadline(took: Duration) {
    assert!(
        took + Duration::from_millis(50) >= DEADLINE,
        "ended before its deadline: {took:?}"
    );
    assert!(
        took < DEADLINE + SLACK,
        "ended {took:?} after it began, long past its {DEADLINE:?} deadline"
    );
}

/// The number of calls the sleeper's instance has taken, from a call that answers.
fn calls_of_this_instance(plugin: &Plugin) -> Value {
    plugin.process_message(&message("count", "")).unwrap().emitted[0]
        .field("calls")
        .cloned()
        .unwrap()
}

#[test]
fn every_way_of_blocking_in_wasi_ends_at_the_deadline() {
    // An hour's sleep, and one of five seconds, under a one-second deadline: through
    // std::thread::sleep, pollable.block, poll, and a poll on an instant no clock reaches.
    for (mode, ms) in [
        ("sleep", 3_600_000),
        ("sleep", 5_000),
        ("block", 3_600_000),
        ("poll", 3_600_000),
        ("poll-never", 0),
    ] {
        let plugin = sleeper(&format!("sleeper-{mode}-{ms}"), options());
        let blocked = plugin.clone();
        let (result, took, answered) = while_blocked(move || blocked.process_message(&block_for(mode, ms)));
        expect_deadline(result);
        within_the_deadline(took);
        assert!(answered > 0, "{mode}: the bystander never answered meanwhile");
        // The blocked instance was thrown away: a fresh one has taken one call.
        assert_eq!(calls_of_this_instance(&plugin), Value::Int(1), "{mode}");
        let stats = plugin.stats();
        assert_eq!(stats.instances, 2, "{mode}: {stats:?}");
        assert_eq!(stats.process_message.failures, 1, "{mode}");
    }
}

#[test]
fn a_short_sleep_within_the_deadline_is_no_failure() {
    let plugin = sleeper("sleeper-short", options());
    let started = Instant::now();
    plugin.process_message(&block_for("sleep", 50)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        calls_of_this_instance(&plugin),
        Value::Int(2),
        "the same instance"
    );
}

#[test]
fn spinning_on_a_pollable_that_is_never_ready_ends_at_the_deadline() {
    let plugin = sleeper("sleeper-ready-loop", options());
    let spinning = plugin.clone();
    let (result, took, answered) =
        while_blocked(move || spinning.process_message(&block_for("ready-loop", 3_600_000)));
    expect_deadline(result);
    within_the_deadline(took);
    assert!(answered > 0);
    assert_eq!(calls_of_this_instance(&plugin), Value::Int(1));
}

#[test]
fn a_batch_brings_the_deadline_of_each_message() {
    // Two messages for a filter plugin are two calls of one deadline each.
    let plugin = sleeper("sleeper-two", options());
    let started = Instant::now();
    let outcome = plugin
        .process_messages(&[block_for("sleep", 3_600_000), block_for("sleep", 3_600_000)])
        .unwrap();
    assert_eq!(outcome.failed.len(), 2);
    for (_, error) in &outcome.failed {
        assert_eq!(error.limit(), Some(Limit::Deadline), "{error}");
    }
    assert!(
        started.elapsed() < 2 * DEADLINE + SLACK,
        "{:?}",
        started.elapsed()
    );
}

/// A FIFO in a directory granted to the plugin, and the options that grant it.
fn fifo() -> (tempfile::TempDir, std::path::PathBuf, PluginOptions) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo failed");
    let options = options()
        .dir(DirGrant {
            host: dir.path().to_owned(),
            guest: "/granted".into(),
            writable: false,
        })
        .config("path", "/granted/fifo");
    (dir, fifo, options)
}

#[test]
fn opening_a_fifo_nobody_writes_ends_at_the_deadline() {
    let (_dir, _fifo, options) = fifo();
    let plugin = sleeper("sleeper-fifo-open", options);
    let reading = plugin.clone();
    let (result, took, answered) = while_blocked(move || reading.process_message(&message("read", "")));
    expect_deadline(result);
    within_the_deadline(took);
    assert!(answered > 0);
    assert_eq!(calls_of_this_instance(&plugin), Value::Int(1));
}

#[test]
fn a_fifo_with_a_writer_fails_its_read_at_once_rather_than_block() {
    let (_dir, fifo, options) = fifo();
    // A writer that holds the FIFO open and never writes: the guest's open succeeds.
    // WASI reads files at an offset, which a FIFO refuses (ESPIPE), so the read fails
    // at once: there is no blocking read of a FIFO to bound.
    let _writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let plugin = sleeper("sleeper-fifo-read", options);
    let started = Instant::now();
    match plugin.process_message(&message("read", "")) {
        Err(CallError::Failed { message, .. }) => {
            assert!(message.starts_with("/granted/fifo: "), "{message}")
        }
        other => panic!("expected the read to fail, got {other:?}"),
    }
    assert!(started.elapsed() < DEADLINE, "{:?}", started.elapsed());
}

#[test]
fn a_start_function_that_sleeps_fails_the_load_at_the_deadline() {
    let bytes = std::fs::read(guests::SLEEPS_AT_START).unwrap();
    let (result, took, answered) = while_blocked(move || host().load("sleeps-at-start", &bytes, options()));
    match result {
        Err(LoadError::StartLimit {
            plugin,
            limit: Limit::Deadline,
            ..
        }) => assert_eq!(plugin, "sleeps-at-start"),
        other => panic!("expected the deadline at start-up, got {other:?}"),
    }
    within_the_deadline(took);
    assert!(answered > 0);
}

fn sidecar(options: PluginOptions) -> Sidecar {
    Sidecar {
        options,
        ..Sidecar::default()
    }
}

#[test]
fn a_save_that_sleeps_during_a_swap_ends_at_the_deadline_and_holds_up_only_its_plugin() {
    let registry = Registry::new(host().clone());
    let bytes = std::fs::read(guests::SLEEPER).unwrap();
    let sleepy = sidecar(options().config("sleep-in", "save"));
    assert_eq!(
        registry.install("swap-sleeps", &bytes, sleepy).unwrap(),
        Installed::Loaded
    );
    registry
        .process_message("swap-sleeps", &message("count", ""))
        .unwrap();

    // Another name, compiled already, so that its load below is quick.
    let hello = std::fs::read(guests::HELLO).unwrap();
    registry
        .install("swap-bystander", &hello, Sidecar::default())
        .unwrap();

    // The swap (new settings, same code) calls the old version's save, which sleeps.
    let old = registry.get("swap-sleeps").unwrap();
    let swapping = registry.clone();
    let swap = std::thread::spawn(move || {
        let started = Instant::now();
        let installed = swapping.install("swap-sleeps", &bytes, sidecar(options()));
        (installed, started.elapsed())
    });
    crate::support::eventually(
        "the swap to hold the old version",
        Duration::from_secs(10),
        || call_in_progress(&old),
    );
    // Meanwhile another name loads, and another plugin answers, without waiting for it.
    registry
        .install("swap-bystander-2", &hello, Sidecar::default())
        .unwrap();
    registry
        .process_message("swap-bystander", &message("ping", "x"))
        .unwrap();
    assert!(!swap.is_finished(), "the other load waited for the swap");
    let (installed, took) = swap.join().unwrap();
    match installed.unwrap() {
        Installed::Replaced(StateHandoff::SaveFailed(reason)) => {
            assert!(reason.contains("deadline"), "{reason}")
        }
        other => panic!("expected the save to fail at its deadline, got {other:?}"),
    }
    within_the_deadline(took);
    // The new version serves, from a fresh start.
    let count = registry
        .process_message("swap-sleeps", &message("count", ""))
        .unwrap();
    assert_eq!(count.emitted[0].field("calls"), Some(&Value::Int(1)));
}

#[test]
fn a_restore_that_sleeps_ends_at_the_deadline_and_the_new_version_starts_empty() {
    let registry = Registry::new(host().clone());
    let bytes = std::fs::read(guests::SLEEPER).unwrap();
    registry
        .install("restore-sleeps", &bytes, sidecar(options()))
        .unwrap();
    let started = Instant::now();
    let installed = registry
        .install(
            "restore-sleeps",
            &bytes,
            sidecar(options().config("sleep-in", "restore")),
        )
        .unwrap();
    match installed {
        Installed::Replaced(StateHandoff::RestoreFailed(reason)) => {
            assert!(reason.contains("deadline"), "{reason}")
        }
        other => panic!("expected the restore to fail at its deadline, got {other:?}"),
    }
    within_the_deadline(started.elapsed());
    let count = registry
        .process_message("restore-sleeps", &message("count", ""))
        .unwrap();
    assert_eq!(count.emitted[0].field("calls"), Some(&Value::Int(1)));
}

#[test]
fn status_and_stats_are_read_while_a_call_is_blocked() {
    let plugin = sleeper("sleeper-status", options());
    let blocked = plugin.clone();
    let call = std::thread::spawn(move || blocked.process_message(&block_for("sleep", 3_600_000)));
    crate::support::eventually("the call to begin", Duration::from_secs(10), || {
        call_in_progress(&plugin)
    });
    // None of these wait for the call.
    let started = Instant::now();
    assert_eq!(plugin.state(), corral::PluginState::Running);
    let _ = plugin.stats();
    let _ = plugin.tier();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    expect_deadline(call.join().unwrap());
}

/// Whether a call holds the plugin: a second call on another thread does not answer at
/// once. (The sleeper's `count` answers at once when it is free.)
fn call_in_progress(plugin: &Arc<Plugin>) -> bool {
    let probe = plugin.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(probe.process_message(&message("count", "")).is_ok());
    });
    rx.recv_timeout(Duration::from_millis(100)).is_err()
}
