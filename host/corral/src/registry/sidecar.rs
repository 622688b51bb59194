//! The sidecar: `name.toml` beside `name.wasm`, holding the plugin's limits, config
//! values, directory grants, restart policy and state preservation version — the
//! library's sections. Whoever runs the plugins may read more top-level keys of its own
//! (the `corral` daemon's `[matcher]`, `ticker-interval-ms` and `start-from`): it names
//! them with [`SidecarSections`], and they are kept, as written, in [`Sidecar::extra`].
//!
//! ```toml
//! # Bump when the saved state's format changes: saved state is then discarded.
//! preservation-version = 2
//!
//! [limits]
//! fuel = 50_000_000
//! memory = "32MiB"           # bytes, or a string with KiB, MiB or GiB
//! deadline-ms = 250
//! output = "128KiB"
//! emits = 10
//! max-consecutive-failures = 3
//! store-key-bytes = 256
//! store-value-bytes = "64KiB"
//! store-keys = 1000
//!
//! [config]                   # what the plugin reads through its config import
//! greeting = "Howdy"
//! threshold = 5              # numbers and booleans are passed as their text
//!
//! [[permissions.dirs]]       # a host directory the plugin may open through WASI
//! host = "/proc"             # relative paths are relative to the sidecar's directory
//! guest = "/proc"            # where the plugin sees it (default: the host path)
//! writable = false           # the default: read-only
//!
//! [restart]                  # restart after a termination (default: never)
//! initial-backoff-ms = 1000  # the first wait
//! factor = 2                 # each restart in a row waits this many times longer
//! max-backoff-ms = 300_000   # the longest wait
//! max-restarts = 10          # then it stays terminated (default: no limit)
//! reset-after-ms = 600_000   # up this long: the next wait is the first again
//! ```
//!
//! Every key is optional; a missing key keeps its default. Unknown keys and bad values
//! are errors that give the line and the key, so a typo never silently falls back to a
//! default.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::loader::LoadError;
use crate::plugin::PluginOptions;
use crate::plugin::RestartPolicy;
use crate::sandbox::DirGrant;
use crate::sandbox::limits::{Limits, parse_size};

/// A plugin's settings from its sidecar file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sidecar {
    /// Limits and config values.
    pub options: PluginOptions,
    /// The version of the plugin's saved-state format (default 0). When a swap changes
    /// it, the old version's state is discarded instead of restored.
    pub preservation_version: u64,
    /// The top-level keys beyond the library's, as written: only those a
    /// [`SidecarSections`] named, for it to read.
    pub extra: toml::Table,
}

/// Top-level sidecar keys beyond the library's own, read by whoever runs the plugins
/// (the `corral` daemon's `[matcher]`, `ticker-interval-ms` and `start-from`). Given to
/// [`Sidecar::parse_with`] or [`crate::WatchOptions::sections`], it makes its keys
/// welcome (any other unknown key stays an error) and checks them: a sidecar whose
/// sections fail the check is refused as a whole, naming the file, and a plugin serving
/// keeps its settings.
pub trait SidecarSections: Send + Sync + 'static {
    /// The top-level keys it reads.
    fn keys(&self) -> &[&str];
    /// Checks the sidecar's `text` for its keys (the library's are checked already).
    /// The error should give the line and the key, as the library's do.
    ///
    /// # Errors
    ///
    /// Why its sections are not valid.
    fn check(&self, text: &str) -> Result<(), String>;
}

/// The library's top-level keys.
const KEYS: [&str; 5] = [
    "preservation-version",
    "limits",
    "config",
    "permissions",
    "restart",
];

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    preservation_version: Option<u64>,
    limits: Option<LimitsFile>,
    config: Option<BTreeMap<String, ConfigValue>>,
    permissions: Option<PermissionsFile>,
    restart: Option<RestartFile>,
    /// Every other top-level key: an error unless a [`SidecarSections`] reads it.
    #[serde(flatten)]
    extra: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RestartFile {
    initial_backoff_ms: Option<u64>,
    factor: Option<NonZeroU32>,
    max_backoff_ms: Option<u64>,
    max_restarts: Option<u32>,
    reset_after_ms: Option<u64>,
}

