//! CopyObject: a PUT with `x-amz-copy-source: /{bucket}/{key}` copies an object the node holds
//! into a new record (the body is read from the source's mapping and written like any upload;
//! last commit wins). Metadata is the source's (`x-amz-metadata-directive: COPY`, the default)
//! or the request's (`REPLACE`). The source must be stored here: a copy never mirrors.

use std::rc::Rc;
use std::time::SystemTime;

use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta};
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
    let src = shared.store.lookup(ObjectKeyRef::new(src_bucket, src_key)).await?.ok_or(S3Error::NoSuchKey)?;
    let replace = req.header("x-amz-metadata-directive").is_some_and(|v| v.eq_ignore_ascii_case(b"REPLACE"));
    if !replace && src_bucket == bucket && src_key == key {
        return Err(S3Error::InvalidRequest("copying an object onto itself needs x-amz-metadata-directive: REPLACE"));
    }
    let meta = if replace {
        super::put::uploaded_meta(req)?
    } else {
        RecordMeta { last_modified: RecordMeta::new(SystemTime::now()).last_modified, ..src.meta.record.clone() }
    };
    let okey = ObjectKeyRef::new(bucket, key);
    let mut writer = shared.begin(worker.id, bucket, okey, meta, Some(src.meta.size), CommitRule::LastWins)?;
    let mut at = 0;
    while at < src.body.len() {
        let end = (at + COPY_PIECE_BYTES).min(src.body.len());
        writer.append(&src.body.slice(at..end))?;
        at = end;
    }
    let stored = writer.commit()?;
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
