//! [`CompileWorker`]: compiling in a child process under `RLIMIT_DATA`, `RLIMIT_CPU` and
//! a wall-clock timeout.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{CompileLimit, CompileLimits};
use crate::loader::engine::{self, EngineSettings};

/// How to start a compile worker: a program, and the arguments that make it call
/// [`compile_worker_main`]. `corral run`, `check` and `call` use the `corral` binary
/// itself (`corral compile-worker`, a hidden command).
///
/// ```no_run
/// use std::process::ExitCode;
///
/// fn main() -> ExitCode {
///     // First thing: a worker does nothing else.
///     if std::env::args().nth(1).as_deref() == Some("--corral-compile-worker") {
///         return corral::compile_worker_main();
///     }
///     let worker = corral::CompileWorker::new(std::env::current_exe().expect("own path"))
///         .arg("--corral-compile-worker");
///     let host = corral::Host::builder().compile_worker(worker).build().expect("host");
///     // … load plugins: every compile now runs in a child under CompileLimits' bounds.
/// #   let _ = host;
///     ExitCode::SUCCESS
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    program: PathBuf,
    args: Vec<OsString>,
}

impl CompileWorker {
    /// A worker started as `program`, with no arguments yet.
    pub fn new(program: impl Into<PathBuf>) -> CompileWorker {
        CompileWorker {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Adds an argument and returns the worker.
    pub fn arg(mut self, arg: impl Into<OsString>) -> CompileWorker {
        self.args.push(arg.into());
        self
    }
}

/// What the host asks of a worker: the first line of its stdin, the component's bytes
/// after it.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    engine: EngineSettings,
    memory_bytes: u64,
    cpu_seconds: u64,
}

/// The exit code of a worker that wasmtime refused the component in (the reason on
/// stderr).
const EXIT_INVALID: u8 = 3;
/// The exit code of a worker that could not set itself up.
const EXIT_SETUP: u8 = 4;
/// The longest request line.
const MAX_REQUEST_LINE: u64 = 4 << 10;
/// The stderr of a worker kept for an error message.
const MAX_STDERR: u64 = 64 << 10;

/// The body of a compile worker: reads a request and a component on stdin, limits its
/// own memory and CPU time as the request says, compiles the component for the
/// engine the request describes, and writes wasmtime's precompiled bytes on stdout.
/// Call it from `main` when the program is started with a [`CompileWorker`]'s
/// arguments, and exit with what it returns; nothing else may write to stdout.
pub fn compile_worker_main() -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn serve() -> Result<(), (u8, String)> {
    let setup = |what: &str, e: &dyn std::fmt::Display| (EXIT_SETUP, format!("compile worker: {what}: {e}"));
    // Die with the host: a compile nobody waits for is only cost.
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| setup("cannot set the parent-death signal", &e))?;
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    (&mut stdin)
        .take(MAX_REQUEST_LINE)
        .read_line(&mut line)
        .map_err(|e| setup("cannot read the request", &e))?;
    let request: Request = serde_json::from_str(&line).map_err(|e| setup("bad request", &e))?;
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, setrlimit};
        setrlimit(
            Resource::Data,
            Rlimit {
                current: Some(request.memory_bytes),
                maximum: Some(request.memory_bytes),
            },
        )
        .map_err(|e| setup("cannot limit its memory", &e))?;
        // SIGXCPU at the soft limit, SIGKILL a second later: a backstop to the host's
        // wall-clock timeout, should the host be gone.
        setrlimit(
            Resource::Cpu,
            Rlimit {
                current: Some(request.cpu_seconds),
                maximum: Some(request.cpu_seconds.saturating_add(1)),
            },
        )
        .map_err(|e| setup("cannot limit its CPU time", &e))?;
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| setup("cannot read the component", &e))?;
    let engine = wasmtime::Engine::new(&engine::config(&request.engine))
        .map_err(|e| setup("cannot set up the engine", &format_args!("{e:#}")))?;
    let code = engine
        .precompile_component(&bytes)
        .map_err(|e| (EXIT_INVALID, format!("{e:#}")))?;
    drop(bytes);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&code)
        .and_then(|()| stdout.flush())
        .map_err(|e| setup("cannot write the compiled code", &e))
}

