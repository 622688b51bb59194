//! The Python and JavaScript guests: their tools, installed on first use into
//! `target/tools/` at the versions `guests/tools/` pins, and their builds.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;
use std::{env, fs};

/// A language whose guests a tool other than cargo builds.
struct Lang {
    /// What the warnings call it.
    name: &'static str,
    /// Its guests are the directories of `guests/` starting with this.
    prefix: &'static str,
    /// The source file in each guest directory; its first line names the world.
    entry: &'static str,
    /// The constant that gives the tests the tool's path.
    tool_constant: &'static str,
    /// Installs the tool if needed and returns its path, or says why it cannot.
    install: fn(&Path) -> Result<PathBuf, String>,
    /// The command that builds `entry` in `dir` against `wit` and `world` into `out`.
    command: fn(tool: &Path, wit: &Path, dir: &Path, world: &str, out: &Path) -> Command,
}

const LANGS: [Lang; 2] = [
    Lang {
        name: "Python",
        prefix: "py-",
        entry: "app.py",
        tool_constant: "COMPONENTIZE_PY",
        install: install_python,
        command: |tool, wit, dir, world, out| {
            let mut command = Command::new(tool);
            command
                .arg("--quiet")
                .arg("--wit-path")
                .arg(wit)
                .args(["--world", world, "componentize", "--python-path"])
                .arg(dir)
                .args(["app", "--output"])
                .arg(out);
            command
        },
    },
    Lang {
        name: "JavaScript",
        prefix: "js-",
        entry: "plugin.js",
        tool_constant: "COMPONENTIZE_JS",
        install: install_js,
        command: |tool, wit, dir, world, out| {
            let mut command = Command::new(tool);
            command
                .arg(dir.join("plugin.js"))
                .arg("--wit")
                .arg(wit)
                .args(["--world-name", world])
                // The host links no wasi:http.
                .args(["--disable", "http", "fetch-event", "--out"])
                .arg(out);
            command
        },
    },
];

/// Builds every Python and JavaScript guest whose sources changed, and returns the
/// constants for `guests.rs`: each guest's path, or why it was not built, and each tool's.
pub fn build(root: &Path, out_dir: &Path) -> String {
    let required = env::var(super::REQUIRE_TOOLS).is_ok_and(|v| !v.is_empty() && v != "0");
    let wit = root.join("wit");
    let mut constants = String::new();
    for lang in &LANGS {
        let guests = guest_dirs(&root.join("guests"), lang);
        let tool = (lang.install)(root);
        match &tool {
            Ok(path) => constants.push_str(&format!(
                "/// The {} guest tool, installed by `build.rs`.\npub const {}: Result<&str, &str> = Ok({:?});\n",
                lang.name,
                lang.tool_constant,
                path.display().to_string()
            )),
            Err(why) if required => panic!(
                "cannot install the {} guest tool, and {} is set: {why}",
                lang.name,
                super::REQUIRE_TOOLS
            ),
            Err(why) => {
                println!(
                    "cargo:warning=skipping the {} guests (their tests will say so): {why}",
                    lang.name
                );
                constants.push_str(&format!(
                    "/// Why the {} guest tool is missing.\npub const {}: Result<&str, &str> = Err({why:?});\n",
                    lang.name, lang.tool_constant
                ));
            }
        }
        for (name, dir) in guests {
            let dest = out_dir.join(format!("{name}.wasm"));
            let value = match &tool {
                Ok(tool) => {
                    build_guest(lang, tool, &wit, &dir, &dest);
                    format!("Ok({:?})", dest.display().to_string())
                }
                Err(why) => format!("Err({:?})", format!("`{name}` was not built: {why}")),
            };
            constants.push_str(&format!(
                "/// `target/guests/{name}.wasm`, built from `guests/{name}`; or why it was not.\npub const {}: Result<&str, &str> = {value};\n",
                name.to_uppercase().replace('-', "_"),
            ));
        }
    }
    constants
}

