//! Answering for a stored object: conditionals, ranges, 304 and the body. Called by the hit path
//! (`object.rs`) and by followers of a fill that must wait for the commit
//! (`follow.rs`).
//!
//! Conditional requests follow RFC 9110 §13.2.2's order: If-Match, else If-Unmodified-Since ->
//! 412; If-None-Match, else If-Modified-Since -> 304. Ranges (§14): one range -> 206 with
//! Content-Range; several -> 206 `multipart/byteranges`; none satisfiable -> 416 with
//! `Content-Range: bytes */size`; an If-Range that does not match -> the whole object.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::{ColdSpans, ObjectKeyRef, ObjectMeta, SavedHeader};
use edgemirror_proto::{self as proto, RangeRequest};
use monoio::buf::IoBufMut;

use crate::config::Config;
use crate::error::S3Error;
use crate::metrics::Source;
use crate::reply::{self, Framing, ObjectHead, SOURCE_HEADER};
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// Most body bytes [`read_cold`] reads with a record's head; a bigger body is sent in windows
/// of this size, each read when it is not in memory ([`send_body`]).
pub const COLD_READ_MAX_BODY: u64 = 1 << 20;

/// Bodies of store hits in this size range, over plain HTTP, go out with `sendfile(2)` from the
/// segment file's pages in the page cache, without a copy into the socket (when all of them are
/// in memory: [`send_body`]). Measured on loopback (`bench/ab_hit.sh`, bench/RESULTS.md "Issue
/// 14, ninth pass"): at 64 KiB, 1.13x the hits per second of the copy from the RAM tier; at
/// 256 KiB 0.83x and at 1 MiB 0.56x, where the kernel's per-page send costs more than the copy
/// (nginx's own `sendfile` loses the same way). Below 32 KiB the head and body leave in one
/// write.
pub const SENDFILE_BYTES: std::ops::RangeInclusive<u64> = (32 << 10)..=(128 << 10);

/// Whether a store hit's body (or part) of `len` bytes goes out with `sendfile` on `conn`, under
/// `config` (`cache.sendfile`): such an object is not copied into the RAM tier either
/// (`object.rs`), the page cache is its tier.
pub fn sends_from_file(config: &Config, conn: &Conn, len: u64) -> bool {
    config.sendfile && conn.is_plain() && SENDFILE_BYTES.contains(&len) && crate::respond::sendfile_supported()
}

/// Reads the parts of `key`'s stored record that are not in memory (its head, up to `max_body`
/// bytes of its body, its trailer; see `Store::cold_spans`) with asynchronous reads of the
/// segment file. Through the mapping, the lookup and the send would fault on them and the whole
/// core would wait on the disk; with io_uring it serves other requests meanwhile, with many
/// reads in flight. (On the epoll driver monoio's file reads run inline: no worse than faults.)
///
/// Returns the record as read when one read held all of it (a body of at most `max_body`), for
/// `Store::lookup_read` to serve from; otherwise the reads only brought the pages into memory,
/// and the lookup finds them there. Best effort: after a failed read the lookup reads through
/// the mapping as before (and reports what it finds there).
pub async fn read_cold(worker: &Worker, key: ObjectKeyRef<'_>, max_body: u64) -> Option<(ColdSpans, Bytes)> {
    let cold = worker.shared.store.cold_spans(key, max_body)?;
    let file = uring_file(&cold.file)?;
    let mut read = None;
    for &(offset, len) in &cold.spans {
        let (res, buf) = file.read_exact_at(Vec::with_capacity(len as usize), offset).await;
        res.ok()?;
        read = Some(Bytes::from(buf));
    }
    let _ = file.close().await;
    worker.metrics().cold_reads.inc();
    worker.metrics().cold_read_bytes.add(cold.spans.iter().map(|(_, len)| len).sum());
    // One span is the whole record.
    read.filter(|_| cold.spans.len() == 1).map(|bytes| (cold, bytes))
}

