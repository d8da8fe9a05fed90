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
//! The fill, step by step: origin head -> store record begun -> client head sent -> for each body
//! piece: append to the record, write to the client -> commit. If the origin breaks mid-body the
//! record is abandoned (never visible) and the client connection is cut, so a client never takes
//! a short body for a whole one. If the client goes away, the fill carries on and stores the
//! object: the next client gets it locally.
//!
//! The streamed response carries no ETag: it is the MD5 of bytes that have not arrived yet.
//! Every later response for the object has it.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::{ObjectKeyRef, RecordMeta, RecordWriter};
use edgemirror_proto::{self as proto, Version};

use crate::conn::{Conn, Disposition, Request};
use crate::error::S3Error;
use crate::origin::{self, OriginResponse};
use crate::reply::{self, Framing, SOURCE_HEADER};
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
        if uri.scheme_str() == Some("https") {
            return Err(format!("Location '{loc}': https origins are not supported yet"));
        }
        let authority = uri.authority().ok_or_else(|| format!("Location '{loc}' has no host"))?;
        let (host, port) = rules::parse_host_port(authority.as_str()).map_err(|e| format!("Location: {e}"))?;
        let target = OriginAddr { path: "/".into(), ..origin_addr(false, &host, port) };
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

fn origin_addr(tls: bool, host: &str, port: Option<u16>) -> OriginAddr {
    let default_port = if tls { 443 } else { 80 };
    let port = port.unwrap_or(default_port);
    let host_header = match (port == default_port, host.contains(':')) {
        (true, false) => host.to_string(),
        (true, true) => format!("[{host}]"),
        (false, false) => format!("{host}:{port}"),
        (false, true) => format!("[{host}]:{port}"),
    };
    OriginAddr { tls, host: host.to_string(), port, host_header, path: "/".into() }
}