/// The guest directories of `lang`, sorted by name.
fn guest_dirs(guests: &Path, lang: &Lang) -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<(String, PathBuf)> = fs::read_dir(guests)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            (name.starts_with(lang.prefix) && path.join(lang.entry).is_file()).then_some((name, path))
        })
        .collect();
    dirs.sort();
    dirs
}

/// Builds one guest unless its component is newer than its sources, the WIT and the tool.
fn build_guest(lang: &Lang, tool: &Path, wit: &Path, dir: &Path, dest: &Path) {
    let entry = dir.join(lang.entry);
    let newest = [newest_in(dir), newest_in(wit), modified(tool)]
        .into_iter()
        .max()
        .unwrap();
    if modified(dest) > newest {
        return;
    }
    let source = fs::read_to_string(&entry).unwrap();
    let world = source
        .lines()
        .next()
        .and_then(|line| line.split_once("world:"))
        .map(|(_, world)| world.trim().to_owned())
        .unwrap_or_else(|| {
            panic!(
                "`{}` must name its world on its first line, as in `# world: filter`",
                entry.display()
            )
        });
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let partial = dest.with_extension("wasm.partial");
    let mut command = (lang.command)(tool, wit, dir, &world, &partial);
    command.current_dir(dir);
    if let Err(why) = run(&mut command) {
        panic!(
            "building the {} guest `{}` failed: {why}",
            lang.name,
            dir.display()
        );
    }
    fs::rename(&partial, dest).unwrap();
}

/// componentize-py in a virtual environment of its own under `target/tools/python`.
fn install_python(root: &Path) -> Result<PathBuf, String> {
    let requirements = root.join("guests/tools/requirements.txt");
    let venv = root.join("target/tools/python");
    let tool = venv.join("bin/componentize-py");
    let pins = fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("corral-installed.txt");
    if tool.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(tool);
    }
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--requirement",
        ])
        .arg(&requirements))?;
    fs::write(&stamp, pins).unwrap();
    Ok(tool)
}

/// componentize-js from the npm registry, at the versions of `guests/tools/package-lock.json`,
/// under `target/tools/js`.
fn install_js(root: &Path) -> Result<PathBuf, String> {
    let dir = root.join("target/tools/js");
    let tool = dir.join("node_modules/.bin/componentize-js");
    let mut pins = String::new();
    for file in ["package.json", "package-lock.json"] {
        pins.push_str(&fs::read_to_string(root.join("guests/tools").join(file)).unwrap());
    }
    let stamp = dir.join("corral-installed.txt");
    if tool.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(tool);
    }
    run(Command::new("node").arg("--version"))?;
    fs::create_dir_all(&dir).unwrap();
    for file in ["package.json", "package-lock.json"] {
        fs::copy(root.join("guests/tools").join(file), dir.join(file)).unwrap();
    }
    // `npm ci` would be the tool, but it rejects a lock file without every platform's
    // optional packages, which is what npm writes here; `install` keeps the locked
    // versions all the same.
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir))?;
    fs::write(&stamp, pins).unwrap();
    Ok(tool)
}

/// Runs `command`; on failure, says which command and what it printed.
fn run(command: &mut Command) -> Result<(), String> {
    // Cargo's build-script variables mean other things to Python and npm tooling.
    for var in ["DEBUG", "PROFILE", "OPT_LEVEL", "TARGET", "HOST", "NUM_JOBS"] {
        command.env_remove(var);
    }
    let shown = format!("{command:?}");
    let output = command.output().map_err(|e| match e.kind() {
        ErrorKind::NotFound => format!("`{}` not found: install it", command.get_program().display()),
        _ => format!("cannot run {shown}: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let said = if said.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        said
    };
    // The end of a tool's output says what went wrong; the rest is usage and progress.
    let lines: Vec<&str> = said.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err(format!("{shown} failed ({}):\n{tail}", output.status))
}

/// The newest modification time of the files under `path`.
fn newest_in(path: &Path) -> SystemTime {
    let own = modified(path);
    let Ok(entries) = fs::read_dir(path) else {
        return own;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "__pycache__")
        .map(|e| newest_in(&e.path()))
        .fold(own, SystemTime::max)
}

fn modified(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
