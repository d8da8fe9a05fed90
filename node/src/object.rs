//! The object handlers: `GET` and `HEAD /{bucket}/{key}` (S3 path-style addressing).
//!
//! Lookup order, fastest tier first: foyer memory -> foyer disk -> segment store. A store hit is
//! copied into foyer for next time (unless it goes out with `sendfile`: then the page cache is
//! its memory tier), and answered by [`crate::stored`]. A GET that misses
//! everywhere goes to the bucket's first matching mirror rule; with no rule it is a 404
//! `NoSuchKey`. A HEAD never triggers a download (SDK existence checks must not): it asks the
//! origin with HEAD and passes its answer on, storing nothing, unless the matching rule opts in
//! with `mirrorHead` (then a HEAD mirrors the object like a GET).
//!
//! A miss ([`serve_miss`]) joins the fill in flight for its key, on any core, or leads a new
//! one: [`crate::mirror`] turns the rule into the origin request, [`crate::fill`] starts the
//! producer task, and every client, the leader included, follows the record
//! ([`crate::follow`]).

use std::rc::Rc;

use bytes::Bytes;
use edgemirror_cache::{ObjectKeyRef, ObjectMeta, SavedHeader};

use crate::error::S3Error;
use crate::inflight::Join;
use crate::metrics::Source;
use crate::origin;
use crate::reply;
use crate::reply::RequestId;
use crate::respond::{Conn, Disposition, Request};
use crate::rules::{self, MirrorRule};
use crate::sharedstore::SharedStoreConfig;
use crate::upstream::{self, Upstream};
use crate::worker::Worker;
use crate::{fill, follow, mirror, stored};

