//! The hot tier: a foyer `HybridCache` (RAM, then its disk tier under `cache.dir`) in front of the
//! segment store.
//!
//! foyer is a cache, not a store: its disk tier drops entries silently when its write buffers
//! are full or an entry exceeds a block (FIELD-NOTES), so nothing here is authoritative. Objects
//! up to `max_object_bytes` are cached whole; larger ones are served from the store's mapping,
//! which the kernel's page cache already keeps hot.
//!
//! foyer runs its disk I/O on tokio; it gets a small dedicated runtime that this type owns. Its
//! futures are awaited from monoio tasks, which works because monoio is built with `sync`.
//!
//! Keys are 128-bit digests ([`crate::key::hot_key`]); values carry bucket and key, and a value
//! whose names differ from the lookup's is a miss.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy,
    RecoverMode, Source, Spawner,
};

use crate::key::{hot_key, ObjectKeyRef};
use crate::meta::{ObjectMeta, RecordMeta};
use crate::segment::StoredObject;
use crate::{Error, Result};

/// foyer disk-tier block size. An entry must fit in a block minus foyer's own overhead.
const BLOCK_BYTES: usize = 4 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotConfig {
    pub memory_bytes: usize,
    /// 0 disables the disk tier.
    pub disk_bytes: u64,
    pub dir: PathBuf,
    /// Largest object cached whole.
    pub max_object_bytes: usize,
}

impl HotConfig {
    /// The largest `max_object_bytes` the disk tier can hold.
    pub const MAX_OBJECT_BYTES: usize = BLOCK_BYTES / 2;
}

/// A cached object. Cloning is two refcount increments.
#[derive(Clone, Debug)]
pub struct HotObject {
    pub meta: Arc<ObjectMeta>,
    pub body: Bytes,
}

/// Which tier answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotTier {
    Memory,
    Disk,
}

impl HotTier {
    pub fn as_str(self) -> &'static str {
        match self {
            HotTier::Memory => "memory",
            HotTier::Disk => "disk-cache",
        }
    }
}

pub struct HotCache {
    cache: HybridCache<u128, HotObject>,
    max_object_bytes: usize,
    doorkeeper: Doorkeeper,
    /// The disk tier's size as built (see [`HotCache::open`]).
    disk_bytes: u64,
    // Declared last: dropped after the cache, whose close runs on it.
    _runtime: tokio::runtime::Runtime,
}

