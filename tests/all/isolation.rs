//! A guest gets clocks and random from WASI and nothing else of the host: no files, no
//! sockets, no name lookups, no environment, no arguments, an empty stdin.

use corral::{DirGrant, PluginOptions, Value};
use corral_test_guests as guests;

use crate::support::{load, load_as, message};

#[test]
fn wasi_grants_clocks_and_random_and_nothing_else() {
    let probe = load("wasi-probe", guests::WASI_PROBE);
    let report = probe
        .process_message(&message("probe", ""))
        .unwrap()
        .emitted
        .remove(0);
    let field = |name: &str| {
        report
            .field(name)
            .cloned()
            .unwrap_or_else(|| panic!("no `{name}` field"))
    };

    for counted in ["env-vars", "args", "stdin-bytes"] {
        assert_eq!(field(counted), Value::Int(0), "{counted}");
    }
    for attempt in [
        "read-etc-passwd",
        "list-root",
        "list-cwd",
        "write-tmp",
        "tcp-connect",
        "tcp-listen",
        "udp-bind",
        "dns",
    ] {
        match field(attempt) {
            Value::String(outcome) => assert!(outcome.starts_with("denied: "), "{attempt}: {outcome}"),
            other => panic!("{attempt}: {other:?}"),
        }
    }
    assert_eq!(field("clock-after-2020"), Value::Bool(true));
    assert_eq!(field("random-differs"), Value::Bool(true));
}

fn probe_with(name: &str, options: PluginOptions) -> corral::Message {
    let probe = load_as(name, guests::WASI_PROBE, options);
    probe
        .process_message(&message("probe", ""))
        .unwrap()
        .emitted
        .remove(0)
}

fn text(message: &corral::Message, name: &str) -> String {
    match message.field(name) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("`{name}`: {other:?}"),
    }
}

#[test]
fn a_granted_directory_is_readable_and_stays_read_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stat"), "cpu 1 2 3").unwrap();
    let grant = DirGrant {
        host: dir.path().to_owned(),
        guest: "/data".into(),
        writable: false,
    };
    let options = PluginOptions::default()
        .dir(grant)
        .config("read", "/data/stat")
        .config("write", "/data/new");
    let report = probe_with("wasi-probe-ro", options);
    assert_eq!(text(&report, "read-config-path"), "allowed");
    assert_eq!(text(&report, "read-text"), "cpu 1 2 3");
    assert!(text(&report, "write-config-path").starts_with("denied: "));
    assert!(!dir.path().join("new").exists());
    // Only the grant is visible: the rest of the host's files are not.
    assert!(text(&report, "read-etc-passwd").starts_with("denied: "));
}

#[test]
fn a_writable_grant_lets_the_plugin_write_there_only() {
    let dir = tempfile::tempdir().unwrap();
    let grant = DirGrant {
        host: dir.path().to_owned(),
        guest: "/out".into(),
        writable: true,
    };
    let options = PluginOptions::default().dir(grant).config("write", "/out/file");
    let report = probe_with("wasi-probe-rw", options);
    assert_eq!(text(&report, "write-config-path"), "allowed");
    assert_eq!(std::fs::read_to_string(dir.path().join("file")).unwrap(), "probe");
    assert!(text(&report, "write-tmp").starts_with("denied: "));
}

#[test]
fn a_missing_granted_directory_fails_the_load_with_its_path() {
    let grant = DirGrant {
        host: "/no/such/corral/dir".into(),
        guest: "/data".into(),
        writable: false,
    };
    let bytes = std::fs::read(guests::WASI_PROBE).unwrap();
    let error = crate::support::host()
        .load("wasi-probe-missing", &bytes, PluginOptions::default().dir(grant))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot grant directory `/no/such/corral/dir`"),
        "{error}"
    );
}
