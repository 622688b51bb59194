//! Host functions of the embedder's own (`HostBuilder::host_functions`): a plugin calls
//! them with its name and config known to them, through a swap, through their errors,
//! under the call's deadline; a plugin importing what nobody provides is refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use corral::wasmtime::component::HasSelf;
use corral::{CallError, Event, Host, HostCtx, Limit, LoadError, Message, Mismatch, PluginOptions, Value};
use corral_test_guests as guests;

use crate::support::{bytes, compile_cache, replaced, watched_on};

/// The host side of `acme:lookup`, its errors trappable so a test can fail the host
/// function itself.
mod bindings {
    corral::wasmtime::component::bindgen!({
        path: "../guests/lookup-host/wit/lookup.wit",
        world: "host",
        wasmtime_crate: corral::wasmtime,
        imports: { default: trappable },
    });
}

use bindings::acme::lookup::lookup;

/// The error of the host function itself, typed, as an embedder's own would be.
#[derive(Debug)]
struct BackendDown;

impl std::fmt::Display for BackendDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the lookup backend is down")
    }
}

impl std::error::Error for BackendDown {}

/// Each instance's data: what it looked up, shared with the test.
struct Probe {
    seen: Arc<Mutex<Vec<String>>>,
    /// Lookups by this instance: per-instance state.
    lookups: u32,
}

impl lookup::Host for HostCtx<Probe> {
    fn get(&mut self, key: String) -> corral::wasmtime::Result<Result<Option<String>, String>> {
        self.lookups += 1;
        let who = format!(
            "{} (namespace {:?}, lookup {})",
            self.plugin(),
            self.config().get("namespace"),
            self.lookups
        );
        self.seen.lock().unwrap().push(who);
        Ok(match key.as_str() {
            "alice" => Ok(Some("admin".into())),
            "offline" => Err("the table is offline".into()),
            "fail" => return Err(corral::wasmtime::Error::new(BackendDown)),
            "slow" => {
                thread::sleep(Duration::from_millis(300));
                Ok(Some("late".into()))
            }
            _ => Ok(None),
        })
    }
}

/// A host whose plugins may import `acme:lookup/lookup`, and what its host function saw.
fn lookup_host() -> (Host, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    let host = Host::builder()
        .cache_dir(compile_cache())
        .host_functions(
            |linker, get| lookup::add_to_linker::<_, HasSelf<_>>(linker, get),
            move |_plugin, _config| Probe {
                seen: shared.clone(),
                lookups: 0,
            },
        )
        .build()
        .unwrap();
    (host, seen)
}

fn ask(key: &str) -> Message {
    Message::new("query").with_field("key", Value::String(key.into()))
}

fn string(message: &Message, field: &str) -> String {
    match message.field(field) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("no string `{field}` in {message:?}: {other:?}"),
    }
}

#[test]
fn a_plugin_calls_the_embedders_host_function_with_its_name_and_config() {
    let (host, seen) = lookup_host();
    let bytes = bytes(guests::LOOKUP_HOST);
    let options = PluginOptions::default().config("namespace", "staff");
    let plugin = host.load("directory", &bytes, options).unwrap();
    assert!(
        plugin
            .report()
            .imports
            .iter()
            .any(|i| i == "acme:lookup/lookup@0.1.0"),
        "{:?}",
        plugin.report()
    );

    let found = plugin.process_message(&ask("alice")).unwrap();
    assert_eq!(found.emitted[0].type_, "lookup.found");
    assert_eq!(string(&found.emitted[0], "value"), "admin");
    let missing = plugin.process_message(&ask("bob")).unwrap();
    assert_eq!(missing.emitted[0].type_, "lookup.missing");
    assert_eq!(
        *seen.lock().unwrap(),
        [
            r#"directory (namespace Some("staff"), lookup 1)"#,
            r#"directory (namespace Some("staff"), lookup 2)"#,
        ],
        "the host function knows the plugin, its config, and keeps its instance's data"
    );
}

