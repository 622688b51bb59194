//! The persistent store: every plugin's key-value namespace, and the state saved at
//! shutdown, in one embedded redb database.
//!
//! Why redb rather than SQLite: it is pure Rust (no C toolchain, nothing to link), a
//! key-value store with ordered keys (exactly the `store` interface, prefix listing
//! included), ACID with crash-safe copy-on-write commits, and one file. SQLite would
//! bring a query language this interface does not use.
//!
//! Namespaces are kept apart by the key itself: the table's key is the pair
//! (namespace, key), so no key a guest chooses can name another namespace. Guest writes
//! commit without an fsync each (a plugin setting a key per message would otherwise be
//! bound by the disk), and a background flush makes them durable within
//! [`FLUSH_INTERVAL`]; [`RedbStore::flush`] (called at shutdown) makes them durable at
//! once. A crash can lose at most the last interval's writes, never corrupt the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use corral::{KvStore, StoreError};

/// How long a guest's write may stay in memory before it is made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// State saved at shutdown: plugin name → (preservation version, bytes).
const STATE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("state");
/// Each reader's checkpoint: reader name (a plugin's, or the output's, see
/// [`OUTPUT_READER`]) → its log position (sequence number, byte offset) and the emit
/// counters its emitted messages' ids continue from (see `pipeline`).
const CHECKPOINTS: TableDefinition<&str, Checkpointed> = TableDefinition::new("checkpoints");

/// A checkpoint as stored: sequence number, byte offset, and the emit counters (by
/// messages, by timer events and reports).
pub(crate) type Checkpointed = (u64, u64, u64, u64);

/// Each decoder's input position (see `intake`): decoder name → the position, encoded
/// by the input. Committed with the decoder's state and store writes, never with a log
/// position: a decoder writes the log, it does not read it.
const INPUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("inputs");

/// The output's name among the checkpoints: no plugin can be called this (a plugin's
/// name has no space).
pub(crate) const OUTPUT_READER: &str = "corral output";

/// What a plugin's checkpoint commits in one transaction.
pub(crate) struct CheckpointWrite<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// Its log position and emit counters; `None` for a decoder, which reads no log.
    pub at: Option<Checkpointed>,
    /// A decoder's input position, encoded by its input.
    pub input: Option<&'a [u8]>,
    /// Its saved state, with its preservation version; `None` leaves the saved state as
    /// it was.
    pub state: Option<(u64, &'a [u8])>,
    /// Its store writes since the last checkpoint: a value, or `None` for a delete.
    pub writes: &'a std::collections::BTreeMap<String, Option<Vec<u8>>>,
}

/// The database file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the store `{}`: {reason}", path.display())]
pub struct OpenError {
    path: PathBuf,
    reason: String,
}

