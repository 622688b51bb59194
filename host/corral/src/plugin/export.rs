//! Any export, by name: an embedder whose plugins export functions beyond Corral's worlds
//! calls them under the same rules as the entry points — fuel, memory, deadline, output
//! and emit caps, stats ([`crate::Stats::exports`]), a fresh instance after a trap, and
//! the termination policy — typed ([`Plugin::call_export`]) or with
//! [`Val`]s ([`Plugin::call_export_dynamic`], what `corral call --invoke` uses).
//!
//! An export is named as the component spells it: `add` for a function the world
//! exports, `acme:math/ops@1.0.0#add` for one in an exported interface.

use wasmtime::Store;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{ComponentNamedList, Func, Instance, Lift, Lower, TypedFunc, Val};

use crate::contract::wit::{func_wit, wit};
use crate::plugin::CallError;
use crate::plugin::{CallOutcome, ExportCall, Plugin};
use crate::sandbox::SandboxState;

impl Plugin {
    /// Calls the export `name` with `params`, typed as wasmtime's [`TypedFunc`] is: `P`
    /// and `R` are tuples of the export's parameter and result types (`(i32, i32)` and
    /// `(i32,)` for `add: func(a: s32, b: s32) -> s32`). Returns the results with what
    /// the call emitted and logged.
    ///
    /// # Errors
    ///
    /// [`CallError::Export`] when there is no such export or its types are not `P` and
    /// `R` (nothing ran, and it does not count as the plugin's failure); otherwise
    /// every error of [`Plugin::process_message`], with the same effect on the plugin.
    pub fn call_export<P, R>(&self, name: &str, params: P) -> Result<(R, CallOutcome), CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync + 'static,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let mut call = Typed::<P, R> {
            name,
            func: None,
            params: Some(params),
            results: None,
        };
        let outcome = self.call_export_entry(name, &mut call)?;
        let results = call.results.expect("a call that succeeded has its results");
        Ok((results, outcome))
    }

    /// Calls the export `name` with dynamically typed `params`, as wasmtime's [`Func`]
    /// is, and returns its results as [`Val`]s with what the call emitted and logged.
    /// [`Plugin::export_type`] says what it takes.
    ///
    /// # Errors
    ///
    /// As [`Plugin::call_export`]; `params` that do not match the export's types are a
    /// [`CallError::Export`] naming the first that differs.
    pub fn call_export_dynamic(
        &self,
        name: &str,
        params: &[Val],
    ) -> Result<(Vec<Val>, CallOutcome), CallError> {
        let mut call = Dynamic {
            name,
            func: None,
            params,
            results: Vec::new(),
        };
        let outcome = self.call_export_entry(name, &mut call)?;
        Ok((call.results, outcome))
    }

    /// The type of the function the plugin exports as `name` (see the module docs for
    /// how names are spelled), or `None` when it exports no function of that name.
    pub fn export_type(&self, name: &str) -> Option<ComponentFunc> {
        let component = self.component();
        let engine = component.engine();
        let ty = component.component_type();
        let item = match name.split_once('#') {
            Some((interface, func)) => match ty.get_export(engine, interface)?.ty {
                ComponentItem::ComponentInstance(instance) => instance.get_export(engine, func)?.ty,
                _ => return None,
            },
            None => ty.get_export(engine, name)?.ty,
        };
        match item {
            ComponentItem::ComponentFunc(func) => Some(func),
            _ => None,
        }
    }

    fn call_export_entry(&self, name: &str, call: &mut dyn ExportCall) -> Result<CallOutcome, CallError> {
        let mut result = self.call_export_inner(call);
        // Named in place: mapping the result would move it, on every call.
        if let Err(CallError::Export { export, .. }) = &mut result {
            *export = name.to_owned();
        }
        result
    }
}

