//! Whose fault a failed call was, and why the guest aborted, from what wasmtime and the
//! guest's language runtime left behind.

use crate::sandbox::Violation;

/// Whose fault an error that is not a wasm trap is.
#[derive(Debug, PartialEq)]
pub(super) enum Fault {
    /// The guest made the host copy more than its hostcall fuel.
    HostCopy,
    /// The guest broke the canonical ABI or called `exit`.
    Guest(Violation),
    /// Something of the host's own.
    Host,
}

/// Tells the guest's own faults from the host's in an error that ended a call without a
/// wasm trap. Wasmtime reports canonical-ABI faults (a pointer outside memory, a bad
/// `cabi_realloc` result, an invalid discriminant, too many handles) as untyped errors,
/// so they are recognised by their text, as wasmtime 48 writes it: the hostile tests
/// (`tests/all/integrity.rs`) catch a wasmtime upgrade that changes one.
pub(super) fn classify(error: &wasmtime::Error) -> Fault {
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return Fault::Guest(Violation::Exit { code: exit.0 });
    }
    // The root cause: what went wrong, without the wasm backtrace wrapped around it.
    let text = error.root_cause().to_string();
    if error.downcast_ref::<std::str::Utf8Error>().is_some() {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    if text.contains("fuel allocated for hostcalls has been exhausted") {
        return Fault::HostCopy;
    }
    if text.contains("handle limit exceeded") || text.contains("too many active lends") {
        return Fault::Guest(Violation::TooManyHandles { reason: text });
    }
    if error
        .downcast_ref::<wasmtime::component::ResourceTableError>()
        .is_some()
    {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    const ABI: &[&str] = &[
        "realloc return:",
        "pointer out of bounds",
        "out of bounds of memory",
        "not aligned",
        "pointer size overflow",
        "size overflow copying",
        "byte length overflow",
        "byte length too large",
        "discriminant",
        "invalid utf8 encoding",
        "invalid utf16 encoding",
        "out of range for `char`",
        "unknown handle index",
        "is not a resource",
        "is not an own resource",
        "handle is not",
        "cannot lift own resource from a borrow",
        "cannot lower a `borrow` resource into an `own`",
        "cannot remove owned resource while borrowed",
        "borrow handles still remain",
        "resource type mismatch",
        "mismatched resource types",
        "host resource already consumed",
    ];
    let lower = text.to_ascii_lowercase();
    if ABI.iter().any(|pattern| lower.contains(pattern)) {
        return Fault::Guest(Violation::InvalidValue { reason: text });
    }
    Fault::Host
}

/// Why the guest aborted, from what its language's runtime printed on stderr before the
/// `unreachable` trap: an uncaught Python exception (componentize-py), a Rust panic, or
/// an uncaught JavaScript exception (componentize-js). `None` for a bare trap.
pub(super) fn panic_message(stderr: &str) -> Option<String> {
    python_exception(stderr)
        .or_else(|| rust_panic(stderr))
        .or_else(|| js_exception(stderr))
}

/// The message of a Rust panic printed on stderr:
///
/// ```text
/// thread '<unnamed>' panicked at src/lib.rs:10:5:
/// the message
/// note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
/// ```
///
/// gives `the message (at src/lib.rs:10:5)`.
fn rust_panic(stderr: &str) -> Option<String> {
    let rest = &stderr[stderr.find("panicked at ")? + "panicked at ".len()..];
    let mut lines = rest.lines();
    let location = lines.next().unwrap_or("").trim_end_matches(':');
    let message: Vec<&str> = lines.take_while(|l| !l.starts_with("note: ")).collect();
    let message = message.join("\n");
    Some(if message.trim().is_empty() {
        location.to_owned()
    } else {
        format!("{} (at {location})", message.trim_end())
    })
}

/// The last uncaught exception of a Python traceback on stderr:
///
/// ```text
/// Traceback (most recent call last):
///   File "/0/app.py", line 21, in process_message
/// ValueError: boom
/// ```
///
/// gives `ValueError: boom (at app.py, line 21, in process_message)`. componentize-py
/// prints a Rust panic after it, which says only that Python raised.
fn python_exception(stderr: &str) -> Option<String> {
    let traceback = &stderr[stderr.rfind("Traceback (most recent call last):")?..];
    let mut location = None;
    let mut exception = None;
    for line in traceback.lines().skip(1) {
        if line.starts_with("thread '") {
            break;
        } else if let Some(file) = line.trim_start().strip_prefix("File \"") {
            // componentize-py mounts each Python path entry as `/0`, `/1`…
            let file = file.trim_start_matches(|c: char| c == '/' || c.is_ascii_digit());
            location = Some(file.replacen('"', "", 1));
        } else if !line.starts_with(' ') && !line.trim().is_empty() {
            exception = Some(line.trim());
        }
    }
    let exception = exception?;
    Some(match location {
        Some(location) => format!("{exception} (at {location})"),
        None => exception.to_owned(),
    })
}

/// What componentize-js printed before aborting on an uncaught exception: the lines
/// before its `Stack:`, when its `abort()` notice follows.
fn js_exception(stderr: &str) -> Option<String> {
    if !stderr.contains("Redirecting call to abort()") {
        return None;
    }
    let message: Vec<&str> = stderr
        .lines()
        .take_while(|l| l.trim() != "Stack:")
        .filter(|l| !l.trim().is_empty())
        .collect();
    (!message.is_empty()).then(|| message.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_are_found_in_stderr() {
        let stderr = "noise\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nboom\nagain\n\
                      note: run with `RUST_BACKTRACE=1` environment variable\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("boom\nagain (at src/lib.rs:10:5)")
        );
        assert_eq!(panic_message("just an abort"), None);
    }

    #[test]
    fn python_exceptions_are_found_in_stderr() {
        let stderr = "Traceback (most recent call last):\n  File \"/0/app.py\", line 21, in process_message\n\
                      ValueError: boom\nthread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\n\
                      Python function threw an unexpected exception\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("ValueError: boom (at app.py, line 21, in process_message)")
        );
    }

    #[test]
    fn javascript_exceptions_are_found_in_stderr() {
        let stderr = "invalid variant tag value `undefined` (received `Error: boom`)\nStack:\n  \
                      export_processMessage@initializer.js:1146:17\nRedirecting call to abort() to mozalloc_abort\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("invalid variant tag value `undefined` (received `Error: boom`)")
        );
        assert_eq!(panic_message("Stack:\nsomething\n"), None);
    }
}
