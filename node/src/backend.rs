//! Requests to the shared store of record (`store.backend = "s3"`, see [`crate::sharedstore`]):
//! writing an object there, deleting it, and asking which version it holds.
//!
//! Writes go from a committed local record, never from a stream still arriving: the record was
//! verified (length, MD5, the client's checksums) before it is sent, and a single PUT with
//! `Content-MD5` is all-or-nothing in S3, so the shared store never holds a torn object and
//! needs no multipart upload to abort. The body is the record's mapped bytes, sent as they are.
//!
//! - A client's write (PutObject, CopyObject, CompleteMultipartUpload) is answered only once
//!   the shared store holds it ([`publish`]); if it cannot be written there, the local copy is
//!   dropped and the client gets 503 `ServiceUnavailable`: nothing changed anywhere.
//! - A mirror fill from the origin is written behind ([`upload_behind`]): its clients never wait
//!   for the shared store. Should the node die first, the shared store lacks the object and the
//!   next miss anywhere fetches it from the origin again, which still has it.
//! - A DeleteObject deletes in the shared store first ([`delete_object`]), then here.
//!
//! Each request goes to the endpoints in the key's order and moves to the next on a failure
//! (no answer, or 5xx), so a cluster node that is down costs a retry, not an error.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use edgemirror_cache::{ObjectKeyRef, StoredObject};

use crate::error::S3Error;
use crate::origin::{self, Method, Outgoing, Reach};
use crate::sharedstore::{Endpoint, SharedStoreConfig};
use crate::worker::Worker;

/// A shared store's answer: status, headers (names lower-cased), and the body when the request
/// kept it.
struct Answer {
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Vec<u8>,
}

/// Bytes of an answer's body kept for the log (an S3 error's XML) by requests that need no body.
const LOG_BODY_BYTES: usize = 512;

/// One request to the shared store, endpoint by endpoint in `bucket`/`key`'s order until one
/// answers below 500 with its whole body read. The body is kept up to `keep` bytes; a longer one
/// is a failure when `keep` is over [`LOG_BODY_BYTES`] (the caller needs all of it), else it is
/// cut.
async fn send(
    worker: &Worker,
    store: &SharedStoreConfig,
    object: ObjectKeyRef<'_>,
    method: Method,
    request: impl Fn(&Endpoint) -> (String, Vec<origin::HeaderPair>),
    body: Option<Bytes>,
    keep: usize,
) -> Result<Answer, String> {
    let (bucket, key) = (object.bucket, object.key);
    if !SharedStoreConfig::storable_key(key) {
        return Err(format!("the key {key:?} has a '.' or '..' segment: it cannot be named in the shared store"));
    }
    let config = worker.config();
    let mut failure = String::from("no endpoint");
    for endpoint in store.order(bucket, key) {
        let (path, headers) = request(endpoint);
        let head = origin::build_request(
            method,
            &path,
            endpoint.addr.host_header.as_bytes(),
            &headers,
            &worker.shared.via_token,
        );
        let outgoing = Outgoing { head, body: body.clone(), reach: Reach::Configured };
        worker.metrics().shared_requests.inc();
        let name = format!("{}://{}", endpoint.addr.scheme(), endpoint.addr.host_header);
        match origin::fetch(&endpoint.addr, method, outgoing, &config.origin, &worker.pool, &worker.shared.network)
            .await
        {
            Ok(mut resp) => {
                let status = resp.status;
                let kept: Vec<(String, Bytes)> = resp
                    .headers()
                    .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), Bytes::copy_from_slice(v)))
                    .collect();
                // The body is read whole, so the connection can be reused.
                let mut text = Vec::new();
                let mut broken = None;
                loop {
                    match resp.body.next().await {
                        Ok(Some(piece)) if text.len() + piece.len() <= keep => text.extend_from_slice(&piece),
                        Ok(Some(_)) if keep > LOG_BODY_BYTES => {
                            broken = Some(format!("an answer over {keep} bytes"));
                            break;
                        }
                        Ok(Some(piece)) => text.extend_from_slice(&piece[..keep.saturating_sub(text.len())]),
                        Ok(None) => break,
                        Err(e) => {
                            broken = Some(e.to_string());
                            break;
                        }
                    }
                }
                resp.body.release(&worker.pool);
                let shown = || String::from_utf8_lossy(&text[..text.len().min(LOG_BODY_BYTES)]).into_owned();
                match broken {
                    Some(e) if keep > LOG_BODY_BYTES => failure = format!("{name}: {e}"),
                    // A request that needs no body has its status, whatever became of the rest.
                    _ if status < 500 => {
                        if status >= 300 && status != 404 {
                            tracing::warn!(endpoint = %name, status, body = %shown(), "shared store refused a request");
                        }
                        return Ok(Answer { status, headers: kept, body: text });
                    }
                    _ => failure = format!("{name} answered {status}: {}", shown()),
                }
            }
            Err(e) => failure = format!("{name}: {e}"),
        }
        tracing::warn!(bucket, key, method = method.as_str(), failure, "shared store endpoint failed; trying the next");
    }
    Err(failure)
}