/// Answers a GET or HEAD of `bucket`/`key` (the bucket exists: the caller checked).
pub async fn serve(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    let okey = ObjectKeyRef::new(bucket, key);

    // A cached copy is served only while it is the key's current version: a purge, a delete or
    // an overwrite makes it stale at once (also a copy the disk tier kept across a restart).
    let hot = match shared.hot.get(okey).await {
        Some((obj, _)) if shared.store.version(okey) != Some(obj.meta.seq) => {
            shared.hot.remove(okey);
            None
        }
        hit => hit,
    };
    // Over a shared store, a copy not found current there lately is checked first.
    let hot = match (hot, &shared.shared_store) {
        (Some((obj, tier)), Some(store)) => is_current(worker, store, &obj.meta).await.then_some((obj, tier)),
        (hot, _) => hot,
    };
    if let Some((obj, tier)) = hot {
        match tier {
            edgemirror_cache::HotTier::Memory => worker.metrics().hits_memory.inc(),
            edgemirror_cache::HotTier::Disk => worker.metrics().hits_disk_cache.inc(),
        }
        return stored::send_stored(worker, conn, req, &obj.meta, obj.body, tier.into()).await;
    }
    let found = if req.config.cold_reads_async {
        // What is not in memory is read here with io_uring (`stored::read_cold`, and for a big
        // body `stored::send_body`), not by page faults. A HEAD needs the record's head and
        // trailer only.
        let max_body = if req.is_head() { 0 } else { stored::COLD_READ_MAX_BODY };
        let cold = stored::read_cold(worker, okey, max_body).await;
        shared.store.lookup_read(okey, cold.as_ref().map(|(spans, read)| (spans, read))).await
    } else {
        shared.store.lookup(okey).await
    };
    let found = match (found, &shared.shared_store) {
        (Ok(Some(obj)), Some(store)) if !is_current(worker, store, &obj.meta).await => Ok(None),
        (found, _) => found,
    };
    match found {
        Ok(Some(obj)) => {
            worker.metrics().hits_store.inc();
            // An object sent with `sendfile` has the page cache as its memory tier.
            if !stored::sends_from_file(req.config, conn, obj.meta.size) {
                shared.hot.insert(&obj);
            }
            return stored::send_stored(worker, conn, req, &obj.meta, obj.body, Source::Store).await;
        }
        Ok(None) => {}
        // A damaged record was dropped from the index: fetch the object again if a rule allows.
        Err(e) => tracing::error!(request_id = %req.id, bucket, key, error = %e, "stored object failed its check"),
    }

    // The table is loaded once per miss; an admin update swaps in a new one for later requests.
    let table = shared.rules.load_full();
    let rule = table.rules(bucket).and_then(|b| rules::match_rule(&b.rules, key));
    if let Some(store) = &shared.shared_store {
        // The shared store of record holds every object written through any node; a key it
        // lacks goes on to the rule, if one covers it.
        let plans = mirror::shared_plans(store, bucket, key, req.id);
        if req.is_head() && rule.is_none_or(|r| !r.mirror_head) {
            match upstream::shared_answer(worker, &plans, origin::Method::Head).await {
                upstream::SharedAnswer::Found(resp, url, _) => {
                    return pass_head(worker, conn, req, okey, *resp, &url, true).await
                }
                upstream::SharedAnswer::Absent => {}
                upstream::SharedAnswer::Unreachable(reason) => {
                    worker.metrics().shared_unreachable.inc();
                    if rule.is_none() {
                        return Err(S3Error::SharedStoreUnavailable(reason));
                    }
                }
            }
        } else if rule.is_none() {
            return serve_miss(worker, conn, req, okey, None, shared_only_plan(store, okey, req.id)?).await;
        }
    }
    let Some(rule) = rule else {
        worker.metrics().misses_no_rule.inc();
        return Err(S3Error::NoSuchKey);
    };
    if req.header("via").is_some_and(|v| contains(v, shared.via_token.as_bytes())) {
        // We are our own origin (a rule whose host name resolves to this node): stop here.
        worker.metrics().origin_failures.inc();
        return Err(S3Error::MirrorFailed("mirror loop: the request came from this node".into()));
    }
    if shared.shared_store.is_none() && shared.negative.is_missing(okey) {
        // The origin said 404 for this key less than origin.negative_ttl_ms ago. (Over a shared
        // store the fill asks the shared store first, then looks here.)
        return Err(S3Error::NoSuchKeyAtOrigin);
    }
    if req.is_head() && !rule.mirror_head {
        if let Some(fill) = shared.fills.in_flight(okey).filter(|f| f.is_verified()) {
            // Its body is whole (a client may have all of it and be asking about it): the
            // answer is what it stores, not the origin's.
            fill.ended().await;
            if shared.store.contains(okey) {
                return stored::serve_from_store(worker, conn, req, okey).await;
            }
        }
        if shared.negative.is_missing(okey) {
            return Err(S3Error::NoSuchKeyAtOrigin);
        }
        return head_at_origin(worker, conn, req, okey, rule).await;
    }
    mirror::fetchable_key(rule, key)?;
    // The origin request itself is built by the leader only (below, in `serve_miss`).
    let mut plan = mirror::plan(rule, key, req)?;
    if let Some(store) = &shared.shared_store {
        plan.shared = mirror::shared_plans(store, bucket, key, req.id);
    }
    serve_miss(worker, conn, req, okey, Some(rule), plan).await
}

/// A fill's plan for a key no rule covers: the shared store is the only place to look.
fn shared_only_plan(
    store: &SharedStoreConfig,
    key: ObjectKeyRef<'_>,
    rid: RequestId,
) -> Result<mirror::FetchPlan, S3Error> {
    let plans = mirror::shared_plans(store, key.bucket, key.key, rid);
    let mut plan = plans.first().cloned().ok_or(S3Error::InvalidRequest(
        "the key has a '.' or '..' path segment; it cannot be read from the shared store",
    ))?;
    plan.shared = plans;
    Ok(plan)
}