impl HotCache {
    /// Builds the cache (recovering its disk tier). Blocks; call before the workers start.
    ///
    /// The disk tier lays out its whole size in files at once. So that it never takes the space
    /// the store needs (on a 64 MiB disk a 1 GiB tier took it: 36 objects stored instead of 63),
    /// it is given at most a quarter of the free space of its filesystem, counting its own files
    /// from a previous run, and none when that is under [`MIN_DISK_BYTES`]; the size it got is
    /// [`HotCache::disk_bytes`].
    pub fn open(config: &HotConfig) -> Result<HotCache> {
        let mut config = config.clone();
        if config.disk_bytes > 0 {
            std::fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
            let own = dir_bytes(&config.dir);
            let free = crate::segment::free_bytes(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
            let fair = (free + own) / 4 / BLOCK_BYTES as u64 * BLOCK_BYTES as u64;
            if config.disk_bytes > fair {
                tracing::warn!(
                    configured = config.disk_bytes,
                    granted = if fair >= MIN_DISK_BYTES { fair } else { 0 },
                    free,
                    "cache.disk_bytes lowered to a quarter of the free space of its filesystem"
                );
                config.disk_bytes = if fair >= MIN_DISK_BYTES { fair } else { 0 };
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            // Disk-tier writes go through tokio's blocking pool; unbounded, it grew to 73
            // threads under load in the benchmark.
            .max_blocking_threads(4)
            .thread_name("foyer")
            .enable_all()
            .build()
            .map_err(|e| Error::Hot(format!("tokio runtime: {e}")))?;
        let spawner = Spawner::from(runtime.handle().clone());
        let cache = runtime.block_on(async {
            let memory = HybridCacheBuilder::new()
                .with_name("edgemirror-hot")
                // An entry reaches the disk tier when memory evicts it. Writing on insertion
                // instead serialised every newly cached object (a full copy) on the serving core
                // right after its fill: the cold 1 MiB miss took 3.5 ms against the origin's
                // 0.7 ms in bench/RESULTS.md. The store already has every object on disk.
                .with_policy(HybridCachePolicy::WriteOnEviction)
                .memory(config.memory_bytes.max(1))
                .with_weighter(|_k: &u128, v: &HotObject| v.weight());
            let storage = memory.storage().with_spawner(spawner);
            if config.disk_bytes == 0 {
                return storage.build().await;
            }
            let device = FsDeviceBuilder::new(&config.dir).with_capacity(config.disk_bytes as usize).build()?;
            storage
                .with_engine_config(
                    BlockEngineConfig::new(device)
                        .with_block_size(BLOCK_BYTES)
                        // The default 4 MiB flush buffer dropped ~25% of a 200 x 64 KiB burst
                        // (FIELD-NOTES); 8 blocks of slack absorb bursts of hot objects.
                        .with_buffer_pool_size(8 * BLOCK_BYTES)
                        .with_flushers(1)
                        .with_reclaimers(1),
                )
                .with_recover_mode(RecoverMode::Quiet)
                .build()
                .await
        });
        let cache = cache.map_err(|e| Error::Hot(format!("building foyer at {}: {e}", config.dir.display())))?;
        Ok(HotCache {
            cache,
            max_object_bytes: config.max_object_bytes,
            doorkeeper: Doorkeeper::new(config.memory_bytes / DOORKEEPER_BYTES_PER_SLOT),
            disk_bytes: config.disk_bytes,
            _runtime: runtime,
        })
    }

    /// The disk tier's size (0: none), after [`HotCache::open`] fitted it to the free space.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    pub fn admits(&self, size: u64) -> bool {
        size <= self.max_object_bytes as u64
    }

    /// Looks the object up in memory, then on the disk tier.
    pub async fn get(&self, key: ObjectKeyRef<'_>) -> Option<(HotObject, HotTier)> {
        let hash = hot_key(key);
        // Memory first, synchronously: the hybrid `get` allocates a fetch context per call even
        // when the entry is in memory; the memory tier's own lookup allocates nothing.
        if let Some(entry) = self.cache.memory().get(&hash) {
            let obj = entry.value();
            return obj.is_for(key).then(|| (obj.clone(), HotTier::Memory));
        }
        // The disk tier's index, synchronously: the hybrid `get` runs its disk lookup as a task
        // on foyer's runtime, another thread, even for a key the tier does not have (every
        // miss, and every store hit never evicted to the tier), and wakes this core back when
        // it is done. That hop was 9.5% of the node's samples in single cold 1 KiB misses
        // (bench/RESULTS.md, "Issue 14, seventh pass"). An entry still in flight to the tier
        // may be reported absent: a miss here falls back to the store, which has every object.
        if !self.cache.storage().may_contains(&hash) {
            return None;
        }
        let entry = match self.cache.get(&hash).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "hot cache read failed; falling back to the store");
                return None;
            }
        };
        let obj = entry.value();
        if !obj.is_for(key) {
            return None;
        }
        let tier = if entry.source() == Source::Disk { HotTier::Disk } else { HotTier::Memory };
        Some((obj.clone(), tier))
    }

    /// Caches a stored object on its second hit from the store within a while (see
    /// [`Doorkeeper`]), copying its body out of the segment mapping into RAM: a hot object then
    /// no longer depends on the page cache keeping its pages (a cold mapped page is a major fault
    /// that stalls the core).
    pub fn insert(&self, obj: &StoredObject) {
        if !self.admits(obj.meta.size) {
            return;
        }
        let key = hot_key(ObjectKeyRef::new(&obj.meta.bucket, &obj.meta.key));
        if !self.doorkeeper.seen_again(key) {
            return;
        }
        let value = HotObject { meta: obj.meta.clone(), body: Bytes::copy_from_slice(&obj.body) };
        self.cache.insert(key, value);
    }

    /// Drops the key's copy from both tiers (a purge, a delete, or a copy found stale). Readers
    /// also check a copy's version against the store, so a copy this misses (the disk tier's
    /// removal is asynchronous) is never served.
    pub fn remove(&self, key: ObjectKeyRef<'_>) {
        self.cache.remove(&hot_key(key));
    }

    /// Bytes held by the memory tier.
    pub fn memory_usage(&self) -> usize {
        self.cache.memory().usage()
    }
}