fn header<'a>(headers: &'a [(String, Bytes)], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
}

/// Writes the committed object `obj` to the shared store with one PUT: its saved headers, its
/// user metadata, its ETag ([`crate::sharedstore::own_meta_headers`]) and, for a single-part object, `Content-MD5`.
/// With `create_only`, the PUT carries `If-None-Match: *`: a store that takes conditional
/// writes keeps a version written meanwhile by anyone else (`Ok(false)`: not written).
pub async fn put_object(
    worker: &Worker,
    store: &SharedStoreConfig,
    obj: &StoredObject,
    create_only: bool,
) -> Result<bool, String> {
    use base64::Engine as _;
    let meta = &obj.meta;
    if meta.size > crate::sharedstore::MAX_PUT_BYTES {
        return Err(format!("{} bytes is more than a single PUT takes", meta.size));
    }
    let object = SharedStoreConfig::object_key(&meta.bucket, &meta.key);
    let etag = meta.etag();
    // Signed (S3 requires x-amz-* headers to be): the user metadata and the ETag.
    let mut signed: Vec<(String, String)> = meta
        .record
        .user
        .iter()
        .filter(|(name, _)| !crate::sharedstore::is_own_meta(name))
        .map(|(name, value)| (crate::sharedstore::meta_header(name), String::from_utf8_lossy(value).trim().to_string()))
        .collect();
    signed.extend(crate::sharedstore::own_meta_headers(meta));
    signed.sort();
    let mut plain: Vec<origin::HeaderPair> = vec![(b"Content-Length".to_vec(), meta.size.to_string().into_bytes())];
    if meta.record.parts == 0 {
        let md5 = base64::engine::general_purpose::STANDARD.encode(meta.md5);
        plain.push((b"Content-MD5".to_vec(), md5.into_bytes()));
    }
    if create_only {
        plain.push((b"If-None-Match".to_vec(), b"*".to_vec()));
    }
    for (h, value) in &meta.record.headers {
        plain.push((h.as_str().as_bytes().to_vec(), value.to_vec()));
    }
    let request = |endpoint: &Endpoint| {
        let pairs: Vec<(&str, &str)> = signed.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let path = endpoint.signer.signed_put_path(&object, &pairs);
        let mut headers = plain.clone();
        headers.extend(signed.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())));
        (path, headers)
    };
    let Answer { status, headers, .. } = send(
        worker,
        store,
        ObjectKeyRef::new(&meta.bucket, &meta.key),
        Method::Put,
        request,
        Some(obj.body.clone()),
        LOG_BODY_BYTES,
    )
    .await?;
    if create_only && status == 412 {
        return Ok(false);
    }
    if status != 200 {
        return Err(format!("PUT answered {status}"));
    }
    // What the shared store took must be what was sent: a single-part object's ETag is its MD5.
    if meta.record.parts == 0 {
        let stored = header(&headers, "etag").map(|e| String::from_utf8_lossy(e).trim().trim_matches('"').to_string());
        if stored.as_deref().is_some_and(|s| s != etag.trim_matches('"')) {
            return Err(format!("the shared store's ETag {stored:?} is not the object's {etag}"));
        }
    }
    Ok(true)
}

/// Deletes `bucket`/`key` in the shared store (absent already is fine, as in S3).
pub async fn delete_object(worker: &Worker, store: &SharedStoreConfig, bucket: &str, key: &str) -> Result<(), String> {
    let object = SharedStoreConfig::object_key(bucket, key);
    let request = |endpoint: &Endpoint| (endpoint.signer.signed_delete_path(&object), Vec::new());
    match send(worker, store, ObjectKeyRef::new(bucket, key), Method::Delete, request, None, LOG_BODY_BYTES)
        .await?
        .status
    {
        200 | 204 | 404 => Ok(()),
        status => Err(format!("DELETE answered {status}")),
    }
}

