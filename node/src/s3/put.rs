//! PutObject: an upload streamed into a store record, piece by piece as it arrives (never
//! buffered whole), through the same record writer as a mirror fill.
//!
//! Bodies come plain (`Content-Length`) or `aws-chunked` (what SDKs send by default over HTTPS:
//! chunks that each carry a signature chained from the request's, or unsigned chunks with a
//! trailing checksum; `x-amz-decoded-content-length` gives the object's length). Checked before
//! the commit: the length (a body that stops short is `IncompleteBody` and nothing is stored),
//! `Content-MD5` when sent (`BadDigest`), the SHA-256 the signature covers when the client signed
//! one (`XAmzContentSHA256Mismatch`), every chunk signature and the trailer's
//! (`SignatureDoesNotMatch`), and the flexible checksum (`x-amz-checksum-*` as a header or a
//! trailer: `BadDigest`). The commit is last-commit-wins: it replaces whatever the key held, and
//! a mirror fill of the key that began before it never replaces it. Saved with the object and
//! returned on reads: the five saved headers (Content-Type, -Encoding, -Disposition,
//! Cache-Control, Expires).
//!
//! Kept and returned: `x-amz-meta-*` (at most 2 KiB, `MetadataTooLarge` past it),
//! Content-Language, and the flexible checksum, sent as a header or a trailer (with
//! `x-amz-checksum-mode: ENABLED`).

use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, RecordWriter, SavedHeader};
use edgemirror_proto as proto;
use edgemirror_proto::s3::aws_chunked::{AwsChunk, AwsChunkedDecoder, AwsChunkedMode};
use edgemirror_proto::s3::sigv4::{self, ChunkSigner, PayloadHasher};

use super::auth::Signed;
use super::checksum::{Algorithm, Checksum};
use crate::body::{BodyError, RequestBody};
use crate::error::S3Error;
use crate::reply::{self, Framing};
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// S3's limit on user metadata (`x-amz-meta-*` names and values together).
const MAX_USER_METADATA_BYTES: usize = 2048;

/// What an upload's body is checked against while it streams.
struct Checks {
    sha256: Option<PayloadHasher>,
    /// The flexible checksum being computed, and the value it must have (`None` until the
    /// trailer that carries it has arrived).
    checksum: Option<(Algorithm, Checksum, Option<String>)>,
    signer: Option<ChunkSigner>,
}

impl Checks {
    fn data(&mut self, data: &[u8]) {
        if let Some(h) = self.sha256.as_mut() {
            h.update(data);
        }
        if let Some((_, c, _)) = self.checksum.as_mut() {
            c.update(data);
        }
        if let Some(s) = self.signer.as_mut() {
            s.update(data);
        }
    }
}

