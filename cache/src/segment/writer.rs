//! [`RecordWriter`]: one object on its way into the store.
//!
//! The node's mirror fill appends the same `Bytes` it sends to its clients, each piece with
//! [`RecordWriter::append_unwritten`] and its file write one turn later ([`RecordWriter::write_due`],
//! after the piece's sends), then commits with the body's MD5 and CRC-32C its hasher took
//! ([`RecordWriter::defer_digests`], [`RecordWriter::commit_with_digests`]; a small body is
//! hashed here, [`RecordWriter::commit`]); other writers (PUT, copy, multipart) call
//! [`RecordWriter::append`]. Three shapes, chosen by what is known up front:
//!
//! - length known and small enough: a reservation in the lane's active segment; body bytes are
//!   written in place as they arrive, up to the last [`WRITE_ALIGN`] boundary of the file they
//!   reach (the rest waits in memory for the next piece or the commit);
//! - length known and large (> segment_bytes / 4): a SOLO segment of exactly the record's size;
//! - length unknown (chunked or close-delimited origin): buffered as refcounted `Bytes` up to
//!   [`BUFFER_UNKNOWN_LEN_BYTES`], then reserved like a known length at commit; past that, spilled
//!   into a SOLO segment whose header says LEN_PENDING until commit rewrites it.
//!
//! Dropping a writer without commit abandons the record: it never becomes visible, and a solo
//! segment it had is removed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::format::{self, Trailer, FILE_HEADER_LEN, FLAG_LEN_PENDING};
use super::index::Slot;
use super::{unix_ms, Room, Segment, Store, StoredObject, SyncPolicy};
use crate::key::ObjectKeyRef;
use crate::meta::{ObjectMeta, RecordMeta};
use crate::{Error, Result};

/// How much of an unknown-length body is held in memory before it spills to a solo segment.
/// Bounds a fill's memory while keeping small chunked objects packed in shared segments.
pub const BUFFER_UNKNOWN_LEN_BYTES: u64 = 1 << 20;

/// How many of the last body bytes written the view keeps in memory for readers (the pieces as
/// appended, refcounted: no copy). A reader keeping up with the writer (a client following a
/// fill) is then sent bytes that are still in the CPU's cache, and does not fault the segment's
/// mapping in page by page: 1 MiB sustained misses took 7% less CPU per GET (bench/RESULTS.md,
/// "Issue 14, fifth pass"). One follower's send (`FOLLOW_READ_BYTES` in the node) at most.
pub const RECENT_BYTES: usize = 256 << 10;

/// Body bytes are written to the segment file in stretches that end on a multiple of this file
/// offset; the bytes past the last such boundary wait (as the refcounted pieces they arrived in)
/// for the next piece or the commit. A record's body starts anywhere in its segment and its
/// pieces come in whatever sizes the origin's socket gives, so without this every 64 KiB write
/// straddles page and folio boundaries: the page cache then builds each from many small folios.
/// Writes aligned this way took 250-300 µs of CPU per MiB, unaligned ones 370-450 (a probe of
/// recv, write and send per 64 KiB; bench/RESULTS.md, "Issue 14, sixth pass"). A small record's
/// body is written with its trailer, in one system call.
pub const WRITE_ALIGN: u64 = 64 << 10;

/// Most pieces a writer holds unwritten (one more between `append_unwritten` and its
/// `write_due`); with more, it writes them at once, aligned or not. A
/// piece keeps alive the whole buffer it was read into. The node's body readers read the next
/// piece into what is left of that buffer (its `readbuf`), so small pieces share one, but a
/// writer cannot count on its caller doing so: a body arriving in small reads, each into a
/// buffer of its own, must not pile them up (1-byte reads into 256 KiB buffers would otherwise
/// hold 256 KiB of memory per byte up to the next boundary).
pub const HELD_PIECES_MAX: usize = 8;

/// Most pieces the view keeps for readers beyond those not yet in the file, whatever their
/// bytes: the same reason as [`HELD_PIECES_MAX`].
const KEPT_PIECES_MAX: usize = 16;

/// The zero padding between a body and its trailer (to 8 bytes).
const PAD: [u8; 8] = [0; 8];

enum Target {
    /// Written in place: `record_offset` is where the header is.
    Placed {
        segment: Arc<Segment>,
        record_offset: u64,
        header: format::RecordHeader,
        header_crc: u32,
        /// The mapping readers use while the record is written (see `View::placed`).
        map: Option<Bytes>,
        /// A reservation in a shared segment, pending until this writer is dropped (after its
        /// commit has indexed the record, or on abandonment): compaction leaves the segment alone
        /// meanwhile.
        _pending: Option<super::Pending>,
    },
    /// Unknown length, still small: held until commit.
    Buffered { chunks: Vec<Bytes> },
}

pub struct RecordWriter {
    store: Arc<Store>,
    lane: usize,
    rule: CommitRule,
    bucket: Box<str>,
    key: Box<str>,
    meta: RecordMeta,
    /// Announced length, if any.
    expected_len: Option<u64>,
    target: Target,
    written: u64,
    /// The body bytes appended after placement and not yet in the file.
    held: Held,
    crc: u32,
    md5: Md5,
    created_ms: u64,
    committed: bool,
    /// The origin's Content-MD5, when the rule asks for it to be checked.
    expected_md5: Option<[u8; 16]>,
    /// The caller hashes the body itself (off the writing core) and passes the digest to
    /// [`RecordWriter::commit_with_md5`], or with the CRC to [`RecordWriter::commit_with_digests`].
    md5_deferred: bool,
    /// The caller also takes the body's CRC-32C, in the same pass over the bytes as its MD5, and
    /// passes both to [`RecordWriter::commit_with_digests`].
    crc_deferred: bool,
    /// What concurrent readers see of this record (read-while-write).
    view: Arc<Mutex<View>>,
    /// Set by someone else to refuse this commit: the bucket is being deleted
    /// ([`RecordWriter::cancel_when`]).
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// What the key's current object must be for this commit to go ahead
    /// ([`RecordWriter::require`]).
    condition: Option<WriteCondition>,
}

/// A conditional write's test (S3's `If-Match` / `If-None-Match` on a PUT): given the ETag of
/// the key's current object (`None`: no object), whether the commit may replace it.
pub type WriteCondition = Box<dyn FnOnce(Option<&str>) -> bool + Send>;

