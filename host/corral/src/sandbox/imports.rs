//! The host side of the WIT imports: `types` (the message resource), `log`, `config`,
//! `store`, `emit` and `failures`.
//!
//! Every import that writes is charged to the call's budgets before it has any effect.
//! Going past the output or emit cap returns an error from the import, which traps the
//! guest at that point: the call ends there, and the sandbox reports the limit it hit.
//! An emitted message the host refuses (see [`normalise`]) traps the guest the same way,
//! and the call fails with [`crate::CallError::Violation`].

use wasmtime::StoreContextMut;
use wasmtime::component::{ComponentType, Linker, Lower, Resource, ResourceType, WasmStr};

use crate::contract::TYPES_INTERFACE;
use crate::contract::batch_bindings::corral::plugin::failures;
use crate::contract::bindings::corral::plugin::{config, emit, log, store, types};
use crate::contract::message::{Field, GUEST_LOGGER_FIELD, Message, Value, now_ns};
use crate::sandbox::SandboxState;
use crate::sandbox::Violation;
use crate::sandbox::output::{LogLevel, escaped_len};
use crate::sandbox::store::StoreError;

fn limit_trap(what: &str) -> wasmtime::Error {
    wasmtime::format_err!("{what} limit exceeded")
}

impl SandboxState {
    fn current(&self) -> wasmtime::Result<&Message> {
        self.message
            .get()
            .ok_or_else(|| wasmtime::format_err!("no message is being processed"))
    }
}

/// The `message` resource of `corral:plugin/types`, defined by hand rather than by the
/// generated `add_to_linker`: a string the guest reads is lowered into its memory
/// straight from the message the call was lent, and `field`'s name is read where the
/// guest holds it. The generated bindings copy each into a `String` on the host first,
/// an allocation and a free per read on the `filter` world's hot path.
pub(crate) fn add_message_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    type Handle = (Resource<types::Message>,);
    let mut types = linker.instance(TYPES_INTERFACE)?;
    // The guest only ever holds a borrow of the host's message, never an owned handle,
    // so there is nothing to free.
    types.resource("message", ResourceType::host::<types::Message>(), |_, _| Ok(()))?;
    types.func_wrap("[method]message.timestamp", |cx: Cx<'_>, _: Handle| {
        Ok((cx.data().current()?.timestamp,))
    })?;
    types.func_wrap("[method]message.type", |cx: Cx<'_>, _: Handle| {
        Ok((lent(cx.data())?.type_.as_str(),))
    })?;
    types.func_wrap("[method]message.logger", |cx: Cx<'_>, _: Handle| {
        Ok((lent(cx.data())?.logger.as_str(),))
    })?;
    types.func_wrap("[method]message.severity", |cx: Cx<'_>, _: Handle| {
        Ok((cx.data().current()?.severity,))
    })?;
    types.func_wrap("[method]message.payload", |cx: Cx<'_>, _: Handle| {
        Ok((lent(cx.data())?.payload.as_str(),))
    })?;
    types.func_wrap(
        "[method]message.field",
        |cx: Cx<'_>, (_, name): (Resource<types::Message>, WasmStr)| {
            let name = name.to_str(&cx)?;
            Ok((lent(cx.data())?.field(&name).map(ValueRef::of),))
        },
    )?;
    types.func_wrap("[method]message.fields", |cx: Cx<'_>, _: Handle| {
        let fields = &lent(cx.data())?.fields;
        Ok((fields.iter().map(FieldRef::of).collect::<Vec<_>>(),))
    })?;
    Ok(())
}

