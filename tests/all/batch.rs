//! The `batch-filter` world: messages laid out in a batch, read in the guest's memory,
//! failures by index, limits per message (the daemon's batching of what a plugin fell
//! behind on is tested in `durable`).

use corral::{CallError, Field, Limit, Limits, Message, PluginOptions, PluginState, Value};
use corral_test_guests as guests;

use crate::support::{load, load_as, message};

/// A message with every kind of field.
fn rich(payload: &str) -> Message {
    Message {
        timestamp: 1_700_000_000_123_456_789,
        logger: "nginx".into(),
        severity: 3,
        payload: payload.into(),
        fields: vec![
            Field {
                name: "path".into(),
                value: Value::String("/ü".into()),
            },
            Field {
                name: "raw".into(),
                value: Value::Bytes(vec![0, 1, 255]),
            },
            Field {
                name: "status".into(),
                value: Value::Int(-404),
            },
            Field {
                name: "ratio".into(),
                value: Value::Float(0.25),
            },
            Field {
                name: "cached".into(),
                value: Value::Bool(true),
            },
            Field {
                name: "path".into(),
                value: Value::String("second".into()),
            },
        ],
        ..Message::new("access")
    }
}

/// A message of type `type_` (what `batch-probe` does with it) with `payload`.
fn with_payload(type_: &str, payload: &str) -> Message {
    Message {
        payload: payload.into(),
        ..message(type_, "")
    }
}

/// What `batch-probe` echoes for `m`: its headers as fields, then its own fields, each
/// named after its index and name (a repeated name stays apart).
fn echoed(m: &Message) -> Vec<Field> {
    let mut fields = Message::new("")
        .with_field("type", Value::String(m.type_.clone()))
        .with_field("logger", Value::String(m.logger.clone()))
        .with_field("severity", Value::Int(m.severity.into()))
        .with_field("timestamp", Value::Int(m.timestamp))
        .fields;
    fields.extend(m.fields.iter().enumerate().map(|(i, f)| Field {
        name: format!("{i}.{}", f.name),
        value: f.value.clone(),
    }));
    fields
}

#[test]
fn a_batch_plugin_reads_every_header_and_field_in_its_own_memory() {
    let probe = load("batch-reads", guests::BATCH_PROBE);
    assert!(probe.batches());
    let one = rich("one");
    let emitted = probe.process_message(&one).unwrap().emitted;
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].type_, "probe.seen");
    assert_eq!(emitted[0].payload, "one");
    assert_eq!(emitted[0].fields, echoed(&one));

    let run = [rich("a"), message("empty", ""), rich("c")];
    let outcome = probe.process_messages(&run).unwrap();
    assert!(outcome.failed.is_empty());
    let payloads: Vec<_> = outcome.emitted.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["a", "", "c"], "in order");
    for (out, sent) in outcome.emitted.iter().zip(&run) {
        assert_eq!(out.fields, echoed(sent));
    }
    assert_eq!(
        probe.stats().process_message.calls,
        4,
        "a batch counts its messages"
    );
}

#[test]
fn a_batch_as_long_as_the_last_is_handed_the_last_list_and_reads_only_itself() {
    // The host lays a batch that fits the last one's length out at that length, padded
    // with zeros, and the SDK keeps each call's list and hands it back for a list of
    // the same length, so that a plugin keeping up with its input runs no `malloc` and
    // no `free` for its batches (guests/corral-guest/src/spare.rs). Whatever the list
    // held before, a batch reads only its own messages.
    let probe = load("batch-reused", guests::BATCH_PROBE);
    let call = |run: &[Message]| -> bool {
        let outcome = probe.process_messages(run).unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        let (flag, seen) = outcome.emitted.split_first().expect("probe.reused first");
        assert_eq!(flag.type_, "probe.reused");
        assert_eq!(seen.len(), run.len());
        for (out, sent) in seen.iter().zip(run) {
            assert_eq!((&out.payload, &out.fields), (&sent.payload, &echoed(sent)));
        }
        match flag.fields[..] {
            [
                Field {
                    ref name,
                    value: Value::Bool(reused),
                },
            ] if name == "reused" => reused,
            _ => panic!("{flag:?}"),
        }
    };
    let first = |length: usize| with_payload("reused", &"x".repeat(length));
    assert!(!call(&[first(100)]), "the first call has no list to be handed");
    assert!(call(&[first(100)]), "as long as the last");
    assert!(
        call(&[first(92)]),
        "a little shorter: laid out at the last length"
    );
    let longer = [first(100), rich("long")];
    assert!(!call(&longer), "longer than the last");
    assert!(call(&longer));
    assert!(call(&[first(0)]), "shorter, by less than the padding allowed");
    // A batch of 4 KiB, then one shorter by more than the 1 KiB of padding a batch
    // carries at most: each a length of its own.
    assert!(!call(&[first(4000)]));
    assert!(call(&[first(3990)]));
    assert!(!call(&[first(0)]), "much shorter: a length of its own");
    assert!(call(&[first(3)]));
}

