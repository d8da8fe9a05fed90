//! The object store: append-only segment files under `store.dir/segments`, the source of truth.
//!
//! - [`format`]: the byte layout of segment files and records.
//! - [`writer`]: [`RecordWriter`], one object being written.
//! - [`recover`]: rebuilding the index from the files at start.
//! - [`index`]: the shared `(bucket, key) -> record` map.
//!
//! Writers are split into *lanes*, one per worker core: each lane appends to its own active
//! segment, so cores never contend on a write lock. A writer reserves its whole record up front
//! (when the body length is known) and writes the record header inside the lane lock, so a
//! killed process can leave an unfinished record but never an unexplained hole. Bodies are
//! written with positional writes as they arrive; the trailer goes last, then the index entry
//! becomes visible. Readers get the body as a slice of the segment's read-only mapping.
//!
//! After a restart, old segments are sealed (read-only); every lane starts a fresh segment. A
//! torn tail is therefore never truncated while mapped: it is simply never indexed.
//! Space held by abandoned records (a failed origin fetch) is not reclaimed yet: there is no
//! compaction.

pub mod format;
mod index;
mod mmap;
mod recover;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use index::IndexEntry;
pub use writer::{FillReader, RecordWriter};

use crate::key::ObjectKeyRef;
use crate::meta::ObjectMeta;
use crate::{Error, Result};
use format::{FileHeader, FILE_HEADER_LEN, FLAG_SOLO};

/// When the store calls `fdatasync`. A killed process loses nothing committed under any policy
/// (committed bytes are in the page cache); the policy decides what a power loss may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Leave it to the kernel's writeback.
    Never,
    /// A background thread syncs segments written since its last pass, every period.
    Interval(Duration),
    /// Each object is synced before it becomes visible (slow: one fdatasync per object, on the
    /// writing core).
    Always,
}

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Capacity of a regular segment file.
    pub segment_bytes: u64,
    /// Number of write lanes (one per worker core).
    pub lanes: usize,
    pub sync: SyncPolicy,
    /// Largest object the store accepts.
    pub max_object_bytes: u64,
}

/// A committed object as a reader sees it: metadata and a zero-copy slice of its body.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub meta: Arc<ObjectMeta>,
    pub body: Bytes,
}

/// One segment file. Shared by the index entries that point into it and by its lane.
#[derive(Debug)]
pub struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) nonce: u64,
    pub(crate) capacity: u64,
    /// The read-only mapping; set at creation for regular segments, at commit for solo ones.
    pub(crate) map: OnceLock<Bytes>,
    /// Written since the last background sync.
    dirty: AtomicBool,
}

impl Segment {
    fn create(dir: &Path, id: u64, capacity: u64, solo: bool) -> Result<Arc<Segment>> {
        let path = dir.join(format!("{id:016x}.seg"));
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let header = FileHeader {
            flags: if solo { FLAG_SOLO } else { 0 },
            segment_id: id,
            nonce: random_u64(),
            capacity,
            created_ms: unix_ms(SystemTime::now()),
        };
        file.write_all_at(&header.encode(), 0).map_err(|e| Error::io(&path, e))?;
        let seg = Segment {
            id,
            path,
            file,
            nonce: header.nonce,
            capacity,
            map: OnceLock::new(),
            dirty: AtomicBool::new(true),
        };
        // Mapped now when the size is known (regular segments, and solo segments of a known
        // length), so readers can follow a record while it is written; a spilled body of
        // unknown length is mapped at commit.
        if capacity > 0 {
            let map = mmap::map_file(&seg.file, capacity).map_err(|e| Error::io(&seg.path, e))?;
            let _ = seg.map.set(map);
        }
        Ok(Arc::new(seg))
    }

    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file.write_all_at(buf, offset).map_err(|e| Error::io(&self.path, e))
    }

    fn body(&self, offset: u64, len: u64) -> Option<Bytes> {
        let map = self.map.get()?;
        let end = offset.checked_add(len)?;
        if end > map.len() as u64 {
            return None;
        }
        Some(map.slice(offset as usize..end as usize))
    }
}

/// The lane's active segment and the next free offset in it.
struct Active {
    segment: Arc<Segment>,
    next_offset: u64,
}

/// Counters an operator wants to see.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub objects_committed: AtomicU64,
    pub bytes_committed: AtomicU64,
    pub records_abandoned: AtomicU64,
    pub corrupt_reads: AtomicU64,
}

pub struct Store {
    config: StoreConfig,
    segments_dir: PathBuf,
    next_segment_id: AtomicU64,
    index: index::Index,
    lanes: Box<[Mutex<Option<Active>>]>,
    /// Segments written since the last sync pass (Interval policy).
    unsynced: Mutex<Vec<Arc<Segment>>>,
    pub stats: StoreStats,
    /// Bytes of all segment files found at start plus written since.
    disk_bytes: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.config.dir).field("objects", &self.index.len()).finish()
    }
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub segments: usize,
    pub objects: usize,
    pub bytes: u64,
    pub torn_or_abandoned: usize,
    pub removed_files: usize,
}

