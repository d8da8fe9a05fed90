//! The end-to-end harness: a scriptable origin server ([`origin`]), a raw HTTP/1.1 client
//! ([`client`]) and a launcher for the real `edgemirror` binary ([`node`]).
//!
//! Everything here uses blocking std sockets and threads on purpose: the harness must not share
//! an async runtime (or its bugs) with the node under test, and a thread per connection is easy
//! to reason about when a test wants the origin to misbehave at a precise byte.
//!
//! Rules every helper follows:
//! - bind `127.0.0.1:0`, never a fixed port, so tests run in parallel;
//! - every wait is bounded (socket read/write timeouts, polling deadlines), so a broken node
//!   makes a test fail, never hang.
//!
//! This file also holds the small assertions shared by the test modules (S3 error bodies,
//! ETags, waiting for an object to become stored).

#![allow(
    dead_code,
    reason = "the harness API is broader than what today's tests call; unused helpers are kept for the next tests"
)]

pub mod client;
pub mod garage;
pub mod node;
pub mod origin;
pub mod tls;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use client::{get, Response};

/// The header the node uses to say where a GET was answered from.
pub const SOURCE_HEADER: &str = "x-edgemirror-source";

/// Sources that mean "already stored": anything but a live fetch from the origin.
pub const STORED_SOURCES: &[&str] = &["memory", "disk-cache", "store"];

/// Deterministic, non-repeating-looking bytes, so an offset mix-up shows as a body mismatch
/// (a body of one repeated byte would hide a shifted or duplicated piece).
pub fn pattern_body(len: usize, seed: u8) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            // xorshift32: cheap, and every position differs from its neighbours.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Lowercase hex MD5, as S3 puts inside the quotes of an ETag.
pub fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag a stored object must carry: the quoted MD5 of its body.
pub fn expected_etag(body: &[u8]) -> String {
    format!("\"{}\"", md5_hex(body))
}

/// A port on 127.0.0.1 on which nothing listens, for as long as the value lives: the socket is
/// bound and never listens, so a connection to it is refused and no other server can take the
/// port meanwhile. (Binding a port and releasing it, as this once did, let a concurrent test's
/// listener take it: a "dead" origin then answered 404.)
pub struct ClosedPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl std::fmt::Display for ClosedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

pub fn closed_port_addr() -> ClosedPort {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind ephemeral port");
    let addr = socket.local_addr().expect("local_addr").as_socket().expect("an IP address");
    ClosedPort { _socket: socket, addr }
}

impl ClosedPort {
    /// Closes `addr`, a port a server of the test just stopped listening on, the same way: a
    /// stopped origin holds its port so, and a node a test restarts on `127.0.0.1:0` cannot be
    /// given the port its own mirror rules point at (it would refuse them as a loop onto itself;
    /// seen once in CI). SO_REUSEADDR lets the bind succeed over the port's TIME_WAIT
    /// connections; an ephemeral bind still skips the port. While a child forked by another test
    /// still holds the old listener (until it execs) the bind fails, and the port is taken
    /// anyway; retried for up to 2 s, then `None`.
    pub fn hold(addr: SocketAddr) -> Option<ClosedPort> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).ok()?;
            socket.set_reuse_address(true).ok()?;
            match socket.bind(&addr.into()) {
                Ok(()) => return Some(ClosedPort { _socket: socket, addr }),
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => return None,
            }
        }
    }
}

/// Text between the first `<tag>` and the next `</tag>`, if both are present.
pub fn xml_tag<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&close)?;
    Some(&body[start..end])
}

