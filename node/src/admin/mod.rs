//! The admin listener: operations, apart from the data plane.
//!
//! - `GET /health` -> 200 `ok` (no auth: for load balancers and probes).
//! - `GET /metrics` -> Prometheus text.
//! - `POST /v1/regions/{regionId}/buckets/{bucketName}/purge`: removes objects from every tier
//!   (`{"keys": [...]}` or `{"prefix": "..."}`), or re-fetches them (`"refetch": true`); see
//!   `purge.rs`.
//! - `POST|GET|DELETE /v1/regions/{regionId}/buckets/{bucketName}/backfill`: a backfill job (the
//!   migration's final import of the keys nobody asked for), its report, its cancellation; see
//!   `backfill.rs`.
//! - `PUT|GET|DELETE /v1/regions/{regionId}/buckets/{bucketName}/backSource`: the mirror rules of
//!   a bucket, JSON, as the reference OSS open API. PUT replaces the whole list (that is also how
//!   rules are edited, deleted one by one and re-ordered); DELETE removes them all. A bucket
//!   whose rules the config file manages answers GET (`managedBy: "config"`) and refuses PUT and
//!   DELETE with 409 saying why.
//!
//! - `GET /v1/buckets`: every bucket, its mode and where its rules come from.
//! - `POST /v1/reload`: reads the config file again (as SIGHUP; see `crate::reload`).
//! - `GET /console`: the web console, one self-contained page (`console.html`, no external
//!   assets) that logs in with the token and uses the endpoints above.
//!
//! Everything but `/health` and the console page needs `Authorization: Bearer <admin.token>` (401 otherwise, nothing
//! changed); with no token configured the rule API is disabled (403). An accepted change is
//! persisted (atomic replace of `store.dir/rules.json`) before it is swapped in, so a rule the
//! client was told about survives a restart; every core sees it on its next request.
//!
//! Served by one thread with its own monoio runtime: admin traffic never competes with the data
//! plane's cores.

use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use edgemirror_proto::{self as proto, BodyFraming, Method, Status};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde_json::json;

use crate::metrics::{escape_label, samples};

/// The console (`GET /console`): one self-contained page over this API.
const CONSOLE_HTML: &str = include_str!("console.html");
use crate::reply;
use crate::rules::{self, BackSourceBody, BackSourceRule, RuleSource};
use crate::worker::{Shared, Worker};

mod backfill;
mod purge;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admin request body: five rules fit in a few KiB; a backfill's key list is the big one
/// (a hundred thousand keys of 60 bytes).
const MAX_ADMIN_BODY_BYTES: u64 = 8 << 20;

static ADMIN_REQUESTS: AtomicU64 = AtomicU64::new(0);

pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    // The admin thread's own worker state: forced re-fetches run their fills here, with their
    // own origin connections, off the data plane's cores.
    let worker = Rc::new(Worker::new(shared.config().server.workers, shared));
    // Backfill jobs that were running when the node stopped go on from their checkpoints.
    backfill::resume_all(&worker);
    // Multipart uploads nobody finished: aborted once they are older than the configured age,
    // checked hourly (or more often for a shorter age).
    let reclaimer = worker.clone();
    monoio::spawn(async move {
        let max_age = reclaimer.shared.config().multipart_max_age;
        loop {
            monoio::time::sleep(max_age.min(Duration::from_secs(3600)) / 2).await;
            // Each pass a task of its own: one that panics (a bug) is logged and counted, and the
            // next pass runs as usual.
            let pass = reclaimer.clone();
            crate::task::spawn(&reclaimer, "multipart reclaim", async move {
                crate::s3::multipart::reclaim_abandoned(&pass, max_age)
            })
            .await;
        }
    });
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot adopt the admin socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                crate::task::spawn(&worker, "admin connection", serve_conn(stream, worker.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An admin response: status, content type, body.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Answer {
    fn text(status: u16, body: &str) -> Answer {
        Answer { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n") }
    }

    fn json(status: u16, v: serde_json::Value) -> Answer {
        Answer { status, content_type: "application/json", body: v.to_string() }
    }

    /// The reference API's error shape, with the message naming the offending field.
    fn error(status: u16, request_id: &str, message: &str) -> Answer {
        let s = match status {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            409 => "FAILED_PRECONDITION",
            411 => "LENGTH_REQUIRED",
            413 => "PAYLOAD_TOO_LARGE",
            _ => "INTERNAL",
        };
        Answer::json(
            status,
            json!({"requestId": request_id, "error": {"code": status, "status": s, "message": message}}),
        )
    }
}

async fn serve_conn(mut stream: TcpStream, worker: Rc<Worker>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let head = loop {
            match proto::parse_request(&buf) {
                Ok(Status::Complete(h)) => break h,
                Ok(Status::Partial) => {}
                Err(e) => {
                    let _ = respond(&mut stream, Answer::text(e.status(), e.as_str()), false).await;
                    let _ = stream.shutdown().await;
                    return;
                }
            }
            match read_more(&mut stream, buf).await {
                Some(b) => buf = b,
                None => return,
            }
        };
        // Read the body (the rule API's PUT), bounded.
        let body_len = match head.body {
            BodyFraming::None => 0,
            BodyFraming::ContentLength(n) if n <= MAX_ADMIN_BODY_BYTES => n as usize,
            BodyFraming::ContentLength(_) => {
                let _ = respond(&mut stream, Answer::error(413, &next_id(), "body larger than 64 KiB"), false).await;
                let _ = stream.shutdown().await;
                return;
            }
            _ => {
                let _ = respond(&mut stream, Answer::error(411, &next_id(), "send a Content-Length body"), false).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        while buf.len() < head.head_len + body_len {
            match read_more(&mut stream, buf).await {
                Some(b) => buf = b,
                None => return,
            }
        }
        let body = &buf[head.head_len..head.head_len + body_len];
        let answer = route(&worker, &head, &buf, body).await;
        let keep_alive = head.keep_alive;
        if respond(&mut stream, answer, keep_alive).await.is_err() || !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
        buf.advance(head.head_len + body_len);
    }
}

async fn read_more(stream: &mut TcpStream, mut buf: BytesMut) -> Option<BytesMut> {
    if buf.len() > proto::MAX_HEAD_BYTES + MAX_ADMIN_BODY_BYTES as usize {
        return None;
    }
    buf.reserve(4096);
    let (len, cap) = (buf.len(), buf.capacity());
    match monoio::time::timeout(ADMIN_TIMEOUT, stream.read(buf.slice_mut(len..cap))).await {
        Ok((Ok(n), slice)) if n > 0 => Some(slice.into_inner()),
        _ => {
            let _ = stream.shutdown().await;
            None
        }
    }
}

fn next_id() -> String {
    format!("admin-{:08x}", ADMIN_REQUESTS.fetch_add(1, Ordering::Relaxed) + 1)
}

async fn route(worker: &Rc<Worker>, head: &proto::RequestHead, buf: &[u8], body: &[u8]) -> Answer {
    let shared = &*worker.shared;
    let path = head.path.get(buf);
    let config = shared.config();
    let token = &config.admin.token;
    let auth = head.headers.get(buf, "authorization");
    if path == b"/health" {
        return Answer::text(200, "ok");
    }
    if path == b"/metrics" {
        if !token.is_empty() && !authorized(token, auth) {
            return Answer::text(401, "unauthorized");
        }
        return Answer { status: 200, content_type: "text/plain; version=0.0.4", body: metrics(shared) };
    }
    if path == b"/console" || path == b"/console/" {
        // The page holds no secret: it asks for the token and calls the API with it.
        return Answer { status: 200, content_type: "text/html; charset=utf-8", body: CONSOLE_HTML.to_string() };
    }
    let id = next_id();
    let resource = bucket_resource(path);
    if resource.is_none() && path != b"/v1/reload" && path != b"/v1/buckets" {
        return Answer::text(404, "not found");
    }
    if token.is_empty() {
        return Answer::error(403, &id, "the admin API is disabled: set admin.token");
    }
    if !authorized(token, auth) {
        return Answer::error(401, &id, "missing or wrong bearer token");
    }
    if path == b"/v1/buckets" {
        return list_buckets(shared, &id);
    }
    let Some((bucket, resource)) = resource else {
        // `POST /v1/reload`: as SIGHUP, with the outcome in the answer.
        if head.method != Method::Post {
            return Answer::error(405, &id, "use POST");
        }
        let outcome = crate::reload::reload(shared);
        crate::reload::log(&outcome);
        return match outcome {
            Ok(r) => Answer::json(
                200,
                json!({"requestId": id, "buckets": r.buckets, "rules": r.rules, "restartNeeded": r.restart_needed}),
            ),
            Err(e) => Answer::error(400, &id, &format!("{e:#}")),
        };
    };
    let Ok(bucket) = std::str::from_utf8(bucket) else {
        return Answer::error(404, &id, "no such bucket");
    };
    if shared.bucket(bucket).is_none() {
        return Answer::error(404, &id, &format!("no such bucket: {bucket}"));
    }
    match resource {
        b"backSource" => back_source(shared, &id, bucket, head.method, body),
        b"purge" if head.method == Method::Post => purge::handle(worker, &id, bucket, body).await,
        b"purge" => Answer::error(405, &id, "use POST"),
        b"backfill" => backfill::handle(worker, &id, bucket, head.method, body),
        _ => Answer::error(404, &id, "no such resource: use backSource, purge or backfill"),
    }
}

/// `GET /v1/buckets`: every bucket, its settings and where its rules come from.
fn list_buckets(shared: &Shared, id: &str) -> Answer {
    let rules = shared.rules.load();
    let buckets: Vec<serde_json::Value> = shared
        .buckets
        .load()
        .iter()
        .map(|b| {
            let bucket_rules = rules.rules(&b.config.name);
            json!({
                "name": b.config.name,
                "mode": match b.config.mode { crate::config::BucketMode::Mirror => "mirror", crate::config::BucketMode::Cache => "cache" },
                "publicRead": b.config.public_read,
                "declared": b.declared,
                "rulesManagedBy": bucket_rules.map(|r| r.source).unwrap_or_default().as_str(),
                "rules": bucket_rules.map_or(0, |r| r.rules.len()),
            })
        })
        .collect();
    Answer::json(200, json!({"requestId": id, "result": {"buckets": buckets}}))
}

/// `PUT|GET|DELETE .../buckets/{bucket}/backSource`: the bucket's mirror rules.
fn back_source(shared: &Shared, id: &str, bucket: &str, method: Method, body: &[u8]) -> Answer {
    let id = id.to_string();
    let table = shared.rules.load();
    let source = table.rules(bucket).map(|b| b.source).unwrap_or_default();
    match method {
        Method::Get => {
            let spec: Vec<BackSourceRule> =
                table.rules(bucket).map(|b| b.spec.iter().map(BackSourceRule::redacted).collect()).unwrap_or_default();
            // Each rule's origins (primary, then standbys) and their breakers, as of now.
            let status: Vec<serde_json::Value> = table
                .rules(bucket)
                .map(|b| {
                    b.rules
                        .iter()
                        .map(|r| {
                            let origins: Vec<serde_json::Value> = std::iter::once(&r.origin)
                                .chain(&r.standbys)
                                .map(|o| {
                                    let name = format!("{}://{}", o.scheme(), o.host_header);
                                    let mut status = json!({"origin": name, "breaker": shared.breakers.state(&name)});
                                    if let Some((in_flight, cap)) = shared.fetch_slots.in_flight(&name) {
                                        status["fetchesInFlight"] = json!(in_flight);
                                        status["maxFetches"] = json!(cap);
                                    }
                                    if shared.pacers.rate() > 0 {
                                        status["maxBytesPerSec"] = json!(shared.pacers.rate());
                                    }
                                    status
                                })
                                .collect();
                            json!({"origins": origins})
                        })
                        .collect()
                })
                .unwrap_or_default();
            Answer::json(
                200,
                json!({"requestId": id, "result": {"backSourceRules": spec, "managedBy": source.as_str(), "status": status}}),
            )
        }
        Method::Put | Method::Delete if source == RuleSource::Config => Answer::error(
            409,
            &id,
            &format!(
                "the rules of bucket {bucket} are managed by the config file ([[buckets.mirror]]); edit the file and reload it (SIGHUP, or POST /v1/reload), or remove its [[buckets.mirror]] to manage them through this API"
            ),
        ),
        Method::Put => {
            let mut parsed: BackSourceBody = match serde_json::from_slice(body) {
                Ok(p) => p,
                Err(e) => return Answer::error(400, &id, &format!("invalid JSON body: {e}")),
            };
            let saved = table.rules(bucket).map(|b| b.spec.as_slice()).unwrap_or_default();
            rules::restore_secrets(&mut parsed.back_source_rules, saved);
            let validated = match rules::validate_list(&parsed.back_source_rules, &shared.network.policy) {
                Ok(v) => v,
                Err(e) => return Answer::error(400, &id, &e),
            };
            update(shared, &id, bucket, parsed.back_source_rules, validated)
        }
        Method::Delete => update(shared, &id, bucket, Vec::new(), Vec::new()),
        _ => Answer::error(405, &id, "use GET, PUT or DELETE"),
    }
}

/// Persists the bucket's new rules, then swaps the table in.
fn update(
    shared: &Shared,
    id: &str,
    bucket: &str,
    spec: Vec<rules::BackSourceRule>,
    validated: Vec<rules::MirrorRule>,
) -> Answer {
    let _guard = shared.rules_update.lock().unwrap_or_else(|e| e.into_inner());
    let next = shared.rules.load().with_bucket(bucket, RuleSource::Api, spec, validated);
    if let Err(e) = rules::persist(&shared.config().store.dir, &next) {
        tracing::error!(error = %e, "cannot persist mirror rules");
        return Answer::error(500, id, "the rules could not be saved");
    }
    let count = next.rules(bucket).map_or(0, |b| b.rules.len());
    shared.rules.store(Arc::new(next));
    tracing::info!(bucket, rules = count, request_id = id, "mirror rules updated");
    Answer::json(200, json!({"requestId": id}))
}

/// `/v1/regions/{regionId}/buckets/{bucketName}/{resource}` -> (bucketName, resource).
fn bucket_resource(path: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = path.strip_prefix(b"/v1/regions/")?;
    let slash = rest.iter().position(|&c| c == b'/')?;
    let (region, rest) = rest.split_at(slash);
    let rest = rest.strip_prefix(b"/buckets/")?;
    let slash = rest.iter().position(|&c| c == b'/')?;
    let (bucket, resource) = (&rest[..slash], &rest[slash + 1..]);
    let ok = !region.is_empty() && !bucket.is_empty() && !resource.is_empty() && !resource.contains(&b'/');
    ok.then_some((bucket, resource))
}

/// True when the request carries `Bearer <token>` (compared in constant time: it is a secret).
pub fn authorized(token: &str, header: Option<&[u8]>) -> bool {
    let Some(value) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
    !token.is_empty()
        && value.len() == token.len()
        && value.iter().zip(token.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn metrics(shared: &Shared) -> String {
    let store = &shared.store;
    let stats = &store.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
    let free = edgemirror_cache::segment::free_bytes(&store.config().dir).unwrap_or(0);
    let (md5_waits, md5_waited) = shared.hashes.waits();
    let text = shared.metrics.render(
        &[
            (
                "edgemirror_store_write_failures_total",
                "Segment writes and syncs that failed.",
                store.write_failures() as f64,
            ),
            ("edgemirror_store_compactions_total", "Segments rewritten by compaction.", load(&stats.compactions)),
            (
                "edgemirror_store_compaction_bytes_copied_total",
                "Live bytes compaction copied.",
                load(&stats.compaction_bytes_copied),
            ),
            (
                "edgemirror_store_compaction_bytes_removed_total",
                "Segment bytes compaction gave back.",
                load(&stats.compaction_bytes_removed),
            ),
            (
                "edgemirror_store_capacity_refusals_total",
                "Writes refused for capacity (store.max_bytes, min_free_bytes).",
                load(&stats.capacity_refusals),
            ),
            (
                "edgemirror_store_objects_deleted_total",
                "Objects the store removed (deletes, purges, overwrites).",
                load(&stats.objects_deleted),
            ),
            (
                "edgemirror_store_evictions_total",
                "Objects of cache-mode buckets evicted for room.",
                load(&stats.evictions),
            ),
            ("edgemirror_store_evicted_bytes_total", "Bytes evicted.", load(&stats.evicted_bytes)),
            (
                "edgemirror_origin_breaker_opened_total",
                "Times an origin's circuit breaker opened.",
                load(&shared.breakers.opened),
            ),
            (
                "edgemirror_origin_breaker_rejections_total",
                "Misses answered 424 by an open breaker.",
                load(&shared.breakers.rejected),
            ),
            (
                "edgemirror_origin_negative_hits_total",
                "Misses answered 404 from the remembered origin 404s.",
                load(&shared.negative.hits),
            ),
            (
                "edgemirror_origin_fetch_slot_waits_total",
                "Fetches that waited for a slot (origin.max_fetches_per_origin).",
                load(&shared.fetch_slots.waited),
            ),
            (
                "edgemirror_origin_paced_seconds_total",
                "Time fetches were held back by byte-rate caps.",
                load(&shared.pacers.paced_ms) / 1e3,
            ),
            (
                "edgemirror_fill_md5_waits_total",
                "Times a fill stopped reading its origin until its hasher (the ETag's MD5 and the record's CRC-32C) caught up: the node is short of CPU for its misses.",
                md5_waits as f64,
            ),
            (
                "edgemirror_fill_md5_wait_seconds_total",
                "Time fills spent in those waits, their clients' bodies paused.",
                md5_waited.as_secs_f64(),
            ),
        ],
        &[
            ("edgemirror_store_objects", "Objects in the store.", store.object_count() as f64),
            ("edgemirror_store_disk_bytes", "Bytes of segment files.", store.disk_bytes() as f64),
            ("edgemirror_store_live_bytes", "Bytes of live records in the segments.", store.live_bytes() as f64),
            ("edgemirror_store_free_bytes", "Bytes free for the store's filesystem.", free as f64),
            ("edgemirror_store_segments", "Segment files.", store.segment_count() as f64),
            (
                "edgemirror_store_ballast_bytes",
                "Bytes of the ballast file kept for a full disk.",
                store.ballast_bytes() as f64,
            ),
            ("edgemirror_hot_memory_bytes", "Bytes in the RAM tier.", shared.hot.memory_usage() as f64),
            (
                "edgemirror_origin_breakers_open",
                "Origin breakers open or half-open.",
                shared.breakers.open_count() as f64,
            ),
            ("edgemirror_origin_negative_entries", "Remembered origin 404s.", shared.negative.len() as f64),
            ("edgemirror_fills_in_flight", "Origin fetches in flight.", shared.fills.len() as f64),
            (
                "edgemirror_md5_queued_bytes",
                "Body bytes of fills waiting for their MD5 (on the workers' lanes or the MD5 threads).",
                shared.hashes.queued_bytes() as f64,
            ),
            (
                "edgemirror_fill_clients",
                "Clients following a fill (the leader and the coalesced waiters).",
                shared.fills.clients() as f64,
            ),
            (
                "edgemirror_fleet_peers",
                "Fleet members configured (this node included).",
                shared.fleet.counts().0 as f64,
            ),
            (
                "edgemirror_fleet_peers_up",
                "Fleet members up at the last probe (this node included).",
                shared.fleet.counts().1 as f64,
            ),
        ],
    );
    let mut s = text;
    if let Some(log) = &shared.access_log {
        for (name, help, c) in [
            ("edgemirror_access_log_lines_total", "Access log lines formatted.", &log.lines),
            ("edgemirror_access_log_dropped_total", "Access log lines dropped: the writer fell behind.", &log.dropped),
            ("edgemirror_access_log_write_failures_total", "Access log writes that failed.", &log.write_failures),
        ] {
            samples(&mut s, name, "counter", help, [("", c.get())]);
        }
    }
    let states = shared.breakers.states().into_iter().take(crate::metrics::MAX_ORIGIN_LABELS);
    let breakers = states.flat_map(|(origin, state)| {
        let origin = escape_label(&origin);
        ["closed", "open", "half-open"]
            .into_iter()
            .map(move |st| (format!("origin=\"{origin}\",state=\"{st}\""), u8::from(st == state)))
    });
    let help = "1 for the state of each origin's breaker (origins without recent failures are closed, unlisted).";
    samples(&mut s, "edgemirror_origin_breaker_state", "gauge", help, breakers);
    // Backfill jobs, per bucket: keys by outcome, bytes, and whether it runs.
    let jobs: Vec<(String, [u64; 5], bool)> =
        backfill::progress().into_iter().map(|(b, keys, running)| (escape_label(&b), keys, running)).collect();
    let keys = jobs.iter().flat_map(|(bucket, keys, _)| {
        ["total", "done", "skipped", "failed"]
            .iter()
            .zip(keys)
            .map(move |(what, v)| (format!("bucket=\"{bucket}\",state=\"{what}\""), *v))
    });
    let help = "Keys of each bucket's backfill job: total, and finished by outcome.";
    samples(&mut s, "edgemirror_backfill_keys", "gauge", help, keys);
    let bytes = jobs.iter().map(|(bucket, keys, _)| (format!("bucket=\"{bucket}\""), keys[4]));
    samples(&mut s, "edgemirror_backfill_bytes", "gauge", "Bytes each bucket's backfill job has imported.", bytes);
    let running = jobs.iter().map(|(bucket, _, running)| (format!("bucket=\"{bucket}\""), u8::from(*running)));
    let help = "1 while a bucket's backfill job is listing or importing.";
    samples(&mut s, "edgemirror_backfill_running", "gauge", help, running);
    s
}

async fn respond(stream: &mut TcpStream, answer: Answer, keep_alive: bool) -> std::io::Result<()> {
    let mut out = String::with_capacity(256 + answer.body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nServer: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n{}",
        answer.status,
        reply::reason(answer.status),
        reply::SERVER,
        answer.content_type,
        answer.body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
        answer.body,
    );
    let (res, _) = stream.write_all(out.into_bytes()).await;
    res.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_checks() {
        assert!(authorized("s3cret", Some(b"Bearer s3cret")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cre")));
        assert!(!authorized("s3cret", Some(b"s3cret")));
        assert!(!authorized("s3cret", None));
        assert!(!authorized("", Some(b"Bearer ")));
    }

    #[test]
    fn back_source_paths() {
        let br = |p: &'static [u8]| bucket_resource(p);
        assert_eq!(br(b"/v1/regions/cn-north-1/buckets/b1/backSource"), Some((&b"b1"[..], &b"backSource"[..])));
        assert_eq!(br(b"/v1/regions/r/buckets/b1/purge"), Some((&b"b1"[..], &b"purge"[..])));
        assert_eq!(br(b"/v1/regions//buckets/b1/backSource"), None);
        assert_eq!(br(b"/v1/regions/r/buckets/b1/"), None);
        assert_eq!(br(b"/v1/regions/r/buckets/a/b/backSource"), None);
    }
}
