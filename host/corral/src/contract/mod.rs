//! The contract: what `wit/` says a plugin and its host are to each other, as Rust.
//!
//! The bindings generated from `wit/` (the single source of truth), the versions this
//! host speaks, the names of the worlds' entry points, Heka's [`Message`] and the flat
//! layouts that carry messages and raw records into a guest in one call. Nothing here
//! runs a guest: the `sandbox` room does, on top of this one.

pub(crate) mod batch;
pub(crate) mod message;
pub(crate) mod mismatch;
pub(crate) mod raw;
pub(crate) mod wit;

/// Bindings generated from `wit/`, the single source of truth for the contract.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../../wit",
        imports: { default: trappable },
    });
}

/// The one interface of the `batch-filter` world the `filter` world lacks,
/// `corral:plugin/failures`; every type is [`bindings`]'.
pub(crate) mod batch_bindings {
    wasmtime::component::bindgen!({
        world: "batch-filter",
        path: "../../wit",
        imports: { default: trappable },
        with: {
            "corral:plugin/types": super::bindings::corral::plugin::types,
            "corral:plugin/log": super::bindings::corral::plugin::log,
            "corral:plugin/config": super::bindings::corral::plugin::config,
            "corral:plugin/store": super::bindings::corral::plugin::store,
            "corral:plugin/emit": super::bindings::corral::plugin::emit,
        },
    });
}

pub(crate) use bindings::{Filter, FilterIndices};

/// The version of `corral:plugin` this host provides.
pub const PLUGIN_PACKAGE_VERSION: &str = plugin_version!();
/// The WASI version this host provides; 0.2 guests of an older patch release link too.
pub const WASI_VERSION: &str = "0.2.12";

/// The entry point of the `filter` world, and of the `batch-filter` world: a plugin
/// exports one of them (the batch one wins if it exports both).
pub(crate) const PROCESS_MESSAGE: &str = "process-message";
pub(crate) const PROCESS_BATCH: &str = "process-batch";
/// The entry point of the `decoder` world.
pub(crate) const DECODE: &str = "decode";
/// The entry point every world has.
pub(crate) const TIMER_EVENT: &str = "timer-event";
pub(crate) const CORRAL_INTERFACES: [&str; 6] = ["types", "log", "config", "store", "emit", "failures"];
pub(crate) const WASI_PACKAGES: [&str; 6] = ["io", "clocks", "random", "cli", "filesystem", "sockets"];

/// The interface of the `message` resource and the types every world uses.
pub(crate) const TYPES_INTERFACE: &str = concat!("corral:plugin/types@", plugin_version!());
/// The optional `corral:plugin/state` export.
pub(crate) const STATE_INTERFACE: &str = concat!("corral:plugin/state@", plugin_version!());

/// The WIT world a plugin is told about when it fits none: the one every language can
/// target. (A plugin is checked against the world its exports point to; see
/// [`crate::LoadError::Incompatible`].)
pub const WORLD: &str = concat!("corral:plugin/filter@", plugin_version!());

/// What a component that fits the world imports and exports, for `corral check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldReport {
    /// The world it fits, e.g. `corral:plugin/batch-filter@0.1.0`.
    pub world: String,
    /// Every interface and function the component imports, as it spells them (type
    /// imports, which a world's `use` adds, are left out).
    pub imports: Vec<String>,
    /// Every export's name.
    pub exports: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_declares_the_version_the_host_speaks() {
        let wit = include_str!("../../../../wit/plugin.wit");
        let declared = format!("package corral:plugin@{PLUGIN_PACKAGE_VERSION};");
        assert!(
            wit.lines().any(|l| l.trim() == declared),
            "wit/plugin.wit lacks `{declared}`"
        );
        assert_eq!(WORLD, format!("corral:plugin/filter@{PLUGIN_PACKAGE_VERSION}"));
    }
}
