//! Deletes: DeleteObject (`DELETE /{bucket}/{key}`) and DeleteObjects (`POST /{bucket}?delete`
//! with up to 1000 keys in XML). Each deletion is a tombstone record in the store, crash-safe
//! like a commit, and the object leaves every tier; deleting a key that is not there succeeds,
//! as in S3.

use std::rc::Rc;

use edgemirror_cache::ObjectKeyRef;
use edgemirror_proto::s3::xml::{self, Delete, DeleteError, DeleteResult, DeletedObject};

use super::auth::Signed;
use crate::body::RequestBody;
use crate::error::S3Error;
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// DeleteObject: a tombstone in the store (crash-safe), the object gone from every tier; 204
/// whether or not it existed, as S3 answers.
pub async fn delete_object(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    // Over a shared store, deleted there first: if it cannot be, nothing changed.
    crate::backend::delete_shared(worker, bucket, key).await?;
    match delete_one(worker, bucket, key) {
        Ok(()) => {}
        Err(("InsufficientStorage", why)) => return Err(S3Error::StoreFull(why)),
        Err(("InvalidArgument", _)) => return Err(S3Error::InvalidRequest("the key is not a valid object key")),
        Err((_, why)) => return Err(S3Error::Internal(why)),
    }
    super::list::send_no_content(worker, conn, req).await
}

/// Deletes one key; the S3 error code and message when it could not be.
fn delete_one(worker: &Worker, bucket: &str, key: &str) -> Result<(), (&'static str, String)> {
    let shared = &worker.shared;
    let okey = ObjectKeyRef::new(bucket, key);
    if okey.validate().is_err() {
        return Err(("InvalidArgument", "the key is not a valid object key".into()));
    }
    match shared.store.delete(worker.id, okey) {
        Ok(_) => {}
        Err(edgemirror_cache::Error::NoSpace(why)) => return Err(("InsufficientStorage", why)),
        Err(e) => return Err(("InternalError", e.to_string())),
    }
    shared.hot.remove(okey);
    shared.negative.forget(okey);
    worker.metrics().objects_deleted.inc();
    Ok(())
}

/// DeleteObjects: the XML list of keys (read whole: at most 4 MiB, checked against Content-MD5
/// and the signed SHA-256 when given), each deleted in turn; the result lists every key deleted
/// (none in quiet mode) and every one that could not be.
pub async fn delete_objects(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    bucket: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    let bytes = read_xml_body(conn, req, body, &signed).await?;
    let request: Delete = xml::from_xml(&bytes).map_err(|e| S3Error::MalformedXml(e.as_str()))?;
    let mut result = DeleteResult::default();
    for object in request.objects {
        // The node keeps one version per key, `null` (as an unversioned S3 bucket does).
        let outcome = if object.version_id.as_deref().is_some_and(|v| v != "null") {
            Err(("NoSuchVersion", "this store keeps no versions but null".to_string()))
        } else if let Some(etag) = &object.etag {
            // The current version's ETag: over a shared store of record, the one it holds.
            let current = match &worker.shared.shared_store {
                Some(store) => crate::backend::head_version(worker, store, bucket, &object.key).await.ok().flatten(),
                None => worker
                    .shared
                    .store
                    .get(ObjectKeyRef::new(bucket, &object.key))
                    .ok()
                    .flatten()
                    .map(|o| o.meta.etag()),
            };
            match current {
                Some(current) if current.trim_matches('"') == etag.trim_matches('"') => {
                    match crate::backend::delete_shared(worker, bucket, &object.key).await {
                        Ok(()) => delete_one(worker, bucket, &object.key),
                        Err(e) => Err((e.code(), e.message().into_owned())),
                    }
                }
                _ => Err(("PreconditionFailed", "the ETag does not match the current object".to_string())),
            }
        } else {
            match crate::backend::delete_shared(worker, bucket, &object.key).await {
                Ok(()) => delete_one(worker, bucket, &object.key),
                Err(e) => Err((e.code(), e.message().into_owned())),
            }
        };
        match outcome {
            Ok(()) if request.quiet => {}
            Ok(()) => result.deleted.push(DeletedObject { key: object.key, ..Default::default() }),
            Err((code, message)) => result.errors.push(DeleteError {
                key: object.key,
                version_id: object.version_id,
                code: code.into(),
                message,
            }),
        }
    }
    super::list::send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// Reads a request's XML body whole (at most 4 MiB), checking Content-MD5 and the signed SHA-256
/// when given.
pub(super) async fn read_xml_body(
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    signed: &Signed,
) -> Result<Vec<u8>, S3Error> {
    if signed.verified.payload.is_streaming() {
        return Err(S3Error::NotImplemented("aws-chunked bodies"));
    }
    if body.content_length().is_some_and(|n| n > xml::MAX_XML_BODY_BYTES as u64) {
        return Err(S3Error::InvalidRequest("the delete request body is larger than 4 MiB"));
    }
    let mut bytes = Vec::new();
    let mut sha256 = signed.verified.payload_hasher();
    while let Some(piece) = body.next(conn).await.map_err(|e| S3Error::IncompleteBody(e.to_string()))? {
        if bytes.len() + piece.len() > xml::MAX_XML_BODY_BYTES {
            return Err(S3Error::InvalidRequest("the delete request body is larger than 4 MiB"));
        }
        if let Some(h) = sha256.as_mut() {
            h.update(&piece);
        }
        bytes.extend_from_slice(&piece);
    }
    if let Some(h) = sha256 {
        h.finish().map_err(|_| S3Error::ContentSha256Mismatch)?;
    }
    if let Some(md5) = req.header("content-md5") {
        use md5::Digest as _;
        let expected = crate::fill::decode_md5(md5).ok_or(S3Error::InvalidDigest)?;
        if md5::Md5::digest(&bytes).as_slice() != expected {
            return Err(S3Error::BadDigest);
        }
    }
    Ok(bytes)
}
