//! `corral new`: a ready-to-build plugin project in Rust, Python or JavaScript.
//!
//! The WIT it writes is the one this binary was built with, so a project and the host
//! that made it always agree; the sidecar's commented defaults come from
//! [`corral::Limits`], so they cannot drift either.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use corral::Limits;

/// The contract, as the host links it.
const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen, built by cargo for wasm32-wasip2.
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript, built by componentize-js.
    Js,
}

/// What a new plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// A filter: messages in, messages out (the `filter` world).
    Filter,
    /// A decoder: raw records from an input (a tailed file, a syslog socket) in,
    /// messages out (the `decoder` world).
    Decoder,
}

/// The source file a decoder's project has in place of a filter's.
fn decoder_source(lang: Lang) -> (&'static str, &'static str) {
    match lang {
        Lang::Rust => ("src/lib.rs", include_str!("../templates/decoder/rust/src/lib.rs")),
        Lang::Python => ("app.py", include_str!("../templates/decoder/python/app.py")),
        Lang::Js => ("plugin.js", include_str!("../templates/decoder/js/plugin.js")),
    }
}

/// The files of each language's project: path, then contents with `{{name}}` (the
/// plugin's name) and `{{file}}` (the name as cargo spells its output file) to fill in.
fn templates(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            (
                ".cargo/config.toml",
                include_str!("../templates/rust/cargo-config.toml"),
            ),
            ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
            ("README.md", include_str!("../templates/rust/README.md")),
            (".gitignore", "/target\n"),
        ],
        Lang::Python => &[
            ("app.py", include_str!("../templates/python/app.py")),
            (
                "requirements.txt",
                include_str!("../templates/python/requirements.txt"),
            ),
            ("README.md", include_str!("../templates/python/README.md")),
            (".gitignore", "/.venv\n__pycache__/\n/*.wasm\n"),
        ],
        Lang::Js => &[
            ("plugin.js", include_str!("../templates/js/plugin.js")),
            ("package.json", include_str!("../templates/js/package.json")),
            ("README.md", include_str!("../templates/js/README.md")),
            (".gitignore", "/node_modules\n/*.wasm\n"),
        ],
    }
}

/// Writes the project for plugin `name` in `lang` into `parent/name`, and returns that
/// directory and the files written.
pub fn create(name: &str, lang: Lang, kind: Kind, parent: &Path) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() && fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "`{}` already exists and is not empty: pick another name or --dir, or remove it",
            dir.display()
        );
    }
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{file}}", &name.replace('-', "_"))
    };
    let (source, decoder) = decoder_source(lang);
    let mut files: Vec<(PathBuf, String)> = templates(lang)
        .iter()
        .map(|(path, text)| {
            let text = match kind {
                Kind::Decoder if *path == source => fill(decoder),
                // The build commands name the world.
                Kind::Decoder => fill(text)
                    .replace("--world filter", "--world decoder")
                    .replace("--world-name filter", "--world-name decoder"),
                Kind::Filter => fill(text),
            };
            (PathBuf::from(path), text)
        })
        .collect();
    files.push((PathBuf::from("wit/plugin.wit"), WIT.to_owned()));
    let mut sidecar = sidecar(name, lang);
    if kind == Kind::Decoder {
        sidecar = sidecar.replace(FILTER_MATCHER, &decoder_input(name));
    }
    files.push((PathBuf::from(format!("{name}.toml")), sidecar));

    let mut written = Vec::new();
    for (path, text) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap())
            .with_context(|| format!("cannot create `{}`", path.parent().unwrap().display()))?;
        fs::write(&path, text).with_context(|| format!("cannot write `{}`", path.display()))?;
        written.push(path);
    }
    Ok((dir, written))
}

/// Plugin names that are also valid crate, npm package and file names.
fn check_name(name: &str) -> anyhow::Result<()> {
    let fits = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !fits {
        bail!(
            "`{name}` cannot name a plugin project: use 1 to 64 lowercase letters, digits \
             and inner hyphens, starting with a letter (like `nginx-status`)"
        );
    }
    Ok(())
}

