//! The compile cache on disk: compiled components keyed by the SHA-256 of their bytes
//! and by the engine's settings, so a restart or a re-drop of a known file does not
//! compile again.
//!
//! Loading compiled code is trusting it: wasmtime runs what it deserialises. So an entry
//! is never trusted blindly. Each file starts with the SHA-256 of the rest, checked
//! before wasmtime sees it; wasmtime then checks its own header (version, target,
//! settings); and entries live in a directory named after the engine's compatibility
//! hash, so a host with other settings (fuel and epochs change the code) never looks at
//! them. Anything that fails a check is deleted, logged, and compiled afresh. Writes go
//! to a temporary file renamed into place, so a crash leaves no half-written entry under
//! a real name.

use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components for one engine configuration.
#[derive(Debug, Clone)]
pub(crate) struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache under `root` for `engine`'s settings; the directory is made on first
    /// write.
    pub fn new(root: &Path, engine: &Engine) -> CompileCache {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir: root.join(format!(
                "wasmtime-{}-{:016x}",
                env!("CARGO_PKG_VERSION"),
                hasher.finish()
            )),
        }
    }

    fn entry(&self, digest: &[u8; 32]) -> PathBuf {
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The cached component for `digest`, if there is a sound entry.
    pub fn get(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Component> {
        let path = self.entry(digest);
        let bytes = fs::read(&path).ok()?;
        let discard = |why: &str| {
            tracing::warn!(entry = %path.display(), "discarding compile cache entry: {why}");
            let _ = fs::remove_file(&path);
            None
        };
        let Some((checksum, code)) = bytes.split_first_chunk::<32>() else {
            return discard("shorter than its checksum");
        };
        if Sha256::digest(code).as_slice() != checksum {
            return discard("checksum mismatch (corrupt or tampered)");
        }
        // SAFETY: the bytes are what `put` wrote from `Component::serialize` for an engine
        // with these settings (the directory is keyed by them), unchanged since (the
        // checksum matches), and wasmtime verifies its own header before using them.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize(engine, code) } {
            Ok(component) => Some(component),
            Err(e) => discard(&format!("{e:#}")),
        }
    }

    /// Stores `component` under `digest`. Failures are logged, never returned: the cache
    /// only ever saves time.
    pub fn put(&self, digest: &[u8; 32], component: &Component) {
        if let Err(e) = self.try_put(digest, component) {
            tracing::warn!(dir = %self.dir.display(), "cannot write compile cache entry: {e:#}");
        }
    }

    fn try_put(&self, digest: &[u8; 32], component: &Component) -> anyhow::Result<()> {
        let code = component.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        temp.write_all(&Sha256::digest(&code))?;
        temp.write_all(&code)?;
        temp.persist(self.entry(digest))?;
        Ok(())
    }
}