/// The function `name` of `instance`: a root export, or `interface#function`.
fn find(store: &mut Store<SandboxState>, instance: &Instance, name: &str) -> Result<Func, String> {
    let index = match name.split_once('#') {
        Some((interface, func)) => {
            let interface = instance
                .get_export_index(&mut *store, None, interface)
                .ok_or_else(|| format!("the plugin exports no interface `{interface}`"))?;
            instance.get_export_index(&mut *store, Some(&interface), func)
        }
        None => instance.get_export_index(&mut *store, None, name),
    };
    index
        .and_then(|index| instance.get_func(&mut *store, index))
        .ok_or_else(|| "the plugin exports no function of that name".to_owned())
}

/// The function of type `F` (a [`TypedFunc`] of the call's types, or a [`Func`]) found
/// for `name` by an earlier call in this instance: looking an export up by name and
/// checking its type cost more than a plain call (BENCHMARKS.md), so each is done once
/// per instance. A fresh instance starts with none.
fn found<F: Copy + 'static>(store: &Store<SandboxState>, name: &str) -> Option<F> {
    let ty = std::any::TypeId::of::<F>();
    store
        .data()
        .found
        .iter()
        .find(|(n, t, _)| *t == ty && **n == *name)
        .and_then(|(_, _, f)| f.downcast_ref::<F>().copied())
}

/// Keeps `func`, found for `name`, for the instance's next calls.
fn keep<F: Send + 'static>(store: &mut Store<SandboxState>, name: &str, func: F) {
    let ty = std::any::TypeId::of::<F>();
    store.data_mut().found.push((name.into(), ty, Box::new(func)));
}

struct Typed<'a, P, R> {
    name: &'a str,
    func: Option<TypedFunc<P, R>>,
    params: Option<P>,
    results: Option<R>,
}

impl<P, R> ExportCall for Typed<'_, P, R>
where
    P: ComponentNamedList + Lower + Send + Sync + 'static,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    fn find(&mut self, store: &mut Store<SandboxState>, instance: &Instance) -> Result<(), String> {
        if let Some(typed) = found::<TypedFunc<P, R>>(store, self.name) {
            self.func = Some(typed);
            return Ok(());
        }
        let func = find(store, instance, self.name)?;
        let typed = func.typed::<P, R>(&*store).map_err(|e| {
            format!(
                "its type is `{}`, not the call's: {e:#}",
                func_wit(&func.ty(&*store))
            )
        })?;
        keep(store, self.name, typed);
        self.func = Some(typed);
        Ok(())
    }

    fn call(&mut self, store: &mut Store<SandboxState>) -> wasmtime::Result<()> {
        let (Some(func), Some(params)) = (self.func, self.params.take()) else {
            wasmtime::bail!("the export was not found before its call");
        };
        self.results = Some(func.call(&mut *store, params)?);
        Ok(())
    }
}

struct Dynamic<'a> {
    name: &'a str,
    func: Option<Func>,
    params: &'a [Val],
    results: Vec<Val>,
}

impl ExportCall for Dynamic<'_> {
    fn find(&mut self, store: &mut Store<SandboxState>, instance: &Instance) -> Result<(), String> {
        let func = match found::<Func>(store, self.name) {
            Some(func) => func,
            None => {
                let func = find(store, instance, self.name)?;
                keep(store, self.name, func);
                func
            }
        };
        let ty = func.ty(&*store);
        if ty.params().len() != self.params.len() {
            return Err(format!(
                "it takes {} parameters, the call gave {} (its type is `{}`)",
                ty.params().len(),
                self.params.len(),
                func_wit(&ty)
            ));
        }
        for ((param, ty), val) in ty.params().zip(self.params) {
            check(val, &ty).map_err(|why| format!("parameter `{param}`: {why}"))?;
        }
        self.results = ty.results().map(|_| Val::Bool(false)).collect();
        self.func = Some(func);
        Ok(())
    }

    fn call(&mut self, store: &mut Store<SandboxState>) -> wasmtime::Result<()> {
        let Some(func) = self.func else {
            wasmtime::bail!("the export was not found before its call");
        };
        func.call(&mut *store, self.params, &mut self.results)
    }
}

