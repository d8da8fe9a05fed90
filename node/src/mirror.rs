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
//! This module is the translation only: rule + requested key + client request -> the origin
//! request ([`FetchPlan`]), and an origin `Location` -> the next hop. Fetching and storing is
//! the producer's (`fill.rs`); streaming to clients is the followers' (`follow.rs`).
//!
//! A mirror never asks for a path outside its MirrorURL's directory: a key (after the rule's
//! rewrite) with a `.` or `..` segment, in any spelling that decodes to one (`..`, `%2E%2E`,
//! `.%2e`, with `/`, `%2F` or `\\` around it), is refused with 400 `InvalidRequest` before any
//! origin is contacted. A stored object with such a key (put through the S3 API) is still served.

use edgemirror_proto as proto;

use crate::error::S3Error;
use crate::origin;
use crate::reply::RequestId;
use crate::respond::Request;
use crate::rules::{self, HeaderRule, MirrorRule, OriginAddr};

/// Everything the fill task needs to fetch one object, owned: it outlives the request that
/// started it.
#[derive(Clone)]
pub struct FetchPlan {
    pub rule: MirrorRule,
    /// Origin request path and query, encoded.
    pub path: String,
    /// The key asked of the origin (after the rule's rewrite): what a signed S3 origin request
    /// names.
    pub origin_key: String,
    /// Client headers the rule passes, and the headers it sets.
    pub extra: Vec<origin::HeaderPair>,
    /// The client's `Host`, when the rule passes it (first hop only).
    pub client_host: Option<Vec<u8>>,
    pub request_id: RequestId,
    /// A byte-rate cap of the fetch's own (a backfill job's), besides its origin's.
    pub pacer: Option<std::sync::Arc<crate::protect::Pacer>>,
    /// In a fleet, when another node owns the key: the request to the owner (and the next up
    /// peers as its standbys), asked before this plan's origin ([`peer_plan`]).
    pub peers: Option<Box<FetchPlan>>,
    /// Whether the addresses asked were named by a rule (the whole address policy applies) or
    /// configured by the operator (a peer, the shared store: private addresses allowed).
    pub reach: origin::Reach,
    /// Over a shared store of record: its requests, one per endpoint, asked before the peers
    /// and the origin ([`shared_plans`]).
    pub shared: Vec<FetchPlan>,
    /// `false` when no rule covers the key: the shared store is the only place to look, and its
    /// 404 is the answer.
    pub ask_origin: bool,
    /// Over a shared store: the object fetched from the origin is written there behind the
    /// clients (`false`: the caller writes it itself and waits, as a backfill does).
    pub write_behind: bool,
}

/// The origin request for `key` under `rule`, or why it may not be made.
pub fn plan(rule: &MirrorRule, key: &str, req: &Request<'_>) -> Result<FetchPlan, S3Error> {
    let client_headers = req.head.headers.iter().map(|h| (h.name.get(req.buf), h.value.get(req.buf)));
    let (extra, client_host) = origin_headers(&rule.headers, client_headers);
    Ok(FetchPlan {
        rule: rule.clone(),
        path: origin_path(rule, key, req.query())?,
        origin_key: fetchable_key(rule, key)?,
        extra,
        client_host,
        request_id: req.id,
        pacer: None,
        peers: None,
        reach: origin::Reach::Rule,
        shared: Vec::new(),
        ask_origin: true,
        write_behind: true,
    })
}

/// The origin request for `key` under `rule` made by the node itself (a forced re-fetch, a
/// backfill): no client headers, no query string; the headers the rule sets are sent.
pub fn plan_without_client(rule: &MirrorRule, key: &str, request_id: RequestId) -> Result<FetchPlan, S3Error> {
    let (extra, client_host) = origin_headers(&rule.headers, std::iter::empty());
    Ok(FetchPlan {
        rule: rule.clone(),
        path: origin_path(rule, key, None)?,
        origin_key: fetchable_key(rule, key)?,
        extra,
        client_host,
        request_id,
        pacer: None,
        peers: None,
        reach: origin::Reach::Rule,
        shared: Vec::new(),
        ask_origin: true,
        write_behind: true,
    })
}

/// The request for `bucket`/`key` to the fleet peers that rank before this node for the key
/// (`peers`, in order: the owner, then the next up peers as its standbys): `GET /{bucket}/{key}`
/// on a peer's data plane with the fleet's secret in [`crate::fleet::PEER_HEADER`], so the peer
/// answers it from its tiers or its own origin fill, never from another peer. A 5xx or no answer
/// moves to the next peer (as standbys); any other answer is the answer. `None` without peers.
pub fn peer_plan(
    peers: Vec<OriginAddr>,
    secret: &str,
    bucket: &str,
    key: &str,
    request_id: RequestId,
) -> Option<FetchPlan> {
    let mut peers = peers.into_iter().map(|mut p| {
        p.path = format!("/{bucket}/");
        p
    });
    let owner = peers.next()?;
    // A peer's redirect is its rule's `followRedirects: false`: passed on, as it would. The
    // secret travels in `extra` below; no client header is passed to a peer.
    let rule = node_rule(owner, peers.collect(), None);
    let mut path = rule.origin.path.clone();
    proto::encode_key(key, &mut path);
    Some(FetchPlan {
        extra: vec![(crate::fleet::PEER_HEADER.as_bytes().to_vec(), secret.as_bytes().to_vec())],
        ..node_plan(rule, path, key.to_string(), request_id)
    })
}

