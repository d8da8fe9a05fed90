//! The producer of a fill: the task that fetches one object from its origin and appends the body
//! to a store record, publishing progress to the fill's followers (`follow.rs`).
//!
//! Steps: origin head (following redirects as the rule says) -> store record begun -> for each
//! body piece: append to the record, publish how much is written -> verify (length,
//! Content-MD5) and commit. Verifying releases the followers' last byte (phase `Verified`): with
//! no Content-MD5 to check that is as soon as the length is right, before the ETag digest and the
//! commit; with one, at the commit, which checks it. Commit makes the object visible
//! (`Complete`). If the origin breaks mid-body, or the record fails a check, the record is
//! abandoned (never visible) and the phase `Broken` cuts every follower short, so no client
//! takes a short body for a whole one. If the clients go away the fill carries on and
//! stores the object (unless `origin.complete_on_client_abort` is off).
//!
//! When the store cannot take the object (`NoSpace`: the disk or the store is full, or the object
//! is over `store.max_object_bytes`), the clients still get it: the fill is *unstored*
//! ([`to_memory`]). The origin's pieces are kept in memory for the followers under the rule in
//! `inflight.rs`, verified the same way (length, Content-MD5), and never stored; the next miss
//! tries the store again, so a node stores again as soon as there is room. The store may refuse
//! at `begin` (the clients are told `x-edgemirror-source: origin-unstored`) or, because segment
//! files grow as they are written, at an append or the commit when the disk fills up under the
//! fill (the head already said `origin`; the body still arrives whole). Any other store failure
//! keeps the rule above: followers are cut. Each refusal is counted
//! (`edgemirror_fills_unstored_total`) and logged with its reason, at most once per 10 s per
//! worker ([`UNSTORED_WARN_INTERVAL`]).
//!
//! The task owns a [`FillGuard`]: however it ends, even by a panic, the fill leaves the table
//! of fills in flight with a terminal phase.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgemirror_cache::{FillReader, ObjectKeyRef, RecordMeta, RecordWriter, SavedHeader};
use edgemirror_proto as proto;
use md5::{Digest as _, Md5};

use crate::hash::HashJob;
use crate::inflight::{FillBody, FillGuard, MemoryBody, Phase, Refusal};
use crate::mirror::FetchPlan;
use crate::origin::{Method, OriginResponse};
use crate::reply::RequestId;
use crate::upstream::{self, Upstream};
use crate::worker::{Shared, Worker};

/// Starts the fill task for `plan` on this core.
pub fn spawn(worker: &Rc<Worker>, guard: FillGuard, plan: FetchPlan) {
    crate::task::spawn(worker, "fill", run(worker.clone(), guard, plan));
}

