//! Bounded compiles: what a component may hold before it is compiled, and how long and
//! how much memory compiling it may take.
//!
//! Compiling is the one thing a host does with a plugin before any sandbox limit
//! applies, and its cost is not linear in the file: Cranelift's register allocator
//! and optimiser grow faster than the function they work on, so a valid 5 MiB
//! component of the right world (one huge function) took 15 s and 2.3 GiB to compile,
//! and a slightly larger one was still compiling after two minutes. Two bounds close
//! that, and both hold for `corral check` as much as for the watch directory:
//!
//! 1. **What a component may hold** ([`CompileLimits`]), counted by `wasmparser` before
//!    anything is compiled, in one linear pass over the bytes (tens of milliseconds for
//!    the 18 MB Python guest): the total code, the number of functions, the largest
//!    function body, locals and block nesting per function, data and element segments,
//!    core modules and components, instances and types. A component over any of them is
//!    refused with [`LoadError::TooCostly`], naming the limit and the value. These apply
//!    in every host.
//! 2. **The compile itself**: with a [`CompileWorker`], each compile (Cranelift's, and
//!    Winch's for the baseline tier) runs in a child process — the embedding program
//!    started again with an argument of its choosing, which calls
//!    [`compile_worker_main`] — under `RLIMIT_DATA` ([`CompileLimits::memory_bytes`]),
//!    `RLIMIT_CPU` and a wall-clock timeout ([`CompileLimits::time`]). The worker reads
//!    the component on stdin and writes wasmtime's precompiled bytes on stdout; the host
//!    loads them into its own engine of identical settings (the `engine` module builds
//!    both) and keeps them in the disk cache, so a cache hit compiles nothing. A compile
//!    past its bound is killed and refused with [`LoadError::CompileStopped`]; the
//!    host's own memory never holds the compiler's working set. `corral run`, `check` and
//!    `call` turn the worker on; a library host compiles in-process unless given one,
//!    and then only the first bound holds.
//!
//! `RLIMIT_DATA`, not `RLIMIT_AS`: wasmtime reserves address space it never touches
//! (guard regions, the pooling allocator's slots), which `RLIMIT_AS` would count; the
//! kernel counts the heap and every private writable mapping in `RLIMIT_DATA`, which
//! is where a compiler's memory goes.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{self, EngineSettings};

/// Limits on what a component may hold before it is compiled, and on the compile.
///
/// The defaults are far above every real guest measured here (the 18 MB Python and
/// 12 MB JavaScript components included; see docs/security.md, "Compiles") and below
/// what makes a compile bomb. Each can be set by its key with [`CompileLimits::set`]
/// (`--compile-limit KEY=VALUE` on the command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileLimits {
    /// Bytes of function bodies in all core modules together (`max-code-size`).
    pub max_code_bytes: u64,
    /// Functions with a body, plus canonical-ABI functions, in all core modules and
    /// components together (`max-functions`).
    pub max_functions: u64,
    /// Bytes of the largest function body (`max-function-size`).
    pub max_function_bytes: u64,
    /// Locals of one function, parameters excluded (`max-locals`).
    pub max_locals: u64,
    /// Depth of nested blocks, loops and ifs in one function (`max-nesting`).
    pub max_nesting: u64,
    /// Bytes of data segments in all core modules together (`max-data-size`).
    pub max_data_bytes: u64,
    /// Items of element segments in all core modules together (`max-elements`).
    pub max_elements: u64,
    /// Core modules, nested ones included (`max-modules`).
    pub max_modules: u64,
    /// Components nested inside the plugin's component (`max-components`;
    /// componentize-py nests two, componentize-js one). Set it to 0 to refuse composed
    /// components, whose calls between components go through the adapters of
    /// GHSA-6fr9-xmw9-5352 (docs/security.md).
    pub max_components: u64,
    /// Core and component instances (`max-instances`).
    pub max_instances: u64,
    /// Core and component types (`max-types`).
    pub max_types: u64,
    /// Wall time one compile may take, with a [`CompileWorker`] (`compile-time`, in
    /// milliseconds or with an `s` suffix).
    pub time: Duration,
    /// Memory one compile may use (`RLIMIT_DATA` of the worker, the component's own
    /// bytes included), with a [`CompileWorker`] (`compile-memory`).
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            max_code_bytes: 64 << 20,
            max_functions: 200_000,
            max_function_bytes: 2 << 20,
            max_locals: 20_000,
            max_nesting: 5_000,
            max_data_bytes: 64 << 20,
            max_elements: 1_000_000,
            max_modules: 100,
            max_components: 16,
            max_instances: 1_000,
            max_types: 100_000,
            time: Duration::from_secs(120),
            memory_bytes: 4 << 30,
        }
    }
}

