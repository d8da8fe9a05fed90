//! The in-memory index `(bucket, key) -> the key's current version`: where its committed record
//! lies, or (for a while) that it was deleted. It also keeps each bucket's keys in order, for
//! listing.
//!
//! Shared by every worker. Sharded `RwLock`s keep cores from queueing on one lock: a key's shard
//! is chosen by a hash of `(bucket, key)`, a lookup takes that shard's read lock, and writes
//! (one per stored or deleted object) are rare. A commit or a deletion holds its key's shard
//! ([`KeyLock`]) from deciding whether it wins to publishing the result, so the index changes in
//! the same order as the sequence numbers written on disk, and recovery (highest sequence wins)
//! rebuilds what was visible.
//!
//! Memory: within a shard each bucket's keys are a [`KeyPages`] (keys packed in pages, in
//! order), and an object costs its key's bytes plus a 40-byte [`Slot`] and a few bytes of page
//! structure (`cache/examples/store_scale.rs`, `bench/RESULTS.md`). Everything else about an
//! object (saved headers, MD5, dates) is read back from its record when a reader asks.
//!
//! Listing ([`Index::list`]) merges the bucket's keys from every shard in order, under all the
//! shards' read locks for the page's duration (writers wait that long, readers do not).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashMap;

use super::pages::{self, KeyPages};
use super::Segment;
use crate::key::{ObjectKey, ObjectKeyRef};

const SHARDS: usize = 64;

/// What the index keeps of one object, inline in its bucket's key pages.
#[derive(Debug)]
pub(crate) struct Slot {
    pub segment: Arc<Segment>,
    /// Where the object's record starts in `segment`.
    pub record_offset: u64,
    /// The commit's sequence number: this version of the key.
    pub seq: u64,
    /// Body bytes.
    pub size: u64,
    /// Bytes from the record's start to its body (`RecordHeader::body_start`; `u32::MAX` if
    /// more), so that a read of a record not in memory asks for the record and nothing past it
    /// (`Store::cold_spans`). It takes the slot's padding: a slot is 40 bytes either way.
    pub head: u32,
    /// Bit 31 ([`VERIFIED`]): the body matched its CRC in this process (recovery checks
    /// headers and trailers only; bodies on first read, see `verify`). Bits 0-30: when it was
    /// last read, in seconds since the store opened (coarse: for eviction of cache-mode
    /// buckets, least recently used first).
    state: AtomicU32,
}

const VERIFIED: u32 = 1 << 31;

// One per stored object, 10 million of them in `bench/store_scale.sh`: `head` must stay in the
// padding after `state`.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Slot>() == 40);

impl Slot {
    pub fn new(
        segment: Arc<Segment>,
        record_offset: u64,
        seq: u64,
        size: u64,
        head: u64,
        verified: bool,
        at: u32,
    ) -> Slot {
        let state = (at & !VERIFIED) | if verified { VERIFIED } else { 0 };
        let head = u32::try_from(head).unwrap_or(u32::MAX);
        Slot { segment, record_offset, seq, size, head, state: AtomicU32::new(state) }
    }

    /// Whether this slot is the record at `segment`/`record_offset` (the identity of a version
    /// as readers and compaction hold it).
    pub fn is(&self, segment: u64, record_offset: u64) -> bool {
        self.segment.id == segment && self.record_offset == record_offset
    }

    pub fn verified(&self) -> bool {
        self.state.load(Ordering::Acquire) & VERIFIED != 0
    }

    pub fn last_access(&self) -> u32 {
        self.state.load(Ordering::Relaxed) & !VERIFIED
    }

    /// Records a read at `now`. Stores only when the second changed, so a hot object's cache
    /// line is not written on every hit.
    fn touch(&self, now: u32) {
        let now = now & !VERIFIED;
        let _ = self.state.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            (s & !VERIFIED != now).then_some((s & VERIFIED) | now)
        });
    }

    fn set_verified(&self) {
        self.state.fetch_or(VERIFIED, Ordering::AcqRel);
    }

    pub fn loc(&self) -> Loc {
        Loc {
            segment: self.segment.clone(),
            record_offset: self.record_offset,
            seq: self.seq,
            size: self.size,
            head: self.head,
            verified: self.verified(),
            last_access: self.last_access(),
        }
    }
}

/// A copy of a [`Slot`], taken under its shard's lock.
#[derive(Clone, Debug)]
pub(crate) struct Loc {
    pub segment: Arc<Segment>,
    pub record_offset: u64,
    pub seq: u64,
    pub size: u64,
    pub head: u32,
    pub verified: bool,
    pub last_access: u32,
}

