//! The object store: append-only segment files under `store.dir/segments`, the source of truth.
//!
//! - [`format`]: the byte layout of segment files and records.
//! - [`writer`]: [`RecordWriter`], one object being written.
//! - [`recover`]: rebuilding the index from the files at start.
//! - [`index`]: the shared `(bucket, key) -> record` map, each bucket's keys in order
//!   ([`pages`]: keys packed in pages, about 64 bytes per object beyond the key).
//! - [`verify`]: the first-read body check, run on `store-verify` threads.
//! - [`lock`]: `store.dir/LOCK`, so one directory has one owning store.
//! - [`sys`]: the only `unsafe` (mmap, flock, pwritev, fallocate, statfs).
//!
//! Writers are split into *lanes*, one per worker core: each lane appends to its own active
//! segment, so cores never contend on a write lock. A writer reserves its whole record up front
//! (when the body length is known) and writes the record header inside the lane lock, so a
//! killed process can leave an unfinished record but never an unexplained hole. Bodies are
//! written with positional writes as they arrive, in stretches that end on 64 KiB file offsets
//! (`writer::WRITE_ALIGN`); the last stretch and the trailer go last, then the index entry
//! becomes visible. Readers get the body as a slice of the segment's read-only mapping.
//!
//! After a restart, old segments are sealed (read-only); every lane starts a fresh segment. A
//! torn tail is therefore never truncated while mapped: it is simply never indexed.
//! Space held by abandoned records in shared segments (a failed origin fetch) is reclaimed by
//! [`compact`] with the other dead records. An abandoned solo segment holds nothing else, so its
//! file is removed at once.
//!
//! A read is [`Store::lookup`] (async: a first read's body check runs on a verifier thread) or
//! [`Store::get`] (sync: the check runs on the caller's thread); both share one check per
//! record. The index holds where a record is, its version and size; the rest of what a reader
//! gets (saved headers, MD5, dates) is read back from the record's header and trailer.

mod ballast;
mod compact;
#[cfg(feature = "faults")]
pub mod faults;
pub mod format;
mod index;
mod lock;
mod pages;
mod recover;
mod sys;
mod verify;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

pub use compact::{CompactReport, CompactionConfig};
pub use writer::{CommitRule, FillReader, RecordWriter, VersionPin, WriteCondition};

use crate::key::{ObjectKey, ObjectKeyRef};
use crate::meta::ObjectMeta;
use crate::{Error, Result};
use format::{
    trailer_len, FileHeader, RecordHeader, Trailer, FILE_HEADER_LEN, FLAG_SOLO, FLAG_TOMBSTONE, FORMAT_VERSION,
    RECORD_HEADER_LEN,
};
use index::Loc;
use verify::{Checks, Claim, RecordId};

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    sys::free_bytes(path)
}

/// An object read this recently is evicted only after every object not read since.
const RECENT_READ_SECS: u32 = 60;

/// How often the free space of the store's filesystem is read (statvfs).
const FREE_SPACE_CHECK: Duration = Duration::from_secs(1);

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

#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Capacity of a regular segment file.
    pub segment_bytes: u64,
    /// Number of write lanes (one per worker core).
    pub lanes: usize,
    pub sync: SyncPolicy,
    /// Largest object the store accepts.
    pub max_object_bytes: u64,
    /// The most bytes of segment files the store holds (0: no limit but the disk's). A record
    /// that would pass it is refused with [`Error::NoSpace`]; compaction brings the total down.
    /// Tombstones are taken past it (and past `min_free_bytes`): deletes are how room is made.
    pub max_bytes: u64,
    /// Free space the store leaves on its filesystem (other users of the disk, the foyer disk
    /// tier, logs): a record that would eat into it is refused with [`Error::NoSpace`].
    pub min_free_bytes: u64,
    pub compaction: CompactionConfig,
    /// Buckets in cache mode: under capacity pressure their least recently read objects are
    /// evicted (and mirrored again on the next GET). Objects of other buckets (mirror mode)
    /// are never evicted.
    pub evictable_buckets: Vec<String>,
    /// Every bucket is a cache (the node's objects of record are elsewhere: a shared store), so
    /// any object may be evicted, except those of buckets named `_`-first (internal namespaces,
    /// such as unfinished multipart uploads' parts).
    pub evict_all: bool,
}

impl StoreConfig {
    /// A store under `dir`: 8 MiB segments, one write lane, no syncing, objects up to 1 GiB, no
    /// capacity limit, default compaction, no cache-mode buckets. The starting point of tests,
    /// benches and tools, which set what they exercise (`StoreConfig { lanes: 2,
    /// ..StoreConfig::new(dir) }`); the node builds its own from its config file.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            segment_bytes: 8 << 20,
            lanes: 1,
            sync: SyncPolicy::Never,
            max_object_bytes: 1 << 30,
            max_bytes: 0,
            min_free_bytes: 0,
            compaction: CompactionConfig::default(),
            evictable_buckets: Vec::new(),
            evict_all: false,
        }
    }
}

/// A committed object as a reader sees it: metadata and a zero-copy slice of its body.
#[derive(Clone, Debug)]
pub struct StoredObject {
    pub meta: Arc<ObjectMeta>,
    pub body: Bytes,
}

/// Parts of a record's bytes on disk that are not in memory ([`Store::cold_spans`]): byte
/// ranges of `file`, for the caller to read asynchronously.
#[derive(Debug)]
pub struct ColdSpans {
    pub file: Arc<File>,
    /// (offset, length) pairs, ascending. One span, from the record's start, when it holds the
    /// whole record: the caller may pass what it read to [`Store::lookup_read`].
    pub spans: Vec<(u64, u64)>,
    /// The record's segment and offset: which version of the key the spans belong to.
    segment: u64,
    record_offset: u64,
}

/// Where a stored body lies in its segment file ([`Store::body_file`]), for reading parts of it
/// that are not in memory with the caller's own (asynchronous) reads.
#[derive(Debug)]
pub struct BodyFile {
    pub file: Arc<File>,
    /// The file offset of the body's first byte.
    pub offset: u64,
    /// The address of the body's first byte in the segment's mapping: a slice a lookup handed
    /// out starts at `mapped_at + its offset in the body` exactly when it is that record's bytes
    /// in the mapping, not a copy read into a buffer or a record compaction has since moved.
    pub mapped_at: usize,
}

/// Whether every page under `part` (a slice of a stored body as the store handed it out: a
/// slice of a segment mapping) is in memory (`mincore`), so that sending it will not wait on the
/// disk. Bytes that are not a mapping's are in memory by definition, and `mincore` says so.
pub fn in_memory(part: &[u8]) -> bool {
    sys::resident(part)
}

/// Starts reading `part` (a slice of a stored body as the store handed it out) from disk where
/// it is not in memory, as one read ahead of the faults that sending it through the mapping
/// would take page by page (mappings read no more than the faulting page: `MADV_RANDOM`).
/// `MADV_WILLNEED`; parts under 16 KiB are left to their faults.
pub fn read_ahead(part: &[u8]) {
    sys::will_need(part);
}

/// One page of [`Store::list`]: objects and rolled-up common prefixes, in key order.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<Arc<ObjectMeta>>,
    pub prefixes: Vec<String>,
    /// For a truncated page: its last entry (key or prefix); the next page starts after it.
    pub next_after: Option<String>,
}

/// An object as a reader holds it: where its record is (a copy of its index slot) and what
/// the record says. Built on each lookup from the record's header and trailer in the segment.
#[derive(Debug)]
pub(crate) struct IndexEntry {
    pub(crate) meta: Arc<ObjectMeta>,
    pub(crate) segment: Arc<Segment>,
    pub(crate) record_offset: u64,
    pub(crate) body_offset: u64,
    pub(crate) body_crc: u32,
    /// The body had been checked when the entry was looked up.
    pub(crate) verified: bool,
}

impl IndexEntry {
    fn record(&self) -> RecordId {
        (self.segment.id, self.record_offset)
    }

    fn key(&self) -> ObjectKeyRef<'_> {
        ObjectKeyRef::new(&self.meta.bucket, &self.meta.key)
    }
}

/// One segment file. Shared by the index entries that point into it and by its lane.
#[derive(Debug)]
pub struct Segment {
    pub(crate) id: u64,
    pub(crate) path: PathBuf,
    /// The open file. A solo segment closes it once its one record is complete
    /// ([`Segment::release_file`]): a store of a million big objects must not hold a million
    /// descriptors (the node's connections share the same limit). Later uses (a mapping
    /// evicted from the map cache, a deferred sync) open it again for their duration.
    file: Mutex<Option<Arc<File>>>,
    pub(crate) nonce: u64,
    /// The file's format version (records are read by it).
    pub(crate) version: u32,
    pub(crate) capacity: u64,
    /// Holds one record only (a big object, or a spilled body of unknown length).
    pub(crate) solo: bool,
    /// The read-only mapping of a regular segment, for its whole life (they are few and large).
    /// A solo segment (one big object) is never mapped here: see [`MapCache`].
    pub(crate) map: OnceLock<Bytes>,
    /// Where solo segments' mappings are kept while recently read.
    maps: Arc<MapCache>,
    /// Written since the last background sync.
    dirty: AtomicBool,
    /// The file's length (st_size) as this process made it: the end of the furthest write.
    /// Growth is added to `stats.disk_bytes` as it happens.
    file_len: AtomicU64,
    /// The file was unlinked ([`Segment::discard`]); its length leaves `stats.disk_bytes` when
    /// this, the last handle, is dropped and the kernel frees the blocks.
    discarded: AtomicBool,
    /// Nothing is appended to it any more (a lane moved on, its solo record committed, or it was
    /// found at start): compaction may rewrite it once no reservation in it is pending.
    sealed: AtomicBool,
    /// How far from the start the file's blocks are allocated ahead of its writes
    /// ([`Segment::preallocate_for`]); [`NOT_PREALLOCATED`] for a segment that is not (found at
    /// start, not on ext4, or given back once settled).
    preallocated: AtomicU64,
    /// Reservations in it whose records are not finished yet ([`Pending`]): a record writer
    /// before its commit (or abandonment), a tombstone before its trailer. A lane seals its
    /// segment when it rolls to the next, whatever is still being written in it; compaction
    /// waits for these, or it would drop a record that is about to be committed in a file it
    /// then unlinks (the commit would be lost at the next start).
    pending: AtomicU64,
    /// The lowest commit sequence number of the records in it (`u64::MAX`: none yet). Decides
    /// which tombstones compaction must keep.
    min_seq: AtomicU64,
    stats: Arc<StoreStats>,
}

