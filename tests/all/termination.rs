//! The termination policy: a fatal failure ends a plugin at once; so do too many
//! consecutive failures. A terminated plugin refuses calls and keeps its reason.

use corral::{CallError, Limits, PluginOptions, PluginState};
use corral_test_guests as guests;

use crate::support::{load, load_as, message};

#[test]
fn a_non_fatal_failure_is_counted_and_the_plugin_goes_on() {
    let fails = load("fails-once", guests::FAILS);
    match fails.process_message(&message("order", "")) {
        Err(CallError::Failed { plugin, message }) => {
            assert_eq!(
                (plugin.as_str(), message.as_str()),
                ("fails-once", "cannot handle order")
            );
        }
        other => panic!("expected a non-fatal failure, got {other:?}"),
    }
    assert_eq!(fails.state(), PluginState::Running);
    let stats = fails.stats();
    assert_eq!(
        (stats.process_message.calls, stats.process_message.failures),
        (1, 1)
    );
    assert_eq!(
        stats.instances, 1,
        "a failure the guest returns keeps its instance"
    );
}

#[test]
fn too_many_consecutive_failures_terminate_the_plugin() {
    let fails = load("fails-always", guests::FAILS);
    let max = Limits::DEFAULT_MAX_CONSECUTIVE_FAILURES;
    for _ in 0..max {
        assert!(matches!(
            fails.process_message(&message("x", "")),
            Err(CallError::Failed { .. })
        ));
    }
    let PluginState::Terminated { reason } = fails.state() else {
        panic!("still running after {max} failures");
    };
    assert!(
        reason.starts_with(&format!("{max} consecutive failed calls, the last: ")),
        "{reason}"
    );

    match fails.timer_event(0) {
        Err(CallError::Terminated {
            plugin,
            reason: refused,
        }) => {
            assert_eq!((plugin.as_str(), refused), ("fails-always", reason));
        }
        other => panic!("a terminated plugin answered: {other:?}"),
    }
    let stats = fails.stats();
    assert_eq!(stats.terminations, 1);
    assert_eq!(
        stats.calls(),
        u64::from(max),
        "refused calls are not counted as calls"
    );
}

#[test]
fn a_fatal_failure_terminates_at_once() {
    let fails = load("fails-fatally", guests::FAILS);
    match fails.timer_event(0) {
        Err(CallError::Fatal { message, .. }) => assert_eq!(message, "giving up on purpose"),
        other => panic!("expected a fatal failure, got {other:?}"),
    }
    assert_eq!(
        fails.state(),
        PluginState::Terminated {
            reason: "plugin `fails-fatally` failed fatally: giving up on purpose".into()
        }
    );
    assert!(matches!(
        fails.process_message(&message("x", "")),
        Err(CallError::Terminated { .. })
    ));
}

#[test]
fn a_success_resets_the_count_of_consecutive_failures() {
    let limits = Limits {
        fuel: 1_000_000,
        max_consecutive_failures: 2,
        ..Limits::default()
    };
    let looping = load_as(
        "loop-alternating",
        guests::INFINITE_LOOP,
        PluginOptions::with_limits(limits),
    );
    for _ in 0..5 {
        assert!(looping.process_message(&message("spin", "")).is_err());
        assert!(looping.timer_event(0).is_ok());
    }
    assert_eq!(looping.state(), PluginState::Running);
    assert!(looping.process_message(&message("spin", "")).is_err());
    assert!(looping.process_message(&message("spin", "")).is_err());
    assert!(matches!(looping.state(), PluginState::Terminated { .. }));
}