/// The fill task: fetch from the origin (following redirects), write the body to the store,
/// publish progress, commit. Runs to the end even when every client has gone (unless
/// `origin.complete_on_client_abort` is off).
async fn run(worker: Rc<Worker>, mut guard: FillGuard, plan: FetchPlan) {
    let metrics = worker.metrics();
    metrics.origin_fetches.inc();
    let shared = &worker.shared;
    let rid = plan.request_id;
    let rule = &plan.rule;
    let refuse = |guard: FillGuard, reason: String| {
        worker.metrics().origin_failures.inc();
        guard.finish(Phase::Refused(Refusal::Failed(reason)));
    };
    let mut asked = Instant::now();
    let mut used = &plan;
    let mut source = Source::Origin;
    // Over a shared store of record, it is asked first: it holds every object written anywhere.
    let mut exchanged = None;
    let mut shared_unknown = false;
    if !plan.shared.is_empty() {
        match upstream::shared_answer(&worker, &plan.shared, Method::Get).await {
            upstream::SharedAnswer::Found(resp, url, i) => {
                metrics.shared_reads.inc();
                used = &plan.shared[i];
                source = Source::Shared;
                exchanged = Some(Ok((*resp, url)));
            }
            upstream::SharedAnswer::Absent if !plan.ask_origin => {
                // No rule covers the key: the shared store's 404 is the answer (and is not
                // remembered: a PUT through any node may make the key exist at any time).
                return guard.finish(Phase::Refused(Refusal::NotFound));
            }
            upstream::SharedAnswer::Absent => {
                let key = &guard.fill().key;
                if shared.negative.is_missing(ObjectKeyRef::new(&key.bucket, &key.key)) {
                    // The origin said 404 for this key less than origin.negative_ttl_ms ago.
                    return guard.finish(Phase::Refused(Refusal::NotFound));
                }
            }
            upstream::SharedAnswer::Unreachable(reason) => {
                metrics.shared_unreachable.inc();
                // What the shared store holds is unknown: the origin's copy must not be written
                // over it (a client's newer write may be there).
                shared_unknown = true;
                if !plan.ask_origin {
                    metrics.origin_failures.inc();
                    let reason = format!("the shared store did not answer: {reason}");
                    return guard.finish(Phase::Refused(Refusal::Unavailable(reason)));
                }
                tracing::warn!(request_id = %rid, reason, "the shared store did not answer; asking the origin");
            }
        }
        asked = Instant::now();
    }
    let exchanged = match exchanged {
        Some(found) => found,
        None => match plan.peers.as_deref() {
            // In a fleet, the key's owner first (it fetches from the origin once for every edge).
            Some(peers) => {
                match upstream::peer_answer(&worker, upstream::exchange(&worker, peers, Method::Get).await) {
                    Err(reason) => {
                        metrics.fleet_peer_failures.inc();
                        tracing::warn!(request_id = %rid, reason, "no fleet peer answered for the origin; asking the origin");
                        asked = Instant::now();
                        upstream::exchange(&worker, &plan, Method::Get).await
                    }
                    Ok(answered) => {
                        metrics.fleet_peer_fetches.inc();
                        used = peers;
                        source = Source::Peer;
                        answered
                    }
                }
            }
            None => upstream::exchange(&worker, &plan, Method::Get).await,
        },
    };
    let fetch = upstream::outcome(used, &exchanged, asked.elapsed());
    metrics.origins.observe(&fetch);
    guard.fill().set_origin(fetch);
    let (resp, origin_url) = match exchanged {
        // For the logs below: a presigned S3 URL's signature is redacted.
        Ok((resp, url)) => (resp, upstream::redact_url(&url)),
        Err(Upstream::Failed(reason)) => return refuse(guard, reason),
        Err(Upstream::Redirect { status, location }) => {
            return guard.finish(Phase::Refused(Refusal::Redirect { status, location }));
        }
    };
    match resp.status {
        200 => {}
        404 => {
            metrics.origin_not_found.inc();
            let key = &guard.fill().key;
            shared.negative.remember(ObjectKeyRef::new(&key.bucket, &key.key));
            return guard.finish(Phase::Refused(Refusal::NotFound));
        }
        status => {
            tracing::warn!(request_id = %rid, origin = %origin_url, status, "origin answered with a non-200 status");
            return refuse(guard, format!("origin status {status}"));
        }
    }
    if resp.header("transfer-encoding").is_some_and(|te| !te.eq_ignore_ascii_case(b"chunked")) {
        // After de-chunking, any other coding would leave the stored bytes still encoded with
        // nothing saying so.
        return refuse(guard, "origin used a transfer coding other than chunked".into());
    }
    // From the shared store, its request's rule (signed S3) is what the answer is read by.
    let rule = if source == Source::Shared { &used.rule } else { rule };
    let content_md5 = match resp.header("content-md5").filter(|_| rule.check_content_md5) {
        None => None,
        Some(v) => match decode_md5(v) {
            Some(md5) => Some(md5),
            None => return refuse(guard, "origin sent a malformed Content-MD5".into()),
        },
    };
    // An S3 origin's ETag of a single-part object is its body's MD5: a body that differs is a
    // corrupt transfer, refused like a Content-MD5 mismatch. (Multipart ETags, `-N`, are not.)
    let s3_origin = rule.s3.is_some();
    let content_md5 = content_md5.or_else(|| s3_origin.then(|| resp.header("etag").and_then(etag_md5)).flatten());

    let mut meta = saved_meta(&resp);
    // Provenance: the origin's ETag, whatever the object's own (its MD5) turns out to be. (From a
    // fleet peer: the peer's ETag, the object's MD5 as the peer stored it.)
    meta.origin_etag = resp.header("etag").and_then(|e| std::str::from_utf8(e).ok()).map(Box::from);
    if s3_origin {
        // What S3 keeps with the object comes along: its user metadata.
        meta.user = resp
            .headers()
            .filter_map(|(name, value)| {
                let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
                let user = name.strip_prefix("x-amz-meta-")?;
                (!crate::sharedstore::is_own_meta(user)).then(|| (user.into(), Bytes::copy_from_slice(value)))
            })
            .collect();
    }
    // From the shared store, the copy here takes the ETag every node serves for the object (the
    // one the writing node stored with it, else the shared store's own): a single-part ETag is
    // the body's MD5 and is checked; a multipart one (`{md5}-{parts}`) is taken as it is.
    let mut etag_override = None;
    let mut content_md5 = content_md5;
    if source == Source::Shared {
        meta.origin_etag = None;
        // What an upload keeps, Content-Language too (a mirror fill saves the seed's five).
        for (name, value) in resp.headers() {
            if let Some(h) = SavedHeader::uploaded_from_name(name).filter(|h| meta.header(*h).is_none()) {
                meta.headers.push((h, Bytes::copy_from_slice(value)));
            }
        }
        // Last-Modified, version and checksum as the writing edge stored them.
        crate::sharedstore::restore_own_meta(&mut meta, |name| resp.header(name));
        let tag = crate::sharedstore::version_tag(|name| resp.header(name));
        match tag.as_deref().and_then(edgemirror_cache::Etag::parse) {
            Some((md5, 0)) => content_md5 = Some(md5),
            Some((md5, parts)) => {
                meta.parts = parts;
                content_md5 = None;
                etag_override = Some(md5);
            }
            None => {}
        }
    }
    if source == Source::Origin && shared.shared_store.is_some() {
        // New to the fleet: a version of its own, stored with it in the shared store.
        crate::sharedstore::stamp(&mut meta.user);
    }
    let length = resp.body.content_length();
    let rule = guard.commit_rule();
    let key = ObjectKeyRef::new(&guard.fill().key.bucket, &guard.fill().key.key);
    let write_behind = plan.write_behind && !shared_unknown;
    let body = OriginBody { resp, url: origin_url, length, content_md5, source, etag_override, write_behind };
    match shared.begin(worker.id, key.bucket, key, meta.clone(), length, rule) {
        Ok(writer) => to_record(&worker, guard, rid, body, meta, writer).await,
        Err(edgemirror_cache::Error::NoSpace(reason)) => {
            // Full, or too large for the store: the clients still get the object, unstored.
            note_unstored(&worker, rid, &reason, 0);
            let memory = guard.memory_body();
            guard.fill().set_body(FillBody::unstored(meta, length, memory.clone()));
            let hash = content_md5.map(|_| BodyHash::start(shared, length));
            to_memory(&worker, guard, rid, body, memory, hash, None).await;
        }
        Err(e) => {
            metrics.fill_store_failures.inc();
            tracing::error!(request_id = %rid, error = %e, "cannot store the mirrored object");
            refuse(guard, format!("store: {e}"));
        }
    }
}

