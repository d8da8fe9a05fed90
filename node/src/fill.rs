//! The producer of a fill: the task that fetches one object from its origin and appends the body
//! to a store record, publishing progress to the fill's followers (`follow.rs`).
//!
//! Steps: origin head (following redirects as the rule says) -> store record begun -> for each
//! body piece: append to the record, publish how much is written -> verify (length,
//! Content-MD5) and commit. Commit makes the object visible; the phase `Complete` then releases
//! the followers' last byte. If the origin breaks mid-body, or the record fails a check, the
//! record is abandoned (never visible) and the phase `Broken` cuts every follower short, so no
//! client takes a short body for a whole one. If the clients go away the fill carries on and
//! stores the object (unless `origin.complete_on_client_abort` is off).
//!
//! The task owns a [`FillGuard`]: however it ends, even by a panic, the fill leaves the table
//! of fills in flight with a terminal phase.

use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{ObjectKeyRef, RecordMeta, SavedHeader};
use edgemirror_proto as proto;

use crate::inflight::{FillBody, FillGuard, Phase, Refusal};
use crate::mirror::{self, FetchPlan};
use crate::origin::{self, OriginResponse};
use crate::rules::MAX_REDIRECTS;
use crate::worker::Worker;

/// Starts the fill task for `plan` on this core.
pub fn spawn(worker: Rc<Worker>, guard: FillGuard, plan: FetchPlan) {
    monoio::spawn(run(worker, guard, plan));
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
    let mut target = rule.origin.clone();
    let mut path = plan.path.clone();
    let mut hops = 0;
    let refuse = |guard: FillGuard, reason: String| {
        worker.metrics().origin_failures.inc();
        guard.finish(Phase::Refused(Refusal::Failed(reason)));
    };
    let mut resp = loop {
        let host = match (&plan.client_host, hops) {
            (Some(h), 0) => h.as_slice(),
            _ => target.host_header.as_bytes(),
        };
        let request = origin::build_request(&path, host, &plan.extra, &shared.via_token);
        let url = format!("{}://{}{path}", target.scheme(), target.host_header);
        let resp = match origin::fetch(&target, request, &shared.config.origin, &worker.pool, &shared.network).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %rid, origin = %url, error = %e, "mirror fetch failed");
                return refuse(guard, e.to_string());
            }
        };
        if !mirror::is_redirect(resp.status) {
            break resp;
        }
        let Some(location) = resp.header("location") else {
            return refuse(guard, format!("origin answered {} without Location", resp.status));
        };
        if !rule.follow_redirects {
            let location = Bytes::copy_from_slice(location);
            return guard.finish(Phase::Refused(Refusal::Redirect { status: resp.status, location }));
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            tracing::warn!(request_id = %rid, origin = %url, "more than {MAX_REDIRECTS} redirects");
            return refuse(guard, "too many redirects".into());
        }
        match mirror::resolve_location(&target, &path, location) {
            Ok((t, p)) => (target, path) = (t, p),
            Err(e) => {
                tracing::warn!(request_id = %rid, origin = %url, error = %e, "unfollowable redirect");
                return refuse(guard, e);
            }
        }
    };
    let origin_url = format!("{}://{}{path}", target.scheme(), target.host_header);
    match resp.status {
        200 => {}
        404 => {
            metrics.origin_not_found.inc();
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
    let content_md5 = match resp.header("content-md5").filter(|_| rule.check_content_md5) {
        None => None,
        Some(v) => match decode_md5(v) {
            Some(md5) => Some(md5),
            None => return refuse(guard, "origin sent a malformed Content-MD5".into()),
        },
    };

    let meta = saved_meta(&resp);
    let length = resp.body.content_length();
    let rule = guard.commit_rule();
    let key = ObjectKeyRef::new(&guard.fill().key.bucket, &guard.fill().key.key);
    let mut writer = match shared.store.begin(worker.id, key, meta.clone(), length, rule) {
        Ok(w) => w,
        Err(e) => {
            metrics.fill_store_failures.inc();
            tracing::error!(request_id = %rid, error = %e, "cannot store the mirrored object");
            return refuse(guard, format!("store: {e}"));
        }
    };
    if let Some(md5) = content_md5 {
        writer.expect_md5(md5);
    }
    let mut hasher = shared.hashes.start();
    if hasher.is_some() {
        writer.defer_md5();
    }
    guard.fill().set_body(FillBody { meta, length, reader: writer.reader() });

    loop {
        let piece = match resp.body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                metrics.origin_body_failures.inc();
                tracing::warn!(request_id = %rid, origin = %origin_url, error = %e, "origin body failed; object not stored");
                // Dropping the writer abandons the record; followers are cut off before the end.
                return guard.finish(Phase::Broken);
            }
        };
        metrics.bytes_from_origin.add(piece.len() as u64);
        if let Err(e) = writer.append(&piece) {
            metrics.fill_store_failures.inc();
            tracing::error!(request_id = %rid, error = %e, "store write failed; fill abandoned");
            return guard.finish(Phase::Broken);
        }
        guard.fill().set_written(writer.written());
        if let Some(h) = hasher.as_mut() {
            h.update(piece);
            h.backlog().await;
        }
        if !shared.config.origin.complete_on_client_abort && guard.fill().followers() == 0 {
            tracing::info!(request_id = %rid, "every client left; fill abandoned");
            return guard.finish(Phase::Broken);
        }
    }
    resp.body.release(&worker.pool);
    let writer_len = writer.written();
    let committed = match hasher {
        None => writer.commit(),
        Some(h) => match h.finish().await {
            Some(md5) => writer.commit_with_md5(md5),
            None => {
                tracing::error!(request_id = %rid, "the MD5 thread is gone; fill abandoned");
                return guard.finish(Phase::Broken);
            }
        },
    };
    match committed {
        Ok(obj) => {
            metrics.objects_mirrored.inc();
            // Release the followers' last byte first; warming the hot cache copies the body.
            guard.finish(Phase::Complete { written: obj.meta.size });
            shared.hot.insert(&obj);
        }
        Err(edgemirror_cache::Error::Superseded) => {
            // A PUT or a purge landed while this fill ran: it wins and what was fetched is not
            // stored. The clients were sent a whole, verified body: they complete normally.
            metrics.fills_superseded.inc();
            tracing::info!(request_id = %rid, "the key changed while it was fetched; the fetched copy is not stored");
            guard.finish(Phase::Complete { written: writer_len });
        }
        Err(e @ edgemirror_cache::Error::BodyMismatch(_)) => {
            metrics.origin_body_failures.inc();
            tracing::warn!(request_id = %rid, origin = %origin_url, error = %e, "mirrored object failed verification; not stored");
            guard.finish(Phase::Broken);
        }
        Err(e) => {
            metrics.fill_store_failures.inc();
            tracing::error!(request_id = %rid, error = %e, "committing the mirrored object failed; not stored");
            guard.finish(Phase::Broken);
        }
    }
}

/// Content-MD5 is the base64 of the 16-byte digest (RFC 1864).
fn decode_md5(value: &[u8]) -> Option<[u8; 16]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim_ascii()).ok()?;
    bytes.try_into().ok()
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
