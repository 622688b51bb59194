//! `corral new`: projects in each language that build as their README says and load,
//! with the host's WIT and a sidecar whose commented defaults are the defaults.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral::{Limits, Message, Sidecar, Value};
use corral_daemon::{DaemonSections, Settings};
use corral_test_guests as guests;

use crate::support::{load_as, polyglot};

/// Runs `corral new NAME --lang LANG --dir DIR` and returns the project directory.
fn corral_new(name: &str, lang: &str, dir: &Path) -> PathBuf {
    let output = Command::new(crate::support::corral_exe())
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join(name)
}

/// Runs a build command, failing the test with its output if it fails.
fn build(command: &mut Command) {
    // What the outer cargo sets for the host build must not leak into a guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(var);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Loads the built plugin with its project's sidecar and checks what the template does:
/// a `NAME.seen` message naming the type of the message it was given.
fn loads_and_answers(name: &str, wasm: &Path, project: &Path) {
    let sidecar_path = project.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&sidecar_path).unwrap();
    let sidecar = Sidecar::parse_with(&text, Some(&DaemonSections)).unwrap();
    let plugin = load_as(name, wasm.to_str().unwrap(), sidecar.options);
    let outcome = plugin.process_message(&Message::new("login")).unwrap();
    assert_eq!(outcome.emitted.len(), 1, "{outcome:?}");
    assert_eq!(outcome.emitted[0].type_, format!("{name}.seen"));
    assert_eq!(
        outcome.emitted[0].field("type"),
        Some(&Value::String("login".into()))
    );
    assert_eq!(outcome.logs[0].message, "seen a login message");
    assert!(plugin.timer_event(1).unwrap().emitted.is_empty());
}

#[test]
fn every_project_carries_the_host_wit_and_a_sidecar_of_the_defaults() {
    let temp = tempfile::tempdir().unwrap();
    let host_wit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/plugin.wit")).unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("defaults-{lang}");
        let project = corral_new(&name, lang, temp.path());
        assert_eq!(
            std::fs::read_to_string(project.join("wit/plugin.wit")).unwrap(),
            host_wit,
            "{lang}"
        );
        assert!(project.join("README.md").is_file(), "{lang}");

        let text = std::fs::read_to_string(project.join(format!("{name}.toml"))).unwrap();
        Sidecar::parse_with(&text, Some(&DaemonSections)).unwrap();
        assert!(
            Settings::parse(&text).unwrap().matcher.is_some_and(|m| m.all),
            "{lang}: the plugin takes every message"
        );
        // Uncommented, each commented limit sets its default.
        let keys = [
            "fuel",
            "memory",
            "deadline-ms",
            "output",
            "emits",
            "max-consecutive-failures",
            "store-key-bytes",
            "store-value-bytes",
            "store-keys",
        ];
        let mut uncommented = 0;
        let text: Vec<&str> = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(&format!("{k} ="))) => {
                    uncommented += 1;
                    rest.split(" #").next().unwrap()
                }
                _ => line,
            })
            .collect();
        assert_eq!(uncommented, keys.len(), "{lang}");
        let sidecar = Sidecar::parse_with(&text.join("\n"), Some(&DaemonSections)).unwrap();
        assert_eq!(sidecar.options.limits, Limits::default(), "{lang}");
    }
}

#[test]
fn corral_new_refuses_bad_names_and_an_occupied_directory() {
    let temp = tempfile::tempdir().unwrap();
    for bad in ["Caps", "9lives", "under_score", "../escape"] {
        let output = Command::new(crate::support::corral_exe())
            .args(["new", bad, "--dir"])
            .arg(temp.path())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("cannot name a plugin project"), "{bad}: {said}");
    }
    corral_new("taken", "rust", temp.path());
    let output = Command::new(crate::support::corral_exe())
        .args(["new", "taken", "--lang", "python", "--dir"])
        .arg(temp.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("already exists and is not empty"), "{said}");
    assert!(
        temp.path().join("taken/Cargo.toml").is_file(),
        "nothing was overwritten"
    );
    assert!(!temp.path().join("taken/app.py").exists());
}