impl RestartFile {
    fn policy(self) -> RestartPolicy {
        let d = RestartPolicy::default();
        let ms = |ms: Option<u64>, default: Duration| ms.map_or(default, Duration::from_millis);
        RestartPolicy {
            initial_backoff: ms(self.initial_backoff_ms, d.initial_backoff),
            factor: self.factor.map_or(d.factor, NonZeroU32::get),
            max_backoff: ms(self.max_backoff_ms, d.max_backoff),
            max_restarts: self.max_restarts,
            reset_after: ms(self.reset_after_ms, d.reset_after),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PermissionsFile {
    #[serde(default)]
    dirs: Vec<DirFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DirFile {
    host: PathBuf,
    guest: Option<String>,
    #[serde(default)]
    writable: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsFile {
    fuel: Option<u64>,
    memory: Option<Size>,
    deadline_ms: Option<u64>,
    output: Option<Size>,
    emits: Option<u32>,
    max_consecutive_failures: Option<NonZeroU32>,
    store_key_bytes: Option<Size>,
    store_value_bytes: Option<Size>,
    store_keys: Option<u32>,
}

/// Bytes, as an integer or a string with a unit.
pub(crate) struct Size(pub(crate) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: bytes, or a string such as \"64KiB\" or \"16MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// A config value: a string, or a number or boolean taken as its text.
struct ConfigValue(String);

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ConfigValue, D::Error> {
        struct ConfigVisitor;
        impl Visitor<'_> for ConfigVisitor {
            type Value = ConfigValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ConfigValue, E> {
                Ok(ConfigValue(v.to_string()))
            }
        }
        d.deserialize_any(ConfigVisitor)
    }
}

fn narrow(size: Option<Size>, default: u32, key: &str) -> Result<u32, String> {
    match size {
        None => Ok(default),
        Some(Size(n)) => {
            u32::try_from(n).map_err(|_| format!("`limits.{key}` = {n} is too large (at most 4GiB)"))
        }
    }
}

impl Sidecar {
    /// Parses a sidecar's text: the library's sections, and no other key.
    ///
    /// # Errors
    ///
    /// The reason, with the line and key when the text is not a valid sidecar.
    pub fn parse(text: &str) -> Result<Sidecar, String> {
        Sidecar::parse_with(text, None)
    }

    /// Parses a sidecar's text: the library's sections, and the keys `sections` reads,
    /// which it checks.
    ///
    /// # Errors
    ///
    /// The reason, with the line and key when the text is not a valid sidecar.
    pub fn parse_with(text: &str, sections: Option<&dyn SidecarSections>) -> Result<Sidecar, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        let theirs = sections.map_or(&[][..], |s| s.keys());
        if let Some(key) = file.extra.keys().find(|k| !theirs.contains(&k.as_str())) {
            let expected: Vec<String> = KEYS.iter().chain(theirs).map(|k| format!("`{k}`")).collect();
            return Err(format!(
                "TOML parse error at line {}: unknown field `{key}`, expected one of {}",
                line_of(text, key),
                expected.join(", ")
            ));
        }
        if let Some(sections) = sections {
            sections.check(text)?;
        }
        let mut limits = Limits::default();
        if let Some(l) = file.limits {
            limits.fuel = l.fuel.unwrap_or(limits.fuel);
            limits.memory_bytes = l.memory.map_or(limits.memory_bytes, |s| s.0);
            limits.deadline = l.deadline_ms.map_or(limits.deadline, Duration::from_millis);
            limits.output_bytes = l.output.map_or(limits.output_bytes, |s| s.0);
            limits.emits = l.emits.unwrap_or(limits.emits);
            limits.max_consecutive_failures = l
                .max_consecutive_failures
                .map_or(limits.max_consecutive_failures, NonZeroU32::get);
            limits.store_key_bytes = narrow(l.store_key_bytes, limits.store_key_bytes, "store-key-bytes")?;
            limits.store_value_bytes =
                narrow(l.store_value_bytes, limits.store_value_bytes, "store-value-bytes")?;
            limits.store_keys = l.store_keys.unwrap_or(limits.store_keys);
        }
        let config = file
            .config
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let dirs = file
            .permissions
            .map(|p| p.dirs)
            .unwrap_or_default()
            .into_iter()
            .map(|d| DirGrant {
                guest: d.guest.unwrap_or_else(|| d.host.display().to_string()),
                host: d.host,
                writable: d.writable,
            })
            .collect();
        Ok(Sidecar {
            options: PluginOptions {
                limits,
                config,
                dirs,
                restart: file.restart.map(RestartFile::policy),
            },
            preservation_version: file.preservation_version.unwrap_or(0),
            extra: file.extra,
        })
    }

    /// Parses the text of the sidecar at `path`: relative directory grants are taken
    /// relative to the sidecar's directory, and errors name the file.
    ///
    /// # Errors
    ///
    /// [`LoadError::Sidecar`] naming the file and the reason.
    pub fn parse_at(text: &str, path: &Path) -> Result<Sidecar, LoadError> {
        Sidecar::parse_at_with(text, path, None)
    }

    /// As [`Sidecar::parse_at`], with the keys `sections` reads (see
    /// [`Sidecar::parse_with`]).
    ///
    /// # Errors
    ///
    /// [`LoadError::Sidecar`] naming the file and the reason.
    pub fn parse_at_with(
        text: &str,
        path: &Path,
        sections: Option<&dyn SidecarSections>,
    ) -> Result<Sidecar, LoadError> {
        let mut sidecar = Sidecar::parse_with(text, sections).map_err(|reason| LoadError::Sidecar {
            path: path.to_owned(),
            reason,
        })?;
        if let Some(base) = path.parent() {
            for grant in &mut sidecar.options.dirs {
                grant.host = base.join(&grant.host);
            }
        }
        Ok(sidecar)
    }

    /// Reads the sidecar at `path`; `Ok(None)` when there is no such file.
    ///
    /// # Errors
    ///
    /// [`LoadError::Sidecar`] naming the file and the reason when it cannot be read or
    /// parsed.
    pub fn load(path: &Path) -> Result<Option<Sidecar>, LoadError> {
        let fail = |reason: String| LoadError::Sidecar {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Sidecar::parse_at(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(e.to_string())),
        }
    }
}

/// The line (from 1) where the top-level `key` is set or opens its table.
fn line_of(text: &str, key: &str) -> usize {
    let sets = |line: &str| {
        let line = line.trim_start().trim_start_matches('[').trim_start();
        let line = line.strip_prefix('"').unwrap_or(line);
        line.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', ']', '.', '"']))
    };
    text.lines().position(sets).map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_read() {
        let sidecar = Sidecar::parse(
            r#"
            preservation-version = 2
            [limits]
            fuel = 5_000
            memory = "32MiB"
            deadline-ms = 250
            output = 1024
            emits = 3
            max-consecutive-failures = 2
            store-key-bytes = 64
            store-value-bytes = "1KiB"
            store-keys = 7
            [config]
            greeting = "Howdy"
            threshold = 5
            verbose = true
            [[permissions.dirs]]
            host = "/proc"
            [[permissions.dirs]]
            host = "data"
            guest = "/data"
            writable = true
            "#,
        )
        .unwrap();
        let l = &sidecar.options.limits;
        assert_eq!(sidecar.preservation_version, 2);
        assert_eq!(
            (l.fuel, l.memory_bytes, l.output_bytes, l.emits),
            (5_000, 32 << 20, 1024, 3)
        );
        assert_eq!(l.deadline, Duration::from_millis(250));
        assert_eq!(
            (l.max_consecutive_failures, l.store_key_bytes, l.store_value_bytes),
            (2, 64, 1024)
        );
        assert_eq!(l.store_keys, 7);
        let config: Vec<_> = sidecar
            .options
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            config,
            [("greeting", "Howdy"), ("threshold", "5"), ("verbose", "true")]
        );
    }

    #[test]
    fn a_restart_section_turns_restarts_on() {
        let sidecar = Sidecar::parse("[restart]\ninitial-backoff-ms = 50\nmax-restarts = 3\n").unwrap();
        assert_eq!(
            sidecar.options.restart,
            Some(RestartPolicy {
                initial_backoff: Duration::from_millis(50),
                max_restarts: Some(3),
                ..RestartPolicy::default()
            })
        );
        assert_eq!(
            Sidecar::parse("[restart]\n").unwrap().options.restart,
            Some(RestartPolicy::default())
        );
        assert_eq!(
            Sidecar::parse("").unwrap().options.restart,
            None,
            "off by default"
        );
        let error = Sidecar::parse("[restart]\nfactor = 0\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("nonzero"), "{error}");
    }

    #[test]
    fn other_keys_are_refused_unless_a_reader_names_them() {
        let error = Sidecar::parse("[limits]\nfuel = 1\n\n[matcher]\nall = true\n").unwrap_err();
        assert!(
            error.contains("line 4") && error.contains("unknown field `matcher`"),
            "{error}"
        );

        struct Ticker;
        impl SidecarSections for Ticker {
            fn keys(&self) -> &[&str] {
                &["ticker-interval-ms", "matcher"]
            }
            fn check(&self, text: &str) -> Result<(), String> {
                match text.contains("ticker-interval-ms = 0") {
                    true => Err("line 1: `ticker-interval-ms` must be nonzero".into()),
                    false => Ok(()),
                }
            }
        }
        let text = "ticker-interval-ms = 50\n[matcher]\nall = true\n";
        let sidecar = Sidecar::parse_with(text, Some(&Ticker)).unwrap();
        assert_eq!(sidecar.extra["ticker-interval-ms"].as_integer(), Some(50));
        assert_eq!(sidecar.extra["matcher"]["all"].as_bool(), Some(true));
        let error = Sidecar::parse_with("ticker-interval-ms = 0\n", Some(&Ticker)).unwrap_err();
        assert!(error.contains("nonzero"), "{error}");
        let error = Sidecar::parse_with("tikcer = 1\n", Some(&Ticker)).unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("`tikcer`") && error.contains("`matcher`"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_sidecar_keeps_the_defaults() {
        assert_eq!(Sidecar::parse("").unwrap(), Sidecar::default());
    }

    #[test]
    fn errors_give_the_line_and_the_key() {
        let error = Sidecar::parse("[limits]\nfule = 5\n").unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("unknown field `fule`"),
            "{error}"
        );
        let error = Sidecar::parse("[limits]\nfuel = 1\nmemory = \"lots\"\n").unwrap_err();
        assert!(error.contains("line 3") && error.contains("memory"), "{error}");
        let error = Sidecar::parse("[limits]\nmax-consecutive-failures = 0\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("nonzero"), "{error}");
        let error = Sidecar::parse("[config]\nlist = [1, 2]\n").unwrap_err();
        assert!(
            error.contains("line 2") && error.contains("a string, number or boolean"),
            "{error}"
        );
    }
}
