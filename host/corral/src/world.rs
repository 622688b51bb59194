//! The `corral:plugin/filter` world: generated bindings, and the check that a component
//! fits it before anything runs.
//!
//! Wasmtime's own link errors read like "component imports instance
//! `corral:plugin/log@0.2.0`, but a matching implementation was not found in the linker".
//! Users asked for better (wasmtime#7505, wit-bindgen#1407), so the check below walks the
//! component's imports and exports first and names every problem: a missing export, an
//! interface this host does not provide, or a package version it does not speak, with
//! both versions. Only what passes goes on to wasmtime's full type check, whose message
//! is then kept as the reason.

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::error::{LoadError, Mismatch};
use crate::sandbox::{Exports, SandboxState};

/// Bindings generated from `wit/`, the single source of truth for the contract.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../../wit",
        imports: { default: trappable },
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
const CORRAL_INTERFACES: [&str; 5] = ["types", "log", "config", "store", "emit"];
const WASI_PACKAGES: [&str; 6] = ["io", "clocks", "random", "cli", "filesystem", "sockets"];

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

/// Checks `component` against the world (`filter` or `batch-filter`, and their stateful
/// forms) and links it: the pre-instantiated plugin and its report, or every mismatch
/// found.
pub(crate) fn link(
    plugin: &str,
    engine: &Engine,
    linker: &Linker<SandboxState>,
    component: &Component,
    provided: &dyn Fn(&str) -> bool,
) -> Result<(InstancePre<SandboxState>, Exports, WorldReport), LoadError> {
    let ty = component.component_type();
    // A world's `use` shows up as a type import of the used name (`message`); those are
    // type-checked by the linker below. Interfaces and functions are judged by name.
    let is_type = |item: &ComponentItem| matches!(item, ComponentItem::Type(_) | ComponentItem::Resource(_));
    let decodes = ty.get_export(engine, DECODE).is_some();
    let batches = !decodes && ty.get_export(engine, PROCESS_BATCH).is_some();
    let stateful = ty.get_export(engine, crate::sandbox::STATE_INTERFACE).is_some();
    let world = match (decodes, batches, stateful) {
        (true, _, false) => "decoder",
        (true, _, true) => "stateful-decoder",
        (false, false, false) => "filter",
        (false, false, true) => "stateful-filter",
        (false, true, false) => "batch-filter",
        (false, true, true) => "stateful-batch-filter",
    };
    let report = WorldReport {
        world: format!("corral:plugin/{world}@{PLUGIN_PACKAGE_VERSION}"),
        imports: ty
            .imports(engine)
            .filter(|(_, e)| !is_type(&e.ty))
            .map(|(name, _)| name.to_owned())
            .collect(),
        exports: ty
            .exports(engine)
            .filter(|(_, e)| !is_type(&e.ty))
            .map(|(name, _)| name.to_owned())
            .collect(),
    };
    let mut problems: Vec<Mismatch> = report
        .imports
        .iter()
        .filter_map(|name| check_import(name))
        // An import the embedder's host functions define is theirs to type-check.
        .filter(|m| !matches!(m, Mismatch::UnknownImport { name } if provided(name)))
        .collect();
    // A plugin without either entry point is told about `process-message`, the entry of
    // the world every language can target.
    let entry = if decodes {
        DECODE
    } else if batches {
        PROCESS_BATCH
    } else {
        PROCESS_MESSAGE
    };
    for name in [entry, TIMER_EVENT] {
        let expected = expected_type(name);
        match ty.get_export(engine, name).map(|e| e.ty) {
            None => problems.push(Mismatch::MissingExport { name: name.into() }),
            Some(ComponentItem::ComponentFunc(func)) if fits(name, &func) => {}
            Some(ComponentItem::ComponentFunc(func)) => problems.push(Mismatch::ExportType {
                name: name.into(),
                reason: format!(
                    "the world's is `{expected}`, the plugin's is `{}`",
                    crate::export::func_wit(&func)
                ),
            }),
            Some(_) => problems.push(Mismatch::ExportType {
                name: name.into(),
                reason: format!("the world's is `{expected}`, the plugin's is not a function"),
            }),
        }
    }
    let incompatible = |problems| LoadError::Incompatible {
        plugin: plugin.to_owned(),
        world: report.world.clone(),
        problems,
    };
    if !problems.is_empty() {
        return Err(incompatible(problems));
    }
    let type_error = |e: wasmtime::Error| {
        incompatible(vec![Mismatch::Type {
            reason: format!("{e:#}"),
        }])
    };
    let pre = linker.instantiate_pre(component).map_err(type_error)?;
    let exports = Exports::of(&pre).map_err(type_error)?;
    Ok((pre, exports, report))
}

/// An entry point's type in the world, as WIT spells it.
fn expected_type(entry: &str) -> &'static str {
    match entry {
        PROCESS_MESSAGE => "func(message: borrow<message>) -> result<_, failure>",
        PROCESS_BATCH => "func(batch: batch) -> list<batch-failure>",
        DECODE => "func(records: raw-batch) -> decoded",
        _ => "func(now-ns: s64) -> result<_, failure>",
    }
}