/// The origin's answer once its head is accepted: the body still to read and what to check it
/// against.
struct OriginBody {
    resp: OriginResponse,
    url: String,
    length: Option<u64>,
    /// The origin's Content-MD5, when the rule checks it.
    content_md5: Option<[u8; 16]>,
    source: Source,
    /// The MD5 part of a multipart ETag the object keeps (from the shared store), committed in
    /// place of the body's.
    etag_override: Option<[u8; 16]>,
    /// [`FetchPlan::write_behind`].
    write_behind: bool,
}

impl OriginBody {
    /// Counts `len` body bytes read: from the shared store, or from an origin (a peer counts as
    /// one: it stands in for the origin).
    fn count(&self, metrics: &crate::metrics::Metrics, len: usize) {
        match self.source {
            Source::Shared => metrics.shared_read_bytes.add(len as u64),
            Source::Peer | Source::Origin => metrics.bytes_from_origin.add(len as u64),
        }
    }
}

/// Where a fill's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The shared store of record.
    Shared,
    /// The fleet peer that owns the key.
    Peer,
    /// The origin itself: the object is new to the fleet, and is written to the shared store.
    Origin,
}

/// The usual fill: every piece goes to the store record, which followers read; commit makes the
/// object visible. A full disk mid-body hands the rest of the body over to [`to_memory`].
async fn to_record(
    worker: &Rc<Worker>,
    guard: FillGuard,
    rid: RequestId,
    mut body: OriginBody,
    meta: RecordMeta,
    mut writer: RecordWriter,
) {
    let shared = &worker.shared;
    let metrics = worker.metrics();
    if let Some(md5) = body.content_md5 {
        writer.expect_md5(md5);
    }
    // Without a hasher job, the writer hashes the body and takes its CRC-32C as it is written
    // (on this worker); with one, the hasher takes both.
    let mut hasher = shared.hashes.start_local(body.length, worker.md5_lanes());
    if hasher.is_some() {
        writer.defer_digests();
    }
    let reader = writer.reader();
    // From the shared store, the ETag is known now: the version it holds, what this copy keeps.
    let etag = (body.source == Source::Shared)
        .then(|| {
            body.content_md5
                .or(body.etag_override)
                .map(|md5| edgemirror_cache::Etag::new(&md5, meta.parts).as_str().to_string())
        })
        .flatten();
    guard.fill().set_body(FillBody::recorded(meta, body.length, reader.clone()).from_shared(etag));

    loop {
        let piece = match body.resp.body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                metrics.origin_body_failures.inc();
                tracing::warn!(request_id = %rid, origin = %body.url, error = %e, "origin body failed; object not stored");
                // Dropping the writer abandons the record; followers are cut off before the end.
                return guard.finish(Phase::Broken);
            }
        };
        body.count(metrics, piece.len());
        // The file write of the piece before this one (up to its last 64 KiB boundary), now:
        // when this one had to be waited for, the followers' sends of that piece went out
        // meanwhile, so the write is off their path (when it was already there, the order is as
        // before). This piece is readable from memory at once; its write is due on the next turn,
        // or at the commit.
        match writer.write_due().and_then(|()| writer.append_unwritten(&piece)) {
            Ok(()) => {}
            Err(edgemirror_cache::Error::NoSpace(reason)) => {
                // The disk filled up under this fill (segment files grow as they are written, so a
                // full disk shows here rather than at `begin`). The record is abandoned: nothing
                // partial becomes visible. Its bytes so far stay readable by the followers, and
                // the rest of the body reaches them from memory.
                let base = writer.written();
                drop(writer);
                note_unstored(worker, rid, &reason, base);
                let hash = match (body.content_md5, hasher) {
                    (None, _) => None,
                    // The hasher has every piece before this one.
                    (Some(_), Some(job)) => Some(BodyHash::Pool(job)),
                    // The writer hashed the bytes so far, and took its digest with it.
                    (Some(_), None) => match md5_of_record(&reader, base) {
                        Some(md5) => Some(BodyHash::Inline(md5)),
                        None => return guard.finish(Phase::Broken),
                    },
                };
                let Some(memory) = guard.spill_to_memory(base) else { return guard.finish(Phase::Broken) };
                return to_memory(worker, guard, rid, body, memory, hash, Some(piece)).await;
            }
            Err(e) => {
                metrics.fill_store_failures.inc();
                tracing::error!(request_id = %rid, error = %e, "store write failed; fill abandoned");
                return guard.finish(Phase::Broken);
            }
        }
        guard.fill().set_written(writer.written());
        if let Some(h) = hasher.as_mut() {
            h.update(piece);
            h.backlog().await;
        }
        if !worker.config().origin.complete_on_client_abort && guard.fill().followers() == 0 {
            tracing::info!(request_id = %rid, "every client left; fill abandoned");
            return guard.finish(Phase::Broken);
        }
    }
    body.resp.body.release(&worker.pool);
    let writer_len = writer.written();
    if body.length.is_some_and(|len| len != writer_len) {
        metrics.origin_body_failures.inc();
        tracing::warn!(request_id = %rid, origin = %body.url, written = writer_len, "origin body length differs from its Content-Length; not stored");
        return guard.finish(Phase::Broken);
    }
    // The length is right. When no Content-MD5 is to be checked, nothing about the body can fail
    // any more: the followers get their last byte now, and the ETag digest (MD5, ~1.5 ms per MiB)
    // and the commit finish off their critical path. From here a store failure only means the
    // object is not kept; the clients' bodies are whole either way.
    let released = body.content_md5.is_none();
    if released {
        guard.fill().set_verified(writer_len);
    }
    // Ends a fill whose body is whole but which cannot be kept: followers still reading finish
    // from the abandoned record, and one waiting for the store is told it will not be there.
    let not_kept = |guard: FillGuard| {
        if guard.spill_to_memory(writer_len).is_none() {
            return guard.finish(Phase::Broken);
        }
        guard.finish(Phase::Complete { written: writer_len });
    };
    let digests = match hasher {
        None => None,
        Some(h) => {
            let Some(digests) = h.finish().await else {
                tracing::error!(request_id = %rid, "the MD5 thread is gone; object not stored");
                return if released { not_kept(guard) } else { guard.finish(Phase::Broken) };
            };
            Some(digests)
        }
    };
    // New to the fleet: written to the shared store behind the clients, and trusted here from
    // the moment the commit makes it visible (`backend::begin_upload`).
    let uploads = shared.shared_store.is_some() && body.source == Source::Origin && body.write_behind;
    let (bucket, key) = (&*guard.fill().key.bucket, &*guard.fill().key.key);
    let mut mark = uploads.then(|| crate::backend::begin_upload(worker, bucket, key));
    let committed = match (body.etag_override, digests) {
        (etag, Some(digests)) => writer.commit_with_digests(etag.unwrap_or(digests.md5), digests.crc32c),
        (Some(md5), None) => writer.commit_with_md5(md5),
        (None, None) => writer.commit(),
    };
    if committed.is_err() {
        if let Some(mark) = mark.take() {
            crate::backend::abandon_upload(mark);
        }
    }
    match committed {
        Ok(obj) => {
            metrics.objects_mirrored.inc();
            if let Some(mark) = mark {
                crate::backend::upload_behind(worker, obj.clone(), mark);
            } else if shared.shared_store.is_some() && body.source == Source::Shared {
                // Just read from the shared store: current. (A copy from a fleet peer is not
                // marked: the owner's copy may itself be stale, so its next hit asks.)
                shared.freshness.mark(&obj.meta.bucket, &obj.meta.key);
            }
            // Not copied into the hot cache here: the object enters RAM on its first hit
            // (`object.rs`), so an object asked for once takes no RAM beyond the page cache its
            // segment is already in, and the miss path spares a copy of the body.
            guard.finish(Phase::Complete { written: obj.meta.size });
        }
        Err(edgemirror_cache::Error::Superseded | edgemirror_cache::Error::Cancelled) => {
            // A PUT or a purge landed while this fill ran (it wins), or the bucket is being
            // deleted: what was fetched is not stored. The clients were sent a whole, verified
            // body: they complete normally.
            metrics.fills_superseded.inc();
            tracing::info!(request_id = %rid, "the key changed while it was fetched; the fetched copy is not stored");
            guard.finish(Phase::Complete { written: writer_len });
        }
        Err(e @ edgemirror_cache::Error::BodyMismatch(_)) if !released => {
            metrics.origin_body_failures.inc();
            tracing::warn!(request_id = %rid, origin = %body.url, error = %e, "mirrored object failed verification; not stored");
            guard.finish(Phase::Broken);
        }
        Err(edgemirror_cache::Error::NoSpace(reason)) => {
            // The whole body is in the abandoned record, readable by the followers; only keeping
            // it failed. Where the store gave up before checking the Content-MD5 (an unknown
            // length placed at commit), check it here, as an unstored fill does.
            note_unstored(worker, rid, &reason, writer_len);
            if let Some(expected) = body.content_md5 {
                let got =
                    digests.map(|d| d.md5).or_else(|| md5_of_record(&reader, writer_len).map(|m| m.finalize().into()));
                if got != Some(expected) {
                    metrics.origin_body_failures.inc();
                    tracing::warn!(request_id = %rid, origin = %body.url, "body MD5 differs from the origin's Content-MD5");
                    return guard.finish(Phase::Broken);
                }
            }
            // Marks the fill unstored (nothing goes to memory): a follower waiting for the store
            // is told the object will not be there.
            not_kept(guard);
        }
        Err(e) => {
            metrics.fill_store_failures.inc();
            tracing::error!(request_id = %rid, error = %e, "committing the mirrored object failed; not stored");
            if released {
                not_kept(guard);
            } else {
                guard.finish(Phase::Broken);
            }
        }
    }
}

