//! Multipart upload: CreateMultipartUpload, UploadPart, CompleteMultipartUpload,
//! AbortMultipartUpload, ListParts, ListMultipartUploads.
//!
//! Where the pieces live: in the store itself, under an internal bucket no S3 request can name
//! (`_multipart`: an underscore is not allowed in bucket names). An upload is a record keyed by
//! its id whose body names the target (`bucket\0key`) and whose metadata is the final object's
//! (saved headers, `x-amz-meta-*`, from the create request); each part is a record keyed
//! `{upload id}/{part number:05}`, written by the same streaming path as a PutObject. So parts
//! survive restarts and crashes like any object, and compaction reclaims them once deleted.
//!
//! Complete checks the list against the parts (ascending, each ETag matching, every part but
//! the last at least 5 MiB: `InvalidPart`, `InvalidPartOrder`, `EntityTooSmall`), then writes
//! the object as one record, copying the parts' bytes in order, with S3's ETag (the MD5 of the
//! parts' MD5s, `-{count}`); the last commit wins as for any write. The upload's records are then
//! deleted. Abort deletes them at once; uploads left alone are aborted after
//! `store.multipart_max_age_s` by the admin thread.

use std::rc::Rc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, ObjectMeta, RecordMeta, Store};
use edgemirror_proto::s3::xml::{self, ChecksumFields, CompleteMultipartUpload, ListedPart, ListedUpload, Owner};
use md5::{Digest as _, Md5};

use super::auth::Signed;
use super::checksum::{Algorithm, Checksum};
use super::list::send_xml;
use crate::body::RequestBody;
use crate::error::S3Error;
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// The internal bucket of uploads in progress.
pub const MPU_BUCKET: &str = "_multipart";
/// S3's smallest part, but for the last one.
const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's part numbers.
const MAX_PART_NUMBER: u32 = 10_000;

fn owner() -> Owner {
    Owner { id: "edgemirror".into(), display_name: Some("edgemirror".into()) }
}

/// A query parameter's value, percent-decoded.
pub fn param(query: &[u8], name: &str) -> Option<String> {
    edgemirror_proto::query_param(query, name)
}

fn new_upload_id() -> String {
    format!("{:016x}{:016x}", edgemirror_cache::random_u64(), edgemirror_cache::random_u64())
}

/// The upload `id`'s record, if it exists and targets `bucket`/`key`.
fn upload(store: &Store, id: &str, bucket: &str, key: &str) -> Result<std::sync::Arc<ObjectMeta>, S3Error> {
    let valid_id = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let found = valid_id.then(|| store.get(ObjectKeyRef::new(MPU_BUCKET, id)).ok().flatten()).flatten();
    match found {
        Some(obj) if obj.body.as_ref() == format!("{bucket}\0{key}").as_bytes() => Ok(obj.meta),
        _ => Err(S3Error::NoSuchUpload),
    }
}

pub fn part_key(id: &str, number: u32) -> String {
    format!("{id}/{number:05}")
}

/// The parts of upload `id`, in part-number order: (number, object).
fn parts(store: &Store, id: &str) -> Vec<(u32, std::sync::Arc<ObjectMeta>)> {
    store
        .list_all(MPU_BUCKET, &format!("{id}/"))
        .into_iter()
        .filter_map(|m| m.key.rsplit('/').next()?.parse::<u32>().ok().map(|n| (n, m)))
        .collect()
}

/// `POST /{bucket}/{key}?uploads`.
pub async fn create(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let store = &worker.shared.store;
    let id = new_upload_id();
    let mut meta = super::put::uploaded_meta(req)?;
    // The object's flexible checksum, if asked for: kept in the upload's record as
    // (x-amz-checksum-<algorithm>, its type) until CompleteMultipartUpload computes it.
    let checksum = requested_checksum(req)?;
    if let Some((alg, kind)) = checksum {
        meta.checksum = Some((alg.header_name().into(), Bytes::from_static(kind.as_bytes())));
    }
    let target = Bytes::from(format!("{bucket}\0{key}"));
    let okey = ObjectKeyRef::new(MPU_BUCKET, &id);
    let mut w = store.begin(worker.id, okey, meta, Some(target.len() as u64), CommitRule::LastWins)?;
    w.append(&target)?;
    w.commit()?;
    let result = xml::InitiateMultipartUploadResult { bucket: bucket.into(), key: key.into(), upload_id: id };
    let headers: Vec<(&str, &[u8])> = match checksum {
        Some((alg, kind)) => {
            vec![("x-amz-checksum-algorithm", alg.name().as_bytes()), ("x-amz-checksum-type", kind.as_bytes())]
        }
        None => Vec::new(),
    };
    super::list::send_xml_with(worker, conn, req, &headers, xml::to_xml(&result)).await
}

