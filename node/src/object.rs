//! The object handlers: `GET` and `HEAD /{bucket}/{key}` (S3 path-style addressing).
//!
//! Lookup order, fastest tier first: foyer memory -> foyer disk -> segment store. A store hit is
//! copied into foyer for next time. A GET that misses everywhere goes to the bucket's first
//! matching mirror rule ([`crate::mirror`]); with no rule it is a 404 `NoSuchKey`. A HEAD never
//! contacts the origin (SDK existence checks must not trigger downloads) unless the matching
//! rule opts in with `mirrorHead`.
//!
//! Stored objects answer conditional requests (RFC 9110 §13.2.2 order: If-Match, else
//! If-Unmodified-Since -> 412; If-None-Match, else If-Modified-Since -> 304) and ranges (§14: one
//! range -> 206 with Content-Range; several -> 206 `multipart/byteranges`; none satisfiable ->
//! 416 with `Content-Range: bytes */size`; If-Range that does not match -> the whole object).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::{ObjectKeyRef, ObjectMeta, SavedHeader};
use edgemirror_proto::{self as proto, Method, RangeRequest};

use crate::conn::{Conn, Disposition, Request};
use crate::error::S3Error;
use crate::mirror;
use crate::reply::{self, Framing, SOURCE_HEADER};
use crate::rules;
use crate::server::Worker;

/// Answers one request; returns whether the connection may continue.
pub async fn handle(worker: &Rc<Worker>, conn: &mut Conn, req: &Request<'_>) -> Disposition {
    worker.metrics().requests.inc();
    let keep_alive = req.head.keep_alive;
    let (key_for_error, result) = match route(req) {
        Ok((bucket, key)) => {
            let r = serve_object(worker, conn, req, &bucket, &key).await;
            (Some(key), r)
        }
        Err(e) => (None, Err(e)),
    };
    match result {
        Ok(d) => d,
        Err(err) => {
            if err.status() >= 500 {
                tracing::error!(request_id = %req.id, error = ?err, "internal error");
            }
            reply::error(
                &mut conn.out,
                &err,
                key_for_error.as_deref(),
                &worker.date,
                req.id,
                keep_alive,
                req.is_head(),
            );
            Disposition::after(conn.flush().await, keep_alive && !err.closes_connection())
        }
    }
}

/// Splits `/{bucket}/{key}` and percent-decodes the key (borrowing from the request buffer when
/// nothing needed decoding, as is usual).
fn route<'a>(req: &Request<'a>) -> Result<(Cow<'a, str>, Cow<'a, str>), S3Error> {
    match req.head.method {
        Method::Get | Method::Head => {}
        _ => return Err(S3Error::MethodNotAllowed),
    }
    let raw = req.head.path.get(req.buf);
    let Some(rest) = raw.strip_prefix(b"/") else {
        return Err(S3Error::InvalidRequest("the request target must be an absolute path"));
    };
    let (bucket, key) = match rest.iter().position(|&c| c == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let bucket = proto::decode_path(bucket).map_err(S3Error::BadRequest)?;
    let key = proto::decode_path(key).map_err(S3Error::BadRequest)?;
    if bucket.is_empty() {
        return Err(S3Error::InvalidRequest("listing buckets is not supported"));
    }
    if key.is_empty() {
        return Err(S3Error::InvalidRequest("listing objects is not supported; name a key"));
    }
    if key.len() > edgemirror_cache::key::MAX_KEY_BYTES {
        return Err(S3Error::InvalidRequest("the object key is longer than 1024 bytes"));
    }
    Ok((bucket, key))
}

async fn serve_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    if shared.config.bucket(bucket).is_none() {
        return Err(S3Error::NoSuchBucket);
    }
    let okey = ObjectKeyRef::new(bucket, key);

    if let Some((obj, tier)) = shared.hot.get(okey).await {
        match tier {
            edgemirror_cache::HotTier::Memory => worker.metrics().hits_memory.inc(),
            edgemirror_cache::HotTier::Disk => worker.metrics().hits_disk_cache.inc(),
        }
        return send_stored(worker, conn, req, &obj.meta, obj.body, tier.as_str()).await;
    }
    match shared.store.get(okey) {
        Ok(Some(obj)) => {
            worker.metrics().hits_store.inc();
            shared.hot.insert(&obj);
            return send_stored(worker, conn, req, &obj.meta, obj.body, "store").await;
        }
        Ok(None) => {}
        // A damaged record was dropped from the index: fetch the object again if a rule allows.
        Err(e) => tracing::error!(request_id = %req.id, bucket, key, error = %e, "stored object failed its check"),
    }

    // The table is loaded once per miss; an admin update swaps in a new one for later requests.
    let table = shared.rules.load_full();
    let rule = table.rules(bucket).and_then(|b| rules::match_rule(&b.rules, key));
    let Some(rule) = rule.filter(|r| !req.is_head() || r.mirror_head) else {
        if !req.is_head() {
            worker.metrics().misses_no_rule.inc();
        }
        return Err(S3Error::NoSuchKey);
    };
    mirror::serve_miss(worker, conn, req, okey, rule).await
}

