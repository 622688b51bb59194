//! Helpers shared by every test module.

use std::path::PathBuf;
use std::sync::LazyLock;

use corral::{Host, Message, Plugin, PluginOptions};

/// One host for the whole test binary, as an embedding program would have: plugins
/// share its engine and compile memo, so each guest compiles once, and a disk compile
/// cache under `target/` keeps the large Python and JavaScript guests from compiling
/// again on the next run.
pub fn host() -> &'static Host {
    static HOST: LazyLock<Host> = LazyLock::new(|| {
        Host::builder()
            .cache_dir(compile_cache())
            .build()
            .expect("host starts")
    });
    &HOST
}

/// The test host's disk compile cache.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// The path of a Python or JavaScript guest, or `None` after printing why it was not
/// built (no `python3` or `npm` on this machine). With `CORRAL_REQUIRE_GUEST_TOOLS` set,
/// as in CI, a missing guest fails the test instead.
pub fn polyglot(built: Result<&'static str, &'static str>) -> Option<&'static str> {
    match built {
        Ok(path) => Some(path),
        Err(why) if std::env::var("CORRAL_REQUIRE_GUEST_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0") => {
            panic!("{why}")
        }
        Err(why) => {
            eprintln!("SKIPPED (set CORRAL_REQUIRE_GUEST_TOOLS=1 to fail instead): {why}");
            None
        }
    }
}

/// Loads the guest at `path` under `name` with `options`, or panics with the error.
pub fn load_as(name: &str, path: &str, options: PluginOptions) -> Plugin {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read `{path}`: {e}"));
    host()
        .load(name, &bytes, options)
        .unwrap_or_else(|e| panic!("cannot load `{name}`: {e}"))
}

/// Loads the guest at `path` with the default options, under a name unique to the
/// calling test so that store namespaces never collide between tests.
pub fn load(name: &str, path: &str) -> Plugin {
    load_as(name, path, PluginOptions::default())
}

/// A message of type `type_` from logger `logger`.
pub fn message(type_: &str, logger: &str) -> Message {
    Message {
        logger: logger.to_owned(),
        ..Message::new(type_)
    }
}

/// Waits until `condition` holds, checking every 10 ms, and panics naming `what` once
/// `bound` has passed: a bounded wait on a condition, never a sleep and a hope.
pub fn eventually(bound: std::time::Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + bound;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {bound:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