/// How far ahead of its writes a segment's blocks are allocated (one `fallocate` each time the
/// writes reach the end of what was). Small against a segment, so a lane that stops writing
/// holds little the rest of the disk could use; large against a write, so the call is rare.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

/// [`Segment::preallocated`] of a segment that does not preallocate.
const NOT_PREALLOCATED: u64 = u64::MAX;

/// The first `len` bytes of `pieces` taken back to back, as slices of them (all of them when
/// they hold fewer).
pub(crate) fn leading<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, len: usize) -> Vec<&'a [u8]> {
    let mut left = len;
    pieces
        .into_iter()
        .map_while(|piece| {
            (left > 0).then(|| {
                let take = piece.len().min(left);
                left -= take;
                &piece[..take]
            })
        })
        .collect()
}

impl Segment {
    #[allow(clippy::too_many_arguments, reason = "each is a different part of the new segment")]
    fn create(
        dir: &Path,
        id: u64,
        capacity: u64,
        solo: bool,
        preallocate: bool,
        stats: &Arc<StoreStats>,
        maps: &Arc<MapCache>,
    ) -> Result<Arc<Segment>> {
        let path = dir.join(format!("{id:016x}.seg"));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| {
            stats.write_failures.fetch_add(1, Ordering::Relaxed);
            Error::write(&path, e)
        })?;
        sys::no_read_ahead(&file);
        let header = FileHeader {
            version: FORMAT_VERSION,
            flags: if solo { FLAG_SOLO } else { 0 },
            segment_id: id,
            nonce: random_u64(),
            capacity,
            created_ms: unix_ms(SystemTime::now()),
        };
        let file = Arc::new(file);
        let seg = Segment {
            id,
            path,
            file: Mutex::new(Some(file.clone())),
            nonce: header.nonce,
            version: FORMAT_VERSION,
            capacity,
            solo,
            map: OnceLock::new(),
            dirty: AtomicBool::new(true),
            file_len: AtomicU64::new(0),
            discarded: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            preallocated: AtomicU64::new(if preallocate && capacity > 0 { 0 } else { NOT_PREALLOCATED }),
            pending: AtomicU64::new(0),
            min_seq: AtomicU64::new(u64::MAX),
            maps: maps.clone(),
            stats: stats.clone(),
        };
        if let Err(e) = seg.write_at(&header.encode(), 0) {
            seg.discard();
            return Err(e);
        }
        // A regular segment is mapped now, at its full capacity, so readers can follow records
        // while they are written. A solo segment's writer maps it itself (`map_whole`).
        if capacity > 0 && !solo {
            match sys::map_file(&file, capacity) {
                Ok(map) => {
                    let _ = seg.map.set(map);
                }
                Err(e) => {
                    seg.discard();
                    return Err(Error::io(&seg.path, e));
                }
            }
        }
        Ok(Arc::new(seg))
    }

    /// A positional write. Counts what the file grew by in `disk_bytes`, and a failure in
    /// `write_failures`; a full disk is [`Error::NoSpace`].
    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_vectored_at(&[buf], offset)
    }

    /// [`Segment::write_at`] of `pieces` back to back, in one system call.
    pub(crate) fn write_vectored_at(&self, pieces: &[&[u8]], offset: u64) -> Result<()> {
        let end = offset + pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        self.preallocate_for(end);
        match self.write_all_at(pieces, offset) {
            Ok(()) => {
                self.grew_to(end);
                Ok(())
            }
            Err(e) => {
                // Part of the pieces may have landed before the error.
                if let Ok(m) = fs::metadata(&self.path) {
                    self.grew_to(m.len());
                }
                self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
                Err(Error::write(&self.path, e))
            }
        }
    }

    /// The file write, through the fault plan when tests installed one.
    fn write_all_at(&self, pieces: &[&[u8]], offset: u64) -> std::io::Result<()> {
        let file = self.file()?;
        #[cfg(feature = "faults")]
        {
            let len = pieces.iter().map(|p| p.len()).sum();
            if let Some(landed) = faults::before_write(&self.path, &file, offset, len)? {
                sys::write_all_vectored_at(&file, &leading(pieces.iter().copied(), landed), offset)?;
                return Err(faults::short_write_error(&self.path));
            }
        }
        sys::write_all_vectored_at(&file, pieces, offset)
    }

    /// The segment's file: the one held open, or (after [`Segment::release_file`]) opened again
    /// for the caller's use only.
    pub(crate) fn file(&self) -> std::io::Result<Arc<File>> {
        if let Some(file) = &*self.file.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(file.clone());
        }
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        sys::no_read_ahead(&file);
        Ok(Arc::new(file))
    }

    /// Closes a complete solo segment's descriptor (see the `file` field). Regular segments keep
    /// theirs: they are few, and written until sealed.
    pub(crate) fn release_file(&self) {
        if self.solo && self.is_sealed() {
            *self.file.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Allocates the file's blocks up to [`PREALLOCATE_BYTES`] past `end` (at most its capacity)
    /// when a write is about to reach past what is allocated. Best effort: on a full disk the
    /// `fallocate` fails and the write allocates as it goes (and finds the disk full itself).
    fn preallocate_for(&self, end: u64) {
        let done = self.preallocated.load(Ordering::Acquire);
        if end <= done || done == NOT_PREALLOCATED {
            return;
        }
        let to = end.saturating_add(PREALLOCATE_BYTES).min(self.capacity);
        // One writer allocates each stretch; the others' writes land in it or past it.
        if to <= done || self.preallocated.compare_exchange(done, to, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return;
        }
        if let Err(e) = self.file().and_then(|file| sys::preallocate(&file, done, to - done)) {
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                self.preallocated.store(NOT_PREALLOCATED, Ordering::Release);
            }
        }
    }

    /// Gives back the blocks allocated past the file's end once nothing more will be written to
    /// it: sealed, and no reservation pending. Both call it; whichever comes second acts.
    fn settled_now(&self) {
        // Orders this side's store (sealed / pending) before its load of the other's.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.is_settled() {
            return;
        }
        let done = self.preallocated.swap(NOT_PREALLOCATED, Ordering::AcqRel);
        if done == NOT_PREALLOCATED || done <= self.len() {
            return;
        }
        if let Ok((file, m)) = self.file().and_then(|file| file.metadata().map(|m| (file, m))) {
            sys::release_past_end(&file, &m);
        }
    }

    fn grew_to(&self, end: u64) {
        let before = self.file_len.fetch_max(end, Ordering::AcqRel);
        if end > before {
            self.stats.disk_bytes.fetch_add(end - before, Ordering::Relaxed);
        }
    }

    /// `fdatasync`; a failure counts in `write_failures`.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file().and_then(|file| file.sync_data()).map_err(|e| {
            self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
            Error::write(&self.path, e)
        })?;
        #[cfg(feature = "faults")]
        faults::after_sync(&self.path);
        Ok(())
    }

    /// Unlinks the file of a segment nothing will ever read (an abandoned solo record). Unlink,
    /// not truncate: readers following the fill may still hold slices of its mapping, and the
    /// kernel keeps the pages until they let go.
    pub(crate) fn discard(&self) {
        if self.discarded.load(Ordering::Acquire) {
            return;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => self.discarded.store(true, Ordering::Release),
            // Left for the next start's recovery, which removes files with nothing committed.
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "could not remove abandoned segment"),
        }
    }

    /// The file's length as this process made it (or found it).
    pub(crate) fn len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
        self.settled_now();
    }

    /// Sealed, and no reservation in it is still being written: compaction may rewrite it.
    pub(crate) fn is_settled(&self) -> bool {
        self.is_sealed() && self.pending.load(Ordering::Acquire) == 0
    }

    /// A record with commit sequence `seq` now lies in this segment.
    pub(crate) fn note_seq(&self, seq: u64) {
        self.min_seq.fetch_min(seq, Ordering::AcqRel);
    }

    /// Maps the first `len` bytes of the file (for a solo segment's writer and the map cache).
    pub(crate) fn map_whole(&self, len: u64) -> Result<Bytes> {
        self.file().and_then(|file| sys::map_file(&file, len)).map_err(|e| Error::io(&self.path, e))
    }

    /// The segment's bytes as mapped: a regular segment's own mapping, or a solo segment's from
    /// the map cache (mapped again if it was evicted).
    pub(crate) fn mapped(&self) -> Option<Bytes> {
        match self.map.get() {
            Some(map) => Some(map.clone()),
            None if self.solo && self.is_sealed() => self.maps.get(self),
            None => None,
        }
    }

    fn body(&self, offset: u64, len: u64) -> Option<Bytes> {
        let map = self.mapped()?;
        let end = offset.checked_add(len)?;
        if end > map.len() as u64 {
            return None;
        }
        Some(map.slice(offset as usize..end as usize))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if *self.discarded.get_mut() {
            self.stats.disk_bytes.fetch_sub(*self.file_len.get_mut(), Ordering::Relaxed);
        }
    }
}

