//! Paths of the guest components the integration suite uses, built by `build.rs` from
//! `guests/` into `target/guests/<name>.wasm`. A constant per guest, named after it in
//! upper case (`HELLO`, `INFINITE_LOOP`…), so no test spells a path.
//!
//! The Python and JavaScript guests (`PY_COUNTER`, `JS_COUNTER`…) and their tools
//! (`COMPONENTIZE_PY`, `COMPONENTIZE_JS`) are `Result`s: `Err` says why one was not built
//! (no `python3` or `npm` on this machine), for the tests to report.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
