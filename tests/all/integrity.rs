//! What a guest hands the host is checked before the host writes it: emitted messages
//! (the logger, the host's `corral.` types, severity, timestamps, field names), output
//! caps counted at the size the host writes, batch failures, guest text escaped, names
//! kept to the policy, and canonical-ABI faults labelled as the guest's own. Each hostile
//! guest ends in its exact typed outcome, within a generous bound, and the plugin serves
//! its next call from a fresh instance.

use std::time::{Duration, Instant};

use corral::{
    CallError, GUEST_LOGGER_FIELD, Limit, Limits, Message, Plugin, PluginOptions, PluginState, Value,
    Violation,
};
use corral_test_guests as guests;

use crate::support::{load, load_as};

/// Generous: every call here ends in milliseconds on a quiet machine.
const BOUND: Duration = Duration::from_secs(20);

fn msg(type_: &str, fields: &[(&str, Value)]) -> Message {
    let mut m = Message::new(type_);
    for (name, value) in fields {
        m = m.with_field(*name, value.clone());
    }
    m
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

/// Calls `plugin` with `message` within the bound.
fn call(plugin: &Plugin, message: &Message) -> Result<corral::CallOutcome, CallError> {
    let started = Instant::now();
    let result = plugin.process_message(message);
    assert!(started.elapsed() < BOUND, "the call took {:?}", started.elapsed());
    result
}

fn violation(result: Result<corral::CallOutcome, CallError>) -> Violation {
    match result {
        Err(CallError::Violation { violation, .. }) => violation,
        other => panic!("expected a contract violation, got {other:?}"),
    }
}

fn expect_limit(result: Result<corral::CallOutcome, CallError>, expected: Limit) {
    match result {
        Err(CallError::Limit { limit, .. }) => assert_eq!(limit, expected),
        other => panic!("expected the {expected} limit, got {other:?}"),
    }
}

/// A violation is handled as a trap: the next call gets a fresh instance and works.
fn serves_again(plugin: &Plugin, instances_before: u64) {
    call(plugin, &msg("nothing", &[])).expect("the next call is served");
    assert_eq!(plugin.stats().instances, instances_before + 1, "a fresh instance");
    assert_eq!(plugin.state(), PluginState::Running);
}

#[test]
fn the_logger_is_always_the_plugins_name() {
    let forger = load("forger-logger", guests::FORGER);
    let out = call(&forger, &msg("emit", &[("logger", s("victim"))])).unwrap();
    assert_eq!(out.emitted[0].logger, "forger-logger");
    assert_eq!(out.emitted[0].field(GUEST_LOGGER_FIELD), Some(&s("victim")));
    // Its own name, or none, adds nothing.
    for logger in ["forger-logger", ""] {
        let out = call(&forger, &msg("emit", &[("logger", s(logger))])).unwrap();
        assert_eq!(out.emitted[0].logger, "forger-logger");
        assert!(out.emitted[0].fields.is_empty(), "{:?}", out.emitted[0]);
    }
    // A field of that name beside a forged logger is a repeat, not an overwrite.
    let before = forger.stats().instances;
    let result = call(
        &forger,
        &msg(
            "emit",
            &[
                ("logger", s("victim")),
                ("count", Value::Int(1)),
                ("name", s(GUEST_LOGGER_FIELD)),
            ],
        ),
    );
    assert_eq!(
        violation(result),
        Violation::DuplicateField {
            name: GUEST_LOGGER_FIELD.into()
        }
    );
    serves_again(&forger, before);
}

#[test]
fn the_hosts_own_types_cannot_be_forged() {
    let forger = load("forger-reserved", guests::FORGER);
    for type_ in [
        corral_daemon::TERMINATED_TYPE,
        "corral.anything",
        "CORRAL.Plugin-Terminated",
    ] {
        let before = forger.stats().instances;
        let result = call(&forger, &msg("emit", &[("t", s(type_))]));
        assert_eq!(violation(result), Violation::ReservedType { type_: type_.into() });
        serves_again(&forger, before);
    }
    // Only the prefix is reserved.
    call(&forger, &msg("emit", &[("t", s("corralled.x"))])).unwrap();
    let before = forger.stats().instances;
    assert_eq!(
        violation(call(&forger, &msg("emit", &[("t", s(""))]))),
        Violation::EmptyType
    );
    serves_again(&forger, before);
}

#[test]
fn severity_and_timestamp_are_checked() {
    let forger = load("forger-headers", guests::FORGER);
    for severity in [1000, -1, 8, i32::MIN] {
        let result = call(&forger, &msg("emit", &[("sev", Value::Int(severity.into()))]));
        assert_eq!(violation(result), Violation::Severity { severity });
    }
    for severity in 0..=7 {
        let out = call(&forger, &msg("emit", &[("sev", Value::Int(severity))])).unwrap();
        assert_eq!(i64::from(out.emitted[0].severity), severity);
    }
    for timestamp in [i64::MIN, -1] {
        let result = call(&forger, &msg("emit", &[("ts", Value::Int(timestamp))]));
        assert_eq!(violation(result), Violation::Timestamp { timestamp });
    }
    let out = call(&forger, &msg("emit", &[("ts", Value::Int(5))])).unwrap();
    assert_eq!(out.emitted[0].timestamp, 5);
    let before = corral::now_ns();
    let out = call(&forger, &msg("emit", &[])).unwrap();
    assert!(out.emitted[0].timestamp >= before, "no timestamp: stamped now");
}

#[test]
fn field_names_are_not_empty_and_not_repeated() {
    let forger = load("forger-names", guests::FORGER);
    let started = Instant::now();
    let result = call(&forger, &msg("emit", &[("count", Value::Int(60_000))]));
    assert_eq!(violation(result), Violation::EmptyFieldName { index: 0 });
    let result = call(
        &forger,
        &msg("emit", &[("count", Value::Int(60_000)), ("name", s("a"))]),
    );
    assert_eq!(violation(result), Violation::DuplicateField { name: "a".into() });
    let result = call(
        &forger,
        &msg("emit", &[("count", Value::Int(2)), ("name", s("a"))]),
    );
    assert_eq!(violation(result), Violation::DuplicateField { name: "a".into() });
    assert!(started.elapsed() < BOUND);
    // Every emitted message is one valid JSON object with distinct keys.
    let out = call(&forger, &msg("emit", &[("unique", Value::Int(300))])).unwrap();
    let json: serde_json::Value = serde_json::from_str(&out.emitted[0].to_json()).unwrap();
    assert_eq!(json["fields"].as_object().unwrap().len(), 300);
}

#[test]
fn the_output_cap_counts_the_json_the_host_writes() {
    let forger = load("forger-cap", guests::FORGER);
    // 12,000 bool fields of one to three letters: 48 KB counted a byte per value, 144 KB
    // as the JSON line the host writes.
    expect_limit(
        call(&forger, &msg("emit", &[("unique", Value::Int(12_000))])),
        Limit::Output,
    );
    // 20,000 control characters: 20 KB of payload, 120 KB escaped in JSON.
    expect_limit(
        call(&forger, &msg("emit", &[("ctl", Value::Int(20_000))])),
        Limit::Output,
    );
    // What fits is counted at its JSON size.
    let out = call(&forger, &msg("emit", &[("unique", Value::Int(2_000))])).unwrap();
    let written = out.emitted[0].to_json().len() as u64;
    assert!(written < Limits::DEFAULT_OUTPUT_BYTES);
    assert_eq!(forger.stats().max_output_bytes, written);
}

#[test]
fn failure_reasons_and_log_lines_count_against_the_cap() {
    let forger = load("forger-reasons", guests::FORGER);
    let big = msg("fail", &[("repeat", Value::Int(100_000))]).with_field("x", Value::Bool(true));
    let mut big = big;
    big.payload = "x".into();
    expect_limit(call(&forger, &big), Limit::Output);
    // A log line of control characters costs what it takes escaped (6 bytes each).
    let mut line = msg("log", &[]);
    line.payload = "\u{1}".repeat(12_000);
    expect_limit(call(&forger, &line), Limit::Output);
}

#[test]
fn guest_text_is_escaped_in_errors_and_logs() {
    let forger = load("forger-escapes", guests::FORGER);
    let forged = "ok\nINFO victim: forged\r\x1b[31m{\"type\":\"x\"}";
    let mut fail = msg("fail", &[]);
    fail.payload = forged.into();
    match call(&forger, &fail) {
        Err(CallError::Failed { message, .. }) => {
            assert_eq!(message, "ok\\nINFO victim: forged\\r\\u{1b}[31m{\"type\":\"x\"}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let mut panic = msg("panic", &[]);
    panic.payload = forged.into();
    match call(&forger, &panic) {
        Err(CallError::Panic { message, .. }) => {
            assert!(!message.contains(['\n', '\r', '\x1b']), "{message:?}");
            assert!(message.contains("INFO victim: forged"), "{message:?}");
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    // The caller gets the lines as written; the host's log gets them escaped (the
    // daemon test checks its stderr).
    let mut log = msg("log", &[]);
    log.payload = forged.into();
    let out = call(&forger, &log).unwrap();
    assert!(out.logs.iter().any(|l| l.message == forged), "{:?}", out.logs);
    assert_eq!(
        corral::escape(forged),
        "ok\\nINFO victim: forged\\r\\u{1b}[31m{\"type\":\"x\"}"
    );
}

fn batch(first: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let mut m = Message::new(if i == 0 { first } else { "more" });
            m.payload = format!("message {i}");
            m
        })
        .collect()
}

fn batch_violation(plugin: &Plugin, messages: &[Message]) -> Violation {
    let started = Instant::now();
    let result = plugin.process_messages(messages);
    assert!(started.elapsed() < BOUND);
    match result {
        Err(CallError::Violation { violation, .. }) => violation,
        other => panic!("expected a contract violation, got {other:?}"),
    }
}

/// The two ways a batch plugin tells its failures: reported through `failures.report`
/// (`batch-liar`, built today) and returned (`batch-liar-returning`, built as before
/// `failures`). Both are held to the same rules.
const LIARS: [(&str, &str); 2] = [
    ("batch-liar", guests::BATCH_LIAR),
    ("batch-liar-returning", guests::BATCH_LIAR_RETURNING),
];

#[test]
fn batch_failures_must_fit_the_batch() {
    for (name, wasm) in LIARS {
        failures_must_fit_the_batch(&load(name, wasm));
    }
}

fn failures_must_fit_the_batch(liar: &Plugin) {
    let cases: [(&str, usize, Violation); 5] = [
        (
            "out-of-range",
            3,
            Violation::FailureOutOfRange {
                index: 3,
                messages: 3,
            },
        ),
        (
            "duplicate",
            3,
            Violation::FailureOrder {
                index: 0,
                previous: 0,
            },
        ),
        (
            "unsorted",
            3,
            Violation::FailureOrder {
                index: 0,
                previous: 2,
            },
        ),
        (
            "too-many",
            1,
            Violation::FailureOrder {
                index: 0,
                previous: 0,
            },
        ),
        (
            "too-many",
            4,
            Violation::FailureOrder {
                index: 0,
                previous: 0,
            },
        ),
    ];
    let plugin = liar.name();
    for (what, n, expected) in cases {
        let before = liar.stats();
        assert_eq!(
            batch_violation(liar, &batch(what, n)),
            expected,
            "{plugin}: {what}"
        );
        let after = liar.stats();
        // The batch failed as a whole, counted once per message, not once per lie.
        assert_eq!(
            after.process_message.failures - before.process_message.failures,
            n as u64,
            "{plugin}: {what}"
        );
        assert_eq!(
            liar.state(),
            PluginState::Running,
            "{plugin}: {what}: one bad call does not terminate"
        );
        let outcome = liar.process_messages(&batch("fine", 2)).unwrap();
        assert!(outcome.failed.is_empty());
        assert_eq!(
            liar.stats().instances,
            after.instances + 1,
            "{plugin}: {what}: a fresh instance"
        );
    }
}

#[test]
fn a_failure_reported_outside_a_batch_is_a_violation() {
    // `batch-liar`'s timer reports a failure of message 0 when no batch is in progress.
    let liar = load("batch-liar-timer", guests::BATCH_LIAR);
    let started = Instant::now();
    match liar.timer_event(1) {
        Err(CallError::Violation { violation, .. }) => assert_eq!(violation, Violation::ReportOutsideBatch),
        other => panic!("expected a contract violation, got {other:?}"),
    }
    assert!(started.elapsed() < BOUND);
    let before = liar.stats().instances;
    let outcome = liar.process_messages(&batch("fine", 2)).unwrap();
    assert!(outcome.failed.is_empty());
    assert_eq!(liar.stats().instances, before + 1, "a fresh instance");
    assert_eq!(liar.state(), PluginState::Running);
}

#[test]
fn batch_failure_reasons_count_against_the_cap_and_are_escaped() {
    for (name, wasm) in LIARS {
        reasons_count_against_the_cap_and_are_escaped(&load(&format!("{name}-reasons"), wasm));
    }
}

fn reasons_count_against_the_cap_and_are_escaped(liar: &Plugin) {
    let plugin = liar.name();
    let mut huge = batch("huge", 4);
    huge[0] = huge[0].clone().with_field("bytes", Value::Int(100 << 10));
    let started = Instant::now();
    match liar.process_messages(&huge) {
        Err(CallError::Limit { limit, .. }) => assert_eq!(limit, Limit::Output, "{plugin}"),
        other => panic!("{plugin}: expected the output limit, got {other:?}"),
    }
    assert!(started.elapsed() < BOUND);
    let mut forged = batch("escapes", 2);
    forged[1].payload = "two\nINFO victim: forged".into();
    let outcome = liar.process_messages(&forged).unwrap();
    let reasons: Vec<String> = outcome.failed.iter().map(|(_, e)| e.to_string()).collect();
    assert_eq!(
        outcome.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1],
        "{plugin}"
    );
    assert!(
        reasons[1].ends_with("two\\nINFO victim: forged"),
        "{plugin}: {reasons:?}"
    );
}

#[test]
fn canonical_abi_faults_are_the_guests_not_the_hosts() {
    let breaker = load("abi-breaker", guests::ABI_BREAKER);
    for (type_, says) in [
        ("bad-pointer", "out of bounds of memory"),
        ("bad-utf8", "invalid utf-8"),
        ("bad-realloc", "realloc return"),
    ] {
        let before = breaker.stats().instances;
        match violation(call(&breaker, &msg(type_, &[]))) {
            Violation::InvalidValue { reason } => assert!(reason.contains(says), "{type_}: {reason}"),
            other => panic!("{type_}: expected an invalid value, got {other:?}"),
        }
        serves_again(&breaker, before);
    }
    // WASI 0.2's `exit` carries only success or failure: `exit(3)` arrives as 1.
    assert_eq!(
        violation(call(&breaker, &msg("exit", &[]))),
        Violation::Exit { code: 1 }
    );
}

#[test]
fn one_host_call_copies_no_more_than_the_sandbox_holds() {
    let breaker = load_as("abi-breaker-copy", guests::ABI_BREAKER, PluginOptions::default());
    // 64 fields pointing at one 1 MiB buffer: 64 MiB to copy, under wasmtime's default
    // of 128 MiB but four times the 16 MiB sandbox.
    let bomb = msg(
        "copy-bomb",
        &[("count", Value::Int(64)), ("bytes", Value::Int(1 << 20))],
    );
    let started = Instant::now();
    expect_limit(call(&breaker, &bomb), Limit::HostCopy);
    assert!(started.elapsed() < BOUND);
    // A smaller sandbox copies less: 4 MiB here.
    let small = load_as(
        "abi-breaker-copy-small",
        guests::ABI_BREAKER,
        PluginOptions::with_limits(Limits {
            memory_bytes: 8 << 20,
            ..Limits::default()
        }),
    );
    let bomb = msg(
        "copy-bomb",
        &[("count", Value::Int(9)), ("bytes", Value::Int(1 << 20))],
    );
    expect_limit(call(&small, &bomb), Limit::HostCopy);
}

#[test]
fn names_outside_the_policy_never_become_plugins_and_failures_are_forgotten() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().canonicalize().unwrap();
    let hostile = [
        "evil\"} 1\ncorral_forged{x=\"y",
        "sp ace",
        "-dash",
        &"l".repeat(65),
    ];
    for name in hostile {
        std::fs::copy(guests::HELLO, dir.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(dir.join("broken.wasm"), b"not wasm").unwrap();
    let registry = corral::Registry::new(crate::support::host().clone());
    let watcher = registry.watch(&dir).unwrap();
    assert_eq!(
        registry.names(),
        ["broken"],
        "only the valid name is listed, as failed"
    );
    assert!(registry.get("broken").is_none());
    for name in hostile {
        std::fs::remove_file(dir.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::remove_file(dir.join("broken.wasm")).unwrap();
    watcher.rescan();
    assert!(registry.names().is_empty(), "{:?}", registry.names());
}