/// One of the [`CompileLimits`], as errors and flags name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompileLimit {
    /// [`CompileLimits::max_code_bytes`].
    CodeSize,
    /// [`CompileLimits::max_functions`].
    Functions,
    /// [`CompileLimits::max_function_bytes`].
    FunctionSize,
    /// [`CompileLimits::max_locals`].
    Locals,
    /// [`CompileLimits::max_nesting`].
    Nesting,
    /// [`CompileLimits::max_data_bytes`].
    DataSize,
    /// [`CompileLimits::max_elements`].
    Elements,
    /// [`CompileLimits::max_modules`].
    Modules,
    /// [`CompileLimits::max_components`].
    Components,
    /// [`CompileLimits::max_instances`].
    Instances,
    /// [`CompileLimits::max_types`].
    Types,
    /// [`CompileLimits::time`].
    Time,
    /// [`CompileLimits::memory_bytes`].
    Memory,
}

impl CompileLimit {
    /// Every limit, in the order of [`CompileLimits`]' fields.
    pub const ALL: [CompileLimit; 13] = [
        CompileLimit::CodeSize,
        CompileLimit::Functions,
        CompileLimit::FunctionSize,
        CompileLimit::Locals,
        CompileLimit::Nesting,
        CompileLimit::DataSize,
        CompileLimit::Elements,
        CompileLimit::Modules,
        CompileLimit::Components,
        CompileLimit::Instances,
        CompileLimit::Types,
        CompileLimit::Time,
        CompileLimit::Memory,
    ];

    /// The key that names it in errors and in `--compile-limit KEY=VALUE`.
    pub fn key(self) -> &'static str {
        match self {
            CompileLimit::CodeSize => "max-code-size",
            CompileLimit::Functions => "max-functions",
            CompileLimit::FunctionSize => "max-function-size",
            CompileLimit::Locals => "max-locals",
            CompileLimit::Nesting => "max-nesting",
            CompileLimit::DataSize => "max-data-size",
            CompileLimit::Elements => "max-elements",
            CompileLimit::Modules => "max-modules",
            CompileLimit::Components => "max-components",
            CompileLimit::Instances => "max-instances",
            CompileLimit::Types => "max-types",
            CompileLimit::Time => "compile-time",
            CompileLimit::Memory => "compile-memory",
        }
    }

    /// What a component holds, in words: "its largest function has 2000000 bytes of
    /// code".
    pub(crate) fn describe(self, value: u64) -> String {
        match self {
            CompileLimit::CodeSize => format!("its functions have {value} bytes of code in all"),
            CompileLimit::Functions => format!("it has {value} functions"),
            CompileLimit::FunctionSize => format!("its largest function has {value} bytes of code"),
            CompileLimit::Locals => format!("one of its functions has {value} locals"),
            CompileLimit::Nesting => format!("one of its functions nests blocks {value} deep"),
            CompileLimit::DataSize => format!("its data segments hold {value} bytes"),
            CompileLimit::Elements => format!("its element segments hold {value} items"),
            CompileLimit::Modules => format!("it holds {value} core modules"),
            CompileLimit::Components => format!("it holds {value} nested components"),
            CompileLimit::Instances => format!("it makes {value} instances"),
            CompileLimit::Types => format!("it defines {value} types"),
            CompileLimit::Time => format!("its compile ran for more than {value} ms"),
            CompileLimit::Memory => format!("its compile needed more than {value} bytes of memory"),
        }
    }
}

impl CompileLimit {
    /// What to do about a component over this limit.
    pub(crate) fn advice(self) -> String {
        let key = self.key();
        match self {
            CompileLimit::Components => format!(
                "plugins are single components (compose them before building, or raise \
                 `{key}` once wasmtime is past 48.0.8: see docs/security.md)"
            ),
            _ => format!(
                "rebuild it smaller (a release build, optimised for size), or raise the limit \
                 if you trust it (`--compile-limit {key}=N`, `CompileLimits`)"
            ),
        }
    }
}