/// The part of an unfinished record that is readable: where its body lies once placed, the
/// buffered pieces before that, and how many body bytes are written.
#[derive(Default)]
struct View {
    /// The segment, the body's offset in it, and the mapping to read it from while it is
    /// written (a regular segment's own; a solo segment's writer's; none for a spilled body of
    /// unknown length, which is read back with positional reads).
    placed: Option<(Arc<Segment>, u64, Option<Bytes>)>,
    /// The pieces appended before placement, `(body offset, piece)`.
    buffered: VecDeque<(u64, Bytes)>,
    written: u64,
    /// Body bytes in the file. Those past it are among `recent`, and readers get them there.
    in_file: u64,
    /// The last pieces appended after placement, `(body offset, piece)`, oldest first: every
    /// piece not yet wholly in the file, and, once a reader exists, about [`RECENT_BYTES`] in
    /// all. Emptied when the record is committed (readers behind go to the mapping, which holds
    /// the same bytes); an abandoned record's view keeps the pieces that never reached the file.
    recent: VecDeque<(u64, Bytes)>,
    recent_bytes: usize,
    keep_recent: bool,
    /// Called by [`FillReader::read`] just before it reads a spilled body from the file.
    #[cfg(test)]
    before_file_read: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// A handle for reading an object while it is being written (the node's coalesced misses and
/// read-while-write). Cheap to clone; safe to use from any thread. Readers get bytes from the
/// segment mapping (zero-copy), or from the last pieces written while they are in memory, or,
/// before the body is placed, from the buffered pieces; they never hold the writer up.
#[derive(Clone)]
pub struct FillReader {
    view: Arc<Mutex<View>>,
}

impl FillReader {
    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).written
    }

    /// Up to `max` body bytes starting at `pos`, or `None` when `pos` is not yet written.
    pub fn read(&self, pos: u64, max: usize) -> Result<Option<Bytes>> {
        let (segment, from, to) = {
            let view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            if pos >= view.written || max == 0 {
                return Ok(None);
            }
            let end = view.written.min(pos.saturating_add(max as u64));
            let Some((segment, body_offset, map)) = &view.placed else {
                return Ok(slice_of(&view.buffered, pos, end));
            };
            if let Some(piece) = slice_of(&view.recent, pos, end) {
                return Ok(Some(piece));
            }
            // Not among the pieces in memory, so below `in_file`: the pieces cover all after it.
            let end = end.min(view.in_file);
            if pos >= end {
                return Err(Error::Invariant("body bytes neither in the file nor held for readers"));
            }
            let (from, to) = (body_offset + pos, body_offset + end);
            if let Some(map) = map {
                if to <= map.len() as u64 {
                    return Ok(Some(map.slice(from as usize..to as usize)));
                }
            }
            let segment = segment.clone();
            #[cfg(test)]
            let hook = view.before_file_read.clone();
            drop(view);
            #[cfg(test)]
            if let Some(hook) = hook {
                hook();
            }
            (segment, from, to)
        };
        // Not mapped (a spilled body of unknown length): read it back, without the view's lock.
        // The read may wait on the device for up to `max` bytes, and the writer's appends and
        // every other reader of this record take that lock. Bytes below `written` never change,
        // and the `Arc` keeps the file open even if the writer abandons the record meanwhile.
        let mut buf = vec![0u8; (to - from) as usize];
        segment
            .file()
            .and_then(|file| std::os::unix::fs::FileExt::read_exact_at(&*file, &mut buf, from))
            .map_err(|e| Error::io(&segment.path, e))?;
        Ok(Some(Bytes::from(buf)))
    }
}

/// Body bytes `pos..end` from `pieces` (contiguous `(body offset, piece)`, oldest first), if
/// `pos` is among them: at most one piece's worth, so a read never joins pieces (never copies).
fn slice_of(pieces: &VecDeque<(u64, Bytes)>, pos: u64, end: u64) -> Option<Bytes> {
    let (first, _) = pieces.front()?;
    if pos < *first {
        return None;
    }
    // The last piece starting at or before `pos`.
    let (at, piece) = &pieces[pieces.partition_point(|(at, _)| *at <= pos) - 1];
    let from = (pos - at) as usize;
    let to = piece.len().min((end - at) as usize);
    (from < to).then(|| piece.slice(from..to))
}

/// The body bytes of a placed record not yet in its file: they wait for a [`WRITE_ALIGN`]
/// boundary (or [`HELD_PIECES_MAX`] pieces, or the commit).
#[derive(Default)]
struct Held {
    /// Body bytes in the file; `pieces` follow them.
    in_file: u64,
    /// The pieces appended and not yet written, oldest first.
    pieces: VecDeque<Bytes>,
}

impl Held {
    /// Writes the held bytes up to body position `upto` (the body starts at `body_at` in
    /// `segment`), and `then` right after them (at the commit: the padding and the trailer), in
    /// one system call; lets go of what it wrote.
    fn write(&mut self, segment: &Segment, body_at: u64, upto: u64, then: &[&[u8]]) -> Result<()> {
        let len = upto.checked_sub(self.in_file).ok_or(Error::Invariant("body write behind the file"))? as usize;
        let mut slices = super::leading(self.pieces.iter().map(|p| &p[..]), len);
        if slices.iter().map(|s| s.len()).sum::<usize>() < len {
            return Err(Error::Invariant("body write past the bytes held"));
        }
        slices.extend_from_slice(then);
        segment.write_vectored_at(&slices, body_at + self.in_file)?;
        let mut done = len;
        while done > 0 {
            let Some(front) = self.pieces.front_mut() else { break };
            if front.len() <= done {
                done -= front.len();
                self.pieces.pop_front();
            } else {
                bytes::Buf::advance(front, done);
                done = 0;
            }
        }
        self.in_file = upto;
        Ok(())
    }
}

impl View {
    fn keep(&mut self, at: u64, piece: &Bytes) {
        if !piece.is_empty() {
            self.recent.push_back((at, piece.clone()));
            self.recent_bytes += piece.len();
        }
        self.trim();
    }

    /// Lets go of the oldest pieces that are wholly in the file, down to [`RECENT_BYTES`] (and
    /// [`KEPT_PIECES_MAX`] pieces) with a reader, to none without.
    fn trim(&mut self) {
        let budget = if self.keep_recent { RECENT_BYTES } else { 0 };
        while self.recent_bytes > budget || self.recent.len() > KEPT_PIECES_MAX {
            match self.recent.front() {
                Some((at, piece)) if at + piece.len() as u64 <= self.in_file => {
                    self.recent_bytes -= piece.len();
                    self.recent.pop_front();
                }
                _ => break,
            }
        }
    }
}

