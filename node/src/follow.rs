//! The consumer of a fill: one client following the record that the fill task (`fill.rs`)
//! is writing, at its own pace.
//!
//! A follower waits for the origin's response head, answers with the object's head (no ETag:
//! it is the MD5 of bytes that have not arrived yet), then sends what the record holds as it
//! grows: the last pieces written straight from the memory they arrived in, older bytes from
//! the segment mapping (zero-copy either way; `RECENT_BYTES` in the cache's record writer). A
//! slow client only falls behind; it never slows the fetch or the other clients, and holds no
//! more than one piece in memory.
//!
//! An unstored fill (the store could not take the object) is followed the same way, its bytes
//! read from memory ([`crate::inflight::BodySource`]); its head says
//! `x-edgemirror-source: origin-unstored`. The follower tells the fill which bytes it still
//! needs ([`Follower::need`]) before the head goes out and as it moves on, so the producer keeps
//! them in memory (and, past its budget, waits for this client rather than drop them).
//!
//! Integrity: the last byte of a known-length body (the last chunk of a chunked one) is held
//! back until the fill has verified the body (its length, and the origin's Content-MD5 when it
//! sent one), so a failed check cuts the client short instead of completing a bad body. The
//! ETag digest and the commit need not finish first ([`Phase::Verified`]). One range is served from the bytes as they arrive;
//! several ranges, or a range of a chunked origin (whose size is known only at the end), wait
//! for the commit and are answered from the store ([`crate::stored`]). An object that will not
//! be stored is sent whole instead (a server may ignore Range, RFC 9110 §14.2).

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::ObjectKeyRef;
use edgemirror_proto::{self as proto, RangeRequest, Version};

use crate::error::S3Error;
use crate::inflight::{Fill, FillBody, Follower, Phase, Refusal};
use crate::metrics::Source;
use crate::reply::{self, Framing, ObjectHead, SOURCE_HEADER};
use crate::respond::{Conn, Disposition, Request};
use crate::stored;
use crate::worker::Worker;

/// Streams a fill to one client: waits for the head, then sends what the record holds as it
/// grows. Ranges are answered from the bytes of the whole object as they arrive.
pub async fn follow(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    fill: &Arc<Fill>,
) -> Result<Disposition, S3Error> {
    let mut follower = fill.follow();
    loop {
        match follower.phase() {
            Phase::Fetching => {}
            Phase::Refused(Refusal::NotFound) => return Err(S3Error::NoSuchKeyAtOrigin),
            Phase::Refused(Refusal::Failed(reason)) => return Err(S3Error::MirrorFailed(reason)),
            Phase::Refused(Refusal::Unavailable(reason)) => return Err(S3Error::SharedStoreUnavailable(reason)),
            Phase::Refused(Refusal::Redirect { status, location }) => {
                return pass_redirect(worker, conn, req, status, &location).await;
            }
            Phase::Broken => return Err(S3Error::MirrorFailed("the origin body failed".into())),
            Phase::Streaming { .. } | Phase::Verified { .. } | Phase::Complete { .. } => break,
        }
        if !follower.changed().await {
            return Err(S3Error::MirrorFailed("fill ended".into()));
        }
    }
    let Some(body) = fill.body() else { return Err(S3Error::Internal("fill streaming without a body".into())) };
    let unstored = body.source.is_unstored();

    // What to send: the whole object, or one range of it when the length is known up front.
    let mut range = 0..body.length.unwrap_or(u64::MAX);
    let mut status = 200;
    if let (Some(size), Some(value), None) = (body.length, req.header("range"), req.header("if-range")) {
        match proto::parse_range(value, size) {
            RangeRequest::Full => {}
            RangeRequest::Satisfiable(ranges) if ranges.len() == 1 => {
                range = ranges.first();
                status = 206;
            }
            // Several ranges of an object that will not be stored: the whole object.
            RangeRequest::Satisfiable(_) if unstored => {}
            RangeRequest::Satisfiable(_) => {
                // Several ranges: answered as multipart from the stored object once complete.
                return wait_then_serve_stored(worker, conn, req, fill, follower).await;
            }
            RangeRequest::Unsatisfiable => return Err(S3Error::InvalidRange { size }),
        }
    } else if body.length.is_none() && req.header("range").is_some() && !unstored {
        // A chunked origin: the size, and so any Content-Range, is known only at the end.
        return wait_then_serve_stored(worker, conn, req, fill, follower).await;
    }
    send_body(worker, conn, req, &mut follower, body, range, status).await
}