impl Store {
    /// Opens (creating if needed) the store under `config.dir` and rebuilds the index.
    pub fn open(config: StoreConfig) -> Result<(Arc<Store>, RecoveryReport)> {
        let segments_dir = config.dir.join("segments");
        fs::create_dir_all(&segments_dir).map_err(|e| Error::io(&segments_dir, e))?;
        let index = index::Index::new();
        let recovered = recover::recover_dir(&segments_dir, &index)?;
        let lanes = (0..config.lanes.max(1)).map(|_| Mutex::new(None)).collect();
        let store = Arc::new(Store {
            next_segment_id: AtomicU64::new(recovered.next_segment_id),
            disk_bytes: AtomicU64::new(recovered.disk_bytes),
            config,
            segments_dir,
            index,
            lanes,
            unsynced: Mutex::new(Vec::new()),
            stats: StoreStats::default(),
        });
        if let SyncPolicy::Interval(period) = store.config.sync {
            let weak = Arc::downgrade(&store);
            std::thread::Builder::new()
                .name("store-sync".into())
                .spawn(move || loop {
                    std::thread::sleep(period);
                    match weak.upgrade() {
                        Some(store) => store.sync_pass(),
                        None => return,
                    }
                })
                .map_err(|e| Error::io(&store.config.dir, e))?;
        }
        Ok((store, recovered.report))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Committed objects in the index.
    pub fn object_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    pub fn contains(&self, key: ObjectKeyRef<'_>) -> bool {
        self.index.get(key).is_some()
    }

    /// Looks up a committed object. The first read of a body in this process checks its CRC; a
    /// body that fails is dropped from the index (and reported as `Corrupt`), so the caller can
    /// treat it as missing and fetch it again.
    pub fn get(&self, key: ObjectKeyRef<'_>) -> Result<Option<StoredObject>> {
        let Some(entry) = self.index.get(key) else {
            return Ok(None);
        };
        let seg = &entry.segment;
        let body = seg.body(entry.body_offset, entry.meta.size).ok_or(Error::Corrupt {
            segment: seg.id,
            offset: entry.body_offset,
            what: "body outside the mapping",
        })?;
        if !entry.verified.load(Ordering::Acquire) {
            if crc32c::crc32c(&body) != entry.body_crc {
                self.index.remove(key);
                self.stats.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Corrupt { segment: seg.id, offset: entry.body_offset, what: "body crc mismatch" });
            }
            entry.verified.store(true, Ordering::Release);
        }
        Ok(Some(StoredObject { meta: entry.meta.clone(), body }))
    }

    /// Flushes every segment written since the last pass (the Interval policy's thread calls
    /// this; it is also called at shutdown).
    pub fn sync_pass(&self) {
        let pending = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        for seg in pending {
            seg.dirty.store(false, Ordering::Release);
            if let Err(e) = seg.file.sync_data() {
                tracing::error!(segment = seg.id, error = %e, "fdatasync failed");
            }
        }
    }

    fn mark_dirty(&self, seg: &Arc<Segment>) {
        if self.config.sync == SyncPolicy::Never {
            return;
        }
        if !seg.dirty.swap(true, Ordering::AcqRel) {
            self.unsynced.lock().unwrap_or_else(|e| e.into_inner()).push(seg.clone());
        }
    }

    /// Reserves `len` bytes in `lane`'s active segment, rolling to a new segment when it is full,
    /// and writes `head(nonce)` (the record header and names) at the start of the reservation while the
    /// lane is locked, so a reservation never exists on disk without its header.
    fn reserve(&self, lane: usize, len: u64, head: impl FnOnce(u64) -> Vec<u8>) -> Result<(Arc<Segment>, u64)> {
        let mut slot = self.lanes[lane % self.lanes.len()].lock().unwrap_or_else(|e| e.into_inner());
        let fits = |a: &Active| a.next_offset.checked_add(len).is_some_and(|end| end <= a.segment.capacity);
        if !slot.as_ref().is_some_and(fits) {
            let segment = self.new_segment(self.config.segment_bytes, false)?;
            *slot = Some(Active { segment, next_offset: FILE_HEADER_LEN });
        }
        let active = slot.as_mut().ok_or(Error::NoSpace("no active segment".into()))?;
        let offset = active.next_offset;
        active.segment.write_at(&head(active.segment.nonce), offset)?;
        active.next_offset += len;
        self.disk_bytes.fetch_add(len, Ordering::Relaxed);
        Ok((active.segment.clone(), offset))
    }

    fn new_segment(&self, capacity: u64, solo: bool) -> Result<Arc<Segment>> {
        let id = self.next_segment_id.fetch_add(1, Ordering::Relaxed);
        let seg = Segment::create(&self.segments_dir, id, capacity, solo)?;
        self.disk_bytes.fetch_add(FILE_HEADER_LEN, Ordering::Relaxed);
        Ok(seg)
    }

    /// Records larger than this get a segment of their own.
    fn solo_threshold(&self) -> u64 {
        self.config.segment_bytes / 4
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A random 64-bit value from the kernel, falling back to time and address entropy. Used for
/// segment nonces, and by the node for its loop-detection token.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_ok() {
        return u64::from_le_bytes(b);
    }
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (&b as *const _ as u64).rotate_left(32)
}