/// An unstored fill: the pieces go to `memory` (from its base on; `first` is a piece already
/// read), followers read them there, nothing is stored. Same integrity rule as a stored fill:
/// the last byte is released only once the length and Content-MD5 are verified.
async fn to_memory(
    worker: &Rc<Worker>,
    guard: FillGuard,
    rid: RequestId,
    mut body: OriginBody,
    memory: Arc<MemoryBody>,
    mut hash: Option<BodyHash>,
    mut first: Option<Bytes>,
) {
    let metrics = worker.metrics();
    loop {
        let piece = match first.take() {
            Some(piece) => piece,
            None => match body.resp.body.next().await {
                Ok(Some(piece)) => {
                    body.count(metrics, piece.len());
                    piece
                }
                Ok(None) => break,
                Err(e) => {
                    metrics.origin_body_failures.inc();
                    tracing::warn!(request_id = %rid, origin = %body.url, error = %e, "origin body failed (unstored fill)");
                    return guard.finish(Phase::Broken);
                }
            },
        };
        if let Some(h) = hash.as_mut() {
            h.update(piece.clone()).await;
        }
        // Room first, then the piece: whatever the producer waits for is already readable, so
        // the followers it waits for are never waiting for it (a follower holding back the last
        // byte until `Complete` must not pin the piece the producer needs room for).
        guard.make_room(&memory).await;
        memory.push(piece);
        guard.fill().set_written(memory.end());
        if guard.fill().followers() == 0 {
            // Nothing will be stored and nobody is reading: finishing the fetch helps no one.
            tracing::info!(request_id = %rid, "every client left an unstored fill; fetch abandoned");
            return guard.finish(Phase::Broken);
        }
    }
    body.resp.body.release(&worker.pool);
    let written = memory.end();
    if body.length.is_some_and(|len| len != written) {
        metrics.origin_body_failures.inc();
        tracing::warn!(request_id = %rid, origin = %body.url, written, "origin body length differs from its Content-Length");
        return guard.finish(Phase::Broken);
    }
    if let (Some(expected), Some(h)) = (body.content_md5, hash) {
        if h.finish().await != Some(expected) {
            metrics.origin_body_failures.inc();
            tracing::warn!(request_id = %rid, origin = %body.url, "body MD5 differs from the origin's Content-MD5 (unstored fill)");
            return guard.finish(Phase::Broken);
        }
    }
    guard.finish(Phase::Complete { written });
}

