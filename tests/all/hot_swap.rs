//! The watch directory: plugins appear, are replaced and go away with no restart and no
//! lost call; bad files never replace good ones.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use corral::{CallError, Event, Host, Message, PluginOptions, StateHandoff, Value};
use corral_test_guests as guests;

// The watch-directory harness lives in `support`, shared with the other modules.
pub(crate) use crate::support::{
    Dir, bytes, failed, loaded, replaced, watched, watched_with, watched_with_debounce,
};

#[test]
fn files_present_at_start_are_loaded_before_watch_returns() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A), ("hello.wasm", guests::HELLO)]);
    assert_eq!(dir.registry.names(), ["hello", "tally"]);
    assert_eq!(dir.version_answering("tally"), "a");
}

#[test]
fn a_dropped_file_is_loaded_and_served() {
    let dir = watched(&[]);
    dir.put("tally.wasm", &bytes(guests::SWAP_A));
    let (event, _) = dir.wait("load", loaded("tally"));
    let Event::Loaded { version, .. } = event else {
        unreachable!()
    };
    assert_eq!(dir.registry.get("tally").unwrap().version(), version);
    assert_eq!(dir.version_answering("tally"), "a");
}

#[test]
fn a_changed_file_is_swapped_in_and_its_state_handed_over() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    for _ in 0..3 {
        dir.registry.process_message("tally", &Message::new("x")).unwrap();
    }
    dir.put("tally.wasm", &bytes(guests::SWAP_B));
    let (event, _) = dir.wait("replace", replaced("tally"));
    let Event::Replaced { state, .. } = event else {
        unreachable!()
    };
    assert_eq!(state, StateHandoff::Restored { bytes: 8 });
    let tick = &dir.registry.timer_event("tally", 0).unwrap().emitted[0];
    assert_eq!(tick.field("version"), Some(&Value::String("b".into())));
    assert_eq!(tick.field("count"), Some(&Value::Int(3)), "the count came across");
}

#[test]
fn a_deleted_file_is_unloaded() {
    let dir = watched(&[("hello.wasm", guests::HELLO)]);
    let handle = dir.registry.handle("hello");
    assert!(handle.process_message(&Message::new("x")).is_ok());
    fs::remove_file(dir.file("hello.wasm")).unwrap();
    dir.wait(
        "unload",
        |e| matches!(e, Event::Unloaded { name, .. } if name == "hello"),
    );
    assert!(matches!(
        handle.process_message(&Message::new("x")),
        Err(CallError::NotFound { .. })
    ));
    assert!(dir.registry.status("hello").is_none());
}

#[test]
fn a_bad_file_never_replaces_a_working_version() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    let serving = dir.registry.get("tally").unwrap().version().to_owned();
    for (what, bad) in [
        ("garbage", b"not wasm at all".to_vec()),
        ("another world", bytes(guests::WRONG_WORLD)),
        ("empty", Vec::new()),
    ] {
        dir.put("tally.wasm", &bad);
        let (event, _) = dir.wait("failure", failed("tally"));
        let Event::Failed { error, .. } = event else {
            unreachable!()
        };
        assert!(error.contains("plugin `tally`"), "{what}: {error}");
        assert_eq!(dir.registry.get("tally").unwrap().version(), serving, "{what}");
        assert_eq!(dir.version_answering("tally"), "a", "{what}");
        assert_eq!(dir.registry.status("tally").unwrap().load_error, Some(error));
    }
    // A good file clears the error.
    dir.put("tally.wasm", &bytes(guests::SWAP_B));
    dir.wait("replace", replaced("tally"));
    assert_eq!(dir.registry.status("tally").unwrap().load_error, None);
}

#[test]
fn a_file_written_in_place_is_served_once_complete() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    let new = bytes(guests::SWAP_B);
    // Half the new file first, as a slow copy leaves it; the old version keeps serving.
    fs::write(dir.file("tally.wasm"), &new[..new.len() / 2]).unwrap();
    dir.wait("failure of the half-written file", failed("tally"));
    assert_eq!(dir.version_answering("tally"), "a");
    fs::write(dir.file("tally.wasm"), &new).unwrap();
    dir.wait("replace", replaced("tally"));
    assert_eq!(dir.version_answering("tally"), "b");
}

