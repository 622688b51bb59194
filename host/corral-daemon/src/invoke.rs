//! `corral call --invoke 'name(args)'`: an export called by name with WAVE-encoded
//! arguments (the WebAssembly Value Encoding, as `wasmtime run --invoke` takes them).

use anyhow::{Context, bail};
use corral::wasmtime::component::Val;
use corral::wasmtime::component::wasm_wave::untyped::UntypedFuncCall;
use corral::{CallOutcome, Plugin};

/// Calls the export `text` names with the arguments it gives; its results in WAVE,
/// separated by `, ` when there are several, and what the call emitted and logged.
pub fn invoke(plugin: &Plugin, text: &str) -> anyhow::Result<(String, CallOutcome)> {
    let call = UntypedFuncCall::parse(text)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("--invoke `{text}`: expected `NAME(ARGS)` with WAVE-encoded arguments"))?;
    let name = call.name();
    let Some(ty) = plugin.export_type(name) else {
        let exports = plugin.report().exports.join("`, `");
        bail!(
            "--invoke `{text}`: plugin `{}` exports no function `{name}` (its exports: `{exports}`)",
            plugin.name()
        );
    };
    let types: Vec<_> = ty.params().map(|(_, ty)| ty).collect();
    let params: Vec<Val> = call
        .to_wasm_params(&types)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "--invoke `{text}`: the arguments do not fit `{name}`, whose parameters are ({})",
                ty.params()
                    .map(|(param, _)| param.to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let (results, outcome) = plugin.call_export_dynamic(name, &params)?;
    let results = results
        .iter()
        .map(|val| val.to_wave())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| format!("--invoke `{text}`: cannot print the results in WAVE"))?;
    Ok((results.join(", "), outcome))
}
