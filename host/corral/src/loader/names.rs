//! Plugin names, and telling the common wrong files apart before wasmtime sees them.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::LoadError;

/// The longest plugin name.
const MAX_NAME: usize = 64;

/// A plugin's name from its file name.
pub(super) fn plugin_name(path: &Path) -> Result<String, LoadError> {
    let invalid = |why: &str| LoadError::InvalidName {
        name: path.display().to_string(),
        reason: why.to_owned(),
    };
    let stem = path
        .file_stem()
        .ok_or_else(|| invalid("the path has no file name"))?;
    stem.to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid("the file name is not UTF-8"))
}

/// Checks a plugin name against the policy every name passes: 1 to 64 bytes of ASCII
/// letters, digits, `-`, `_` and `.`, not starting with `.` or `-`. Plugin names become
/// store namespaces, log fields and URL segments: keep them to a safe alphabet.
///
/// # Errors
///
/// [`LoadError::InvalidName`] saying why.
pub fn validate_name(name: &str) -> Result<(), LoadError> {
    let reason = if name.is_empty() {
        "the name is empty"
    } else if name.len() > MAX_NAME {
        "the name is longer than 64 bytes"
    } else if name.starts_with(['.', '-']) {
        "the name starts with `.` or `-`"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        "the name may hold only ASCII letters, digits, `-`, `_` and `.`"
    } else {
        return Ok(());
    };
    Err(LoadError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Tells the common wrong files apart before wasmtime sees them, for clearer errors.
pub(super) fn sniff(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if bytes.is_empty() {
        return Err(LoadError::Empty {
            plugin: name.to_owned(),
        });
    }
    if !bytes.starts_with(b"\0asm") {
        let prefix: String = bytes
            .iter()
            .take(8)
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        return Err(LoadError::NotWasm {
            plugin: name.to_owned(),
            prefix,
        });
    }
    if bytes.get(4..8) == Some(&CORE_VERSION[..]) {
        return Err(LoadError::CoreModule {
            plugin: name.to_owned(),
        });
    }
    Ok(())
}

/// The version of a plugin with these bytes, as [`crate::Plugin::version`] reports it:
/// their SHA-256 in hex.
pub fn content_version(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_to_a_safe_alphabet() {
        for good in ["hello", "cpu-metrics", "a_b.v2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "../etc", "a/b", ".hidden", "-x", "sp ace", &"x".repeat(65)] {
            assert!(
                matches!(validate_name(bad), Err(LoadError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn wrong_files_are_told_apart() {
        assert!(matches!(sniff("p", b""), Err(LoadError::Empty { .. })));
        assert!(matches!(sniff("p", b"#!/bin/sh"), Err(LoadError::NotWasm { .. })));
        assert!(matches!(
            sniff("p", b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(sniff("p", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