/// Stores the request's body as `okey` (an object, or a multipart part in the internal
/// namespace) for bucket `owner` (the object's own; a part's upload's).
pub async fn put_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    okey: ObjectKeyRef<'_>,
    owner: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    // `Content-Encoding: aws-chunked` with a plain payload hash is a plain body, as S3 takes it;
    // the framing is decided by x-amz-content-sha256 alone.
    let content_sha256 = req.header("x-amz-content-sha256").unwrap_or_default();
    let mode = AwsChunkedMode::from_content_sha256(content_sha256);
    if signed.verified.payload.is_streaming() && mode.is_none() {
        return Err(S3Error::NotImplemented("this aws-chunked payload form"));
    }
    // The object's length: x-amz-decoded-content-length for aws-chunked, else Content-Length.
    // A plain body without one (`Transfer-Encoding: chunked`, as `curl -T -` sends) is sized at
    // the commit, and the size limit is checked as its bytes arrive.
    let known = match mode {
        Some(_) => {
            let value = req.header("x-amz-decoded-content-length").ok_or(S3Error::MissingContentLength)?;
            let length = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            Some(length.ok_or(S3Error::MissingContentLength)?)
        }
        None => body.content_length(),
    };
    let max_object_bytes = req.config.store.max_object_bytes;
    if known.is_some_and(|length| length > max_object_bytes) {
        return Err(S3Error::EntityTooLarge);
    }
    let content_md5 = match req.header("content-md5") {
        None => None,
        Some(v) => Some(crate::fill::decode_md5(v).ok_or(S3Error::InvalidDigest)?),
    };
    let mut checks =
        Checks { sha256: signed.verified.payload_hasher(), checksum: None, signer: signed.verified.chunk_signer };
    // A flexible checksum: its value in a header now, or named by x-amz-trailer for later.
    for h in req.head.headers.iter() {
        let (name, value) = (h.name.get(req.buf), h.value.get(req.buf));
        if let Some(alg) = Algorithm::from_header(name) {
            let expected = String::from_utf8_lossy(value.trim_ascii()).into_owned();
            checks.checksum = Some((alg, Checksum::new(alg), Some(expected)));
        }
    }
    if let Some(trailer) = req.header("x-amz-trailer") {
        if let Some(alg) = Algorithm::from_header(trailer.trim_ascii()) {
            checks.checksum = Some((alg, Checksum::new(alg), None));
        }
    }

    let mut meta = uploaded_meta(req)?;
    if shared.shared_store.is_some() && okey.bucket == owner {
        crate::sharedstore::stamp(&mut meta.user);
    }
    // The checksum is kept, and returned with x-amz-checksum-mode. One sent as a trailer arrives
    // after the record's head is written: its place is held by a value of the same length (the
    // checksum of nothing) and filled in before the commit.
    if let Some((alg, _, expected)) = &checks.checksum {
        let value = expected.clone().unwrap_or_else(|| Checksum::new(*alg).finish());
        meta.checksum = Some((alg.header_name().into(), Bytes::from(value)));
    }
    let trailer_meta = checks.checksum.as_ref().is_some_and(|(_, _, v)| v.is_none()).then(|| meta.clone());
    let mut writer = shared.begin(worker.id, owner, okey, meta, known, CommitRule::LastWins)?;
    // Conditions are about the object; a part (stored for its upload's bucket) takes none.
    if let Some(condition) = write_condition(req).filter(|_| okey.bucket == owner) {
        apply_condition(worker, &mut writer, okey, condition).await?;
    }
    if let Some(md5) = content_md5 {
        writer.expect_md5(md5);
    }
    // The client waits for this before sending the body (boto3 does): only now that the request
    // is authorised and its head accepted (RFC 9110 §10.1.1). Also for an empty body: botocore
    // waits for the 100 even then, and a final response in its place left its pooled connection
    // stuck for a minute (boto/botocore#3755).
    if req.header("expect").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue")) {
        conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.flush().await.map_err(|e| S3Error::IncompleteBody(e.to_string()))?;
    }

    match mode {
        None => read_plain(conn, body, &mut writer, &mut checks, known, max_object_bytes).await?,
        Some(mode) => read_aws_chunked(conn, body, &mut writer, &mut checks, mode, known.unwrap_or(0)).await?,
    }
    if let Some(h) = checks.sha256 {
        h.finish().map_err(|_| S3Error::ContentSha256Mismatch)?;
    }
    if let Some(signer) = &checks.signer {
        if !signer.is_complete() {
            return Err(S3Error::IncompleteBody("the final chunk or the trailer signature is missing".into()));
        }
    }
    // The verified flexible checksum, echoed in the response as S3 does.
    let mut verified_checksum = None;
    if let Some((alg, computed, expected)) = checks.checksum {
        let expected =
            expected.ok_or(S3Error::IncompleteBody(format!("the {} trailer is missing", alg.header_name())))?;
        if computed.finish() != expected {
            return Err(S3Error::BadDigest);
        }
        if let Some(mut meta) = trailer_meta {
            meta.checksum = Some((alg.header_name().into(), Bytes::copy_from_slice(expected.as_bytes())));
            writer.replace_meta(meta)?;
        }
        verified_checksum = Some((alg.header_name(), expected));
    }
    let stored = writer.commit()?;
    // The previous version's cached copies are stale now (readers check the version anyway).
    shared.hot.remove(okey);
    if okey.bucket == owner {
        // Over a shared store, the object is there before the client hears it is stored.
        crate::backend::publish(worker, &stored).await?;
    }
    worker.metrics().objects_uploaded.inc();
    worker.metrics().bytes_uploaded.add(stored.meta.size);
    let etag = stored.meta.etag_bytes();
    let keep_alive = req.keep_alive();
    reply::start(&mut conn.out, 200, &worker.date, req.id);
    reply::header(&mut conn.out, "ETag", etag.as_str().as_bytes());
    if let Some((name, value)) = &verified_checksum {
        reply::header(&mut conn.out, name, value.as_bytes());
        reply::header(&mut conn.out, "x-amz-checksum-type", b"FULL_OBJECT");
    }
    reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
    reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Applies a write condition: at the commit, under the key's lock, against this edge's store;
