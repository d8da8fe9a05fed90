//! Rebuilding the index from segment files at start.
//!
//! Every segment file is mapped read-only and scanned from its first record. A record counts only
//! when its header, names and trailer all pass their checks; a record without a valid trailer
//! (a fetch that failed, or a process killed mid-write) is skipped using the length its header
//! gives. Bytes that are not a header (damage after a power loss) are skipped 8 bytes at a time
//! until a header carrying this segment's nonce appears. A torn tail is never truncated: the
//! segment is sealed and new writes go to new segments. Body CRCs are checked lazily, on first
//! read ([`super::Store::lookup`]), so start-up time does not grow with the bytes stored.
//!
//! The version of a key is its committed record (object or tombstone) with the highest commit
//! sequence number; a tombstone there leaves the key absent. On a tie (format version 1 records
//! all have sequence 0) the record in the oldest segment, then the earliest in it, wins.
//!
//! Start-up runs in two steps, each on every core:
//! 1. Scan: segments are handed out to threads one at a time. Each committed record becomes a
//!    [`Found`] in its index shard's list, its bucket and key copied to that list's name buffer
//!    (one buffer per shard and thread: no allocation per record).
//! 2. Build: shards are handed out to threads. A shard's records are sorted by (bucket, key,
//!    newest first), the first of each key is its version, and the shard's key pages are built
//!    from them in order ([`Index::rebuild_shard`]).
//!
//! Inserting records one at a time in the order segments hold them (random key order) cost a
//! search and a shift in a page per record: 33 s for ten million objects, against the goal of
//! 10 s (`bench/RESULTS.md`).
//!
//! Files that hold nothing committed (a crash right after creation, a solo segment whose object
//! never finished, a segment of abandoned records) are removed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::format::{
    trailer_len, FileHeader, RecordHeader, Trailer, ALIGN, FILE_HEADER_LEN, FLAG_SOLO, RECORD_HEADER_LEN,
};
use super::index::{Index, Slot};
use super::{sys, MapCache, RecoveryReport, Segment, StoreStats};
use crate::key::ObjectKeyRef;
use crate::meta::RecordMeta;
use crate::{Error, Result};

pub(crate) struct Recovered {
    pub report: RecoveryReport,
    pub next_segment_id: u64,
    /// One past the highest commit sequence number found.
    pub next_seq: u64,
    /// Sum of the lengths of the segment files kept.
    pub disk_bytes: u64,
    /// The segments kept, all sealed.
    pub segments: Vec<Arc<Segment>>,
}

pub(crate) fn recover_dir(
    dir: &Path,
    index: &Index,
    stats: &Arc<StoreStats>,
    maps: &Arc<MapCache>,
) -> Result<Recovered> {
    let mut paths: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        if let Some(id) = id {
            paths.push((id, path));
        }
    }
    // Oldest first: a record's segment is known by its place in this list, and that order
    // breaks ties between version 1 records.
    paths.sort();

    // 1. Scan every segment.
    let next = AtomicUsize::new(0);
    let scanned = on_threads(paths.len(), |part| {
        let mut found = Found::empty_parts();
        let mut scans = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((id, path)) = paths.get(i) else { break };
            let at = SegmentAt { list_index: i as u32, part: part as u8 };
            scans.push((i, scan_segment(*id, path, at, index, &mut found, stats, maps)));
        }
        (found, scans)
    });
    let mut scans: Vec<Option<Scan>> = (0..paths.len()).map(|_| None).collect();
    let mut parts = Vec::new();
    for (found, done) in scanned {
        parts.push(found);
        for (i, scan) in done {
            scans[i] = Some(scan?);
        }
    }

    let mut out = Recovered {
        report: RecoveryReport::default(),
        next_segment_id: 1,
        next_seq: 1,
        disk_bytes: 0,
        segments: Vec::new(),
    };
    let mut segments: Vec<Option<Arc<Segment>>> = Vec::with_capacity(paths.len());
    for ((id, path), scan) in paths.iter().zip(scans) {
        let found = scan.expect("every segment was scanned");
        out.next_segment_id = out.next_segment_id.max(id + 1);
        out.report.torn_or_abandoned += found.skipped;
        out.next_seq = out.next_seq.max(found.max_seq + 1);
        out.report.tombstones += found.tombstones;
        if found.committed == 0 && found.tombstones == 0 {
            // Nothing of it is in `parts`.
            fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            out.report.removed_files += 1;
            segments.push(None);
            continue;
        }
        out.report.segments += 1;
        out.disk_bytes += found.segment.as_ref().map_or(0, |s| s.capacity);
        out.segments.extend(found.segment.clone());
        segments.push(found.segment);
    }

    // 2. Build every shard of the index from what was found for it.
    let mut by_shard: Vec<Vec<ShardFound>> = (0..Index::SHARDS).map(|_| Vec::with_capacity(parts.len())).collect();
    for part in parts {
        for (shard, found) in part.into_iter().enumerate() {
            by_shard[shard].push(found);
        }
    }
    let queue = Mutex::new(by_shard.into_iter().enumerate().collect::<Vec<_>>());
    on_threads(Index::SHARDS, |_| loop {
        let Some((shard, found)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop() else { break };
        build_shard(index, shard, found, &segments);
    });
    out.report.objects = index.len();
    out.report.bytes = index.live_bytes();
    Ok(out)
}