impl std::fmt::Display for CompileLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl CompileLimits {
    /// The value of one limit (the time in milliseconds).
    pub fn get(&self, limit: CompileLimit) -> u64 {
        match limit {
            CompileLimit::CodeSize => self.max_code_bytes,
            CompileLimit::Functions => self.max_functions,
            CompileLimit::FunctionSize => self.max_function_bytes,
            CompileLimit::Locals => self.max_locals,
            CompileLimit::Nesting => self.max_nesting,
            CompileLimit::DataSize => self.max_data_bytes,
            CompileLimit::Elements => self.max_elements,
            CompileLimit::Modules => self.max_modules,
            CompileLimit::Components => self.max_components,
            CompileLimit::Instances => self.max_instances,
            CompileLimit::Types => self.max_types,
            CompileLimit::Time => u64::try_from(self.time.as_millis()).unwrap_or(u64::MAX),
            CompileLimit::Memory => self.memory_bytes,
        }
    }

    /// Sets one limit from its key and a value as the command line spells it: a count,
    /// a size (`2MiB`) for sizes and memory, milliseconds or seconds (`90s`) for time.
    ///
    /// # Errors
    ///
    /// The reason, naming the key, when the key is unknown or the value does not parse.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let limit = CompileLimit::ALL
            .into_iter()
            .find(|l| l.key() == key)
            .ok_or_else(|| {
                let keys: Vec<_> = CompileLimit::ALL.iter().map(|l| l.key()).collect();
                format!(
                    "unknown compile limit `{key}`: expected one of {}",
                    keys.join(", ")
                )
            })?;
        let bad = |why: String| format!("compile limit `{key}` = `{value}`: {why}");
        let n = match limit {
            CompileLimit::Time => {
                let (digits, scale) = match value.strip_suffix("ms") {
                    Some(ms) => (ms, 1),
                    None => match value.strip_suffix('s') {
                        Some(s) => (s, 1000),
                        None => (value, 1),
                    },
                };
                digits
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| bad(e.to_string()))?
                    .saturating_mul(scale)
            }
            CompileLimit::CodeSize
            | CompileLimit::FunctionSize
            | CompileLimit::DataSize
            | CompileLimit::Memory => crate::limits::parse_size(value).map_err(bad)?,
            _ => value
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| bad(e.to_string()))?,
        };
        if n == 0 && limit != CompileLimit::Components {
            return Err(bad("a limit must be above zero".into()));
        }
        let field = match limit {
            CompileLimit::CodeSize => &mut self.max_code_bytes,
            CompileLimit::Functions => &mut self.max_functions,
            CompileLimit::FunctionSize => &mut self.max_function_bytes,
            CompileLimit::Locals => &mut self.max_locals,
            CompileLimit::Nesting => &mut self.max_nesting,
            CompileLimit::DataSize => &mut self.max_data_bytes,
            CompileLimit::Elements => &mut self.max_elements,
            CompileLimit::Modules => &mut self.max_modules,
            CompileLimit::Components => &mut self.max_components,
            CompileLimit::Instances => &mut self.max_instances,
            CompileLimit::Types => &mut self.max_types,
            CompileLimit::Time => {
                self.time = Duration::from_millis(n);
                return Ok(());
            }
            CompileLimit::Memory => &mut self.memory_bytes,
        };
        *field = n;
        Ok(())
    }

    /// The first limit `cost` breaks, with its value.
    pub fn exceeded(&self, cost: &ComponentCost) -> Option<(CompileLimit, u64)> {
        CompileLimit::ALL
            .into_iter()
            .filter_map(|limit| Some((limit, cost.get(limit)?)))
            .find(|&(limit, value)| value > self.get(limit))
    }
}

/// What a component holds, as the [`CompileLimits`] count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComponentCost {
    /// Bytes of function bodies in all core modules.
    pub code_bytes: u64,
    /// Functions with a body, plus canonical-ABI functions.
    pub functions: u64,
    /// Bytes of the largest function body.
    pub largest_function: u64,
    /// Locals of the function with the most.
    pub most_locals: u64,
    /// The deepest nesting of blocks in one function.
    pub deepest_nesting: u64,
    /// Bytes of data segments.
    pub data_bytes: u64,
    /// Items of element segments.
    pub elements: u64,
    /// Core modules, nested ones included.
    pub modules: u64,
    /// Components nested in the outer one.
    pub components: u64,
    /// Core and component instances.
    pub instances: u64,
    /// Core and component types.
    pub types: u64,
}