/// CreateMultipartUpload's `x-amz-checksum-algorithm` and `x-amz-checksum-type`: the algorithm,
/// and `COMPOSITE` (a checksum of the parts' checksums, `-N`; the default but for CRC64NVME) or
/// `FULL_OBJECT` (the checksum of the whole body; the CRCs only).
fn requested_checksum(req: &Request<'_>) -> Result<Option<(Algorithm, &'static str)>, S3Error> {
    let Some(name) = req.header("x-amz-checksum-algorithm") else {
        return Ok(None);
    };
    let alg = Algorithm::from_name(name).ok_or(S3Error::InvalidArgument("unknown x-amz-checksum-algorithm"))?;
    let kind = match req.header("x-amz-checksum-type").map(<[u8]>::trim_ascii) {
        None if alg == Algorithm::Crc64Nvme => "FULL_OBJECT",
        None => "COMPOSITE",
        Some(t) if t.eq_ignore_ascii_case(b"COMPOSITE") && alg != Algorithm::Crc64Nvme => "COMPOSITE",
        Some(t) if t.eq_ignore_ascii_case(b"FULL_OBJECT") && alg.can_be_full_object() => "FULL_OBJECT",
        Some(_) => return Err(S3Error::InvalidRequest("this x-amz-checksum-type is not valid for the algorithm")),
    };
    Ok(Some((alg, kind)))
}