/// A segment file for monoio's reads (io_uring). monoio's `File` owns its descriptor: it gets a
/// duplicate of the store's.
fn uring_file(file: &std::fs::File) -> Option<monoio::fs::File> {
    file.try_clone().and_then(monoio::fs::File::from_std).ok()
}

/// Sends the head in `conn.out` and `part` (the bytes from `part_start` of `meta`'s body).
/// A part `from_store` that [`sends_from_file`] (under `config`'s `cache.sendfile`), a slice of
/// the segment's mapping all in memory, goes out with `sendfile`.
/// Otherwise, a part from the store under `store.cold_reads = "async"` (in `config`) may not be
/// in memory:
/// - a part bigger than [`COLD_READ_MAX_BODY`] (whose first
///   MiB `read_cold` read with the record's head) goes out in windows of that size: a window in
///   memory from the mapping, one that is not from an io_uring read of the segment file into a
///   buffer reused for the next window, so the core never waits in a page fault for it;
/// - without (memory tiers, or `"fault"`), the part is sent as it is: a memory tier holds its
///   bytes, and under `"fault"` the mapping's faults wait for the read of the body that
///   `Store::lookup` started (`MADV_WILLNEED`).
async fn send_body(
    worker: &Worker,
    conn: &mut Conn,
    meta: &ObjectMeta,
    part: Bytes,
    part_start: u64,
    from_store: bool,
    config: &Config,
) -> std::io::Result<()> {
    let key = ObjectKeyRef::new(&meta.bucket, &meta.key);
    if from_store && sends_from_file(config, conn, part.len() as u64) {
        // Only a part that is the mapping's own bytes of the record `sendfile` reads, all in
        // memory: `sendfile` would wait on the disk for a page that is not. A part `read_cold`
        // read into a buffer is already in memory and goes out from there.
        let file = worker.shared.store.body_file(key, meta.seq).filter(|b| {
            b.mapped_at + part_start as usize == part.as_ptr() as usize && edgemirror_cache::in_memory(&part)
        });
        if let Some(b) = file {
            // Counted first: a client that has the body may read the counter at once.
            worker.metrics().sendfile_bytes.add(part.len() as u64);
            return conn.send_with_file(&b.file, b.offset + part_start, &part).await;
        }
    }
    if !(from_store && config.cold_reads_async) {
        return conn.send_with_body(part).await;
    }
    let windowed = part.len() as u64 > COLD_READ_MAX_BODY;
    let body_file = windowed.then(|| worker.shared.store.body_file(key, meta.seq)).flatten();
    let Some((file, body_offset)) = body_file.and_then(|b| Some((uring_file(&b.file)?, b.offset))) else {
        return conn.send_with_body(part).await;
    };
    conn.flush().await?;
    let window = COLD_READ_MAX_BODY as usize;
    let mut buf: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < part.len() {
        let end = (at + window).min(part.len());
        let piece = part.slice(at..end);
        if edgemirror_cache::in_memory(&piece) {
            conn.write_bytes(piece).await?;
        } else {
            buf.clear();
            buf.reserve_exact(piece.len());
            let offset = body_offset + part_start + at as u64;
            let (res, back) = file.read_exact_at(buf.slice_mut(0..piece.len()), offset).await;
            buf = back.into_inner();
            if res.is_ok() {
                worker.metrics().cold_reads.inc();
                worker.metrics().cold_read_bytes.add(piece.len() as u64);
                buf = conn.write_vec(buf).await?;
            } else {
                // Through the mapping, which reports what it finds there.
                conn.write_bytes(piece).await?;
            }
        }
        at = end;
    }
    let _ = file.close().await;
    Ok(())
}

/// The four conditional headers of a request: its own (a GET or HEAD), or CopyObject's and
/// UploadPartCopy's about their source (`x-amz-copy-source-if-*`).
pub struct ConditionHeaders {
    if_match: &'static str,
    if_unmodified_since: &'static str,
    if_none_match: &'static str,
    if_modified_since: &'static str,
}

