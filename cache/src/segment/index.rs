//! The in-memory index `(bucket, key) -> where the committed record lies`.
//!
//! Shared by every worker. Sharded `RwLock`s keep cores from queueing on one lock: a lookup
//! takes one shard's read lock for a hash probe, and writes (one per stored object) are rare.
//! hashbrown's `Equivalent` lets a borrowed key probe the map, so lookups do not allocate.

use std::sync::{Arc, RwLock};

use hashbrown::HashMap;

use super::verify::BodyCheck;
use super::Segment;
use crate::key::{ObjectKey, ObjectKeyRef};
use crate::meta::ObjectMeta;

const SHARDS: usize = 64;

/// Where a committed object's body lies, and what we know about it.
#[derive(Debug)]
pub struct IndexEntry {
    pub meta: Arc<ObjectMeta>,
    pub(crate) segment: Arc<Segment>,
    pub(crate) body_offset: u64,
    pub(crate) body_crc: u32,
    /// Whether the body has been read back and matched its CRC in this process. Recovery
    /// checks headers and trailers only; bodies are checked on first read, so start-up does not
    /// read the whole store ([`super::verify`]).
    pub(crate) check: BodyCheck,
}

type Shard = RwLock<HashMap<ObjectKey, Arc<IndexEntry>, ahash::RandomState>>;

pub(crate) struct Index {
    shards: Box<[Shard]>,
    hasher: ahash::RandomState,
}

impl Index {
    pub fn new() -> Self {
        let hasher = ahash::RandomState::new();
        let shards = (0..SHARDS).map(|_| RwLock::new(HashMap::with_hasher(hasher.clone()))).collect();
        Index { shards, hasher }
    }

    fn shard(&self, key: ObjectKeyRef<'_>) -> &Shard {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, key: ObjectKeyRef<'_>) -> Option<Arc<IndexEntry>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.get(&key).cloned()
    }

    /// Inserts unless the key is present: a stored object is never replaced (the seed: "OSS will
    /// not update the file saved"). Returns the entry that is in the index afterwards.
    pub fn insert_if_absent(&self, entry: Arc<IndexEntry>) -> Arc<IndexEntry> {
        let key = ObjectKey { bucket: entry.meta.bucket.clone(), key: entry.meta.key.clone() };
        let mut shard = self.shard(key.as_ref()).write().unwrap_or_else(|e| e.into_inner());
        shard.entry(key).or_insert(entry).clone()
    }

    /// Removes `entry` if the index still maps its key to that same entry. Removal is by entry,
    /// not by key: between a reader's lookup and its failed body check, the entry may have been
    /// dropped by another reader and the key re-filled, and the re-fill's entry must stay.
    /// Returns whether anything was removed.
    pub fn remove_entry(&self, entry: &Arc<IndexEntry>) -> bool {
        let key = ObjectKeyRef::new(&entry.meta.bucket, &entry.meta.key);
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match shard.get(&key) {
            Some(current) if Arc::ptr_eq(current, entry) => shard.remove(&key).is_some(),
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}