#[test]
fn a_host_functions_errors_reach_the_guest_or_fail_the_call() {
    let (host, seen) = lookup_host();
    let plugin = host
        .load("errors", &bytes(guests::LOOKUP_HOST), PluginOptions::default())
        .unwrap();

    // An error in the interface's own terms (`result<_, string>`) is the guest's to
    // handle: this one reports a non-fatal failure naming it.
    match plugin.process_message(&ask("offline")) {
        Err(CallError::Failed { plugin, message }) => {
            assert_eq!(plugin, "errors");
            assert_eq!(message, "lookup of `offline` failed: the table is offline");
        }
        other => panic!("expected the guest's failure, got {other:?}"),
    }
    assert_eq!(
        plugin.stats().instances,
        1,
        "a failure the guest reports keeps the instance"
    );

    // An error of the host function itself ends the call where it stands: the guest
    // cannot go on from a call that did not return. The host reports it, and the next
    // call gets a fresh instance, whose data is fresh too.
    let error = plugin.process_message(&ask("fail")).unwrap_err();
    assert!(
        matches!(&error, CallError::Host { plugin, .. } if plugin == "errors"),
        "{error:?}"
    );
    assert!(
        format!("{error:#}").contains("the lookup backend is down"),
        "{error:#}"
    );
    // The embedder's own error is kept typed in the source chain.
    let mut chain = std::iter::successors(std::error::Error::source(&error), |e| e.source());
    assert!(
        chain.any(|e| e.downcast_ref::<BackendDown>().is_some()),
        "no BackendDown in the source chain of {error:?}"
    );
    plugin.process_message(&ask("alice")).unwrap();
    assert_eq!(plugin.stats().instances, 2);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.last().unwrap(),
        "errors (namespace None, lookup 1)",
        "{seen:?}"
    );
}

#[test]
fn time_in_a_host_function_counts_against_the_deadline() {
    let (host, _) = lookup_host();
    let limits = corral::Limits {
        deadline: Duration::from_millis(50),
        ..corral::Limits::default()
    };
    let plugin = host
        .load(
            "slow-lookup",
            &bytes(guests::LOOKUP_HOST),
            PluginOptions::with_limits(limits),
        )
        .unwrap();
    // The host function takes 300 ms of a 50 ms deadline; the guest is stopped when it
    // runs again, before it can emit.
    let error = plugin.process_message(&ask("slow")).unwrap_err();
    assert_eq!(error.limit(), Some(Limit::Deadline), "{error}");
    assert_eq!(plugin.stats().discarded + plugin.stats().emitted, 0);
}

#[test]
fn a_plugin_swapped_while_it_uses_the_host_function_loses_no_call() {
    let (host, _) = lookup_host();
    let dir = watched_on(
        host,
        &[("lookup.wasm", guests::LOOKUP_HOST)],
        corral::WatchOptions::default(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(std::sync::Mutex::new(Vec::new()));
    let caller = {
        let (registry, stop, served) = (dir.registry.clone(), stop.clone(), served.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let outcome = registry
                    .process_message("lookup", &ask("alice"))
                    .expect("every call succeeds, before, during and after the swap");
                assert_eq!(string(&outcome.emitted[0], "value"), "admin");
                served
                    .lock()
                    .unwrap()
                    .push(string(&outcome.emitted[0], "version"));
            }
        })
    };
    let (a, b) = (bytes(guests::LOOKUP_HOST), bytes(guests::LOOKUP_HOST_B));
    for (i, next) in [&b, &a, &b].into_iter().enumerate() {
        dir.put("lookup.wasm", next);
        let (event, _) = dir.wait("swap", replaced("lookup"));
        assert!(matches!(event, Event::Replaced { .. }), "swap {i}");
    }
    // The last swap brought b back: the caller's calls reach it (a call it began before
    // the swap may still come back from a).
    crate::support::eventually("the caller served by b", crate::support::BOUND, || {
        served.lock().unwrap().last().map(String::as_str) == Some("b")
    });
    stop.store(true, Ordering::SeqCst);
    caller.join().unwrap();
    let versions = served.lock().unwrap().clone();
    assert!(versions.iter().all(|v| v == "a" || v == "b"), "{versions:?}");
    assert!(
        versions.contains(&"a".to_owned()) && versions.last().map(String::as_str) == Some("b"),
        "the caller was served by both versions, b last: {versions:?}"
    );
}

#[test]
fn a_plugin_importing_an_interface_nobody_provides_is_refused_naming_it() {
    // The test suite's host has no host functions.
    let error = crate::support::host()
        .load("no-lookup", &bytes(guests::LOOKUP_HOST), PluginOptions::default())
        .unwrap_err();
    let LoadError::Incompatible { problems, .. } = &error else {
        panic!("expected a mismatch, got {error:?}");
    };
    assert_eq!(
        problems,
        &[Mismatch::UnknownImport {
            name: "acme:lookup/lookup@0.1.0".into()
        }]
    );
    let text = error.to_string();
    assert!(
        text.contains("imports `acme:lookup/lookup@0.1.0`, which this host does not provide"),
        "{text}"
    );

    // A host with other host functions does not provide it either.
    let other = Host::builder()
        .host_functions(
            |linker, _get: corral::HostGetter<()>| {
                linker
                    .root()
                    .func_wrap("acme:other/thing@1.0.0", |_, (): ()| Ok(()))
            },
            |_, _| (),
        )
        .build()
        .unwrap();
    let error = other
        .load("no-lookup", &bytes(guests::LOOKUP_HOST), PluginOptions::default())
        .unwrap_err();
    assert!(
        error.to_string().contains("imports `acme:lookup/lookup@0.1.0`"),
        "{error}"
    );
}