/// Why a compile in a worker did not give code.
#[derive(Debug)]
pub(crate) enum WorkerError {
    /// wasmtime refused the component: its reason.
    Invalid(String),
    /// The compile ran past a bound and was stopped.
    Stopped(CompileLimit, u64),
    /// The worker could not be run, or failed otherwise.
    Failed(String),
}

/// Compiles `bytes` for `engine` in a worker under `limits`; the precompiled bytes.
pub(crate) fn in_worker(
    worker: &CompileWorker,
    engine: EngineSettings,
    limits: &CompileLimits,
    bytes: &[u8],
) -> Result<Vec<u8>, WorkerError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let request = Request {
        engine,
        memory_bytes: limits.memory_bytes,
        // CPU time can be wall time on every core (parallel compilation).
        cpu_seconds: limits.time.as_secs().saturating_add(1).saturating_mul(threads),
    };
    let mut header = serde_json::to_vec(&request).map_err(|e| WorkerError::Failed(e.to_string()))?;
    header.push(b'\n');
    let started = Instant::now();
    let mut child = Command::new(&worker.program)
        .args(&worker.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            WorkerError::Failed(format!(
                "cannot start the compile worker `{}`: {e}",
                worker.program.display()
            ))
        })?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(WorkerError::Failed("the compile worker has no pipes".into()));
    };
    // The compiled code is never larger than the memory the worker may use.
    let max_output = limits.memory_bytes;
    let (sent, output) = mpsc::channel();
    std::thread::scope(|scope| {
        // A worker that stops reading makes this write fail once it is gone.
        scope.spawn(move || {
            let _ = stdin.write_all(&header).and_then(|()| stdin.write_all(bytes));
        });
        scope.spawn(move || {
            let mut code = Vec::new();
            let read = stdout.take(max_output.saturating_add(1)).read_to_end(&mut code);
            let _ = sent.send(read.map(|_| code));
        });
        let errors = scope.spawn(move || {
            let mut text = Vec::new();
            let mut stderr = stderr;
            let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut text);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            String::from_utf8_lossy(&text).trim().to_owned()
        });
        let remaining = limits.time.saturating_sub(started.elapsed());
        let code = output.recv_timeout(remaining);
        let killed = !matches!(&code, Ok(Ok(code)) if code.len() as u64 <= max_output);
        if killed {
            let _ = child.kill();
        }
        let status = child.wait();
        let stderr = errors.join().unwrap_or_default();
        let time = CompileLimit::Time;
        let ms = limits.get(time);
        match (code, status) {
            (Err(mpsc::RecvTimeoutError::Timeout), _) => Err(WorkerError::Stopped(time, ms)),
            (Ok(Ok(code)), Ok(status)) if status.success() && !killed => Ok(code),
            (Ok(Ok(_)), _) if killed => Err(WorkerError::Failed(format!(
                "the compile worker wrote more than {max_output} bytes"
            ))),
            (_, Ok(status)) => Err(classify(status, stderr, limits)),
            (_, Err(e)) => Err(WorkerError::Failed(format!(
                "cannot wait for the compile worker: {e}"
            ))),
        }
    })
}

/// What a worker's exit says.
fn classify(status: std::process::ExitStatus, stderr: String, limits: &CompileLimits) -> WorkerError {
    if status.code() == Some(i32::from(EXIT_INVALID)) {
        return WorkerError::Invalid(stderr);
    }
    // Rust aborts on a failed allocation with this line, which is how a compile meets
    // RLIMIT_DATA.
    if stderr.contains("memory allocation of") || stderr.contains("failed to allocate") {
        return WorkerError::Stopped(CompileLimit::Memory, limits.memory_bytes);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one.
        const SIGXCPU: i32 = 24;
        if let Some(SIGXCPU) = status.signal() {
            return WorkerError::Stopped(CompileLimit::Time, limits.get(CompileLimit::Time));
        }
    }
    let last = stderr.lines().last().unwrap_or("no output");
    WorkerError::Failed(format!("the compile worker failed ({status}): {last}"))
}