#[test]
fn a_rust_project_builds_with_cargo_and_loads() {
    // Inside another workspace, as in this repository's `guests/`: the project is a
    // workspace of its own and builds all the same.
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    let project = corral_new("new-rust", "rust", temp.path());
    // A target directory that outlives the test, so wit-bindgen compiles once.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("new-projects");
    build(
        Command::new(env!("CARGO"))
            .args(["build", "--release"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&project),
    );
    let wasm = target.join("wasm32-wasip2/release/new_rust.wasm");
    loads_and_answers("new-rust", &wasm, &project);
}

#[test]
fn a_python_project_builds_with_componentize_py_and_loads() {
    let Some(tool) = polyglot(guests::COMPONENTIZE_PY) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let project = corral_new("new-python", "python", temp.path());
    // The README's command, with the tool the suite installed in place of `.venv/bin`.
    build(
        Command::new(tool)
            .args(["--wit-path", "wit", "--world", "filter", "componentize", "app"])
            .args(["--output", "new-python.wasm"])
            .current_dir(&project),
    );
    loads_and_answers("new-python", &project.join("new-python.wasm"), &project);
}

#[test]
fn a_javascript_project_builds_with_npm_run_build_and_loads() {
    let Some(tool) = polyglot(guests::COMPONENTIZE_JS) else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let project = corral_new("new-js", "js", temp.path());
    // `npm run build` as the README says; componentize-js comes from the suite's install
    // rather than a fresh `npm install` in the project.
    let bin = Path::new(tool).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    build(
        Command::new("npm")
            .args(["run", "--silent", "build"])
            .env("PATH", path)
            .current_dir(&project),
    );
    loads_and_answers("new-js", &project.join("new-js.wasm"), &project);
}

/// Decodes two records with the decoder project built at `wasm`: one message, one
/// failure, as the template does.
fn decodes(name: &str, wasm: &Path, project: &Path) {
    let text = std::fs::read_to_string(project.join(format!("{name}.toml"))).unwrap();
    let sidecar = Sidecar::parse_with(&text, Some(&corral_daemon::DaemonSections)).unwrap();
    assert!(
        corral_daemon::Settings::of(&sidecar).input.is_some(),
        "a decoder's sidecar has an [input]"
    );
    let plugin = load_as(name, wasm.to_str().unwrap(), sidecar.options);
    assert!(plugin.decodes());
    let records = [
        corral::RawRecord {
            path: "/var/log/x.log",
            offset: 7,
            ..corral::RawRecord::new(b"hello")
        },
        corral::RawRecord::new(b""),
    ];
    let outcome = plugin.decode(&records).unwrap();
    assert_eq!(outcome.emitted.len(), 1, "{outcome:?}");
    assert_eq!(outcome.emitted[0].type_, name);
    assert_eq!(outcome.emitted[0].payload, "hello");
    assert_eq!(outcome.emitted[0].field("length"), Some(&Value::Int(5)));
    assert_eq!(outcome.emitted[0].field("offset"), Some(&Value::Int(7)));
    assert_eq!(outcome.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
}

fn corral_new_decoder(name: &str, lang: &str, dir: &Path) -> PathBuf {
    let output = Command::new(crate::support::corral_exe())
        .args(["new", name, "--kind", "decoder", "--lang", lang, "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir.join(name)
}

#[test]
fn decoder_projects_build_in_rust_python_and_javascript_and_decode() {
    let temp = tempfile::tempdir().unwrap();
    let project = corral_new_decoder("new-decoder", "rust", temp.path());
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("new-projects");
    build(
        Command::new(env!("CARGO"))
            .args(["build", "--release"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&project),
    );
    decodes(
        "new-decoder",
        &target.join("wasm32-wasip2/release/new_decoder.wasm"),
        &project,
    );
    if let Some(tool) = polyglot(guests::COMPONENTIZE_PY) {
        let project = corral_new_decoder("py-decoder", "python", temp.path());
        build(
            Command::new(tool)
                .args(["--wit-path", "wit", "--world", "decoder", "componentize", "app"])
                .args(["--output", "py-decoder.wasm"])
                .current_dir(&project),
        );
        decodes("py-decoder", &project.join("py-decoder.wasm"), &project);
    }
    if let Some(tool) = polyglot(guests::COMPONENTIZE_JS) {
        let project = corral_new_decoder("js-decoder", "js", temp.path());
        let bin = Path::new(tool).parent().unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        build(
            Command::new("npm")
                .args(["run", "--silent", "build"])
                .env("PATH", path)
                .current_dir(&project),
        );
        decodes("js-decoder", &project.join("js-decoder.wasm"), &project);
    }
}
