//! Helpers shared by every test module.

use std::sync::LazyLock;

use corral::{Host, Message, Plugin, PluginOptions};

/// One host for the whole test binary, as an embedding program would have: plugins
/// share its engine and compile memo, so each guest compiles once.
pub fn host() -> &'static Host {
    static HOST: LazyLock<Host> = LazyLock::new(|| Host::new().expect("host starts"));
    &HOST
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