/// The mappings of recently read solo segments (big objects, one file each), least recently
/// used evicted past a cap ([`MAPPED_SOLO_SEGMENTS`]).
///
/// Mapping every solo segment for its whole life made `vm.max_map_count` (65,530 by default)
/// the cap on how many big objects a store could hold. Now the mappings alive are the cached
/// ones plus those whose slices readers still hold: an evicted mapping lives on in its readers'
/// `Bytes` and goes when the last one does; a later read maps the file again (the pages stay in
/// the page cache, so that costs a system call and minor faults, not disk reads; measured in
/// `bench/RESULTS.md`, `cache/examples/solo_many.rs`).
///
/// One mutex for the whole cache, taken once per read of a big object (a quarter segment or
/// more, so the read itself dwarfs it); every operation under it is O(1) (the `lru` crate: a
/// hash map threaded with a recency list).
#[derive(Debug)]
pub(crate) struct MapCache {
    maps: Mutex<lru::LruCache<u64, Bytes>>,
}

impl Default for MapCache {
    fn default() -> Self {
        MapCache::with_cap(MAPPED_SOLO_SEGMENTS)
    }
}

/// Solo-segment mappings kept while recently read; the rest of `vm.max_map_count` is headroom.
pub(crate) const MAPPED_SOLO_SEGMENTS: usize = 4096;

impl MapCache {
    pub(crate) fn with_cap(cap: usize) -> Self {
        let cap = std::num::NonZeroUsize::new(cap).unwrap_or(std::num::NonZeroUsize::MIN);
        MapCache { maps: Mutex::new(lru::LruCache::new(cap)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u64, Bytes>> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, segment: &Segment) -> Option<Bytes> {
        if let Some(map) = self.lock().get(&segment.id) {
            return Some(map.clone());
        }
        // Mapped outside the lock: two readers may both map a file; the second insert wins and
        // the first mapping goes with its reader.
        let map = match segment.map_whole(segment.len()) {
            Ok(map) => map,
            Err(e) => {
                tracing::warn!(segment = segment.id, error = %e, "cannot map a segment");
                return None;
            }
        };
        self.insert(segment.id, map.clone());
        Some(map)
    }

    /// Keeps `map` as segment `id`'s mapping, evicting the least recently used past the cap.
    pub(crate) fn insert(&self, id: u64, map: Bytes) {
        self.lock().put(id, map);
    }

    /// Drops segment `id`'s mapping (its file is going).
    pub(crate) fn forget(&self, id: u64) {
        self.lock().pop(&id);
    }

    /// Mappings held (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The lane's active segment and the next free offset in it.
/// Whether a record must fit within `store.max_bytes` and `store.min_free_bytes`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    /// An object: refused (`NoSpace`) past either limit.
    WithinLimits,
    /// A tombstone: taken past them, since deleting is how room is made. Only the disk
    /// itself (ENOSPC) can refuse it.
    PastLimits,
}

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
    /// Objects removed by a delete or a purge.
    pub objects_deleted: AtomicU64,
    /// Entries whose body failed its first-read check (each counted once, then dropped).
    pub corrupt_reads: AtomicU64,
    /// Segment file creations, writes and fdatasyncs that failed (full disk, I/O error).
    pub write_failures: AtomicU64,
    /// Segments compacted, and the bytes copied and removed doing it.
    pub compactions: AtomicU64,
    pub compaction_bytes_copied: AtomicU64,
    pub compaction_bytes_removed: AtomicU64,
    /// Records refused because the store reached `max_bytes` or the free-space watermark.
    pub capacity_refusals: AtomicU64,
    /// Objects of cache-mode buckets evicted under capacity pressure, and their bytes.
    pub evictions: AtomicU64,
    pub evicted_bytes: AtomicU64,
    /// See [`Store::disk_bytes`]. Private: it moves only with the files.
    disk_bytes: AtomicU64,
}

/// A reservation in a segment whose record is not finished ([`Segment::pending`]); dropping it
/// says the record is finished or given up.
#[derive(Debug)]
pub(crate) struct Pending(Arc<Segment>);

impl Pending {
    fn new(segment: &Arc<Segment>) -> Pending {
        segment.pending.fetch_add(1, Ordering::AcqRel);
        Pending(segment.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled_now();
        }
    }
}

pub struct Store {
    config: StoreConfig,
    segments_dir: PathBuf,
    /// New segments' blocks are allocated ahead of their writes ([`sys::preallocation_helps`]).
    preallocate: bool,
    next_segment_id: AtomicU64,
    /// Shared with the verifier threads, which drop entries whose bodies fail their check.
    index: Arc<index::Index>,
    lanes: Box<[Mutex<Option<Active>>]>,
    /// Segments written since the last sync pass (Interval policy).
    unsynced: Mutex<Vec<Arc<Segment>>>,
    /// Shared with every segment (which counts its writes) and the verifier threads.
    pub stats: Arc<StoreStats>,
    verifier: verify::Verifier,
    /// Body checks in flight.
    checks: Arc<Checks>,
    /// The next commit's sequence number (recovery starts it past the highest found).
    next_seq: AtomicU64,
    /// Pins held by conditional writers: pinned sequence -> how many. The oldest bounds which
    /// deletions the index must remember.
    pins: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Deletions made since the index last forgot the ones no pin needs.
    tombstones_since_prune: AtomicU64,
    /// Mappings of recently read solo segments.
    maps: Arc<MapCache>,
    /// Every segment file the store holds, by id (what compaction chooses from).
    segments: Mutex<std::collections::BTreeMap<u64, Arc<Segment>>>,
    /// One compaction pass at a time (the background thread, or a direct call).
    compacting: Mutex<()>,
    /// The filesystem's free bytes and when they were read (statvfs at most every
    /// [`FREE_SPACE_CHECK`]).
    free_space: Mutex<(u64, Option<std::time::Instant>)>,
    /// Reads are timed in seconds since this, for least-recently-used eviction.
    opened: std::time::Instant,
    /// Blocks held back for deletes on a disk others filled (see [`ballast`]).
    ballast: ballast::Ballast,
    /// Exclusive ownership of `config.dir`; last, so it is released after everything else.
    _lock: lock::DirLock,
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
    /// Objects in the index (current versions).
    pub objects: usize,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Deletion records found.
    pub tombstones: usize,
    pub torn_or_abandoned: usize,
    pub removed_files: usize,
}

impl Store {
    /// Opens (creating if needed) the store under `config.dir` and rebuilds the index.
    ///
    /// Fails with [`Error::Locked`] while another store (in any process, this one included)
    /// has the directory open; nothing in it is touched then.
    pub fn open(config: StoreConfig) -> Result<(Arc<Store>, RecoveryReport)> {
        Store::open_with(config, MapCache::default())
    }