impl Loc {
    /// Whether this is the record at `segment`/`record_offset` ([`Slot::is`], on the copy).
    pub fn is(&self, segment: u64, record_offset: u64) -> bool {
        self.segment.id == segment && self.record_offset == record_offset
    }
}

/// One shard: each bucket's committed objects in key order, and the keys whose newest version
/// is a deletion, with that deletion's sequence number. Tombstones are kept in memory only
/// while a conditional writer that began before them may still commit
/// ([`Index::prune_tombstones`]); on disk they stay until compaction.
#[derive(Default)]
pub(crate) struct ShardMaps {
    buckets: HashMap<Box<str>, KeyPages<Slot>, ahash::RandomState>,
    deleted: HashMap<ObjectKey, u64, ahash::RandomState>,
}

impl ShardMaps {
    fn get(&self, key: ObjectKeyRef<'_>) -> Option<&Slot> {
        self.buckets.get(key.bucket)?.get(key.key.as_bytes())
    }
}

type Shard = RwLock<ShardMaps>;

pub(crate) struct Index {
    shards: Box<[Shard]>,
    hasher: ahash::RandomState,
    objects: AtomicU64,
    live_bytes: AtomicU64,
}

/// A key's shard, write-locked: what its current version is, and the means to replace it. Held
/// by a commit or a deletion from its decision to its index update, so that commits of one key
/// are decided, numbered and made visible one at a time, in sequence order.
pub(crate) struct KeyLock<'a> {
    maps: RwLockWriteGuard<'a, ShardMaps>,
    key: ObjectKeyRef<'a>,
    index: &'a Index,
}

impl KeyLock<'_> {
    /// The sequence number of the key's current version (an object or a deletion still
    /// remembered), if any.
    pub fn current_seq(&self) -> Option<u64> {
        let object = self.current().map(|s| s.seq);
        let deleted = self.maps.deleted.get(&self.key).copied();
        object.max(deleted)
    }

    /// The key's current object, if any.
    pub fn current(&self) -> Option<&Slot> {
        self.maps.get(self.key)
    }

    /// Makes `slot` the key's version. Returns the object it replaced.
    pub fn put(&mut self, slot: Slot) -> Option<Slot> {
        self.maps.deleted.remove(&self.key);
        let size = slot.size;
        let pages = match self.maps.buckets.get_mut(self.key.bucket) {
            Some(pages) => pages,
            None => self.maps.buckets.entry(self.key.bucket.into()).or_default(),
        };
        let old = pages.insert(self.key.key.as_bytes(), slot);
        self.index.counted(old.as_ref(), Some(size));
        old
    }

    /// Records the key's deletion at `seq`. Returns the object it removed.
    pub fn delete(&mut self, seq: u64) -> Option<Slot> {
        self.maps.deleted.insert(ObjectKey::new(self.key.bucket, self.key.key), seq);
        let old = self.remove();
        self.index.counted(old.as_ref(), None);
        old
    }

    fn remove(&mut self) -> Option<Slot> {
        let pages = self.maps.buckets.get_mut(self.key.bucket)?;
        let old = pages.remove(self.key.key.as_bytes());
        if pages.is_empty() {
            self.maps.buckets.remove(self.key.bucket);
        }
        old
    }
}

/// One page of a listing ([`Index::list`]).
#[derive(Debug, Default)]
pub(crate) struct ListPage {
    /// Keys and where their records are, in key order.
    pub objects: Vec<(Box<str>, Loc)>,
    /// The common prefixes keys were rolled up into (with a delimiter), in order.
    pub prefixes: Vec<String>,
    /// For a truncated page: its last entry (key or prefix), where the next page starts after.
    pub next_after: Option<String>,
}

impl Index {
    pub fn new() -> Self {
        let hasher = ahash::RandomState::new();
        let shards = (0..SHARDS).map(|_| RwLock::new(ShardMaps::default())).collect();
        Index { shards, hasher, objects: AtomicU64::new(0), live_bytes: AtomicU64::new(0) }
    }

    fn shard(&self, key: ObjectKeyRef<'_>) -> &Shard {
        &self.shards[self.shard_of(key)]
    }