/// The MD5 of an unstored body, needed only to check the origin's Content-MD5 (an unstored
/// response has no ETag): on the hasher threads when there are any, else inline, as configured.
enum BodyHash {
    Pool(HashJob),
    Inline(Md5),
}

impl BodyHash {
    fn start(shared: &Shared, length: Option<u64>) -> BodyHash {
        match shared.hashes.start(length) {
            Some(job) => BodyHash::Pool(job),
            None => BodyHash::Inline(Md5::new()),
        }
    }

    async fn update(&mut self, piece: Bytes) {
        match self {
            BodyHash::Pool(job) => {
                job.update(piece);
                job.backlog().await;
            }
            BodyHash::Inline(md5) => md5.update(&piece),
        }
    }

    async fn finish(self) -> Option<[u8; 16]> {
        match self {
            BodyHash::Pool(job) => job.finish().await.map(|digests| digests.md5),
            BodyHash::Inline(md5) => Some(md5.finalize().into()),
        }
    }
}

/// The MD5 state of the first `len` bytes of an abandoned record, read back (on the worker: only
/// when MD5 is configured inline, and once per fill that the disk cut short).
fn md5_of_record(reader: &FillReader, len: u64) -> Option<Md5> {
    let mut md5 = Md5::new();
    let mut pos = 0;
    while pos < len {
        match reader.read(pos, (len - pos).min(1 << 20) as usize) {
            Ok(Some(piece)) => {
                md5.update(&piece);
                pos += piece.len() as u64;
            }
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "reading an abandoned record back failed");
                return None;
            }
        }
    }
    Some(md5)
}

