//! The check that a component fits its world before anything runs, then wasmtime's link.
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

use super::LoadError;
use crate::contract::mismatch::{Mismatch, check_import, expected_type, fits};
use crate::contract::{
    DECODE, PLUGIN_PACKAGE_VERSION, PROCESS_BATCH, PROCESS_MESSAGE, STATE_INTERFACE, TIMER_EVENT, WorldReport,
};
use crate::sandbox::{Exports, SandboxState};

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
    let stateful = ty.get_export(engine, STATE_INTERFACE).is_some();
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
                    crate::contract::wit::func_wit(&func)
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