/// The ETag the shared store holds of `bucket`/`key` (the one every edge serves,
/// [`crate::sharedstore::version_tag`]), `None` when it holds none.
pub async fn head_version(
    worker: &Worker,
    store: &SharedStoreConfig,
    bucket: &str,
    key: &str,
) -> Result<Option<String>, String> {
    Ok(head_object(worker, store, bucket, key).await?.map(|held| held.etag))
}

/// What the shared store holds of `bucket`/`key`, `None` when it holds none.
pub async fn head_object(
    worker: &Worker,
    store: &SharedStoreConfig,
    bucket: &str,
    key: &str,
) -> Result<Option<crate::sharedstore::Held>, String> {
    let object = SharedStoreConfig::object_key(bucket, key);
    let request = |endpoint: &Endpoint| (endpoint.signer.signed_path(true, &object), Vec::new());
    let answer =
        send(worker, store, ObjectKeyRef::new(bucket, key), Method::Head, request, None, LOG_BODY_BYTES).await?;
    match (answer.status, answer.headers) {
        (200, headers) => {
            let text = |name: &str| header(&headers, name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim);
            let size = text("content-length").and_then(|v| v.parse().ok());
            let version = text(&crate::sharedstore::meta_header(crate::sharedstore::VERSION_META)).map(str::to_string);
            let etag = crate::sharedstore::version_tag(|name| header(&headers, name));
            Ok(etag.map(|etag| crate::sharedstore::Held { etag, version, size }))
        }
        (404, _) => Ok(None),
        (status, _) => Err(format!("HEAD answered {status}")),
    }
}

/// A client's write, committed here: written to the shared store before the client is answered.
/// If it cannot be, the local copy is dropped again (the key then reads from the shared store,
/// which still holds the previous version) and the client gets 503: nothing changed.
pub async fn publish(worker: &Worker, obj: &StoredObject) -> Result<(), S3Error> {
    let shared = &worker.shared;
    let Some(store) = &shared.shared_store else { return Ok(()) };
    let (bucket, key) = (&*obj.meta.bucket, &*obj.meta.key);
    let started = Instant::now();
    // Until it is there, this edge's reads keep the copy it just committed (a revalidation
    // would find the previous version and drop it).
    let mark = UploadMark::new(worker, bucket, key);
    let written = put_object(worker, store, obj, false).await;
    drop(mark);
    match written {
        Ok(_) => {
            worker.metrics().shared_writes.inc();
            shared.freshness.mark(bucket, key);
            tracing::debug!(bucket, key, ms = started.elapsed().as_millis() as u64, "written to the shared store");
            Ok(())
        }
        Err(reason) => {
            worker.metrics().shared_write_failures.inc();
            let okey = ObjectKeyRef::new(bucket, key);
            // Only this version: a later write of the key that already committed stays.
            if shared.store.version(okey) == Some(obj.meta.seq) {
                if let Err(e) = shared.store.delete(worker.id, okey) {
                    tracing::error!(bucket, key, error = %e, "could not drop the local copy of a write the shared store refused");
                }
            }
            shared.hot.remove(okey);
            shared.freshness.forget(bucket, key);
            Err(S3Error::SharedStoreUnavailable(format!("writing {bucket}/{key}: {reason}")))
        }
    }
}

/// This node's note that it is writing `bucket`/`key` to the shared store: while the mark
/// lives, the key's local copy counts as current here ([`Freshness::uploading`]). Dropping it
/// ends the note, however the write ended: done, failed, never begun (the commit failed), or
/// cut short (its future dropped, its task ended by a panic). A note left behind would have this
/// node trust its copy for ever, whatever other edges write.
///
/// [`Freshness::uploading`]: crate::sharedstore::Freshness::uploading
pub struct UploadMark {
    shared: std::sync::Arc<crate::worker::Shared>,
    bucket: Box<str>,
    key: Box<str>,
}

impl UploadMark {
    fn new(worker: &Worker, bucket: &str, key: &str) -> UploadMark {
        worker.shared.freshness.uploading(bucket, key, true);
        UploadMark { shared: worker.shared.clone(), bucket: bucket.into(), key: key.into() }
    }
}

impl Drop for UploadMark {
    fn drop(&mut self) {
        self.shared.freshness.uploading(&self.bucket, &self.key, false);
    }
}

