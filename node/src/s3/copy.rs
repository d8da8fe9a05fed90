//! CopyObject: a PUT with `x-amz-copy-source: /{bucket}/{key}` copies an object the node holds
//! into a new record (the body is read from the source's mapping and written like any upload;
//! last commit wins). Metadata is the source's (`x-amz-metadata-directive: COPY`, the default)
//! or the request's (`REPLACE`). The source must be stored here: a copy never mirrors.

use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, SavedHeader};
use edgemirror_proto::{self as proto, s3::xml};

use crate::error::S3Error;
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// Bytes of the source appended at a time.
const COPY_PIECE_BYTES: usize = 1 << 20;

pub async fn copy_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    let source = req.header("x-amz-copy-source").unwrap_or_default();
    // `bucket/key` or `/bucket/key`, percent-encoded; a `?versionId=` is refused (no versions).
    let source = proto::decode_path(source.strip_prefix(b"/").unwrap_or(source)).map_err(S3Error::BadRequest)?;
    if source.contains("?versionId=") {
        return Err(S3Error::NotImplemented("copying a version"));
    }
    let Some((src_bucket, src_key)) = source.split_once('/') else {
        return Err(S3Error::InvalidRequest("x-amz-copy-source must be /bucket/key"));
    };
    if shared.bucket(src_bucket).is_none() {
        return Err(S3Error::NoSuchBucket);
    }
    let src = match shared.store.lookup(ObjectKeyRef::new(src_bucket, src_key)).await {
        Ok(Some(obj)) => obj,
        Ok(None) => return Err(S3Error::NoSuchKey),
        Err(e) => return Err(S3Error::Internal(e.to_string())),
    };
    let replace = req.header("x-amz-metadata-directive").is_some_and(|v| v.eq_ignore_ascii_case(b"REPLACE"));
    if !replace && src_bucket == bucket && src_key == key {
        return Err(S3Error::InvalidRequest("copying an object onto itself needs x-amz-metadata-directive: REPLACE"));
    }
    let mut meta = if replace { RecordMeta::new(SystemTime::now()) } else { src.meta.record.clone() };
    meta.last_modified = RecordMeta::new(SystemTime::now()).last_modified;
    if replace {
        for h in SavedHeader::UPLOADED {
            if let Some(v) = req.header(h.as_str()) {
                meta.headers.push((h, Bytes::copy_from_slice(v)));
            }
        }
        for h in req.head.headers.iter() {
            let lower = h.name.get(req.buf).to_ascii_lowercase();
            if let Some(user) = lower.strip_prefix(b"x-amz-meta-") {
                let value = Bytes::copy_from_slice(h.value.get(req.buf).trim_ascii());
                meta.user.push((String::from_utf8_lossy(user).into_owned().into(), value));
            }
        }
    }
    let okey = ObjectKeyRef::new(bucket, key);
    let size = src.meta.size;
    let mut writer = match shared.store.begin(worker.id, okey, meta, Some(size), CommitRule::LastWins) {
        Ok(w) => w,
        Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
        Err(e) => return Err(S3Error::Internal(e.to_string())),
    };
    let mut at = 0;
    while at < src.body.len() {
        let end = (at + COPY_PIECE_BYTES).min(src.body.len());
        match writer.append(&src.body.slice(at..end)) {
            Ok(()) => {}
            Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
            Err(e) => return Err(S3Error::Internal(e.to_string())),
        }
        at = end;
    }
    let stored = match writer.commit() {
        Ok(obj) => obj,
        Err(edgemirror_cache::Error::NoSpace(why)) => return Err(S3Error::StoreFull(why)),
        Err(e) => return Err(S3Error::Internal(e.to_string())),
    };
    shared.hot.remove(okey);
    let result = xml::CopyObjectResult {
        last_modified: stored.meta.record.last_modified,
        etag: stored.meta.etag(),
        checksum_crc32: None,
        checksum_crc32c: None,
        checksum_crc64nvme: None,
        checksum_sha1: None,
        checksum_sha256: None,
    };
    super::list::send_xml(worker, conn, req, xml::to_xml(&result)).await
}