#[test]
fn a_file_renamed_in_from_another_directory_is_loaded() {
    let dir = watched(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let staged = elsewhere.path().join("moved.wasm");
    fs::copy(guests::SWAP_B, &staged).unwrap();
    // A rename across directories of one file system: only the arrival is reported.
    if fs::rename(&staged, dir.file("moved.wasm")).is_err() {
        fs::copy(&staged, dir.file("moved.wasm")).unwrap();
    }
    dir.wait("load", loaded("moved"));
    assert_eq!(dir.version_answering("moved"), "b");
}

#[test]
fn identical_content_is_not_reloaded() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    dir.put("tally.wasm", &bytes(guests::SWAP_A));
    // A later, different change shows the identical write was seen and passed over.
    dir.put("marker.wasm", &bytes(guests::HELLO));
    let (_, before) = dir.wait("load of the marker", loaded("marker"));
    assert!(before.is_empty(), "the identical write caused {before:?}");
}

#[test]
fn a_burst_of_writes_reloads_once_with_the_final_content() {
    // A burst is writes closer together than the debounce period; on a loaded test
    // machine five writes can take longer than the default, so give them room.
    let dir = watched_with_debounce(&[("tally.wasm", guests::SWAP_A)], Duration::from_millis(500));
    let (a, b) = (bytes(guests::SWAP_A), bytes(guests::SWAP_B));
    for content in [&b, &a, &b, &a, &b] {
        fs::write(dir.file("tally.wasm"), content).unwrap();
    }
    let (event, before) = dir.wait("replace", replaced("tally"));
    assert!(before.is_empty(), "{before:?}");
    let Event::Replaced { new_version, .. } = event else {
        unreachable!()
    };
    assert_eq!(new_version, dir.registry.get("tally").unwrap().version());
    assert_eq!(dir.version_answering("tally"), "b");
    // Nothing else follows: a marker file's load is the next event.
    dir.put("marker.wasm", &bytes(guests::HELLO));
    let (_, before) = dir.wait("load of the marker", loaded("marker"));
    assert!(before.is_empty(), "more reloads after the burst: {before:?}");
}

#[test]
fn a_sidecar_change_reloads_with_the_new_settings() {
    let dir = watched(&[("hello.wasm", guests::HELLO)]);
    let greet = |dir: &Dir| {
        let message = Message {
            logger: "dan".into(),
            ..Message::new("x")
        };
        dir.registry.process_message("hello", &message).unwrap().emitted[0]
            .payload
            .clone()
    };
    assert_eq!(greet(&dir), "Hello, dan!");
    dir.put(
        "hello.toml",
        b"[config]\ngreeting = \"Ahoy\"\n[limits]\nfuel = 5_000_000\n",
    );
    dir.wait("replace", replaced("hello"));
    assert_eq!(greet(&dir), "Ahoy, dan!");
    assert_eq!(dir.registry.get("hello").unwrap().limits().fuel, 5_000_000);
}

#[test]
fn a_bad_sidecar_is_rejected_with_its_line_and_the_old_settings_kept() {
    let dir = watched(&[("hello.wasm", guests::HELLO)]);
    dir.put("hello.toml", b"[config]\ngreeting = \"Ahoy\"\n");
    dir.wait("replace", replaced("hello"));
    dir.put("hello.toml", b"[config]\ngreeting = \"Hi\"\n[limits]\nfule = 5\n");
    let (event, _) = dir.wait("failure", failed("hello"));
    let Event::Failed { error, .. } = event else {
        unreachable!()
    };
    assert!(error.contains("hello.toml"), "{error}");
    assert!(
        error.contains("line 4") && error.contains("unknown field `fule`"),
        "{error}"
    );
    let plugin = dir.registry.get("hello").unwrap();
    assert_eq!(plugin.config().get("greeting").map(String::as_str), Some("Ahoy"));
}

