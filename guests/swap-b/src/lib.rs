//! Test plugin: version "b" of a stateful tally (see ../swap-a/src/tally.rs).

const VERSION: &str = "b";

include!("../../swap-a/src/tally.rs");
