//! The example plugins of the seeds: swappable lookup backends, configuration as code,
//! event hooks, and the example sidecars in `plugins/`.

use std::path::Path;

use corral::{Message, PluginOptions, Registry, Sidecar, StateHandoff, Value};
use corral_daemon::{DaemonSections, Routes};
use corral_test_guests as guests;

use crate::support::{host, load_as};

fn plugins_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")
}

fn with_key(type_: &str, key: &str) -> Message {
    Message::new(type_).with_field("key", Value::String(key.into()))
}

#[test]
fn every_example_sidecar_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(plugins_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // The examples are the daemon's: its keys (matcher, ticker) are welcome.
            let text = std::fs::read_to_string(&path).unwrap();
            Sidecar::parse_at_with(&text, &path, Some(&DaemonSections)).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} example sidecars");
}

#[test]
fn swapping_lookup_backends_changes_the_backend_live() {
    let registry = Registry::new(host().clone());
    let memory = std::fs::read(guests::LOOKUP_MEMORY).unwrap();
    let store = std::fs::read(guests::LOOKUP_STORE).unwrap();
    registry
        .install("lookup-swap", &memory, Sidecar::default())
        .unwrap();
    let set = with_key("lookup.set", "k").with_field("value", Value::String("v".into()));
    registry.process_message("lookup-swap", &set).unwrap();
    let get = |registry: &Registry| {
        let result = registry
            .process_message("lookup-swap", &with_key("lookup.get", "k"))
            .unwrap();
        let m = result.emitted[0].clone();
        (m.field("backend").cloned(), m.field("found").cloned())
    };
    assert_eq!(
        get(&registry),
        (Some(Value::String("memory".into())), Some(Value::Bool(true)))
    );

    // To the store backend: it keeps its own data, which starts empty.
    registry
        .install("lookup-swap", &store, Sidecar::default())
        .unwrap();
    assert_eq!(
        get(&registry),
        (Some(Value::String("store".into())), Some(Value::Bool(false)))
    );
    registry.process_message("lookup-swap", &set).unwrap();

    // Memory to memory carries the map over through the state interface.
    registry
        .install("lookup-swap", &memory, Sidecar::default())
        .unwrap();
    registry.process_message("lookup-swap", &set).unwrap();
    let mut sidecar = Sidecar::default();
    sidecar
        .options
        .config
        .insert("note".into(), "a settings change reloads".into());
    let installed = registry.install("lookup-swap", &memory, sidecar).unwrap();
    assert!(
        matches!(
            installed,
            corral::Installed::Replaced(StateHandoff::Restored { .. })
        ),
        "{installed:?}"
    );
    assert_eq!(
        get(&registry),
        (Some(Value::String("memory".into())), Some(Value::Bool(true)))
    );
}

#[test]
fn config_as_code_computes_the_configuration() {
    let options = PluginOptions::default()
        .config("env", "production")
        .config("plugins", " b.wasm, a.wasm,, b.wasm ");
    let plugin = load_as("config-as-code", guests::CONFIG_AS_CODE, options);
    let rendered = plugin.timer_event(0).unwrap().emitted.remove(0);
    assert_eq!(rendered.type_, "config.rendered");
    let field = |name: &str| rendered.field(name).cloned();
    assert_eq!(field("log-level"), Some(Value::String("info".into())));
    assert_eq!(field("plugins"), Some(Value::String("a.wasm,b.wasm".into())));
    assert_eq!(field("plugin-count"), Some(Value::Int(2)));
    assert_eq!(field("strict"), Some(Value::Bool(true)));
}

#[test]
fn a_hook_runs_on_the_message_type_its_sidecar_matches() {
    let registry = Registry::new(host().clone());
    let path = plugins_dir().join("on-deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let sidecar = Sidecar::parse_at_with(&text, &path, Some(&DaemonSections)).unwrap();
    let bytes = std::fs::read(guests::ON_DEPLOY).unwrap();
    registry.install("on-deploy", &bytes, sidecar).unwrap();
    let push = |branch: &str| {
        Message::new("git.push")
            .with_field("branch", Value::String(branch.into()))
            .with_field("commit", Value::String("abc123".into()))
            .with_field("author", Value::String("eve".into()))
    };
    // The daemon routes with its own table of the sidecar's matcher.
    let routes = Routes::new(registry.clone());
    assert_eq!(routes.matching(&push("main")), ["on-deploy"]);
    assert!(routes.matching(&Message::new("git.tag")).is_empty());
    let deployed = registry
        .process_message("on-deploy", &push("main"))
        .unwrap()
        .emitted;
    assert_eq!(deployed[0].type_, "hook.deploy");
    assert_eq!(deployed[0].payload, "deploy abc123 by eve");
    assert!(
        registry
            .process_message("on-deploy", &push("dev"))
            .unwrap()
            .emitted
            .is_empty()
    );
}