/// The filter's `[matcher]` in the sidecar, which a decoder's has an `[input]` for.
const FILTER_MATCHER: &str = r#"# Which messages reach the plugin; without a [matcher], none do (as in Heka).
[matcher]
all = true
# type = ["nginx.access", "apache.*"]   # one name or a list; `prefix*` matches a prefix
# logger = "web-*"
# max-severity = 4                      # warning or worse
"#;

/// A decoder's `[input]`, its settings commented at their defaults.
fn decoder_input(name: &str) -> String {
    format!(
        r#"# What the daemon reads and hands the decoder (docs/decoders.md). What it decodes
# is appended to the daemon's log, where filters read it with their matchers.
[input]
type = "tail"                       # or "udp" / "tcp", with address = "127.0.0.1:5514"
path = "/var/log/{name}.log"        # a file, or a glob in the file name
# start-at = "end"                  # or "beginning": where a file new to the input starts
# max-line = "64KiB"                # a longer record is cut to it and counted
# rotated-grace-ms = 5000           # how long a rotated file is still read
# poll-ms = 100                     # how often the files are looked at
"#
    )
}

/// The sidecar: every setting, commented out at its default.
fn sidecar(name: &str, lang: Lang) -> String {
    format!(
        r#"# Sidecar for {name}.wasm: keep it beside the plugin in the watch directory, as
# {name}.toml. Every setting is optional; the commented values are the defaults.

# How often the daemon calls timer-event, in milliseconds (default: never).
# ticker-interval-ms = 1000

# Bump when the format of the state the plugin saves on a hot swap changes: the old
# version's state is then discarded instead of handed over.
# preservation-version = 0

# Which messages reach the plugin; without a [matcher], none do (as in Heka).
[matcher]
all = true
# type = ["nginx.access", "apache.*"]   # one name or a list; `prefix*` matches a prefix
# logger = "web-*"
# max-severity = 4                      # warning or worse

# Per-call limits: a call that breaks one fails, and the plugin gets a fresh instance.
[limits]
{limits}

# Values the plugin reads through its config import (numbers and booleans as text).
[config]
# greeting = "Hello"

# Host directories the plugin may open through WASI; it gets none by default.
# [[permissions.dirs]]
# host = "/var/lib/{name}"   # relative paths are relative to this file's directory
# guest = "/data"            # where the plugin sees it (default: the host path)
# writable = false           # the default: read-only
"#,
        limits = limits(lang),
    )
}

/// The `[limits]` lines, commented out at the defaults, their notes aligned.
fn limits(lang: Lang) -> String {
    let d = Limits::default();
    let memory_note = match lang {
        Lang::Rust => "linear memory, all memories together",
        Lang::Python => "Python itself takes 12.5 MiB: 32MiB for data",
        Lang::Js => "the JS engine takes 9 MiB: 32MiB for data",
    };
    let lines = [
        (
            format!("fuel = {}", group_digits(d.fuel)),
            "about one unit per WebAssembly instruction",
        ),
        (format!("memory = \"{}MiB\"", d.memory_bytes >> 20), memory_note),
        (
            format!("deadline-ms = {}", d.deadline.as_millis()),
            "wall-clock time per call",
        ),
        (
            format!("output = \"{}KiB\"", d.output_bytes >> 10),
            "logs, stdout, stderr and emitted messages",
        ),
        (format!("emits = {}", d.emits), "messages one call may emit"),
        (
            format!("max-consecutive-failures = {}", d.max_consecutive_failures),
            "then the plugin is terminated",
        ),
        (
            format!("store-key-bytes = {}", d.store_key_bytes),
            "the longest store key",
        ),
        (
            format!("store-value-bytes = \"{}MiB\"", d.store_value_bytes >> 20),
            "the largest store value",
        ),
        (
            format!("store-keys = {}", group_digits(u64::from(d.store_keys))),
            "keys the plugin's store may hold",
        ),
    ];
    lines
        .iter()
        .map(|(setting, note)| format!("# {setting:<32} # {note}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `100000000` as `100_000_000`, as TOML allows.
fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}