/// over a shared store of record, now, against the version the shared store holds (this edge's
/// copy is only a cache). The shared store's check and the write are two requests: two edges
/// writing the same key at once may both pass.
pub(super) async fn apply_condition(
    worker: &Worker,
    writer: &mut RecordWriter,
    okey: ObjectKeyRef<'_>,
    condition: edgemirror_cache::WriteCondition,
) -> Result<(), S3Error> {
    let Some(store) = &worker.shared.shared_store else {
        writer.require(condition);
        return Ok(());
    };
    let current = crate::backend::head_version(worker, store, okey.bucket, okey.key)
        .await
        .map_err(|e| S3Error::SharedStoreUnavailable(format!("checking the write's condition: {e}")))?;
    let exists = current.is_some();
    if condition(current.as_deref()) {
        Ok(())
    } else {
        Err(edgemirror_cache::Error::ConditionNotMet { exists }.into())
    }
}

/// S3's conditional writes, tested at commit under the key's lock: `If-None-Match: *` creates
/// only (412 if the key has an object), `If-None-Match: "etag"` refuses to replace that
/// version, `If-Match: "etag"` replaces only that version and `If-Match: *` only an existing
/// object (both 404 `NoSuchKey` when there is none).
pub(super) fn write_condition(req: &Request<'_>) -> Option<edgemirror_cache::WriteCondition> {
    let if_match = req.header("if-match").map(<[u8]>::to_vec);
    let if_none_match = req.header("if-none-match").map(<[u8]>::to_vec);
    if if_match.is_none() && if_none_match.is_none() {
        return None;
    }
    Some(Box::new(move |current: Option<&str>| {
        let matched = if_match.as_ref().is_none_or(|m| current.is_some_and(|etag| proto::etag_matches(m, etag, false)));
        let none_matched =
            if_none_match.as_ref().is_none_or(|n| current.is_none_or(|etag| !proto::etag_matches(n, etag, true)));
        matched && none_matched
    }))
}

/// The metadata an upload request gives its object (PutObject, CreateMultipartUpload, a
/// CopyObject that replaces metadata): the saved headers it carries and its `x-amz-meta-*`
/// (2 KiB at most, `MetadataTooLarge` past it), dated now.
pub(super) fn uploaded_meta(req: &Request<'_>) -> Result<RecordMeta, S3Error> {
    let mut meta = RecordMeta::new(SystemTime::now());
    for h in SavedHeader::UPLOADED {
        let Some(v) = req.header(h.as_str()) else { continue };
        if h == SavedHeader::ContentEncoding {
            // `aws-chunked` is the upload's framing, not the object's encoding: S3 drops it.
            let kept: Vec<&str> = std::str::from_utf8(v)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
                .collect();
            if !kept.is_empty() {
                meta.headers.push((h, Bytes::from(kept.join(", "))));
            }
            continue;
        }
        meta.headers.push((h, Bytes::copy_from_slice(v)));
    }
    let mut user_bytes = 0;
    for h in req.head.headers.iter() {
        let (name, value) = (h.name.get(req.buf), h.value.get(req.buf));
        let lower = name.to_ascii_lowercase();
        if let Some(user) = lower.strip_prefix(b"x-amz-meta-") {
            user_bytes += user.len() + value.len();
            let user = String::from_utf8_lossy(user).into_owned();
            meta.user.push((user.into(), Bytes::copy_from_slice(value.trim_ascii())));
        }
    }
    if user_bytes > MAX_USER_METADATA_BYTES {
        return Err(S3Error::MetadataTooLarge);
    }
    Ok(meta)
}