/// At most one warning per worker in this long about fills the store refused; the ones in
/// between are counted, and the count goes out with the next warning. A full disk under load
/// refuses every miss: one line each would flood the log.
const UNSTORED_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one log line through per interval and counts the ones it holds back.
#[derive(Clone, Copy, Debug, Default)]
struct LogThrottle {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// `Some(lines held back since the last one)` when a line may be logged at `now`.
    fn admit(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

thread_local! {
    /// One throttle per worker thread (fills run on the worker that led them).
    static UNSTORED_WARNINGS: Cell<LogThrottle> = const { Cell::new(LogThrottle { last: None, suppressed: 0 }) };
}

/// Counts a fill the store refused and says why, at most once per [`UNSTORED_WARN_INTERVAL`].
fn note_unstored(worker: &Worker, rid: RequestId, reason: &str, at_byte: u64) {
    worker.metrics().fills_unstored.inc();
    let admitted = UNSTORED_WARNINGS.with(|t| {
        let mut throttle = t.get();
        let admitted = throttle.admit(Instant::now(), UNSTORED_WARN_INTERVAL);
        t.set(throttle);
        admitted
    });
    if let Some(suppressed) = admitted {
        tracing::warn!(
            request_id = %rid,
            reason,
            at_byte,
            suppressed,
            "the store cannot take the object; it is served from the origin without being stored"
        );
    }
}

/// Content-MD5 is the base64 of the 16-byte digest (RFC 1864).
pub(crate) fn decode_md5(value: &[u8]) -> Option<[u8; 16]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim_ascii()).ok()?;
    bytes.try_into().ok()
}