/// The object as this edge holds it, made current first over a shared store of record: the
/// local copy while the shared store holds that version, else read from the shared store into
/// the local store (a fill, coalesced with any in flight for the key) and waited for. `None`:
/// there is no such object. What a copy reads its source with.
pub async fn current_copy(
    worker: &Rc<Worker>,
    key: ObjectKeyRef<'_>,
    rid: RequestId,
) -> Result<Option<edgemirror_cache::StoredObject>, S3Error> {
    let shared = &worker.shared;
    let local = shared.store.lookup(key).await?;
    let Some(store) = &shared.shared_store else { return Ok(local) };
    if let Some(obj) = local {
        if is_current(worker, store, &obj.meta).await {
            return Ok(Some(obj));
        }
    }
    loop {
        match shared.fills.join(key, &shared.store) {
            Join::Stored => return Ok(shared.store.lookup(key).await?),
            Join::Follow(fill) => fill.ended().await,
            Join::Lead(guard) => {
                let fill = guard.fill().clone();
                let plan = match shared_only_plan(store, key, rid) {
                    Ok(plan) => plan,
                    Err(e) => {
                        guard.finish(crate::inflight::Phase::Refused(crate::inflight::Refusal::NotFound));
                        return Err(e);
                    }
                };
                let mut phase = fill.subscribe();
                fill::spawn(worker, guard, plan);
                if let Some(crate::inflight::Phase::Refused(crate::inflight::Refusal::Unavailable(reason))) =
                    crate::inflight::final_phase(&mut phase).await
                {
                    return Err(S3Error::SharedStoreUnavailable(reason));
                }
                return Ok(shared.store.lookup(key).await?);
            }
        }
    }
}

/// Over a shared store of record: whether the local copy `meta` is the shared store's current
/// version. Asked with HEAD only when the copy was last found current longer ago than
/// `store.s3.staleness_ms`, and by one request at a time: hits that arrive while it is asked
/// are served the copy (so the bound is the staleness plus one HEAD). A copy that is not
/// current is dropped (the caller reads the key afresh). When the shared store does not
/// answer, the copy is served (stale rather than an error) and the next hit asks again.
async fn is_current(worker: &Worker, store: &SharedStoreConfig, meta: &ObjectMeta) -> bool {
    let shared = &worker.shared;
    let (bucket, key) = (&*meta.bucket, &*meta.key);
    // Fresh, or being written to the shared store by this edge right now (a client's write
    // or a fill's write behind).
    if shared.freshness.trusted(bucket, key, store.staleness) {
        return true;
    }
    let Some(_claim) = shared.freshness.revalidate(bucket, key) else { return true };
    worker.metrics().shared_revalidations.inc();
    match crate::backend::head_object(worker, store, bucket, key).await {
        Ok(Some(held)) if crate::sharedstore::same_version(meta, &held) => {
            shared.freshness.mark(bucket, key);
            true
        }
        Ok(_) => {
            worker.metrics().shared_stale.inc();
            let okey = ObjectKeyRef::new(bucket, key);
            // Only this version goes: a newer one committed meanwhile stays.
            if shared.store.version(okey) == Some(meta.seq) {
                if let Err(e) = shared.store.delete(worker.id, okey) {
                    tracing::warn!(bucket, key, error = %e, "could not drop a local copy the shared store replaced");
                }
            }
            shared.hot.remove(okey);
            false
        }
        Err(reason) => {
            worker.metrics().shared_unreachable.inc();
            tracing::warn!(
                bucket,
                key,
                reason,
                "the shared store did not answer a revalidation; serving the local copy"
            );
            // Asked again after another staleness period, not by every hit meanwhile (each
            // would wait out the timeouts of every endpoint).
            shared.freshness.mark(bucket, key);
            true
        }
    }
}