/// Checks an S3-style error response and returns its request id.
///
/// Shape required: `<Error><Code>..</Code><Message>..</Message>...<RequestId>..</RequestId></Error>`
/// (an `<?xml ...?>` prolog is allowed), and an `x-request-id` header equal to `RequestId`, so an
/// operator can grep the node's log for the id a client reports.
/// `code: None` accepts any code (used where the spec does not name one).
pub fn assert_s3_error(resp: &Response, status: u16, code: Option<&str>) -> String {
    assert_eq!(resp.status, status, "status; response: {resp:?}");
    let body = String::from_utf8(resp.body.clone()).expect("error body is UTF-8");
    let trimmed = body.trim();
    let without_prolog = match trimmed.strip_prefix("<?xml") {
        Some(rest) => rest[rest.find("?>").expect("unterminated XML prolog") + 2..].trim_start(),
        None => trimmed,
    };
    assert!(
        without_prolog.starts_with("<Error>") && without_prolog.ends_with("</Error>"),
        "error body is not a single <Error> element: {body}"
    );
    let got_code = xml_tag(&body, "Code").unwrap_or_else(|| panic!("no <Code> in {body}"));
    assert!(!got_code.is_empty(), "empty <Code> in {body}");
    if let Some(code) = code {
        assert_eq!(got_code, code, "error code; body: {body}");
    }
    assert!(xml_tag(&body, "Message").is_some(), "no <Message> in {body}");
    let request_id = xml_tag(&body, "RequestId").unwrap_or_else(|| panic!("no <RequestId> in {body}"));
    assert!(!request_id.is_empty(), "empty <RequestId> in {body}");
    // Element order as S3 writes it; clients that parse with a streaming reader rely on it.
    let pos = |t: &str| body.find(&format!("<{t}>")).unwrap();
    assert!(pos("Code") < pos("Message") && pos("Message") < pos("RequestId"), "elements out of order: {body}");
    assert_eq!(resp.header("x-request-id"), Some(request_id), "x-request-id header must equal <RequestId>");
    if let Some(len) = resp.header("content-length") {
        assert_eq!(len, resp.body.len().to_string(), "content-length of the error body");
    }
    request_id.to_string()
}

/// The value of `x-edgemirror-source`, or a panic naming the response.
pub fn source_of(resp: &Response) -> &str {
    resp.header(SOURCE_HEADER).unwrap_or_else(|| panic!("no {SOURCE_HEADER} header in {resp:?}"))
}