    /// [`Store::open`] with its own cache of solo-segment mappings (tests use a small one).
    pub(crate) fn open_with(config: StoreConfig, maps: MapCache) -> Result<(Arc<Store>, RecoveryReport)> {
        fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        // Before anything else in the directory: recovery deletes files, and ids are handed out
        // from what it finds.
        let dir_lock = lock::DirLock::acquire(&config.dir)?;
        let ballast = ballast::Ballast::open(&config.dir, config.min_free_bytes);
        let segments_dir = config.dir.join("segments");
        fs::create_dir_all(&segments_dir).map_err(|e| Error::io(&segments_dir, e))?;
        let index = Arc::new(index::Index::new());
        let stats = Arc::new(StoreStats::default());
        let maps = Arc::new(maps);
        let recovered = recover::recover_dir(&segments_dir, &index, &stats, &maps)?;
        stats.disk_bytes.fetch_add(recovered.disk_bytes, Ordering::Relaxed);
        let verifier = verify::Verifier::start(verify::VERIFIER_THREADS).map_err(|e| Error::io(&config.dir, e))?;
        let lanes = (0..config.lanes.max(1)).map(|_| Mutex::new(None)).collect();
        let store = Arc::new(Store {
            next_segment_id: AtomicU64::new(recovered.next_segment_id),
            config,
            preallocate: sys::preallocation_helps(&segments_dir),
            segments_dir,
            index,
            lanes,
            unsynced: Mutex::new(Vec::new()),
            stats,
            verifier,
            checks: Arc::default(),
            next_seq: AtomicU64::new(recovered.next_seq),
            pins: Mutex::new(std::collections::BTreeMap::new()),
            tombstones_since_prune: AtomicU64::new(0),
            maps,
            segments: Mutex::new(recovered.segments.into_iter().map(|s| (s.id, s)).collect()),
            compacting: Mutex::new(()),
            free_space: Mutex::new((0, None)),
            opened: std::time::Instant::now(),
            ballast,
            _lock: dir_lock,
        });
        if !store.config.compaction.interval.is_zero() {
            let weak = Arc::downgrade(&store);
            let period = store.config.compaction.interval;
            // A pass every `period`, and at once (checked each second) when the store is past a
            // high-water mark: cache-mode buckets must make room before writes are refused.
            std::thread::Builder::new()
                .name("store-compact".into())
                .spawn(move || {
                    let mut last = std::time::Instant::now();
                    loop {
                        std::thread::sleep(period.min(Duration::from_secs(1)));
                        let Some(store) = weak.upgrade() else { return };
                        if last.elapsed() < period && !store.under_pressure() {
                            continue;
                        }
                        last = std::time::Instant::now();
                        if let Err(e) = store.compact() {
                            tracing::warn!(error = %e, "compaction pass failed; retried next pass");
                        }
                    }
                })
                .map_err(|e| Error::io(&store.config.dir, e))?;
        }
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

    /// Bytes held by segment files: the sum of their lengths (`st_size`, what `ls -l` shows) under
    /// `store.dir/segments`. Counted as bytes are written, not as space is reserved, so a record
    /// that stops early counts only what it wrote. An abandoned solo segment is unlinked at
    /// once; its bytes still count until the last reader following that fill lets go, because
    /// the kernel frees the blocks only then. Sparse holes (none are made in normal operation)
    /// count, as in `st_size`.
    pub fn disk_bytes(&self) -> u64 {
        self.stats.disk_bytes.load(Ordering::Relaxed)
    }

    /// Segment file creations, writes and syncs that failed since start.
    pub fn write_failures(&self) -> u64 {
        self.stats.write_failures.load(Ordering::Relaxed)
    }

    pub fn contains(&self, key: ObjectKeyRef<'_>) -> bool {
        self.index.get(key).is_some()
    }

    /// The version (commit sequence number) of the key's current object, if it has one. A
    /// cached copy whose `meta.seq` differs is stale: the key was deleted or overwritten.
    pub fn version(&self, key: ObjectKeyRef<'_>) -> Option<u64> {
        self.index.object_seq(key, self.now_secs())
    }

    /// How far the store is past its high-water marks: past 90% of `max_bytes` it should come
    /// down to 80%; under twice `min_free_bytes` free it should get back to three times. Zero
    /// when under neither.
    fn bytes_to_free(&self) -> u64 {
        let disk = self.disk_bytes();
        let (max, min_free) = (self.config.max_bytes, self.config.min_free_bytes);
        let mut to_free = 0u64;
        if max > 0 && disk > max / 10 * 9 {
            to_free = to_free.max(disk - max / 10 * 8);
        }
        if min_free > 0 {
            let free = self.free_bytes();
            if free < min_free.saturating_mul(2) {
                to_free = to_free.max(min_free.saturating_mul(3) - free);
            }
        }
        to_free
    }

    /// Whether the store is past a high-water mark (see [`Store::evict_for_space`]).
    pub(crate) fn under_pressure(&self) -> bool {
        self.bytes_to_free() > 0
    }

    /// Seconds since the store opened (the clock of `last_access`).
    pub(crate) fn now_secs(&self) -> u32 {
        self.opened.elapsed().as_secs().min(u32::MAX as u64) as u32
    }

    /// Evicts objects of cache-mode buckets (FIFO with a second chance: oldest segment first,
    /// objects read in the last minute last) while the store is under
    /// pressure: past 90% of `max_bytes`, or under twice `min_free_bytes` free. It frees down to
    /// 80% of `max_bytes` and three times `min_free_bytes` free (the gap keeps it from running on
    /// every write). Only the index entries go here; compaction then reclaims their records. An
    /// evicted object needs no tombstone: should its record come back at a restart before
    /// compaction, it is a valid copy of a cached object.
    pub fn evict_for_space(&self) -> (usize, u64) {
        let to_free = self.bytes_to_free();
        if (self.config.evictable_buckets.is_empty() && !self.config.evict_all) || to_free == 0 {
            return (0, 0);
        }
        // (last read, segment, record offset, key)
        let mut candidates: Vec<(u32, u64, u64, ObjectKey)> = Vec::new();
        self.index.for_each_object(|bucket, key, slot| {
            let evictable = if self.config.evict_all {
                !bucket.starts_with('_')
            } else {
                self.config.evictable_buckets.iter().any(|b| **b == *bucket)
            };
            if evictable {
                candidates.push((slot.last_access(), slot.segment.id, slot.record_offset, ObjectKey::new(bucket, key)));
            }
        });
        // FIFO with a second chance: oldest segment first, so evictions empty whole segments
        // (compaction then removes them without copying); objects read in the last
        // RECENT_READ_SECS go last, least recently read first among them.
        let now = self.now_secs();
        let recent = |at: u32| now.saturating_sub(at) < RECENT_READ_SECS;
        candidates.sort_by_key(|(at, segment, offset, _)| {
            (recent(*at), if recent(*at) { *at as u64 } else { *segment }, *offset)
        });
        let (mut count, mut freed) = (0, 0u64);
        for (_, segment, offset, key) in candidates {
            if freed >= to_free {
                break;
            }
            if let Some(slot) = self.index.remove_entry(key.as_ref(), segment, offset) {
                count += 1;
                freed += slot.size;
            }
        }
        self.stats.evictions.fetch_add(count as u64, Ordering::Relaxed);
        self.stats.evicted_bytes.fetch_add(freed, Ordering::Relaxed);
        if count > 0 {
            tracing::info!(objects = count, bytes = freed, "evicted from cache-mode buckets under capacity pressure");
        }
        (count, freed)
    }

    /// The keys of `bucket` starting with `prefix` that hold an object now, in no order. Scans
    /// the whole index: for admin operations, not the request path.
    pub fn keys_with_prefix(&self, bucket: &str, prefix: &str) -> Vec<ObjectKey> {
        self.index.keys_with_prefix(bucket, prefix)
    }

    /// One page of `bucket`'s objects in key order (byte order of the UTF-8 keys, as S3 lists):
    /// those whose keys start with `prefix` and sort after `after`, at most `max` entries; with
    /// a `delimiter`, keys are rolled up into common prefixes as S3 does (see
    /// [`index::Index::list`]). The keys come from the index in order; each listed object's
    /// metadata is read from its record. A record that no longer reads back is left out (and
    /// dropped from the index, like a body that fails its check).
    pub fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> Listing {
        let page = self.index.list(bucket, prefix, delimiter, after, max);
        let objects = page
            .objects
            .into_iter()
            .filter_map(|(key, loc)| self.entry_at(ObjectKeyRef::new(bucket, &key), loc).ok().map(|e| e.meta.clone()))
            .collect();
        Listing { objects, prefixes: page.prefixes, next_after: page.next_after }
    }

    /// Every object of `bucket` under `prefix`, in key order (for internal namespaces of a few
    /// entries, like a multipart upload's parts).
    pub fn list_all(&self, bucket: &str, prefix: &str) -> Vec<Arc<ObjectMeta>> {
        self.list(bucket, prefix, None, None, usize::MAX).objects
    }

    /// Deletes `key`: writes a tombstone record (crash-safe like a commit: until its trailer is
    /// written it does not exist; once written, recovery never brings the object back) and
    /// removes the object from the index. Returns the deleted object's size, or `None` when
    /// the key held no object (a tombstone is still written if a conditional writer is pinned,
    /// so that a fill which began before this delete cannot store what it fetched).
    pub fn delete(&self, lane: usize, key: ObjectKeyRef<'_>) -> Result<Option<u64>> {
        key.validate()?;
        if !self.contains(key) && self.oldest_pin().is_none() {
            return Ok(None);
        }
        // A disk other writers filled to its last block: the ballast makes room for this.
        let (mut lock, seq) = match self.write_tombstone(lane, key) {
            Err(Error::NoSpace(_)) if self.ballast.release() => self.write_tombstone(lane, key)?,
            written => written?,
        };
        let removed = lock.delete(seq);
        drop(lock);
        self.stats.objects_deleted.fetch_add(removed.is_some() as u64, Ordering::Relaxed);
        self.tombstones_since_prune.fetch_add(1, Ordering::Relaxed);
        self.prune_tombstones();
        Ok(removed.map(|slot| slot.size))
    }

    /// Writes a tombstone record for `key` and returns the key's lock (held, so the caller
    /// removes the object from the index under it) and the tombstone's sequence number.
    fn write_tombstone<'a>(&'a self, lane: usize, key: ObjectKeyRef<'a>) -> Result<(index::KeyLock<'a>, u64)> {
        let now = SystemTime::now();
        let (created_ms, meta) = (unix_ms(now), crate::meta::RecordMeta::new(now));
        let encode =
            |nonce| format::encode_record_head(key.bucket, key.key, &meta, 0, FLAG_TOMBSTONE, nonce, created_ms);
        // The header goes down before the key is locked (it may roll to a new segment file);
        // until the trailer is written the record does not exist.
        let total = encode(0).1.total_len();
        // Past the limits: deleting is how room is made, so a store at `max_bytes` or at the
        // `min_free_bytes` watermark still takes tombstones (the watermark is their reserve).
        // Pending until the trailer is written, at the end of this function.
        let (segment, offset, _pending) = self.reserve(lane, total, Room::PastLimits, |nonce| encode(nonce).0)?;
        let (_, header, header_crc) = encode(segment.nonce);
        let lock = self.index.lock_key(key);
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let trailer = Trailer { body_crc: 0, md5: [0; 16], seq, header_crc };
        segment.write_at(&trailer.encode(), offset + header.trailer_start())?;
        segment.note_seq(seq);
        match self.config.sync {
            SyncPolicy::Always => segment.sync()?,
            SyncPolicy::Interval(_) => self.mark_dirty(&segment),
            SyncPolicy::Never => {}
        }
        Ok((lock, seq))
    }

