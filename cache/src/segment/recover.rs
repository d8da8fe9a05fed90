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
//! sequence number; a tombstone there leaves the key absent. Every record is applied to the
//! index with that rule, so the result does not depend on the order files are read in.
//!
//! Files that hold nothing committed (a crash right after creation, a solo segment whose object
//! never finished, a segment of abandoned records) are removed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};

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
    // Oldest first. The version of a key is its record with the highest sequence number, wherever
    // it lies; the order matters only among version 1 records (all sequence 0: the first wins).
    paths.sort();
    let mut out = Recovered {
        report: RecoveryReport::default(),
        next_segment_id: 1,
        next_seq: 1,
        disk_bytes: 0,
        segments: Vec::new(),
    };
    for (id, path) in paths {
        out.next_segment_id = out.next_segment_id.max(id + 1);
        let file = File::options().read(true).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let found = scan_segment(id, &path, file, len, index, stats, maps)?;
        out.report.torn_or_abandoned += found.skipped;
        out.next_seq = out.next_seq.max(found.max_seq + 1);
        out.report.tombstones += found.tombstones;
        if found.committed == 0 && found.tombstones == 0 {
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            out.report.removed_files += 1;
            continue;
        }
        out.report.segments += 1;
        out.disk_bytes += len;
        out.segments.extend(found.segment);
    }
    // No writer is running yet: no deletion needs remembering once it has done its work here.
    index.prune_tombstones(u64::MAX);
    out.report.objects = index.len();
    out.report.bytes = index.live_bytes();
    Ok(out)
}

struct Scan {
    segment: Option<Arc<Segment>>,
    /// Committed object records (current versions or not).
    committed: usize,
    tombstones: usize,
    skipped: usize,
    max_seq: u64,
}

fn scan_segment(
    id: u64,
    path: &Path,
    file: File,
    len: u64,
    index: &Index,
    stats: &Arc<StoreStats>,
    maps: &Arc<MapCache>,
) -> Result<Scan> {
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
        min_seq: AtomicU64::new(u64::MAX),
        maps: maps.clone(),
        stats: stats.clone(),
    });
    // A regular segment keeps its mapping; a solo one is mapped again when read (MapCache), so
    // a store of many big objects does not hold a mapping per object.
    if !segment.solo {
        let _ = segment.map.set(map.clone());
    }
    let mut off = FILE_HEADER_LEN;
    while off + RECORD_HEADER_LEN <= len {
        let at = off as usize;
        let Some((h, header_crc)) = RecordHeader::decode(&map[at..], fh.nonce, fh.version) else {
            off += ALIGN;
            continue;
        };
        let total = h.total_len();
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
        let names_start = at + RECORD_HEADER_LEN as usize;
        let names_end = names_start + h.bucket_len as usize + h.key_len as usize + h.meta_len as usize;
        let names = &map[names_start..names_end];
        if crc32c::crc32c(names) != h.names_crc {
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
        match decode_names(names, &h) {
            Some((bucket, key, _)) if h.is_tombstone() => {
                index.recover_tombstone(ObjectKeyRef::new(&bucket, &key), trailer.seq);
                segment.note_seq(trailer.seq);
                scan.tombstones += 1;
                scan.max_seq = scan.max_seq.max(trailer.seq);
            }
            Some((bucket, key, _)) => {
                let seq = trailer.seq;
                let slot = Slot::new(segment.clone(), off, seq, h.body_len, false, 0);
                index.recover_object(ObjectKeyRef::new(&bucket, &key), slot);
                scan.committed += 1;
                scan.max_seq = scan.max_seq.max(seq);
                segment.note_seq(seq);
            }
            None => scan.skipped += 1,
        }
        off = end;
    }
    segment.release_file();
    scan.segment = Some(segment);
    Ok(scan)
}

fn decode_names(names: &[u8], h: &RecordHeader) -> Option<(Box<str>, Box<str>, RecordMeta)> {
    let (bucket, rest) = names.split_at(h.bucket_len as usize);
    let (key, meta) = rest.split_at(h.key_len as usize);
    let bucket = std::str::from_utf8(bucket).ok()?;
    let key = std::str::from_utf8(key).ok()?;
    let record = RecordMeta::decode(meta).ok()?;
    Some((bucket.into(), key.into(), record))
}
