//! Test plugin: version "b" of `lookup-host` (see ../lookup-host/src/plugin.rs).

const VERSION: &str = "b";

include!("../../lookup-host/src/plugin.rs");