/// Marks a mirror fill's copy from the origin as on its way to the shared store, before its
/// commit makes it visible: from then on the key counts as current here, so a hit (on any core)
/// before the upload ends does not ask the shared store, which lacks it yet, and drop it. After
/// the commit, [`upload_behind`] writes it, taking the mark; if the commit fails,
/// [`abandon_upload`].
pub fn begin_upload(worker: &Worker, bucket: &str, key: &str) -> UploadMark {
    worker.shared.freshness.mark(bucket, key);
    UploadMark::new(worker, bucket, key)
}

/// Undoes [`begin_upload`] for a copy whose commit failed.
pub fn abandon_upload(mark: UploadMark) {
    mark.shared.freshness.forget(&mark.bucket, &mark.key);
}

/// A mirror fill's object, just committed from the origin after [`begin_upload`]: written to
/// the shared store in the background (the fill's clients have their bytes already).
pub fn upload_behind(worker: &Rc<Worker>, obj: StoredObject, mark: UploadMark) {
    let Some(store) = worker.shared.shared_store.clone() else { return };
    let owned = worker.clone();
    crate::task::spawn(worker, "shared store upload", async move {
        let worker = owned;
        let (bucket, key) = (&*obj.meta.bucket, &*obj.meta.key);
        let freshness = &worker.shared.freshness;
        // Only what the shared store does not hold yet: a client's write through another edge
        // that landed while this fill ran must not be overwritten by the origin's copy (checked
        // here, and atomically by stores that take If-None-Match on PUT).
        let result = match head_version(&worker, &store, bucket, key).await {
            // These very bytes (another edge fetched and wrote them too).
            Ok(Some(tag)) if tag.eq_ignore_ascii_case(&obj.meta.etag()) => Ok(None),
            Ok(Some(_)) => Ok(Some(false)),
            Ok(None) => put_object(&worker, &store, &obj, true).await.map(Some),
            Err(e) => Err(e),
        };
        drop(mark);
        match result {
            Ok(None) => freshness.mark(bucket, key),
            Ok(Some(true)) => {
                worker.metrics().shared_writes.inc();
                freshness.mark(bucket, key);
            }
            // Another version is there: this copy is asked about at its next hit.
            Ok(Some(false)) => freshness.forget(bucket, key),
            Err(reason) => {
                // The local copy stays (its clients were served); the next revalidation finds the
                // shared store without it, and the key is fetched and written again.
                worker.metrics().shared_write_failures.inc();
                tracing::warn!(bucket, key, reason, "could not write a mirrored object to the shared store");
            }
        }
    });
}

/// Deletes `bucket`/`key` from the shared store, before the local delete: a failure is 503 and
/// nothing changed.
pub async fn delete_shared(worker: &Worker, bucket: &str, key: &str) -> Result<(), S3Error> {
    let Some(store) = &worker.shared.shared_store else { return Ok(()) };
    match delete_object(worker, store, bucket, key).await {
        Ok(()) => {
            worker.shared.freshness.forget(bucket, key);
            Ok(())
        }
        Err(reason) => {
            worker.metrics().shared_write_failures.inc();
            Err(S3Error::SharedStoreUnavailable(format!("deleting {bucket}/{key}: {reason}")))
        }
    }
}

/// One page of a listing of `bucket` from the shared store: its objects (keys without the
/// shared store's prefix), the rolled-up prefixes, and the last entry when the page is
/// truncated (the node's continuation token: the next page starts after it).
pub struct SharedPage {
    pub objects: Vec<edgemirror_proto::s3::xml::ListedObject>,
    pub prefixes: Vec<String>,
    pub next_after: Option<String>,
}

