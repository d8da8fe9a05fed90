//! The in-memory index `(bucket, key) -> the key's current version`: where its committed record
//! lies, or (for a while) that it was deleted.
//!
//! Shared by every worker. Sharded `RwLock`s keep cores from queueing on one lock: a lookup
//! takes one shard's read lock for a hash probe, and writes (one per stored or deleted object)
//! are rare. A commit or a deletion holds its key's shard ([`KeyLock`]) from deciding whether it
//! wins to publishing the result, so the index changes in the same order as the sequence
//! numbers written on disk, and recovery (highest sequence wins) rebuilds what was visible.
//! hashbrown's `Equivalent` lets a borrowed key probe the map, so lookups do not allocate.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

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
    /// When it was last read, in seconds since the store opened (coarse: for eviction of
    /// cache-mode buckets, least recently used first).
    pub(crate) last_access: AtomicU32,
}

/// One shard: the committed objects, and the keys whose newest version is a deletion, with that
/// deletion's sequence number. Tombstones are kept in memory only while a conditional writer
/// that began before them may still commit ([`Index::prune_tombstones`]); on disk they stay
/// until compaction.
#[derive(Default)]
pub(crate) struct ShardMaps {
    objects: HashMap<ObjectKey, Arc<IndexEntry>, ahash::RandomState>,
    deleted: HashMap<ObjectKey, u64, ahash::RandomState>,
}

type Shard = RwLock<ShardMaps>;