/// A HEAD of an object not stored yet, under a rule without `mirrorHead`: the origin is asked
/// with HEAD (same rule, headers and redirects as a GET) and its answer passed on; nothing is
/// stored. So an SDK's HEAD-then-GET (boto3's `download_file`) works during a migration without
/// the HEAD triggering a download.
async fn head_at_origin(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    okey: ObjectKeyRef<'_>,
    rule: &MirrorRule,
) -> Result<Disposition, S3Error> {
    let key = okey.key;
    let plan = mirror::plan(rule, key, req)?;
    worker.metrics().origin_heads.inc();
    let mut asked = std::time::Instant::now();
    // In a fleet, the key's owner first: once it holds the object, a HEAD (boto3's
    // download_file asks one before its GET) costs the origin nothing.
    let mut used = &plan;
    let peers = peer_route(worker, rule, req, okey);
    let exchanged = match &peers {
        Some(peers) => {
            match upstream::peer_answer(worker, upstream::exchange(worker, peers, origin::Method::Head).await) {
                Ok(answered) => {
                    used = peers;
                    answered
                }
                Err(reason) => {
                    tracing::warn!(request_id = %req.id, reason, "no fleet peer answered the HEAD; asking the origin");
                    asked = std::time::Instant::now();
                    upstream::exchange(worker, &plan, origin::Method::Head).await
                }
            }
        }
        None => upstream::exchange(worker, &plan, origin::Method::Head).await,
    };
    let fetch = upstream::outcome(used, &exchanged, asked.elapsed());
    worker.metrics().origins.observe(&fetch);
    conn.tally.origin = Some(fetch);
    conn.tally.source = Source::Origin;
    let (resp, url) = match exchanged {
        Ok(r) => r,
        Err(Upstream::Failed(reason)) => return Err(S3Error::MirrorFailed(reason)),
        Err(Upstream::Redirect { status, location }) => {
            return follow::pass_redirect(worker, conn, req, status, &location).await;
        }
    };
    pass_head(worker, conn, req, okey, resp, &url, false).await
}

