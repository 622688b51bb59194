//! The contract end to end with the example guests.

use corral::{LogLevel, LogSource, Message, PluginOptions, Value};
use corral_test_guests as guests;

use crate::support::{load, load_as, message};

#[test]
fn hello_logs_prints_and_emits_a_greeting() {
    let hello = load("hello-greets", guests::HELLO);
    let outcome = hello.process_message(&message("login", "alice")).unwrap();

    assert_eq!(outcome.emitted.len(), 1);
    let greeting = &outcome.emitted[0];
    assert_eq!(greeting.type_, "hello.greeting");
    assert_eq!(greeting.payload, "Hello, alice!");
    assert_eq!(
        greeting.logger, "hello-greets",
        "an empty logger becomes the plugin's name"
    );
    assert_eq!(greeting.field("to"), Some(&Value::String("alice".into())));

    let lines: Vec<_> = outcome
        .logs
        .iter()
        .map(|l| (l.level, l.source, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogLevel::Info, LogSource::Log, "greeting a login message"),
            (LogLevel::Info, LogSource::Stdout, "Hello, alice!"),
        ]
    );
}

#[test]
fn config_values_reach_the_guest() {
    let options = PluginOptions::default().config("greeting", "Bonjour");
    let hello = load_as("hello-config", guests::HELLO, options);
    let outcome = hello.process_message(&message("login", "bob")).unwrap();
    assert_eq!(outcome.emitted[0].payload, "Bonjour, bob!");

    let options = PluginOptions::default()
        .config("region", "eu")
        .config("level", "3");
    let echo = load_as("config-echo-all", guests::CONFIG_ECHO, options);
    let emitted = echo.timer_event(0).unwrap().emitted;
    assert_eq!(
        emitted[0].fields,
        Message::new("")
            .with_field("level", Value::String("3".into()))
            .with_field("region", Value::String("eu".into()))
            .fields,
        "entries come sorted by key"
    );
}

#[test]
fn counter_keeps_counts_in_its_store_and_emits_totals() {
    let counter = load("counter-totals", guests::COUNTER);
    for type_ in ["a", "b", "a", "a"] {
        assert!(
            counter
                .process_message(&message(type_, ""))
                .unwrap()
                .emitted
                .is_empty()
        );
    }
    let totals = &counter.timer_event(1).unwrap().emitted[0];
    assert_eq!(totals.type_, "counter.totals");
    assert_eq!(totals.field("a"), Some(&Value::Int(3)));
    assert_eq!(totals.field("b"), Some(&Value::Int(1)));

    let keys = crate::support::host()
        .store()
        .list_keys("counter-totals", "")
        .unwrap();
    assert_eq!(
        keys,
        ["count/a", "count/b"],
        "data lives under the plugin's namespace"
    );
}

#[test]
fn each_plugin_sees_only_its_own_store() {
    let one = load("counter-ns-one", guests::COUNTER);
    let two = load("counter-ns-two", guests::COUNTER);
    one.process_message(&message("x", "")).unwrap();
    one.process_message(&message("x", "")).unwrap();
    two.process_message(&message("x", "")).unwrap();
    assert_eq!(
        one.timer_event(0).unwrap().emitted[0].field("x"),
        Some(&Value::Int(2))
    );
    assert_eq!(
        two.timer_event(0).unwrap().emitted[0].field("x"),
        Some(&Value::Int(1))
    );
}

#[test]
fn state_persists_across_swapped_instances_of_the_same_name() {
    // The store namespace is the plugin's name: a new load of the same name (what a hot
    // swap does) sees the data the old one wrote.
    let old = load("counter-reloaded", guests::COUNTER);
    old.process_message(&message("x", "")).unwrap();
    drop(old);
    let new = load("counter-reloaded", guests::COUNTER);
    new.process_message(&message("x", "")).unwrap();
    assert_eq!(
        new.timer_event(0).unwrap().emitted[0].field("x"),
        Some(&Value::Int(2))
    );
}

#[test]
fn the_message_reads_the_same_through_every_accessor() {
    let echo = load("echo-accessors", guests::ECHO);
    let sent = Message {
        timestamp: 1_700_000_000_123_456_789,
        type_: "nginx.access".into(),
        logger: "nginx".into(),
        severity: 3,
        payload: "GET / 200".into(),
        fields: Vec::new(),
    }
    .with_field("status", Value::Int(200))
    .with_field("ratio", Value::Float(0.25))
    .with_field("cached", Value::Bool(false))
    .with_field("raw", Value::Bytes(vec![0, 255, 7]))
    .with_field("look-up", Value::String("status".into()));

    let back = &echo.process_message(&sent).unwrap().emitted[0];
    // The host writes the plugin's name as the logger, and keeps the guest's in a field.
    let expected = Message {
        logger: "echo-accessors".into(),
        ..sent.clone()
    }
    .with_field("found", Value::Int(200))
    .with_field("guest_logger", Value::String("nginx".into()));
    assert_eq!(back, &expected);

    let mut missing = sent;
    missing.fields.last_mut().unwrap().value = Value::String("no-such-field".into());
    let back = &echo.process_message(&missing).unwrap().emitted[0];
    assert_eq!(back.field("found"), None, "an absent field reads as none");
}

#[test]
fn timer_event_gets_the_time_it_was_given() {
    let echo = load("echo-timer", guests::ECHO);
    let tick = &echo.timer_event(42).unwrap().emitted[0];
    assert_eq!(tick.field("now-ns"), Some(&Value::Int(42)));
}

#[test]
fn guest_memory_persists_between_calls_like_heka_globals() {
    let echo = load("echo-globals", guests::ECHO);
    let ticks: Vec<_> = (0..3)
        .map(|_| echo.timer_event(0).unwrap().emitted[0].field("ticks").cloned())
        .collect();
    assert_eq!(ticks, [1, 2, 3].map(|n| Some(Value::Int(n))));
}
