//! Mirror back-to-origin ("image back-to-origin"): a GET for an object the store lacks is fetched
//! from the first matching rule's origin, streamed to the client and written to the store from
//! the same buffers.
//!
//! Semantics (the reference feature, `shared/seed/`):
//! - rules are matched in order by key prefix; the origin URL is MirrorURL + key, and the object
//!   is stored under the same key;
//! - no client header is sent to the origin unless the rule's header rule lets it through
//!   (pass all / pass these / never these / set these); `Host` is the origin's host unless the
//!   rule passes the client's; the query string is passed only with `allowQueryString`;
//! - 3xx responses are followed (at most 10 hops, relative `Location` resolved) and the final
//!   body is stored under the requested key; with `followRedirects: false` the 3xx status and
//!   `Location` are passed to the client and nothing is stored;
//! - origin 404 -> 404 `NoSuchKey`; any other non-200, a network error or a timeout -> 424
//!   `MirrorFailed` (while no response head has been sent);
//! - Content-Type, Content-Encoding, Content-Disposition, Cache-Control and Expires are returned
//!   and saved; the object is stored as STANDARD;
//! - a chunked (or close-delimited) origin body is passed on chunked;
//! - once stored, the object is never refreshed from the origin.
//!
//! One fetch per object ([`crate::fill`]): concurrent misses of a key, on any core, share one
//! fill. The fill task: origin head -> store record begun -> for each body piece: append to the
//! record, publish progress -> verify (length, Content-MD5) and commit. Each client follows the
//! record at its own pace. If the origin breaks mid-body the record is abandoned (never visible)
//! and every client connection is cut, so no client takes a short body for a whole one. If the
//! clients go away, the fill carries on and stores the object.
//!
//! The streamed response carries no ETag: it is the MD5 of bytes that have not arrived yet.
//! Every later response for the object has it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::{ObjectKeyRef, RecordMeta, SavedHeader};
use edgemirror_proto::{self as proto, RangeRequest, Version};

use crate::conn::{Conn, Disposition, Request};
use crate::error::S3Error;
use crate::fill::{Fill, FillBody, FillGuard, Join, Phase, Refusal};
use crate::object;
use crate::origin::{self, OriginResponse};
use crate::reply::{self, Framing, RequestId, SOURCE_HEADER};
use crate::rules::{self, HeaderRule, MirrorRule, OriginAddr, MAX_REDIRECTS};
use crate::server::Worker;

/// The origin request path for `key` under `rule`: MirrorURL's path + the percent-encoded origin
/// key (after the rule's key rewrite), + the client's query string when the rule allows it.
pub fn origin_path(rule: &MirrorRule, key: &str, query: Option<&[u8]>) -> String {
    let origin_key = rule.origin_key(key);
    let mut path = String::with_capacity(rule.origin.path.len() + origin_key.len() + 16);
    path.push_str(&rule.origin.path);
    proto::encode_key(&origin_key, &mut path);
    if let (true, Some(q)) = (rule.allow_query_string, query) {
        if !q.is_empty() {
            path.push('?');
            // The parser admits only visible ASCII in the request target.
            path.push_str(&String::from_utf8_lossy(q));
        }
    }
    path
}