impl ConditionHeaders {
    /// Whether `req` carries any of these conditions.
    pub fn any_in(&self, req: &Request<'_>) -> bool {
        [self.if_match, self.if_unmodified_since, self.if_none_match, self.if_modified_since]
            .iter()
            .any(|name| req.header(name).is_some())
    }
}

pub const REQUEST_CONDITIONS: ConditionHeaders = ConditionHeaders {
    if_match: "if-match",
    if_unmodified_since: "if-unmodified-since",
    if_none_match: "if-none-match",
    if_modified_since: "if-modified-since",
};

pub const COPY_SOURCE_CONDITIONS: ConditionHeaders = ConditionHeaders {
    if_match: "x-amz-copy-source-if-match",
    if_unmodified_since: "x-amz-copy-source-if-unmodified-since",
    if_none_match: "x-amz-copy-source-if-none-match",
    if_modified_since: "x-amz-copy-source-if-modified-since",
};

#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    Proceed,
    /// If-None-Match matched, or the object is not newer than If-Modified-Since: a GET answers
    /// 304, a copy 412.
    NotModified,
}

/// Evaluates `names` against an object, in RFC 9110 §13.2.2's order: If-Match, else
/// If-Unmodified-Since (412 when it fails); then If-None-Match, else If-Modified-Since.
pub fn preconditions(
    req: &Request<'_>,
    names: &ConditionHeaders,
    etag: &str,
    meta: &ObjectMeta,
) -> Result<Precondition, S3Error> {
    let last_modified = meta.record.last_modified;
    if let Some(v) = req.header(names.if_match) {
        if !proto::etag_matches(v, etag, false) {
            return Err(S3Error::PreconditionFailed);
        }
    } else if let Some(since) = req.header(names.if_unmodified_since).and_then(proto::parse_http_date) {
        if last_modified > since {
            return Err(S3Error::PreconditionFailed);
        }
    }
    let not_modified = match req.header(names.if_none_match) {
        Some(v) => proto::etag_matches(v, etag, true),
        None => {
            req.header(names.if_modified_since).and_then(proto::parse_http_date).is_some_and(|d| last_modified <= d)
        }
    };
    Ok(if not_modified { Precondition::NotModified } else { Precondition::Proceed })
}

/// Answers `GET ?partNumber=N` for a stored object: the bytes of its part `part` (`range`), as
/// a 206 with `Content-Range` and `x-amz-mp-parts-count` for a multipart object, or the whole
/// object (part 1 of a single-part one) as a 200. Conditionals apply to the whole object.
pub async fn send_part(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    meta: &ObjectMeta,
    body: Bytes,
    part: u32,
    range: std::ops::Range<u64>,
) -> Result<Disposition, S3Error> {
    let etag_buf = meta.etag_bytes();
    let etag = etag_buf.as_str();
    if preconditions(req, &REQUEST_CONDITIONS, etag, meta)? == Precondition::NotModified {
        return send_not_modified(worker, conn, req, meta, etag, Source::Store).await;
    }
    let multipart = meta.record.parts > 0;
    let keep_alive = req.keep_alive();
    let head = ObjectHead {
        status: if multipart { 206 } else { 200 },
        record: &meta.record,
        etag: Some(etag),
        source: Source::Store,
        range: multipart.then(|| (range.clone(), meta.size)),
        framing: Framing::Length(range.end - range.start),
        checksum: !multipart && req.header("x-amz-checksum-mode").is_some_and(|v| v.eq_ignore_ascii_case(b"ENABLED")),
        overrides: &reply::Overrides::from_query(req.query()),
        parts_count: multipart.then_some(meta.record.parts),
        part_checksum: part_checksum(meta, part),
        provenance: req.is_head(),
    };
    reply::object_head(&mut conn.out, &head, &worker.date, req.id, keep_alive);
    let part = body.slice(range.start as usize..range.end as usize);
    let sent = if req.is_head() { conn.flush().await } else { conn.send_with_body(part).await };
    Ok(Disposition::after(sent, keep_alive))
}