/// Fetches `key` from `rule`'s origin, answering the client and storing the object.
pub async fn fill(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    rule: &MirrorRule,
) -> Result<Disposition, S3Error> {
    let metrics = worker.metrics();
    let shared = &worker.shared;
    if req.header("via").is_some_and(|v| contains(v, shared.via_token.as_bytes())) {
        // We are our own origin (a rule whose host name resolves to this node): stop here.
        metrics.origin_failures.inc();
        tracing::warn!(request_id = %req.id, "mirror loop detected (request came from this node)");
        return Err(S3Error::MirrorFailed("mirror loop".into()));
    }
    metrics.origin_fetches.inc();
    let client_headers = req.head.headers.iter().map(|h| (h.name.get(req.buf), h.value.get(req.buf)));
    let (extra, client_host) = origin_headers(&rule.headers, client_headers);

    let mut target = rule.origin.clone();
    let mut path = origin_path(rule, key.key, req.query());
    let mut hops = 0;
    let mut resp = loop {
        let host = match (&client_host, hops) {
            (Some(h), 0) => h.as_slice(),
            _ => target.host_header.as_bytes(),
        };
        let request = origin::build_request(&path, host, &extra, &shared.via_token);
        let url = format!("{}://{}{path}", target.scheme(), target.host_header);
        let resp = match origin::fetch(&target, request, &shared.config.origin, &worker.pool).await {
            Ok(r) => r,
            Err(e) => {
                metrics.origin_failures.inc();
                tracing::warn!(request_id = %req.id, origin = %url, error = %e, "mirror fetch failed");
                return Err(S3Error::MirrorFailed(e.to_string()));
            }
        };
        if !is_redirect(resp.status) {
            break resp;
        }
        let Some(location) = resp.header("location") else {
            metrics.origin_failures.inc();
            return Err(S3Error::MirrorFailed(format!("origin answered {} without Location", resp.status)));
        };
        if !rule.follow_redirects {
            return pass_redirect(worker, conn, req, resp.status, location).await;
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            metrics.origin_failures.inc();
            tracing::warn!(request_id = %req.id, origin = %url, "more than {MAX_REDIRECTS} redirects");
            return Err(S3Error::MirrorFailed("too many redirects".into()));
        }
        match resolve_location(&target, &path, location) {
            Ok((t, p)) => (target, path) = (t, p),
            Err(e) => {
                metrics.origin_failures.inc();
                tracing::warn!(request_id = %req.id, origin = %url, error = %e, "unfollowable redirect");
                return Err(S3Error::MirrorFailed(e));
            }
        }
    };
    let origin_url = format!("{}://{}{path}", target.scheme(), target.host_header);
    match resp.status {
        200 => {}
        404 => {
            metrics.origin_not_found.inc();
            return Err(S3Error::NoSuchKey);
        }
        status => {
            metrics.origin_failures.inc();
            tracing::warn!(request_id = %req.id, origin = %origin_url, status, "origin answered with a non-200 status");
            return Err(S3Error::MirrorFailed(format!("origin status {status}")));
        }
    }
    if let Some(te) = resp.header("transfer-encoding") {
        // After de-chunking, any other coding would leave the stored bytes still encoded with
        // nothing saying so.
        if !te.eq_ignore_ascii_case(b"chunked") {
            metrics.origin_failures.inc();
            return Err(S3Error::MirrorFailed("origin used a transfer coding other than chunked".into()));
        }
    }

    let meta = saved_meta(&resp);
    let length = resp.body.content_length();
    let mut writer = match shared.store.begin(worker.id, key, meta.clone(), length) {
        Ok(w) => Some(w),
        Err(e) => {
            // Serve the client anyway; the object is just not kept.
            tracing::error!(request_id = %req.id, error = %e, "cannot store mirrored object; passing it through");
            None
        }
    };

    // The response head goes out now: the client sees the first bytes before the origin is done.
    let http10 = req.head.version == Version::Http10;
    let framing = match length {
        Some(n) => Framing::Length(n),
        None if http10 => Framing::Close,
        None => Framing::Chunked,
    };
    let keep_alive = req.head.keep_alive && framing != Framing::Close;
    let out = &mut conn.out;
    reply::start(out, 200, &worker.date, req.id);
    for (name, value) in &meta.headers {
        reply::header(out, name.as_str(), value);
    }
    out.extend_from_slice(b"Last-Modified: ");
    out.extend_from_slice(httpdate::fmt_http_date(meta.last_modified).as_bytes());
    out.extend_from_slice(b"\r\n");
    reply::header(out, "x-amz-storage-class", meta.storage_class.as_str().as_bytes());
    reply::header(out, SOURCE_HEADER, b"origin");
    reply::finish(out, framing, keep_alive);
    let mut client_ok = conn.flush().await.is_ok();

    let mut chunk_head = BytesMut::with_capacity(16);
    loop {
        let piece = match resp.body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                metrics.origin_body_failures.inc();
                tracing::warn!(request_id = %req.id, origin = %origin_url, error = %e, "origin body failed; object not stored");
                // Dropping the writer abandons the record; returning Close cuts the client off
                // before the announced length (or the last chunk), so it cannot mistake the
                // bytes it got for the whole object.
                return Ok(Disposition::Close);
            }
        };
        metrics.bytes_from_origin.add(piece.len() as u64);
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.append(&piece) {
                tracing::error!(request_id = %req.id, error = %e, "store write failed; passing the rest through");
                writer = None;
            }
        }
        if client_ok {
            client_ok = send_piece(conn, framing, piece, &mut chunk_head).await.is_ok();
        }
        if !client_ok && writer.is_none() {
            // Nobody left to serve and nothing to store.
            return Ok(Disposition::Close);
        }
    }
    resp.body.release(&worker.pool);

    if let Some(w) = writer {
        commit(worker, req, w);
    }
    if client_ok && framing == Framing::Chunked {
        conn.out.extend_from_slice(proto::LAST_CHUNK);
        client_ok = conn.flush().await.is_ok();
    }
    Ok(if client_ok && keep_alive { Disposition::KeepAlive } else { Disposition::Close })
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
    Ok(match conn.flush().await {
        Ok(()) if keep_alive => Disposition::KeepAlive,
        _ => Disposition::Close,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn commit(worker: &Worker, req: &Request<'_>, writer: RecordWriter) {
    match writer.commit() {
        Ok(obj) => {
            worker.metrics().objects_mirrored.inc();
            worker.shared.hot.insert(&obj);
        }
        Err(e) => {
            tracing::error!(request_id = %req.id, error = %e, "mirrored object not committed")
        }
    }
}

/// The seed's saved headers, in the order the origin sent them.
fn saved_meta(resp: &OriginResponse) -> RecordMeta {
    let mut meta = RecordMeta::new(SystemTime::now());
    for (name, value) in resp.headers() {
        if let Some(h) = reply::saved_header(name) {
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
    conn.out.extend_from_slice(proto::CHUNK_END);
    // The CRLF rides with the next chunk's header or the last chunk.
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
        let cur = origin_addr(false, "a.example", Some(8080));
        let (t, p) = resolve_location(&cur, "/dir/x.jpg?q", b"y.jpg").unwrap();
        assert_eq!((t.host_header.as_str(), p.as_str()), ("a.example:8080", "/dir/y.jpg"));
        let (_, p) = resolve_location(&cur, "/dir/x.jpg", b"/other/z").unwrap();
        assert_eq!(p, "/other/z");
        let (t, p) = resolve_location(&cur, "/dir/x", b"http://b.example/p?x=1").unwrap();
        assert_eq!((t.host_header.as_str(), t.port, p.as_str()), ("b.example", 80, "/p?x=1"));
        let (t, _) = resolve_location(&cur, "/dir/x", b"//c.example:81/p").unwrap();
        assert_eq!(t.host_header, "c.example:81");
        assert!(resolve_location(&cur, "/", b"https://s.example/").is_err());
        assert!(resolve_location(&cur, "/", b"").is_err());
    }
}
