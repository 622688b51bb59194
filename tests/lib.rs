//! Paths of the guest components the integration suite uses, built by `build.rs` from
//! `guests/` into `target/guests/<name>.wasm`. A constant per guest, named after it in
//! upper case (`HELLO`, `INFINITE_LOOP`…), so no test spells a path.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));
