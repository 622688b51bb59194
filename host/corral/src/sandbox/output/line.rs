//! A log line of a guest's, and how guest text is escaped before it reaches a log.

use std::borrow::Cow;

/// How important a log line is; the WIT `level`, plus where the line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation; also every line of stdout.
    Info,
    /// Unexpected but survived; also every line of stderr.
    Warn,
    /// Something failed.
    Error,
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// The `log` import.
    Log,
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
}

/// One line a plugin logged or printed during a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// How important it is.
    pub level: LogLevel,
    /// Where it came from.
    pub source: LogSource,
    /// The text, without the line break; invalid UTF-8 is replaced.
    pub message: String,
}

/// Guest text made safe for a terminal or a line-oriented format: a backslash, every
/// control character (C0, DEL, C1), the Unicode line and paragraph separators and the
/// bidirectional overrides are written as Rust escapes (`\\`, `\n`, `\r`, `\t`,
/// `\u{1b}`); everything else is kept. Text needing no escape is borrowed, not copied.
///
/// ```
/// assert_eq!(corral::escape("ok\nINFO victim: \x1b[31mforged"), "ok\\nINFO victim: \\u{1b}[31mforged");
/// assert_eq!(corral::escape("plain"), "plain");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    let needs = |c: char| {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The bytes `text` takes once escaped, without escaping it.
pub(crate) fn escaped_len(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '\\' | '\n' | '\r' | '\t' => 2,
            c if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                // `\u{` + hex digits + `}`
                4 + format!("{:x}", c as u32).len()
            }
            c => c.len_utf8(),
        })
        .sum()
}