/// Part `part`'s checksum (header name, value) and the object's checksum type, when the object
/// was uploaded with a flexible checksum.
fn part_checksum(meta: &ObjectMeta, part: u32) -> Option<(&str, &str, &'static str)> {
    let (name, whole) = meta.record.checksum.as_ref()?;
    let value = meta.record.part_checksums.get(part.checked_sub(1)? as usize)?;
    Some((name, value, reply::checksum_type(whole)))
}

/// Serves a committed object straight from the store (a miss that raced with the commit).
pub async fn serve_from_store(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
) -> Result<Disposition, S3Error> {
    match worker.shared.store.lookup(key).await {
        Ok(Some(obj)) => send_stored(worker, conn, req, &obj.meta, obj.body, Source::Store).await,
        Ok(None) => Err(S3Error::NoSuchKey),
        Err(e) => Err(S3Error::Internal(e.to_string())),
    }
}

/// Answers for a stored object: conditionals, then ranges, then the whole object.
pub async fn send_stored(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    meta: &ObjectMeta,
    body: Bytes,
    source: Source,
) -> Result<Disposition, S3Error> {
    conn.tally.source = source;
    let from_store = source == Source::Store;
    let etag_buf = meta.etag_bytes();
    let etag = etag_buf.as_str();
    if preconditions(req, &REQUEST_CONDITIONS, etag, meta)? == Precondition::NotModified {
        return send_not_modified(worker, conn, req, meta, etag, source).await;
    }

    let range = match req.header("range") {
        // No byte range of an empty object is satisfiable (RFC 9110 §14.1.1; S3 answers 416).
        Some(v) if meta.size == 0 && v.starts_with(b"bytes=") => RangeRequest::Unsatisfiable,
        Some(v) if if_range_holds(req.header("if-range"), etag, meta) => proto::parse_range(v, meta.size),
        _ => RangeRequest::Full,
    };
    let keep_alive = req.keep_alive();
    let mut head = ObjectHead {
        status: 200,
        record: &meta.record,
        etag: Some(etag),
        source,
        range: None,
        framing: Framing::Length(meta.size),
        checksum: req.header("x-amz-checksum-mode").is_some_and(|v| v.eq_ignore_ascii_case(b"ENABLED")),
        overrides: &reply::Overrides::from_query(req.query()),
        parts_count: None,
        part_checksum: None,
        provenance: req.is_head(),
    };
    match range {
        RangeRequest::Unsatisfiable => Err(S3Error::InvalidRange { size: meta.size }),
        RangeRequest::Full => {
            reply::object_head(&mut conn.out, &head, &worker.date, req.id, keep_alive);
            let sent = if req.is_head() {
                conn.flush().await
            } else {
                send_body(worker, conn, meta, body, 0, from_store, req.config).await
            };
            Ok(Disposition::after(sent, keep_alive))
        }
        RangeRequest::Satisfiable(ranges) if ranges.len() == 1 => {
            let r = ranges.first();
            head.status = 206;
            head.range = Some((r.clone(), meta.size));
            head.framing = Framing::Length(r.end - r.start);
            reply::object_head(&mut conn.out, &head, &worker.date, req.id, keep_alive);
            let part = body.slice(r.start as usize..r.end as usize);
            let sent = if req.is_head() {
                conn.flush().await
            } else {
                send_body(worker, conn, meta, part, r.start, from_store, req.config).await
            };
            Ok(Disposition::after(sent, keep_alive))
        }
        RangeRequest::Satisfiable(ranges) => {
            // multipart/byteranges (RFC 9110 §14.6): each part has its own Content-Range.
            let boundary = format!("edgemirror-{}", req.id);
            let content_type = meta.record.header(SavedHeader::ContentType).cloned();
            let mut parts: Vec<Bytes> = Vec::with_capacity(ranges.len() * 2 + 1);
            for r in ranges.iter() {
                let mut h = BytesMut::with_capacity(128);
                let _ = write!(h, "\r\n--{boundary}\r\n");
                if let Some(ct) = &content_type {
                    h.extend_from_slice(b"Content-Type: ");
                    h.extend_from_slice(ct);
                    h.extend_from_slice(b"\r\n");
                }
                reply::content_range(&mut h, Some(r.clone()), meta.size);
                h.extend_from_slice(b"\r\n");
                parts.push(h.freeze());
                if source == Source::Store {
                    // Sent through the mapping: what is not in memory is read ahead first.
                    edgemirror_cache::read_ahead(&body[r.start as usize..r.end as usize]);
                }
                parts.push(body.slice(r.start as usize..r.end as usize));
            }
            parts.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
            let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
            let out = &mut conn.out;
            reply::start(out, 206, &worker.date, req.id);
            let ct = format!("multipart/byteranges; boundary={boundary}");
            reply::header(out, "Content-Type", ct.as_bytes());
            reply::header(out, "ETag", etag.as_bytes());
            reply::header(out, "Accept-Ranges", b"bytes");
            reply::header(out, SOURCE_HEADER, source.as_str().as_bytes());
            reply::finish(out, Framing::Length(total), keep_alive);
            if req.is_head() {
                return Ok(Disposition::after(conn.flush().await, keep_alive));
            }
            if conn.flush().await.is_err() {
                return Ok(Disposition::Close);
            }
            for p in parts {
                if conn.write_bytes(p).await.is_err() {
                    return Ok(Disposition::Close);
                }
            }
            Ok(Disposition::after(Ok(()), keep_alive))
        }
    }
}