    fn read(&self, key: ObjectKeyRef<'_>) -> RwLockReadGuard<'_, ShardMaps> {
        self.shard(key).read().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the object and byte counts: `old` left the index, an object of `new` bytes came.
    fn counted(&self, old: Option<&Slot>, new: Option<u64>) {
        if let Some(old) = old {
            self.objects.fetch_sub(1, Ordering::Relaxed);
            self.live_bytes.fetch_sub(old.size, Ordering::Relaxed);
        }
        if let Some(size) = new {
            self.objects.fetch_add(1, Ordering::Relaxed);
            self.live_bytes.fetch_add(size, Ordering::Relaxed);
        }
    }

    /// Where the key's current object is, without counting it as read.
    pub fn get(&self, key: ObjectKeyRef<'_>) -> Option<Loc> {
        self.read(key).get(key).map(Slot::loc)
    }

    /// Where the key's current object is, counting a read at `now_secs`.
    pub fn get_for_read(&self, key: ObjectKeyRef<'_>, now_secs: u32) -> Option<Loc> {
        let shard = self.read(key);
        let slot = shard.get(key)?;
        slot.touch(now_secs);
        Some(slot.loc())
    }

    /// The sequence number of the key's current object, if it has one (a cheap check that a
    /// cached copy is still the current version), counting a read at `now_secs`.
    pub fn object_seq(&self, key: ObjectKeyRef<'_>, now_secs: u32) -> Option<u64> {
        let shard = self.read(key);
        shard.get(key).map(|slot| {
            slot.touch(now_secs);
            slot.seq
        })
    }

    /// Whether the key's current object is the record at `segment`/`record_offset` and its
    /// body has been checked; `None` when the key holds another version or none.
    pub fn verified(&self, key: ObjectKeyRef<'_>, segment: u64, record_offset: u64) -> Option<bool> {
        let shard = self.read(key);
        shard.get(key).filter(|s| s.is(segment, record_offset)).map(Slot::verified)
    }

    /// Marks the body of the record at `segment`/`record_offset` checked, if it is still the
    /// key's current object.
    pub fn set_verified(&self, key: ObjectKeyRef<'_>, segment: u64, record_offset: u64) {
        let shard = self.read(key);
        if let Some(slot) = shard.get(key).filter(|s| s.is(segment, record_offset)) {
            slot.set_verified();
        }
    }

    pub fn lock_key<'a>(&'a self, key: ObjectKeyRef<'a>) -> KeyLock<'a> {
        KeyLock { maps: self.shard(key).write().unwrap_or_else(|e| e.into_inner()), key, index: self }
    }

    /// How many shards the index has (recovery builds them one by one).
    pub const SHARDS: usize = SHARDS;

    /// The shard `key` belongs to (recovery sorts what it finds by it).
    pub fn shard_of(&self, key: ObjectKeyRef<'_>) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Recovery: fills the empty shard `shard` with its objects, given in ascending (bucket,
    /// key) order, one per key, all belonging to it ([`Index::shard_of`]). The pages are built
    /// in order ([`KeyPages::from_sorted`]).
    pub fn rebuild_shard<'k>(&self, shard: usize, objects: impl IntoIterator<Item = (&'k str, &'k [u8], Slot)>) {
        let mut maps = ShardMaps::default();
        let (mut count, mut bytes) = (0u64, 0u64);
        let mut objects = objects.into_iter().peekable();
        while let Some(&(bucket, _, _)) = objects.peek() {
            let run = std::iter::from_fn(|| objects.next_if(|(b, _, _)| *b == bucket)).map(|(_, key, slot)| {
                count += 1;
                bytes += slot.size;
                (key, slot)
            });
            let pages = KeyPages::from_sorted(run);
            let replaced = maps.buckets.insert(bucket.into(), pages);
            debug_assert!(replaced.is_none(), "buckets out of order");
        }
        let mut current = self.shards[shard].write().unwrap_or_else(|e| e.into_inner());
        debug_assert!(current.buckets.is_empty(), "a shard is rebuilt once, from empty");
        *current = maps;
        self.objects.fetch_add(count, Ordering::Relaxed);
        self.live_bytes.fetch_add(bytes, Ordering::Relaxed);
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

    /// The keys of `bucket` that start with `prefix`, in no particular order (for admin
    /// operations: purge).
    pub fn keys_with_prefix(&self, bucket: &str, prefix: &str) -> Vec<ObjectKey> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let maps = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(pages) = maps.buckets.get(bucket) {
                let keys = pages.iter_from(prefix.as_bytes()).take_while(|(k, _)| k.starts_with(prefix.as_bytes()));
                out.extend(keys.map(|(k, _)| ObjectKey::new(bucket, key_str(k))));
            }
        }
        out
    }

    /// Removes the key's object if it is still the record at `segment`/`record_offset` (by
    /// record, not by key: between a reader's lookup and its failed body check, the key may
    /// have been re-filled, and the re-fill must stay). Returns what was removed.
    pub fn remove_entry(&self, key: ObjectKeyRef<'_>, segment: u64, record_offset: u64) -> Option<Slot> {
        let mut lock = self.lock_key(key);
        if !lock.current().is_some_and(|s| s.is(segment, record_offset)) {
            return None;
        }
        let old = lock.remove();
        self.counted(old.as_ref(), None);
        old
    }

    /// Replaces the key's object by `slot` if it is still the record at `segment`/
    /// `record_offset` (compaction moving a record). Returns whether it did.
    pub fn replace_entry(&self, key: ObjectKeyRef<'_>, segment: u64, record_offset: u64, slot: Slot) -> bool {
        let mut lock = self.lock_key(key);
        if !lock.current().is_some_and(|s| s.is(segment, record_offset)) {
            return false;
        }
        lock.put(slot);
        true
    }

    pub fn len(&self) -> usize {
        self.objects.load(Ordering::Relaxed) as usize
    }

    /// Bytes of the bodies of the objects in the index.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Calls `f` with every object (bucket, key, slot), shard by shard, each under its read
    /// lock.
    pub fn for_each_object(&self, mut f: impl FnMut(&str, &str, &Slot)) {
        for shard in self.shards.iter() {
            let maps = shard.read().unwrap_or_else(|e| e.into_inner());
            for (bucket, pages) in maps.buckets.iter() {
                for (key, slot) in pages.iter() {
                    f(bucket, key_str(key), slot);
                }
            }
        }
    }

    /// One page of `bucket`'s keys in byte order: those that start with `prefix` and sort after
    /// `after`, at most `max` entries (objects and common prefixes together, as S3 counts
    /// them). With a `delimiter`, keys with it after the prefix are rolled up into the common
    /// prefix ending at its first occurrence, listed once; a page that starts after such a
    /// prefix (`after` is the prefix) skips the keys under it.
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> ListPage {
        let guards: Vec<_> = self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner())).collect();
        let maps: Vec<&KeyPages<Slot>> = guards.iter().filter_map(|g| g.buckets.get(bucket)).collect();
        let mut from = prefix.as_bytes().to_vec();
        if let Some(after) = after.filter(|a| a.as_bytes() >= prefix.as_bytes()) {
            // The least key after `after`.
            from = after.as_bytes().to_vec();
            from.push(0);
        }
        let mut merge = Merge::new(&maps, &from);
        let mut page = ListPage::default();
        let mut count = 0;
        let mut last: Option<String> = None;
        while let Some((key, slot)) = merge.next() {
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            let key = key_str(key);
            let rolled = delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                let rest = &key[prefix.len()..];
                rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
            });
            if let Some(p) = rolled.filter(|p| after == Some(*p)) {
                merge.seek(&past(p));
                continue;
            }
            if count == max {
                page.next_after = last.filter(|_| max > 0);
                break;
            }
            count += 1;
            match rolled {
                Some(p) => {
                    page.prefixes.push(p.to_string());
                    last = Some(p.to_string());
                    merge.seek(&past(p));
                }
                None => {
                    page.objects.push((key.into(), slot.loc()));
                    last = Some(key.to_string());
                }
            }
        }
        page
    }
}