/// The requests for `bucket`/`key` to the shared store of record, one per endpoint in the
/// order the key asks them ([`crate::sharedstore::SharedStoreConfig::order`]): signed GETs (or
/// HEADs) of `{prefix}{bucket}/{key}` in the shared bucket, never redirected.
pub fn shared_plans(
    store: &crate::sharedstore::SharedStoreConfig,
    bucket: &str,
    key: &str,
    request_id: RequestId,
) -> Vec<FetchPlan> {
    if !crate::sharedstore::SharedStoreConfig::storable_key(key) {
        return Vec::new();
    }
    let object = crate::sharedstore::SharedStoreConfig::object_key(bucket, key);
    store
        .order(bucket, key)
        .map(|endpoint| {
            // A single-part object's ETag is its MD5: the body is checked against it.
            let rule = node_rule(endpoint.addr.clone(), Vec::new(), Some(endpoint.signer.clone()));
            let mut path = format!("/{}", endpoint.signer.prefix());
            proto::encode_key(&object, &mut path);
            // With no rule, the shared store's 404 is the answer ([`FetchPlan::ask_origin`]).
            FetchPlan { ask_origin: false, ..node_plan(rule, path, object.clone(), request_id) }
        })
        .collect()
}

/// The rule of a request the node makes to a place it was configured with (a peer, the shared
/// store), not one a user's rule names: no key rewrite, query or client header passed, no
/// redirect followed, Content-MD5 (and a signed S3 answer's ETag) checked.
fn node_rule(origin: OriginAddr, standbys: Vec<OriginAddr>, s3: Option<std::sync::Arc<rules::S3Signer>>) -> MirrorRule {
    MirrorRule {
        key_prefix: String::new(),
        origin,
        standbys,
        failover_statuses: Vec::new(),
        weights: Vec::new(),
        s3,
        key_rewrite: rules::KeyRewrite::None,
        allow_query_string: false,
        follow_redirects: false,
        headers: HeaderRule::default(),
        check_content_md5: true,
        mirror_head: false,
    }
}

/// A request to a place the node was configured with, under [`node_rule`]: no client header
/// passed, reached as a configured address (peers and the shared store usually live on a
/// private network).
fn node_plan(rule: MirrorRule, path: String, origin_key: String, request_id: RequestId) -> FetchPlan {
    FetchPlan {
        rule,
        path,
        origin_key,
        extra: Vec::new(),
        client_host: None,
        request_id,
        pacer: None,
        peers: None,
        reach: origin::Reach::Configured,
        shared: Vec::new(),
        ask_origin: true,
        write_behind: true,
    }
}

/// The origin request path for `key` under `rule`: MirrorURL's path + the percent-encoded origin
/// key (after the rule's key rewrite), + the client's query string when the rule allows it.
pub fn origin_path(rule: &MirrorRule, key: &str, query: Option<&[u8]>) -> Result<String, S3Error> {
    let origin_key = fetchable_key(rule, key)?;
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
    Ok(path)
}

/// The origin key of `key` under `rule`, refused when it holds a dot segment (it would leave the
/// MirrorURL's directory at the origin).
pub fn fetchable_key(rule: &MirrorRule, key: &str) -> Result<String, S3Error> {
    let origin_key = rule.origin_key(key);
    if proto::has_dot_segment(&origin_key) {
        return Err(S3Error::InvalidRequest(
            "the key holds a '.' or '..' path segment; it cannot be fetched from the mirror origin",
        ));
    }
    Ok(origin_key)
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

pub fn is_redirect(status: u16) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{validate_rule, BackSourceRule};

    fn rule(json: &str) -> MirrorRule {
        let policy = crate::netguard::AddressPolicy::new(&[], &[]).with_allow_private(true);
        validate_rule(&serde_json::from_str::<BackSourceRule>(json).unwrap(), &policy).unwrap()
    }

    #[test]
    fn origin_path_is_mirror_url_path_plus_encoded_key() {
        let r = rule(r#"{"address":{"hostName":"www.example-domain.com","path":"/dir1/"}}"#);
        assert_eq!(origin_path(&r, "image/example_object.jpg", None).unwrap(), "/dir1/image/example_object.jpg");
        assert_eq!(origin_path(&r, "a b/ü?.jpg", Some(b"x=1")).unwrap(), "/dir1/a%20b/%C3%BC%3F.jpg");
        let r = rule(r#"{"address":{"hostName":"h"},"allowQueryString":true}"#);
        assert_eq!(origin_path(&r, "k", Some(b"x=1&y=%20")).unwrap(), "/k?x=1&y=%20");
        assert_eq!(origin_path(&r, "k", None).unwrap(), "/k");
    }

    #[test]
    fn no_origin_path_leaves_the_mirror_url_directory() {
        let r = rule(r#"{"address":{"hostName":"h","path":"/dir/"}}"#);
        // Keys as the router hands them over, i.e. percent-decoded once: `w/..%2fsecret.txt`
        // arrives as `w/../secret.txt`.
        for key in ["w/../secret.txt", "../secret.txt", "..", "a/./b", "a/..", "a\\..\\b", "./x"] {
            assert!(matches!(origin_path(&r, key, None), Err(S3Error::InvalidRequest(_))), "{key}");
        }
        // Dots that are not whole segments are ordinary characters.
        assert_eq!(origin_path(&r, "a..b/...", None).unwrap(), "/dir/a..b/...");
        // A rewrite that would produce a dot segment is refused too.
        let r =
            rule(r#"{"condition":{"keyPrefixEquals":"img/"},"address":{"hostName":"h","replaceKeyPrefixWith":"../"}}"#);
        assert!(origin_path(&r, "img/x", None).is_err());
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