/// Runs `f(thread)` on as many threads as there are cores (at most `jobs`), and returns what
/// each returned.
fn on_threads<T: Send>(jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(jobs).max(1);
    if threads == 1 {
        return vec![f(0)];
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..threads).map(|t| scope.spawn(move || f(t))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// A committed record (object or tombstone) found by the scan, until its shard is built.
#[derive(Clone, Copy)]
struct Found {
    /// Where its bucket starts in the name buffer ([`ShardFound::names`]) of the thread that
    /// found it; its key follows.
    names_at: u64,
    seq: u64,
    record_offset: u64,
    body_len: u64,
    /// Bytes from the record's start to its body (`u32::MAX` if more: see `Slot::head`).
    head: u32,
    /// Its segment's place in the scan ([`SegmentAt`], whose fields are spelled out here so
    /// they share the struct's padding with the others).
    list_index: u32,
    part: u8,
    bucket_len: u16,
    key_len: u16,
    tombstone: bool,
}

// One per record while the scan runs, 10 million of them in `bench/store_scale.sh`.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Found>() == 48);

/// A segment's place in the scan: its index in the list of segment files (oldest first), and
/// the scanning thread's number (whose name buffers hold its records' names).
#[derive(Clone, Copy)]
struct SegmentAt {
    list_index: u32,
    part: u8,
}

/// What one scanning thread found for one shard.
#[derive(Default)]
struct ShardFound {
    found: Vec<Found>,
    names: Vec<u8>,
}

impl Found {
    fn empty_parts() -> Vec<ShardFound> {
        (0..Index::SHARDS).map(|_| ShardFound::default()).collect()
    }

    /// Its (bucket, key), from the name buffers of its shard (one per scanning thread).
    fn names<'a>(&self, parts: &'a [ShardFound]) -> (&'a [u8], &'a [u8]) {
        let names = &parts[self.part as usize].names;
        let at = self.names_at as usize;
        let bucket_end = at + self.bucket_len as usize;
        (&names[at..bucket_end], &names[bucket_end..bucket_end + self.key_len as usize])
    }
}

/// Sorts a shard's records by (bucket, key), the newest version of each key first, and
/// rebuilds the shard from each key's newest record, unless that is a tombstone.
fn build_shard(index: &Index, shard: usize, mut parts: Vec<ShardFound>, segments: &[Option<Arc<Segment>>]) {
    // Into the longest list, so that the others are copied, not it.
    let mut found =
        parts.iter_mut().max_by_key(|p| p.found.len()).map(|p| std::mem::take(&mut p.found)).unwrap_or_default();
    for part in parts.iter_mut() {
        found.append(&mut part.found);
    }
    let parts = &parts;
    found.sort_unstable_by(|a, b| {
        a.names(parts)
            .cmp(&b.names(parts))
            .then(b.seq.cmp(&a.seq))
            .then(a.list_index.cmp(&b.list_index))
            .then(a.record_offset.cmp(&b.record_offset))
    });
    let mut previous: Option<(&[u8], &[u8])> = None;
    let winners = found.iter().filter_map(|f| {
        let names = f.names(parts);
        if previous == Some(names) {
            return None;
        }
        previous = Some(names);
        if f.tombstone {
            return None;
        }
        let segment = segments[f.list_index as usize].clone().expect("a segment with records is kept");
        // Checked at the scan.
        let bucket = std::str::from_utf8(names.0).unwrap_or_default();
        Some((bucket, names.1, Slot::new(segment, f.record_offset, f.seq, f.body_len, f.head.into(), false, 0)))
    });
    index.rebuild_shard(shard, winners);
}

struct Scan {
    segment: Option<Arc<Segment>>,
    /// Committed object records (current versions or not).
    committed: usize,
    tombstones: usize,
    skipped: usize,
    max_seq: u64,
}

/// Records smaller than this are read ahead in windows of [`READ_AHEAD`] (below).
const SMALL_RECORD: u64 = 64 << 10;
const READ_AHEAD: u64 = 4 << 20;

fn scan_segment(
    id: u64,
    path: &Path,
    at: SegmentAt,
    index: &Index,
    found: &mut [ShardFound],
    stats: &Arc<StoreStats>,
    maps: &Arc<MapCache>,
) -> Result<Scan> {
    let file = File::options().read(true).write(true).open(path).map_err(|e| Error::io(path, e))?;
    sys::no_read_ahead(&file);
    let metadata = file.metadata().map_err(|e| Error::io(path, e))?;
    let len = metadata.len();
    // A segment that was being written when the node stopped keeps the blocks allocated ahead of
    // its writes: nothing appends to a segment found at start.
    sys::release_past_end(&file, &metadata);
    let mut scan = Scan { segment: None, committed: 0, tombstones: 0, skipped: 0, max_seq: 0 };
    let map = sys::map_file(&file, len).map_err(|e| Error::io(path, e))?;
    let Some(fh) = FileHeader::decode(&map) else {
        if len > FILE_HEADER_LEN {
            tracing::warn!(path = %path.display(), "segment file header is damaged; its records are ignored");
        }
        return Ok(scan);
    };
    if fh.segment_id != id {
        tracing::warn!(path = %path.display(), "segment id in header does not match its file name; ignored");
        return Ok(scan);
    }
    let segment = Arc::new(Segment {
        id,
        path: path.to_path_buf(),
        file: std::sync::Mutex::new(Some(std::sync::Arc::new(file))),
        nonce: fh.nonce,
        version: fh.version,
        capacity: len,
        solo: fh.flags & FLAG_SOLO != 0,
        map: OnceLock::new(),
        dirty: AtomicBool::new(false),
        file_len: AtomicU64::new(len),
        discarded: AtomicBool::new(false),
        sealed: AtomicBool::new(true),
        preallocated: AtomicU64::new(super::NOT_PREALLOCATED),
        pending: AtomicU64::new(0),
        min_seq: AtomicU64::new(u64::MAX),
        maps: maps.clone(),
        stats: stats.clone(),
    });
    // A regular segment keeps its mapping; a solo one is mapped again when read (MapCache), so
    // a store of many big objects does not hold a mapping per object.
    if !segment.solo {
        let _ = segment.map.set(map.clone());
    }
    // The mapping reads a page per fault (`sys::map_file`): right for a segment of big records,
    // whose headers are far apart, but a fault per page through a segment of small ones. Where
    // records are small, the next few MiB are asked for ahead of the scan.
    let mut read_ahead_to = 0u64;
    let mut off = FILE_HEADER_LEN;
    while off + RECORD_HEADER_LEN <= len {
        let at_usize = off as usize;
        let Some((h, header_crc)) = RecordHeader::decode(&map[at_usize..], fh.nonce, fh.version) else {
            off += ALIGN;
            continue;
        };
        let total = h.total_len();
        if total < SMALL_RECORD && off + READ_AHEAD / 2 > read_ahead_to {
            let end = (off + READ_AHEAD).min(len);
            sys::will_need(&map[at_usize..end as usize]);
            read_ahead_to = end;
        }
        let Some(end) = off.checked_add(total).filter(|e| *e <= len) else {
            // Torn tail: the record runs past the end of the file.
            scan.skipped += 1;
            break;
        };
        if h.is_len_pending() {
            // A spilled unknown-length body whose commit never happened.
            scan.skipped += 1;
            off = end;
            continue;
        }
        let names_start = at_usize + RECORD_HEADER_LEN as usize;
        let names_end = names_start + h.bucket_len as usize + h.key_len as usize + h.meta_len as usize;
        let names = &map[names_start..names_end];
        if crate::crc::crc32c(names) != h.names_crc {
            off += ALIGN;
            continue;
        }
        let trailer_at = (off + h.trailer_start()) as usize;
        let trailer_end = trailer_at + trailer_len(fh.version) as usize;
        let Some(trailer) = Trailer::decode(&map[trailer_at..trailer_end], header_crc, fh.version) else {
            // Started but never committed.
            scan.skipped += 1;
            off = end;
            continue;
        };
        let Some((bucket, key)) = decode_names(names, &h) else {
            scan.skipped += 1;
            off = end;
            continue;
        };
        let shard = &mut found[index.shard_of(ObjectKeyRef::new(bucket, key))];
        shard.found.push(Found {
            names_at: shard.names.len() as u64,
            seq: trailer.seq,
            record_offset: off,
            body_len: h.body_len,
            head: u32::try_from(h.body_start()).unwrap_or(u32::MAX),
            list_index: at.list_index,
            part: at.part,
            bucket_len: h.bucket_len,
            key_len: h.key_len,
            tombstone: h.is_tombstone(),
        });
        shard.names.extend_from_slice(bucket.as_bytes());
        shard.names.extend_from_slice(key.as_bytes());
        if h.is_tombstone() {
            scan.tombstones += 1;
        } else {
            scan.committed += 1;
        }
        segment.note_seq(trailer.seq);
        scan.max_seq = scan.max_seq.max(trailer.seq);
        off = end;
    }
    segment.release_file();
    scan.segment = Some(segment);
    Ok(scan)
}

/// The record's bucket and key, if they are UTF-8 and its metadata decodes.
fn decode_names<'a>(names: &'a [u8], h: &RecordHeader) -> Option<(&'a str, &'a str)> {
    let (bucket, rest) = names.split_at(h.bucket_len as usize);
    let (key, meta) = rest.split_at(h.key_len as usize);
    let bucket = std::str::from_utf8(bucket).ok()?;
    let key = std::str::from_utf8(key).ok()?;
    RecordMeta::decode(meta).ok()?;
    Some((bucket, key))
}
