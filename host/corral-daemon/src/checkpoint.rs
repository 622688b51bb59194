//! The daemon's store: each plugin's writes wait in memory until its next checkpoint,
//! which commits them in the same transaction as its log position and saved state
//! (see [`RedbStore::commit_checkpoint`]). Reads see the plugin's own writes at once.
//!
//! So after a crash a plugin's store is exactly what it was at the position it resumes
//! from: the writes made while processing the messages it replays are not there twice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use crate::lock;
use crate::persist::{CheckpointWrite, Checkpointed, RedbStore};
use corral::{KvStore, StoreError};

#[derive(Debug, Default)]
struct Pending {
    /// Key → the value written, or `None` for a delete.
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// How the namespace's key count differs from the database's.
    delta: i64,
}

/// A [`KvStore`] over a [`RedbStore`] whose writes wait for a checkpoint.
#[derive(Debug)]
pub(crate) struct CheckpointStore {
    db: RedbStore,
    pending: Mutex<HashMap<String, Pending>>,
}

impl CheckpointStore {
    pub(crate) fn new(db: RedbStore) -> CheckpointStore {
        CheckpointStore {
            db,
            pending: Mutex::default(),
        }
    }

    /// The database under it.
    pub(crate) fn db(&self) -> &RedbStore {
        &self.db
    }

    /// Commits `plugin`'s checkpoint: its position, its state if given, and its store
    /// writes since the last checkpoint, in one durable transaction. On failure the
    /// writes stay pending for the next try.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) fn checkpoint(
        &self,
        plugin: &str,
        at: Checkpointed,
        state: Option<(u64, &[u8])>,
    ) -> Result<(), StoreError> {
        self.commit(plugin, Some(at), None, state)
    }

    /// Commits the decoder `plugin`'s checkpoint: its input's position, its state if
    /// given, and its store writes since the last checkpoint, in one durable
    /// transaction (see `intake`).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) fn checkpoint_input(
        &self,
        plugin: &str,
        input: &[u8],
        state: Option<(u64, &[u8])>,
    ) -> Result<(), StoreError> {
        self.commit(plugin, None, Some(input), state)
    }

    fn commit(
        &self,
        plugin: &str,
        at: Option<Checkpointed>,
        input: Option<&[u8]>,
        state: Option<(u64, &[u8])>,
    ) -> Result<(), StoreError> {
        let taken = lock(&self.pending).remove(plugin).unwrap_or_default();
        let result = self.db.commit_checkpoint(&CheckpointWrite {
            plugin,
            at,
            input,
            state,
            writes: &taken.writes,
        });
        if result.is_err() {
            // Put them back under any made since.
            let mut pending = lock(&self.pending);
            let now = pending.entry(plugin.to_owned()).or_default();
            let newer = std::mem::take(&mut now.writes);
            now.writes = taken.writes;
            now.writes.extend(newer);
            now.delta += taken.delta;
        }
        result
    }

    /// Forgets `plugin`'s writes since its last checkpoint (it is rewound to it).
    pub(crate) fn discard(&self, plugin: &str) {
        lock(&self.pending).remove(plugin);
    }

    /// Store writes of `plugin` waiting for its checkpoint.
    pub(crate) fn pending_writes_of(&self, plugin: &str) -> usize {
        lock(&self.pending).get(plugin).map_or(0, |p| p.writes.len())
    }

    /// Store writes waiting, over every plugin.
    pub(crate) fn pending_writes(&self) -> usize {
        lock(&self.pending).values().map(|p| p.writes.len()).sum()
    }

    fn existed(&self, pending: &Pending, namespace: &str, key: &str) -> Result<bool, StoreError> {
        match pending.writes.get(key) {
            Some(value) => Ok(value.is_some()),
            None => Ok(self.db.get(namespace, key)?.is_some()),
        }
    }

    fn write(&self, namespace: &str, key: &str, value: Option<&[u8]>) -> Result<bool, StoreError> {
        let mut all = lock(&self.pending);
        let pending = all.entry(namespace.to_owned()).or_default();
        let existed = self.existed(pending, namespace, key)?;
        pending.delta += i64::from(value.is_some()) - i64::from(existed);
        pending.writes.insert(key.to_owned(), value.map(<[u8]>::to_vec));
        Ok(existed)
    }
}

impl KvStore for CheckpointStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = lock(&self.pending).get(namespace).and_then(|p| p.writes.get(key)) {
            return Ok(value.clone());
        }
        self.db.get(namespace, key)
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(namespace, key, Some(value)).map(|_| ())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        self.write(namespace, key, None)
    }

    fn count(&self, namespace: &str) -> Result<u64, StoreError> {
        let delta = lock(&self.pending).get(namespace).map_or(0, |p| p.delta);
        Ok(self.db.count(namespace)?.saturating_add_signed(delta))
    }

    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys: BTreeSet<String> = self.db.list_keys(namespace, prefix)?.into_iter().collect();
        if let Some(pending) = lock(&self.pending).get(namespace) {
            for (key, value) in pending
                .writes
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            {
                if !key.starts_with(prefix) {
                    break;
                }
                match value {
                    Some(_) => keys.insert(key.clone()),
                    None => keys.remove(key),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wait_for_the_checkpoint_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let db = RedbStore::open(&path).unwrap();
        db.set("p", "old", b"0").unwrap();
        db.flush().unwrap();
        let store = CheckpointStore::new(db);
        store.set("p", "a", b"1").unwrap();
        assert!(store.delete("p", "old").unwrap());
        assert_eq!(store.get("p", "a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get("p", "old").unwrap(), None);
        assert_eq!(store.list_keys("p", "").unwrap(), ["a"]);
        assert_eq!(store.count("p").unwrap(), 1);
        assert_eq!(store.db().get("p", "a").unwrap(), None, "not committed yet");
        store.checkpoint("p", (5, 50, 1, 0), Some((0, b"state"))).unwrap();
        assert_eq!(store.db().get("p", "a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.db().get("p", "old").unwrap(), None);
        assert_eq!(store.count("p").unwrap(), 1);
        store.set("p", "b", b"2").unwrap();
        store.discard("p");
        assert_eq!(store.get("p", "b").unwrap(), None, "rewound");
        drop(store);
        let db = RedbStore::open(&path).unwrap();
        assert_eq!(db.checkpoints().unwrap()["p"], (5, 50, 1, 0));
        assert_eq!(db.saved_state("p").unwrap(), Some((0, b"state".to_vec())));
    }
}
