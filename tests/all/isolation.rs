//! A guest gets clocks and random from WASI and nothing else of the host: no files, no
//! sockets, no name lookups, no environment, no arguments, an empty stdin.

use corral::Value;
use corral_test_guests as guests;

use crate::support::{load, message};

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
