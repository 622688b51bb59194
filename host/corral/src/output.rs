//! What a call writes: log lines, the guest's stdout and stderr, and the output cap.
//!
//! Heka capped the bytes a sandbox could output in one call; Corral counts everything a
//! call writes against one budget — log lines, stdout and stderr bytes, and emitted
//! messages — so a guest cannot flood the host through the channel that is not counted.
//! The budget is shared by the sandbox's import implementations and its WASI streams,
//! hence the `Arc<Mutex<…>>`; the lock is uncontended (one call at a time per sandbox).
//!
//! Stdout and stderr are split into lines and each line is logged under the plugin's
//! name, at info for stdout and warn for stderr. The lines of the call in progress are
//! also kept for the caller ([`crate::CallOutcome::logs`]), and the stderr text is kept
//! so a panic's message can be reported in the error.
//!
//! Guest text never reaches a terminal or a line format raw: every line is logged through
//! [`escape`], so a line holding a newline or an ANSI escape cannot forge a line of the
//! host's log or repaint the operator's terminal; a line counts against the budget for
//! the bytes it takes once escaped. And the host's log about one plugin is rate-limited
//! by a token bucket ([`LogGate`]): a plugin that logs or fails on every call cannot
//! flood the host's log, and what was left out is summed up in one line.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// A partial line longer than this is logged as a line of its own.
const MAX_LINE: usize = 4096;
/// How much of a call's stderr is kept to find a panic message in.
const MAX_STDERR_KEPT: usize = 8192;

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

/// A token bucket over the host's log lines about one plugin: a burst of
/// [`LogGate::BURST`] lines, then [`LogGate::PER_SECOND`] a second. A line that finds the
/// bucket empty is counted, not written. The first line of a run left out is replaced by
/// a notice that lines are being suppressed (so a plugin that goes quiet after a flood
/// still leaves a trace of it), and the next line let through is preceded by a summary
/// of how many were.
#[derive(Debug)]
pub(crate) struct LogGate {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

/// What [`LogGate::admit`] lets a line do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write it, after reporting the `suppressed` lines left out before it (if any).
    Write { suppressed: u64 },
    /// Leave it out; `first` when it starts a run of lines left out.
    Suppress { first: bool },
}

impl LogGate {
    /// Lines written at once before the rate applies.
    pub const BURST: f64 = 100.0;
    /// Lines a second after the burst.
    pub const PER_SECOND: f64 = 20.0;

