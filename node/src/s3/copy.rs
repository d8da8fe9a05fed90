//! Copies within the node: CopyObject and UploadPartCopy.
//!
//! - CopyObject: a PUT with `x-amz-copy-source: /{bucket}/{key}` copies an object the node holds
//!   into a new record (the body is read from the source's mapping and written like any upload;
//!   last commit wins). Metadata is the source's (`x-amz-metadata-directive: COPY`, the default)
//!   or the request's (`REPLACE`).
//! - UploadPartCopy: a part of a multipart upload (`?partNumber=N&uploadId=ID`) copied from a
//!   stored object, whole or the bytes `x-amz-copy-source-range: bytes=first-last` name.
//!
//! Both check the source's `x-amz-copy-source-if-*` conditions (412 when one fails). The source
//! must be stored here (a copy never mirrors), or over a shared store of record be held there:
//! it is then read into this edge first.

use std::ops::Range;
use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, StoredObject};
use edgemirror_proto::{self as proto, s3::xml};

use crate::error::S3Error;
use crate::respond::{Conn, Disposition, Request};
use crate::stored::{self, Precondition, COPY_SOURCE_CONDITIONS};
use crate::worker::Worker;

use super::multipart;

/// Bytes of the source appended at a time.
const COPY_PIECE_BYTES: usize = 1 << 20;

/// The object `x-amz-copy-source` names, with its bucket and key, once the source's
/// `x-amz-copy-source-if-*` conditions hold.
async fn source(worker: &Rc<Worker>, req: &Request<'_>) -> Result<(String, String, StoredObject), S3Error> {
    let source = req.header("x-amz-copy-source").unwrap_or_default();
    // `bucket/key` or `/bucket/key`, percent-encoded, optionally `?versionId=null`.
    let source = proto::decode_path(source.strip_prefix(b"/").unwrap_or(source)).map_err(S3Error::BadRequest)?;
    // One version per key, `null`.
    let source = match source.split_once("?versionId=") {
        None => source.as_ref(),
        Some((source, "null")) => source,
        Some(_) => return Err(S3Error::NoSuchVersion),
    };
    let Some((bucket, key)) = source.split_once('/') else {
        return Err(S3Error::InvalidArgument("x-amz-copy-source must be /bucket/key"));
    };
    if worker.shared.bucket(bucket).is_none() {
        return Err(S3Error::NoSuchBucket);
    }
    // Over a shared store, the source is its current version, read into this edge if need be.
    let object =
        crate::object::current_copy(worker, ObjectKeyRef::new(bucket, key), req.id).await?.ok_or(S3Error::NoSuchKey)?;
    let etag = object.meta.etag();
    if stored::preconditions(req, &COPY_SOURCE_CONDITIONS, &etag, &object.meta)? == Precondition::NotModified {
        return Err(S3Error::PreconditionFailed);
    }
    Ok((bucket.to_string(), key.to_string(), object))
}

/// Writes `body` as `key`'s new version (for bucket `owner`: see [`crate::worker::Shared::begin`]).
fn write(
    worker: &Worker,
    owner: &str,
    key: ObjectKeyRef<'_>,
    meta: RecordMeta,
    body: &Bytes,
) -> Result<StoredObject, S3Error> {
    let shared = &worker.shared;
    let mut writer = shared.begin(worker.id, owner, key, meta, Some(body.len() as u64), CommitRule::LastWins)?;
    for piece in body.chunks(COPY_PIECE_BYTES) {
        writer.append(&body.slice_ref(piece))?;
    }
    let stored = writer.commit()?;
    shared.hot.remove(key);
    Ok(stored)
}

pub async fn copy_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let (src_bucket, src_key, src) = source(worker, req).await?;
    let replace = req.header("x-amz-metadata-directive").is_some_and(|v| v.eq_ignore_ascii_case(b"REPLACE"));
    if !replace && src_bucket == bucket && src_key == key {
        return Err(S3Error::InvalidRequest("copying an object onto itself needs x-amz-metadata-directive: REPLACE"));
    }
    let meta = if replace {
        super::put::uploaded_meta(req)?
    } else {
        RecordMeta { last_modified: RecordMeta::new(SystemTime::now()).last_modified, ..src.meta.record.clone() }
    };
    let mut meta = meta;
    if worker.shared.shared_store.is_some() {
        crate::sharedstore::stamp(&mut meta.user);
    }
    let stored = write(worker, bucket, ObjectKeyRef::new(bucket, key), meta, &src.body)?;
    crate::backend::publish(worker, &stored).await?;
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

/// `PUT /{bucket}/{key}?partNumber=N&uploadId=ID` with `x-amz-copy-source`.
pub async fn upload_part_copy(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let (id, number) = multipart::part_of(worker, req, bucket, key)?;
    let (_, _, src) = source(worker, req).await?;
    let body = match req.header("x-amz-copy-source-range") {
        None => src.body.clone(),
        Some(v) => src.body.slice(copy_source_range(v, src.meta.size)?),
    };
    let part = multipart::part_key(&id, number);
    let stored = write(
        worker,
        bucket,
        ObjectKeyRef::new(multipart::MPU_BUCKET, &part),
        RecordMeta::new(SystemTime::now()),
        &body,
    )?;
    let result = xml::CopyPartResult {
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

/// `bytes=first-last`, both given, within an object of `size` bytes. S3 takes nothing else:
/// no suffix or open range, no list (400 `InvalidArgument`); a range past the end is 416.
fn copy_source_range(v: &[u8], size: u64) -> Result<Range<usize>, S3Error> {
    const FORM: S3Error = S3Error::InvalidArgument("x-amz-copy-source-range must be bytes=first-last");
    let spec = std::str::from_utf8(v).ok().and_then(|s| s.strip_prefix("bytes=")).ok_or(FORM)?;
    let (first, last) = spec.split_once('-').ok_or(FORM)?;
    let (first, last) = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(first), Ok(last)) if first <= last => (first, last),
        _ => return Err(FORM),
    };
    if last >= size {
        return Err(S3Error::InvalidRange { size });
    }
    Ok(first as usize..last as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_ranges_are_absolute_and_within_the_object() {
        assert_eq!(copy_source_range(b"bytes=0-4", 10).unwrap(), 0..5);
        assert_eq!(copy_source_range(b"bytes=9-9", 10).unwrap(), 9..10);
        for bad in [
            "0-2",
            "bytes=0",
            "bytes=hello-world",
            "bytes=0-bar",
            "bytes=hello-",
            "bytes=0-2,3-5",
            "bytes=-3",
            "bytes=3-",
            "bytes=5-4",
        ] {
            let e = copy_source_range(bad.as_bytes(), 10).unwrap_err();
            assert_eq!((e.status(), e.code()), (400, "InvalidArgument"), "{bad}");
        }
        let e = copy_source_range(b"bytes=0-10", 10).unwrap_err();
        assert_eq!((e.status(), e.code()), (416, "InvalidRange"));
    }
}
