//! How a component can fail to fit the world, and the part of the check that needs no
//! engine: each import judged by its package and version, each entry point by its shape.
//! (The check itself, with wasmtime's full type check after it, is the loader's
//! `link` module.)

use std::fmt;

use super::{
    CORRAL_INTERFACES, DECODE, PLUGIN_PACKAGE_VERSION, PROCESS_BATCH, PROCESS_MESSAGE, TIMER_EVENT,
    WASI_PACKAGES, WASI_VERSION,
};

/// One way a component does not fit the world.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mismatch {
    /// A required export is missing.
    MissingExport {
        /// The export's name, e.g. `process-message`.
        name: String,
    },
    /// An export exists but has the wrong type.
    ExportType {
        /// The export's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The component imports an interface this host does not provide.
    UnknownImport {
        /// The import's full name, e.g. `wasi:http/types@0.2.0`.
        name: String,
    },
    /// The component imports a package at a version this host does not provide.
    ImportVersion {
        /// The import's full name.
        name: String,
        /// The version the component was built against.
        found: String,
        /// The versions this host provides.
        expected: String,
    },
    /// An import or export with another type than the world's; wasmtime's reason.
    Type {
        /// Wasmtime's description of the mismatch.
        reason: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::MissingExport { name } => {
                let snake = name.replace('-', "_");
                let mut camel = String::new();
                for (i, word) in name.split('-').enumerate() {
                    let mut chars = word.chars();
                    match chars.next() {
                        Some(c) if i > 0 => camel.extend(c.to_uppercase().chain(chars)),
                        Some(c) => camel.extend(std::iter::once(c).chain(chars)),
                        None => {}
                    }
                }
                write!(
                    f,
                    "missing export `{name}`: the plugin must export it (`fn {snake}` in Rust, \
                     `def {snake}` on the WitWorld class in Python, `export function {camel}` \
                     in JavaScript)"
                )
            }
            Mismatch::ExportType { name, reason } => {
                write!(f, "export `{name}` has the wrong type: {reason}")
            }
            Mismatch::UnknownImport { name } => {
                write!(
                    f,
                    "imports `{name}`, which this host does not provide: plugins may import \
                     only `corral:plugin/*` and WASI 0.2 interfaces"
                )?;
                if name.starts_with("wasi:http/") {
                    write!(
                        f,
                        " (componentize-js imports wasi:http unless it builds with \
                         `--disable http fetch-event`)"
                    )?;
                }
                Ok(())
            }
            Mismatch::ImportVersion {
                name,
                found,
                expected,
            } => {
                write!(
                    f,
                    "imports `{name}`: built against version {found}, this host provides {expected}"
                )?;
                if name.starts_with("wasi:") {
                    write!(
                        f,
                        " (build for the wasm32-wasip2 target, or with a componentize-py or \
                         componentize-js release that targets WASI 0.2)"
                    )?;
                }
                Ok(())
            }
            Mismatch::Type { reason } => write!(f, "{reason}"),
        }
    }
}

pub(crate) struct Bulleted<'a>(pub(crate) &'a [Mismatch]);

impl fmt::Display for Bulleted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in self.0 {
            write!(f, "\n  - {m}")?;
        }
        Ok(())
    }
}

/// An entry point's type in the world, as WIT spells it.
pub(crate) fn expected_type(entry: &str) -> &'static str {
    match entry {
        PROCESS_MESSAGE => "func(message: borrow<message>) -> result<_, failure>",
        PROCESS_BATCH => "func(batch: message-batch)",
        DECODE => "func(records: raw-batch) -> decoded",
        _ => "func(now-ns: s64) -> result<_, failure>",
    }
}