/// `corral:plugin/types`'s `value`, borrowing from the lent message (see [`lent`]).
#[derive(ComponentType, Lower)]
#[component(variant)]
enum ValueRef {
    #[component(name = "string")]
    String(&'static str),
    #[component(name = "bytes")]
    Bytes(&'static [u8]),
    #[component(name = "int")]
    Int(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "bool")]
    Bool(bool),
}

impl ValueRef {
    fn of(value: &'static Value) -> ValueRef {
        match value {
            Value::String(s) => ValueRef::String(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Bool(b) => ValueRef::Bool(*b),
        }
    }
}

/// `corral:plugin/types`'s `field`, borrowing from the lent message.
#[derive(ComponentType, Lower)]
#[component(record)]
struct FieldRef {
    name: &'static str,
    value: ValueRef,
}

impl FieldRef {
    fn of(field: &'static Field) -> FieldRef {
        FieldRef {
            name: &field.name,
            value: ValueRef::of(&field.value),
        }
    }
}

type Cx<'a> = StoreContextMut<'a, SandboxState>;

/// The message the call in progress was lent, for a host function to return a string of
/// it without a copy.
///
/// The `'static` is a promise kept by what happens to a host function's results: wasmtime
/// lowers them into the guest's memory before the host function returns to the guest,
/// so inside the guest call that `lend` holds the message for (see
/// [`super::current::Current::get`]). The reference is only ever handed back as such a
/// result, never kept.
fn lent(state: &SandboxState) -> wasmtime::Result<&'static Message> {
    let message: *const Message = state.current()?;
    // SAFETY: see above: the message outlives every use of the reference, which ends
    // when the result is lowered, inside the call `lend` lent the message for.
    #[allow(unsafe_code)]
    Ok(unsafe { &*message })
}

impl log::Host for SandboxState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        if self.output.log(level, message) {
            Ok(())
        } else {
            Err(limit_trap("output"))
        }
    }
}

impl config::Host for SandboxState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config.get(&key).cloned())
    }

    fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

impl SandboxState {
    fn check_key(&self, key: &str) -> Result<(), store::Error> {
        let max = self.limits.store_key_bytes as usize;
        if key.is_empty() {
            Err(store::Error::InvalidKey("the key is empty".into()))
        } else if key.len() > max {
            Err(store::Error::InvalidKey(format!(
                "the key is {} bytes, more than the {max} allowed",
                key.len()
            )))
        } else {
            Ok(())
        }
    }
}

impl From<StoreError> for store::Error {
    fn from(e: StoreError) -> store::Error {
        match e {
            StoreError::InvalidKey(m) => store::Error::InvalidKey(m),
            StoreError::TooLarge(m) => store::Error::TooLarge(m),
            StoreError::Other(m) => store::Error::Other(m),
        }
    }
}

impl store::Host for SandboxState {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(self
            .check_key(&key)
            .and_then(|()| Ok(self.kv.get(&self.plugin, &key)?)))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), store::Error>> {
        let max = self.limits.store_value_bytes as usize;
        Ok(self.check_key(&key).and_then(|()| {
            if value.len() > max {
                return Err(store::Error::TooLarge(format!(
                    "the value is {} bytes, more than the {max} allowed",
                    value.len()
                )));
            }
            let keys = u64::from(self.limits.store_keys);
            // Counting is O(1); only a namespace at its quota pays for the existence check.
            if self.kv.count(&self.plugin)? >= keys && self.kv.get(&self.plugin, &key)?.is_none() {
                return Err(store::Error::TooLarge(format!(
                    "the store holds {keys} keys, the most allowed: delete some first"
                )));
            }
            Ok(self.kv.set(&self.plugin, &key, &value)?)
        }))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, store::Error>> {
        Ok(self
            .check_key(&key)
            .and_then(|()| Ok(self.kv.delete(&self.plugin, &key)?)))
    }

    fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, store::Error>> {
        Ok(self.kv.list_keys(&self.plugin, &prefix).map_err(Into::into))
    }
}

impl emit::Host for SandboxState {
    fn emit(&mut self, message: types::OutMessage) -> wasmtime::Result<()> {
        if self.emitted.len() >= self.emit_cap {
            self.emit_refused = true;
            return Err(limit_trap("emit"));
        }
        let message = match normalise(&self.plugin, message) {
            Ok(message) => message,
            Err(violation) => {
                self.violation = Some(violation);
                return Err(wasmtime::format_err!(
                    "the plugin emitted a message the host refuses"
                ));
            }
        };
        let size = message.output_size(self.output.remaining());
        if !self.output.charge(size) {
            return Err(limit_trap("output"));
        }
        self.emitted.push(message);
        Ok(())
    }
}

impl failures::Host for SandboxState {
    fn report(&mut self, index: u32, failure: types::Failure) -> wasmtime::Result<()> {
        self.fail(index, failure)
    }
}

