//! Command-line parsing and the commands: `check`, `call`, `new` and `run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use corral::{Host, Limits, Message, PluginOptions};

/// Corral: run WebAssembly component plugins in sandboxes with hard limits.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that FILE is a plugin fitting the corral:plugin/filter world; print its
    /// exports and imports.
    Check {
        /// The plugin's .wasm component.
        file: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Load FILE into a sandbox and call it: each --message in order, each --invoke,
    /// then --timer.
    /// Emitted messages go to stdout as JSON lines, the plugin's logs to stderr.
    Call(CallArgs),
    /// Start a plugin project: write NAME/ with the plugin, the WIT it builds against,
    /// a sidecar NAME.toml and a README with the commands to build and deploy it.
    New {
        /// The plugin's name: lowercase letters, digits and hyphens.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = crate::new::Lang::Rust)]
        lang: crate::new::Lang,
        /// What to write: a filter, or a decoder fed by an input.
        #[arg(long, value_enum, default_value_t = crate::new::Kind::Filter)]
        kind: crate::new::Kind,
        /// Where to create NAME/.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Run the daemon: watch DIR for plugins, route JSON-line messages from stdin and
    /// the admin API to them, run their timers, write what they emit as JSON lines.
    Run(RunArgs),
    /// Put a component (and its sidecar) into a cluster's object store: every daemon of
    /// the cluster swaps it in, with the watch directory's checks (docs/cluster.md).
    Deploy {
        /// The plugin's NAME.wasm component.
        file: PathBuf,
        /// Its sidecar, deployed with it as NAME.toml.
        #[arg(long, value_name = "FILE")]
        sidecar: Option<PathBuf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List a cluster's live daemons: the partitions each owns, its plugins and their
    /// versions, its lag, lease renewals and takeovers.
    Status {
        /// Print the daemons' heartbeats as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Compile a component read on stdin for the host that started this process (the
    /// compile worker: see `corral::CompileWorker`).
    #[command(hide = true)]
    CompileWorker,
}

/// The arguments that make `corral` a compile worker.
const COMPILE_WORKER: &str = "compile-worker";

/// How compiles are bounded: `--compile-limit KEY=VALUE`, and the worker.
#[derive(Debug, Args)]
struct CompileArgs {
    /// Change one compile limit, e.g. `max-function-size=4MiB` or `compile-time=300s`
    /// (repeatable; `corral` prints the keys when given a wrong one). See
    /// docs/security.md, "Compiles".
    #[arg(long = "compile-limit", value_name = "KEY=VALUE")]
    compile_limits: Vec<String>,
}

impl CompileArgs {
    fn limits(&self) -> anyhow::Result<corral::CompileLimits> {
        let mut limits = corral::CompileLimits::default();
        for pair in &self.compile_limits {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("--compile-limit `{pair}`: expected KEY=VALUE"))?;
            limits.set(key.trim(), value.trim()).map_err(anyhow::Error::msg)?;
        }
        Ok(limits)
    }

    /// This program, run as a compile worker.
    fn worker() -> anyhow::Result<corral::CompileWorker> {
        let program = std::env::current_exe().context("cannot find the `corral` program to compile in")?;
        Ok(corral::CompileWorker::new(program).arg(COMPILE_WORKER))
    }
}

/// Where a cluster is: the NATS server and the stream.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// The NATS server of the cluster (JetStream enabled), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URL", required = true)]
    nats: Option<String>,
    /// The input stream; the output stream and the buckets are named after it.
    #[arg(long, value_name = "NAME", default_value = crate::ClusterConfig::DEFAULT_STREAM)]
    stream: String,
    /// How long a lease lasts without renewal (e.g. 3s): a dead daemon's partitions are
    /// taken over after about this long.
    #[arg(long, value_name = "TIME", default_value = "3s", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
}

/// How a cluster daemon joins: `corral run DIR --nats URL ...`.
#[derive(Debug, Args)]
struct RunClusterArgs {
    /// Consume the JetStream stream of this NATS server instead of the local log, and
    /// share its partitions with the other daemons of the cluster (docs/cluster.md).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// The input stream; the output stream and the buckets are named after it.
    #[arg(long, value_name = "NAME", default_value = crate::ClusterConfig::DEFAULT_STREAM)]
    stream: String,
    /// Input subjects are PREFIX.<partition>.
    #[arg(long, value_name = "PREFIX", default_value = crate::ClusterConfig::DEFAULT_SUBJECT_PREFIX)]
    subject_prefix: String,
    /// Emitted messages go to PREFIX.<plugin>.
    #[arg(long, value_name = "PREFIX", default_value = crate::ClusterConfig::DEFAULT_OUTPUT_PREFIX)]
    output_prefix: String,
    /// The number of partitions; every daemon of the cluster must agree.
    #[arg(long, value_name = "N", default_value_t = crate::ClusterConfig::DEFAULT_PARTITIONS)]
    partitions: u32,
    /// The field whose value picks a message's partition (its type when absent).
    #[arg(long, value_name = "FIELD")]
    partition_key: Option<String>,
    /// How long a lease lasts without renewal.
    #[arg(long, value_name = "TIME", default_value = "3s", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
    /// This daemon's name in the cluster (default: host name and process id).
    #[arg(long, value_name = "ID")]
    daemon_id: Option<String>,
}

impl ClusterArgs {
    fn config(&self) -> crate::ClusterConfig {
        crate::ClusterConfig {
            url: self.nats.clone().unwrap_or_default(),
            stream: self.stream.clone(),
            subject_prefix: crate::ClusterConfig::DEFAULT_SUBJECT_PREFIX.into(),
            output_prefix: crate::ClusterConfig::DEFAULT_OUTPUT_PREFIX.into(),
            partitions: crate::ClusterConfig::DEFAULT_PARTITIONS,
            partition_key: None,
            lease_ttl: self.lease_ttl,
            id: String::new(),
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The watch directory: `name.wasm` plugins with optional `name.toml` sidecars.
    dir: PathBuf,
    /// Where the store and the compile cache live.
    #[arg(long, value_name = "DIR", default_value = "corral-data")]
    data: PathBuf,
    /// The admin API's address; anything but loopback needs --token.
    #[arg(long, value_name = "ADDR", default_value = crate::DaemonConfig::DEFAULT_ADMIN)]
    admin: std::net::SocketAddr,
    /// The bearer token the admin API requires (`Authorization: Bearer TOKEN`).
    #[arg(long, value_name = "TOKEN", env = "CORRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write emitted messages to FILE (appended) instead of stdout.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The most unread bytes the message log under --data holds: at the bound, intake
    /// waits (stdin is not read, POST /messages answers 503) until the slowest plugin
    /// catches up. Bytes, or with a KiB, MiB or GiB suffix.
    #[arg(long, value_name = "SIZE", default_value = crate::DaemonConfig::DEFAULT_MAX_LOG, value_parser = corral::parse_size)]
    max_log: u64,
    /// How often appended messages are made durable (group commit), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    commit_interval_ms: u64,
    /// How often each plugin commits its checkpoint (position, state, store writes), in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Commit the logs to the page cache without fsync: a crash of the daemon loses
    /// nothing, a crash of the machine may lose the last commits.
    #[arg(long)]
    no_fsync: bool,
    /// Do not read messages from stdin.
    #[arg(long)]
    no_stdin: bool,
    /// The largest .wasm file loaded: bytes, or with a KiB, MiB or GiB suffix.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = corral::parse_size)]
    max_file_size: u64,
    /// Follow .wasm and .toml symlinks that point outside DIR (refused by default).
    #[arg(long)]
    allow_symlinks: bool,
    /// Take sandboxes from a pool of N, set up once, instead of allocating each on
    /// demand: a plugin restarts after a trap in about half the time, but no sandbox
    /// may hold more than 256 MiB and at most N are live (a swap holds two for a moment).
    #[arg(long, value_name = "N")]
    pool: Option<u32>,
    /// Compile every new plugin with Cranelift before it serves, instead of serving it
    /// from baseline (Winch) code within milliseconds while Cranelift compiles behind.
    #[arg(long)]
    no_baseline: bool,
    /// Allow a sidecar to grant a directory that covers `/`, the watch directory, the
    /// data directory or the compile cache (refused by default: such a grant hands a
    /// plugin its own code, or native code the host runs).
    #[arg(long)]
    allow_broad_grants: bool,
    #[command(flatten)]
    compile: CompileArgs,
    /// On SIGINT or SIGTERM, how long to wait for plugins to finish their queued
    /// messages and save their state before a stuck one is abandoned (e.g. `10s`,
    /// `500ms`).
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: std::time::Duration,
    #[command(flatten)]
    cluster: RunClusterArgs,
}

/// A duration: a number with `ms`, `s` or `m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected e.g. 500ms, 10s or 2m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" | "" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!("unknown time unit `{other}` in `{text}`: use ms, s or m")),
    }
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The plugin's .wasm component.
    file: PathBuf,
    /// A message as JSON, passed to process-message; repeat for several calls.
    #[arg(long = "message", value_name = "JSON")]
    messages: Vec<String>,
    /// Call the export NAME with WAVE-encoded arguments, e.g. `add(1, 2)` or
    /// `describe({name: "x", tags: ["a"]})`, and print its results in WAVE, one call per
    /// line; repeatable. An export of an interface is `iface#name`.
    #[arg(long = "invoke", value_name = "NAME(ARGS)")]
    invokes: Vec<String>,
    /// Call timer-event after the messages, with NOW_NS (default: now).
    #[arg(long, value_name = "NOW_NS", num_args = 0..=1, default_missing_value = "now")]
    timer: Option<String>,
    /// A config value the plugin reads through its config import; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Print the plugin's stats to stderr at the end (fuel, memory, output, durations),
    /// to choose its limits.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Debug, Args)]
struct CacheArgs {
    /// Compile the component afresh instead of using, and filling, the compile cache in
    /// $XDG_CACHE_HOME/corral (or ~/.cache/corral), which makes a large Python or
    /// JavaScript plugin load in a fraction of a second after the first time.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    compile: CompileArgs,
}

impl CacheArgs {
    /// A host with the user's compile cache, unless --no-cache or there is no home, and
    /// compiles bounded in a worker.
    fn host(&self) -> anyhow::Result<Host> {
        let dir = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        let mut host = Host::builder()
            .compile_limits(self.compile.limits()?)
            .compile_worker(CompileArgs::worker()?);
        if let Some(dir) = dir.filter(|_| !self.no_cache) {
            host = host.cache_dir(dir.join("corral"));
        }
        Ok(host.build()?)
    }
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Fuel per call (about one unit per WebAssembly instruction).
    #[arg(long, default_value_t = Limits::DEFAULT_FUEL)]
    fuel: u64,
    /// Memory cap for the sandbox: bytes, or with a KiB, MiB or GiB suffix.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = corral::parse_size)]
    memory: u64,
    /// Wall-clock deadline per call, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = Limits::DEFAULT_DEADLINE.as_millis() as u64)]
    deadline_ms: u64,
    /// Output cap per call (logs, stdout, stderr and emitted messages): bytes, or with
    /// a KiB, MiB or GiB suffix.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = corral::parse_size)]
    output: u64,
    /// Messages one call may emit.
    #[arg(long, default_value_t = Limits::DEFAULT_EMITS)]
    emits: u32,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            memory_bytes: self.memory,
            deadline: Duration::from_millis(self.deadline_ms),
            output_bytes: self.output,
            emits: self.emits,
            ..Limits::default()
        }
    }
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::CompileWorker = cli.command {
        // Nothing but the compiled code may reach stdout, and no logging is set up.
        return Ok(corral::compile_worker_main());
    }
    // Guest lines at info and up; the library's own "call failed" warnings would repeat
    // the error `call` prints last, so only its errors show by default.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORRAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,corral::plugin=error")),
        )
        .without_time()
        .with_target(false)
        .init();
    match cli.command {
        Command::Check { file, cache } => check(file, &cache),
        Command::Call(args) => call(args),
        Command::New {
            name,
            lang,
            kind,
            dir,
        } => {
            let (project, files) = crate::new::create(&name, lang, kind, &dir)?;
            for file in files {
                println!("{}", file.display());
            }
            eprintln!(
                "created `{}`: its README.md says how to build it and drop it into a watch directory",
                project.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CompileWorker => Ok(corral::compile_worker_main()),
        Command::Deploy {
            file,
            sidecar,
            cluster,
        } => {
            println!(
                "{}",
                crate::cluster::ops::deploy(&cluster.config(), &file, sidecar.as_deref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json, cluster } => {
            let beats = crate::cluster::ops::status(&cluster.config())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&beats)?);
            } else {
                print!("{}", crate::cluster::ops::status_text(&beats));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let cluster = args.cluster.nats.clone().map(|url| crate::ClusterConfig {
                url,
                stream: args.cluster.stream.clone(),
                subject_prefix: args.cluster.subject_prefix.clone(),
                output_prefix: args.cluster.output_prefix.clone(),
                partitions: args.cluster.partitions,
                partition_key: args.cluster.partition_key.clone(),
                lease_ttl: args.cluster.lease_ttl,
                id: args
                    .cluster
                    .daemon_id
                    .clone()
                    .unwrap_or_else(crate::ClusterConfig::default_id),
            });
            let config = crate::DaemonConfig {
                dir: args.dir,
                data_dir: args.data,
                admin: args.admin,
                token: args.token,
                output: args
                    .output
                    .map_or(crate::OutputTarget::Stdout, crate::OutputTarget::File),
                pipeline: crate::PipelineOptions {
                    log: crate::LogOptions {
                        max_bytes: args.max_log,
                        // Small bounds get small segments, so read ones can go.
                        segment_bytes: (args.max_log / 4).clamp(64 << 10, 16 << 20),
                        commit_interval: std::time::Duration::from_millis(args.commit_interval_ms.max(1)),
                        fsync: !args.no_fsync,
                    },
                    checkpoint_interval: std::time::Duration::from_millis(args.checkpoint_interval_ms.max(1)),
                },
                stdin: !args.no_stdin,
                watch: corral::WatchOptions {
                    max_file_bytes: args.max_file_size,
                    allow_symlinks_outside: args.allow_symlinks,
                    ..corral::WatchOptions::default()
                },
                pool: args.pool,
                baseline: !args.no_baseline,
                shutdown_timeout: args.shutdown_timeout,
                compile_limits: args.compile.limits()?,
                compile_worker: Some(CompileArgs::worker()?),
                allow_broad_grants: args.allow_broad_grants,
            };
            match cluster {
                Some(cluster) => crate::cluster::run(config, cluster)?,
                None => crate::run(config)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(file: PathBuf, cache: &CacheArgs) -> anyhow::Result<ExitCode> {
    let host = cache.host()?;
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let report = host.check(name, &bytes)?;
    println!("`{}` fits {}", file.display(), report.world);
    println!("exports:");
    for name in &report.exports {
        println!("  {name}");
    }
    println!("imports:");
    for name in &report.imports {
        println!("  {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    if args.messages.is_empty() && args.timer.is_none() && args.invokes.is_empty() {
        bail!(
            "nothing to call: give --message JSON (repeatable), --invoke 'NAME(ARGS)' (repeatable), --timer, or several"
        );
    }
    let messages = args
        .messages
        .iter()
        .enumerate()
        .map(|(i, json)| {
            Message::from_json(json).with_context(|| format!("--message #{}: invalid message JSON", i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let timer = match args.timer.as_deref() {
        None => None,
        Some("now") => Some(corral::now_ns()),
        Some(ns) => Some(
            ns.parse::<i64>()
                .with_context(|| format!("--timer `{ns}`: expected nanoseconds since the Unix epoch"))?,
        ),
    };
    let mut options = PluginOptions::with_limits(args.limits.limits());
    for pair in &args.config {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--config `{pair}`: expected KEY=VALUE"))?;
        options = options.config(key, value);
    }

    let host = args.cache.host()?;
    let plugin = host.load_file(&args.file, options)?;
    let print = |outcome: corral::CallOutcome| {
        for message in outcome.emitted {
            println!("{}", message.to_json());
        }
    };
    let result = (|| {
        for message in &messages {
            print(plugin.process_message(message)?);
        }
        for invoke in &args.invokes {
            let (results, outcome) = crate::invoke::invoke(&plugin, invoke)?;
            print(outcome);
            println!("{results}");
        }
        if let Some(now_ns) = timer {
            print(plugin.timer_event(now_ns)?);
        }
        anyhow::Ok(())
    })();
    if args.stats {
        print_stats(&plugin.stats());
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// The stats an author sizes limits by, one per line on stderr.
fn print_stats(stats: &corral::Stats) {
    let entry = |name: &str, e: &corral::EntryStats| {
        if e.calls > 0 {
            eprintln!(
                "stats: {name}: {} calls, {} failed, mean {:?}, max {:?}",
                e.calls,
                e.failures,
                e.average_duration(),
                e.max_duration
            );
        }
    };
    entry("process-message", &stats.process_message);
    entry("timer-event", &stats.timer_event);
    entry("other exports", &stats.exports);
    eprintln!("stats: most fuel one call used: {}", stats.max_fuel_used);
    eprintln!(
        "stats: memory: {} bytes now, {} at most",
        stats.memory_bytes, stats.peak_memory_bytes
    );
    eprintln!(
        "stats: most output one call wrote: {} bytes",
        stats.max_output_bytes
    );
    eprintln!("stats: instances: {}", stats.instances);
}
