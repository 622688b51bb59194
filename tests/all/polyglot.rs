//! Plugins written in Python (componentize-py) and JavaScript (componentize-js): the same
//! outcomes as the Rust `counter`, their state handed over on a hot swap, their limits
//! holding, their exceptions reported, and their compiled code cached.
//!
//! Each test returns early, saying why, when its guest was not built because this
//! machine lacks `python3` or `npm`; CI sets `CORRAL_REQUIRE_GUEST_TOOLS` so that it
//! fails instead.

use corral::{CallError, Host, Limit, LogSource, Message, PluginOptions, StateHandoff, Value};
use corral_test_guests as guests;

use crate::hot_swap::{bytes, replaced, watched};
use crate::support::{load, message, polyglot};

/// Four messages through a counter, then its timer: what it emitted, and its store.
fn count_four(name: &str, guest: &str) -> (Message, Vec<String>) {
    let counter = load(name, guest);
    for type_ in ["a", "b", "a", "a"] {
        let outcome = counter.process_message(&message(type_, "")).unwrap();
        assert!(outcome.emitted.is_empty(), "{name}: {outcome:?}");
    }
    let mut emitted = counter.timer_event(1).unwrap().emitted;
    assert_eq!(emitted.len(), 1, "{name}: {emitted:?}");
    let keys = crate::support::host().store().list_keys(name, "").unwrap();
    (emitted.remove(0), keys)
}

#[test]
fn python_and_javascript_counters_do_what_the_rust_one_does() {
    let (rust, rust_keys) = count_four("counter-same-rust", guests::COUNTER);
    assert_eq!(rust.type_, "counter.totals");
    assert_eq!(rust.payload, "4");
    assert_eq!(
        (rust.field("a"), rust.field("b")),
        (Some(&Value::Int(3)), Some(&Value::Int(1)))
    );
    assert_eq!(rust_keys, ["count/a", "count/b"]);

    for (lang, guest) in [("python", guests::PY_COUNTER), ("js", guests::JS_COUNTER)] {
        let Some(guest) = polyglot(guest) else { continue };
        let name = format!("counter-same-{lang}");
        let (totals, keys) = count_four(&name, guest);
        assert_eq!(
            totals,
            Message {
                timestamp: totals.timestamp,
                logger: name.clone(),
                ..rust.clone()
            },
            "{lang}"
        );
        assert_eq!(keys, rust_keys, "{lang}");
    }
}

#[test]
fn python_and_javascript_counters_hand_their_state_to_each_other_on_a_swap() {
    let (Some(python), Some(js)) = (polyglot(guests::PY_COUNTER), polyglot(guests::JS_COUNTER)) else {
        return;
    };
    let dir = watched(&[("polyglot-tally.wasm", python)]);
    let send = |type_| {
        dir.registry
            .process_message("polyglot-tally", &Message::new(type_))
            .unwrap()
    };
    let totals = || {
        dir.registry
            .timer_event("polyglot-tally", 1)
            .unwrap()
            .emitted
            .remove(0)
    };
    for _ in 0..3 {
        send("x");
    }

    // Python to JavaScript: both save the count of messages processed as text.
    dir.put("polyglot-tally.wasm", &bytes(js));
    let (event, _) = dir.wait("replace", replaced("polyglot-tally"));
    assert!(
        matches!(
            event,
            corral::Event::Replaced {
                state: StateHandoff::Restored { bytes: 1 },
                ..
            }
        ),
        "{event:?}"
    );
    send("y");
    let after_one = totals();
    assert_eq!(after_one.payload, "4", "the count came across in memory");
    assert_eq!(after_one.field("x"), Some(&Value::Int(3)));

    // And back.
    dir.put("polyglot-tally.wasm", &bytes(python));
    dir.wait("replace", replaced("polyglot-tally"));
    send("y");
    let after_two = totals();
    assert_eq!(after_two.payload, "5");
    assert_eq!(after_two.field("y"), Some(&Value::Int(2)));
}

/// The hostile guest of each language that was built, with its name.
fn hostile() -> Vec<(&'static str, &'static str)> {
    [
        ("py-hostile", guests::PY_HOSTILE),
        ("js-hostile", guests::JS_HOSTILE),
    ]
    .into_iter()
    .filter_map(|(name, built)| Some((name, polyglot(built)?)))
    .collect()
}