/// A [`KvStore`] in a redb database file, with the plugins' saved state beside it.
#[derive(Debug, Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    dirty: Arc<AtomicBool>,
    /// Keys per namespace, counted once on first need and kept up to date by every write
    /// through this store (the only writer: the database is this process's).
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database at `path` and starts its flush thread, which
    /// stops when the last clone of the store is dropped.
    ///
    /// # Errors
    ///
    /// [`OpenError`] naming the file when it cannot be created, opened, or is not a
    /// redb database.
    pub fn open(path: &Path) -> Result<RedbStore, OpenError> {
        let fail = |e: &dyn std::fmt::Display| OpenError {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let db = Database::create(path).map_err(|e| fail(&e))?;
        // Make both tables exist, so readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| fail(&e))?;
        txn.open_table(KV).map_err(|e| fail(&e))?;
        txn.open_table(STATE).map_err(|e| fail(&e))?;
        txn.open_table(CHECKPOINTS).map_err(|e| fail(&e))?;
        txn.open_table(INPUTS).map_err(|e| fail(&e))?;
        txn.commit().map_err(|e| fail(&e))?;
        let store = RedbStore {
            db: Arc::new(db),
            dirty: Arc::new(AtomicBool::new(false)),
            counts: Arc::default(),
        };
        let (weak, dirty) = (Arc::downgrade(&store.db), store.dirty.clone());
        std::thread::Builder::new()
            .name("corral-store-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_INTERVAL);
                    let Some(db) = weak.upgrade() else { break };
                    if dirty.swap(false, Ordering::AcqRel)
                        && let Err(e) = durable_commit(&db)
                    {
                        dirty.store(true, Ordering::Release);
                        tracing::warn!("cannot flush the store: {e}");
                    }
                }
            })
            .map_err(|e| fail(&e))?;
        Ok(store)
    }

    /// Makes every write so far durable.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.dirty.store(false, Ordering::Release);
        durable_commit(&self.db)
    }

    /// Saves a plugin's state (from `state.save`) with its preservation version,
    /// durably.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub fn save_state(&self, plugin: &str, preservation_version: u64, data: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(other)?;
        txn.open_table(STATE)
            .map_err(other)?
            .insert(plugin, (preservation_version, data))
            .map_err(other)?;
        txn.commit().map_err(other)
    }

    /// The state saved for `plugin`, with its preservation version.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub fn saved_state(&self, plugin: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(other)?;
        let table = txn.open_table(STATE).map_err(other)?;
        Ok(table.get(plugin).map_err(other)?.map(|v| {
            let (version, data) = v.value();
            (version, data.to_vec())
        }))
    }

    /// Forgets the state saved for `plugin` (after it was restored, or discarded).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub fn forget_state(&self, plugin: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(other)?;
        txn.open_table(STATE)
            .map_err(other)?
            .remove(plugin)
            .map_err(other)?;
        txn.commit().map_err(other)
    }

    /// Commits a checkpoint (position, state and store writes) durably, in one
    /// transaction: after a crash all of it is there or none of it.
    ///
    /// # Errors
    ///
    /// The database's error; nothing was written.
    pub(crate) fn commit_checkpoint(&self, checkpoint: &CheckpointWrite<'_>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(other)?;
        let mut delta = 0i64;
        {
            let mut kv = txn.open_table(KV).map_err(other)?;
            for (key, value) in checkpoint.writes {
                let existed = match value {
                    Some(value) => kv
                        .insert((checkpoint.plugin, key.as_str()), value.as_slice())
                        .map_err(other)?
                        .is_some(),
                    None => kv
                        .remove((checkpoint.plugin, key.as_str()))
                        .map_err(other)?
                        .is_some(),
                };
                delta += i64::from(value.is_some()) - i64::from(existed);
            }
            if let Some((version, data)) = checkpoint.state {
                txn.open_table(STATE)
                    .map_err(other)?
                    .insert(checkpoint.plugin, (version, data))
                    .map_err(other)?;
            }
            if let Some(at) = checkpoint.at {
                txn.open_table(CHECKPOINTS)
                    .map_err(other)?
                    .insert(checkpoint.plugin, at)
                    .map_err(other)?;
            }
            if let Some(input) = checkpoint.input {
                txn.open_table(INPUTS)
                    .map_err(other)?
                    .insert(checkpoint.plugin, input)
                    .map_err(other)?;
            }
        }
        txn.commit().map_err(other)?;
        self.adjust(checkpoint.plugin, delta);
        Ok(())
    }

    /// Every reader's checkpointed position.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) fn checkpoints(&self) -> Result<HashMap<String, Checkpointed>, StoreError> {
        let txn = self.db.begin_read().map_err(other)?;
        let table = txn.open_table(CHECKPOINTS).map_err(other)?;
        let mut all = HashMap::new();
        for entry in table.iter().map_err(other)? {
            let (k, v) = entry.map_err(other)?;
            all.insert(k.value().to_owned(), v.value());
        }
        Ok(all)
    }

    /// The input position last committed for the decoder `plugin`.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) fn input_position(&self, plugin: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(other)?;
        let table = txn.open_table(INPUTS).map_err(other)?;
        Ok(table.get(plugin).map_err(other)?.map(|v| v.value().to_vec()))
    }

    /// Commits the output's position durably.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) fn commit_position(&self, reader: &str, at: Checkpointed) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(other)?;
        txn.open_table(CHECKPOINTS)
            .map_err(other)?
            .insert(reader, at)
            .map_err(other)?;
        txn.commit().map_err(other)
    }

    fn write(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &str), &[u8]>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let mut txn = self.db.begin_write().map_err(other)?;
        txn.set_durability(Durability::None).map_err(other)?;
        let result = {
            let mut table = txn.open_table(KV).map_err(other)?;
            f(&mut table)?
        };
        txn.commit().map_err(other)?;
        self.dirty.store(true, Ordering::Release);
        Ok(result)
    }
}

