//! CreateBucket and DeleteBucket: buckets made and removed through S3, next to those the config
//! file declares ([`crate::buckets`] holds the table and its file).
//!
//! - CreateBucket (`PUT /{bucket}`): the name is checked by S3's rules, an optional
//!   `CreateBucketConfiguration` must name this node's region, and the bucket is persisted
//!   before it is answered 200. An existing name is 409 `BucketAlreadyOwnedByYou`, except in
//!   us-east-1, where S3's legacy answer is 200 and nothing changes.
//! - DeleteBucket (`DELETE /{bucket}`): 204 when the bucket holds no object; its unfinished
//!   multipart uploads are aborted and its mirror rules dropped. 409 `BucketNotEmpty` otherwise;
//!   a bucket of the config file is refused (403): edit the file instead.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use edgemirror_cache::ObjectKeyRef;
use std::time::SystemTime;

use edgemirror_proto::s3::xml::{self, CreateBucketConfiguration};

use crate::body::RequestBody;
use crate::buckets::Refusal;
use crate::error::S3Error;
use crate::reply::{self, Framing};
use crate::respond::{Conn, Disposition, Request};
use crate::rules;
use crate::worker::Worker;

use super::auth::Signed;
use super::delete::read_xml_body;
use super::multipart;

pub async fn create(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    body: &mut RequestBody,
    bucket: &str,
    signed: Signed,
) -> Result<Disposition, S3Error> {
    crate::config::validate_bucket_name(bucket).map_err(S3Error::InvalidBucketName)?;
    let bytes = read_xml_body(conn, req, body, &signed).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let conf: CreateBucketConfiguration = xml::from_xml(&bytes).map_err(|e| S3Error::MalformedXml(e.as_str()))?;
        let region = &req.config.s3.region;
        // An absent or empty constraint means us-east-1, which any region accepts as "here"
        // only when it is ours.
        let asked = conf.location_constraint.filter(|c| !c.is_empty()).unwrap_or_else(|| "us-east-1".into());
        if asked != *region {
            return Err(S3Error::InvalidLocationConstraint);
        }
    }
    let shared = &worker.shared;
    let region = &req.config.s3.region;
    if let Some(store) = &shared.shared_store {
        // Recorded in the shared store first, so every edge learns of it.
        crate::backend::put_bucket_marker(worker, store, bucket)
            .await
            .map_err(|e| S3Error::SharedStoreUnavailable(format!("recording bucket {bucket}: {e}")))?;
        shared.freshness.mark(BUCKET_SEEN, bucket);
        shared.freshness.forget(BUCKET_ABSENT, bucket);
    }
    let created = {
        let _guard = shared.buckets_update.lock().unwrap_or_else(|e| e.into_inner());
        match shared.buckets.load().with_created(bucket, SystemTime::now()) {
            Ok(next) => {
                next.persist(&req.config.store.dir)
                    .map_err(|e| S3Error::Internal(format!("saving buckets.json: {e}")))?;
                shared.buckets.store(Arc::new(next));
                true
            }
            // S3 keeps a legacy answer in us-east-1: creating a bucket you already own succeeds
            // and changes nothing. Elsewhere it is 409.
            Err(_) if region == "us-east-1" => false,
            Err(_) => return Err(S3Error::BucketAlreadyOwnedByYou),
        }
    };
    if created {
        tracing::info!(bucket, request_id = %req.id, "bucket created");
    }
    let keep_alive = req.keep_alive();
    reply::start(&mut conn.out, 200, &worker.date, req.id);
    reply::header(&mut conn.out, "Location", format!("/{bucket}").as_bytes());
    reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
    reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

pub async fn delete(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    // Over a shared store of record, emptiness is the shared store's (this edge's copies are a
    // cache). Checked before the flag: a write through another edge in between is not seen.
    if let Some(store) = &shared.shared_store {
        if shared.bucket(bucket).is_none() {
            return Err(S3Error::NoSuchBucket);
        }
        let page = crate::backend::list_page(worker, store, bucket, "", None, None, 1).await?;
        if !page.objects.is_empty() {
            return Err(S3Error::BucketNotEmpty);
        }
        if shared.buckets.load().get(bucket).is_some_and(|b| !b.declared) {
            crate::backend::delete_bucket_marker(worker, store, bucket)
                .await
                .map_err(|e| S3Error::SharedStoreUnavailable(format!("removing bucket {bucket}'s record: {e}")))?;
            shared.freshness.forget(BUCKET_SEEN, bucket);
        }
    }
    {
        let _guard = shared.buckets_update.lock().unwrap_or_else(|e| e.into_inner());
        let table = shared.buckets.load();
        let next = match table.without(bucket) {
            Ok(next) => next,
            Err(Refusal::Declared) => {
                return Err(S3Error::AccessDenied(
                    "this bucket is declared in the config file ([[buckets]]); remove it there and restart",
                ))
            }
            Err(Refusal::NoSuchBucket) | Err(Refusal::AlreadyExists) => return Err(S3Error::NoSuchBucket),
        };
        // Flag first, then look: a write in flight either committed before the flag (and is
        // seen here) or is refused at its commit. Lowered again if the bucket stays.
        let deleting = &table.get(bucket).ok_or(S3Error::NoSuchBucket)?.deleting;
        deleting.store(true, Ordering::SeqCst);
        let stays = |e: S3Error| {
            deleting.store(false, Ordering::SeqCst);
            e
        };
        if shared.shared_store.is_none() && !shared.store.list(bucket, "", None, None, 1).objects.is_empty() {
            return Err(stays(S3Error::BucketNotEmpty));
        }
        next.persist(&req.config.store.dir)
            .map_err(|e| stays(S3Error::Internal(format!("saving buckets.json: {e}"))))?;
        shared.buckets.store(Arc::new(next));
    }
    forget_bucket(worker, bucket, &req.config.store.dir);
    tracing::info!(bucket, request_id = %req.id, "bucket deleted");
    super::list::send_no_content(worker, conn, req).await
}

