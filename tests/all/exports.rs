//! Exports beyond Corral's worlds, called by name (`Plugin::call_export`,
//! `Plugin::call_export_dynamic`, `corral call --invoke`): the same limits, stats, fresh
//! instance after a trap and termination policy as the entry points.

use std::process::Command;

use corral::wasmtime::component::Val;
use corral::{CallError, Limit, Limits, PluginOptions, PluginState};
use corral_test_guests as guests;

use crate::support::{corral_exe, load, load_as};

#[test]
fn a_typed_call_by_name_returns_the_exports_results() {
    let plugin = load("exports-typed", guests::CUSTOM_EXPORT);
    let ((sum,), _) = plugin.call_export::<(i32, i32), (i32,)>("add", (2, 40)).unwrap();
    assert_eq!(sum, 42);
    let ((ok,), _) = plugin
        .call_export::<(u32,), (Result<u32, String>,)>("checked", (7,))
        .unwrap();
    assert_eq!(ok, Ok(14));
    let ((err,), _) = plugin
        .call_export::<(u32,), (Result<u32, String>,)>("checked", (700,))
        .unwrap();
    assert_eq!(
        err,
        Err("too big: 700".to_owned()),
        "a guest's own error is a value"
    );
    let stats = plugin.stats();
    assert_eq!((stats.exports.calls, stats.exports.failures), (3, 0));
    assert_eq!(stats.process_message.calls, 0);
}

#[test]
fn a_dynamic_call_takes_and_returns_vals() {
    let plugin = load("exports-dynamic", guests::CUSTOM_EXPORT);
    let point = Val::Record(vec![
        ("name".into(), Val::String("p".into())),
        (
            "tags".into(),
            Val::List(vec![Val::String("a".into()), Val::String("b".into())]),
        ),
    ]);
    let (results, _) = plugin.call_export_dynamic("describe", &[point]).unwrap();
    assert_eq!(results, [Val::String("p: 2 tags".into())]);
    let ty = plugin.export_type("describe").expect("the export's type");
    assert_eq!(ty.params().len(), 1);
}

#[test]
fn a_wrong_name_or_type_is_the_callers_mistake_and_runs_nothing() {
    let plugin = load("exports-wrong", guests::CUSTOM_EXPORT);
    let error = plugin.call_export::<(), ()>("nope", ()).unwrap_err();
    assert!(
        matches!(&error, CallError::Export { plugin, export, .. } if plugin == "exports-wrong" && export == "nope"),
        "{error:?}"
    );
    let error = plugin
        .call_export::<(String,), (i32,)>("add", ("x".into(),))
        .unwrap_err();
    let CallError::Export { reason, .. } = &error else {
        panic!("expected a type mismatch, got {error:?}");
    };
    assert!(reason.contains("`func(a: s32, b: s32) -> s32`"), "{reason}");
    let error = plugin
        .call_export_dynamic("add", &[Val::String("x".into()), Val::S32(1)])
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("parameter `a`: expected a value of type `s32`, got a string"),
        "{error}"
    );
    let stats = plugin.stats();
    assert_eq!(
        (stats.exports.calls, stats.instances),
        (0, 1),
        "nothing ran, nothing counted"
    );
    assert_eq!(plugin.state(), PluginState::Running);
}

#[test]
fn a_trap_in_an_export_gets_a_fresh_instance_and_counts_toward_termination() {
    let limits = Limits {
        max_consecutive_failures: 3,
        fuel: 5_000_000,
        ..Limits::default()
    };
    let plugin = load_as(
        "exports-trap",
        guests::CUSTOM_EXPORT,
        PluginOptions::with_limits(limits),
    );
    let calls = || plugin.call_export::<(), (u64,)>("calls", ()).unwrap().0.0;
    assert_eq!((calls(), calls()), (1, 2), "one instance keeps its memory");

    match plugin.call_export::<(String,), ()>("crash", ("boom".into(),)) {
        Err(CallError::Panic { message, .. }) => assert!(message.starts_with("boom"), "{message}"),
        other => panic!("expected the guest's panic, got {other:?}"),
    }
    assert_eq!(calls(), 1, "a fresh instance after the trap");
    assert_eq!(plugin.stats().instances, 2);

    let error = plugin.call_export::<(), ()>("spin", ()).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Fuel), "{error}");
    let error = plugin.call_export::<(), ()>("spin", ()).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Fuel), "{error}");
    let error = plugin
        .call_export::<(String,), ()>("crash", ("again".into(),))
        .unwrap_err();
    assert!(matches!(error, CallError::Panic { .. }), "{error:?}");
    assert!(
        matches!(plugin.state(), PluginState::Terminated { reason } if reason.starts_with("3 consecutive failed calls")),
        "{:?}",
        plugin.state()
    );
    let stats = plugin.stats();
    assert_eq!((stats.exports.failures, stats.terminations), (4, 1));
    assert!(matches!(
        plugin.call_export::<(), (u64,)>("calls", ()),
        Err(CallError::Terminated { .. })
    ));
}

fn invoke(args: &[&str]) -> std::process::Output {
    Command::new(corral_exe())
        .args(["call", guests::CUSTOM_EXPORT, "--no-cache"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn corral_call_invokes_an_export_with_wave_values() {
    let output = invoke(&[
        "--invoke",
        "add(2, 3)",
        "--invoke",
        r#"describe({name: "p", tags: ["a", "b"]})"#,
        "--invoke",
        "checked(700)",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, "5\n\"p: 2 tags\"\nerr(\"too big: 700\")\n");
}

#[test]
fn corral_call_refuses_a_bad_wave_argument_clearly() {
    let output = invoke(&["--invoke", r#"add("two", 3)"#]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "--invoke `add(\"two\", 3)`: the arguments do not fit `add`, whose parameters are (a, b)"
        ),
        "{stderr}"
    );

    let output = invoke(&["--invoke", "add(2, 3"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected `NAME(ARGS)`"), "{stderr}");

    let output = invoke(&["--invoke", "subtract(2, 3)"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exports no function `subtract`") && stderr.contains("`add`"),
        "{stderr}"
    );
}