/// Memory-tier bytes per doorkeeper slot: a slot for every 16 KiB, at least
/// [`Doorkeeper::MIN_SLOTS`].
const DOORKEEPER_BYTES_PER_SLOT: usize = 16 << 10;

/// The memory tier's admission filter: the keys of recent store hits, one per slot (a slot per
/// hash, the newest key wins), as TinyLFU's doorkeeper. A stored object is copied into the
/// memory tier when its key is found in its slot, that is on its second hit while no other key
/// took the slot.
///
/// Why: every copy is an allocation and a copy of the body, and it evicts another object. With
/// a working set larger than the memory tier (bench/peers.sh's disk phase: 32,768 objects of
/// 64 KiB, Zipf 0.99, an 8 MiB tier) copying every store hit was 15% of the node's samples at a
/// fixed 8,000 req/s (the copy 7%, malloc and free 4%, foyer's thread 4%), mostly for objects
/// hit once and evicted before their next hit. With the doorkeeper the node used 76% of its core
/// at that load instead of 82-83%, and 42% of its answers came from memory instead of 32%: the
/// tier keeps objects that are hit again. Shared by the workers; a lost race between two
/// workers only delays or repeats one admission.
struct Doorkeeper {
    slots: Box<[AtomicU64]>,
}

impl Doorkeeper {
    const MIN_SLOTS: usize = 1024;

    fn new(slots: usize) -> Doorkeeper {
        Doorkeeper { slots: (0..slots.max(Self::MIN_SLOTS)).map(|_| AtomicU64::new(0)).collect() }
    }

    /// Whether `key` is in its slot (it is taken out: admitted); if not, it takes the slot.
    fn seen_again(&self, key: u128) -> bool {
        let slot = &self.slots[(key as u64 % self.slots.len() as u64) as usize];
        // The high half tags the key in its slot (never 0, the empty slot).
        let tag = ((key >> 64) as u64).max(1);
        if slot.load(Ordering::Relaxed) == tag {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(tag, Ordering::Relaxed);
            false
        }
    }
}

/// The smallest disk tier worth having (a few blocks); below it there is none.
pub const MIN_DISK_BYTES: u64 = 16 << 20;

/// Bytes allocated to the regular files directly in `dir` (the disk tier's own files from a
/// previous run; they are sparse, so their blocks, not their lengths).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.blocks() * 512).sum()
        })
        .unwrap_or(0)
}

impl HotObject {
    /// A digest collision must not serve another object.
    fn is_for(&self, key: ObjectKeyRef<'_>) -> bool {
        *self.meta.bucket == *key.bucket && *self.meta.key == *key.key
    }

    fn weight(&self) -> usize {
        // The body dominates; the rest is a fixed estimate of metadata and bookkeeping.
        self.body.len() + self.meta.bucket.len() + self.meta.key.len() + 256
    }
}