impl IndexEntry {
    /// Records a read at `now_secs`. Stores only when the second changed, so a hot object's
    /// cache line is not written on every hit.
    pub(crate) fn touch(&self, now_secs: u32) {
        if self.last_access.load(Ordering::Relaxed) != now_secs {
            self.last_access.store(now_secs, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Index {
    shards: Box<[Shard]>,
    hasher: ahash::RandomState,
}

/// A key's shard, write-locked: what its current version is, and the means to replace it. Held
/// by a commit or a deletion from its decision to its index update, so that commits of one key
/// are decided, numbered and made visible one at a time, in sequence order.
pub(crate) struct KeyLock<'a> {
    maps: RwLockWriteGuard<'a, ShardMaps>,
    key: ObjectKeyRef<'a>,
}

impl KeyLock<'_> {
    /// The sequence number of the key's current version (an object or a deletion still
    /// remembered), if any.
    pub fn current_seq(&self) -> Option<u64> {
        let object = self.maps.objects.get(&self.key).map(|e| e.meta.seq);
        let deleted = self.maps.deleted.get(&self.key).copied();
        object.max(deleted)
    }

    /// The key's current object, if any.
    pub fn current_entry(&self) -> Option<&Arc<IndexEntry>> {
        self.maps.objects.get(&self.key)
    }

    /// Makes `entry` the key's version. Returns the object it replaced.
    pub fn put(&mut self, entry: Arc<IndexEntry>) -> Option<Arc<IndexEntry>> {
        self.maps.deleted.remove(&self.key);
        self.maps.objects.insert(ObjectKey::new(self.key.bucket, self.key.key), entry)
    }

    /// Records the key's deletion at `seq`. Returns the object it removed.
    pub fn delete(&mut self, seq: u64) -> Option<Arc<IndexEntry>> {
        self.maps.deleted.insert(ObjectKey::new(self.key.bucket, self.key.key), seq);
        self.maps.objects.remove(&self.key)
    }
}

impl Index {
    pub fn new() -> Self {
        let hasher = ahash::RandomState::new();
        let shards = (0..SHARDS)
            .map(|_| {
                RwLock::new(ShardMaps {
                    objects: HashMap::with_hasher(hasher.clone()),
                    deleted: HashMap::with_hasher(hasher.clone()),
                })
            })
            .collect();
        Index { shards, hasher }
    }

    fn shard(&self, key: ObjectKeyRef<'_>) -> &Shard {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }

    pub fn get(&self, key: ObjectKeyRef<'_>) -> Option<Arc<IndexEntry>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.objects.get(&key).cloned()
    }

    /// The sequence number of the key's current object, if it has one (a cheap check that a
    /// cached copy is still the current version).
    pub fn object_seq(&self, key: ObjectKeyRef<'_>, now_secs: u32) -> Option<u64> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.objects.get(&key).map(|e| {
            e.touch(now_secs);
            e.meta.seq
        })
    }

    pub fn lock_key<'a>(&'a self, key: ObjectKeyRef<'a>) -> KeyLock<'a> {
        KeyLock { maps: self.shard(key).write().unwrap_or_else(|e| e.into_inner()), key }
    }

    /// Recovery: applies one committed record found on disk. The highest sequence wins; on a
    /// tie (version 1 records, all sequence 0) the version already there stays, so the first
    /// one found wins as in version 1.
    pub fn recover_object(&self, entry: Arc<IndexEntry>) {
        let key = ObjectKeyRef::new(&entry.meta.bucket, &entry.meta.key);
        let mut lock = self.lock_key(key);
        if lock.current_seq().is_none_or(|current| entry.meta.seq > current) {
            lock.put(entry.clone());
        }
    }

    /// Recovery: applies one committed deletion found on disk (same rule as objects).
    pub fn recover_tombstone(&self, key: ObjectKeyRef<'_>, seq: u64) {
        let mut lock = self.lock_key(key);
        if lock.current_seq().is_none_or(|current| seq > current) {
            lock.delete(seq);
        }
    }

    /// Forgets deletions older than `below`: no writer that could still be refused by them is
    /// running. (`u64::MAX`: forget them all.)
    pub fn prune_tombstones(&self, below: u64) -> usize {
        let mut pruned = 0;
        for shard in self.shards.iter() {
            let mut maps = shard.write().unwrap_or_else(|e| e.into_inner());
            let before = maps.deleted.len();
            maps.deleted.retain(|_, seq| *seq >= below);
            pruned += before - maps.deleted.len();
        }
        pruned
    }

    /// Deletions remembered in memory.
    pub fn tombstones(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).deleted.len()).sum()
    }

    /// The keys of `bucket` that start with `prefix`, in no particular order. A scan of every
    /// shard: for admin operations (purge), not for the request path.
    pub fn keys_with_prefix(&self, bucket: &str, prefix: &str) -> Vec<ObjectKey> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let maps = shard.read().unwrap_or_else(|e| e.into_inner());
            out.extend(maps.objects.keys().filter(|k| &*k.bucket == bucket && k.key.starts_with(prefix)).cloned());
        }
        out
    }

    /// Removes `entry` if the index still maps its key to that same entry. Removal is by entry,
    /// not by key: between a reader's lookup and its failed body check, the entry may have been
    /// dropped by another reader and the key re-filled, and the re-fill's entry must stay.
    /// Returns whether anything was removed.
    pub fn remove_entry(&self, entry: &Arc<IndexEntry>) -> bool {
        let key = ObjectKeyRef::new(&entry.meta.bucket, &entry.meta.key);
        let mut shard = self.shard(key).write().unwrap_or_else(|e| e.into_inner());
        match shard.objects.get(&key) {
            Some(current) if Arc::ptr_eq(current, entry) => shard.objects.remove(&key).is_some(),
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).objects.len()).sum()
    }

    /// Calls `f` with every object entry (shard by shard, each under its read lock).
    pub fn for_each_object(&self, mut f: impl FnMut(&Arc<IndexEntry>)) {
        for shard in self.shards.iter() {
            let maps = shard.read().unwrap_or_else(|e| e.into_inner());
            maps.objects.values().for_each(&mut f);
        }
    }

    /// Bytes of the bodies of the objects in the index.
    pub fn live_bytes(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).objects.values().map(|e| e.meta.size).sum::<u64>())
            .sum()
    }
}