/// RFC 9110 §13.1.5: a Range applies only if If-Range (when present) still describes the object:
/// a strong ETag match, or exactly its Last-Modified date.
fn if_range_holds(if_range: Option<&[u8]>, etag: &str, meta: &ObjectMeta) -> bool {
    let Some(v) = if_range else { return true };
    let v = v.trim_ascii();
    if v.starts_with(b"\"") || v.starts_with(b"W/") {
        return !v.starts_with(b"W/") && v == etag.as_bytes();
    }
    proto::parse_http_date(v).is_some_and(|d| d == meta.record.last_modified)
}

/// 304: the validators and caching headers a 200 would have carried, no body.
async fn send_not_modified(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    meta: &ObjectMeta,
    etag: &str,
    source: Source,
) -> Result<Disposition, S3Error> {
    conn.tally.source = source;
    let keep_alive = req.keep_alive();
    let head = ObjectHead {
        status: 304,
        record: &meta.record,
        etag: Some(etag),
        source,
        range: None,
        framing: Framing::NoBody,
        checksum: false,
        overrides: &reply::Overrides::default(),
        parts_count: None,
        part_checksum: None,
        provenance: req.is_head(),
    };
    reply::object_head(&mut conn.out, &head, &worker.date, req.id, keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemirror_cache::RecordMeta;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn if_range_needs_a_strong_etag_or_the_exact_date() {
        let meta = ObjectMeta {
            bucket: "b".into(),
            key: "k".into(),
            size: 1,
            md5: [1; 16],
            record: RecordMeta::new(UNIX_EPOCH + Duration::from_secs(1_000_000_000)),
            seq: 1,
        };
        let etag = meta.etag();
        assert!(if_range_holds(None, &etag, &meta));
        assert!(if_range_holds(Some(etag.as_bytes()), &etag, &meta));
        assert!(!if_range_holds(Some(format!("W/{etag}").as_bytes()), &etag, &meta));
        assert!(!if_range_holds(Some(b"\"other\""), &etag, &meta));
        assert!(if_range_holds(Some(b"Sun, 09 Sep 2001 01:46:40 GMT"), &etag, &meta));
        assert!(!if_range_holds(Some(b"Sun, 09 Sep 2001 01:46:41 GMT"), &etag, &meta));
    }
}