/// Answers a HEAD with an upstream's answer to it, storing nothing: the origin's (`head_at_origin`)
/// or, `from_shared`, the shared store's (then with the object's user metadata, and the ETag
/// every node serves for it).
async fn pass_head(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    okey: ObjectKeyRef<'_>,
    resp: origin::OriginResponse,
    url: &str,
    from_shared: bool,
) -> Result<Disposition, S3Error> {
    let status = resp.status;
    // A HEAD response has no body: its framing says nothing, its Content-Length is the object's.
    let length = resp.header("content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let head = UpstreamHead::of(&resp, from_shared);
    resp.body.release(&worker.pool);
    match status {
        200 => {}
        404 => {
            worker.shared.negative.remember(okey);
            return Err(S3Error::NoSuchKeyAtOrigin);
        }
        other => {
            tracing::warn!(request_id = %req.id, origin = %upstream::redact_url(url), status = other, "origin answered a HEAD with a non-200 status");
            return Err(S3Error::MirrorFailed(format!("origin status {other} to HEAD")));
        }
    }
    let keep_alive = req.keep_alive();
    let out = &mut conn.out;
    reply::start(out, 200, &worker.date, req.id);
    head.write(out);
    reply::finish(out, length.map_or(reply::Framing::NoBody, reply::Framing::Length), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// The headers of an object answered from an upstream's head: the saved ones, the validators,
/// the user metadata (from the shared store) and where it came from.
struct UpstreamHead {
    saved: Vec<(SavedHeader, Bytes)>,
    etag: Option<Bytes>,
    last_modified: Option<Bytes>,
    user: Vec<(String, Bytes)>,
    from_shared: bool,
}

impl UpstreamHead {
    /// From an origin's answer (the seed's five saved headers and its validators) or, with
    /// `from_shared`, the shared store's (what an upload keeps, the user metadata, and the ETag
    /// and Last-Modified the writing edge served).
    fn of(resp: &origin::OriginResponse, from_shared: bool) -> UpstreamHead {
        let saved = resp
            .headers()
            .filter_map(|(name, value)| {
                let h = if from_shared { SavedHeader::uploaded_from_name(name) } else { SavedHeader::from_name(name) };
                h.map(|h| (h, Bytes::copy_from_slice(value)))
            })
            .collect();
        if !from_shared {
            return UpstreamHead {
                saved,
                etag: resp.header("etag").map(Bytes::copy_from_slice),
                last_modified: resp.header("last-modified").map(|v| Bytes::copy_from_slice(v.trim_ascii())),
                user: Vec::new(),
                from_shared,
            };
        }
        let own = crate::sharedstore::meta_header(crate::sharedstore::LAST_MODIFIED_META);
        let user = resp
            .headers()
            .filter_map(|(name, value)| {
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                let user = name.strip_prefix("x-amz-meta-")?;
                (!crate::sharedstore::is_own_meta(user)).then(|| (name.clone(), Bytes::copy_from_slice(value)))
            })
            .collect();
        UpstreamHead {
            saved,
            etag: crate::sharedstore::version_tag(|name| resp.header(name)).map(Bytes::from),
            last_modified: resp
                .header(&own)
                .or_else(|| resp.header("last-modified"))
                .map(|v| Bytes::copy_from_slice(v.trim_ascii())),
            user,
            from_shared,
        }
    }

    fn write(&self, out: &mut bytes::BytesMut) {
        for (name, value) in &self.saved {
            reply::header(out, name.as_str(), value);
        }
        for (name, value) in [("ETag", &self.etag), ("Last-Modified", &self.last_modified)] {
            if let Some(v) = value {
                reply::header(out, name, v);
            }
        }
        for (name, value) in &self.user {
            reply::header(out, name, value);
        }
        reply::header(out, "Accept-Ranges", b"bytes");
        reply::header(out, reply::SOURCE_HEADER, if self.from_shared { b"shared" } else { b"origin" });
    }
}

/// Over a shared store, a range this far or more past what the key's fill has written is asked
/// of the shared store directly (and passed through) rather than waiting for the fill to reach it.
const RANGE_AHEAD_BYTES: u64 = 1 << 20;

/// A range of an object this edge does not hold yet, passed through from the shared store:
/// its 206 (or 416) streamed to the client, nothing stored (the key's fill stores the object).
/// `None` when the shared store does not answer the range (it lacks the object, ignores the
/// range, or is unreachable): the caller follows the fill instead.
async fn pass_range(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    store: &SharedStoreConfig,
    range: &[u8],
) -> Option<Result<Disposition, S3Error>> {
    for mut plan in mirror::shared_plans(store, key.bucket, key.key, req.id) {
        plan.extra.push((b"Range".to_vec(), range.to_vec()));
        worker.metrics().shared_requests.inc();
        let (mut resp, _) = match upstream::exchange(worker, &plan, origin::Method::Get).await {
            Ok(answered) => answered,
            Err(_) => continue,
        };
        match resp.status {
            206 => {}
            416 => {
                let size = resp
                    .header("content-range")
                    .and_then(|v| std::str::from_utf8(v).ok()?.rsplit('/').next()?.trim().parse().ok());
                resp.body.release(&worker.pool);
                return Some(Err(S3Error::InvalidRange { size: size.unwrap_or(0) }));
            }
            status => {
                resp.body.release(&worker.pool);
                if status >= 500 {
                    continue;
                }
                return None;
            }
        }
        let (Some(length), Some(content_range)) = (resp.body.content_length(), resp.header("content-range")) else {
            resp.body.release(&worker.pool);
            return None;
        };
        let content_range = Bytes::copy_from_slice(content_range);
        let head = UpstreamHead::of(&resp, true);
        let keep_alive = req.keep_alive();
        worker.metrics().shared_ranges.inc();
        conn.tally.source = Source::Shared;
        reply::start(&mut conn.out, 206, &worker.date, req.id);
        head.write(&mut conn.out);
        reply::header(&mut conn.out, "Content-Range", &content_range);
        reply::finish(&mut conn.out, reply::Framing::Length(length), keep_alive);
        if conn.flush().await.is_err() {
            return Some(Ok(Disposition::Close));
        }
        let mut sent = 0u64;
        loop {
            match resp.body.next().await {
                Ok(Some(piece)) => {
                    sent += piece.len() as u64;
                    if conn.write_bytes(piece).await.is_err() {
                        return Some(Ok(Disposition::Close));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The head is out: the client is cut short, as any broken body is.
                    tracing::warn!(request_id = %req.id, error = %e, "shared store range body failed");
                    return Some(Ok(Disposition::Close));
                }
            }
        }
        resp.body.release(&worker.pool);
        return Some(Ok(if sent == length && keep_alive { Disposition::KeepAlive } else { Disposition::Close }));
    }
    None
}

/// Answers a GET (or, with `mirrorHead`, a HEAD) for an object the store lacks: joins the fill
/// for this key or starts one, then follows it.
async fn serve_miss(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    rule: Option<&MirrorRule>,
    plan: mirror::FetchPlan,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    let mut plan = Some(plan);
    let fill = loop {
        match shared.fills.join(key, &shared.store) {
            Join::Stored => return stored::serve_from_store(worker, conn, req, key).await,
            // Its body is whole and only its commit is left: wait for the outcome and look again
            // (stored: the stored object with its ETag; superseded by a PUT or purge, or not
            // kept: the miss path afresh), so a client that has just received the whole body
            // and asks again sees what the store now holds.
            Join::Follow(fill) if fill.is_verified() => fill.ended().await,
            Join::Follow(fill) => {
                worker.metrics().coalesced_misses.inc();
                break fill;
            }
            Join::Lead(guard) => {
                let Some(mut plan) = plan.take() else { return Err(S3Error::Internal("a fill led twice".into())) };
                plan.peers = rule.and_then(|rule| peer_route(worker, rule, req, key)).map(Box::new);
                let fill = guard.fill().clone();
                fill::spawn(worker, guard, plan);
                break fill;
            }
        }
    };
    // Over a shared store, a range far past what the fill has written is passed through from
    // there, so a client seeking into a large object does not wait for the bytes before it.
    if let (Some(store), Some(range)) = (&shared.shared_store, req.header("range")) {
        let far = match edgemirror_proto::single_range_start(range) {
            Some(Some(start)) => start >= fill.written().saturating_add(RANGE_AHEAD_BYTES),
            Some(None) => fill.body().and_then(|b| b.length).is_none_or(|len| len > fill.written() + RANGE_AHEAD_BYTES),
            None => false,
        };
        // Conditions and response overrides are the follower's to apply (against the version
        // the fill is storing), so such a request is never passed through.
        let conditional = stored::REQUEST_CONDITIONS.any_in(req)
            || req.header("if-range").is_some()
            || reply::Overrides::asked(req.query());
        if far && !req.is_head() && !conditional {
            if let Some(answered) = pass_range(worker, conn, req, key, store, range).await {
                return answered;
            }
        }
    }
    let answered = follow::follow(worker, conn, req, &fill).await;
    conn.tally.origin = fill.origin().cloned();
    answered
}

/// In a fleet, the request to the peers that rank before this node for `key` (the owner first),
/// or `None` when this node asks the origin itself: it owns the key, the request came from a
/// peer (answered here, never passed on), or the rule passes the client's headers or query to
/// the origin (the owner could not make the client's request).
fn peer_route(
    worker: &Worker,
    rule: &MirrorRule,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
) -> Option<mirror::FetchPlan> {
    let fleet = &worker.shared.fleet;
    let passes_client = rule.allow_query_string || rule.headers.allow_all || !rule.headers.allow.is_empty();
    if passes_client || fleet.is_peer_request(req.header(crate::fleet::PEER_HEADER)) {
        return None;
    }
    let (peers, secret) = fleet.peers_before_self(key.bucket, key.key);
    mirror::peer_plan(peers, &secret, key.bucket, key.key, req.id)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
