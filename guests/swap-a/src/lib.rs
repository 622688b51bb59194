//! Test plugin: version "a" of a stateful tally (see tally.rs).

const VERSION: &str = "a";

include!("tally.rs");