/// Whether `val` is of type `ty`, or the first place where it is not.
fn check(val: &Val, ty: &Type) -> Result<(), String> {
    let mismatch = || {
        Err(format!(
            "expected a value of type `{}`, got {}",
            wit(ty),
            val_kind(val)
        ))
    };
    fn all<'v>(vals: impl Iterator<Item = (&'v Val, Type)>) -> Result<(), String> {
        for (v, t) in vals {
            check(v, &t)?;
        }
        Ok(())
    }
    match (val, ty) {
        (Val::Bool(_), Type::Bool)
        | (Val::S8(_), Type::S8)
        | (Val::U8(_), Type::U8)
        | (Val::S16(_), Type::S16)
        | (Val::U16(_), Type::U16)
        | (Val::S32(_), Type::S32)
        | (Val::U32(_), Type::U32)
        | (Val::S64(_), Type::S64)
        | (Val::U64(_), Type::U64)
        | (Val::Float32(_), Type::Float32)
        | (Val::Float64(_), Type::Float64)
        | (Val::Char(_), Type::Char)
        | (Val::String(_), Type::String) => Ok(()),
        (Val::List(vals), Type::List(list)) => all(vals.iter().map(|v| (v, list.ty()))),
        (Val::Record(fields), Type::Record(record)) => {
            if fields.len() != record.fields().len() {
                return mismatch();
            }
            for ((name, v), field) in fields.iter().zip(record.fields()) {
                if name != field.name {
                    return Err(format!("expected field `{}`, got `{name}`", field.name));
                }
                check(v, &field.ty).map_err(|why| format!("field `{name}`: {why}"))?;
            }
            Ok(())
        }
        (Val::Tuple(vals), Type::Tuple(tuple)) if vals.len() == tuple.types().len() => {
            all(vals.iter().zip(tuple.types()))
        }
        (Val::Variant(name, payload), Type::Variant(variant)) => {
            match variant.cases().find(|case| case.name == name) {
                Some(case) => match (payload, case.ty) {
                    (None, None) => Ok(()),
                    (Some(v), Some(t)) => check(v, &t),
                    _ => Err(format!("case `{name}` of `{}` has another payload", wit(ty))),
                },
                None => Err(format!("`{}` has no case `{name}`", wit(ty))),
            }
        }
        (Val::Enum(name), Type::Enum(e)) if e.names().any(|n| n == name) => Ok(()),
        (Val::Option(None), Type::Option(_)) => Ok(()),
        (Val::Option(Some(v)), Type::Option(option)) => check(v, &option.ty()),
        (Val::Result(result), Type::Result(r)) => {
            let (payload, expected) = match result {
                Ok(payload) => (payload, r.ok()),
                Err(payload) => (payload, r.err()),
            };
            match (payload, expected) {
                (None, None) => Ok(()),
                (Some(v), Some(t)) => check(v, &t),
                _ => mismatch(),
            }
        }
        (Val::Flags(names), Type::Flags(flags)) => {
            match names.iter().find(|n| !flags.names().any(|f| f == *n)) {
                Some(name) => Err(format!("`{}` has no flag `{name}`", wit(ty))),
                None => Ok(()),
            }
        }
        (Val::Resource(_), Type::Own(_) | Type::Borrow(_)) => Ok(()),
        _ => mismatch(),
    }
}

/// What kind of value `val` is, in words.
fn val_kind(val: &Val) -> &'static str {
    match val {
        Val::Bool(_) => "a bool",
        Val::S8(_)
        | Val::U8(_)
        | Val::S16(_)
        | Val::U16(_)
        | Val::S32(_)
        | Val::U32(_)
        | Val::S64(_)
        | Val::U64(_) => "an integer of another width or sign",
        Val::Float32(_) | Val::Float64(_) => "a float",
        Val::Char(_) => "a char",
        Val::String(_) => "a string",
        Val::List(_) | Val::FixedLengthList(_) => "a list",
        Val::Map(_) => "a map",
        Val::Record(_) => "a record",
        Val::Tuple(_) => "a tuple",
        Val::Variant(..) => "a variant",
        Val::Enum(_) => "an enum",
        Val::Option(_) => "an option",
        Val::Result(_) => "a result",
        Val::Flags(_) => "flags",
        Val::Resource(_) => "a resource",
        Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => "an async value",
    }
}