/// Answers with the head, then sends `range` of the body as the fill makes it readable.
async fn send_body(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    follower: &mut Follower,
    body: &FillBody,
    range: Range<u64>,
    status: u16,
) -> Result<Disposition, S3Error> {
    // Claim the bytes before the head goes out: a client that joined an unstored fill after it
    // dropped them (a rare race with the fill leaving the table) must get an error, not a head
    // and then a cut.
    if !req.is_head() && !follower.need(range.clone()) {
        return Err(S3Error::MirrorFailed("joined an unstored fill after its first bytes were dropped".into()));
    }
    let source = match (body.source.is_unstored(), body.shared_etag.is_some()) {
        (true, _) => Source::OriginUnstored,
        (false, true) => Source::Shared,
        (false, false) => Source::Origin,
    };
    conn.tally.source = source;
    let http10 = req.head.version == Version::Http10;
    let framing = match body.length {
        Some(_) => Framing::Length(range.end - range.start),
        None if http10 => Framing::Close,
        None => Framing::Chunked,
    };
    let keep_alive = req.head.keep_alive && framing != Framing::Close;
    let head = ObjectHead {
        status,
        record: &body.meta,
        etag: body.shared_etag.as_deref(),
        source,
        range: (status == 206).then(|| (range.clone(), body.length.unwrap_or(0))),
        framing,
        // Known before the bytes only from the shared store, as the ETag is.
        checksum: source == Source::Shared
            && req.header("x-amz-checksum-mode").is_some_and(|v| v.eq_ignore_ascii_case(b"ENABLED")),
        overrides: &reply::Overrides::from_query(req.query()),
        parts_count: None,
        part_checksum: None,
        provenance: req.is_head(),
    };
    reply::object_head(&mut conn.out, &head, &worker.date, req.id, keep_alive);
    if req.is_head() {
        return Ok(Disposition::after(conn.flush().await, keep_alive));
    }

    // The head stays in `out`: it goes out with the first piece when bytes are readable already
    // (one send, not two), and alone before the first wait otherwise, so the client never waits
    // on a held head.
    let mut pos = range.start;
    let mut chunk_head = BytesMut::with_capacity(16);
    loop {
        let phase = follower.phase();
        let readable = match phase {
            Phase::Verified { written } | Phase::Complete { written } => written,
            // Hold the last byte (or the last chunk) back until the object is verified.
            Phase::Streaming { written } => match body.length {
                Some(len) => written.min(len.saturating_sub(1)),
                None => written,
            },
            _ => return Ok(Disposition::Close),
        };
        let end = readable.min(range.end);
        while pos < end {
            let piece = match body.source.read(pos, FOLLOW_READ_BYTES.min((end - pos) as usize)) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(request_id = %req.id, error = %e, "reading a fill back failed");
                    return Ok(Disposition::Close);
                }
            };
            pos += piece.len() as u64;
            if send_piece(conn, framing, piece, &mut chunk_head).await.is_err() {
                return Ok(Disposition::Close);
            }
            // Sent: an unstored fill may drop it now. Cannot fail, the bytes left were claimed.
            follower.need(pos..range.end);
        }
        if matches!(phase, Phase::Verified { .. } | Phase::Complete { .. }) && pos >= end {
            break;
        }
        // Nothing sent yet: the head is still in `out`.
        if pos == range.start && conn.flush().await.is_err() {
            return Ok(Disposition::Close);
        }
        if !follower.changed().await {
            return Ok(Disposition::Close);
        }
    }
    if framing == Framing::Chunked {
        conn.out.extend_from_slice(proto::LAST_CHUNK);
    }
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Largest piece a follower reads from the record at once.
const FOLLOW_READ_BYTES: usize = 256 * 1024;

/// Waits for the fill to end, then answers from the store (multipart ranges, ranges of chunked
/// origins). If the store refuses the object meanwhile, sends it whole instead.
async fn wait_then_serve_stored(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    fill: &Arc<Fill>,
    mut follower: Follower,
) -> Result<Disposition, S3Error> {
    // Reads nothing while it waits: an unstored fill must not keep bytes (or wait) for it.
    follower.need(0..0);
    loop {
        let phase = follower.phase();
        if let Some(body) = fill.body().filter(|b| b.source.is_unstored()) {
            // It will not be in the store: the whole object, as it arrives (RFC 9110 §14.2 lets
            // a server ignore Range).
            let whole = 0..body.length.unwrap_or(u64::MAX);
            return send_body(worker, conn, req, &mut follower, body, whole, 200).await;
        }
        match phase {
            Phase::Complete { .. } => {
                let key = ObjectKeyRef::new(&fill.key.bucket, &fill.key.key);
                return stored::serve_from_store(worker, conn, req, key).await;
            }
            Phase::Broken | Phase::Refused(_) => return Err(S3Error::MirrorFailed("the origin body failed".into())),
            // Verified is not yet stored: the commit is still running.
            Phase::Fetching | Phase::Streaming { .. } | Phase::Verified { .. } => {}
        }
        if !follower.changed().await {
            return Err(S3Error::MirrorFailed("fill ended".into()));
        }
    }
}

/// `followRedirects: false`: the client gets the origin's 3xx and its Location; nothing is stored.
pub async fn pass_redirect(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    status: u16,
    location: &[u8],
) -> Result<Disposition, S3Error> {
    let keep_alive = req.head.keep_alive;
    reply::start(&mut conn.out, status, &worker.date, req.id);
    reply::header(&mut conn.out, "Location", location);
    reply::header(&mut conn.out, SOURCE_HEADER, Source::Origin.as_str().as_bytes());
    conn.tally.source = Source::Origin;
    reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Sends `piece` behind what is pending in `out` (the response head before the first piece; a
/// chunk's CRLF after it).
async fn send_piece(conn: &mut Conn, framing: Framing, piece: Bytes, chunk_head: &mut BytesMut) -> std::io::Result<()> {
    if framing != Framing::Chunked {
        return conn.send_with_body(piece).await;
    }
    chunk_head.clear();
    proto::encode_chunk_header(piece.len(), chunk_head);
    conn.out.extend_from_slice(chunk_head);
    conn.send_with_body(piece).await?;
    // The CRLF after the data rides with the next chunk's header or the last chunk.
    conn.out.extend_from_slice(proto::CHUNK_END);
    Ok(())
}
