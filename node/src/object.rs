//! The object handlers: `GET` and `HEAD /{bucket}/{key}` (S3 path-style addressing).
//!
//! Lookup order, fastest tier first: foyer memory -> foyer disk -> segment store. A store hit is
//! copied into foyer for next time, and answered by [`crate::stored`]. A GET that misses
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
use edgemirror_cache::{ObjectKeyRef, SavedHeader};

use crate::error::S3Error;
use crate::inflight::Join;
use crate::metrics::Source;
use crate::origin;
use crate::reply;
use crate::respond::{Conn, Disposition, Request};
use crate::rules::{self, MirrorRule};
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
    match found {
        Ok(Some(obj)) => {
            worker.metrics().hits_store.inc();
            shared.hot.insert(&obj);
            return stored::send_stored(worker, conn, req, &obj.meta, obj.body, Source::Store).await;
        }
        Ok(None) => {}
        // A damaged record was dropped from the index: fetch the object again if a rule allows.
        Err(e) => tracing::error!(request_id = %req.id, bucket, key, error = %e, "stored object failed its check"),
    }

    // The table is loaded once per miss; an admin update swaps in a new one for later requests.
    let table = shared.rules.load_full();
    let rule = table.rules(bucket).and_then(|b| rules::match_rule(&b.rules, key));
    let Some(rule) = rule else {
        worker.metrics().misses_no_rule.inc();
        return Err(S3Error::NoSuchKey);
    };
    if req.header("via").is_some_and(|v| contains(v, shared.via_token.as_bytes())) {
        // We are our own origin (a rule whose host name resolves to this node): stop here.
        worker.metrics().origin_failures.inc();
        return Err(S3Error::MirrorFailed("mirror loop: the request came from this node".into()));
    }
    if shared.negative.is_missing(okey) {
        // The origin said 404 for this key less than origin.negative_ttl_ms ago.
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
        return head_at_origin(worker, conn, req, okey, rule).await;
    }
    serve_miss(worker, conn, req, okey, rule).await
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
    let status = resp.status;
    // A HEAD response has no body: its framing says nothing, its Content-Length is the object's.
    let length = resp.header("content-length").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let etag = resp.header("etag").map(Bytes::copy_from_slice);
    let last_modified = resp.header("last-modified").map(Bytes::copy_from_slice);
    let saved: Vec<(SavedHeader, Bytes)> = resp
        .headers()
        .filter_map(|(name, value)| SavedHeader::from_name(name).map(|h| (h, Bytes::copy_from_slice(value))))
        .collect();
    resp.body.release(&worker.pool);
    match status {
        200 => {}
        404 => {
            worker.shared.negative.remember(okey);
            return Err(S3Error::NoSuchKeyAtOrigin);
        }
        other => {
            tracing::warn!(request_id = %req.id, origin = %url, status = other, "origin answered a HEAD with a non-200 status");
            return Err(S3Error::MirrorFailed(format!("origin status {other} to HEAD")));
        }
    }
    let keep_alive = req.keep_alive();
    let out = &mut conn.out;
    reply::start(out, 200, &worker.date, req.id);
    for (name, value) in &saved {
        reply::header(out, name.as_str(), value);
    }
    for (name, value) in [("ETag", &etag), ("Last-Modified", &last_modified)] {
        if let Some(v) = value {
            reply::header(out, name, v);
        }
    }
    reply::header(out, "Accept-Ranges", b"bytes");
    reply::header(out, reply::SOURCE_HEADER, b"origin");
    reply::finish(out, length.map_or(reply::Framing::NoBody, reply::Framing::Length), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Answers a GET (or, with `mirrorHead`, a HEAD) for an object the store lacks: joins the fill
/// for this key or starts one, then follows it.
async fn serve_miss(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    rule: &MirrorRule,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    // Refuse before joining: a key that cannot be fetched must not occupy the fill table. The
    // origin request itself is built by the leader only; followers just wait for its body.
    mirror::fetchable_key(rule, key.key)?;
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
                let mut plan = mirror::plan(rule, key.key, req)?;
                plan.peers = peer_route(worker, rule, req, key).map(Box::new);
                let fill = guard.fill().clone();
                fill::spawn(worker.clone(), guard, plan);
                break fill;
            }
        }
    };
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
