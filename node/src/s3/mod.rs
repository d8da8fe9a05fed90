//! The data plane's front door: every request is routed ([`crate::route`]) to an S3 operation,
//! authorised ([`auth`]), and handed to its handler; errors are answered here, in one place, as
//! S3 XML with the request id.
//!
//! - GET / HEAD of an object: [`crate::object`] (the store's tiers, then mirror back-to-origin).
//!   Anonymous unless the bucket sets `public_read = false`.
//! - PUT of an object: [`put`]; listing a bucket: [`list`]; creating and deleting a bucket:
//!   [`bucket`]; DELETE of an object and HEAD of a bucket: here. Always signed.
//! - Everything else S3 has is answered 501 `NotImplemented`, naming the operation.

pub mod attributes;
pub mod auth;
pub mod bucket;
pub mod checksum;
pub mod copy;
pub mod delete;
pub mod list;
pub mod multipart;
pub mod put;

use std::rc::Rc;

use crate::body::RequestBody;
use crate::error::S3Error;
use crate::object;
use crate::reply::{self, Framing};
use crate::respond::{Conn, Disposition, Request};
use crate::route::{self, Op};
use crate::worker::Worker;
use edgemirror_proto::s3::xml;

/// Answers one request; returns whether the connection may continue.
pub async fn handle(worker: &Rc<Worker>, conn: &mut Conn, req: &Request<'_>, body: &mut RequestBody) -> Disposition {
    worker.metrics().requests.inc();
    let keep_alive = req.keep_alive();
    let (key_for_error, result) = match route::route(req, &worker.shared.config.s3.domain) {
        Ok(target) => {
            let r = serve(worker, conn, req, body, &target).await;
            (Some(target.key), r)
        }
        Err(e) => (None, Err(e)),
    };
    match result {
        Ok(d) => d,
        Err(err) => {
            match &err {
                S3Error::Internal(reason) => tracing::error!(request_id = %req.id, reason, "internal error"),
                // The origin's reason is kept from the client (it may name internal hosts) but an
                // operator needs it: 424s are logged with it.
                S3Error::MirrorFailed(reason) => tracing::warn!(request_id = %req.id, reason, "424 mirror failed"),
                S3Error::StoreFull(reason) => tracing::warn!(request_id = %req.id, reason, "507 store full"),
                _ => {}
            }
            let key = key_for_error.as_deref().filter(|k| !k.is_empty());
            reply::error(&mut conn.out, &err, key, &worker.date, req.id, keep_alive, req.is_head());
            Disposition::after(conn.flush().await, keep_alive && !err.closes_connection())
        }
    }
}

async fn serve(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    target: &route::Target<'_>,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    if target.op == Op::ListBuckets {
        auth::authorize(worker, req)?;
        return list::list_buckets(worker, conn, req).await;
    }
    if target.op == Op::CreateBucket {
        let signed = auth::authorize(worker, req)?;
        return bucket::create(worker, conn, req, body, &target.bucket, signed).await;
    }
    // A borrow of the table snapshot, not a clone of the bucket: no shared refcount per request.
    let Some(public_read) = shared.buckets.load().get(&target.bucket).map(|b| b.config.public_read) else {
        // Who may learn which buckets exist: a signed request, or anyone for public reads.
        if target.op.needs_signature() {
            auth::authorize(worker, req)?;
        }
        return Err(S3Error::NoSuchBucket);
    };
    let signed = if target.op.needs_signature() || !public_read { Some(auth::authorize(worker, req)?) } else { None };
    match target.op {
        Op::GetObject | Op::HeadObject => {
            let overrides = req.query().is_some_and(|q| {
                reply::Overrides::PARAMS.iter().any(|(param, _)| edgemirror_proto::has_query_param(q, param))
            });
            if overrides && signed.is_none() {
                // A public read needs no signature, but S3 takes response-* overrides only
                // from a signed request: check the one it carries (an anonymous one is refused).
                auth::authorize(worker, req)?;
            }
            object::serve(worker, conn, req, &target.bucket, &target.key).await
        }
        Op::PutObject => {
            let signed = signed.ok_or(S3Error::Internal("a PUT reached its handler unsigned".into()))?;
            put::put_object(
                worker,
                conn,
                req,
                body,
                edgemirror_cache::ObjectKeyRef::new(&target.bucket, &target.key),
                &target.bucket,
                signed,
            )
            .await
        }
        Op::DeleteObject => delete::delete_object(worker, conn, req, &target.bucket, &target.key).await,
        Op::ListObjects => list::list_objects(worker, conn, req, &target.bucket).await,
        Op::ListObjectVersions => list::list_versions(worker, conn, req, &target.bucket).await,
        Op::DeleteObjects => {
            let signed = signed.ok_or(S3Error::Internal("a batch delete reached its handler unsigned".into()))?;
            delete::delete_objects(worker, conn, req, body, &target.bucket, signed).await
        }
        Op::CopyObject => copy::copy_object(worker, conn, req, &target.bucket, &target.key).await,
        Op::GetObjectAttributes => {
            attributes::get_object_attributes(worker, conn, req, &target.bucket, &target.key).await
        }
        Op::GetObjectPart => multipart::get_part(worker, conn, req, &target.bucket, &target.key).await,
        Op::UploadPartCopy => copy::upload_part_copy(worker, conn, req, &target.bucket, &target.key).await,
        Op::CreateMultipartUpload => multipart::create(worker, conn, req, &target.bucket, &target.key).await,
        Op::UploadPart | Op::CompleteMultipartUpload => {
            let signed = signed.ok_or(S3Error::Internal("a multipart write reached its handler unsigned".into()))?;
            if target.op == Op::UploadPart {
                multipart::upload_part(worker, conn, req, body, &target.bucket, &target.key, signed).await
            } else {
                multipart::complete(worker, conn, req, body, &target.bucket, &target.key, signed).await
            }
        }
        Op::AbortMultipartUpload => multipart::abort(worker, conn, req, &target.bucket, &target.key).await,
        Op::ListParts => multipart::list_parts(worker, conn, req, &target.bucket, &target.key).await,
        Op::ListMultipartUploads => multipart::list_uploads(worker, conn, req, &target.bucket).await,
        Op::ListBuckets | Op::CreateBucket => {
            Err(S3Error::Internal("a service operation routed past its handler".into()))
        }
        Op::DeleteBucket => bucket::delete(worker, conn, req, &target.bucket).await,
        Op::GetBucketLocation => {
            let body = xml::to_xml(&xml::LocationConstraint::for_region(&shared.config.s3.region));
            list::send_xml(worker, conn, req, body).await
        }
        Op::HeadBucket => {
            let keep_alive = req.keep_alive();
            reply::start(&mut conn.out, 200, &worker.date, req.id);
            reply::header(&mut conn.out, "x-amz-bucket-region", shared.config.s3.region.as_bytes());
            reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
            reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
            Ok(Disposition::after(conn.flush().await, keep_alive))
        }
    }
}
