//! PutObject: an upload streamed into a store record, piece by piece as it arrives (never
//! buffered whole), through the same record writer as a mirror fill.
//!
//! Checked before the commit: the length (`Content-Length`; a body that stops short is
//! `IncompleteBody` and nothing is stored), `Content-MD5` when sent (`BadDigest`), and the
//! SHA-256 the signature covers when the client signed one (`XAmzContentSHA256Mismatch`). The
//! commit is last-commit-wins: it replaces whatever the key held, and a mirror fill of the key
//! that began before it never replaces it. Saved with the object and returned on reads: the five
//! saved headers (Content-Type, -Encoding, -Disposition, Cache-Control, Expires).
//!
//! Not yet: `aws-chunked` bodies (the streaming signature forms and trailing checksums), which
//! answer 501 for now, and `x-amz-meta-*` user metadata (ignored).

use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, SavedHeader};
use edgemirror_proto::s3::sigv4::PayloadHash;

use super::auth::Signed;
use crate::body::{BodyError, RequestBody};
use crate::error::S3Error;
use crate::reply::{self, Framing};
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

pub async fn put_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    bucket: &str,
    key: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    if signed.verified.payload.is_streaming()
        || req.header("content-encoding").is_some_and(|v| v.windows(11).any(|w| w.eq_ignore_ascii_case(b"aws-chunked")))
    {
        return Err(S3Error::NotImplemented("aws-chunked uploads (streaming signatures, trailing checksums)"));
    }
    let Some(length) = body.content_length() else {
        return Err(S3Error::MissingContentLength);
    };
    if length > shared.config.store.max_object_bytes {
        return Err(S3Error::EntityTooLarge);
    }
    let content_md5 = match req.header("content-md5") {
        None => None,
        Some(v) => Some(decode_md5(v).ok_or(S3Error::InvalidDigest)?),
    };
    let mut meta = RecordMeta::new(SystemTime::now());
    for h in SavedHeader::ALL {
        if let Some(v) = req.header(h.as_str()) {
            meta.headers.push((h, Bytes::copy_from_slice(v)));
        }
    }
    let okey = ObjectKeyRef::new(bucket, key);
    let mut writer = match shared.store.begin(worker.id, okey, meta, Some(length), CommitRule::LastWins) {
        Ok(w) => w,
        Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
        Err(e) => return Err(S3Error::Internal(e.to_string())),
    };
    if let Some(md5) = content_md5 {
        writer.expect_md5(md5);
    }
    let mut sha256 = signed.verified.payload_hasher();
    // The client waits for this before sending the body (boto3 does): only now that the request
    // is authorised and its head accepted (RFC 9110 §10.1.1).
    // Also for an empty body: botocore waits for the 100 even then, and a final response in its
    // place left its pooled connection stuck for a minute (boto/botocore#3755).
    if req.header("expect").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue")) {
        conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.flush().await.map_err(|e| S3Error::IncompleteBody(e.to_string()))?;
    }
    loop {
        let piece = match body.next(conn).await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(BodyError::Truncated { got }) => {
                return Err(S3Error::IncompleteBody(format!("{got} of {length} bytes arrived")));
            }
            Err(e) => return Err(S3Error::IncompleteBody(e.to_string())),
        };
        if let Some(h) = sha256.as_mut() {
            h.update(&piece);
        }
        match writer.append(&piece) {
            Ok(()) => {}
            Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
            Err(e) => return Err(S3Error::Internal(e.to_string())),
        }
    }
    if let Some(h) = sha256 {
        h.finish().map_err(|_| S3Error::ContentSha256Mismatch)?;
    }
    debug_assert!(!matches!(signed.verified.payload, PayloadHash::Sha256(_)) || body.is_done());
    let stored = match writer.commit() {
        Ok(obj) => obj,
        Err(edgemirror_cache::Error::BodyMismatch(why)) if why.contains("MD5") => return Err(S3Error::BadDigest),
        Err(edgemirror_cache::Error::BodyMismatch(why)) => return Err(S3Error::IncompleteBody(why)),
        Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
        Err(e) => return Err(S3Error::Internal(e.to_string())),
    };
    // The previous version's cached copies are stale now (readers check the version anyway).
    shared.hot.remove(okey);
    worker.metrics().objects_uploaded.inc();
    worker.metrics().bytes_uploaded.add(length);
    let etag = stored.meta.etag_bytes();
    let keep_alive = req.keep_alive();
    reply::start(&mut conn.out, 200, &worker.date, req.id);
    reply::header(&mut conn.out, "ETag", &etag);
    reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
    reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Content-MD5 is the base64 of the 16-byte digest (RFC 1864).
pub(super) fn decode_md5(value: &[u8]) -> Option<[u8; 16]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim_ascii()).ok()?;
    bytes.try_into().ok()
}