impl SandboxState {
    /// Takes the failure of message `index` of the batch being processed, held to the
    /// rules of `failures.report`: only while a batch is open, inside it, after the one
    /// before (so never more than the batch has messages), and its reason charged to the
    /// output as the host writes it. An error (with the violation or the output limit
    /// marked) ends the call.
    pub(crate) fn fail(&mut self, index: u32, failure: types::Failure) -> wasmtime::Result<()> {
        let refuse = |state: &mut SandboxState, violation: Violation| {
            let error = wasmtime::format_err!("{violation}");
            state.violation = Some(violation);
            Err(error)
        };
        let Some(messages) = self.reports.batch else {
            return refuse(self, Violation::ReportOutsideBatch);
        };
        if index >= messages {
            let messages = messages as usize;
            return refuse(self, Violation::FailureOutOfRange { index, messages });
        }
        if let Some(&(previous, _)) = self.reports.failures.last().filter(|(p, _)| index <= *p) {
            return refuse(self, Violation::FailureOrder { index, previous });
        }
        // The reason is guest text the host writes: it counts as a log line would.
        if !self.output.charge(escaped_len(failure_text(&failure)) as u64) {
            return Err(limit_trap("output"));
        }
        self.reports.failures.push((index, failure));
        Ok(())
    }

    /// Holds the failures an entry point returned (by index, of `messages`) to the rules
    /// `fail` holds reports to, after its call: one mechanism for every entry point.
    pub(crate) fn returned(
        &mut self,
        failures: Vec<(u32, types::Failure)>,
        messages: u32,
    ) -> wasmtime::Result<()> {
        if failures.is_empty() {
            return Ok(());
        }
        self.reports.batch = Some(messages);
        let taken = failures
            .into_iter()
            .try_for_each(|(index, failure)| self.fail(index, failure));
        self.reports.batch = None;
        taken
    }
}

/// The reason a failure gives.
pub(crate) fn failure_text(failure: &types::Failure) -> &str {
    match failure {
        types::Failure::NonFatal(message) | types::Failure::Fatal(message) => message,
    }
}

/// An emitted message as the host writes it, or why it is refused (see
/// `docs/security.md`, "What the host writes for a guest"): the logger is always the
/// plugin's name, and a different one the guest gave is kept in the field
/// [`GUEST_LOGGER_FIELD`]; the type is not empty and not in the host's `corral.`
/// namespace; the severity is 0 to 7; the timestamp, when given, is not before 1970;
/// field names are not empty and not repeated.
pub(crate) fn normalise(plugin: &str, message: types::OutMessage) -> Result<Message, Violation> {
    let types::OutMessage {
        timestamp,
        type_,
        logger,
        severity,
        payload,
        fields,
    } = message;
    if type_.is_empty() {
        return Err(Violation::EmptyType);
    }
    if type_
        .get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
    {
        return Err(Violation::ReservedType { type_ });
    }
    if !(0..=7).contains(&severity) {
        return Err(Violation::Severity { severity });
    }
    if let Some(timestamp) = timestamp.filter(|t| *t < 0) {
        return Err(Violation::Timestamp { timestamp });
    }
    let mut fields: Vec<Field> = fields.into_iter().map(Field::from).collect();
    if !logger.is_empty() && logger != plugin {
        fields.push(Field {
            name: GUEST_LOGGER_FIELD.to_owned(),
            value: Value::String(logger),
        });
    }
    // Repeats are found by sorting references to the names: O(n log n) for the 60,000
    // fields a hostile guest may send, where a pairwise check would be quadratic.
    let mut names: Vec<(&str, usize)> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    if let Some(&(_, index)) = names.iter().find(|(name, _)| name.is_empty()) {
        return Err(Violation::EmptyFieldName { index });
    }
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Violation::DuplicateField {
            name: pair[0].0.to_owned(),
        });
    }
    Ok(Message {
        timestamp: timestamp.unwrap_or_else(now_ns),
        type_,
        logger: plugin.to_owned(),
        severity,
        payload,
        fields,
    })
}

/// The type prefix of the host's own messages (e.g. `corral.plugin-terminated`), compared
/// without regard to ASCII case.
const RESERVED_PREFIX: &str = "corral.";

impl From<types::Field> for Field {
    fn from(f: types::Field) -> Field {
        Field {
            name: f.name,
            value: match f.value {
                types::Value::String(s) => Value::String(s),
                types::Value::Bytes(b) => Value::Bytes(b),
                types::Value::Int(i) => Value::Int(i),
                types::Value::Float(x) => Value::Float(x),
                types::Value::Bool(b) => Value::Bool(b),
            },
        }
    }
}