/// The least byte string above every key that starts with `prefix` (keys are UTF-8, in which
/// the byte 0xFF never occurs).
fn past(prefix: &str) -> Vec<u8> {
    let mut bound = prefix.as_bytes().to_vec();
    bound.push(0xFF);
    bound
}

/// Keys are stored from `&str`s, so they are UTF-8.
fn key_str(key: &[u8]) -> &str {
    std::str::from_utf8(key).unwrap_or_default()
}

/// The keys of several shards' pages of one bucket, merged in order.
struct Merge<'a> {
    maps: &'a [&'a KeyPages<Slot>],
    iters: Vec<pages::Iter<'a, Slot>>,
    heads: Vec<Option<(&'a [u8], &'a Slot)>>,
}

impl<'a> Merge<'a> {
    fn new(maps: &'a [&'a KeyPages<Slot>], from: &[u8]) -> Merge<'a> {
        let mut merge = Merge { maps, iters: Vec::new(), heads: Vec::new() };
        merge.seek(from);
        merge
    }

    /// Restarts every shard at the first key at or after `from`.
    fn seek(&mut self, from: &[u8]) {
        self.iters = self.maps.iter().map(|m| m.iter_from(from)).collect();
        self.heads = self.iters.iter_mut().map(Iterator::next).collect();
    }

    fn next(&mut self) -> Option<(&'a [u8], &'a Slot)> {
        let (i, _) =
            self.heads.iter().enumerate().filter_map(|(i, h)| h.map(|(k, _)| (i, k))).min_by(|a, b| a.1.cmp(b.1))?;
        let head = self.heads[i].take();
        self.heads[i] = self.iters[i].next();
        head
    }
}
