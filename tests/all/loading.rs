//! Files that are not plugins for this world are rejected with an error that names the
//! plugin, the problem, and what to do.

use corral::{LoadError, Mismatch, PluginOptions};
use corral_test_guests as guests;

use crate::support::host;

fn load_bytes(name: &str, bytes: &[u8]) -> LoadError {
    host()
        .load(name, bytes, PluginOptions::default())
        .expect_err("the load should fail")
}

#[test]
fn an_empty_file_is_rejected() {
    let error = load_bytes("empty", b"");
    assert!(
        matches!(&error, LoadError::Empty { plugin } if plugin == "empty"),
        "{error:?}"
    );
}

#[test]
fn random_bytes_are_not_webassembly() {
    let error = load_bytes("random", b"#!/bin/sh\necho hi\n");
    assert!(matches!(error, LoadError::NotWasm { .. }), "{error:?}");
    assert!(
        error.to_string().contains("cargo build --target wasm32-wasip2"),
        "{error}"
    );
}

#[test]
fn a_core_module_is_told_how_to_build_a_component() {
    // The smallest valid core module: magic and version 1.
    let error = load_bytes("core", b"\0asm\x01\0\0\0");
    assert!(matches!(error, LoadError::CoreModule { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("core WebAssembly module, not a component"),
        "{text}"
    );
    assert!(
        text.contains("wasm32-wasip2") && text.contains("wasm-tools component new"),
        "{text}"
    );
}

#[test]
fn a_truncated_component_is_invalid() {
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let error = load_bytes("truncated", &bytes[..bytes.len() / 2]);
    assert!(
        matches!(&error, LoadError::Invalid { plugin, .. } if plugin == "truncated"),
        "{error:?}"
    );
}

#[test]
fn a_component_for_another_world_names_every_mismatch() {
    let error = load_bytes("wrong-world", &std::fs::read(guests::WRONG_WORLD).unwrap());
    let LoadError::Incompatible { plugin, problems, .. } = &error else {
        panic!("expected incompatible, got {error:?}");
    };
    assert_eq!(plugin, "wrong-world");
    let expected = [
        Mismatch::UnknownImport {
            name: "acme:other/secrets@1.0.0".into(),
        },
        Mismatch::MissingExport {
            name: "process-message".into(),
        },
        Mismatch::MissingExport {
            name: "timer-event".into(),
        },
    ];
    assert_eq!(problems, &expected);
    let text = error.to_string();
    assert!(
        text.contains("does not fit the `corral:plugin/filter@0.1.0` world"),
        "{text}"
    );
    assert!(text.contains("rebuild it against the WIT files"), "{text}");
}

#[test]
fn a_plugin_built_against_another_version_names_both_versions() {
    let error = load_bytes("other-version", &std::fs::read(guests::OTHER_VERSION).unwrap());
    let LoadError::Incompatible { problems, .. } = &error else {
        panic!("expected incompatible, got {error:?}");
    };
    assert_eq!(
        problems[0],
        Mismatch::ImportVersion {
            name: "corral:plugin/log@0.2.0".into(),
            found: "0.2.0".into(),
            expected: "corral:plugin@0.1.0".into(),
        }
    );
    // Its 0.2.0 entry points have other types too, each named with both.
    let names: Vec<&str> = problems[1..]
        .iter()
        .map(|p| match p {
            Mismatch::ExportType { name, .. } => name.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["process-message", "timer-event"]);
    let text = error.to_string();
    assert!(
        text.contains("built against version 0.2.0, this host provides corral:plugin@0.1.0"),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let error = host()
        .load_file("/no/such/dir/ghost.wasm", PluginOptions::default())
        .unwrap_err();
    assert!(matches!(error, LoadError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("/no/such/dir/ghost.wasm"), "{error}");
}

#[test]
fn a_plugin_is_named_after_its_file() {
    let plugin = host().load_file(guests::HELLO, PluginOptions::default()).unwrap();
    assert_eq!(plugin.name(), "hello");
    assert_eq!(plugin.version().len(), 64, "the version is a SHA-256 in hex");
}

#[test]
fn check_reports_imports_and_exports_without_running() {
    let report = host()
        .check("counter", &std::fs::read(guests::COUNTER).unwrap())
        .unwrap();
    assert!(report.exports.iter().any(|e| e == "process-message"));
    assert!(report.exports.iter().any(|e| e == "timer-event"));
    assert!(
        report.imports.iter().any(|i| i == "corral:plugin/store@0.1.0"),
        "{:?}",
        report.imports
    );
}

#[test]
fn loads_of_the_same_bytes_at_once_compile_them_once() {
    // Eight loads released together, of a guest that takes a while to compile: without
    // the wait for the compile in progress, several would compile.
    const LOADS: u64 = 8;
    let host = corral::Host::new().unwrap();
    let bytes = std::fs::read(guests::WASI_PROBE).unwrap();
    let barrier = std::sync::Barrier::new(LOADS as usize);
    std::thread::scope(|s| {
        for i in 0..LOADS {
            let (host, bytes, barrier) = (&host, &bytes, &barrier);
            s.spawn(move || {
                barrier.wait();
                host.load(&format!("same-bytes-{i}"), bytes, PluginOptions::default())
                    .unwrap();
            });
        }
    });
    let stats = host.compile_stats();
    assert_eq!((stats.compiled, stats.memo_hits), (1, LOADS - 1), "{stats:?}");
}

#[test]
fn a_plugin_that_needs_more_memory_to_start_than_its_cap_says_how_much() {
    let options = PluginOptions::with_limits(corral::Limits {
        memory_bytes: 512 << 10,
        ..corral::Limits::default()
    });
    let error = host()
        .load("starts-too-big", &std::fs::read(guests::HELLO).unwrap(), options)
        .unwrap_err();
    let LoadError::Instantiate { reason, .. } = &error else {
        panic!("{error:?}");
    };
    let needed: u64 = reason
        .strip_prefix("it needs ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no amount in: {reason}"));
    assert!(needed > 512 << 10, "{reason}");
    assert!(
        reason.contains(" bytes of memory to start, more than its memory limit of 524288 bytes")
            && reason.ends_with("raise `memory` in its sidecar's [limits] (or --memory)"),
        "{reason}"
    );
}

#[test]
fn a_pooled_host_runs_plugins_and_says_when_the_pool_is_full() {
    let host = corral::Host::builder().pooling(2).build().unwrap();
    let bytes = std::fs::read(guests::PANICS).unwrap();
    let one = host.load("pooled-one", &bytes, PluginOptions::default()).unwrap();
    let _two = host.load("pooled-two", &bytes, PluginOptions::default()).unwrap();
    // A trap frees the slot, and the next call takes a fresh instance from the pool.
    assert!(one.process_message(&corral::Message::new("x")).is_err());
    one.timer_event(0).unwrap();
    assert_eq!(one.stats().instances, 2);

    let error = host
        .load("pooled-three", &bytes, PluginOptions::default())
        .unwrap_err();
    // A variant of its own, wasmtime's report kept as the source.
    let LoadError::PoolFull { plugin, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(plugin, "pooled-three");
    let source = std::error::Error::source(&error).expect("a source");
    assert!(
        source
            .downcast_ref::<corral::wasmtime::PoolConcurrencyLimitError>()
            .is_some()
    );
    assert!(source.to_string().contains("concurrent limit of 2"), "{source}");
    let message = error.to_string();
    assert!(
        message.starts_with("plugin `pooled-three` failed to start: ")
            && message.ends_with("the host's pool of sandboxes is full (`HostBuilder::pooling`); give it more room, or unload plugins"),
        "{message}"
    );
}

#[test]
fn an_entry_point_of_the_wrong_type_is_named_with_both_types() {
    let error = load_bytes("wrong-types", &std::fs::read(guests::WRONG_TYPES).unwrap());
    let LoadError::Incompatible { world, problems, .. } = &error else {
        panic!("expected incompatible, got {error:?}");
    };
    // Its `process-batch` points to the batch-filter world: it is checked against that.
    assert_eq!(world, "corral:plugin/batch-filter@0.1.0");
    assert_eq!(
        problems,
        &[
            Mismatch::ExportType {
                name: "process-batch".into(),
                reason:
                    "the world's is `func(batch: message-batch)`, the plugin's is `func(count: u32) -> u64`"
                        .into(),
            },
            Mismatch::ExportType {
                name: "timer-event".into(),
                reason: "the world's is `func(now-ns: s64) -> result<_, failure>`, the plugin's is \
                         `func(now-ns: string)`"
                    .into(),
            },
        ]
    );
    let text = error.to_string();
    assert!(
        text.starts_with("plugin `wrong-types` does not fit the `corral:plugin/batch-filter@0.1.0` world:"),
        "{text}"
    );
}