/// Serves a committed object straight from the store (a miss that raced with the commit).
pub async fn serve_from_store(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
) -> Result<Disposition, S3Error> {
    match worker.shared.store.get(key) {
        Ok(Some(obj)) => send_stored(worker, conn, req, &obj.meta, obj.body, "store").await,
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
    source: &str,
) -> Result<Disposition, S3Error> {
    let etag_bytes = meta.etag_bytes();
    // Hex digits and quotes only: always UTF-8.
    let etag = std::str::from_utf8(&etag_bytes).unwrap_or_default();
    let last_modified = meta.record.last_modified;
    // RFC 9110 §13.2.2: evaluation order.
    if let Some(v) = req.header("if-match") {
        if !proto::etag_matches(v, etag, false) {
            return Err(S3Error::PreconditionFailed);
        }
    } else if let Some(since) = req.header("if-unmodified-since").and_then(proto::parse_http_date) {
        if last_modified > since {
            return Err(S3Error::PreconditionFailed);
        }
    }
    let not_modified = match req.header("if-none-match") {
        Some(v) => proto::etag_matches(v, etag, true),
        None => req.header("if-modified-since").and_then(proto::parse_http_date).is_some_and(|d| last_modified <= d),
    };
    if not_modified {
        return send_not_modified(worker, conn, req, meta, etag, source).await;
    }

    let range = match req.header("range") {
        Some(v) if if_range_holds(req.header("if-range"), etag, meta) => proto::parse_range(v, meta.size),
        _ => RangeRequest::Full,
    };
    let keep_alive = req.head.keep_alive;
    let out = &mut conn.out;
    match range {
        RangeRequest::Unsatisfiable => Err(S3Error::InvalidRange { size: meta.size }),
        RangeRequest::Full => {
            reply::start(out, 200, &worker.date, req.id);
            reply::object_headers(out, &meta.record, Some(etag), source);
            reply::finish(out, Framing::Length(meta.size), keep_alive);
            let sent = if req.is_head() { conn.flush().await } else { conn.send_with_body(body).await };
            Ok(Disposition::after(sent, keep_alive))
        }
        RangeRequest::Satisfiable(ranges) if ranges.len() == 1 => {
            let r = ranges.first();
            reply::start(out, 206, &worker.date, req.id);
            reply::object_headers(out, &meta.record, Some(etag), source);
            let _ = write!(out, "Content-Range: bytes {}-{}/{}\r\n", r.start, r.end - 1, meta.size);
            reply::finish(out, Framing::Length(r.end - r.start), keep_alive);
            let part = body.slice(r.start as usize..r.end as usize);
            let sent = if req.is_head() { conn.flush().await } else { conn.send_with_body(part).await };
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
                let _ = write!(h, "Content-Range: bytes {}-{}/{}\r\n\r\n", r.start, r.end - 1, meta.size);
                parts.push(h.freeze());
                parts.push(body.slice(r.start as usize..r.end as usize));
            }
            parts.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
            let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
            reply::start(out, 206, &worker.date, req.id);
            let ct = format!("multipart/byteranges; boundary={boundary}");
            reply::header(out, "Content-Type", ct.as_bytes());
            reply::header(out, "ETag", etag.as_bytes());
            reply::header(out, "Accept-Ranges", b"bytes");
            reply::header(out, SOURCE_HEADER, source.as_bytes());
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

/// 304: the validators and caching headers a 200 would have carried, no body (RFC 9110 §15.4.5).
async fn send_not_modified(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    meta: &ObjectMeta,
    etag: &str,
    source: &str,
) -> Result<Disposition, S3Error> {
    let keep_alive = req.head.keep_alive;
    let out = &mut conn.out;
    reply::start(out, 304, &worker.date, req.id);
    reply::header(out, "ETag", etag.as_bytes());
    reply::last_modified(out, meta.record.last_modified);
    for h in [SavedHeader::CacheControl, SavedHeader::Expires] {
        if let Some(v) = meta.record.header(h) {
            reply::header(out, h.as_str(), v);
        }
    }
    reply::header(out, SOURCE_HEADER, source.as_bytes());
    // No Content-Length: a 304 has no body and its length would describe the 200's.
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
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