/// Disk-tier encoding: `len-prefixed bucket | key | record meta | size u64 | md5 | seq u64 |
/// body len u64 | body`. The sequence number lets a reader tell a copy of a deleted or
/// overwritten version from the current one, across restarts too.
impl Code for HotObject {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        let mut meta = Vec::with_capacity(64);
        self.meta.record.encode(&mut meta);
        let mut head = Vec::with_capacity(64 + meta.len());
        for part in [self.meta.bucket.as_bytes(), self.meta.key.as_bytes(), &meta] {
            head.put_u32_le(part.len() as u32);
            head.put_slice(part);
        }
        head.put_u64_le(self.meta.size);
        head.put_slice(&self.meta.md5);
        head.put_u64_le(self.meta.seq);
        head.put_u64_le(self.body.len() as u64);
        w.write_all(&head).map_err(foyer::Error::io_error)?;
        w.write_all(&self.body).map_err(foyer::Error::io_error)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        let bad = |what: &str| foyer::Error::new(foyer::ErrorKind::Parse, format!("hot object: {what}"));
        let read_part = |r: &mut dyn std::io::Read, max: usize| -> foyer::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).map_err(foyer::Error::io_error)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > max {
                return Err(bad("length out of range"));
            }
            let mut v = vec![0u8; len];
            r.read_exact(&mut v).map_err(foyer::Error::io_error)?;
            Ok(v)
        };
        let bucket = read_part(r, 1024)?;
        let key = read_part(r, 4096)?;
        let meta = read_part(r, 1 << 20)?;
        let mut fixed = [0u8; 8 + 16 + 8 + 8];
        r.read_exact(&mut fixed).map_err(foyer::Error::io_error)?;
        let mut fixed = &fixed[..];
        let size = fixed.get_u64_le();
        let mut md5 = [0u8; 16];
        fixed.copy_to_slice(&mut md5);
        let seq = fixed.get_u64_le();
        let body_len = fixed.get_u64_le();
        if body_len != size || body_len > HotConfig::MAX_OBJECT_BYTES as u64 {
            return Err(bad("body length"));
        }
        let mut body = vec![0u8; body_len as usize];
        r.read_exact(&mut body).map_err(foyer::Error::io_error)?;
        let bucket = String::from_utf8(bucket).map_err(|_| bad("bucket utf-8"))?;
        let key = String::from_utf8(key).map_err(|_| bad("key utf-8"))?;
        let record = RecordMeta::decode(&meta).map_err(|_| bad("record meta"))?;
        Ok(HotObject {
            meta: Arc::new(ObjectMeta { bucket: bucket.into(), key: key.into(), size, md5, record, seq }),
            body: Bytes::from(body),
        })
    }

    fn estimated_size(&self) -> usize {
        self.body.len() + self.meta.bucket.len() + self.meta.key.len() + 128
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::SavedHeader;
    use std::time::SystemTime;

    /// A hot cache in `dir` that caches objects of up to 64 KiB.
    fn open(dir: &std::path::Path, memory_bytes: usize, disk_bytes: u64) -> HotCache {
        HotCache::open(&HotConfig { memory_bytes, disk_bytes, dir: dir.to_path_buf(), max_object_bytes: 64 << 10 })
            .unwrap()
    }

    fn object(key: &str, len: usize) -> StoredObject {
        let mut record = RecordMeta::new(SystemTime::now());
        record.headers.push((SavedHeader::CacheControl, Bytes::from_static(b"max-age=60")));
        StoredObject {
            meta: Arc::new(ObjectMeta {
                bucket: "b".into(),
                key: key.into(),
                size: len as u64,
                md5: [7; 16],
                record,
                seq: 3,
            }),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn memory_hit_and_codec_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let hot = open(dir.path(), 1 << 20, 16 << 20);
        let obj = object("k", 1000);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // The first store hit only marks the key (the doorkeeper); the second copies it in.
        hot.insert(&obj);
        assert!(rt.block_on(hot.get(ObjectKeyRef::new("b", "k"))).is_none(), "admitted on its first hit");
        hot.insert(&obj);
        hot.insert(&object("too-big", 100 << 10));
        hot.insert(&object("too-big", 100 << 10));
        let (got, tier) = rt.block_on(hot.get(ObjectKeyRef::new("b", "k"))).unwrap();
        assert_eq!(tier, HotTier::Memory);
        assert_eq!(got.body, obj.body);
        assert!(rt.block_on(hot.get(ObjectKeyRef::new("b", "too-big"))).is_none());
        assert!(rt.block_on(hot.get(ObjectKeyRef::new("b", "absent"))).is_none());

        let mut buf = Vec::new();
        got.encode(&mut buf).unwrap();
        let back = HotObject::decode(&mut &buf[..]).unwrap();
        assert_eq!(back.meta, got.meta);
        assert_eq!(back.body, got.body);
        for cut in [0, 5, buf.len() / 2, buf.len() - 1] {
            assert!(HotObject::decode(&mut &buf[..cut]).is_err());
        }
    }

    /// A key is admitted on its second sight while its slot holds it; another key in the same
    /// slot in between makes it start over, and an admitted key's slot is emptied.
    #[test]
    fn the_doorkeeper_admits_a_key_seen_again_in_its_slot() {
        let door = Doorkeeper::new(0);
        assert_eq!(door.slots.len(), Doorkeeper::MIN_SLOTS);
        let n = Doorkeeper::MIN_SLOTS as u128;
        let (a, b, c) = ((5u128 << 64) | 7, (6u128 << 64) | (7 + n), (8u128 << 64) | 9);
        assert!(!door.seen_again(a));
        assert!(!door.seen_again(c), "another slot");
        assert!(door.seen_again(a));
        assert!(!door.seen_again(a), "admitted: its slot starts over");
        assert!(!door.seen_again(b), "same slot, other key: takes it");
        assert!(!door.seen_again(a), "a was pushed out");
        assert!(door.seen_again(a));
        assert!(door.seen_again(c), "c kept its own slot throughout");
        // A key whose high half is 0 still gets a tag that is not the empty slot's.
        assert!(!door.seen_again(3));
        assert!(door.seen_again(3));
    }

    /// Objects the memory tier evicts are written to the disk tier and read back from it; a
    /// key the tier never had is a miss at once (decided from the tier's index, on the caller's
    /// thread).
    #[test]
    fn evicted_objects_are_read_back_from_the_disk_tier() {
        let dir = tempfile::tempdir().unwrap();
        let hot = open(dir.path(), 64 << 10, 64 << 20);
        if hot.disk_bytes() == 0 {
            eprintln!("skipped: under {MIN_DISK_BYTES} bytes free for a disk tier");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let objects: Vec<_> = (0..40).map(|i| object(&format!("k{i}"), 8 << 10)).collect();
        // Each key's first store hit marks it (the doorkeeper), the second copies it in.
        for _ in 0..2 {
            for obj in &objects {
                hot.insert(obj);
            }
        }
        // 320 KiB into 64 KiB of memory: most were evicted, and the disk tier writes them behind
        // the eviction. Wait until it has some.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let from_disk = loop {
            let mut from_disk = 0;
            for obj in &objects {
                if let Some((got, tier)) = rt.block_on(hot.get(ObjectKeyRef::new("b", &obj.meta.key))) {
                    assert_eq!(got.body, obj.body);
                    assert_eq!(got.meta, obj.meta);
                    from_disk += usize::from(tier == HotTier::Disk);
                }
            }
            if from_disk > 0 || std::time::Instant::now() > deadline {
                break from_disk;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(from_disk > 0, "no object was read back from the disk tier");
        assert!(rt.block_on(hot.get(ObjectKeyRef::new("b", "never-cached"))).is_none());
    }

    #[test]
    fn the_disk_tier_takes_at_most_a_quarter_of_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let free = crate::segment::free_bytes(dir.path()).unwrap();
        // Far more than any disk here has.
        let hot = open(&dir.path().join("cache"), 1 << 20, 1 << 50);
        assert!(hot.disk_bytes() <= free / 4, "{} of {free} free", hot.disk_bytes());
        assert!(hot.disk_bytes() == 0 || hot.disk_bytes() >= MIN_DISK_BYTES);
    }
}
