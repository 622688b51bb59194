//! Statistics, as Heka reported them per sandbox.

use std::time::Duration;

use corral_test_guests as guests;

use crate::support::{load, message};

#[test]
fn stats_count_calls_durations_fuel_memory_and_output() {
    let hello = load("hello-stats", guests::HELLO);
    for _ in 0..3 {
        hello.process_message(&message("ping", "test")).unwrap();
    }
    hello.timer_event(0).unwrap();

    let stats = hello.stats();
    assert_eq!(
        (stats.process_message.calls, stats.process_message.failures),
        (3, 0)
    );
    assert_eq!(stats.timer_event.calls, 1);
    assert_eq!(stats.calls(), 4);
    assert!(stats.process_message.max_duration > Duration::ZERO);
    assert!(stats.process_message.average_duration() <= stats.process_message.max_duration);
    assert!(stats.max_fuel_used > 0);
    assert!(
        stats.memory_bytes >= 64 << 10,
        "a Rust guest holds at least one page"
    );
    assert_eq!(
        stats.peak_memory_bytes,
        stats.memory_bytes.max(stats.peak_memory_bytes)
    );
    assert_eq!(stats.emitted, 3);
    // Per call: the log line, the stdout line and the greeting message.
    assert!(stats.max_output_bytes > "Hello, test!".len() as u64);
    assert_eq!(stats.last_error, None);
    assert_eq!((stats.instances, stats.terminations), (1, 0));
}

#[test]
fn the_last_error_is_kept() {
    let panics = load("panics-stats", guests::PANICS);
    let error = panics.process_message(&message("boom", "")).unwrap_err();
    assert_eq!(panics.stats().last_error, Some(error.to_string()));
}

#[test]
fn one_message_call_in_eight_is_timed_and_every_timer_event() {
    let plugin = load("stats-sampled", guests::HELLO);
    for _ in 0..17 {
        plugin.process_message(&message("x", "")).unwrap();
    }
    plugin.timer_event(0).unwrap();
    plugin.timer_event(0).unwrap();
    let stats = plugin.stats();
    assert_eq!(
        (stats.process_message.calls, stats.process_message.timed),
        (17, 3),
        "the 1st, 9th and 17th"
    );
    assert_eq!((stats.timer_event.calls, stats.timer_event.timed), (2, 2));
    assert_eq!(corral::TIMING_SAMPLE, 8);
}