/// The MD5 an S3 ETag spells (`"<32 hex>"`), if it is a single-part object's.
fn etag_md5(etag: &[u8]) -> Option<[u8; 16]> {
    match edgemirror_cache::Etag::parse(std::str::from_utf8(etag).ok()?.trim())? {
        (md5, 0) => Some(md5),
        _ => None,
    }
}

/// The seed's saved headers, in the order the origin sent them, and the origin's
/// `Last-Modified` (the time of mirroring when it sent none or an unparseable one): conditional
/// requests then use the same validator as at the origin, as S3-style mirrors do.
fn saved_meta(resp: &OriginResponse) -> RecordMeta {
    let last_modified = resp.header("last-modified").and_then(proto::parse_http_date).unwrap_or_else(SystemTime::now);
    let mut meta = RecordMeta::new(last_modified);
    for (name, value) in resp.headers() {
        if let Some(h) = SavedHeader::from_name(name) {
            if meta.header(h).is_none() {
                meta.headers.push((h, Bytes::copy_from_slice(value)));
            }
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_part_s3_etags_are_md5s() {
        let md5 = etag_md5(b"\"0123456789abcdef0123456789ABCDEF\"").unwrap();
        assert_eq!(md5[0], 0x01);
        assert_eq!(md5[15], 0xef);
        assert_eq!(etag_md5(b"\"0123456789abcdef0123456789abcdef-3\""), None, "a multipart ETag");
        assert_eq!(etag_md5(b"0123456789abcdef0123456789abcdef"), None, "unquoted");
        assert_eq!(etag_md5(b"W/\"0123456789abcdef0123456789abcdef\""), None, "weak");
    }

    #[test]
    fn the_throttle_lets_one_line_through_per_interval_and_counts_the_rest() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut throttle = LogThrottle::default();
        assert_eq!(throttle.admit(t0, interval), Some(0), "the first line goes out");
        for s in 1..5 {
            assert_eq!(throttle.admit(t0 + Duration::from_secs(s), interval), None);
        }
        assert_eq!(throttle.admit(t0 + interval, interval), Some(4), "the next line says how many were held back");
        assert_eq!(throttle.admit(t0 + interval + Duration::from_secs(1), interval), None);
        assert_eq!(throttle.admit(t0 + 3 * interval, interval), Some(1));
    }
}