impl RedbStore {
    fn lock_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        crate::lock(&self.counts)
    }

    /// Keeps a namespace's cached count in step with a write (uncounted ones are counted
    /// on first need instead).
    fn adjust(&self, namespace: &str, by: i64) {
        if let Some(n) = self.lock_counts().get_mut(namespace) {
            *n = n.saturating_add_signed(by);
        }
    }
}

/// An empty commit with immediate durability persists every non-durable commit before it.
fn durable_commit(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(other)?;
    txn.commit().map_err(other)
}

impl KvStore for RedbStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(other)?;
        let table = txn.open_table(KV).map_err(other)?;
        Ok(table
            .get((namespace, key))
            .map_err(other)?
            .map(|v| v.value().to_vec()))
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let added = self.write(|t| {
            t.insert((namespace, key), value)
                .map(|old| old.is_none())
                .map_err(other)
        })?;
        if added {
            self.adjust(namespace, 1);
        }
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let removed = self.write(|t| t.remove((namespace, key)).map(|v| v.is_some()).map_err(other))?;
        if removed {
            self.adjust(namespace, -1);
        }
        Ok(removed)
    }

    fn count(&self, namespace: &str) -> Result<u64, StoreError> {
        if let Some(n) = self.lock_counts().get(namespace) {
            return Ok(*n);
        }
        let n = self.list_keys(namespace, "")?.len() as u64;
        self.lock_counts().insert(namespace.to_owned(), n);
        Ok(n)
    }

    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(other)?;
        let table = txn.open_table(KV).map_err(other)?;
        let mut keys = Vec::new();
        for entry in table.range((namespace, prefix)..).map_err(other)? {
            let (k, _) = entry.map_err(other)?;
            let (ns, key) = k.value();
            if ns != namespace || !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_owned());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_and_state_survive_reopening_and_namespaces_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = RedbStore::open(&path).unwrap();
            store.set("a", "count/x", b"1").unwrap();
            store.set("a", "count/y", b"2").unwrap();
            store.set("a", "other", b"3").unwrap();
            store.set("b", "count/x", b"9").unwrap();
            assert!(store.delete("a", "other").unwrap());
            assert!(!store.delete("a", "other").unwrap());
            store.save_state("a", 3, b"saved").unwrap();
            store.flush().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get("a", "count/x").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.list_keys("a", "count/").unwrap(), ["count/x", "count/y"]);
        assert_eq!(store.list_keys("a", "").unwrap(), ["count/x", "count/y"]);
        assert_eq!(store.list_keys("b", "").unwrap(), ["count/x"]);
        assert_eq!(store.get("c", "count/x").unwrap(), None);
        assert_eq!((store.count("a").unwrap(), store.count("c").unwrap()), (2, 0));
        store.set("a", "count/z", b"3").unwrap();
        store.set("a", "count/z", b"4").unwrap();
        assert_eq!(store.count("a").unwrap(), 3, "a new key counts once");
        store.delete("a", "count/z").unwrap();
        assert_eq!(store.count("a").unwrap(), 2);
        assert_eq!(store.saved_state("a").unwrap(), Some((3, b"saved".to_vec())));
        store.forget_state("a").unwrap();
        assert_eq!(store.saved_state("a").unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        std::fs::write(&path, b"not a database").unwrap();
        let error = RedbStore::open(&path).unwrap_err().to_string();
        assert!(error.contains("store.redb"), "{error}");
    }
}