#[test]
fn an_infinite_loop_ends_in_out_of_fuel_and_the_plugin_serves_again() {
    for (name, guest) in hostile() {
        let plugin = load(&format!("{name}-spin"), guest);
        let error = plugin.process_message(&Message::new("spin")).unwrap_err();
        assert_eq!(error.limit(), Some(Limit::Fuel), "{name}: {error}");

        // A fresh instance takes the next call.
        let outcome = plugin.process_message(&Message::new("print")).unwrap();
        assert_eq!(outcome.logs.len(), 1, "{name}: {:?}", outcome.logs);
        assert_eq!(outcome.logs[0].source, LogSource::Stdout);
        assert!(outcome.logs[0].message.starts_with("hello from "), "{name}");
    }
}

#[test]
fn hoarding_memory_ends_at_the_memory_limit() {
    for (name, guest) in hostile() {
        let plugin = load(&format!("{name}-hoard"), guest);
        let error = plugin.process_message(&Message::new("hoard")).unwrap_err();
        assert_eq!(error.limit(), Some(Limit::Memory), "{name}: {error}");
    }
}

#[test]
fn an_uncaught_exception_is_reported_with_its_message() {
    for (name, guest) in hostile() {
        let plugin = load(&format!("{name}-raise"), guest);
        let error = plugin.process_message(&Message::new("raise")).unwrap_err();
        let CallError::Panic { message, .. } = &error else {
            panic!("{name}: {error:?}");
        };
        assert!(
            message.contains("an exception nobody caught"),
            "{name}: {message}"
        );
        if name == "py-hostile" {
            assert!(
                message.starts_with("ValueError: an exception nobody caught (at app.py, line "),
                "{message}"
            );
        }
    }
}

#[test]
fn a_returned_failure_is_non_fatal() {
    for (name, guest) in hostile() {
        let plugin = load(&format!("{name}-fail"), guest);
        let error = plugin.process_message(&Message::new("fail")).unwrap_err();
        assert!(
            matches!(&error, CallError::Failed { message, .. } if message == "refused politely"),
            "{name}: {error:?}"
        );
        assert!(plugin.process_message(&Message::new("print")).is_ok(), "{name}");
    }
}

#[test]
fn large_guests_come_from_the_disk_cache_the_second_time() {
    let guests: Vec<_> = [guests::PY_COUNTER, guests::JS_COUNTER]
        .into_iter()
        .filter_map(polyglot)
        .collect();
    for guest in guests {
        let bytes = bytes(guest);
        assert!(bytes.len() > 5 << 20, "{guest} is a large guest");
        // The first host compiles it or finds it from an earlier run; the second must
        // find it.
        let first = Host::builder()
            .cache_dir(crate::support::compile_cache())
            .build()
            .unwrap();
        first
            .load("large-first", &bytes, PluginOptions::default())
            .unwrap();
        let stats = first.compile_stats();
        assert_eq!(stats.compiled + stats.cache_hits, 1, "{stats:?}");

        let second = Host::builder()
            .cache_dir(crate::support::compile_cache())
            .build()
            .unwrap();
        second
            .load("large-second", &bytes, PluginOptions::default())
            .unwrap();
        let stats = second.compile_stats();
        assert_eq!((stats.cache_hits, stats.compiled), (1, 0), "{guest}");
    }
}

#[test]
fn python_and_javascript_guests_fit_a_pooled_host() {
    let host = Host::builder()
        .pooling(4)
        .cache_dir(crate::support::compile_cache())
        .build()
        .unwrap();
    for (lang, built) in [("python", guests::PY_COUNTER), ("js", guests::JS_COUNTER)] {
        let Some(guest) = polyglot(built) else { continue };
        let counter = host
            .load(&format!("pooled-{lang}"), &bytes(guest), PluginOptions::default())
            .unwrap_or_else(|e| panic!("{lang}: {e}"));
        counter.process_message(&Message::new("a")).unwrap();
        let totals = counter.timer_event(1).unwrap().emitted.remove(0);
        assert_eq!(totals.field("a"), Some(&Value::Int(1)), "{lang}");
    }
}
