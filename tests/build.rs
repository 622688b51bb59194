//! Builds every guest under `guests/` into `target/guests/<name>.wasm` (what `just guests`
//! runs), and writes a path constant per guest for the tests:
//!
//! - Rust guests (a `Cargo.toml` making a `cdylib`) with cargo for `wasm32-wasip2`;
//! - Python guests (`py-*/app.py`) with componentize-py, and JavaScript guests
//!   (`js-*/plugin.js`) with componentize-js. Each tool is installed on first use into
//!   `target/tools/`, at the version `guests/tools/` pins. Without `python3` or `npm` (or
//!   a registry to install from) those guests are skipped with a warning and their
//!   constants say why, unless `CORRAL_REQUIRE_GUEST_TOOLS=1` (CI) makes that an error.
//!
//! Cargo reruns this script only when `guests/` or `wit/` change, and a Python or
//! JavaScript guest is rebuilt only when its sources or the WIT are newer than it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

#[path = "build/polyglot.rs"]
mod polyglot;

/// Set (to anything but `0`) to make a missing Python or JavaScript tool an error.
const REQUIRE_TOOLS: &str = "CORRAL_REQUIRE_GUEST_TOOLS";

fn main() {
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_owned();
    let guests = root.join("guests");
    let build_dir = root.join("target").join("guest-build");
    let out_dir = root.join("target").join("guests");
    println!("cargo:rerun-if-changed={}", guests.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed={REQUIRE_TOOLS}");

    let mut cargo = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .current_dir(&guests)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&build_dir);
    // What the outer build sets for the host must not leak into the guest build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cargo.env_remove(var);
    }
    let status = cargo.status().expect("cannot run cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guests in `{}` failed (see above). If the wasm32-wasip2 target is \
             missing, run `rustup target add wasm32-wasip2` (`just test` does it for you).",
            guests.display()
        );
    }

    fs::create_dir_all(&out_dir).unwrap();
    let mut constants = String::new();
    for name in guest_names(&guests) {
        let built = build_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out_dir.join(format!("{name}.wasm"));
        fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("cannot copy `{}` to `{}`: {e}", built.display(), dest.display()));
        constants.push_str(&format!(
            "/// `target/guests/{name}.wasm`, built from `guests/{name}`.\npub const {}: &str = {:?};\n",
            name.to_uppercase().replace('-', "_"),
            dest.display().to_string()
        ));
    }
    constants.push_str(&polyglot::build(&root, &out_dir));
    fs::write(
        PathBuf::from(env::var("OUT_DIR").unwrap()).join("guests.rs"),
        constants,
    )
    .unwrap();
}

/// Every guest crate: each directory of `guests/` with a `Cargo.toml` that builds a
/// component (`cdylib`), so the SDK crate is left out, and so is a project that is a
/// workspace of its own (as `corral new` writes them), which the guests' workspace does
/// not build.
fn guest_names(guests: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(guests)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let manifest = fs::read_to_string(path.join("Cargo.toml")).ok()?;
            (manifest.contains("cdylib") && !manifest.lines().any(|l| l.trim() == "[workspace]"))
                .then(|| path.file_name()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}
