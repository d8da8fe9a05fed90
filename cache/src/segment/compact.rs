//! Compaction: rewriting segments whose bytes are mostly dead, so the store's disk use follows
//! its live bytes instead of growing for ever.
//!
//! Dead bytes are deleted and overwritten objects, records of fills that never committed
//! (abandoned or superseded), and tombstones nothing older needs any more. A settled segment (no
//! lane appends to it, no record reserved in it is still being written) whose dead share reaches
//! [`CompactionConfig::min_dead_ratio`] is compacted:
//!
//! 1. its live records are copied into a new segment, each under its own sequence number (so a
//!    copy and its original are the same version: recovery keeps either, they are equal), with
//!    the body's CRC checked on the way (a body that fails is dropped, not copied: compaction
//!    scrubs too), at most [`CompactionConfig::bytes_per_sec`];
//! 2. the new segment is synced (whatever `store.sync` says: the old copy goes next);
//! 3. each index entry that still points at the old record is swapped to the copy, under its
//!    key's lock (an entry changed meanwhile is left alone: its copy is dead on arrival);
//! 4. the old file is unlinked. Readers still holding slices of its mapping keep reading them;
//!    the kernel frees the blocks when the last one lets go.
//!
//! A crash at any step leaves either the old file (with or without a partial copy, whose torn
//! records recovery skips) or both (equal versions), never neither: the next pass starts over.
//!
//! Tombstones: one with sequence `t` is copied while some other segment may still hold an older
//! record of its key, i.e. while another segment's oldest sequence is below `t`.
//!
//! Runs on its own thread (`store-compact`), never on a serving core; the only lock it shares
//! with the request path is a key's index shard, for the swap of one entry.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{trailer_len, FileHeader, RecordHeader, Trailer, ALIGN, FILE_HEADER_LEN, RECORD_HEADER_LEN};
use super::index::{Loc, Slot};
use super::{Segment, Store};
use crate::key::{ObjectKey, ObjectKeyRef};
use crate::{Error, Result};

/// When and how fast compaction runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionConfig {
    /// How often the background thread looks for work; zero turns it off (compaction then runs
    /// only when asked, [`Store::compact`]).
    pub interval: Duration,
    /// A sealed segment is compacted once at least this share of its bytes is dead.
    pub min_dead_ratio: f64,
    /// Copy rate limit, so compaction's reads and writes leave the disk to the request path.
    pub bytes_per_sec: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig { interval: Duration::from_secs(30), min_dead_ratio: 0.5, bytes_per_sec: 64 << 20 }
    }
}

/// A segment is rewritten only if that frees at least this much (a page), whatever the ratio.
const MIN_RECLAIM_BYTES: u64 = 4096;

/// What one compaction pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub segments_compacted: usize,
    /// Live records copied (objects and tombstones still needed).
    pub records_copied: usize,
    pub bytes_copied: u64,
    /// File bytes of the segments removed.
    pub bytes_removed: u64,
    /// Bodies that failed their CRC while being copied (dropped from the index).
    pub corrupt_dropped: usize,
    /// Objects of cache-mode buckets evicted before the pass, and their bytes.
    pub evicted: usize,
    pub evicted_bytes: u64,
}

/// A live record found in a segment being compacted.
struct Live {
    /// Offset of the record in the old segment.
    offset: u64,
    header: RecordHeader,
    trailer: Trailer,
    /// The object it is the current version of, and that version's index slot; `None` for a
    /// tombstone.
    object: Option<(ObjectKey, Loc)>,
}

