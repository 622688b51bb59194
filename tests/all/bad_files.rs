//! Bad files dropped into the watch directory: each fails with a clear error naming the
//! file and the reason, never replaces a working version, and leaves the host serving.

use std::fs;
use std::process::Command;

use corral::{Event, Message, WatchOptions};
use corral_test_guests as guests;

use crate::hot_swap::{Dir, bytes, failed, loaded, watched, watched_with};

/// Puts `bad` in place of the working `tally.wasm` and checks the failure and that the
/// old version still answers.
fn rejected_over_a_working_version(dir: &Dir, what: &str, bad: impl FnOnce(&Dir), reason: &str) {
    let serving = dir.registry.get("tally").unwrap().version().to_owned();
    bad(dir);
    let (event, _) = dir.wait(what, failed("tally"));
    let Event::Failed { error, .. } = event else {
        unreachable!()
    };
    assert!(error.contains(reason), "{what}: {error}");
    assert_eq!(dir.registry.get("tally").unwrap().version(), serving, "{what}");
    assert_eq!(dir.version_answering("tally"), "a", "{what}");
}

/// The error of a new name that failed to load.
fn rejected_new(dir: &Dir, name: &str, what: &str) -> String {
    let (event, _) = dir.wait(what, failed(name));
    let Event::Failed { error, .. } = event else {
        unreachable!()
    };
    assert!(dir.registry.get(name).is_none(), "{what}");
    assert_eq!(
        dir.registry.status(name).unwrap().load_error.as_deref(),
        Some(error.as_str())
    );
    // The host is up: another plugin answers.
    assert_eq!(dir.version_answering("tally"), "a");
    error
}

#[test]
fn invalid_components_never_replace_a_working_one() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    let good = bytes(guests::SWAP_B);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "truncated component",
            good[..good.len() * 2 / 3].to_vec(),
            "is not a valid component",
        ),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            "not a WebAssembly file",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "wasm-tools component new",
        ),
        (
            "another world, unknown import",
            bytes(guests::WRONG_WORLD),
            "imports `acme:other/secrets@1.0.0`, which this host does not provide",
        ),
        (
            "another version of the contract",
            bytes(guests::OTHER_VERSION),
            "built against version 0.2.0, this host provides corral:plugin@0.1.0",
        ),
    ];
    for (what, bad, reason) in cases {
        rejected_over_a_working_version(&dir, what, |d| d.put("tally.wasm", &bad), reason);
        assert!(
            dir.registry
                .status("tally")
                .unwrap()
                .load_error
                .unwrap()
                .contains("plugin `tally`"),
            "{what}: the error names the plugin"
        );
    }
}

#[test]
fn a_file_over_the_size_limit_is_refused_with_its_size() {
    let limit = bytes(guests::SWAP_A).len() as u64 + 100;
    let options = WatchOptions {
        max_file_bytes: limit,
        ..WatchOptions::default()
    };
    let dir = watched_with(&[("tally.wasm", guests::SWAP_A)], options);
    let mut big = bytes(guests::SWAP_B);
    big.resize(limit as usize + 1, 0);
    rejected_over_a_working_version(
        &dir,
        "too big",
        |d| d.put("tally.wasm", &big),
        &format!("more than the {limit} allowed"),
    );
}

#[test]
fn a_symlink_outside_the_directory_is_refused_unless_allowed() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere.wasm");
    fs::copy(guests::SWAP_B, &target).unwrap();

    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    rejected_over_a_working_version(
        &dir,
        "symlink out",
        |d| {
            let link = d.path.join(".link");
            std::os::unix::fs::symlink(&target, &link).unwrap();
            fs::rename(&link, d.file("tally.wasm")).unwrap();
        },
        "outside the watch directory",
    );

    // A link within the directory is fine, and so is one outside when allowed.
    let inside = watched(&[("tally.wasm", guests::SWAP_A), ("real.wasm", guests::HELLO)]);
    std::os::unix::fs::symlink(inside.file("real.wasm"), inside.file("alias.wasm")).unwrap();
    inside.wait("load of the alias", loaded("alias"));

    let options = WatchOptions {
        allow_symlinks_outside: true,
        ..WatchOptions::default()
    };
    let allowed = watched_with(&[], options);
    std::os::unix::fs::symlink(&target, allowed.file("linked.wasm")).unwrap();
    allowed.wait("load of the allowed link", loaded("linked"));
}

