//! Paths of the guest components the integration suite uses, built by `build.rs` from
//! `guests/` into `target/guests/<name>.wasm`. A constant per guest, named after it in
//! upper case (`HELLO`, `INFINITE_LOOP`…), so no test spells a path.
//!
//! The Python and JavaScript guests (`PY_COUNTER`, `JS_COUNTER`…) and their tools
//! (`COMPONENTIZE_PY`, `COMPONENTIZE_JS`) are `Result`s: `Err` says why one was not built
//! (no `python3` or `npm` on this machine), for the tests to report.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The `corral` command, built on first use into the target directory this test binary
/// lives in, with the same profile. (The suite is a test of `corral-test-guests`, so
/// that `cargo test -p corral --lib` does not build the guests; cargo gives a test or a
/// bench the path of its own package's binaries only.)
pub fn corral_exe() -> &'static Path {
    static EXE: LazyLock<PathBuf> = LazyLock::new(|| {
        // target/<profile>/deps/<test or bench>-<hash>
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target/");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "corral-daemon",
                "--bin",
                "corral",
                "--profile",
                profile,
            ])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("cannot run cargo to build the corral command");
        assert!(status.success(), "building the corral command failed (see above)");
        profile_dir.join(format!("corral{}", std::env::consts::EXE_SUFFIX))
    });
    &EXE
}