impl Store {
    /// One compaction pass over every sealed segment whose dead share is high enough. Called by
    /// the `store-compact` thread; tests and the admin API may call it directly.
    pub fn compact(&self) -> Result<CompactReport> {
        let _one_at_a_time = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        let mut report = CompactReport::default();
        // A ballast released on a full disk comes back once there is room again.
        self.ballast.restore(self.config.min_free_bytes);
        // Cache-mode buckets give up their least recently read objects first under pressure;
        // the pass below then reclaims their records.
        let pressure = self.under_pressure();
        (report.evicted, report.evicted_bytes) = self.evict_for_space();
        let min_dead = if pressure { 0.0 } else { self.config.compaction.min_dead_ratio.clamp(0.0, 1.0) };
        for segment in self.compaction_candidates(min_dead) {
            let started = Instant::now();
            match self.compact_segment(&segment, min_dead, &mut report) {
                Ok(false) => {}
                Ok(true) => {
                    report.segments_compacted += 1;
                    tracing::info!(
                        segment = segment.id,
                        bytes = segment.len(),
                        took_ms = started.elapsed().as_millis() as u64,
                        "segment compacted"
                    );
                }
                Err(e) => {
                    // The old segment is intact (it is removed last); the next pass retries.
                    tracing::warn!(segment = segment.id, error = %e, "compaction of a segment failed");
                    return Err(e);
                }
            }
        }
        let stats = &self.stats;
        stats.compactions.fetch_add(report.segments_compacted as u64, Ordering::Relaxed);
        stats.compaction_bytes_copied.fetch_add(report.bytes_copied, Ordering::Relaxed);
        stats.compaction_bytes_removed.fetch_add(report.bytes_removed, Ordering::Relaxed);
        Ok(report)
    }

    /// Settled segments at or past the dead-ratio threshold `min_dead`, most dead first. (Under
    /// capacity pressure the caller passes 0: any segment with dead bytes qualifies, since
    /// space matters more than the copying.)
    fn compaction_candidates(&self, min_dead: f64) -> Vec<Arc<Segment>> {
        let mut live: HashMap<u64, u64> = HashMap::new();
        self.index.for_each_object(|_, _, slot| {
            *live.entry(slot.segment.id).or_default() += slot.size;
        });
        let mut out: Vec<(f64, Arc<Segment>)> = self
            .segments_snapshot()
            .into_iter()
            .filter(|s| s.is_settled())
            .filter_map(|s| {
                let len = s.len().saturating_sub(FILE_HEADER_LEN);
                let live = live.get(&s.id).copied().unwrap_or(0);
                let dead = if len == 0 { 1.0 } else { 1.0 - (live as f64 / len as f64).min(1.0) };
                (dead >= min_dead && dead > 0.0).then_some((dead, s))
            })
            .collect();
        out.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.into_iter().map(|(_, s)| s).collect()
    }