    /// Takes a pin at the current point of the sequence (see [`VersionPin`]).
    fn pin(&self) -> u64 {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let since = self.next_seq.load(Ordering::Acquire);
        *pins.entry(since).or_default() += 1;
        since
    }

    fn unpin(&self, since: u64) {
        {
            let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = pins.get_mut(&since) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(&since);
                }
            }
        }
        self.prune_tombstones();
    }

    fn oldest_pin(&self) -> Option<u64> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner()).keys().next().copied()
    }

    /// Lets the index forget deletions that no pinned writer can be refused by.
    fn prune_tombstones(&self) {
        if self.tombstones_since_prune.load(Ordering::Relaxed) == 0 {
            return;
        }
        let below = self.oldest_pin().unwrap_or(u64::MAX);
        self.tombstones_since_prune.store(0, Ordering::Relaxed);
        self.index.prune_tombstones(below);
        if below != u64::MAX {
            // Some are still needed: look again when the pin goes.
            self.tombstones_since_prune.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deletions the index remembers (for tests and metrics).
    pub fn remembered_tombstones(&self) -> usize {
        self.index.tombstones()
    }

    /// Bytes of the bodies of the objects in the index.
    pub fn live_bytes(&self) -> u64 {
        self.index.live_bytes()
    }

    /// Looks up a committed object. The first read of a body in this process checks its CRC on
    /// a `store-verify` thread while the caller awaits (concurrent first reads share one check);
    /// later reads answer at once, without allocating. A body that fails is dropped from the
    /// index (and reported as `Corrupt`), so the caller can treat it as missing and fetch it
    /// again.
    ///
    /// The body is a slice of the mapping, and its pages not in memory are being read ahead
    /// ([`read_ahead`]), for a caller that reads it through the mapping.
    pub async fn lookup(&self, key: ObjectKeyRef<'_>) -> Result<Option<StoredObject>> {
        self.lookup_mapped(key, true).await
    }

    async fn lookup_mapped(&self, key: ObjectKeyRef<'_>, read_ahead: bool) -> Result<Option<StoredObject>> {
        let Some(loc) = self.index.get_for_read(key, self.now_secs()) else {
            return Ok(None);
        };
        let entry = self.entry_at(key, loc)?;
        let body = self.mapped_body(&entry)?;
        if read_ahead {
            sys::will_need(&body);
        }
        if !entry.verified && !self.check_off_thread(&entry, &body).await? {
            return Err(corrupt_body(&entry));
        }
        Ok(Some(StoredObject { meta: entry.meta.clone(), body }))
    }

    /// The parts of the key's current record that are not in the page cache (`mincore`): its
    /// head (header, names, metadata; its length is in the index), the first `max_body` bytes
    /// of its body, and its trailer. `None` when they are all in memory, or
    /// the key has no object.
    ///
    /// For a thread-per-core server: a lookup and a send from the mapping fault on pages not in
    /// memory, and the whole core waits on the disk. Reading these spans first with an
    /// asynchronous read (the node: io_uring) lets the core serve other requests meanwhile,
    /// with many disk reads in flight; the lookup then finds the pages in memory.
    pub fn cold_spans(&self, key: ObjectKeyRef<'_>, max_body: u64) -> Option<ColdSpans> {
        let loc = self.index.get(key)?;
        let map = loc.segment.mapped()?;
        let file_end = loc.segment.len().min(map.len() as u64);
        let mut parts = record_spans(&loc, max_body, file_end);
        parts.retain(|&(from, len)| !sys::resident(&map[from as usize..(from + len) as usize]));
        if parts.is_empty() {
            return None;
        }
        let (segment, record_offset) = (loc.segment.id, loc.record_offset);
        Some(ColdSpans { file: loc.segment.file().ok()?, spans: parts, segment, record_offset })
    }

    /// Where the body of the key's current object lies on disk, if it is version `seq` (the one
    /// the caller looked up). Reads the record's header from the mapping: call it after a
    /// lookup, which brought it into memory.
    pub fn body_file(&self, key: ObjectKeyRef<'_>, seq: u64) -> Option<BodyFile> {
        let loc = self.index.get(key).filter(|loc| loc.seq == seq)?;
        let map = loc.segment.mapped()?;
        let (header, _) =
            RecordHeader::decode(map.get(loc.record_offset as usize..)?, loc.segment.nonce, loc.segment.version)?;
        let offset = loc.record_offset + header.body_start();
        let mapped_at = map.get(offset as usize..)?.as_ptr() as usize;
        Some(BodyFile { file: loc.segment.file().ok()?, offset, mapped_at })
    }

    /// Like [`Store::lookup`], for a caller that reads what is not in memory itself
    /// ([`Store::cold_spans`], [`Store::body_file`]): nothing is read ahead. With `read`, the
    /// bytes it read of the one span of `cold` (the whole record), the body is a slice of them
    /// rather than of the mapping, so a cold record is not copied twice (into the page cache
    /// and the caller's buffer, then from the mapping to the socket); when the key's version
    /// changed since `cold_spans`, or `read` does not hold the whole record, the mapping's.
    pub async fn lookup_read(
        &self,
        key: ObjectKeyRef<'_>,
        read: Option<(&ColdSpans, &Bytes)>,
    ) -> Result<Option<StoredObject>> {
        let Some((cold, read)) = read else {
            return self.lookup_mapped(key, false).await;
        };
        let Some(loc) = self.index.get_for_read(key, self.now_secs()) else {
            return Ok(None);
        };
        let same = cold.spans.len() == 1 && loc.is(cold.segment, cold.record_offset);
        let decoded = same.then(|| decode_record(read, 0, &loc.segment)).flatten();
        let Some((header, record, trailer)) = decoded.filter(|(_, _, t)| t.seq == loc.seq) else {
            return self.lookup_mapped(key, false).await;
        };
        let body_start = header.body_start() as usize;
        let body_end = body_start + header.body_len as usize;
        if body_end > read.len() {
            return self.lookup_mapped(key, false).await;
        }
        let body = read.slice(body_start..body_end);
        let entry = Arc::new(index_entry(key, loc, header, record, trailer));
        if !entry.verified && !self.check_off_thread(&entry, &body).await? {
            return Err(corrupt_body(&entry));
        }
        Ok(Some(StoredObject { meta: entry.meta.clone(), body }))
    }

    /// Like [`Store::lookup`], but a first read checks the body on the caller's thread (a
    /// synchronous caller cannot wait for another thread's check).
    pub fn get(&self, key: ObjectKeyRef<'_>) -> Result<Option<StoredObject>> {
        let Some(loc) = self.index.get(key) else {
            return Ok(None);
        };
        let entry = self.entry_at(key, loc)?;
        let body = self.checked_body(&entry)?;
        Ok(Some(StoredObject { meta: entry.meta.clone(), body }))
    }

    /// The object whose index slot `loc` is, read from its record's header and trailer. A
    /// record that no longer reads back (its bytes changed on disk since recovery checked
    /// them) is dropped from the index and reported as `Corrupt`.
    fn entry_at(&self, key: ObjectKeyRef<'_>, loc: Loc) -> Result<Arc<IndexEntry>> {
        let (segment, offset) = (&loc.segment, loc.record_offset);
        match read_record(segment, offset) {
            Some((header, record, trailer)) => Ok(Arc::new(index_entry(key, loc, header, record, trailer))),
            None => {
                if self.index.remove_entry(key, segment.id, offset).is_some() {
                    self.stats.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        segment = segment.id,
                        offset,
                        bucket = key.bucket,
                        key = key.key,
                        "stored record no longer reads back; dropped from the index"
                    );
                }
                Err(Error::Corrupt { segment: segment.id, offset, what: "record head or trailer" })
            }
        }
    }

    /// `entry`'s body, checked on this thread if no check has an outcome yet.
    fn checked_body(&self, entry: &Arc<IndexEntry>) -> Result<Bytes> {
        let body = self.mapped_body(entry)?;
        if entry.verified {
            return Ok(body);
        }
        let (key, record) = (entry.key(), entry.record());
        let matched =
            match self.checks.claim(record, None, || self.index.verified(key, record.0, record.1) == Some(true)) {
                Claim::Verified => true,
                // Claimed, or another check is in flight: the same bytes, the same answer.
                Claim::Run | Claim::Wait => {
                    let matched = self.checks.body_matches(record, &body, entry.body_crc);
                    settle(&self.index, &self.stats, &self.checks, entry, matched);
                    matched
                }
            };
        if !matched {
            return Err(corrupt_body(entry));
        }
        Ok(body)
    }

    /// Runs (or joins) `entry`'s body check on the verifier pool; `true` when the body matched.
    async fn check_off_thread(&self, entry: &Arc<IndexEntry>, body: &Bytes) -> Result<bool> {
        let (tx, rx) = oneshot::channel();
        let (key, record) = (entry.key(), entry.record());
        match self.checks.claim(record, Some(tx), || self.index.verified(key, record.0, record.1) == Some(true)) {
            Claim::Verified => return Ok(true),
            Claim::Wait => {}
            Claim::Run => {
                let (entry, body) = (entry.clone(), body.clone());
                let (index, stats, checks) = (self.index.clone(), self.stats.clone(), self.checks.clone());
                self.verifier.submit(Box::new(move || {
                    let matched = checks.body_matches(entry.record(), &body, entry.body_crc);
                    settle(&index, &stats, &checks, &entry, matched);
                }));
            }
        }
        rx.await.map_err(|_| Error::Invariant("body check ended without an answer"))
    }

    /// The slice of the mapping that holds `entry`'s body. An entry whose body lies outside its
    /// segment's mapping can never be served: it is dropped like a body that fails its CRC.
    fn mapped_body(&self, entry: &Arc<IndexEntry>) -> Result<Bytes> {
        match entry.segment.body(entry.body_offset, entry.meta.size) {
            Some(body) => Ok(body),
            None => {
                settle(&self.index, &self.stats, &self.checks, entry, false);
                Err(Error::Corrupt {
                    segment: entry.segment.id,
                    offset: entry.body_offset,
                    what: "body outside the mapping",
                })
            }
        }
    }

    /// Flushes every segment written since the last pass (the Interval policy's thread calls
    /// this; it is also called at shutdown).
    pub fn sync_pass(&self) {
        let pending = std::mem::take(&mut *self.unsynced.lock().unwrap_or_else(|e| e.into_inner()));
        for seg in pending {
            seg.dirty.store(false, Ordering::Release);
            if let Err(e) = seg.sync() {
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
    /// lane is locked, so a reservation never exists on disk without its header. The reservation
    /// is pending (compaction leaves its segment alone) until the returned [`Pending`] is dropped:
    /// keep it until the record is finished or given up.
    fn reserve(
        &self,
        lane: usize,
        len: u64,
        room: Room,
        head: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(Arc<Segment>, u64, Pending)> {
        let mut slot = self.lanes[lane % self.lanes.len()].lock().unwrap_or_else(|e| e.into_inner());
        let fits = |a: &Active| a.next_offset.checked_add(len).is_some_and(|end| end <= a.segment.capacity);
        if room == Room::WithinLimits {
            self.check_capacity(len)?;
        }
        let active = match slot.take() {
            Some(active) if fits(&active) => slot.insert(active),
            full => match self.new_segment(self.config.segment_bytes, false) {
                Ok(segment) => {
                    if let Some(old) = full {
                        old.segment.seal();
                    }
                    slot.insert(Active { segment, next_offset: FILE_HEADER_LEN })
                }
                Err(e) => {
                    // Keep the old segment: a smaller record may still fit in it.
                    *slot = full;
                    return Err(e);
                }
            },
        };
        let offset = active.next_offset;
        // Counted under the lane's lock, before anything can seal the segment.
        let pending = Pending::new(&active.segment);
        active.segment.write_at(&head(active.segment.nonce), offset)?;
        // Only the header is on disk yet; `disk_bytes` grows as the rest is written.
        active.next_offset += len;
        Ok((active.segment.clone(), offset, pending))
    }

    fn new_segment(&self, capacity: u64, solo: bool) -> Result<Arc<Segment>> {
        if solo {
            self.check_capacity(capacity.max(FILE_HEADER_LEN))?;
        }
        let id = self.next_segment_id.fetch_add(1, Ordering::Relaxed);
        let segment =
            Segment::create(&self.segments_dir, id, capacity, solo, self.preallocate, &self.stats, &self.maps)?;
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).insert(id, segment.clone());
        Ok(segment)
    }

    /// Refuses `len` more bytes when they would take the store past `max_bytes` or the
    /// filesystem below `min_free_bytes`.
    fn check_capacity(&self, len: u64) -> Result<()> {
        let max = self.config.max_bytes;
        if max > 0 && self.disk_bytes().saturating_add(len) > max {
            self.stats.capacity_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(Error::NoSpace(format!(
                "the store holds {} bytes; store.max_bytes is {max}",
                self.disk_bytes()
            )));
        }
        let min_free = self.config.min_free_bytes;
        if min_free > 0 {
            let free = self.free_bytes();
            if free < min_free.saturating_add(len) {
                self.stats.capacity_refusals.fetch_add(1, Ordering::Relaxed);
                return Err(Error::NoSpace(format!(
                    "{free} bytes free on the store's filesystem; store.min_free_bytes is {min_free}"
                )));
            }
        }
        Ok(())
    }

    /// Free bytes on the store's filesystem, read at most every [`FREE_SPACE_CHECK`] (bytes
    /// written since are subtracted from the last reading meanwhile).
    fn free_bytes(&self) -> u64 {
        let mut cached = self.free_space.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached.1.is_some_and(|at| at.elapsed() < FREE_SPACE_CHECK);
        if !fresh {
            match sys::free_bytes(&self.segments_dir) {
                Ok(free) => *cached = (free.saturating_add(self.disk_bytes()), Some(std::time::Instant::now())),
                Err(e) => tracing::warn!(error = %e, "statvfs of the store directory failed"),
            }
        }
        // Stored as "free + our bytes at the reading", so our own writes since count at once.
        cached.0.saturating_sub(self.disk_bytes())
    }

    /// A snapshot of the segment registry.
    fn segments_snapshot(&self) -> Vec<Arc<Segment>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Drops a segment from the registry and the map cache (its file is about to be unlinked).
    pub(crate) fn forget_segment(&self, id: u64) {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        self.maps.forget(id);
    }

    /// Solo-segment mappings the store keeps now (see [`MapCache`]).
    pub fn cached_mappings(&self) -> usize {
        self.maps.len()
    }

    /// The lowest commit sequence number in any segment but `except`.
    fn oldest_seq_except(&self, except: u64) -> Option<u64> {
        let segments = self.segments.lock().unwrap_or_else(|e| e.into_inner());
        segments
            .values()
            .filter(|s| s.id != except)
            .map(|s| s.min_seq.load(Ordering::Acquire))
            .filter(|s| *s != u64::MAX)
            .min()
    }

    /// fsync of the segments directory, so an unlink (or a new file) survives a power loss.
    fn sync_segments_dir(&self) {
        if let Err(e) = File::open(&self.segments_dir).and_then(|d| d.sync_all()) {
            tracing::warn!(error = %e, "fsync of the segments directory failed");
        }
    }

    /// Segment files the store holds.
    /// Bytes of the ballast in place: [`ballast::BALLAST_BYTES`], or 0 while it is released
    /// (a delete met a full disk and no room has come back since).
    pub fn ballast_bytes(&self) -> u64 {
        if self.ballast.is_present() {
            ballast::BALLAST_BYTES
        } else {
            0
        }
    }

    pub fn segment_count(&self) -> usize {
        self.segments.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Records larger than this get a segment of their own.
    fn solo_threshold(&self) -> u64 {
        self.config.segment_bytes / 4
    }
}

/// Records the outcome of `entry`'s body check, then answers whoever waits for it. A failed
/// body leaves the index (that record only: the key may already hold a re-fill) before any
/// waiter hears of it, so a waiter that fetches again does not find it; it is counted once, by
/// the call that removed it.
fn settle(index: &index::Index, stats: &StoreStats, checks: &Checks, entry: &IndexEntry, matched: bool) {
    let (key, (segment, offset)) = (entry.key(), entry.record());
    if matched {
        index.set_verified(key, segment, offset);
    } else if index.remove_entry(key, segment, offset).is_some() {
        stats.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            segment,
            offset = entry.body_offset,
            bucket = &*entry.meta.bucket,
            key = &*entry.meta.key,
            "stored body failed its checksum; dropped from the index"
        );
    }
    checks.finish(entry.record(), matched);
}

/// The header, metadata and trailer of the committed record at `offset` in `segment`, if they
/// read back whole.
fn read_record(segment: &Segment, offset: u64) -> Option<(RecordHeader, crate::meta::RecordMeta, Trailer)> {
    decode_record(&segment.mapped()?, usize::try_from(offset).ok()?, segment)
}

/// The header, metadata and trailer of the record at `at` in `bytes` (a segment's mapping, or
/// bytes read from its file), if they are all there and read back whole.
fn decode_record(map: &[u8], at: usize, segment: &Segment) -> Option<(RecordHeader, crate::meta::RecordMeta, Trailer)> {
    let (header, header_crc) = RecordHeader::decode(map.get(at..)?, segment.nonce, segment.version)?;
    let names_at = at + RECORD_HEADER_LEN as usize;
    let meta_at = names_at + header.bucket_len as usize + header.key_len as usize;
    let record = crate::meta::RecordMeta::decode(map.get(meta_at..meta_at + header.meta_len as usize)?).ok()?;
    let trailer_at = at + header.trailer_start() as usize;
    let trailer = map.get(trailer_at..trailer_at + trailer_len(segment.version) as usize)?;
    let trailer = Trailer::decode(trailer, header_crc, segment.version)?;
    Some((header, record, trailer))
}

/// What a reader knows of the record at `loc`, from its header, metadata and trailer.
fn index_entry(
    key: ObjectKeyRef<'_>,
    loc: Loc,
    header: RecordHeader,
    record: crate::meta::RecordMeta,
    trailer: Trailer,
) -> IndexEntry {
    IndexEntry {
        meta: Arc::new(ObjectMeta {
            bucket: key.bucket.into(),
            key: key.key.into(),
            size: header.body_len,
            md5: trailer.md5,
            record,
            seq: trailer.seq,
        }),
        body_offset: loc.record_offset + header.body_start(),
        body_crc: trailer.body_crc,
        record_offset: loc.record_offset,
        verified: loc.verified,
        segment: loc.segment,
    }
}

fn corrupt_body(entry: &IndexEntry) -> Error {
    Error::Corrupt { segment: entry.segment.id, offset: entry.body_offset, what: "body crc mismatch" }
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

/// The byte ranges of `loc`'s record that a reader of up to `max_body` body bytes needs, below
/// `file_end`: the whole record (head, body, padding, trailer) when the body is at most
/// `max_body`, else the head with the first `max_body` body bytes, and the trailer. Nothing
/// past the record: bytes beyond it are the next record's, read for nobody and kept in the page
/// cache in place of something asked for.
fn record_spans(loc: &Loc, max_body: u64, file_end: u64) -> Vec<(u64, u64)> {
    let start = loc.record_offset;
    let span = |from: u64, len: u64| {
        let end = from.saturating_add(len).min(file_end);
        (from < end).then(|| (from, end - from))
    };
    let head = u64::from(loc.head);
    let trailer_start = format::trailer_offset(head, loc.size);
    let trailer_bytes = trailer_len(loc.segment.version);
    let mut parts = Vec::with_capacity(2);
    if loc.size <= max_body {
        parts.extend(span(start, trailer_start + trailer_bytes));
    } else {
        parts.extend(span(start, head + max_body));
        parts.extend(span(start + trailer_start, trailer_bytes));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::RecordMeta;
    use std::future::Future;
    use std::os::unix::fs::FileExt;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn open(dir: &Path) -> Arc<Store> {
        let config = StoreConfig::new(dir);
        Store::open(config).unwrap().0
    }

    fn body(n: usize, seed: u8) -> Bytes {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
    }

    fn put(store: &Arc<Store>, key: &str, data: &Bytes) {
        put_with(store, key, data, RecordMeta::new(SystemTime::now()), true);
    }

    /// [`put`] with its metadata, and with the length told when the write begins or not.
    fn put_with(store: &Arc<Store>, key: &str, data: &Bytes, meta: RecordMeta, length_known: bool) {
        let len = length_known.then_some(data.len() as u64);
        let mut w = store.begin(0, ObjectKeyRef::new("b", key), meta, len, CommitRule::LastWins).unwrap();
        w.append(data).unwrap();
        w.commit().unwrap();
    }

    /// A store holding `data` under `key`, reopened so the entry is unverified (as after a
    /// restart), and optionally with one body byte flipped on disk.
    fn reopened_with(dir: &Path, key: &str, data: &Bytes, damage: bool) -> Arc<Store> {
        let store = open(dir);
        put(&store, key, data);
        drop(store);
        let store = open(dir);
        if damage {
            let entry = entry(&store, ObjectKeyRef::new("b", key));
            let file = OpenOptions::new().write(true).open(&entry.segment.path).unwrap();
            let at = entry.body_offset + data.len() as u64 / 2;
            // The mapping is shared: readers see this byte.
            file.write_all_at(&[data[data.len() / 2] ^ 0xff], at).unwrap();
        }
        store
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    /// The key's current object as a reader gets it.
    fn entry(store: &Store, key: ObjectKeyRef<'_>) -> Arc<IndexEntry> {
        store.entry_at(key, store.index.get(key).unwrap()).unwrap()
    }

    /// The threads that checked `entry`'s body, one per check.
    fn checked_on(store: &Store, entry: &IndexEntry) -> Vec<String> {
        let checked = store.checks.checked_on.lock().unwrap();
        checked.iter().filter(|(record, _)| *record == entry.record()).map(|(_, t)| t.clone()).collect()
    }

    /// A read of a record not in memory asks for the record and nothing past it, whatever the
    /// length of its head (6 KiB of user metadata here), for a record written with its length
    /// unknown, and for one in a segment of its own: as committed, as compaction copies them,
    /// and as recovery finds them after a restart. A body over `max_body` is read as its head
    /// and first `max_body` bytes, and its trailer.
    #[test]
    fn cold_reads_ask_for_the_record_and_nothing_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = || StoreConfig {
            // 1 MiB segments: "big" gets one of its own; no background compaction.
            segment_bytes: 1 << 20,
            compaction: CompactionConfig { interval: Duration::ZERO, ..CompactionConfig::default() },
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config()).unwrap().0;
        // (key, body, length known when the write began)
        let objects =
            [("small", body(1000, 1), true), ("long-head", body(3, 2), true), ("unknown", body(5000, 3), false)];
        let big = ("big", body(300 << 10, 4), true);
        for (i, (key, data, known)) in objects.iter().chain([&big]).enumerate() {
            let mut meta = RecordMeta::new(SystemTime::now());
            if *key == "long-head" {
                meta.user = (0..3).map(|i| (format!("m{i}").into(), Bytes::from(vec![b'v'; 2048]))).collect();
            }
            put_with(&store, key, data, meta, *known);
            // Fillers between them, deleted below so compaction copies the objects.
            put(&store, &format!("filler-{i}"), &body(200 << 10, 5));
        }
        // Enough after them that their segment fills and is sealed: compaction takes only those.
        for i in 0..3 {
            put(&store, &format!("tail-{i}"), &body(200 << 10, 6));
        }
        let check = |store: &Store| {
            for (key, data, _) in objects.iter().chain([&big]) {
                let loc = store.index.get(ObjectKeyRef::new("b", key)).unwrap();
                let (header, _, _) = read_record(&loc.segment, loc.record_offset).unwrap();
                let (start, end) = (loc.record_offset, loc.record_offset + header.total_len());
                if *key == "long-head" {
                    assert!(header.body_start() > 6 << 10, "a head of {} bytes", header.body_start());
                }
                assert_eq!(record_spans(&loc, 1 << 20, u64::MAX), [(start, end - start)], "{key}");
                let max_body = 64 << 10;
                let expected = if data.len() as u64 > max_body {
                    vec![
                        (start, header.body_start() + max_body),
                        (start + header.trailer_start(), trailer_len(header.version)),
                    ]
                } else {
                    vec![(start, end - start)]
                };
                assert_eq!(record_spans(&loc, max_body, u64::MAX), expected, "{key}");
                // Every page of it is in memory here (just written or read): nothing to read.
                assert!(store.cold_spans(ObjectKeyRef::new("b", key), max_body).is_none(), "{key}");
            }
            assert!(store.index.get(ObjectKeyRef::new("b", "big")).unwrap().segment.solo, "big has its own segment");
        };
        check(&store);
        for i in 0..4 {
            store.delete(0, ObjectKeyRef::new("b", &format!("filler-{i}"))).unwrap();
        }
        let before = store.index.get(ObjectKeyRef::new("b", "small")).unwrap();
        let report = store.compact().unwrap();
        let after = store.index.get(ObjectKeyRef::new("b", "small")).unwrap();
        assert!(report.records_copied > 0 && !after.is(before.segment.id, before.record_offset), "{report:?}");
        check(&store);
        drop(store);
        check(&Store::open(config()).unwrap().0);
    }

    #[test]
    fn the_map_cache_keeps_the_most_recently_used_mappings() {
        let cache = MapCache::with_cap(2);
        for id in 1..=3 {
            cache.insert(id, Bytes::from(vec![id as u8]));
        }
        assert_eq!(cache.len(), 2, "the least recently used went");
        assert!(!cache.lock().contains(&1));
        // A read makes 2 the most recent, so 3 goes next.
        assert!(cache.lock().get(&2).is_some());
        cache.insert(4, Bytes::from_static(b"4"));
        assert!(cache.lock().contains(&2) && !cache.lock().contains(&3));
        cache.forget(4);
        assert_eq!(cache.len(), 1);
    }

    /// On ext4, a segment's blocks are allocated ahead of its writes, and given back past its end
    /// once it is settled (sealed, nothing pending) or found at start: no segment keeps more disk
    /// than its length, and nothing written is cut off.
    #[test]
    fn segments_are_preallocated_while_written_and_given_back_once_settled() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        if !sys::preallocation_helps(dir.path()) {
            eprintln!("not ext4 here; skipped");
            return;
        }
        let config = StoreConfig {
            segment_bytes: 16 << 20,
            compaction: CompactionConfig { interval: Duration::ZERO, ..Default::default() },
            ..StoreConfig::new(dir.path())
        };
        // (length, bytes allocated past the length rounded up to a block)
        let past_end = |path: &Path| {
            let m = fs::metadata(path).unwrap();
            (m.len(), (m.blocks() * 512).saturating_sub(m.len().div_ceil(4096) * 4096))
        };
        let store = Store::open(config.clone()).unwrap().0;
        put(&store, "small", &body(100_000, 1));
        let first = entry(&store, ObjectKeyRef::new("b", "small")).segment.clone();
        let (_, ahead) = past_end(&first.path);
        assert!(ahead > PREALLOCATE_BYTES / 2, "only {ahead} bytes allocated ahead of the writes");

        // A record still being written when its lane moves on to the next segment.
        let slow = body(1 << 20, 2);
        let mut w = store
            .begin(
                0,
                ObjectKeyRef::new("b", "slow"),
                RecordMeta::new(SystemTime::now()),
                Some(slow.len() as u64),
                CommitRule::LastWins,
            )
            .unwrap();
        w.append(&slow.slice(..1000)).unwrap();
        let mut puts = Vec::new();
        for i in 0..6 {
            let data = body(3 << 20, 10 + i as u8);
            put(&store, &format!("big{i}"), &data);
            puts.push(data);
        }
        let last = entry(&store, ObjectKeyRef::new("b", "big5")).segment.clone();
        assert_ne!(last.id, first.id, "the lane moved on");
        assert!(first.is_sealed() && !first.is_settled());
        let (_, ahead) = past_end(&first.path);
        assert!(ahead > 0, "given back while a record in it is still written");
        w.append(&slow.slice(1000..)).unwrap();
        w.commit().unwrap();
        let (len, ahead) = past_end(&first.path);
        assert_eq!(ahead, 0, "a settled segment of {len} bytes keeps {ahead} bytes past its end");

        // The lane's current segment keeps its allocation until the next start.
        assert!(past_end(&last.path).1 > 0);
        drop((first, last));
        drop(store);
        let store = Store::open(config).unwrap().0;
        for file in fs::read_dir(dir.path().join("segments")).unwrap() {
            let path = file.unwrap().path();
            assert_eq!(past_end(&path).1, 0, "{} keeps blocks past its end after a restart", path.display());
        }
        assert_eq!(store.get(ObjectKeyRef::new("b", "small")).unwrap().unwrap().body, body(100_000, 1));
        assert_eq!(store.get(ObjectKeyRef::new("b", "slow")).unwrap().unwrap().body, slow);
        for (i, data) in puts.iter().enumerate() {
            assert_eq!(&store.get(ObjectKeyRef::new("b", &format!("big{i}"))).unwrap().unwrap().body, data);
        }
    }

    #[test]
    fn solo_segments_are_mapped_only_while_read_recently() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            segment_bytes: 1 << 20,
            compaction: CompactionConfig { interval: Duration::ZERO, ..Default::default() },
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config.clone()).unwrap().0;
        // Each over a quarter segment: a solo segment, a file of its own.
        for i in 0..40 {
            put(&store, &format!("big{i}"), &body(300_000, i as u8));
        }
        drop(store);
        let store = Store::open_with(config, MapCache::with_cap(4)).unwrap().0;
        assert_eq!(store.cached_mappings(), 0, "nothing is mapped at start");
        let mapped = |dir: &Path| {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            maps.lines().filter(|l| l.contains(dir.to_str().unwrap())).count()
        };
        assert_eq!(mapped(dir.path()), 0, "no segment of this store is mapped");
        // Forty big objects read through a cache of four mappings: the process never maps more
        // than those four and the one being read.
        for round in 0..2 {
            for i in 0..40 {
                let got = store.get(ObjectKeyRef::new("b", &format!("big{i}"))).unwrap().unwrap();
                assert_eq!(got.body, body(300_000, i as u8), "round {round}, object {i}");
                assert!(mapped(dir.path()) <= 5, "{} mappings", mapped(dir.path()));
            }
        }
        assert_eq!(store.cached_mappings(), 4);
        assert_eq!(mapped(dir.path()), 4, "only the cached mappings outlive their readers");
        // Nor does it hold their files open: the descriptor limit is not the cap either.
        let open_solo_files = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.unwrap().path()).ok())
            .filter(|target| target.starts_with(dir.path()) && target.extension().is_some_and(|e| e == "seg"))
            .count();
        assert!(open_solo_files <= 1, "{open_solo_files} segment files open (at most the empty active one)");
    }

    #[test]
    fn write_to_a_full_disk_is_no_space_and_counted() {
        let Ok(file) = OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("no /dev/full here; skipped");
            return;
        };
        let stats = Arc::new(StoreStats::default());
        let seg = Segment {
            id: 1,
            path: "/dev/full".into(),
            file: Mutex::new(Some(Arc::new(file))),
            nonce: 0,
            version: FORMAT_VERSION,
            capacity: 0,
            solo: false,
            map: OnceLock::new(),
            dirty: AtomicBool::new(false),
            file_len: AtomicU64::new(0),
            discarded: AtomicBool::new(false),
            sealed: AtomicBool::new(false),
            preallocated: AtomicU64::new(NOT_PREALLOCATED),
            pending: AtomicU64::new(0),
            min_seq: AtomicU64::new(u64::MAX),
            maps: Arc::new(MapCache::default()),
            stats: stats.clone(),
        };
        let err = seg.write_at(b"body bytes", 0).unwrap_err();
        assert!(matches!(err, Error::NoSpace(_)), "ENOSPC must be NoSpace, got {err:?}");
        assert_eq!(stats.write_failures.load(Ordering::Relaxed), 1);
        assert_eq!(stats.disk_bytes.load(Ordering::Relaxed), 0, "nothing landed");
    }

    /// Reader B looked an entry up; before B's check of its body finished, the entry left the
    /// index (another reader's failed check) and a re-fill committed a new version of the key.
    /// B's failed check must remove the entry it checked, not whatever the key maps to now.
    #[test]
    fn failed_check_removes_only_the_entry_it_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKeyRef::new("b", "k");
        let store = reopened_with(dir.path(), "k", &body(5000, 1), true);
        let old = entry(&store, key);

        assert!(store.index.remove_entry(key, old.segment.id, old.record_offset).is_some());
        put(&store, "k", &body(4000, 2));
        let new = entry(&store, key);
        assert_ne!(old.record(), new.record());

        let err = store.checked_body(&old).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert_eq!(entry(&store, key).record(), new.record(), "the re-fill's entry survives");
        assert_eq!(store.get(key).unwrap().unwrap().body, body(4000, 2));
        assert!(
            store.index.remove_entry(key, old.segment.id, old.record_offset).is_none(),
            "an entry no longer in the index is not removed again"
        );
        assert_eq!(store.stats.corrupt_reads.load(Ordering::Relaxed), 0, "no object in the index was corrupt");
    }

    #[test]
    fn first_lookup_checks_on_a_verifier_thread_and_later_ones_answer_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKeyRef::new("b", "k");
        let data = body(300_000, 3);
        let store = reopened_with(dir.path(), "k", &data, false);
        let entry = entry(&store, key);
        assert!(!entry.verified, "recovery does not check bodies");

        let obj = runtime().block_on(store.lookup(key)).unwrap().unwrap();
        assert_eq!(obj.body, data);
        assert!(store.index.get(key).unwrap().verified);
        assert_eq!(checked_on(&store, &entry), [verify::VERIFIER_THREAD_NAME], "checked once, off the caller's thread");

        // Verified: the first poll answers (no thread hop), and nothing is checked again.
        let mut again = pin!(store.lookup(key));
        match again.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(Some(obj))) => assert_eq!(obj.body, data),
            other => panic!("a verified entry must answer on the first poll: {other:?}"),
        }
        assert_eq!(store.get(key).unwrap().unwrap().body, data, "the sync path shares the state");
        assert_eq!(checked_on(&store, &entry).len(), 1);
    }

    #[test]
    fn concurrent_first_lookups_share_one_check() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKeyRef::new("b", "k");
        let data = body(100_000, 4);
        let store = reopened_with(dir.path(), "k", &data, false);
        let entry = entry(&store, key);

        // Occupy every verifier thread, so the check queues behind them until released.
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        for _ in 0..verify::VERIFIER_THREADS {
            let (busy, release) = (busy_tx.clone(), release_rx.clone());
            store.verifier.submit(Box::new(move || {
                busy.send(()).unwrap();
                let _ = release.lock().unwrap().recv();
            }));
        }
        for _ in 0..verify::VERIFIER_THREADS {
            busy_rx.recv().unwrap();
        }

        let mut cx = Context::from_waker(Waker::noop());
        let mut a = pin!(store.lookup(key));
        let mut b = pin!(store.lookup(key));
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(store.checks.waiter_count(entry.record()), 2, "the second lookup joined the first's check");
        assert!(checked_on(&store, &entry).is_empty(), "the callers did not check the body themselves");

        for _ in 0..verify::VERIFIER_THREADS {
            release_tx.send(()).unwrap();
        }
        let (ra, rb) = runtime().block_on(async { (a.await, b.await) });
        assert_eq!(ra.unwrap().unwrap().body, data);
        assert_eq!(rb.unwrap().unwrap().body, data);
        assert_eq!(checked_on(&store, &entry), [verify::VERIFIER_THREAD_NAME], "one check for both");
    }

    #[test]
    fn corrupt_body_found_by_lookup_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let key = ObjectKeyRef::new("b", "k");
        let store = reopened_with(dir.path(), "k", &body(70_000, 5), true);
        let entry = entry(&store, key);

        let rt = runtime();
        let err = rt.block_on(store.lookup(key)).unwrap_err();
        assert!(matches!(err, Error::Corrupt { what: "body crc mismatch", .. }), "{err:?}");
        assert_eq!(checked_on(&store, &entry), [verify::VERIFIER_THREAD_NAME]);
        assert!(!store.contains(key), "dropped, so the node fetches it again");
        assert!(rt.block_on(store.lookup(key)).unwrap().is_none());
        assert_eq!(store.stats.corrupt_reads.load(Ordering::Relaxed), 1);
        // A reader still holding the old entry checks it again (the index forgot it) and gets
        // the same answer; it is not counted twice.
        assert!(store.checked_body(&entry).is_err());
        assert_eq!(store.stats.corrupt_reads.load(Ordering::Relaxed), 1, "counted once");
    }
}