#[test]
fn a_new_preservation_version_discards_the_saved_state() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    dir.registry.process_message("tally", &Message::new("x")).unwrap();
    dir.put("tally.toml", b"preservation-version = 2\n");
    let (event, _) = dir.wait("replace", replaced("tally"));
    let Event::Replaced { state, .. } = event else {
        unreachable!()
    };
    assert_eq!(state, StateHandoff::Discarded { old: 0, new: 2 });
    let tick = &dir.registry.timer_event("tally", 0).unwrap().emitted[0];
    assert_eq!(tick.field("count"), Some(&Value::Int(0)));
}

#[test]
fn plugins_without_the_state_interface_swap_without_it() {
    let dir = watched(&[("p.wasm", guests::HELLO)]);
    dir.put("p.wasm", &bytes(guests::SWAP_A));
    let (event, _) = dir.wait("replace", replaced("p"));
    assert!(
        matches!(
            event,
            Event::Replaced {
                state: StateHandoff::NotExported,
                ..
            }
        ),
        "{event:?}"
    );
}

#[test]
fn a_terminated_plugin_comes_back_when_its_file_is_replaced() {
    let dir = watched(&[("flaky.wasm", guests::FAILS)]);
    assert!(matches!(
        dir.registry.timer_event("flaky", 0),
        Err(CallError::Fatal { .. })
    ));
    assert!(matches!(
        dir.registry.timer_event("flaky", 0),
        Err(CallError::Terminated { .. })
    ));
    // Even the same content comes back: a re-drop is how a user restarts a plugin.
    dir.put("flaky.wasm", &bytes(guests::FAILS));
    dir.wait("replace", replaced("flaky"));
    assert!(matches!(
        dir.registry.timer_event("flaky", 0),
        Err(CallError::Fatal { .. })
    ));
    dir.put("flaky.wasm", &bytes(guests::HELLO));
    dir.wait("replace", replaced("flaky"));
    assert!(dir.registry.timer_event("flaky", 0).is_ok());
}

#[test]
fn rescan_picks_up_what_the_watcher_has_not_yet_seen() {
    let dir = watched(&[]);
    fs::copy(guests::HELLO, dir.file("late.wasm")).unwrap();
    dir.watcher.rescan();
    assert!(dir.registry.get("late").is_some());
}

#[test]
fn swapping_a_hundred_times_under_load_loses_no_call() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    let (a, b) = (bytes(guests::SWAP_A), bytes(guests::SWAP_B));
    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (registry, stop) = (dir.registry.clone(), stop.clone());
        thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let outcome = registry
                    .process_message("tally", &Message::new("x"))
                    .expect("every call succeeds");
                let field = |name| outcome.emitted[0].field(name).cloned();
                answers.push((field("version"), field("count")));
            }
            answers
        })
    };
    for i in 0..100 {
        let (next, name) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        dir.put("tally.wasm", next);
        let (event, before) = dir.wait("replace", replaced("tally"));
        assert!(before.is_empty(), "swap {i}: {before:?}");
        let Event::Replaced { state, .. } = event else {
            unreachable!()
        };
        assert!(
            matches!(state, StateHandoff::Restored { bytes: 8 }),
            "swap {i}: {state:?}"
        );
        assert_eq!(dir.version_answering("tally"), name, "swap {i}");
    }
    stop.store(true, Ordering::SeqCst);
    let answers = caller.join().unwrap();

    // Every answer came from exactly one version, and the count — kept in guest memory
    // and handed over at each swap — rose by one per call: no call lost or answered twice.
    let mut seen = std::collections::BTreeSet::new();
    for (version, _) in &answers {
        match version {
            Some(Value::String(v)) if v == "a" || v == "b" => seen.insert(v.clone()),
            other => panic!("answer from no known version: {other:?}"),
        };
    }
    assert_eq!(seen.len(), 2, "the caller saw both versions");
    let counts: Vec<i64> = answers
        .iter()
        .map(|(_, c)| match c {
            Some(Value::Int(n)) => *n,
            other => panic!("no count: {other:?}"),
        })
        .collect();
    for pair in counts.windows(2) {
        // The test's own version checks between swaps also count, hence "greater".
        assert!(pair[1] > pair[0], "count went from {} to {}", pair[0], pair[1]);
    }
    let last = dir.registry.timer_event("tally", 0).unwrap().emitted[0]
        .field("count")
        .cloned();
    assert_eq!(last, Some(Value::Int(answers.len() as i64 + 100)), "calls lost");
}