/// The `partNumber` query parameter: an integer from 1 to 10000.
fn part_number(query: &[u8]) -> Result<u32, S3Error> {
    param(query, "partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or(S3Error::InvalidArgument("partNumber must be an integer from 1 to 10000"))
}

/// The upload and part number an UploadPart or UploadPartCopy names, once the upload is known
/// to exist for `bucket`/`key`.
pub fn part_of(worker: &Worker, req: &Request<'_>, bucket: &str, key: &str) -> Result<(String, u32), S3Error> {
    let query = req.query().unwrap_or_default();
    let id = param(query, "uploadId").unwrap_or_default();
    let number = part_number(query)?;
    upload(&worker.shared.store, &id, bucket, key)?;
    Ok((id, number))
}

/// `PUT /{bucket}/{key}?partNumber=N&uploadId=ID`: the part streams in like a PutObject.
#[allow(clippy::too_many_arguments)]
pub async fn upload_part(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    bucket: &str,
    key: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    let (id, number) = part_of(worker, req, bucket, key)?;
    super::put::put_object(
        worker,
        conn,
        req,
        body,
        ObjectKeyRef::new(MPU_BUCKET, &part_key(&id, number)),
        bucket,
        signed,
    )
    .await
}

/// `GET` or `HEAD /{bucket}/{key}?partNumber=N`: one part of a stored object. A single-part
/// object has one part, itself; a part past the last is 400 `InvalidPart`. Served from the
/// store only: a part never mirrors.
pub async fn get_part(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let number = part_number(req.query().unwrap_or_default())?;
    let object = worker.shared.store.lookup(ObjectKeyRef::new(bucket, key)).await?.ok_or(S3Error::NoSuchKey)?;
    let meta = &object.meta;
    let range = match meta.record.parts {
        0 => (number == 1).then_some(0..meta.size),
        _ => meta.record.part_range(number),
    };
    let range = range.ok_or(S3Error::InvalidPart)?;
    crate::stored::send_part(worker, conn, req, meta, object.body.clone(), number, range).await
}

/// `POST /{bucket}/{key}?uploadId=ID` with the list of parts.
#[allow(clippy::too_many_arguments)]
pub async fn complete(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    bucket: &str,
    key: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    let id = param(req.query().unwrap_or_default(), "uploadId").unwrap_or_default();
    let upload_meta = upload(&shared.store, &id, bucket, key);
    let bytes = super::delete::read_xml_body(conn, req, body, &signed).await?;
    let list: CompleteMultipartUpload = xml::from_xml(&bytes).map_err(|e| S3Error::MalformedXml(e.as_str()))?;
    let upload_meta = match upload_meta {
        Ok(meta) => meta,
        // A retry of a Complete that succeeded (its answer was lost): the upload is gone, and
        // the key holds the object those very parts made. S3 answers it again.
        Err(S3Error::NoSuchUpload) => match completed_from(shared, bucket, key, &list).await {
            Some(result) => return send_xml(worker, conn, req, xml::to_xml(&result)).await,
            None => return Err(S3Error::NoSuchUpload),
        },
        Err(e) => return Err(e),
    };
    if list.parts.is_empty() {
        return Err(S3Error::MalformedXml("no parts"));
    }
    if !list.is_ascending() {
        return Err(S3Error::InvalidPartOrder);
    }
    let stored = parts(&shared.store, &id);
    let mut chosen = Vec::with_capacity(list.parts.len());
    for (i, part) in list.parts.iter().enumerate() {
        let Some((_, meta)) = stored.iter().find(|(n, _)| *n == part.part_number) else {
            return Err(S3Error::InvalidPart);
        };
        if meta.etag().trim_matches('"') != part.etag_unquoted() {
            return Err(S3Error::InvalidPart);
        }
        if i + 1 < list.parts.len() && meta.size < MIN_PART_BYTES {
            return Err(S3Error::EntityTooSmall);
        }
        chosen.push(meta.clone());
    }
    let total: u64 = chosen.iter().map(|m| m.size).sum();
    if total > req.config.store.max_object_bytes {
        return Err(S3Error::EntityTooLarge);
    }
    // The upload's flexible checksum: every part has one from its upload, and a part listed
    // with a value must name that one.
    let checksum = upload_meta
        .record
        .checksum
        .as_ref()
        .and_then(|(name, kind)| Some((Algorithm::from_header(name.as_bytes())?, kind.as_ref() == b"FULL_OBJECT")));
    let (mut composite, mut part_checksums) = (None, Vec::new());
    if let Some((alg, full_object)) = checksum {
        let mut values = Vec::with_capacity(chosen.len());
        for (part, meta) in list.parts.iter().zip(&chosen) {
            let stored = meta.record.checksum.as_ref().filter(|(n, _)| **n == *alg.header_name()).map(|(_, v)| v);
            match (alg.of_part(part), stored.and_then(|v| std::str::from_utf8(v).ok())) {
                (Some(given), Some(stored)) if given == stored => values.push(stored),
                (None, Some(stored)) => values.push(stored),
                _ => return Err(S3Error::BadDigest),
            }
        }
        if !full_object {
            composite = Some(super::checksum::composite(alg, &values).ok_or(S3Error::BadDigest)?);
        }
        part_checksums = values.iter().map(|v| Box::from(*v)).collect();
    }
    let mut md5s = Md5::new();
    for m in &chosen {
        md5s.update(m.md5);
    }
    let md5: [u8; 16] = md5s.finalize().into();
    let mut meta = upload_meta.record.clone();
    meta.last_modified = RecordMeta::new(SystemTime::now()).last_modified;
    meta.parts = chosen.len() as u32;
    meta.set_part_sizes(chosen.iter().map(|m| m.size));
    meta.part_checksums = part_checksums;
    // A composite checksum is known now; a full-object one once the body has been copied: its
    // place is held by the checksum of nothing (the same length) until then.
    meta.checksum = checksum.map(|(alg, _)| {
        let value = composite.clone().unwrap_or_else(|| Checksum::new(alg).finish());
        (alg.header_name().into(), Bytes::from(value))
    });
    let mut full_object = checksum.filter(|(_, full)| *full).map(|(alg, _)| (alg, Checksum::new(alg), meta.clone()));
    let okey = ObjectKeyRef::new(bucket, key);
    let mut meta = meta;
    if shared.shared_store.is_some() {
        crate::sharedstore::stamp(&mut meta.user);
    }
    let mut writer = shared.begin(worker.id, bucket, okey, meta, Some(total), CommitRule::LastWins)?;
    if let Some(condition) = super::put::write_condition(req) {
        super::put::apply_condition(worker, &mut writer, okey, condition).await?;
    }
    writer.defer_md5();
    for m in &chosen {
        let part = shared
            .store
            .lookup(ObjectKeyRef::new(MPU_BUCKET, &m.key))
            .await
            .map_err(|e| S3Error::Internal(e.to_string()))?
            .ok_or(S3Error::InvalidPart)?;
        let mut at = 0;
        while at < part.body.len() {
            let end = (at + (1 << 20)).min(part.body.len());
            if let Some((_, sum, _)) = full_object.as_mut() {
                sum.update(&part.body[at..end]);
            }
            writer.append(&part.body.slice(at..end))?;
            at = end;
        }
    }
    let value = match full_object {
        Some((alg, sum, mut meta)) => {
            let value = sum.finish();
            meta.checksum = Some((alg.header_name().into(), Bytes::from(value.clone())));
            writer.replace_meta(meta)?;
            Some(value)
        }
        None => composite,
    };
    // The client's own value for the whole object, when it sent one, must agree.
    if let (Some((alg, _)), Some(value)) = (checksum, &value) {
        if req.header(alg.header_name()).is_some_and(|v| v.trim_ascii() != value.as_bytes()) {
            return Err(S3Error::BadDigest);
        }
    }
    let obj = writer.commit_with_md5(md5)?;
    shared.hot.remove(okey);
    // Over a shared store, the upload stays until the object is there: a failure (503) leaves
    // the client its parts to complete again.
    crate::backend::publish(worker, &obj).await?;
    drop_upload(worker, &id);
    worker.metrics().objects_uploaded.inc();
    worker.metrics().bytes_uploaded.add(total);
    let checksum =
        checksum.zip(value).map(|((alg, full), value)| (alg, value, if full { "FULL_OBJECT" } else { "COMPOSITE" }));
    let result = complete_result(bucket, key, obj.meta.etag(), checksum);
    send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// The result of a Complete of `list` that already happened: the object at `bucket`/`key` is
/// the one those parts make (its ETag is the MD5 of their MD5s, with their count).
async fn completed_from(
    shared: &crate::worker::Shared,
    bucket: &str,
    key: &str,
    list: &CompleteMultipartUpload,
) -> Option<xml::CompleteMultipartUploadResult> {
    let mut md5s = Md5::new();
    for part in &list.parts {
        md5s.update(edgemirror_cache::md5_from_hex(part.etag_unquoted().as_bytes())?);
    }
    let md5: [u8; 16] = md5s.finalize().into();
    let expected = edgemirror_cache::Etag::new(&md5, list.parts.len() as u32);
    let object = shared.store.lookup(ObjectKeyRef::new(bucket, key)).await.ok()??;
    if object.meta.etag_bytes().as_str() != expected.as_str() {
        return None;
    }
    // The same checksum as the first answer, when the object has one.
    let checksum = object.meta.record.checksum.as_ref().and_then(|(name, value)| {
        let alg = Algorithm::from_header(name.as_bytes())?;
        Some((alg, String::from_utf8_lossy(value).into_owned(), crate::reply::checksum_type(value)))
    });
    Some(complete_result(bucket, key, expected.as_str().to_string(), checksum))
}

/// CompleteMultipartUpload's answer: the object's ETag and, when the upload had one, its
/// checksum with its type.
fn complete_result(
    bucket: &str,
    key: &str,
    etag: String,
    checksum: Option<(Algorithm, String, &str)>,
) -> xml::CompleteMultipartUploadResult {
    let mut result = xml::CompleteMultipartUploadResult {
        location: format!("/{bucket}/{key}"),
        bucket: bucket.into(),
        key: key.into(),
        etag,
        ..Default::default()
    };
    if let Some((alg, value, kind)) = checksum {
        *alg.field(result.checksum_fields()) = Some(value);
        result.checksum_type = Some(kind.into());
    }
    result
}

/// Deletes an upload's records: its parts, then the upload itself.
fn drop_upload(worker: &Worker, id: &str) {
    let store = &worker.shared.store;
    for (_, part) in parts(store, id) {
        let _ = store.delete(worker.id, ObjectKeyRef::new(MPU_BUCKET, &part.key));
    }
    let _ = store.delete(worker.id, ObjectKeyRef::new(MPU_BUCKET, id));
}

/// `DELETE /{bucket}/{key}?uploadId=ID`: 204.
pub async fn abort(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let id = param(req.query().unwrap_or_default(), "uploadId").unwrap_or_default();
    upload(&worker.shared.store, &id, bucket, key)?;
    drop_upload(worker, &id);
    super::list::send_no_content(worker, conn, req).await
}

/// `GET /{bucket}/{key}?uploadId=ID`: the parts uploaded so far (all of them: at most 10,000).
pub async fn list_parts(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let id = param(req.query().unwrap_or_default(), "uploadId").unwrap_or_default();
    upload(&worker.shared.store, &id, bucket, key)?;
    let listed: Vec<ListedPart> = parts(&worker.shared.store, &id)
        .into_iter()
        .map(|(n, m)| {
            let mut part = ListedPart {
                part_number: n,
                last_modified: m.record.last_modified,
                etag: m.etag(),
                size: m.size,
                checksum_crc32: None,
                checksum_crc32c: None,
                checksum_crc64nvme: None,
                checksum_sha1: None,
                checksum_sha256: None,
            };
            // The checksum the part was uploaded with, if any.
            if let Some((name, value)) = &m.record.checksum {
                if let Some(alg) = Algorithm::from_header(name.as_bytes()) {
                    *alg.field(part.checksum_fields()) = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            part
        })
        .collect();
    let result = xml::ListPartsResult {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: id,
        initiator: Some(owner()),
        owner: Some(owner()),
        storage_class: "STANDARD".into(),
        max_parts: MAX_PART_NUMBER,
        parts: listed,
        ..Default::default()
    };
    send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// The uploads in progress: (id, bucket, key, started).
fn uploads(store: &Store) -> Vec<(String, String, String, SystemTime)> {
    store
        .list(MPU_BUCKET, "", Some("/"), None, usize::MAX)
        .objects
        .into_iter()
        .filter_map(|m| {
            let obj = store.get(ObjectKeyRef::new(MPU_BUCKET, &m.key)).ok().flatten()?;
            let target = std::str::from_utf8(&obj.body).ok()?;
            let (b, k) = target.split_once('\0')?;
            Some((m.key.to_string(), b.to_string(), k.to_string(), m.record.last_modified))
        })
        .collect()
}

/// `GET /{bucket}?uploads`: the uploads in progress into `bucket` (at most 1000).
pub async fn list_uploads(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
) -> Result<Disposition, S3Error> {
    let prefix = param(req.query().unwrap_or_default(), "prefix").unwrap_or_default();
    let mut listed: Vec<ListedUpload> = uploads(&worker.shared.store)
        .into_iter()
        .filter(|(_, b, k, _)| b == bucket && k.starts_with(&prefix))
        .map(|(id, _, key, started)| ListedUpload {
            key,
            upload_id: id,
            initiator: Some(owner()),
            owner: Some(owner()),
            storage_class: "STANDARD".into(),
            initiated: started,
        })
        .collect();
    listed.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    listed.truncate(1000);
    let result = xml::ListMultipartUploadsResult {
        bucket: bucket.into(),
        prefix: (!prefix.is_empty()).then_some(prefix),
        max_uploads: 1000,
        uploads: listed,
        ..Default::default()
    };
    send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// Aborts every upload into `bucket` (its DeleteBucket); returns how many.
pub fn abort_bucket_uploads(worker: &Worker, bucket: &str) -> usize {
    let mut aborted = 0;
    for (id, b, _, _) in uploads(&worker.shared.store) {
        if b == bucket {
            drop_upload(worker, &id);
            aborted += 1;
        }
    }
    aborted
}

/// Aborts the uploads started more than `max_age` ago (the admin thread calls this hourly).
pub fn reclaim_abandoned(worker: &Worker, max_age: Duration) -> usize {
    let now = SystemTime::now();
    let mut reclaimed = 0;
    for (id, _, _, started) in uploads(&worker.shared.store) {
        if now.duration_since(started).is_ok_and(|age| age > max_age) {
            drop_upload(worker, &id);
            reclaimed += 1;
        }
    }
    if reclaimed > 0 {
        tracing::info!(reclaimed, max_age_s = max_age.as_secs(), "abandoned multipart uploads aborted");
    }
    reclaimed
}