/// Whether an entry point's type has the world's shape: its parameter and result of the
/// right kinds. What the shape leaves open (the records' fields, the variants' cases)
/// wasmtime's own type check judges after.
fn fits(entry: &str, func: &wasmtime::component::types::ComponentFunc) -> bool {
    use wasmtime::component::types::Type;
    let params: Vec<Type> = func.params().map(|(_, ty)| ty).collect();
    let results: Vec<Type> = func.results().collect();
    let failure_result = |ty: &Type| matches!(ty, Type::Result(r) if r.ok().is_none() && matches!(r.err(), Some(Type::Variant(_))));
    match (entry, &params[..], &results[..]) {
        (PROCESS_MESSAGE, [Type::Borrow(_)], [result]) => failure_result(result),
        (PROCESS_BATCH, [Type::Record(_)], [Type::List(list)]) => matches!(list.ty(), Type::Record(_)),
        (DECODE, [Type::Record(_)], [Type::Record(_)]) => true,
        (TIMER_EVENT, [Type::S64], [result]) => failure_result(result),
        _ => false,
    }
}

/// The problem with one import name, if any.
fn check_import(name: &str) -> Option<Mismatch> {
    let unknown = || {
        Some(Mismatch::UnknownImport {
            name: name.to_owned(),
        })
    };
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let Some((namespace, rest)) = path.split_once(':') else {
        return unknown();
    };
    let (package, interface) = rest.split_once('/').unwrap_or((rest, ""));
    let wrong_version = |expected: &str| {
        Some(Mismatch::ImportVersion {
            name: name.to_owned(),
            found: version.unwrap_or("(none)").to_owned(),
            expected: expected.to_owned(),
        })
    };
    match (namespace, package) {
        ("corral", "plugin") => {
            if !version.is_some_and(|v| same_release_line(v, PLUGIN_PACKAGE_VERSION)) {
                wrong_version(&format!("corral:plugin@{PLUGIN_PACKAGE_VERSION}"))
            } else if !CORRAL_INTERFACES.contains(&interface) {
                unknown()
            } else {
                None
            }
        }
        ("wasi", package) if WASI_PACKAGES.contains(&package) => {
            if version.is_some_and(|v| same_release_line(v, WASI_VERSION)) {
                None
            } else {
                wrong_version(&format!("WASI {WASI_VERSION} (any 0.2.x links)"))
            }
        }
        _ => unknown(),
    }
}

/// Whether two versions are semver-compatible: the same major, and for 0.x the same
/// minor, as wasmtime's linker matches them.
fn same_release_line(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
    match (parts(a), parts(b)) {
        (Some((0, a_minor)), Some((0, b_minor))) => a_minor == b_minor,
        (Some((a_major, _)), Some((b_major, _))) => a_major == b_major,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_declares_the_version_the_host_speaks() {
        let wit = include_str!("../../../wit/plugin.wit");
        let declared = format!("package corral:plugin@{PLUGIN_PACKAGE_VERSION};");
        assert!(
            wit.lines().any(|l| l.trim() == declared),
            "wit/plugin.wit lacks `{declared}`"
        );
        assert_eq!(
            crate::WORLD,
            format!("corral:plugin/filter@{PLUGIN_PACKAGE_VERSION}")
        );
    }

    #[test]
    fn imports_are_judged_by_package_and_version() {
        assert_eq!(check_import("corral:plugin/log@0.1.0"), None);
        assert_eq!(check_import("wasi:cli/stdout@0.2.6"), None);
        assert_eq!(check_import("wasi:io/streams@0.2.12"), None);
        assert!(matches!(
            check_import("corral:plugin/log@0.2.0"),
            Some(Mismatch::ImportVersion { found, expected, .. })
                if found == "0.2.0" && expected == "corral:plugin@0.1.0"
        ));
        assert!(matches!(
            check_import("wasi:cli/stdout@0.3.0"),
            Some(Mismatch::ImportVersion { .. })
        ));
        for name in [
            "wasi:http/types@0.2.0",
            "corral:plugin/secrets@0.1.0",
            "acme:x/y@1.0.0",
            "env",
        ] {
            assert!(
                matches!(check_import(name), Some(Mismatch::UnknownImport { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn mismatches_an_author_meets_say_what_to_do() {
        let said = |name| check_import(name).unwrap().to_string();
        assert!(
            said("wasi:http/types@0.2.0").ends_with(
                "(componentize-js imports wasi:http unless it builds with `--disable http fetch-event`)"
            ),
            "{}",
            said("wasi:http/types@0.2.0")
        );
        assert!(
            said("wasi:cli/stdout@0.3.0")
                .contains("built against version 0.3.0, this host provides WASI 0.2")
                && said("wasi:cli/stdout@0.3.0").contains("build for the wasm32-wasip2 target"),
            "{}",
            said("wasi:cli/stdout@0.3.0")
        );
        let missing = Mismatch::MissingExport {
            name: "timer-event".into(),
        }
        .to_string();
        assert!(
            missing.contains("`fn timer_event` in Rust")
                && missing.contains("`def timer_event` on the WitWorld class in Python")
                && missing.contains("`export function timerEvent` in JavaScript"),
            "{missing}"
        );
    }
}