impl ComponentCost {
    /// Counts what `bytes` hold, in one pass and without validating them (wasmtime
    /// validates what passes). Nested modules and components are counted in.
    ///
    /// # Errors
    ///
    /// wasmparser's error when the bytes cannot be parsed.
    pub fn measure(bytes: &[u8]) -> Result<ComponentCost, wasmparser::BinaryReaderError> {
        use wasmparser::{ElementItems, Operator, Payload};
        let mut cost = ComponentCost::default();
        let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
        let mut seen_outer = false;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::Version { encoding, .. } => match encoding {
                    wasmparser::Encoding::Module => add(&mut cost.modules, 1),
                    // The first is the plugin's own component.
                    wasmparser::Encoding::Component if seen_outer => add(&mut cost.components, 1),
                    wasmparser::Encoding::Component => seen_outer = true,
                },
                Payload::CodeSectionEntry(body) => {
                    let size = body.range().len() as u64;
                    add(&mut cost.code_bytes, size);
                    add(&mut cost.functions, 1);
                    cost.largest_function = cost.largest_function.max(size);
                    let mut locals = 0u64;
                    for entry in body.get_locals_reader()? {
                        add(&mut locals, u64::from(entry?.0));
                    }
                    cost.most_locals = cost.most_locals.max(locals);
                    let (mut depth, mut deepest) = (0u64, 0u64);
                    let mut operators = body.get_operators_reader()?;
                    while !operators.eof() {
                        match operators.read()? {
                            Operator::Block { .. }
                            | Operator::Loop { .. }
                            | Operator::If { .. }
                            | Operator::TryTable { .. }
                            | Operator::Try { .. } => {
                                depth += 1;
                                deepest = deepest.max(depth);
                            }
                            Operator::End => depth = depth.saturating_sub(1),
                            _ => {}
                        }
                    }
                    cost.deepest_nesting = cost.deepest_nesting.max(deepest);
                }
                Payload::DataSection(reader) => {
                    for data in reader {
                        add(&mut cost.data_bytes, data?.data.len() as u64);
                    }
                }
                Payload::ElementSection(reader) => {
                    for element in reader {
                        let n = match element?.items {
                            ElementItems::Functions(f) => f.count(),
                            ElementItems::Expressions(_, e) => e.count(),
                        };
                        add(&mut cost.elements, u64::from(n));
                    }
                }
                Payload::TypeSection(reader) => {
                    for group in reader {
                        add(&mut cost.types, group?.types().count() as u64);
                    }
                }
                Payload::CoreTypeSection(reader) => add(&mut cost.types, u64::from(reader.count())),
                Payload::ComponentTypeSection(reader) => add(&mut cost.types, u64::from(reader.count())),
                Payload::InstanceSection(reader) => add(&mut cost.instances, u64::from(reader.count())),
                Payload::ComponentInstanceSection(reader) => {
                    add(&mut cost.instances, u64::from(reader.count()));
                }
                Payload::ComponentCanonicalSection(reader) => {
                    add(&mut cost.functions, u64::from(reader.count()));
                }
                _ => {}
            }
        }
        Ok(cost)
    }

    /// The figure a static limit is checked against; `None` for the compile's bounds.
    fn get(&self, limit: CompileLimit) -> Option<u64> {
        Some(match limit {
            CompileLimit::CodeSize => self.code_bytes,
            CompileLimit::Functions => self.functions,
            CompileLimit::FunctionSize => self.largest_function,
            CompileLimit::Locals => self.most_locals,
            CompileLimit::Nesting => self.deepest_nesting,
            CompileLimit::DataSize => self.data_bytes,
            CompileLimit::Elements => self.elements,
            CompileLimit::Modules => self.modules,
            CompileLimit::Components => self.components,
            CompileLimit::Instances => self.instances,
            CompileLimit::Types => self.types,
            CompileLimit::Time | CompileLimit::Memory => return None,
        })
    }
}

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