/// Lists `bucket` in the shared store: up to `max_keys` entries under `prefix` after `after`
/// (a key, or a rolled-up prefix whose keys are skipped), with `delimiter`.
pub async fn list_page(
    worker: &Worker,
    store: &SharedStoreConfig,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max_keys: usize,
) -> Result<SharedPage, S3Error> {
    if max_keys == 0 {
        return Ok(SharedPage { objects: Vec::new(), prefixes: Vec::new(), next_after: None });
    }
    let within = SharedStoreConfig::object_key(bucket, "");
    let full_prefix = format!("{within}{prefix}");
    // After a rolled-up prefix, start past every key under it (U+10FFFF sorts after any UTF-8
    // character).
    let start_after = after.map(|a| match delimiter {
        Some(d) if a.ends_with(d) => format!("{within}{a}\u{10FFFF}"),
        _ => format!("{within}{a}"),
    });
    let request = |endpoint: &Endpoint| {
        let path = endpoint.signer.signed_list_page(&full_prefix, delimiter, max_keys, None, start_after.as_deref());
        (path, Vec::new())
    };
    let answer = send(worker, store, ObjectKeyRef::new(bucket, ""), Method::Get, request, None, MAX_LISTING_BYTES)
        .await
        .map_err(|e| {
            worker.metrics().shared_unreachable.inc();
            S3Error::SharedStoreUnavailable(format!("listing {bucket}: {e}"))
        })?;
    if answer.status != 200 {
        worker.metrics().shared_unreachable.inc();
        let shown = String::from_utf8_lossy(&answer.body[..answer.body.len().min(LOG_BODY_BYTES)]).into_owned();
        return Err(S3Error::SharedStoreUnavailable(format!("listing {bucket}: answered {}: {shown}", answer.status)));
    }
    let page: edgemirror_proto::s3::xml::ListObjectsV2Result = edgemirror_proto::s3::xml::from_xml(&answer.body)
        .map_err(|e| S3Error::SharedStoreUnavailable(format!("listing {bucket}: unreadable: {}", e.as_str())))?;
    // Every endpoint's signer has the configured prefix.
    let store_prefix = store.endpoints[0].signer.prefix();
    // The listing is asked with `encoding-type=url` (rusty-s3 always does): names decoded.
    let strip = |name: &str| {
        // Form-encoded: AWS and MinIO send a space as '+' (a '+' itself is %2B).
        let name = name.replace('+', " ");
        let name = percent_encoding::percent_decode_str(&name).decode_utf8().ok()?;
        name.strip_prefix(store_prefix).and_then(|n| n.strip_prefix(&within)).map(str::to_string)
    };
    let objects: Vec<_> = page
        .contents
        .into_iter()
        .filter_map(|mut o| {
            o.key = strip(&o.key)?;
            Some(o)
        })
        .collect();
    let prefixes: Vec<String> = page.common_prefixes.into_iter().filter_map(|p| strip(&p.prefix)).collect();
    // The page's last entry, in key order (a prefix sorts where its keys would).
    let last = objects.last().map(|o| o.key.clone()).into_iter().chain(prefixes.last().cloned()).max();
    Ok(SharedPage { objects, prefixes, next_after: if page.is_truncated { last } else { None } })
}

/// The largest listing page read (1000 keys of up to 1 KiB and their fields fit well within).
const MAX_LISTING_BYTES: usize = 16 << 20;

/// Every key of `bucket` under `prefix` in the shared store, page by page.
pub async fn list_all_keys(
    worker: &Worker,
    store: &SharedStoreConfig,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, S3Error> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = list_page(worker, store, bucket, prefix, None, after.as_deref(), 1000).await?;
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Where a bucket made through S3 is recorded in the shared store, so every edge knows it: an
/// empty object under a name no bucket can have (bucket names start with a letter or digit).
pub const BUCKETS_DIR: &str = ".edgemirror-buckets";

/// Records bucket `name` in the shared store.
pub async fn put_bucket_marker(worker: &Worker, store: &SharedStoreConfig, name: &str) -> Result<(), String> {
    let object = SharedStoreConfig::object_key(BUCKETS_DIR, name);
    let request = |endpoint: &Endpoint| {
        (endpoint.signer.signed_put_path(&object, &[]), vec![(b"Content-Length".to_vec(), b"0".to_vec())])
    };
    match send(worker, store, ObjectKeyRef::new(BUCKETS_DIR, name), Method::Put, request, None, LOG_BODY_BYTES)
        .await?
        .status
    {
        200 => Ok(()),
        status => Err(format!("PUT of the bucket's record answered {status}")),
    }
}

/// Removes bucket `name`'s record from the shared store.
pub async fn delete_bucket_marker(worker: &Worker, store: &SharedStoreConfig, name: &str) -> Result<(), String> {
    delete_object(worker, store, BUCKETS_DIR, name).await
}

/// Whether bucket `name` is recorded in the shared store (made through S3 on some edge).
pub async fn bucket_marker_exists(worker: &Worker, store: &SharedStoreConfig, name: &str) -> Result<bool, String> {
    let object = SharedStoreConfig::object_key(BUCKETS_DIR, name);
    let request = |endpoint: &Endpoint| (endpoint.signer.signed_path(true, &object), Vec::new());
    match send(worker, store, ObjectKeyRef::new(BUCKETS_DIR, name), Method::Head, request, None, LOG_BODY_BYTES)
        .await?
        .status
    {
        200 => Ok(true),
        404 => Ok(false),
        status => Err(format!("HEAD of the bucket's record answered {status}")),
    }
}