    pub fn new() -> LogGate {
        LogGate {
            tokens: Self::BURST,
            last: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether a line may be written now.
    pub fn admit(&mut self) -> Admit {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * Self::PER_SECOND;
        self.tokens = (self.tokens + refill).min(Self::BURST);
        self.last = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return Admit::Suppress {
                first: self.suppressed == 1,
            };
        }
        self.tokens -= 1.0;
        Admit::Write {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

/// Reports, under the plugin's name, what a [`LogGate`] decided: lines left out before
/// a line written, or the start of a run of them. Returns whether the line is written.
pub(crate) fn gate_report(plugin: &str, admit: Admit) -> bool {
    match admit {
        Admit::Write { suppressed } => {
            if suppressed > 0 {
                tracing::warn!(
                    target: "corral::guest",
                    plugin,
                    suppressed,
                    "suppressed {suppressed} log lines about this plugin (more than {} a second)",
                    LogGate::PER_SECOND
                );
            }
            true
        }
        Admit::Suppress { first: true } => {
            tracing::warn!(
                target: "corral::guest",
                plugin,
                "log lines about this plugin are suppressed: more than {} a second after a \
                 burst of {}; their count is logged before the next line let through",
                LogGate::PER_SECOND,
                LogGate::BURST
            );
            false
        }
        Admit::Suppress { first: false } => false,
    }
}

/// The output budget and captured lines of one sandbox, shared with its streams.
#[derive(Debug, Clone)]
pub(crate) struct Output(Arc<Mutex<OutputState>>);

#[derive(Debug)]
struct OutputState {
    plugin: Arc<str>,
    /// The rate at which this sandbox's lines reach the host's log.
    gate: Arc<Mutex<LogGate>>,
    /// One call's budget.
    base_limit: u64,
    /// The budget of the call in progress.
    limit: u64,
    used: u64,
    exceeded: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stderr_kept: Vec<u8>,
    /// What the partial lines of stdout and stderr were charged.
    pending: [u64; 2],
    lines: Vec<LogLine>,
}

/// At most what one byte of stdout or stderr takes in its logged, escaped line: a control
/// byte becomes `\u{..}` (up to 6 bytes), a backslash, `\r` or `\t` two, a line break
/// none (it ends the line); a byte of 0x80 and above is part of a UTF-8 character, kept
/// as it is, or invalid and replaced by U+FFFD, three bytes for one.
fn byte_cost(b: u8) -> u64 {
    match b {
        b'\n' => 0,
        b'\\' | b'\r' | b'\t' => 2,
        0..=0x1f | 0x7f => 6,
        0x80.. => 3,
        _ => 1,
    }
}

/// What one call wrote, taken when it ends.
#[derive(Debug, Default)]
pub(crate) struct CallOutput {
    pub used: u64,
    pub exceeded: bool,
    pub lines: Vec<LogLine>,
    pub stderr: String,
}

impl Output {
    pub fn new(plugin: Arc<str>, limit: u64) -> Output {
        Output::with_gate(plugin, limit, Arc::new(Mutex::new(LogGate::new())))
    }

    /// As [`Output::new`], with a log gate shared with the plugin's other log lines.
    pub fn with_gate(plugin: Arc<str>, limit: u64, gate: Arc<Mutex<LogGate>>) -> Output {
        Output(Arc::new(Mutex::new(OutputState {
            plugin,
            gate,
            base_limit: limit,
            limit,
            used: 0,
            exceeded: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stderr_kept: Vec::new(),
            pending: [0, 0],
            lines: Vec::new(),
        })))
    }

    /// Gives the call about to start the budget of `messages` calls, for a batch; the
    /// budget is back to one call's when the call ends.
    pub fn scale(&self, messages: u64) {
        let mut s = self.state();
        s.limit = s.base_limit.saturating_mul(messages);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutputState> {
        // The state is plain counters and buffers; a panic holding the lock cannot break
        // an invariant worth refusing to read.
        crate::lock(&self.0)
    }

    /// Counts `bytes` against the budget; `false` (and the budget marked exceeded) when
    /// they do not fit.
    pub fn charge(&self, bytes: u64) -> bool {
        self.state().charge(bytes)
    }

    /// The rate gate of this sandbox's log lines, to share with the host's own lines
    /// about the plugin.
    pub fn gate(&self) -> Arc<Mutex<LogGate>> {
        self.state().gate.clone()
    }

    /// What is left of the budget of the call in progress.
    pub fn remaining(&self) -> u64 {
        let s = self.state();
        s.limit.saturating_sub(s.used)
    }

    /// Logs one line from the `log` import, after charging it for its escaped size.
    pub fn log(&self, level: LogLevel, message: String) -> bool {
        let mut s = self.state();
        if !s.charge(escaped_len(&message) as u64) {
            return false;
        }
        s.line(level, LogSource::Log, message);
        true
    }

    /// Ends the call: flushes partial lines, hands back what it wrote, and leaves a
    /// fresh budget for the next call (one lock per call: the call path is hot).
    pub fn end(&self) -> CallOutput {
        let mut s = self.state();
        // Most calls write nothing: nothing to flush, and nothing to hand over.
        let quiet = s.used == 0
            && !s.exceeded
            && s.stdout.is_empty()
            && s.stderr.is_empty()
            && s.stderr_kept.is_empty()
            && s.lines.is_empty()
            && s.pending == [0, 0];
        if quiet {
            s.limit = s.base_limit;
            return CallOutput {
                used: 0,
                exceeded: false,
                lines: Vec::new(),
                stderr: String::new(),
            };
        }
        s.flush_partial(LogSource::Stdout);
        s.flush_partial(LogSource::Stderr);
        let stderr = std::mem::take(&mut s.stderr_kept);
        let output = CallOutput {
            used: s.used,
            exceeded: s.exceeded,
            lines: std::mem::take(&mut s.lines),
            stderr: String::from_utf8(stderr)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        };
        s.used = 0;
        s.exceeded = false;
        s.limit = s.base_limit;
        output
    }

    /// The stream to install as the guest's stdout or stderr.
    pub fn stream(&self, source: LogSource) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            source,
        }
    }
}

impl OutputState {
    fn charge(&mut self, bytes: u64) -> bool {
        if self.exceeded || self.used.saturating_add(bytes) > self.limit {
            self.exceeded = true;
            return false;
        }
        self.used += bytes;
        true
    }

    fn write(&mut self, source: LogSource, bytes: &[u8]) -> bool {
        // At most what the bytes take once escaped (see `byte_cost`); the difference is
        // given back when their line is logged and its true escaped size is known.
        let cost: u64 = bytes.iter().map(|&b| byte_cost(b)).sum();
        if !self.charge(cost) {
            return false;
        }
        if source == LogSource::Stderr {
            let room = MAX_STDERR_KEPT.saturating_sub(self.stderr_kept.len());
            self.stderr_kept
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        for &b in bytes {
            if b == b'\n' {
                self.flush_partial(source);
                continue;
            }
            *self.pending(source) += byte_cost(b);
            let buf = self.buffer(source);
            buf.push(b);
            if buf.len() >= MAX_LINE {
                self.flush_partial(source);
            }
        }
        true
    }

    fn buffer(&mut self, source: LogSource) -> &mut Vec<u8> {
        match source {
            LogSource::Stderr => &mut self.stderr,
            _ => &mut self.stdout,
        }
    }

    fn pending(&mut self, source: LogSource) -> &mut u64 {
        match source {
            LogSource::Stderr => &mut self.pending[1],
            _ => &mut self.pending[0],
        }
    }

    fn flush_partial(&mut self, source: LogSource) {
        let buf = std::mem::take(self.buffer(source));
        let charged = std::mem::take(self.pending(source));
        if buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.strip_suffix('\r').unwrap_or(&text).to_owned();
        // The line was charged an upper bound of its size; keep only what it takes.
        let refund = charged.saturating_sub(escaped_len(&text) as u64);
        self.used = self.used.saturating_sub(refund);
        let level = match source {
            LogSource::Stderr => LogLevel::Warn,
            _ => LogLevel::Info,
        };
        self.line(level, source, text);
    }

    fn line(&mut self, level: LogLevel, source: LogSource, message: String) {
        let admitted = crate::lock(&self.gate).admit();
        if gate_report(&self.plugin, admitted) {
            emit_tracing(&self.plugin, level, source, &escape(&message));
        }
        self.lines.push(LogLine {
            level,
            source,
            message,
        });
    }
}

fn emit_tracing(plugin: &str, level: LogLevel, source: LogSource, message: &str) {
    let source = match source {
        LogSource::Log => "log",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
    };
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(target: "corral::guest", $level, plugin, source, "{message}")
        };
    }
    match level {
        LogLevel::Trace => event!(tracing::Level::TRACE),
        LogLevel::Debug => event!(tracing::Level::DEBUG),
        LogLevel::Info => event!(tracing::Level::INFO),
        LogLevel::Warn => event!(tracing::Level::WARN),
        LogLevel::Error => event!(tracing::Level::ERROR),
    }
}

/// A guest's stdout or stderr: every byte is charged to the call's output budget and
/// split into logged lines. Writing past the budget traps the guest; the sandbox then
/// reports the output limit.
#[derive(Debug, Clone)]
pub(crate) struct CaptureStream {
    output: Output,
    source: LogSource,
}

/// The most a guest may write in one `write` call; the budget is checked on the write.
const PERMIT: usize = 64 << 10;

impl CaptureStream {
    fn write_bytes(&self, bytes: &[u8]) -> bool {
        self.output.state().write(self.source, bytes)
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        if self.write_bytes(&bytes) {
            Ok(())
        } else {
            Err(StreamError::trap("output limit exceeded"))
        }
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(if self.write_bytes(buf) {
            Ok(buf.len())
        } else {
            Err(io::Error::other("output limit exceeded"))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_gate_lets_a_burst_through_then_announces_and_counts_what_it_leaves_out() {
        let mut gate = LogGate::new();
        for _ in 0..LogGate::BURST as usize {
            assert_eq!(gate.admit(), Admit::Write { suppressed: 0 });
        }
        assert_eq!(gate.admit(), Admit::Suppress { first: true });
        assert_eq!(gate.admit(), Admit::Suppress { first: false });
        assert_eq!(gate.admit(), Admit::Suppress { first: false });
        // A token back (1/20 s): the next line is written after the count of three.
        gate.last -= std::time::Duration::from_millis(60);
        assert_eq!(gate.admit(), Admit::Write { suppressed: 3 });
    }

    #[test]
    fn lines_are_split_and_the_budget_is_shared() {
        let out = Output::new("p".into(), 20);
        let stdout = out.stream(LogSource::Stdout);
        assert!(stdout.write_bytes(b"one\ntw"));
        assert!(out.log(LogLevel::Error, "boom".into()));
        assert!(stdout.write_bytes(b"o\n"));
        assert!(!stdout.write_bytes(b"this does not fit"));
        let call = out.end();
        assert!(call.exceeded);
        assert_eq!(call.used, 10, "line breaks end lines and cost nothing");
        let texts: Vec<_> = call.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["one", "boom", "two"]);
        assert!(out.charge(20), "a new call gets a fresh budget");
    }
}