/// What goes with a bucket once it has left the table: its unfinished multipart uploads, its
/// mirror rules and, over a shared store, this edge's cached copies of its objects (so a bucket
/// made again under the name starts empty here too).
fn forget_bucket(worker: &Worker, bucket: &str, store_dir: &std::path::Path) {
    let shared = &worker.shared;
    multipart::abort_bucket_uploads(worker, bucket);
    if shared.shared_store.is_some() {
        // Cached copies of objects deleted through other edges: gone with the bucket, so a
        // bucket made again under this name starts empty here too.
        for key in shared.store.keys_with_prefix(bucket, "") {
            let okey = ObjectKeyRef::new(bucket, &key.key);
            if let Err(e) = shared.store.delete(worker.id, okey) {
                tracing::warn!(bucket, key = %key.key, error = %e, "could not drop a cached copy of a deleted bucket");
            }
            shared.hot.remove(okey);
            shared.freshness.forget(bucket, &key.key);
        }
    }
    {
        let _guard = shared.rules_update.lock().unwrap_or_else(|e| e.into_inner());
        let table = shared.rules.load();
        if table.rules(bucket).is_some() {
            let next = table.without_bucket(bucket);
            if let Err(e) = rules::persist(store_dir, &next) {
                tracing::error!(bucket, error = %e, "cannot persist the mirror rules of a deleted bucket");
            }
            shared.rules.store(Arc::new(next));
        }
    }
}

/// Namespaces of [`crate::sharedstore::Freshness`] for buckets: one seen recorded in the shared
/// store lately, one found absent there lately.
const BUCKET_SEEN: &str = ".bucket";
const BUCKET_ABSENT: &str = ".no-bucket";

/// Over a shared store of record, brings this edge's table up to date for bucket `name` before
/// a request to it: a bucket made through S3 on another edge (recorded in the shared store) is
/// adopted here, one deleted through another edge is dropped here, each within
/// `store.s3.staleness_ms`. Buckets of the config file are left alone. When the shared store
/// does not answer, the table stays as it is.
pub async fn sync_with_shared(worker: &Worker, name: &str) {
    let shared = &worker.shared;
    let Some(store) = &shared.shared_store else { return };
    let known = shared.buckets.load().get(name).map(|b| b.declared);
    let within = store.staleness;
    match known {
        Some(true) => {}
        Some(false) if shared.freshness.is_fresh(BUCKET_SEEN, name, within) => {}
        None if shared.freshness.is_fresh(BUCKET_ABSENT, name, within) => {}
        None if crate::config::validate_bucket_name(name).is_err() => {}
        _ => match crate::backend::bucket_marker_exists(worker, store, name).await {
            Ok(true) => {
                shared.freshness.mark(BUCKET_SEEN, name);
                shared.freshness.forget(BUCKET_ABSENT, name);
                if known.is_none() {
                    adopt(worker, name);
                }
            }
            Ok(false) => {
                shared.freshness.mark(BUCKET_ABSENT, name);
                if known == Some(false) {
                    drop_bucket(worker, name);
                }
            }
            Err(e) => {
                tracing::warn!(bucket = name, error = e, "the shared store did not say whether the bucket exists")
            }
        },
    }
}

/// Over a shared store of record, brings this edge's whole table up to date (for ListBuckets):
/// every bucket recorded there is adopted, every bucket made through S3 that is no longer
/// recorded there is dropped. When the shared store does not answer, the table stays.
pub async fn sync_all_with_shared(worker: &Worker) {
    let shared = &worker.shared;
    let Some(store) = &shared.shared_store else { return };
    let recorded: std::collections::BTreeSet<String> =
        match crate::backend::list_all_keys(worker, store, crate::backend::BUCKETS_DIR, "").await {
            Ok(names) => names.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = ?e, "the shared store did not list the buckets");
                return;
            }
        };
    let table = shared.buckets.load_full();
    for name in &recorded {
        shared.freshness.mark(BUCKET_SEEN, name);
        if table.get(name).is_none() && crate::config::validate_bucket_name(name).is_ok() {
            adopt(worker, name);
        }
    }
    for bucket in table.iter().filter(|b| !b.declared && !recorded.contains(&b.config.name)) {
        drop_bucket(worker, &bucket.config.name);
    }
}

/// Adds bucket `name`, made through another edge, to this edge's table.
fn adopt(worker: &Worker, name: &str) {
    let shared = &worker.shared;
    let dir = shared.config().store.dir.clone();
    let _guard = shared.buckets_update.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(next) = shared.buckets.load().with_created(name, SystemTime::now()) {
        if let Err(e) = next.persist(&dir) {
            tracing::error!(bucket = name, error = %e, "cannot save buckets.json");
            return;
        }
        shared.buckets.store(Arc::new(next));
        tracing::info!(bucket = name, "bucket made through another edge adopted");
    }
}

/// Drops bucket `name`, deleted through another edge, from this edge's table.
fn drop_bucket(worker: &Worker, name: &str) {
    let shared = &worker.shared;
    let dir = shared.config().store.dir.clone();
    {
        let _guard = shared.buckets_update.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(next) = shared.buckets.load().without(name) else { return };
        if let Err(e) = next.persist(&dir) {
            tracing::error!(bucket = name, error = %e, "cannot save buckets.json");
            return;
        }
        shared.buckets.store(Arc::new(next));
    }
    forget_bucket(worker, name, &dir);
    tracing::info!(bucket = name, "bucket deleted through another edge dropped");
}