#[test]
fn the_compile_cache_survives_a_restart_and_rejects_corrupt_entries() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = bytes(guests::SWAP_A);
    let first = Host::builder().cache_dir(cache.path()).build().unwrap();
    first.load("tally", &wasm, PluginOptions::default()).unwrap();
    assert_eq!(first.compile_stats().compiled, 1);

    let restarted = Host::builder().cache_dir(cache.path()).build().unwrap();
    restarted.load("tally", &wasm, PluginOptions::default()).unwrap();
    let stats = restarted.compile_stats();
    assert_eq!((stats.cache_hits, stats.compiled), (1, 0));

    // Damage every entry: the next host notices, compiles afresh and still loads.
    let entries = cache_entries(cache.path());
    assert_eq!(entries.len(), 1);
    for entry in &entries {
        let mut data = fs::read(entry).unwrap();
        let middle = data.len() / 2;
        data[middle] ^= 0xff;
        fs::write(entry, data).unwrap();
    }
    let third = Host::builder().cache_dir(cache.path()).build().unwrap();
    let plugin = third.load("tally", &wasm, PluginOptions::default()).unwrap();
    assert!(plugin.timer_event(0).is_ok());
    let stats = third.compile_stats();
    assert_eq!((stats.cache_hits, stats.compiled), (0, 1));
}

/// The entries of a compile cache rooted at `root` (one directory per engine), none
/// when it does not exist.
pub(crate) fn cache_entries(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(dirs) = fs::read_dir(root) else {
        return found;
    };
    for dir in dirs {
        for entry in fs::read_dir(dir.unwrap().path()).unwrap() {
            found.push(entry.unwrap().path());
        }
    }
    found
}

#[test]
fn sidecar_matchers_choose_which_plugins_a_message_reaches() {
    // The matcher is the daemon's key: its table follows the registry's sidecars.
    let options = corral::WatchOptions {
        sections: Some(Arc::new(corral_daemon::DaemonSections)),
        ..corral::WatchOptions::default()
    };
    let dir = watched_with(
        &[("hello.wasm", guests::HELLO), ("counter.wasm", guests::COUNTER)],
        options,
    );
    let routes = corral_daemon::Routes::new(dir.registry.clone());
    let login = Message::new("login");
    assert!(routes.matching(&login).is_empty(), "no matcher, no messages");
    dir.put("hello.toml", b"[matcher]\ntype = [\"login\", \"auth.*\"]\n");
    dir.wait("replace", replaced("hello"));
    dir.put("counter.toml", b"[matcher]\nall = true\n");
    dir.wait("replace", replaced("counter"));
    assert_eq!(routes.matching(&login), ["counter", "hello"]);
    assert_eq!(routes.matching(&Message::new("auth.fail")), ["counter", "hello"]);
    assert_eq!(routes.matching(&Message::new("logout")), ["counter"]);
}

#[test]
fn reading_a_file_does_not_count_as_changing_it() {
    // Regression: the watcher's own reads fired access events, which it followed with
    // another read, and so on: a terminated plugin was "re-dropped" in a loop.
    let dir = watched(&[("flaky.wasm", guests::FAILS)]);
    assert!(matches!(
        dir.registry.timer_event("flaky", 0),
        Err(CallError::Fatal { .. })
    ));
    dir.put("marker.wasm", &bytes(guests::HELLO));
    let (_, before) = dir.wait("load of the marker", loaded("marker"));
    assert!(before.is_empty(), "{before:?}");
    assert!(matches!(
        dir.registry.timer_event("flaky", 0),
        Err(CallError::Terminated { .. })
    ));
}
