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
use std::time::{Instant, SystemTime};

use crate::accesslog::Entry;
use crate::body::RequestBody;
use crate::error::S3Error;
use crate::object;
use crate::reply::{self, Framing, RequestId};
use crate::respond::{Conn, Disposition, Request};
use crate::route::{self, Op};
use crate::worker::Worker;
use edgemirror_proto::s3::xml;

/// Answers one request; returns whether the connection may continue. The answer is recorded
/// ([`record`]) in the request metrics and the access log.
pub async fn handle(worker: &Rc<Worker>, conn: &mut Conn, req: &Request<'_>, body: &mut RequestBody) -> Disposition {
    if req.is_head()
        && req.head.path.get(req.buf) == b"/"
        && worker.shared.fleet.is_peer_request(req.header(crate::fleet::PEER_HEADER))
    {
        // A fleet peer's probe (`fleet.rs`): answered, not counted nor logged as a request.
        let keep_alive = req.keep_alive();
        reply::start(&mut conn.out, 200, &worker.date, req.id);
        reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
        return Disposition::after(conn.flush().await, keep_alive);
    }
    worker.metrics().requests.inc();
    let keep_alive = req.keep_alive();
    let (target, result) = match route::route(req, &req.config.s3.domain) {
        Ok(target) => {
            let r = serve(worker, conn, req, body, &target).await;
            (Some(target), r)
        }
        Err(e) => (None, Err(e)),
    };
    let disposition = match result {
        Ok(d) => d,
        Err(err) => {
            match &err {
                S3Error::Internal(reason) => tracing::error!(request_id = %req.id, reason, "internal error"),
                // The origin's reason is kept from the client (it may name internal hosts) but an
                // operator needs it: 424s are logged with it.
                S3Error::MirrorFailed(reason) => tracing::warn!(request_id = %req.id, reason, "424 mirror failed"),
                S3Error::StoreFull(reason) => tracing::warn!(request_id = %req.id, reason, "507 store full"),
                S3Error::SharedStoreUnavailable(reason) => {
                    tracing::warn!(request_id = %req.id, reason, "503 shared store unavailable")
                }
                _ => {}
            }
            let key = target.as_ref().map(|t| &*t.key).filter(|k| !k.is_empty());
            conn.tally.source = err.source();
            reply::error(&mut conn.out, &err, key, &worker.date, req.id, keep_alive, req.is_head());
            Disposition::after(conn.flush().await, keep_alive && !err.closes_connection())
        }
    };
    record(worker, conn, req.id, Some(req), target.as_ref());
    disposition
}

/// Records the request just answered on `conn` (its tally) in the request metrics and, when
/// it is on, the access log. `req` is `None` for a request that never parsed. A request answered with nothing (the client went away first) is status 499, as nginx
/// logs it.
pub fn record(
    worker: &Worker,
    conn: &Conn,
    id: RequestId,
    req: Option<&Request<'_>>,
    target: Option<&route::Target<'_>>,
) {
    let tally = &conn.tally;
    let now = Instant::now();
    let duration = now.saturating_duration_since(tally.started);
    let ttfb = tally.first_byte.map(|t| t.saturating_duration_since(tally.started));
    let status = if tally.status == 0 { 499 } else { tally.status };
    let method = req.map_or("-", |r| r.head.method.as_str());
    if let Some(stats) = worker.metrics().worker(worker.id) {
        stats.observe(method, status, tally.source, duration, ttfb, tally.sent);
    }
    let Some(log) = &worker.shared.access_log else { return };
    let header = |name: &str| req.and_then(|r| r.header(name));
    let origin = tally.origin.as_ref();
    let entry = Entry {
        time: SystemTime::now(),
        request_id: id,
        client: conn.peer,
        method,
        bucket: target.map(|t| &*t.bucket).filter(|b| !b.is_empty()),
        key: target.map(|t| &*t.key).filter(|k| !k.is_empty()),
        status,
        bytes: tally.sent,
        duration,
        ttfb,
        source: tally.source.as_str(),
        origin_url: origin.map(|o| o.url.as_str()),
        origin_status: origin.and_then(|o| o.status),
        origin_time: origin.map(|o| o.elapsed),
        s3_op: target.map_or("-", |t| t.op.as_str()),
        access_key: tally.access_key.as_deref(),
        user_agent: header("user-agent"),
        referer: header("referer"),
        path: req.map_or(&b"-"[..], |r| r.head.path.get(r.buf)),
        query: req.and_then(|r| r.query()),
    };
    log.record(worker.id, &entry);
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
        conn.tally.access_key = Some(auth::authorize(req)?.access_key);
        bucket::sync_all_with_shared(worker).await;
        return list::list_buckets(worker, conn, req).await;
    }
    if target.op == Op::CreateBucket {
        let signed = auth::authorize(req)?;
        conn.tally.access_key = Some(signed.access_key.clone());
        return bucket::create(worker, conn, req, body, &target.bucket, signed).await;
    }
    // Over a shared store, a key with a dot segment cannot be named there (a URL resolves it
    // away, into another bucket's objects): refused before anything is asked of it.
    if shared.shared_store.is_some() && !crate::sharedstore::SharedStoreConfig::storable_key(&target.key) {
        return Err(S3Error::InvalidRequest(
            "the key has a '.' or '..' path segment; it cannot be stored in the shared store",
        ));
    }
    // Over a shared store, buckets made or deleted through other edges are taken in first. A
    // name this edge does not know is asked about only for a signed request: anonymous ones
    // cannot make it query the shared store for any name they like (and buckets made through
    // S3 are not public anyway).
    if shared.shared_store.is_some()
        && (shared.buckets.load().get(&target.bucket).is_some() || auth::authorize(req).is_ok())
    {
        bucket::sync_with_shared(worker, &target.bucket).await;
    }
    // A borrow of the table snapshot, not a clone of the bucket: no shared refcount per request.
    let Some(public_read) = shared.buckets.load().get(&target.bucket).map(|b| b.config.public_read) else {
        // Who may learn which buckets exist: a signed request, or anyone for public reads.
        if target.op.needs_signature() {
            auth::authorize(req)?;
        }
        return Err(S3Error::NoSuchBucket);
    };
    // A fleet peer asking for an object on a miss of its own is trusted with private buckets.
    let peer_read = matches!(target.op, Op::GetObject | Op::HeadObject)
        && shared.fleet.is_peer_request(req.header(crate::fleet::PEER_HEADER));
    let signed =
        if target.op.needs_signature() || (!public_read && !peer_read) { Some(auth::authorize(req)?) } else { None };
    if let Some(s) = &signed {
        conn.tally.access_key = Some(s.access_key.clone());
    }
    match target.op {
        Op::GetObject | Op::HeadObject => {
            if reply::Overrides::asked(req.query()) && signed.is_none() {
                // A public read needs no signature, but S3 takes response-* overrides only
                // from a signed request: check the one it carries (an anonymous one is refused).
                auth::authorize(req)?;
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
            let body = xml::to_xml(&xml::LocationConstraint::for_region(&req.config.s3.region));
            list::send_xml(worker, conn, req, body).await
        }
        Op::HeadBucket => {
            let keep_alive = req.keep_alive();
            reply::start(&mut conn.out, 200, &worker.date, req.id);
            reply::header(&mut conn.out, "x-amz-bucket-region", req.config.s3.region.as_bytes());
            reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
            reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
            Ok(Disposition::after(conn.flush().await, keep_alive))
        }
    }
}