/// GETs `path` until the answer's source is one of `sources`, checking every answer is a 200
/// with `body`, and returns the last answer.
///
/// Why poll at all: the node may send the last body byte to the client a moment before it
/// commits the record (fsync, index publish) or warms its memory tier. A GET in that window may
/// legitimately join the in-flight fill. What must never happen is a second trip to the origin;
/// callers assert that with `Origin::count` afterwards. The deadline is generous (5 s) because
/// tests run two at a time on two cores.
pub fn get_until_source(addr: SocketAddr, path: &str, body: &[u8], sources: &[&str]) -> Response {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        let resp = get(addr, path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
        assert!(resp.body == body, "GET {path}: body differs from the origin's ({resp:?})");
        let source = source_of(&resp).to_string();
        if sources.contains(&source.as_str()) {
            if !seen.is_empty() {
                // Shown only if the test fails: explains a later origin-count mismatch.
                eprintln!("GET {path}: sources before {source:?}: {seen:?}");
            }
            return resp;
        }
        seen.push(source.clone());
        assert!(Instant::now() < deadline, "GET {path}: source stayed {source:?}, expected one of {sources:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GETs `path` until it is answered from the store or a cache tier (see [`get_until_source`]).
pub fn get_stored(addr: SocketAddr, path: &str, body: &[u8]) -> Response {
    get_until_source(addr, path, body, STORED_SOURCES)
}

/// The bucket the default rule is attached to.
pub const BUCKET: &str = "example-bucket";

/// The path-style request target for `key` in [`BUCKET`] (`key` given already encoded).
pub fn object_path(key: &str) -> String {
    format!("/{BUCKET}/{key}")
}

/// The setup most tests share: an origin, and a node whose `example-bucket` has one rule
/// mirroring every key to `<origin>/dir1/`.
pub fn origin_and_node() -> (origin::Origin, node::Node) {
    let origin = origin::Origin::start();
    let node = node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    (origin, node)
}

/// Asserts the origin received exactly `expected` requests for `path`, printing the origin's
/// whole request log otherwise (which request repeated, on which connection, tells a node
/// re-fetch apart from a retry on a stale pooled connection).
pub fn assert_origin_count(origin: &origin::Origin, path: &str, expected: usize) {
    let got = origin.count(path);
    if got != expected {
        let log: Vec<String> =
            origin.requests().iter().map(|r| format!("conn {} {} {}", r.conn_id, r.method, r.path)).collect();
        panic!("origin saw {got} requests for {path}, expected {expected}; log: {log:#?}");
    }
}

/// The admin bearer token every [`node::NodeBuilder`] config carries.
pub const ADMIN_TOKEN: &str = "test-token";

/// The rule API path of `bucket` (the region is not checked by the node).
pub fn back_source_path(bucket: &str) -> String {
    format!("/v1/regions/cn-north-1/buckets/{bucket}/backSource")
}

/// One admin request on a fresh connection. `token: None` sends no `Authorization`; `body` is
/// sent as JSON with a Content-Length.
pub fn admin_request(admin: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Response {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {admin}\r\n");
    if let Some(token) = token {
        raw.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        raw.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body.unwrap_or(""));
    let mut conn = client::Conn::new(admin);
    conn.request(raw.as_bytes()).unwrap_or_else(|e| panic!("admin {method} {path}: {e:?}"))
}

/// The JSON body of an admin response, or a panic showing what came instead.
pub fn admin_json(resp: &Response) -> serde_json::Value {
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("admin answer is not JSON ({e}): {resp:?}"))
}

/// PUTs `rules_json` (the `backSourceRules` array) for `bucket` with the right token and asserts
/// it was accepted.
pub fn put_rules(admin: SocketAddr, bucket: &str, rules_json: &str) {
    let body = format!("{{\"backSourceRules\":{rules_json}}}");
    let resp = admin_request(admin, "PUT", &back_source_path(bucket), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 200, "PUT rules {rules_json}: {resp:?} {}", resp.text());
}

/// GETs the rules of `bucket` (the `result.backSourceRules` array), asserting a 200.
pub fn get_rules(admin: SocketAddr, bucket: &str) -> Vec<serde_json::Value> {
    let resp = admin_request(admin, "GET", &back_source_path(bucket), Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 200, "GET rules: {resp:?} {}", resp.text());
    let json = admin_json(&resp);
    json["result"]["backSourceRules"]
        .as_array()
        .unwrap_or_else(|| panic!("no result.backSourceRules array in {json}"))
        .clone()
}

/// A counter or gauge of the node's admin `/metrics` whose value is a whole number (panics,
/// with the page, when absent).
pub fn metric(node: &node::Node, name: &str) -> u64 {
    let v = metric_f64(node, name);
    assert!(v.fract() == 0.0 && v >= 0.0, "{name} = {v} is not a whole number");
    v as u64
}

/// A counter or gauge of the node's admin `/metrics` (panics, with the page, when absent).
pub fn metric_f64(node: &node::Node, name: &str) -> f64 {
    let resp = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 200, "GET /metrics");
    let text = resp.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// `promtool check metrics` on the page (it reads stdin): the exposition format and the
/// naming conventions.
pub fn promtool_check(page: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; .ci/run installs it)");
    child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "promtool check metrics:\n{text}\npage:\n{page}");
}

/// The value of one sample (name with its labels, exactly as rendered).
pub fn metric_sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

/// Polls `check` every 20 ms until it gives a value, for at most 10 s; then panics with
/// `failure()` (which says what was seen). Every wait for something a node does on its own
/// time (a log flushed, a reload handled, a probe run) goes through here.
pub fn poll_until<T>(mut check: impl FnMut() -> Option<T>, failure: impl Fn() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(20));
    }
}