#[test]
fn a_plugin_built_for_the_three_list_batch_still_reads_every_message() {
    // `batch-probe-lists` exports the `process-batch` of a plugin built before the
    // `message-batch`, taking the `batch` record's three lists.
    let probe = load("batch-legacy", guests::BATCH_PROBE_LISTS);
    assert!(probe.batches());
    let run = [
        rich("a"),
        message("empty", ""),
        with_payload("fail", "b"),
        rich("c"),
    ];
    let outcome = probe.process_messages(&run).unwrap();
    let payloads: Vec<_> = outcome.emitted.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(payloads, ["a", "", "c"], "in order, the failed one left out");
    for (out, sent) in outcome.emitted.iter().zip([&run[0], &run[1], &run[3]]) {
        assert_eq!(out.fields, echoed(sent));
    }
    let failed: Vec<_> = outcome.failed.iter().map(|(i, e)| (*i, e.to_string())).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 2);
    assert!(failed[0].1.contains("failed b"), "{}", failed[0].1);

    // The same messages through a plugin built today, which takes a `message-batch`:
    // the same answer.
    let today = load("batch-today", guests::BATCH_PROBE)
        .process_messages(&run)
        .unwrap();
    let read = |emitted: &[Message]| -> Vec<(String, Vec<Field>)> {
        emitted
            .iter()
            .map(|m| (m.payload.clone(), m.fields.clone()))
            .collect()
    };
    assert_eq!(read(&today.emitted), read(&outcome.emitted));
    assert_eq!(today.failed.len(), 1);
}

#[test]
fn failures_in_a_batch_are_reported_by_index_and_the_rest_is_processed() {
    let probe = load("batch-failures", guests::BATCH_PROBE);
    let run = [
        message("ok", ""),
        with_payload("fail", "x"),
        message("ok", ""),
        with_payload("fail", "y"),
    ];
    let outcome = probe.process_messages(&run).unwrap();
    let failed: Vec<_> = outcome
        .failed
        .iter()
        .map(|(i, e)| match e {
            CallError::Failed { message, .. } => (*i, message.as_str()),
            other => panic!("expected a failure, got {other}"),
        })
        .collect();
    assert_eq!(failed, [(1, "failed x"), (3, "failed y")]);
    assert_eq!(outcome.emitted.len(), 2, "the other messages' emits are kept");
    let stats = probe.stats();
    assert_eq!(
        (stats.process_message.calls, stats.process_message.failures),
        (4, 2)
    );
    assert_eq!(probe.state(), PluginState::Running);

    // A batch of one that fails is a failed call, as through `process-message`.
    let error = probe.process_message(&message("fail", "")).unwrap_err();
    assert!(matches!(error, CallError::Failed { .. }), "{error}");
}

#[test]
fn failures_in_a_row_within_a_batch_terminate_the_plugin_as_calls_would() {
    let probe = load("batch-in-a-row", guests::BATCH_PROBE);
    let max = Limits::default().max_consecutive_failures as usize;
    let mut run: Vec<Message> = (0..max).map(|_| message("fail", "")).collect();
    run.push(message("ok", ""));
    let outcome = probe.process_messages(&run).unwrap();
    assert_eq!(outcome.failed.len(), max);
    assert!(
        matches!(probe.state(), PluginState::Terminated { reason }
            if reason.starts_with(&format!("{max} consecutive failed messages"))),
        "{:?}",
        probe.state()
    );
}