/// Whether an entry point's type has the world's shape: its parameter and result of the
/// right kinds. What the shape leaves open (the records' fields, the variants' cases)
/// wasmtime's own type check judges after.
pub(crate) fn fits(entry: &str, func: &wasmtime::component::types::ComponentFunc) -> bool {
    use wasmtime::component::types::Type;
    let params: Vec<Type> = func.params().map(|(_, ty)| ty).collect();
    let results: Vec<Type> = func.results().collect();
    let failure_result = |ty: &Type| matches!(ty, Type::Result(r) if r.ok().is_none() && matches!(r.err(), Some(Type::Variant(_))));
    match (entry, &params[..], &results[..]) {
        (PROCESS_MESSAGE, [Type::Borrow(_)], [result]) => failure_result(result),
        // A `message-batch` (`list<u8>`), its failures reported through `failures`; or,
        // as plugins were built before, returned, and in the `batch` record before that.
        (PROCESS_BATCH, [Type::List(batch)], []) => batch.ty() == Type::U8,
        (PROCESS_BATCH, [Type::List(batch)], [Type::List(list)]) => {
            batch.ty() == Type::U8 && matches!(list.ty(), Type::Record(_))
        }
        (PROCESS_BATCH, [Type::Record(_)], [Type::List(list)]) => matches!(list.ty(), Type::Record(_)),
        (DECODE, [Type::Record(_)], [Type::Record(_)]) => true,
        (TIMER_EVENT, [Type::S64], [result]) => failure_result(result),
        _ => false,
    }
}

/// The problem with one import name, if any.
pub(crate) fn check_import(name: &str) -> Option<Mismatch> {
    let unknown = || {
        Some(Mismatch::UnknownImport {
            name: name.to_owned(),
        })
    };
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    let Some((namespace, rest)) = path.split_once(':') else {
        return unknown();
    };
    let (package, interface) = rest.split_once('/').unwrap_or((rest, ""));
    let wrong_version = |expected: &str| {
        Some(Mismatch::ImportVersion {
            name: name.to_owned(),
            found: version.unwrap_or("(none)").to_owned(),
            expected: expected.to_owned(),
        })
    };
    match (namespace, package) {
        ("corral", "plugin") => {
            if !version.is_some_and(|v| same_release_line(v, PLUGIN_PACKAGE_VERSION)) {
                wrong_version(&format!("corral:plugin@{PLUGIN_PACKAGE_VERSION}"))
            } else if !CORRAL_INTERFACES.contains(&interface) {
                unknown()
            } else {
                None
            }
        }
        ("wasi", package) if WASI_PACKAGES.contains(&package) => {
            if version.is_some_and(|v| same_release_line(v, WASI_VERSION)) {
                None
            } else {
                wrong_version(&format!("WASI {WASI_VERSION} (any 0.2.x links)"))
            }
        }
        _ => unknown(),
    }
}

/// Whether two versions are semver-compatible: the same major, and for 0.x the same
/// minor, as wasmtime's linker matches them.
fn same_release_line(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
    match (parts(a), parts(b)) {
        (Some((0, a_minor)), Some((0, b_minor))) => a_minor == b_minor,
        (Some((a_major, _)), Some((b_major, _))) => a_major == b_major,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_judged_by_package_and_version() {
        assert_eq!(check_import("corral:plugin/log@0.1.0"), None);
        assert_eq!(check_import("wasi:cli/stdout@0.2.6"), None);
        assert_eq!(check_import("wasi:io/streams@0.2.12"), None);
        assert!(matches!(
            check_import("corral:plugin/log@0.2.0"),
            Some(Mismatch::ImportVersion { found, expected, .. })
                if found == "0.2.0" && expected == "corral:plugin@0.1.0"
        ));
        assert!(matches!(
            check_import("wasi:cli/stdout@0.3.0"),
            Some(Mismatch::ImportVersion { .. })
        ));
        for name in [
            "wasi:http/types@0.2.0",
            "corral:plugin/secrets@0.1.0",
            "acme:x/y@1.0.0",
            "env",
        ] {
            assert!(
                matches!(check_import(name), Some(Mismatch::UnknownImport { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn mismatches_an_author_meets_say_what_to_do() {
        let said = |name| check_import(name).unwrap().to_string();
        assert!(
            said("wasi:http/types@0.2.0").ends_with(
                "(componentize-js imports wasi:http unless it builds with `--disable http fetch-event`)"
            ),
            "{}",
            said("wasi:http/types@0.2.0")
        );
        assert!(
            said("wasi:cli/stdout@0.3.0")
                .contains("built against version 0.3.0, this host provides WASI 0.2")
                && said("wasi:cli/stdout@0.3.0").contains("build for the wasm32-wasip2 target"),
            "{}",
            said("wasi:cli/stdout@0.3.0")
        );
        let missing = Mismatch::MissingExport {
            name: "timer-event".into(),
        }
        .to_string();
        assert!(
            missing.contains("`fn timer_event` in Rust")
                && missing.contains("`def timer_event` on the WitWorld class in Python")
                && missing.contains("`export function timerEvent` in JavaScript"),
            "{missing}"
        );
    }
}
