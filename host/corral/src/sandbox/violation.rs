//! How a guest broke the contract: what the sandbox refuses of it, whatever the call.

use std::fmt;

/// How a guest broke the contract, in [`CallError::Violation`]. Guest text in it (a type,
/// a field name, wasmtime's reason) is shown with control characters escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// It emitted a message with an empty type.
    #[error("it emitted a message with an empty type")]
    EmptyType,
    /// It emitted a message whose type starts with `corral.`, which only the host writes.
    #[error(
        "it emitted a message of type `{}`: the `corral.` prefix is reserved for the host",
        Escaped(type_)
    )]
    ReservedType {
        /// The type it gave.
        type_: String,
    },
    /// It emitted a message with a severity outside 0 to 7.
    #[error("it emitted a message of severity `{severity}`: a severity is 0 (emergency) to 7 (debug)")]
    Severity {
        /// The severity it gave.
        severity: i32,
    },
    /// It emitted a message stamped before the Unix epoch.
    #[error(
        "it emitted a message stamped `{timestamp}`, before the Unix epoch: give nanoseconds \
         since 1970, or no timestamp to have the host stamp it"
    )]
    Timestamp {
        /// The timestamp it gave.
        timestamp: i64,
    },
    /// It emitted a message with a field of empty name.
    #[error("it emitted a message whose field {index} has an empty name")]
    EmptyFieldName {
        /// The field's position in the message, from 0.
        index: usize,
    },
    /// It emitted a message with two fields of the same name (`guest_logger` counts as
    /// taken when the message names another logger than the plugin).
    #[error("it emitted a message with more than one field named `{}`", Escaped(name))]
    DuplicateField {
        /// The repeated name.
        name: String,
    },
    /// `process-batch` reported a failure for an index past the end of its batch.
    #[error("`process-batch` reported a failure of message {index} in a batch of {messages}")]
    FailureOutOfRange {
        /// The index it reported.
        index: u32,
        /// The messages in the batch.
        messages: usize,
    },
    /// `process-batch` reported failures out of order or more than once for a message.
    #[error(
        "`process-batch` reported a failure of message {index} after one of message {previous}: \
         failures are listed once per message, in increasing order"
    )]
    FailureOrder {
        /// The index it reported.
        index: u32,
        /// The index reported before it.
        previous: u32,
    },
    /// It called `failures.report` outside `process-batch`.
    #[error("it reported a batch failure outside `process-batch`")]
    ReportOutsideBatch,
    /// It handed the host a value the canonical ABI does not allow: a pointer or length
    /// outside its memory, a misaligned pointer, a bad `cabi_realloc` result, invalid
    /// UTF-8, an unknown variant case, a handle it does not own.
    #[error("it handed the host an invalid value: {}", Escaped(reason))]
    InvalidValue {
        /// Wasmtime's reason.
        reason: String,
    },
    /// It holds more resource handles at once than the host allows.
    #[error("it holds too many resource handles: {}", Escaped(reason))]
    TooManyHandles {
        /// Wasmtime's reason.
        reason: String,
    },
    /// It called WASI's `exit`.
    #[error("it called exit({code})")]
    Exit {
        /// The exit code.
        code: i32,
    },
}

/// Guest text shown with control characters escaped (see [`crate::sandbox::output::escape`]).
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::sandbox::output::escape(self.0))
    }
}