#[test]
fn a_sidecar_linked_from_outside_is_not_read() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.toml");
    fs::write(&secret, "password = \"hunter2\"\n").unwrap();
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    rejected_over_a_working_version(
        &dir,
        "linked sidecar",
        |d| std::os::unix::fs::symlink(&secret, d.file("tally.toml")).unwrap(),
        "outside the watch directory",
    );
    let error = dir.registry.status("tally").unwrap().load_error.unwrap();
    assert!(!error.contains("hunter2"), "the file's content leaked: {error}");
}

#[test]
fn a_directory_named_like_a_plugin_is_refused() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    fs::create_dir(dir.file("folder.wasm")).unwrap();
    let error = rejected_new(&dir, "folder", "directory");
    assert!(
        error.contains("folder.wasm") && error.contains("it is a directory"),
        "{error}"
    );
}

#[test]
fn a_fifo_named_like_a_plugin_does_not_block_the_watcher() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    let status = Command::new("mkfifo")
        .arg(dir.file("pipe.wasm"))
        .status()
        .unwrap();
    assert!(status.success());
    let error = rejected_new(&dir, "pipe", "fifo");
    assert!(error.contains("not a regular file"), "{error}");
    // The watcher is not stuck on the pipe: it still loads new files.
    dir.put("after.wasm", &bytes(guests::HELLO));
    dir.wait("load after the fifo", loaded("after"));
}

#[test]
fn an_unreadable_file_is_reported_with_the_reason() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    // A link cycle cannot be read by anyone, root included.
    std::os::unix::fs::symlink(dir.file(".b"), dir.path.join(".a")).unwrap();
    std::os::unix::fs::symlink(dir.path.join(".a"), dir.file(".b")).unwrap();
    fs::rename(dir.path.join(".a"), dir.file("cycle.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.file("cycle.wasm"), dir.file(".b2")).unwrap();
    fs::rename(dir.file(".b2"), dir.file(".b")).unwrap();
    let error = rejected_new(&dir, "cycle", "link cycle");
    assert!(
        error.contains("cycle.wasm") && error.contains("symbolic links"),
        "{error}"
    );

    // Permission bits, where they apply (they do not stop root).
    use std::os::unix::fs::PermissionsExt;
    let staged = dir.path.join(".locked");
    fs::write(&staged, bytes(guests::HELLO)).unwrap();
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(&staged).is_err() {
        fs::rename(&staged, dir.file("locked.wasm")).unwrap();
        let error = rejected_new(&dir, "locked", "unreadable");
        assert!(
            error.contains("locked.wasm") && error.contains("ermission denied"),
            "{error}"
        );
    }
}

#[test]
fn a_bad_name_is_refused_and_the_others_served() {
    let dir = watched(&[("tally.wasm", guests::SWAP_A)]);
    dir.put("bad name!.wasm", &bytes(guests::HELLO));
    // A good file after it: once it is loaded, the scan has passed the bad one.
    dir.put("hello.wasm", &bytes(guests::HELLO));
    let (_, before) = dir.wait("the good file", loaded("hello"));
    // A name outside the policy is logged, never recorded: no event, no status, so it
    // cannot reach /plugins or /metrics.
    assert!(
        before
            .iter()
            .all(|e| !matches!(e, Event::Failed { name, .. } if name == "bad name!")),
        "{before:?}"
    );
    assert!(dir.registry.status("bad name!").is_none());
    assert!(dir.registry.statuses().iter().all(|s| s.name != "bad name!"));
    let ping = dir.registry.process_message("tally", &Message::new("ping"));
    assert!(ping.is_ok());
}