    /// Compacts one segment; `false` when it turned out not to be worth it (nothing reclaimed).
    fn compact_segment(&self, old: &Arc<Segment>, min_dead: f64, report: &mut CompactReport) -> Result<bool> {
        let map = old.mapped().ok_or(Error::Invariant("sealed segment without a mapping"))?;
        let len = (old.len() as usize).min(map.len());
        let map = map.slice(..len);
        let fh = FileHeader::decode(&map).ok_or(Error::Corrupt { segment: old.id, offset: 0, what: "file header" })?;
        let oldest_other = self.oldest_seq_except(old.id);
        let mut live = Vec::new();
        let mut off = FILE_HEADER_LEN;
        while off + RECORD_HEADER_LEN <= len as u64 {
            let at = off as usize;
            let Some((h, header_crc)) = RecordHeader::decode(&map[at..], fh.nonce, fh.version) else {
                off += ALIGN;
                continue;
            };
            let Some(end) = off.checked_add(h.total_len()).filter(|e| *e <= len as u64) else { break };
            let trailer_at = (off + h.trailer_start()) as usize;
            let trailer = if h.is_len_pending() {
                None
            } else {
                Trailer::decode(&map[trailer_at..trailer_at + trailer_len(fh.version) as usize], header_crc, fh.version)
            };
            if let Some(trailer) = trailer {
                let names = &map[at + RECORD_HEADER_LEN as usize..];
                let bucket = std::str::from_utf8(&names[..h.bucket_len as usize]).unwrap_or("");
                let key = std::str::from_utf8(&names[h.bucket_len as usize..(h.bucket_len + h.key_len) as usize])
                    .unwrap_or("");
                if h.is_tombstone() {
                    if oldest_other.is_some_and(|oldest| oldest < trailer.seq) {
                        live.push(Live { offset: off, header: h, trailer, object: None });
                    }
                } else if let Some(loc) = self.index.get(ObjectKeyRef::new(bucket, key)) {
                    if loc.segment.id == old.id && loc.record_offset == off {
                        let object = Some((ObjectKey::new(bucket, key), loc));
                        live.push(Live { offset: off, header: h, trailer, object });
                    }
                }
            }
            off = end;
        }

        // What the candidate test could not see: tombstones that must be kept count as live. A
        // segment that would come out (nearly) as big as it went in is left alone, or a segment
        // of needed tombstones would be copied over and over.
        let live_bytes: u64 = live.iter().map(|r| r.header.total_len()).sum();
        let dead_bytes = (len as u64).saturating_sub(FILE_HEADER_LEN + live_bytes);
        let worth = (len as f64 * min_dead) as u64;
        if dead_bytes < worth.max(MIN_RECLAIM_BYTES) {
            return Ok(false);
        }

        // Copy, into as many fresh segments as it takes (records of a regular segment are at most
        // a quarter of a segment each).
        let mut outputs: Vec<Arc<Segment>> = Vec::new();
        let mut next = 0u64;
        // (key, old record offset, the copy's slot)
        let mut swaps: Vec<(ObjectKey, u64, Slot)> = Vec::new();
        let budget_start = Instant::now();
        let mut copied_bytes = 0u64;
        for rec in &live {
            let total = rec.header.total_len() - trailer_len(rec.header.version) + trailer_len(super::FORMAT_VERSION);
            let fits = outputs.last().is_some_and(|o| next + total <= o.capacity);
            if !fits {
                let seg = self.new_segment(self.config.segment_bytes.max(FILE_HEADER_LEN + total), false)?;
                seg.note_seq(rec.trailer.seq);
                outputs.push(seg);
                next = FILE_HEADER_LEN;
            }
            let out = outputs.last().ok_or(Error::Invariant("no output segment"))?;
            let src = rec.offset as usize;
            let body_start = rec.header.body_start() as usize;
            let body = &map[src + body_start..src + body_start + rec.header.body_len as usize];
            if let Some((key, _)) = rec.object.as_ref().filter(|_| crate::crc::crc32c(body) != rec.trailer.body_crc) {
                report.corrupt_dropped += 1;
                if self.index.remove_entry(key.as_ref(), old.id, rec.offset).is_some() {
                    self.stats.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        segment = old.id,
                        offset = rec.offset,
                        bucket = &*key.bucket,
                        key = &*key.key,
                        "stored body failed its checksum while compacted; dropped from the index"
                    );
                }
                continue;
            }
            // The same record under the new segment's nonce: header, names and body as they
            // were, a trailer bound to the new header, the same sequence number.
            let mut header = rec.header;
            header.nonce = out.nonce;
            header.version = super::FORMAT_VERSION;
            let (hb, header_crc) = header.encode();
            let mut head = Vec::with_capacity(body_start);
            head.extend_from_slice(&hb);
            head.extend_from_slice(&map[src + RECORD_HEADER_LEN as usize..src + body_start]);
            out.write_at(&head, next)?;
            out.write_at(body, next + body_start as u64)?;
            let trailer = Trailer { header_crc, ..rec.trailer };
            out.write_at(&trailer.encode(), next + header.trailer_start())?;
            out.note_seq(rec.trailer.seq);
            if let Some((key, loc)) = &rec.object {
                let slot = Slot::new(out.clone(), next, loc.seq, loc.size, header.body_start(), true, loc.last_access);
                swaps.push((key.clone(), rec.offset, slot));
            }
            next += header.total_len();
            report.records_copied += 1;
            report.bytes_copied += header.total_len();
            copied_bytes += header.total_len();
            self.throttle(budget_start, copied_bytes);
        }
        for out in &outputs {
            out.sync()?;
            out.seal();
        }
        for (key, offset, slot) in swaps {
            // Left alone if the key changed meanwhile: the copy is then dead on arrival.
            self.index.replace_entry(key.as_ref(), old.id, offset, slot);
        }
        report.bytes_removed += old.len();
        self.forget_segment(old.id);
        old.discard();
        self.sync_segments_dir();
        Ok(true)
    }

    /// Sleeps as needed to keep `copied` bytes since `start` within the configured rate.
    fn throttle(&self, start: Instant, copied: u64) {
        let rate = self.config.compaction.bytes_per_sec.max(1);
        let due = Duration::from_secs_f64(copied as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}
