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

mod capture;
mod gate;
mod line;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use capture::CaptureStream;
pub(crate) use gate::{LogGate, gate_report};
pub(crate) use line::escaped_len;
pub use line::{LogLevel, LogLine, LogSource, escape};

/// A partial line longer than this is logged as a line of its own.
const MAX_LINE: usize = 4096;
/// How much of a call's stderr is kept to find a panic message in.
const MAX_STDERR_KEPT: usize = 8192;

/// The output budget and captured lines of one sandbox, shared with its streams.
#[derive(Debug, Clone)]
pub(crate) struct Output(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// Whether anything changed the state since the last call ended. Most calls write
    /// nothing, and [`Output::end`] then takes no lock: an uncontended lock and its
    /// release are two atomic read-modify-writes, each waiting for the stores before it.
    touched: AtomicBool,
    state: Mutex<OutputState>,
}

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
        let state = Mutex::new(OutputState {
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
        });
        Output(Arc::new(Shared {
            touched: AtomicBool::new(false),
            state,
        }))
    }

    /// Gives the call about to start the budget of `messages` calls, for a batch; the
    /// budget is back to one call's when the call ends.
    pub fn scale(&self, messages: u64) {
        let mut s = self.touch();
        s.limit = s.base_limit.saturating_mul(messages);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutputState> {
        // The state is plain counters and buffers; a panic holding the lock cannot break
        // an invariant worth refusing to read.
        crate::lock(&self.0.state)
    }

    /// The state, to change: the call's end must look at it.
    fn touch(&self) -> std::sync::MutexGuard<'_, OutputState> {
        let state = self.state();
        self.0.touched.store(true, Ordering::Release);
        state
    }

    /// Counts `bytes` against the budget; `false` (and the budget marked exceeded) when
    /// they do not fit.
    pub fn charge(&self, bytes: u64) -> bool {
        self.touch().charge(bytes)
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
        let mut s = self.touch();
        if !s.charge(escaped_len(&message) as u64) {
            return false;
        }
        s.line(level, LogSource::Log, message);
        true
    }

    /// Ends the call: flushes partial lines, hands back what it wrote, and leaves a
    /// fresh budget for the next call (no lock for a call that wrote nothing and had
    /// one call's budget: the call path is hot).
    pub fn end(&self) -> CallOutput {
        if !self.0.touched.load(Ordering::Acquire) {
            return CallOutput::default();
        }
        let mut s = self.state();
        self.0.touched.store(false, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_batch_budget_lasts_one_call_even_when_nothing_is_written() {
        let out = Output::new("p".into(), 10);
        out.scale(3);
        assert_eq!(out.remaining(), 30);
        let call = out.end();
        assert_eq!((call.used, call.exceeded, call.lines.len()), (0, false, 0));
        assert_eq!(out.remaining(), 10, "the next call has one call's budget again");
        assert!(!out.charge(11));
        assert!(out.end().exceeded, "an exceeded budget is reported, not lost");
        assert!(!out.end().exceeded, "and then forgotten");
    }
}
