//! The restart policy: a plugin terminated with one comes back after its backoff, the
//! backoff grows and is capped, the most restarts in a row hold; without one, a
//! terminated plugin stays terminated until replaced.

use std::time::{Duration, Instant, SystemTime};

use corral::{CallError, PluginOptions, PluginState, Registry, RestartPolicy, Sidecar};
use corral_test_guests as guests;

use crate::support::{eventually, host, load_as};

const BOUND: Duration = Duration::from_secs(20);

fn policy() -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(200),
        factor: 2,
        max_backoff: Duration::from_millis(800),
        max_restarts: None,
        reset_after: Duration::from_secs(600),
    }
}

fn with(policy: Option<RestartPolicy>) -> Sidecar {
    Sidecar {
        options: PluginOptions {
            restart: policy,
            ..PluginOptions::default()
        },
        ..Sidecar::default()
    }
}

/// Terminates the `fails` plugin serving `name` (its timer event fails fatally) and
/// returns how long until its next restart is due, as its status says.
fn terminate(registry: &Registry, name: &str) -> Option<Duration> {
    match registry.timer_event(name, 0) {
        Err(CallError::Fatal { .. }) => {}
        other => panic!("expected a fatal failure, got {other:?}"),
    }
    let plugin = registry.get(name).unwrap();
    assert!(matches!(plugin.state(), PluginState::Terminated { .. }));
    let next = plugin.restart_status().expect("a policy").next_at?;
    Some(next.duration_since(SystemTime::now()).unwrap_or_default())
}

#[test]
fn a_terminated_plugin_comes_back_after_a_backoff_that_grows_to_its_cap() {
    let registry = Registry::new(host().clone());
    let bytes = std::fs::read(guests::FAILS).unwrap();
    registry
        .install("restarts", &bytes, with(Some(policy())))
        .unwrap();
    let plugin = registry.get("restarts").unwrap();

    let mut waits = Vec::new();
    for restarts in 1..=4 {
        let wait = terminate(&registry, "restarts").expect("a restart is due");
        waits.push(wait);
        assert!(
            matches!(
                registry.process_message("restarts", &corral::Message::new("x")),
                Err(CallError::Terminated { .. })
            ),
            "terminated until the restart"
        );
        // No call brings it back: it restarts on its own when due.
        let terminated_at = Instant::now();
        eventually("the restart", BOUND, || plugin.state() == PluginState::Running);
        assert!(terminated_at.elapsed() + Duration::from_millis(50) >= wait.min(Duration::from_millis(200)));
        let status = plugin.restart_status().unwrap();
        assert_eq!((status.restarts, status.in_a_row), (restarts, restarts as u32));
        assert_eq!(status.next_at, None);
        assert_eq!(plugin.stats().restarts, restarts);
        // Back to work: the guest answers (with its usual non-fatal failure).
        assert!(matches!(
            registry.process_message("restarts", &corral::Message::new("x")),
            Err(CallError::Failed { .. })
        ));
    }
    // 200, 400, 800, 800 ms: each wait at most its backoff and more than half of it, so
    // the first three grow and the last is held at the cap.
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    for (wait, backoff) in ms.iter().zip([200, 400, 800, 800]) {
        assert!(*wait <= backoff && *wait > backoff / 2, "waits {ms:?}");
    }
    assert_eq!(plugin.stats().terminations, 4);
}

#[test]
fn a_plugin_stays_terminated_after_its_most_restarts_in_a_row() {
    let registry = Registry::new(host().clone());
    let bytes = std::fs::read(guests::FAILS).unwrap();
    let once = RestartPolicy {
        max_restarts: Some(1),
        initial_backoff: Duration::from_millis(50),
        ..policy()
    };
    registry
        .install("restarts-once", &bytes, with(Some(once)))
        .unwrap();
    let plugin = registry.get("restarts-once").unwrap();
    terminate(&registry, "restarts-once").expect("one restart");
    eventually("the restart", BOUND, || plugin.state() == PluginState::Running);
    assert_eq!(terminate(&registry, "restarts-once"), None, "no second restart");
    let status = plugin.restart_status().unwrap();
    assert!(status.gave_up && status.restarts == 1, "{status:?}");
    assert!(matches!(
        registry.process_message("restarts-once", &corral::Message::new("x")),
        Err(CallError::Terminated { .. })
    ));
}

#[test]
fn without_a_policy_termination_lasts_until_replaced() {
    let registry = Registry::new(host().clone());
    let bytes = std::fs::read(guests::FAILS).unwrap();
    registry.install("no-restarts", &bytes, with(None)).unwrap();
    assert!(registry.timer_event("no-restarts", 0).is_err());
    let plugin = registry.get("no-restarts").unwrap();
    assert_eq!(plugin.restart_status(), None);
    assert!(matches!(plugin.state(), PluginState::Terminated { .. }));
    assert!(matches!(
        registry.process_message("no-restarts", &corral::Message::new("x")),
        Err(CallError::Terminated { .. })
    ));
    assert_eq!(plugin.stats().restarts, 0);
}

#[test]
fn a_plugin_outside_a_registry_restarts_at_its_first_call_after_the_backoff() {
    let options = PluginOptions {
        restart: Some(RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            ..policy()
        }),
        ..PluginOptions::default()
    };
    let plugin = load_as("restarts-lazily", guests::FAILS, options);
    assert!(matches!(plugin.timer_event(0), Err(CallError::Fatal { .. })));
    let terminated = Instant::now();
    eventually("a call after the backoff", BOUND, || {
        !matches!(
            plugin.process_message(&corral::Message::new("x")),
            Err(CallError::Terminated { .. })
        )
    });
    assert!(terminated.elapsed() >= Duration::from_millis(100));
    assert_eq!(plugin.state(), PluginState::Running);
    assert_eq!(plugin.restart_status().unwrap().restarts, 1);
}
