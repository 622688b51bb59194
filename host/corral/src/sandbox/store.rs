//! The per-plugin key-value store behind the `store` import.
//!
//! The backend is a trait so that an embedding program (and later the daemon, with a
//! persistent database) can choose where data lives. The host, not the guest, picks the
//! namespace — always the plugin's name — and passes it to every call, so a guest cannot
//! name another plugin's data whatever key it sends: the namespace is a separate
//! argument, never a prefix glued onto the key. Key and value sizes are checked by the
//! host against the plugin's [`crate::Limits`] before the backend is asked.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;

/// Why a store operation failed; the guest sees the same three cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key is empty or too long.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value, or the namespace, is too large.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The backend failed.
    #[error("store failed: {0}")]
    Other(String),
}

/// A key-value backend holding every plugin's namespace.
///
/// Implementations must keep namespaces apart: nothing written under one namespace may
/// be read, listed or deleted through another.
pub trait KvStore: Send + Sync + Debug {
    /// The value under `key` in `namespace`.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key` in `namespace`, replacing any previous value.
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` from `namespace`; returns whether it was there.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;
    /// The keys in `namespace` that start with `prefix`, sorted.
    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// How many keys `namespace` holds. The default lists them; backends that can count
    /// faster should.
    fn count(&self, namespace: &str) -> Result<u64, StoreError> {
        self.list_keys(namespace, "").map(|keys| keys.len() as u64)
    }
}

/// Where a registry keeps plugins' saved state between runs (see
/// [`crate::Registry::save_states`] and [`crate::Registry::restore_saved_state_from`]):
/// one blob per plugin name, with the sidecar's preservation version it was saved under.
/// The daemon keeps it in its database; [`MemoryStore`] keeps it in memory.
pub trait StateStore: Send + Sync + Debug {
    /// Saves `data` as `plugin`'s state, saved under `preservation_version`.
    fn save_state(&self, plugin: &str, preservation_version: u64, data: &[u8]) -> Result<(), StoreError>;
    /// `plugin`'s saved state and its preservation version, if any.
    fn saved_state(&self, plugin: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Forgets `plugin`'s saved state once it is restored. A store whose saved state is
    /// a checkpoint's (kept until the next checkpoint) does nothing here.
    fn forget_state(&self, plugin: &str) -> Result<(), StoreError>;
}

/// An in-memory [`KvStore`]: fast, shared by every plugin of a host, gone when the
/// process exits.
#[derive(Debug, Default)]
pub struct MemoryStore {
    namespaces: Mutex<BTreeMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> R) -> R {
        // A panic elsewhere while holding the lock cannot leave a map half-updated
        // (every operation is a single map call), so a poisoned lock is still sound.
        f(&mut crate::lock(&self.namespaces))
    }
}

impl KvStore for MemoryStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|ns| ns.get(namespace).and_then(|m| m.get(key)).cloned()))
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with(|ns| {
            ns.entry(namespace.to_owned())
                .or_default()
                .insert(key.to_owned(), value.to_vec())
        });
        Ok(())
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.with(|ns| ns.get_mut(namespace).and_then(|m| m.remove(key)).is_some()))
    }

    fn count(&self, namespace: &str) -> Result<u64, StoreError> {
        Ok(self.with(|ns| ns.get(namespace).map_or(0, |m| m.len() as u64)))
    }

    fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|ns| {
            ns.get(namespace)
                .map(|m| {
                    m.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

/// Saved state lives beside the key-value namespaces, in a namespace no plugin name can
/// take (plugin names never start with `.`).
const STATE_NAMESPACE: &str = ".state";

impl StateStore for MemoryStore {
    fn save_state(&self, plugin: &str, preservation_version: u64, data: &[u8]) -> Result<(), StoreError> {
        let mut value = preservation_version.to_le_bytes().to_vec();
        value.extend_from_slice(data);
        self.with(|n| {
            n.entry(STATE_NAMESPACE.to_owned())
                .or_default()
                .insert(plugin.to_owned(), value)
        });
        Ok(())
    }

    fn saved_state(&self, plugin: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.with(|n| {
            let value = n.get(STATE_NAMESPACE)?.get(plugin)?;
            let (version, data) = value.split_at(8);
            Some((u64::from_le_bytes(version.try_into().ok()?), data.to_vec()))
        }))
    }

    fn forget_state(&self, plugin: &str) -> Result<(), StoreError> {
        self.with(|n| n.get_mut(STATE_NAMESPACE).map(|s| s.remove(plugin)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_apart() {
        let s = MemoryStore::new();
        s.set("a", "k", b"1").unwrap();
        assert_eq!(s.get("b", "k").unwrap(), None);
        assert!(!s.delete("b", "k").unwrap());
        assert!(s.list_keys("b", "").unwrap().is_empty());
        assert_eq!(s.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn list_keys_filters_by_prefix_in_order() {
        let s = MemoryStore::new();
        for k in ["count/b", "count/a", "other", "count"] {
            s.set("p", k, b"").unwrap();
        }
        assert_eq!(s.list_keys("p", "count/").unwrap(), ["count/a", "count/b"]);
        assert_eq!(s.list_keys("p", "").unwrap().len(), 4);
    }
}