/// Applies a header rule to the client's headers: which go to the origin, plus the ones the rule
/// sets, and the client's `Host` when the rule passes it.
pub fn origin_headers<'a>(
    rule: &HeaderRule,
    client: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> (Vec<origin::HeaderPair>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    let mut host = None;
    let blocked = |lower: &str| rule.not_allow.iter().any(|n| n == lower);
    let allowed = |lower: &str| rule.allow_all || rule.allow.iter().any(|n| n == lower);
    for (name, value) in client {
        let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
        if rules::is_forbidden_header(&lower) || blocked(&lower) || !allowed(&lower) {
            continue;
        }
        if lower == "host" {
            host = Some(value.to_vec());
        } else if lower != "via" && !rule.set.iter().any(|(n, _)| *n == lower) {
            out.push((name.to_vec(), value.to_vec()));
        }
    }
    for (name, value) in &rule.set {
        out.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    (out, host)
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Resolves a `Location` against the URL just fetched. Absolute (`http://h/p`), scheme-relative
/// (`//h/p`), absolute-path (`/p`) and relative (`p`, against the current directory) forms.
pub fn resolve_location(
    current: &OriginAddr,
    current_path: &str,
    location: &[u8],
) -> Result<(OriginAddr, String), String> {
    let loc = std::str::from_utf8(location).map_err(|_| "Location is not UTF-8".to_string())?.trim();
    if loc.is_empty() || loc.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("Location is empty or holds spaces or control characters".into());
    }
    let absolute = if let Some(rest) = loc.strip_prefix("//") {
        Some(format!("{}://{rest}", current.scheme()))
    } else if loc.starts_with("http://") || loc.starts_with("https://") {
        Some(loc.to_string())
    } else {
        None
    };
    if let Some(url) = absolute {
        let uri: http::Uri = url.parse().map_err(|e| format!("Location '{loc}': {e}"))?;
        let tls = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or_else(|| format!("Location '{loc}' has no host"))?;
        let (host, port) = rules::parse_host_port(authority.as_str()).map_err(|e| format!("Location: {e}"))?;
        let target = OriginAddr::new(tls, &host, port, "/");
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        return Ok((target, path));
    }
    let path = if loc.starts_with('/') {
        loc.to_string()
    } else {
        let path_only = current_path.split('?').next().unwrap_or("/");
        let dir = &path_only[..path_only.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{loc}")
    };
    Ok((current.clone(), path))
}

/// Everything the fill task needs, owned: it outlives the request that started it.
struct FetchPlan {
    rule: MirrorRule,
    path: String,
    extra: Vec<origin::HeaderPair>,
    client_host: Option<Vec<u8>>,
    request_id: RequestId,
}

/// Answers a GET (or, with `mirrorHead`, a HEAD) for an object the store lacks: joins the fill
/// for this key or starts one, then follows it.
pub async fn serve_miss(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    rule: &MirrorRule,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    if req.header("via").is_some_and(|v| contains(v, shared.via_token.as_bytes())) {
        // We are our own origin (a rule whose host name resolves to this node): stop here.
        worker.metrics().origin_failures.inc();
        tracing::warn!(request_id = %req.id, "mirror loop detected (request came from this node)");
        return Err(S3Error::MirrorFailed("mirror loop".into()));
    }
    let fill = match shared.fills.join(key, &shared.store) {
        Join::Stored => return object::serve_from_store(worker, conn, req, key).await,
        Join::Follow(fill) => {
            worker.metrics().coalesced_misses.inc();
            fill
        }
        Join::Lead(guard) => {
            let client_headers = req.head.headers.iter().map(|h| (h.name.get(req.buf), h.value.get(req.buf)));
            let (extra, client_host) = origin_headers(&rule.headers, client_headers);
            let plan = FetchPlan {
                rule: rule.clone(),
                path: origin_path(rule, key.key, req.query()),
                extra,
                client_host,
                request_id: req.id,
            };
            let fill = guard.fill().clone();
            monoio::spawn(run(worker.clone(), guard, plan));
            fill
        }
    };
    follow(worker, conn, req, &fill).await
}

/// The fill task: fetch from the origin (following redirects), write the body to the store,
/// publish progress, commit. Runs to the end even when every client has gone (unless
/// `origin.complete_on_client_abort` is off).
async fn run(worker: Rc<Worker>, guard: FillGuard, plan: FetchPlan) {
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
        let resp = match origin::fetch(&target, request, &shared.config.origin, &worker.pool).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(request_id = %rid, origin = %url, error = %e, "mirror fetch failed");
                return refuse(guard, e.to_string());
            }
        };
        if !is_redirect(resp.status) {
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
        match resolve_location(&target, &path, location) {
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
    let key = ObjectKeyRef::new(&guard.fill().key.bucket, &guard.fill().key.key);
    let mut writer = match shared.store.begin(worker.id, key, meta.clone(), length) {
        Ok(w) => w,
        Err(e) => {
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
        Err(e) => {
            metrics.origin_body_failures.inc();
            tracing::warn!(request_id = %rid, origin = %origin_url, error = %e, "mirrored object failed verification; not stored");
            guard.finish(Phase::Broken);
        }
    }
}

/// Streams a fill to one client: waits for the head, then sends what the record holds as it
/// grows. Ranges are answered from the bytes of the whole object as they arrive.
async fn follow(worker: &Worker, conn: &mut Conn, req: &Request<'_>, fill: &Arc<Fill>) -> Result<Disposition, S3Error> {
    let mut rx = fill.subscribe();
    loop {
        let phase = rx.borrow_and_update().clone();
        match phase {
            Phase::Fetching => {}
            Phase::Refused(Refusal::NotFound) => return Err(S3Error::NoSuchKey),
            Phase::Refused(Refusal::Failed(reason)) => return Err(S3Error::MirrorFailed(reason)),
            Phase::Refused(Refusal::Redirect { status, location }) => {
                return pass_redirect(worker, conn, req, status, &location).await;
            }
            Phase::Broken => return Err(S3Error::MirrorFailed("the origin body failed".into())),
            Phase::Streaming { .. } | Phase::Complete { .. } => break,
        }
        if rx.changed().await.is_err() {
            return Err(S3Error::MirrorFailed("fill ended".into()));
        }
    }
    let Some(body) = fill.body() else { return Err(S3Error::Internal("fill streaming without a body".into())) };

    // What to send: the whole object, or one range of it when the length is known up front.
    let mut range = 0..body.length.unwrap_or(u64::MAX);
    let mut status = 200;
    if let (Some(size), Some(value), None) = (body.length, req.header("range"), req.header("if-range")) {
        match proto::parse_range(value, size) {
            RangeRequest::Full => {}
            RangeRequest::Satisfiable(ranges) if ranges.len() == 1 => {
                range = ranges.first();
                status = 206;
            }
            RangeRequest::Satisfiable(_) => {
                // Several ranges: answered as multipart from the stored object once complete.
                return wait_then_serve_stored(worker, conn, req, fill, rx).await;
            }
            RangeRequest::Unsatisfiable => return Err(S3Error::InvalidRange { size }),
        }
    } else if body.length.is_none() && req.header("range").is_some() {
        // A chunked origin: the size, and so any Content-Range, is known only at the end.
        return wait_then_serve_stored(worker, conn, req, fill, rx).await;
    }

    let http10 = req.head.version == Version::Http10;
    let framing = match body.length {
        Some(_) => Framing::Length(range.end - range.start),
        None if http10 => Framing::Close,
        None => Framing::Chunked,
    };
    let keep_alive = req.head.keep_alive && framing != Framing::Close;
    let out = &mut conn.out;
    reply::start(out, status, &worker.date, req.id);
    reply::object_headers(out, &body.meta, None, "origin");
    if status == 206 {
        let size = body.length.unwrap_or(0);
        let value = format!("bytes {}-{}/{size}", range.start, range.end - 1);
        reply::header(out, "Content-Range", value.as_bytes());
    }
    reply::finish(out, framing, keep_alive);
    if req.is_head() {
        return Ok(Disposition::after(conn.flush().await, keep_alive));
    }
    if conn.flush().await.is_err() {
        return Ok(Disposition::Close);
    }

    let mut pos = range.start;
    let mut chunk_head = BytesMut::with_capacity(16);
    loop {
        let phase = rx.borrow_and_update().clone();
        let readable = match phase {
            Phase::Complete { written } => written,
            // Hold the last byte (or the last chunk) back until the object is verified.
            Phase::Streaming { written } => match body.length {
                Some(len) => written.min(len.saturating_sub(1)),
                None => written,
            },
            _ => return Ok(Disposition::Close),
        };
        let end = readable.min(range.end);
        while pos < end {
            let piece = match body.reader.read(pos, FOLLOW_READ_BYTES.min((end - pos) as usize)) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(request_id = %req.id, error = %e, "reading a fill back failed");
                    return Ok(Disposition::Close);
                }
            };
            pos += piece.len() as u64;
            if send_piece(conn, framing, piece, &mut chunk_head).await.is_err() {
                return Ok(Disposition::Close);
            }
        }
        if matches!(phase, Phase::Complete { .. }) && pos >= end {
            break;
        }
        if rx.changed().await.is_err() {
            return Ok(Disposition::Close);
        }
    }
    if framing == Framing::Chunked {
        conn.out.extend_from_slice(proto::LAST_CHUNK);
    }
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Largest piece a follower reads from the record at once.
const FOLLOW_READ_BYTES: usize = 256 * 1024;

/// Waits for the fill to end, then answers from the store (multipart ranges, ranges of chunked
/// origins).
async fn wait_then_serve_stored(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    fill: &Arc<Fill>,
    mut rx: tokio::sync::watch::Receiver<Phase>,
) -> Result<Disposition, S3Error> {
    loop {
        match rx.borrow_and_update().clone() {
            Phase::Complete { .. } => {
                let key = ObjectKeyRef::new(&fill.key.bucket, &fill.key.key);
                return object::serve_from_store(worker, conn, req, key).await;
            }
            Phase::Broken | Phase::Refused(_) => return Err(S3Error::MirrorFailed("the origin body failed".into())),
            Phase::Fetching | Phase::Streaming { .. } => {}
        }
        if rx.changed().await.is_err() {
            return Err(S3Error::MirrorFailed("fill ended".into()));
        }
    }
}

/// `followRedirects: false`: the client gets the origin's 3xx and its Location; nothing is stored.
async fn pass_redirect(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    status: u16,
    location: &[u8],
) -> Result<Disposition, S3Error> {
    let keep_alive = req.head.keep_alive;
    reply::start(&mut conn.out, status, &worker.date, req.id);
    reply::header(&mut conn.out, "Location", location);
    reply::header(&mut conn.out, SOURCE_HEADER, b"origin");
    reply::finish(&mut conn.out, Framing::Length(0), keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// Content-MD5 is the base64 of the 16-byte digest (RFC 1864).
fn decode_md5(value: &[u8]) -> Option<[u8; 16]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(value.trim_ascii()).ok()?;
    bytes.try_into().ok()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The seed's saved headers, in the order the origin sent them.
fn saved_meta(resp: &OriginResponse) -> RecordMeta {
    let mut meta = RecordMeta::new(SystemTime::now());
    for (name, value) in resp.headers() {
        if let Some(h) = SavedHeader::from_name(name) {
            if meta.header(h).is_none() {
                meta.headers.push((h, Bytes::copy_from_slice(value)));
            }
        }
    }
    meta
}

async fn send_piece(conn: &mut Conn, framing: Framing, piece: Bytes, chunk_head: &mut BytesMut) -> std::io::Result<()> {
    if framing != Framing::Chunked {
        return conn.write_bytes(piece).await;
    }
    chunk_head.clear();
    proto::encode_chunk_header(piece.len(), chunk_head);
    conn.out.extend_from_slice(chunk_head);
    conn.send_with_body(piece).await?;
    // The CRLF after the data rides with the next chunk's header or the last chunk.
    conn.out.extend_from_slice(proto::CHUNK_END);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{validate_rule, BackSourceRule};

    fn rule(json: &str) -> MirrorRule {
        validate_rule(&serde_json::from_str::<BackSourceRule>(json).unwrap(), &[]).unwrap()
    }

    #[test]
    fn origin_path_is_mirror_url_path_plus_encoded_key() {
        let r = rule(r#"{"address":{"hostName":"www.example-domain.com","path":"/dir1/"}}"#);
        assert_eq!(origin_path(&r, "image/example_object.jpg", None), "/dir1/image/example_object.jpg");
        assert_eq!(origin_path(&r, "a b/ü?.jpg", Some(b"x=1")), "/dir1/a%20b/%C3%BC%3F.jpg");
        let r = rule(r#"{"address":{"hostName":"h"},"allowQueryString":true}"#);
        assert_eq!(origin_path(&r, "k", Some(b"x=1&y=%20")), "/k?x=1&y=%20");
        assert_eq!(origin_path(&r, "k", None), "/k");
    }

    #[test]
    fn header_rule_matches_the_reference_example() {
        // The seed: allow a-header, forbid b-header, set c-header=000.
        let r = rule(
            r#"{"address":{"hostName":"source.com"},"headerRule":{"allowHeaders":["a-header"],"notAllowHeaders":["b-header"],"setHeaders":{"c-header":"000"}}}"#,
        );
        let client: [(&[u8], &[u8]); 4] =
            [(b"host", b"bucket.s3.example"), (b"a-header", b"111"), (b"b-header", b"222"), (b"c-header", b"333")];
        let (headers, host) = origin_headers(&r.headers, client.into_iter());
        assert_eq!(headers, vec![(b"a-header".to_vec(), b"111".to_vec()), (b"c-header".to_vec(), b"000".to_vec())]);
        assert_eq!(host, None, "Host is the origin's");
    }

    #[test]
    fn pass_all_passes_host_unless_forbidden_and_never_credentials() {
        let all = rule(r#"{"address":{"hostName":"h"},"headerRule":{"allowAllHeaders":true}}"#);
        let client: [(&[u8], &[u8]); 4] =
            [(b"Host", b"bucket.example"), (b"Authorization", b"AWS x"), (b"Range", b"bytes=0-1"), (b"X-A", b"1")];
        let (headers, host) = origin_headers(&all.headers, client.into_iter());
        assert_eq!(headers, vec![(b"X-A".to_vec(), b"1".to_vec())]);
        assert_eq!(host.as_deref(), Some(&b"bucket.example"[..]));
        let no_host =
            rule(r#"{"address":{"hostName":"h"},"headerRule":{"allowAllHeaders":true,"notAllowHeaders":["Host"]}}"#);
        assert_eq!(origin_headers(&no_host.headers, client.into_iter()).1, None);
        let none = rule(r#"{"address":{"hostName":"h"}}"#);
        assert!(origin_headers(&none.headers, client.into_iter()).0.is_empty(), "default: nothing passes");
    }

    #[test]
    fn locations_resolve() {
        let cur = OriginAddr::new(false, "a.example", Some(8080), "/");
        let (t, p) = resolve_location(&cur, "/dir/x.jpg?q", b"y.jpg").unwrap();
        assert_eq!((t.host_header.as_str(), p.as_str()), ("a.example:8080", "/dir/y.jpg"));
        let (_, p) = resolve_location(&cur, "/dir/x.jpg", b"/other/z").unwrap();
        assert_eq!(p, "/other/z");
        let (t, p) = resolve_location(&cur, "/dir/x", b"http://b.example/p?x=1").unwrap();
        assert_eq!((t.host_header.as_str(), t.port, p.as_str()), ("b.example", 80, "/p?x=1"));
        let (t, _) = resolve_location(&cur, "/dir/x", b"//c.example:81/p").unwrap();
        assert_eq!(t.host_header, "c.example:81");
        let (t, _) = resolve_location(&cur, "/", b"https://s.example/").unwrap();
        assert!(t.tls && t.port == 443 && t.host_header == "s.example");
        assert!(resolve_location(&cur, "/", b"").is_err());
    }
}