/// The next raw piece of the request body.
async fn next_piece(conn: &mut Conn, body: &mut RequestBody, length: Option<u64>) -> Result<Option<Bytes>, S3Error> {
    match body.next(conn).await {
        Ok(piece) => Ok(piece),
        Err(BodyError::Truncated { got }) => Err(S3Error::IncompleteBody(match length {
            Some(length) => format!("{got} of {length} bytes arrived"),
            None => format!("the body stopped after {got} bytes"),
        })),
        Err(e) => Err(S3Error::IncompleteBody(e.to_string())),
    }
}

async fn read_plain(
    conn: &mut Conn,
    body: &mut RequestBody,
    writer: &mut RecordWriter,
    checks: &mut Checks,
    length: Option<u64>,
    max_bytes: u64,
) -> Result<(), S3Error> {
    let mut received = 0u64;
    while let Some(piece) = next_piece(conn, body, length).await? {
        received += piece.len() as u64;
        if received > max_bytes {
            return Err(S3Error::EntityTooLarge);
        }
        checks.data(&piece);
        writer.append(&piece)?;
    }
    Ok(())
}

/// Decodes an `aws-chunked` body as it streams: payload bytes go to the record (sliced out of
/// the read pieces, not copied), chunk signatures and trailers are checked as they come.
async fn read_aws_chunked(
    conn: &mut Conn,
    body: &mut RequestBody,
    writer: &mut RecordWriter,
    checks: &mut Checks,
    mode: AwsChunkedMode,
    length: u64,
) -> Result<(), S3Error> {
    let mut decoder = AwsChunkedDecoder::new(mode).with_decoded_length(length);
    let mut trailers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let framing = |e: edgemirror_proto::s3::aws_chunked::AwsChunkedError| S3Error::IncompleteBody(e.as_str().into());
    while !decoder.is_done() {
        let Some(piece) = next_piece(conn, body, Some(length)).await? else {
            return Err(S3Error::IncompleteBody("the aws-chunked body ended early".into()));
        };
        let mut at = 0;
        while at < piece.len() || decoder.is_done() {
            let (consumed, event) = decoder.decode(&piece[at..]).map_err(framing)?;
            match event {
                AwsChunk::Data { start, end } => {
                    let data = piece.slice(at + start..at + end);
                    checks.data(&data);
                    writer.append(&data)?;
                }
                AwsChunk::ChunkEnd { signature } => {
                    if let (Some(signer), Some(sig)) = (checks.signer.as_mut(), signature) {
                        signer.finish_chunk(sigv4::to_hex(&sig).as_bytes()).map_err(S3Error::Auth)?;
                    }
                }
                AwsChunk::Trailer(field) => {
                    if let Some((alg, _, expected)) = checks.checksum.as_mut() {
                        if Algorithm::from_header(field.name()) == Some(*alg) {
                            *expected = Some(String::from_utf8_lossy(field.value().trim_ascii()).into_owned());
                        }
                    }
                    trailers.push((field.name().to_vec(), field.value().to_vec()));
                }
                AwsChunk::TrailerSignature { signature } => {
                    if let Some(signer) = checks.signer.as_mut() {
                        signer
                            .verify_trailer(&trailers, sigv4::to_hex(&signature).as_bytes())
                            .map_err(S3Error::Auth)?;
                    }
                }
                AwsChunk::Partial => break,
                AwsChunk::End => break,
            }
            at += consumed;
            if decoder.is_done() {
                break;
            }
        }
    }
    Ok(())
}