/// When a record may become its key's version.
#[derive(Debug)]
pub enum CommitRule {
    /// Whatever happened to the key meanwhile: the last commit wins (an S3 PUT).
    LastWins,
    /// Only if the key has not changed since the pin was taken (a mirror fill takes it when it
    /// decides on the miss): a PUT, a delete or a purge committed after that wins over the fill,
    /// whose bytes are then not stored ([`Error::Superseded`]).
    IfUnchangedSince(VersionPin),
}

/// A mark in the sequence of commits, held by a writer that will commit conditionally
/// ([`CommitRule::IfUnchangedSince`]). While a pin is held the store remembers every deletion
/// made after it, so that the writer can be refused; dropping the pin lets it forget them.
#[derive(Debug)]
pub struct VersionPin {
    store: Arc<Store>,
    /// Versions committed from now on have a sequence number of at least this.
    pub(crate) since: u64,
}

impl Drop for VersionPin {
    fn drop(&mut self) {
        self.store.unpin(self.since);
    }
}

impl Store {
    /// Pins the current point of the commit sequence for a conditional writer.
    pub fn pin_version(self: &Arc<Self>) -> VersionPin {
        let since = self.pin();
        VersionPin { store: self.clone(), since }
    }

    /// Starts a record for `key`. `body_len` is the origin's Content-Length, when it sent one;
    /// `rule` says whether the commit may replace a version committed meanwhile.
    pub fn begin(
        self: &Arc<Self>,
        lane: usize,
        key: ObjectKeyRef<'_>,
        meta: RecordMeta,
        body_len: Option<u64>,
        rule: CommitRule,
    ) -> Result<RecordWriter> {
        key.validate()?;
        if let Some(len) = body_len {
            self.check_size(len)?;
        }
        let created_ms = unix_ms(SystemTime::now());
        let mut w = RecordWriter {
            store: self.clone(),
            lane,
            rule,
            bucket: key.bucket.into(),
            key: key.key.into(),
            meta,
            expected_len: body_len,
            target: Target::Buffered { chunks: Vec::new() },
            written: 0,
            held: Held::default(),
            crc: 0,
            md5: Md5::new(),
            created_ms,
            committed: false,
            expected_md5: None,
            md5_deferred: false,
            crc_deferred: false,
            view: Arc::new(Mutex::new(View::default())),
            cancel: None,
            condition: None,
        };
        if let Some(len) = body_len {
            w.target = w.place(len, 0)?;
            w.publish_placement();
        }
        Ok(w)
    }

    fn check_size(&self, len: u64) -> Result<()> {
        if len > self.config.max_object_bytes {
            return Err(Error::NoSpace(format!(
                "object of {len} bytes exceeds store.max_object_bytes ({})",
                self.config.max_object_bytes
            )));
        }
        Ok(())
    }
}

impl RecordWriter {
    /// Refuses the commit ([`Error::Cancelled`]) if `flag` is set by then. The check and the
    /// publication happen under the key's lock, so a deleter that sets the flag and then scans
    /// the index (DeleteBucket's emptiness check) cannot miss an object committed meanwhile.
    pub fn cancel_when(&mut self, flag: Arc<std::sync::atomic::AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// Commits only if `condition` holds for the key's current object, tested under the key's
    /// lock (so two create-only writes of one key cannot both succeed); otherwise the commit
    /// fails with [`Error::ConditionNotMet`] and nothing is kept.
    pub fn require(&mut self, condition: WriteCondition) {
        self.condition = Some(condition);
    }

    /// Replaces the record's metadata before the commit: for what is only known once the body
    /// has arrived (a checksum sent as an aws-chunked trailer). The new metadata must encode to
    /// the same length as the old (its space ahead of the body is already laid out): the caller
    /// reserves it with a placeholder of the right size. The record is not valid until its
    /// trailer is written, so a crash in between leaves nothing to recover.
    pub fn replace_meta(&mut self, meta: RecordMeta) -> Result<()> {
        if let Target::Placed { segment, record_offset, header, header_crc, .. } = &mut self.target {
            let (head, new_header, new_crc) = format::encode_record_head(
                &self.bucket,
                &self.key,
                &meta,
                header.body_len,
                header.flags,
                segment.nonce,
                self.created_ms,
            );
            if new_header.body_start() != header.body_start() {
                return Err(Error::Invariant("replaced metadata must keep its encoded length"));
            }
            segment.write_at(&head, *record_offset)?;
            (*header, *header_crc) = (new_header, new_crc);
        }
        self.meta = meta;
        Ok(())
    }

    /// Chooses where a record of `body_len` bytes goes and writes its head there.
    fn place(&self, body_len: u64, flags: u32) -> Result<Target> {
        let store = &self.store;
        // The head embeds the segment's nonce, known only once the segment is chosen; its length
        // does not depend on it. Encoding is cheap and happens once or twice per object.
        let encode = |nonce| {
            format::encode_record_head(&self.bucket, &self.key, &self.meta, body_len, flags, nonce, self.created_ms)
        };
        let total = encode(0).1.total_len();
        let pending = flags & FLAG_LEN_PENDING != 0;
        let (segment, record_offset, map, reservation) = if pending || total > store.solo_threshold() {
            let capacity = if pending { 0 } else { FILE_HEADER_LEN + total };
            let segment = store.new_segment(capacity, true)?;
            let written = segment.write_at(&encode(segment.nonce).0, FILE_HEADER_LEN);
            // A known length is mapped now, so clients can follow the body as it is written.
            let map = match written {
                Ok(()) if capacity > 0 => segment.map_whole(capacity).map(Some),
                Ok(()) => Ok(None),
                Err(e) => Err(e),
            };
            match map {
                Ok(map) => (segment, FILE_HEADER_LEN, map, None),
                Err(e) => {
                    store.forget_segment(segment.id);
                    segment.discard();
                    return Err(e);
                }
            }
        } else {
            let (segment, offset, reservation) =
                store.reserve(self.lane, total, Room::WithinLimits, |nonce| encode(nonce).0)?;
            let map = segment.map.get().cloned();
            (segment, offset, map, Some(reservation))
        };
        let (_, header, header_crc) = encode(segment.nonce);
        Ok(Target::Placed { segment, record_offset, header, header_crc, map, _pending: reservation })
    }

    /// A reader of this record's bytes as they are written.
    pub fn reader(&self) -> FillReader {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).keep_recent = true;
        FillReader { view: self.view.clone() }
    }

    /// The caller will compute the body's MD5 (e.g. on another thread) and commit with
    /// [`RecordWriter::commit_with_md5`]; appends then only write and CRC the bytes.
    pub fn defer_md5(&mut self) {
        self.md5_deferred = true;
    }

