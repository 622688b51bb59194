//! Example plugin: uses a host function of the embedder's own, `acme:lookup/lookup`
//! (`../wit/lookup.wit`), which an embedding program provides through
//! `HostBuilder::host_functions` (see `host/examples/host-functions.rs`).
//!
//! - **process-message**: looks up the message's string field `key` with the host's
//!   `lookup.get` and emits `lookup.found` (string fields `key`, `value`, `version`) or
//!   `lookup.missing` (`key`, `version`). A missing `key` field, or an error from the
//!   host function, is a non-fatal failure naming it. With the field `then-spin` set,
//!   it loops after the lookup until its limits stop it.
//! - **timer-event**: nothing.
//!
//! `version` is "a" here and "b" in `lookup-host-b`, so a test sees which one answered.

const VERSION: &str = "a";

include!("plugin.rs");
