//! The `corral` command: `check` and `call`, run as a user would.

use std::process::{Command, Output};

use corral::{Message, Value};
use corral_test_guests as guests;

fn corral(args: &[&str]) -> Output {
    corral_caching_in(
        args,
        &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
    )
}

/// `corral ARGS` with its compile cache under `cache` rather than the user's own.
fn corral_caching_in(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(crate::support::corral_exe())
        .args(args)
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("the corral binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_exports_and_imports_of_a_fitting_plugin() {
    let out = corral(&["check", guests::HELLO]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("fits corral:plugin/batch-filter@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  process-batch\n") && stdout.contains("  timer-event\n"),
        "{stdout}"
    );
    assert!(stdout.contains("  corral:plugin/emit@0.1.0\n"), "{stdout}");

    let out = corral(&["check", guests::ECHO]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("fits corral:plugin/filter@0.1.0"), "{stdout}");
    assert!(stdout.contains("  process-message\n"), "{stdout}");
    let out = corral(&["check", guests::SWAP_A]);
    assert!(text(&out.stdout).contains("fits corral:plugin/stateful-filter@0.1.0"));
}

#[test]
fn check_fails_with_the_reason_for_another_world() {
    let out = corral(&["check", guests::WRONG_WORLD]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("missing export `process-message`"), "{stderr}");
}

#[test]
fn call_prints_emitted_messages_as_json_lines_and_logs_on_stderr() {
    let out = corral(&[
        "call",
        guests::HELLO,
        "--message",
        r#"{"type":"login","logger":"carol"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let greeting = Message::from_json(lines[0]).unwrap();
    assert_eq!(greeting.payload, "Hello, carol!");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("greeting a login message"), "{stderr}");
}

#[test]
fn call_runs_messages_then_the_timer_on_one_instance() {
    let out = corral(&[
        "call",
        guests::COUNTER,
        "--message",
        r#"{"type":"a"}"#,
        "--message",
        r#"{"type":"a"}"#,
        "--timer",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let totals = Message::from_json(text(&out.stdout).trim()).unwrap();
    assert_eq!(totals.field("a"), Some(&Value::Int(2)));
}

#[test]
fn call_exits_non_zero_with_the_typed_reason() {
    let out = corral(&[
        "call",
        guests::INFINITE_LOOP,
        "--message",
        "{}",
        "--fuel",
        "100000",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: plugin `infinite-loop` exceeded its fuel limit: a call may use 100000 fuel"),
        "{stderr}"
    );
}

#[test]
fn call_rejects_bad_message_json_with_the_position() {
    let out = corral(&["call", guests::HELLO, "--message", r#"{"fileds":{}}"#]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--message #1: invalid message JSON"), "{stderr}");
    assert!(stderr.contains("unknown field `fileds`"), "{stderr}");
}

#[test]
fn config_values_are_passed_with_config_flags() {
    let out = corral(&[
        "call",
        guests::CONFIG_ECHO,
        "--timer",
        "--config",
        "a=1",
        "--config",
        "b=x=y",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let echo = Message::from_json(text(&out.stdout).trim()).unwrap();
    assert_eq!(echo.field("b"), Some(&Value::String("x=y".into())));
}

#[test]
fn check_and_call_keep_compiled_code_in_the_user_cache_unless_told_not_to() {
    let entries = |dir: &std::path::Path| crate::hot_swap::cache_entries(&dir.join("corral")).len();
    for args in [
        &["check", guests::HELLO][..],
        &["call", guests::HELLO, "--message", r#"{"type":"a"}"#][..],
    ] {
        let cache = tempfile::tempdir().unwrap();
        let out = corral_caching_in(&[args, &["--no-cache"]].concat(), cache.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(entries(cache.path()), 0, "{}: --no-cache writes nothing", args[0]);

        let out = corral_caching_in(args, cache.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            entries(cache.path()),
            1,
            "{}: the compiled component is cached",
            args[0]
        );
    }
}

#[test]
fn call_prints_the_stats_to_size_limits_by() {
    let out = corral(&[
        "call",
        guests::COUNTER,
        "--message",
        r#"{"type":"a"}"#,
        "--timer",
        "--stats",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stats: process-message: 1 calls, 0 failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stats: timer-event: 1 calls, 0 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("stats: most fuel one call used: "), "{stderr}");
}

#[test]
fn check_of_a_compile_bomb_fails_with_the_limit_and_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.wasm");
    let bytes = crate::bombs::with_module(guests::HELLO, crate::bombs::large_function(3 << 20));
    let largest = corral::ComponentCost::measure(&bytes).unwrap().largest_function;
    std::fs::write(&bomb, bytes).unwrap();
    let started = std::time::Instant::now();
    let out = corral(&["check", bomb.to_str().unwrap()]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: plugin `bomb` is too costly to compile: its largest function has {largest} \
             bytes of code, more than the 2097152 allowed (`max-function-size`)"
        )),
        "{stderr}"
    );
    // Raised, the limit lets the same file through to the compile, bounded in time.
    let out = corral(&[
        "check",
        "--compile-limit",
        "max-function-size=4MiB",
        "--compile-limit",
        "compile-time=1ms",
        bomb.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("its compile ran for more than 1 ms (`compile-time`), so the compile was stopped"),
        "{stderr}"
    );
    let out = corral(&["check", "--compile-limit", "max-fun=1", bomb.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("unknown compile limit `max-fun`"));
}

#[test]
fn call_compiles_in_the_worker_and_serves() {
    let out = corral(&[
        "call",
        "--no-cache",
        guests::HELLO,
        "--message",
        r#"{"type":"login","logger":"dee"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Hello, dee!"));
}
