//! An embedder crate outside the workspace, depending on `corral` alone, as a user's
//! program would: it defines a host function with `bindgen!`, loads a guest importing
//! it, watches a directory and hot-swaps the guest while calling it. The crate is
//! `host/corral/examples/host-functions.rs`, built here as a package of its own.

use std::fs;
use std::path::Path;
use std::process::Command;

use corral_test_guests as guests;

/// The repository's root.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn an_embedder_crate_outside_the_workspace_hot_swaps_a_guest_using_its_host_function() {
    let temp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // The example finds its WIT at `../../guests/lookup-host/wit/` from its crate's root,
    // as it does in the repository: mirror that layout.
    let krate = temp.path().join("host/corral");
    let wit = temp.path().join("guests/lookup-host/wit");
    fs::create_dir_all(krate.join("src")).unwrap();
    fs::create_dir_all(&wit).unwrap();
    fs::copy(
        root().join("guests/lookup-host/wit/lookup.wit"),
        wit.join("lookup.wit"),
    )
    .unwrap();
    fs::copy(
        root().join("host/corral/examples/host-functions.rs"),
        krate.join("src/main.rs"),
    )
    .unwrap();
    // The workspace's lock file, so the build resolves offline to the same versions, and
    // its dev profile, so the build shares the workspace's compiled dependencies.
    fs::copy(root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let corral = root().join("host/corral").canonicalize().unwrap();
    fs::write(
        krate.join("Cargo.toml"),
        format!(
            r#"[package]
name = "corral-embedder-test"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
corral = {{ path = {corral:?} }}

# Not a member of any workspace.
[workspace]

[profile.dev.package."*"]
opt-level = 2
debug = false

[profile.dev]
debug = "line-tables-only"
"#,
            corral = corral.display().to_string()
        ),
    )
    .unwrap();

    // Into the target directory this test binary lives in (target/<profile>/deps/all-…),
    // so wasmtime is not compiled again.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap();
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        build.env_remove(var);
    }
    let output = build.output().unwrap();
    assert!(
        output.status.success(),
        "building the embedder crate failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = target.join("debug/corral-embedder-test");
    let tree = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "tree",
            "--offline",
            "--depth",
            "1",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--manifest-path",
        ])
        .arg(krate.join("Cargo.toml"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert_eq!(
        tree.lines()
            .skip(1)
            .map(|l| l.split(' ').next().unwrap())
            .collect::<Vec<_>>(),
        ["corral"],
        "it depends on corral alone: {tree}"
    );

    let output = Command::new(&binary)
        .args([guests::LOOKUP_HOST, guests::LOOKUP_HOST_B])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (line, (prefix, needles)) in lines.iter().zip([
        (
            "a: ",
            &[
                r#""type":"lookup.found""#,
                r#""value":"admin""#,
                r#""version":"a""#,
            ][..],
        ),
        ("a: ", &[r#""type":"lookup.missing""#, r#""key":"bob""#][..]),
        (
            "a: ",
            &["plugin `lookup` failed: lookup of `` failed: plugin `lookup` asked for an empty key"][..],
        ),
        ("b: ", &[r#""value":"guest""#, r#""version":"b""#][..]),
    ]) {
        assert!(line.starts_with(prefix), "{line}");
        for needle in needles {
            assert!(line.contains(needle), "{needle} not in {line}");
        }
    }
}