#[test]
fn a_fatal_failure_stops_the_batch_and_terminates_the_plugin() {
    let probe = load("batch-fatal", guests::BATCH_PROBE);
    let run = [message("ok", ""), with_payload("fatal", "why"), message("ok", "")];
    let error = probe.process_messages(&run).unwrap_err();
    assert!(
        matches!(&error, CallError::Fatal { message, .. } if message == "fatal why"),
        "{error}"
    );
    assert!(matches!(probe.state(), PluginState::Terminated { .. }));
    let stats = probe.stats();
    assert_eq!(
        stats.discarded, 1,
        "the first message's emit is discarded with the call"
    );
    assert_eq!(stats.process_message.failures, 3);
}

#[test]
fn a_trap_fails_the_whole_batch_and_the_next_batch_gets_a_fresh_instance() {
    let probe = load("batch-trap", guests::BATCH_PROBE);
    let run = [message("ok", ""), message("trap", ""), message("ok", "")];
    let error = probe.process_messages(&run).unwrap_err();
    assert!(
        matches!(error, CallError::Panic { .. } | CallError::Trap { .. }),
        "{error}"
    );
    let outcome = probe.process_messages(&run[..1]).unwrap();
    assert_eq!(outcome.emitted.len(), 1);
    let stats = probe.stats();
    assert_eq!(stats.instances, 2);
    assert_eq!(stats.discarded, 1);
}

#[test]
fn each_message_of_a_batch_brings_the_limits_of_one_call() {
    // One emit per call: a batch of three may emit three.
    let limits = Limits {
        emits: 1,
        ..Limits::default()
    };
    let probe = load_as(
        "batch-emits",
        guests::BATCH_PROBE,
        PluginOptions::with_limits(limits),
    );
    let run = [message("a", ""), message("b", ""), message("c", "")];
    assert_eq!(probe.process_messages(&run).unwrap().emitted.len(), 3);

    // Fuel: 64 messages run on twice what the first message of a fresh instance uses,
    // which no single budget of that size would hold.
    let run: Vec<Message> = (0..64).map(|i| with_payload("ok", &i.to_string())).collect();
    let measured = load("batch-fuel-measured", guests::BATCH_PROBE);
    measured.process_message(&run[0]).unwrap();
    let each = measured.stats().max_fuel_used;
    assert!(each > 0);
    let limits = Limits {
        fuel: 2 * each,
        ..Limits::default()
    };
    let tight = load_as(
        "batch-fuel-tight",
        guests::BATCH_PROBE,
        PluginOptions::with_limits(limits),
    );
    let outcome = tight.process_messages(&run).unwrap();
    assert_eq!(outcome.emitted.len(), 64);

    // A loop still ends at the fuel limit, which the error gives for the whole batch.
    let limits = Limits {
        fuel: 2_000_000,
        ..Limits::default()
    };
    let probe = load_as(
        "batch-fuel",
        guests::BATCH_PROBE,
        PluginOptions::with_limits(limits),
    );
    let error = probe
        .process_messages(&[message("ok", ""), message("loop", "")])
        .unwrap_err();
    match error {
        CallError::Limit {
            limit: Limit::Fuel,
            detail,
            ..
        } => assert_eq!(detail, "a batch of 2 messages may use 4000000 fuel"),
        other => panic!("expected the fuel limit, got {other}"),
    }
}

#[test]
fn a_filter_plugin_takes_a_run_of_messages_one_call_each() {
    let echo = load("batch-filter-echo", guests::ECHO);
    assert!(!echo.batches());
    let run = [message("a", ""), message("b", "")];
    let outcome = echo.process_messages(&run).unwrap();
    assert!(outcome.failed.is_empty());
    assert_eq!(echo.stats().process_message.calls, 2);

    let fails = load("batch-filter-fails", guests::FAILS);
    let outcome = fails.process_messages(&run).unwrap();
    let indices: Vec<_> = outcome.failed.iter().map(|(i, _)| *i).collect();
    assert_eq!(indices, [0, 1]);
}