    /// The caller will compute the body's MD5 and its CRC-32C (the trailer's `body_crc`) and
    /// commit with [`RecordWriter::commit_with_digests`]; appends then only write the bytes.
    /// The caller must see every appended byte, in order: a wrong CRC makes recovery and
    /// verification drop the record.
    pub fn defer_digests(&mut self) {
        self.md5_deferred = true;
        self.crc_deferred = true;
    }

    /// Makes commit fail unless the body's MD5 is `md5` (the origin's Content-MD5).
    pub fn expect_md5(&mut self, md5: [u8; 16]) {
        self.expected_md5 = Some(md5);
    }

    /// Tells readers where the body now lies (after the buffered prefix has been written there).
    fn publish_placement(&self) {
        if let Target::Placed { segment, record_offset, header, map, .. } = &self.target {
            let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
            view.placed = Some((segment.clone(), record_offset + header.body_start(), map.clone()));
            view.buffered.clear();
            view.in_file = self.held.in_file;
        }
    }

    /// Makes the bytes up to `written` readable; `piece` (the last appended) is kept for readers,
    /// in the buffered pieces before placement and among the recent ones after.
    fn publish_written(&self, piece: &Bytes) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let at = self.written - piece.len() as u64;
        view.in_file = self.held.in_file;
        if view.placed.is_none() {
            view.buffered.push_back((at, piece.clone()));
        } else {
            view.keep(at, piece);
        }
        view.written = self.written;
    }

    /// Appends body bytes. Fails when more bytes arrive than were announced.
    pub fn append(&mut self, data: &Bytes) -> Result<()> {
        self.append_then(data, true)
    }

    /// Appends body bytes without writing them to the file: they are readable at once (from the
    /// memory they arrived in), and reach the file at the next [`RecordWriter::write_due`] or the
    /// commit. A mirror fill appends a piece this way, lets its clients' sends of it go out, and
    /// only then pays the file write, so the write is off the clients' path. Fails as
    /// [`RecordWriter::append`] does, before any byte is taken. One write can happen here: an
    /// unknown-length body outgrowing [`BUFFER_UNKNOWN_LEN_BYTES`] moves to a segment of its
    /// own at once. Call `write_due` between two of these: the pieces held unwritten stay bounded
    /// ([`HELD_PIECES_MAX`]) only so.
    pub fn append_unwritten(&mut self, data: &Bytes) -> Result<()> {
        self.append_then(data, false)
    }

    /// Writes what [`RecordWriter::append_unwritten`] left and is due: up to the last
    /// [`WRITE_ALIGN`] boundary the body has reached (all of it past [`HELD_PIECES_MAX`] pieces),
    /// as `append` would have. On failure nothing is lost to readers: the bytes stay readable
    /// from memory and `written()` still counts them; the caller abandons the record (drops the
    /// writer), whose view keeps every piece that never reached the file.
    pub fn write_due(&mut self) -> Result<()> {
        if matches!(self.target, Target::Buffered { .. }) {
            return Ok(());
        }
        let in_file = self.held.in_file;
        self.write_aligned(self.written)?;
        if self.held.in_file == in_file {
            // Nothing was due: the view (whose lock readers on other cores take) is as it was.
            return Ok(());
        }
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.in_file = self.held.in_file;
        view.trim();
        Ok(())
    }

    fn append_then(&mut self, data: &Bytes, write: bool) -> Result<()> {
        let new_len = self.written + data.len() as u64;
        if let Some(expected) = self.expected_len {
            if new_len > expected {
                return Err(Error::BodyMismatch(format!("{new_len} bytes written, {expected} announced")));
            }
        }
        self.store.check_size(new_len)?;
        if let Target::Buffered { chunks } = &mut self.target {
            if new_len <= BUFFER_UNKNOWN_LEN_BYTES {
                chunks.push(data.clone());
                self.account(data);
                self.publish_written(data);
                return Ok(());
            }
            // Spill: everything so far goes to a solo segment, and so does the rest.
            let chunks = std::mem::take(chunks);
            self.target = self.place(0, FLAG_LEN_PENDING)?;
            self.held.pieces.extend(chunks);
            self.write_held(self.written)?;
            self.publish_placement();
        }
        // A failed append leaves the record as it was before it: `written` (what the caller
        // counts as taken, and hands on elsewhere past it) does not include `data`.
        self.held.pieces.push_back(data.clone());
        if write {
            if let Err(e) = self.write_aligned(new_len) {
                self.held.pieces.pop_back();
                return Err(e);
            }
        }
        self.account(data);
        self.publish_written(data);
        Ok(())
    }

    /// Writes the held body bytes, which reach body position `held_to`, up to the last
    /// [`WRITE_ALIGN`] boundary of the file before it; all of them when more than
    /// [`HELD_PIECES_MAX`] pieces are held.
    fn write_aligned(&mut self, held_to: u64) -> Result<()> {
        let (_, record_offset, header, _) = self.placement("body write before placement")?;
        let body_at = record_offset + header.body_start();
        let boundary = (body_at + held_to) / WRITE_ALIGN * WRITE_ALIGN;
        if boundary > body_at + self.held.in_file {
            self.write_held(boundary - body_at)?;
        }
        if self.held.pieces.len() > HELD_PIECES_MAX {
            self.write_held(held_to)?;
        }
        Ok(())
    }

    /// Writes this record's held bytes up to body position `upto` ([`Held::write`]).
    fn write_held(&mut self, upto: u64) -> Result<()> {
        let Target::Placed { segment, record_offset, header, .. } = &self.target else {
            return Err(Error::Invariant("body write before placement"));
        };
        self.held.write(segment, record_offset + header.body_start(), upto, &[])
    }

    fn account(&mut self, data: &[u8]) {
        self.written += data.len() as u64;
        if !self.crc_deferred {
            self.crc = crate::crc::crc32c_append(self.crc, data);
        }
        if !self.md5_deferred {
            self.md5.update(data);
        }
    }

    /// Where the record lies. Every caller places the record first, so a buffered target here is
    /// a bug in this file: `what` names the caller.
    fn placement(&self, what: &'static str) -> Result<(&Arc<Segment>, u64, &format::RecordHeader, u32)> {
        match &self.target {
            Target::Placed { segment, record_offset, header, header_crc, .. } => {
                Ok((segment, *record_offset, header, *header_crc))
            }
            Target::Buffered { .. } => Err(Error::Invariant(what)),
        }
    }

    /// The mapping of the placed record, if it has one.
    fn target_map(&self) -> Option<Bytes> {
        match &self.target {
            Target::Placed { map, .. } => map.clone(),
            Target::Buffered { .. } => None,
        }
    }

    /// Bytes appended so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finishes the record: checks the length, writes the trailer, makes the object the key's
    /// version. Under [`CommitRule::IfUnchangedSince`], a version committed after the pin (a
    /// PUT, a delete) wins instead: [`Error::Superseded`], and the record stays invalid.
    pub fn commit(self) -> Result<StoredObject> {
        if self.md5_deferred {
            return Err(Error::BodyMismatch("commit without the deferred MD5".into()));
        }
        self.commit_inner(None)
    }

    /// Commits with the body's MD5 computed by the caller (after [`RecordWriter::defer_md5`]).
    pub fn commit_with_md5(self, md5: [u8; 16]) -> Result<StoredObject> {
        if self.crc_deferred {
            // A caller's bug, not a body that failed a check.
            return Err(Error::Invariant("commit_with_md5 after defer_digests"));
        }
        self.commit_inner(Some(md5))
    }

    /// Commits with the body's MD5 and CRC-32C computed by the caller (after
    /// [`RecordWriter::defer_digests`]).
    pub fn commit_with_digests(mut self, md5: [u8; 16], crc: u32) -> Result<StoredObject> {
        if !self.crc_deferred {
            return Err(Error::Invariant("commit_with_digests without defer_digests"));
        }
        self.crc = crc;
        self.commit_inner(Some(md5))
    }

    fn commit_inner(mut self, md5: Option<[u8; 16]>) -> Result<StoredObject> {
        if let Some(expected) = self.expected_len {
            if self.written != expected {
                return Err(Error::BodyMismatch(format!("{} bytes written, {expected} announced", self.written)));
            }
        }
        if let Target::Buffered { chunks } = &mut self.target {
            let chunks = std::mem::take(chunks);
            self.target = self.place(self.written, 0)?;
            self.held.pieces.extend(chunks);
        }
        // All but the last stretch now; that one goes with the trailer.
        self.write_aligned(self.written)?;
        let md5: [u8; 16] = match md5 {
            Some(m) => m,
            None => std::mem::take(&mut self.md5).finalize().into(),
        };
        if let Some(expected) = self.expected_md5 {
            if expected != md5 {
                return Err(Error::BodyMismatch("body MD5 differs from the origin's Content-MD5".into()));
            }
        }
        let (segment, record_offset, header, header_crc) = self.placement("commit before placement")?;
        let (segment, record_offset) = (segment.clone(), record_offset);
        let mut header = *header;
        let mut header_crc = header_crc;
        let pending = header.is_len_pending();
        if pending {
            header.body_len = self.written;
            header.flags &= !FLAG_LEN_PENDING;
            header_crc = header.encode().1;
        }
        let body_offset = record_offset + header.body_start();
        let store = self.store.clone();
        let key = ObjectKeyRef::new(&self.bucket, &self.key);
        // From the decision to the index update, the key is locked: commits of one key are
        // decided, numbered, written and published one at a time, so the index changes in
        // sequence order, the order recovery replays. The write is the body's last stretch
        // (under WRITE_ALIGN bytes) and the trailer into the page cache (plus an fdatasync
        // under the Always policy).
        let mut lock = store.index.lock_key(key);
        if self.cancel.as_ref().is_some_and(|flag| flag.load(Ordering::SeqCst)) {
            // Checked under the key's lock: whoever set the flag and then looks at the index
            // either finds this object or knows it will never be committed.
            return Err(Error::Cancelled);
        }
        if let Some(condition) = self.condition.take() {
            let current = lock.current().and_then(|slot| super::read_record(&slot.segment, slot.record_offset));
            let etag = current.map(|(_, record, trailer)| crate::meta::Etag::new(&trailer.md5, record.parts));
            if !condition(etag.as_ref().map(|e| e.as_str())) {
                return Err(Error::ConditionNotMet { exists: etag.is_some() });
            }
        }
        if let CommitRule::IfUnchangedSince(pin) = &self.rule {
            if lock.current_seq().is_some_and(|current| current >= pin.since) {
                // No trailer: the record never becomes valid; the winner stays.
                return Err(Error::Superseded);
            }
        }
        let seq = store.next_seq.fetch_add(1, Ordering::AcqRel);
        let trailer = Trailer { body_crc: self.crc, md5, seq, header_crc };
        let pad = &PAD[..(header.trailer_start() - header.body_start() - self.written) as usize];
        self.held.write(&segment, body_offset, self.written, &[pad, &trailer.encode()])?;
        self.view.lock().unwrap_or_else(|e| e.into_inner()).in_file = self.held.in_file;
        segment.note_seq(seq);
        if segment.solo {
            // Its one record is complete: nothing more is appended.
            segment.seal();
        }
        if pending {
            // Trailer first, then the header that points at it: a crash in between leaves the
            // header still LEN_PENDING, which recovery discards.
            segment.write_at(&header.encode().0, record_offset)?;
        }
        match store.config.sync {
            SyncPolicy::Always => segment.sync()?,
            SyncPolicy::Interval(_) => store.mark_dirty(&segment),
            SyncPolicy::Never => {}
        }
        if segment.solo {
            // Its record is complete: readers find its mapping in the store's map cache from
            // now on (the writer's own mapping, when it had one, covers the whole record).
            let map = match self.target_map() {
                Some(map) => map,
                None => segment.map_whole(record_offset + header.total_len())?,
            };
            store.maps.insert(segment.id, map);
            segment.release_file();
        }
        let meta = Arc::new(ObjectMeta {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            size: self.written,
            md5,
            record: self.meta.clone(),
            seq,
        });
        let body = segment.body(body_offset, self.written).ok_or(Error::Corrupt {
            segment: segment.id,
            offset: body_offset,
            what: "body outside mapping",
        })?;
        lock.put(Slot::new(segment, record_offset, seq, self.written, header.body_start(), true, store.now_secs()));
        drop(lock);
        self.committed = true;
        store.stats.objects_committed.fetch_add(1, Ordering::Relaxed);
        store.stats.bytes_committed.fetch_add(self.written, Ordering::Relaxed);
        Ok(StoredObject { meta, body })
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        // Readers still behind read the mapping from here on: the pieces are not held past the
        // writer, however long a slow client takes. Of an abandoned record, the pieces that never
        // reached the file stay (under WRITE_ALIGN bytes, and one piece more after a refused
        // `write_due`): its readers can get them nowhere else.
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if self.committed {
            view.recent = VecDeque::new();
            view.recent_bytes = 0;
        } else {
            view.keep_recent = false;
            view.trim();
        }
        drop(view);
        if self.committed {
            return;
        }
        self.store.stats.records_abandoned.fetch_add(1, Ordering::Relaxed);
        // A solo segment holds this record only, which will never be read: remove its file now
        // rather than at the next start (where recovery would), so a retried fill does not hold
        // the space twice. A shared segment's reservation stays, dead, until compaction.
        if let Target::Placed { segment, .. } = &self.target {
            if segment.solo {
                self.store.forget_segment(segment.id);
                segment.discard();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::StoreConfig;
    use std::sync::mpsc;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        let config = StoreConfig::new(dir);
        Store::open(config).unwrap().0
    }

    fn meta() -> RecordMeta {
        RecordMeta::new(SystemTime::now())
    }

    /// Writing or committing a record that was never placed is a bug in this file, not a full
    /// disk: it must not reach operators (or the node's 507 mapping) as `NoSpace`.
    #[test]
    fn unplaced_record_is_an_invariant_error_not_no_space() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // Unknown length and nothing appended: still buffered, not placed.
        let mut w = store.begin(0, ObjectKeyRef::new("b", "k"), meta(), None, CommitRule::LastWins).unwrap();
        let err = w.write_held(1).unwrap_err();
        assert!(matches!(err, Error::Invariant("body write before placement")), "{err:?}");
        let err = w.placement("commit before placement").unwrap_err();
        assert!(matches!(err, Error::Invariant("commit before placement")), "{err:?}");
        assert!(err.to_string().contains("a bug, not a full disk"));
    }

    /// A reader keeping up with the writer is handed the pieces as appended (the same memory,
    /// not the mapping), the last [`RECENT_BYTES`] or so of them; older bytes come from the
    /// mapping. Every read returns the body's bytes either way, and the pieces are let go with
    /// the writer, or never kept when no one reads.
    #[test]
    fn readers_get_the_last_pieces_from_memory_and_the_rest_from_the_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let piece_len = 48 << 10;
        let pieces: Vec<Bytes> = (0..16u8)
            .map(|p| Bytes::from((0..piece_len).map(|i| (i as u8) ^ p.wrapping_mul(37)).collect::<Vec<u8>>()))
            .collect();
        let body: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let from_a_piece = |got: &Bytes| {
            pieces.iter().any(|p| {
                let r = p.as_ptr_range();
                r.start <= got.as_ptr() && got.as_ptr() < r.end
            })
        };

        let mut w = store
            .begin(0, ObjectKeyRef::new("b", "recent"), meta(), Some(body.len() as u64), CommitRule::LastWins)
            .unwrap();
        let reader = w.reader();
        for (i, p) in pieces.iter().enumerate() {
            w.append(p).unwrap();
            let at = (i * piece_len) as u64;
            // The piece just written: from memory, whole.
            let got = reader.read(at, 256 << 10).unwrap().unwrap();
            assert!(from_a_piece(&got), "piece {i} was not read from memory");
            assert_eq!(got, body[at as usize..at as usize + piece_len]);
            let kept = reader.view.lock().unwrap().recent_bytes;
            assert!(kept <= RECENT_BYTES + piece_len, "{kept} bytes kept");
        }
        // Byte 0 has left the window: the mapping has it.
        let got = reader.read(0, 4096).unwrap().unwrap();
        assert!(!from_a_piece(&got), "byte 0 is still held in memory");
        assert_eq!(got, body[..4096]);
        // A read inside the window, not on a piece boundary, stops at the piece's end.
        let at = body.len() as u64 - piece_len as u64 - 100;
        let got = reader.read(at, 1 << 20).unwrap().unwrap();
        assert!(from_a_piece(&got));
        assert_eq!(got, body[at as usize..body.len() - piece_len]);

        w.commit().unwrap();
        assert_eq!(reader.view.lock().unwrap().recent.len(), 0, "pieces outlived the writer");
        let got = reader.read(body.len() as u64 - 10, 10).unwrap().unwrap();
        assert!(!from_a_piece(&got));
        assert_eq!(got, body[body.len() - 10..]);

        // No reader: only the pieces not yet wholly in the file are kept.
        let mut w = store
            .begin(0, ObjectKeyRef::new("b", "unread"), meta(), Some(body.len() as u64), CommitRule::LastWins)
            .unwrap();
        for p in &pieces {
            w.append(p).unwrap();
            let view = w.view.lock().unwrap();
            assert!(
                view.recent.iter().all(|(at, p)| at + p.len() as u64 > view.in_file),
                "a piece in the file is kept"
            );
            assert!(view.recent_bytes < WRITE_ALIGN as usize + piece_len, "{} bytes kept", view.recent_bytes);
        }
        w.commit().unwrap();
    }

    /// Body bytes reach the file in stretches ending on WRITE_ALIGN boundaries of the file
    /// (whatever the record's offset and the pieces' sizes), under WRITE_ALIGN bytes wait for the
    /// next piece or the commit, and every byte reads back right: through a reader while the
    /// record is written (from memory or from the file), from the store once committed, and
    /// after a restart.
    #[test]
    fn body_writes_end_on_aligned_file_offsets_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // A small record first, so the big one starts at no particular offset.
        let mut w = store.begin(0, ObjectKeyRef::new("b", "first"), meta(), Some(1000), CommitRule::LastWins).unwrap();
        w.append(&Bytes::from(vec![7u8; 1000])).unwrap();
        w.commit().unwrap();

        let sizes = [10_007usize, 65_536, 1, 70_000, 4_096, 131_072, 333];
        let body: Vec<u8> =
            (0..(1 << 20) + 12_345).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut w = store
            .begin(0, ObjectKeyRef::new("b", "big"), meta(), Some(body.len() as u64), CommitRule::LastWins)
            .unwrap();
        let body_at = body_at(&w);
        assert_ne!(body_at % WRITE_ALIGN, 0, "the test needs a body that starts off a boundary");
        let reader = w.reader();
        let (mut at, mut i, mut aligned_writes) = (0usize, 0, 0);
        while at < body.len() {
            let len = sizes[i % sizes.len()].min(body.len() - at);
            let before = w.held.in_file;
            w.append(&Bytes::copy_from_slice(&body[at..at + len])).unwrap();
            at += len;
            i += 1;
            assert!(w.written - w.held.in_file < WRITE_ALIGN, "{} bytes held", w.written - w.held.in_file);
            if w.held.in_file != before {
                assert_eq!((body_at + w.held.in_file) % WRITE_ALIGN, 0, "a write ended off a boundary");
                aligned_writes += 1;
            }
            // Every byte so far, read the way a follower does: from the start, in reads of up
            // to 100,000 bytes, each from memory or the file.
            let mut pos = 0u64;
            while pos < w.written {
                let got = reader.read(pos, 100_000).unwrap().unwrap();
                assert_eq!(got, body[pos as usize..pos as usize + got.len()], "at {pos}");
                pos += got.len() as u64;
            }
        }
        assert!(aligned_writes >= 10, "{aligned_writes} writes");
        assert!(w.held.in_file < w.written, "the last stretch waits for the commit");
        w.commit().unwrap();
        let got = store.get(ObjectKeyRef::new("b", "big")).unwrap().unwrap();
        assert_eq!(got.body, body);
        drop(store);
        let store = self::store(dir.path());
        let got = store.get(ObjectKeyRef::new("b", "big")).unwrap().unwrap();
        assert_eq!(got.body, body);
        assert_eq!(store.get(ObjectKeyRef::new("b", "first")).unwrap().unwrap().body, vec![7u8; 1000]);
    }

    /// A body arriving in many small reads, each a slice of its own 64 KiB buffer (what a slow
    /// client's PUT looks like), holds at most HELD_PIECES_MAX pieces unwritten and the view at
    /// most KEPT_PIECES_MAX more, so the buffers kept alive stay bounded; every byte still reads
    /// back right.
    #[test]
    fn small_reads_do_not_pile_up_held_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let mut w = store
            .begin(0, ObjectKeyRef::new("b", "trickle"), meta(), Some(body.len() as u64), CommitRule::LastWins)
            .unwrap();
        let reader = w.reader();
        for chunk in body.chunks(1_460) {
            let mut buf = bytes::BytesMut::with_capacity(64 << 10);
            buf.extend_from_slice(chunk);
            w.append(&buf.freeze()).unwrap();
            assert!(w.held.pieces.len() <= HELD_PIECES_MAX, "{} pieces held", w.held.pieces.len());
            let kept = reader.view.lock().unwrap().recent.len();
            assert!(kept <= KEPT_PIECES_MAX + HELD_PIECES_MAX, "{kept} pieces kept");
        }
        let mut pos = 0u64;
        while pos < body.len() as u64 {
            let got = reader.read(pos, 100_000).unwrap().unwrap();
            assert_eq!(got, body[pos as usize..pos as usize + got.len()], "at {pos}");
            pos += got.len() as u64;
        }
        w.commit().unwrap();
        assert_eq!(store.get(ObjectKeyRef::new("b", "trickle")).unwrap().unwrap().body, body);
    }

    /// A record given up before its commit (the origin broke off) leaves its last bytes unwritten;
    /// its readers still get every byte appended, from the pieces the view keeps.
    #[test]
    fn readers_of_an_abandoned_record_get_its_unwritten_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = store.begin(0, ObjectKeyRef::new("b", "cut"), meta(), Some(400_000), CommitRule::LastWins).unwrap();
        let reader = w.reader();
        for chunk in body.chunks(50_000) {
            w.append(&Bytes::copy_from_slice(chunk)).unwrap();
        }
        assert!(w.held.in_file < w.written);
        drop(w);
        let view = reader.view.lock().unwrap();
        assert!(view.recent.iter().all(|(at, p)| at + p.len() as u64 > view.in_file), "a piece in the file is kept");
        drop(view);
        let mut pos = 0u64;
        while pos < body.len() as u64 {
            let got = reader.read(pos, 64 << 10).unwrap().unwrap();
            assert_eq!(got, body[pos as usize..pos as usize + got.len()], "at {pos}");
            pos += got.len() as u64;
        }
        assert_eq!(reader.read(pos, 10).unwrap(), None);
    }

    /// A writer of a `len`-byte record and its reader, in a store (in the returned directory)
    /// whose file writes fail with ENOSPC once `fail_after` of them have succeeded.
    fn writer_failing_after(fail_after: u64, len: u64) -> (tempfile::TempDir, RecordWriter, FillReader) {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let plan = Arc::new(crate::segment::faults::Faults::default());
        crate::segment::faults::install(dir.path(), plan.clone());
        let w = store.begin(0, ObjectKeyRef::new("b", "full"), meta(), Some(len), CommitRule::LastWins).unwrap();
        let reader = w.reader();
        plan.fail_writes_after(fail_after, libc::ENOSPC);
        (dir, w, reader)
    }

    /// Where the placed record's body starts in its segment file.
    fn body_at(w: &RecordWriter) -> u64 {
        let (_, record_offset, header, _) = w.placement("test").unwrap();
        record_offset + header.body_start()
    }

    /// Reads `reader`'s body bytes `0..upto` the way a follower does (from the start, in reads of
    /// up to 64 KiB) and checks them against `body`.
    fn assert_reads_back(reader: &FillReader, body: &[u8], upto: u64, context: &str) {
        let mut pos = 0u64;
        while pos < upto {
            let got = reader.read(pos, 64 << 10).unwrap().unwrap();
            assert_eq!(got, body[pos as usize..pos as usize + got.len()], "at {pos}, {context}");
            pos += got.len() as u64;
        }
    }

    /// An append the store cannot take (the disk filled up) leaves the record as it was: the
    /// fill hands the body on from `written()` (to memory, unstored), so `written()` must not
    /// count the refused piece, and every byte before it stays readable.
    #[test]
    fn a_refused_append_counts_nothing_and_keeps_what_came_before_readable() {
        for fail_after in 0..6 {
            let body: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
            let (_dir, mut w, reader) = writer_failing_after(fail_after, body.len() as u64);
            let mut refused = None;
            for chunk in body.chunks(50_000) {
                let before = w.written();
                match w.append(&Bytes::copy_from_slice(chunk)) {
                    Ok(()) => {}
                    Err(Error::NoSpace(_)) => {
                        assert_eq!(w.written(), before, "the refused piece was counted");
                        refused = Some(before);
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let base = refused.unwrap_or_else(|| panic!("no append refused after {fail_after} writes"));
            drop(w);
            assert_eq!(reader.written(), base);
            assert_reads_back(&reader, &body, base, &format!("failing after {fail_after}"));
        }
    }

    /// `append_unwritten` makes a piece readable (from its own memory) without a file write;
    /// `write_due` then writes what `append` would have, up to the same aligned boundary. A
    /// `write_due` the disk refuses leaves every appended byte counted and readable, also once
    /// the writer is dropped (the fill hands the body on from `written()`), for every point of
    /// failure.
    #[test]
    fn unwritten_appends_are_readable_at_once_and_written_when_due() {
        let body: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Bytes> = body.chunks(50_000).map(Bytes::copy_from_slice).collect();
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut w = store
            .begin(0, ObjectKeyRef::new("b", "late"), meta(), Some(body.len() as u64), CommitRule::LastWins)
            .unwrap();
        let body_at = body_at(&w);
        let reader = w.reader();
        let mut writes = 0;
        for chunk in &chunks {
            let in_file = w.held.in_file;
            w.append_unwritten(chunk).unwrap();
            assert_eq!(w.held.in_file, in_file, "append_unwritten wrote to the file");
            let at = w.written() - chunk.len() as u64;
            let got = reader.read(at, chunk.len()).unwrap().unwrap();
            assert_eq!(got.as_ptr(), chunk.as_ptr(), "not read from the piece's memory");
            w.write_due().unwrap();
            // What `append` leaves: under WRITE_ALIGN bytes past the last aligned write.
            assert!(w.written() - w.held.in_file < WRITE_ALIGN, "{} bytes not written", w.written() - w.held.in_file);
            if w.held.in_file != in_file {
                assert_eq!((body_at + w.held.in_file) % WRITE_ALIGN, 0, "a write ended off a boundary");
                writes += 1;
            }
            let view = reader.view.lock().unwrap();
            assert_eq!(view.in_file, w.held.in_file);
            assert!(view.recent_bytes <= RECENT_BYTES + chunk.len(), "{} bytes kept", view.recent_bytes);
        }
        assert!(writes >= 8, "{writes} writes");
        w.commit().unwrap();
        assert_eq!(store.get(ObjectKeyRef::new("b", "late")).unwrap().unwrap().body, body);

        for fail_after in 0..6 {
            let (_dir, mut w, reader) = writer_failing_after(fail_after, body.len() as u64);
            let mut refused = None;
            for chunk in &chunks {
                match w.write_due().and_then(|()| w.append_unwritten(chunk)) {
                    Ok(()) => {}
                    Err(Error::NoSpace(_)) => {
                        refused = Some(w.written());
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let base = refused.unwrap_or_else(|| panic!("no write refused after {fail_after} writes"));
            assert!(base > w.held.in_file, "the refused write's bytes were not counted");
            drop(w);
            assert_eq!(reader.written(), base);
            assert_reads_back(&reader, &body, base, &format!("failing after {fail_after}"));
        }
    }

    /// The fill's two-step appends on the other shapes: many small pieces (more than
    /// HELD_PIECES_MAX held, so `write_due` writes them all, off a boundary), and a body of
    /// unknown length that outgrows the in-memory buffer and spills to a segment of its own. Every
    /// byte reads back right while written, and from the store once committed.
    #[test]
    fn unwritten_appends_of_small_pieces_and_of_an_unknown_length_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let body: Vec<u8> = (0..(BUFFER_UNKNOWN_LEN_BYTES as usize + 300_000)).map(|i| (i % 247) as u8).collect();
        for (key, len, piece) in [("small", Some(200_000u64), 1_000usize), ("unknown", None, 70_001)] {
            let body = &body[..len.map_or(body.len(), |l| l as usize)];
            let mut w = store.begin(0, ObjectKeyRef::new("b", key), meta(), len, CommitRule::LastWins).unwrap();
            let reader = w.reader();
            for chunk in body.chunks(piece) {
                w.write_due().unwrap();
                w.append_unwritten(&Bytes::copy_from_slice(chunk)).unwrap();
                assert!(w.held.pieces.len() <= HELD_PIECES_MAX + 1, "{} pieces held", w.held.pieces.len());
                assert_reads_back(&reader, body, w.written(), key);
            }
            w.commit().unwrap();
            assert_eq!(store.get(ObjectKeyRef::new("b", key)).unwrap().unwrap().body, body, "{key}");
        }
        // Reopened, the records are unverified: a read checks each body against the CRC-32C its
        // trailer carries, and the trailer's MD5 (the ETag) is the body's.
        drop(store);
        let store = self::store(dir.path());
        for (key, len) in [("small", 200_000usize), ("unknown", body.len())] {
            let got = store.get(ObjectKeyRef::new("b", key)).unwrap().unwrap();
            assert_eq!(got.body, body[..len], "{key} after a restart");
            assert_eq!(got.meta.md5, <[u8; 16]>::from(Md5::digest(&body[..len])), "{key}");
        }
    }

    /// A reader of a spilled body (unknown length, past the in-memory buffer, not mapped until
    /// commit) reads it back from the file. While that read is in flight, the view's lock must
    /// be free: the writer appends and other readers read under it. The hook parks the reader
    /// inside its file read until this thread has checked the lock and appended.
    #[test]
    fn spilled_body_is_read_without_holding_the_view_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut w = store.begin(0, ObjectKeyRef::new("b", "spill"), meta(), None, CommitRule::LastWins).unwrap();
        let first: Bytes = (0..BUFFER_UNKNOWN_LEN_BYTES as usize + 4096).map(|i| i as u8).collect::<Vec<_>>().into();
        w.append(&first).unwrap();
        // Enough more that all of `first` is in the file (no longer held in memory).
        let second = Bytes::from(vec![1u8; WRITE_ALIGN as usize]);
        w.append(&second).unwrap();
        let reader = w.reader();
        {
            let view = reader.view.lock().unwrap();
            let (segment, _, map) = view.placed.as_ref().expect("spilled to a solo segment");
            assert!(segment.map.get().is_none() && map.is_none(), "a spilled body is not mapped before commit");
        }

        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        reader.view.lock().unwrap().before_file_read = Some(Arc::new(move || {
            entered_tx.send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }));
        let following = reader.clone();
        let read = std::thread::spawn(move || following.read(0, 256 << 10));
        entered_rx.recv().unwrap();

        // The reader is parked between taking its offsets and reading the file.
        let lock_free = reader.view.try_lock().is_ok();
        // Only append when the lock is free: with it held, `append` would wait forever.
        let appended = lock_free.then(|| w.append(&Bytes::from_static(b"more")).is_ok());
        go_tx.send(()).unwrap();
        let got = read.join().unwrap().unwrap().unwrap();

        assert!(lock_free, "the file read ran with the view lock held");
        assert_eq!(appended, Some(true), "the writer appended while the reader was in its file read");
        assert_eq!(got, first.slice(..256 << 10));
        assert_eq!(reader.written(), (first.len() + second.len()) as u64 + 4);
    }
}
