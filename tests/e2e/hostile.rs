//! Hostile and unusual clients (issue 5), in raw bytes over TCP.
//!
//! The data plane sits at the edge: whatever a client sends, the node must answer what it can
//! parse unambiguously and refuse the rest before acting on it. The rules checked here:
//! - request smuggling (RFC 9112 §6.3, §11.2): Content-Length with Transfer-Encoding, conflicting
//!   lengths, a final coding other than chunked, obs-fold, bare LF, bad bytes in header names ->
//!   400 with an S3 XML body, then the connection closes, and no byte after the bad head is ever
//!   treated as a request (the origin never sees the smuggled one);
//! - limits: head > 16 KiB or > 64 header fields -> 431, target > 8 KiB -> 414, then close;
//! - time: a head trickling in is cut at `server.header_timeout_ms` without holding up anyone
//!   else; an idle keep-alive connection is closed at `server.idle_timeout_ms`;
//! - HTTP/1.x connection semantics: pipelining in order, HTTP/1.0 close vs keep-alive,
//!   `Expect: 100-continue` on a body-less GET, `Date` and `Server` on every response;
//! - methods other than GET/HEAD -> 405 with `Allow: GET, HEAD`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::client::{get, head, request, request_bytes, Conn, Response};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{
    assert_origin_count, assert_s3_error, get_stored, object_path, origin_and_node, pattern_body, source_of,
};

/// The key every smuggling test hides in its bytes; the origin must never be asked for it.
const SMUGGLED: &str = "GET /example-bucket/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends `raw` on a fresh connection and checks the answer is exactly one S3 error with
/// `status`/`code`, after which the node closes the connection without sending anything more.
fn assert_refused(addr: SocketAddr, raw: &[u8], status: u16, code: &str) -> Response {
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    let mut conn = Conn::new(addr);
    // The node may answer and close before reading everything; what it answered is the point.
    let _ = conn.send(raw);
    let resp = conn.read_response().unwrap_or_else(|e| panic!("{shown:?}: no response: {e:?}"));
    assert_eq!(resp.status, status, "{shown:?}: {resp:?}");
    assert_s3_error(&resp, status, Some(code));
    assert!(conn.peer_closed_within(Duration::from_secs(3)), "{shown:?}: connection still open after a {status}");
    assert!(
        conn.buffered().is_empty(),
        "{shown:?}: bytes after the error: {:?}",
        String::from_utf8_lossy(conn.buffered())
    );
    resp
}

/// A GET head for `key` with extra raw header lines (each ending in CRLF), then `body`.
fn raw_get(key: &str, header_lines: &str, body: &str) -> Vec<u8> {
    format!("GET {} HTTP/1.1\r\nHost: x\r\n{header_lines}\r\n{body}", object_path(key)).into_bytes()
}

/// Checks nothing reached the origin for the smuggled key (after a pause for stragglers).
fn assert_nothing_smuggled(origin: &Origin) {
    thread::sleep(Duration::from_millis(200));
    assert_origin_count(origin, "/dir1/smuggled", 0);
}

// ---------------------------------------------------------------------------------------------
// Smuggling.

#[test]
fn content_length_with_transfer_encoding_is_400() {
    let (origin, node) = origin_and_node();
    for lines in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
    ] {
        assert_refused(node.data_addr(), &raw_get("k", lines, &format!("0\r\n\r\n{SMUGGLED}")), 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

#[test]
fn conflicting_content_lengths_are_400() {
    let (origin, node) = origin_and_node();
    for lines in ["Content-Length: 0\r\nContent-Length: 5\r\n", "Content-Length: 0, 5\r\n", "Content-Length: -1\r\n"] {
        assert_refused(node.data_addr(), &raw_get("k", lines, SMUGGLED), 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

#[test]
fn chunked_body_on_a_get_is_answered_once_then_the_connection_closes() {
    // `gzip, chunked` ends in chunked, so the framing is unambiguous; the node takes no request
    // bodies, so it answers and closes: the bytes after the body are never parsed.
    let (origin, node) = origin_and_node();
    origin.set("/dir1/k", Reply::ok("the real answer"));
    let raw = raw_get("k", "Transfer-Encoding: gzip, chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}"));
    let mut conn = Conn::new(node.data_addr());
    let _ = conn.send(&raw);
    let resp = conn.read_response().expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"the real answer");
    assert!(conn.peer_closed_within(Duration::from_secs(3)), "connection still open after a request with a body");
    assert!(
        conn.buffered().is_empty(),
        "a second response came from the smuggled bytes: {:?}",
        String::from_utf8_lossy(conn.buffered())
    );
    assert_nothing_smuggled(&origin);
}

#[test]
fn transfer_encoding_not_ending_in_chunked_is_400() {
    let (origin, node) = origin_and_node();
    for lines in [
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
    ] {
        assert_refused(node.data_addr(), &raw_get("k", lines, &format!("0\r\n\r\n{SMUGGLED}")), 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

#[test]
fn obs_fold_is_400() {
    let (origin, node) = origin_and_node();
    for lines in ["X-A: 1\r\n  folded\r\n", "X-A: 1\r\n\tfolded\r\n", "Content-Length: 0\r\n 5\r\n"] {
        assert_refused(node.data_addr(), &raw_get("k", lines, SMUGGLED), 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

#[test]
fn bare_lf_is_400() {
    let (origin, node) = origin_and_node();
    let all_lf = format!("GET {} HTTP/1.1\nHost: x\n\n", object_path("k"));
    let mixed = format!("GET {} HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n", object_path("k"));
    let last = format!("GET {} HTTP/1.1\r\nHost: x\r\n\n", object_path("k"));
    for raw in [all_lf, mixed, last] {
        let mut raw = raw.into_bytes();
        raw.extend_from_slice(SMUGGLED.as_bytes());
        assert_refused(node.data_addr(), &raw, 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

#[test]
fn invalid_bytes_in_a_header_name_are_400() {
    let (origin, node) = origin_and_node();
    let names: [&[u8]; 6] = [b"X\0A", b"\x01X", b"X\xffA", b"X A", b"X-A ", b"X(A)"];
    for name in names {
        let mut raw = format!("GET {} HTTP/1.1\r\nHost: x\r\n", object_path("k")).into_bytes();
        raw.extend_from_slice(name);
        raw.extend_from_slice(b": 1\r\n\r\n");
        raw.extend_from_slice(SMUGGLED.as_bytes());
        assert_refused(node.data_addr(), &raw, 400, "BadRequest");
    }
    assert_nothing_smuggled(&origin);
}

// ---------------------------------------------------------------------------------------------
// Limits.

#[test]
fn head_larger_than_16_kib_is_431() {
    let (_origin, node) = origin_and_node();
    let lines = format!("X-Big: {}\r\n", "a".repeat(17 * 1024));
    assert_refused(node.data_addr(), &raw_get("k", &lines, ""), 431, "RequestHeaderSectionTooLarge");
}

#[test]
fn more_than_64_header_fields_is_431_and_64_are_fine() {
    let (origin, node) = origin_and_node();
    origin.set("/dir1/k", Reply::ok("k"));
    // Host + 63 = 64 fields: at the limit, served.
    let at_limit: String = (0..63).map(|i| format!("X-H{i}: v\r\n")).collect();
    let resp = Conn::new(node.data_addr()).request(&raw_get("k", &at_limit, "")).expect("64 fields");
    assert_eq!(resp.status, 200, "{resp:?}");
    // Host + 64 = 65 fields.
    let over: String = (0..64).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_refused(node.data_addr(), &raw_get("k", &over, ""), 431, "RequestHeaderSectionTooLarge");
}

#[test]
fn target_longer_than_8_kib_is_414() {
    let (_origin, node) = origin_and_node();
    let raw = format!("GET /example-bucket/{} HTTP/1.1\r\nHost: x\r\n\r\n", "k".repeat(9 * 1024));
    assert_refused(node.data_addr(), raw.as_bytes(), 414, "RequestURITooLong");
}

/// `[server] max_uri_bytes / max_headers / max_head_bytes` tighten the built-in ceilings.
#[test]
fn configured_limits_apply() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/", origin.url()), "")
        .with_line("server", "max_uri_bytes = 64")
        .with_line("server", "max_headers = 8")
        .with_line("server", "max_head_bytes = 1024")
        .start();
    let addr = node.data_addr();
    let raw = format!("GET /example-bucket/{} HTTP/1.1\r\nHost: x\r\n\r\n", "k".repeat(100));
    assert_refused(addr, raw.as_bytes(), 414, "RequestURITooLong");
    let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
    let raw = format!("GET /example-bucket/k HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_refused(addr, raw.as_bytes(), 431, "RequestHeaderSectionTooLarge");
    let raw = format!("GET /example-bucket/k HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "v".repeat(1100));
    assert_refused(addr, raw.as_bytes(), 431, "RequestHeaderSectionTooLarge");
    // Within the limits, requests are served as usual (404: no such object at the origin).
    let resp = get(addr, &format!("/example-bucket/{}", "k".repeat(20)), &[]).expect("a response");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
}

// ---------------------------------------------------------------------------------------------
// Time.

/// A connection that sends `head` one byte every `pace` from another thread, and reports when
/// the node closed it.
struct Trickle {
    stream: TcpStream,
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
    started: Instant,
}

impl Trickle {
    fn start(addr: SocketAddr, head: Vec<u8>, pace: Duration) -> Trickle {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut out = stream.try_clone().expect("clone");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_writer = Arc::clone(&stop);
        let started = Instant::now();
        let writer = thread::spawn(move || {
            for byte in head {
                if stop_writer.load(Ordering::SeqCst) || out.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(pace);
            }
        });
        Trickle { stream, stop, writer: Some(writer), started }
    }

    /// Waits up to `timeout` for EOF (or reset); returns when it came, or None if the
    /// connection is still open.
    fn closed_within(&mut self, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            self.stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
            match self.stream.read(&mut buf) {
                Ok(0) => return Some(Instant::now()),
                // A 408 or similar before the close is fine; keep waiting for the close.
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return Some(Instant::now()),
            }
        }
        None
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[test]
fn slowloris_is_cut_at_the_header_timeout_while_others_are_served() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("server", "header_timeout_ms = 1000")
        .start();
    let addr = node.data_addr();
    let body = pattern_body(10_000, 90);
    origin.set("/dir1/normal.bin", Reply::ok(body.clone()));

    // A head that would take 16 s at one byte per 200 ms; several, so every worker has one.
    let head = raw_get("k", &format!("X-Slow: {}\r\n", "s".repeat(40)), "");
    assert!(head.len() > 75);
    let mut slow: Vec<Trickle> =
        (0..4).map(|_| Trickle::start(addr, head.clone(), Duration::from_millis(200))).collect();

    thread::sleep(Duration::from_millis(300));
    let normal_start = Instant::now();
    let resp = get(addr, &object_path("normal.bin"), &[]).expect("normal client");
    let normal_done = Instant::now();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body);

    for (i, trickle) in slow.iter_mut().enumerate() {
        let closed_at = trickle.closed_within(Duration::from_secs(5));
        let closed_at = closed_at.unwrap_or_else(|| panic!("slow connection {i} still open 5 s after its first byte"));
        let closed = closed_at - trickle.started;
        // header_timeout is 1 s from the first byte; allow scheduling slack, but far less than
        // the 16 s the head would take.
        assert!(closed < Duration::from_secs(3), "slow connection {i} closed only after {closed:?}");
        assert!(
            closed >= Duration::from_millis(700),
            "slow connection {i} closed after {closed:?}, before the timeout"
        );
        // The order of events, not speed: the normal client was served while this slow one
        // still held its connection.
        assert!(
            normal_done < closed_at,
            "the normal client finished {:?} after slow connection {i} was cut: it waited behind the slow ones",
            normal_done - closed_at
        );
    }
    println!("slowloris: normal GET took {:?}", normal_done - normal_start);
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let (origin, node) = {
        let origin = Origin::start();
        let node = NodeBuilder::new()
            .mirror(&format!("{}/dir1/", origin.url()), "")
            .with_line("server", "idle_timeout_ms = 500")
            .start();
        (origin, node)
    };
    let addr = node.data_addr();
    origin.set("/dir1/k", Reply::ok("k"));
    let mut conn = Conn::new(addr);
    let resp = conn.request(&request_bytes("GET", addr, &object_path("k"), &[])).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("connection").is_none_or(|v| !v.eq_ignore_ascii_case("close")), "{resp:?}");
    let idle_start = Instant::now();
    assert!(conn.peer_closed_within(Duration::from_secs(5)), "idle connection still open after 5 s");
    let idle_for = idle_start.elapsed();
    assert!(idle_for >= Duration::from_millis(300), "closed after {idle_for:?}, sooner than the idle timeout");
    assert!(conn.buffered().is_empty(), "{:?}", String::from_utf8_lossy(conn.buffered()));
}

// ---------------------------------------------------------------------------------------------
// Connection semantics.

/// A node with objects `a` and `b` stored and `c` scripted at the origin but not fetched yet.
fn two_stored_one_absent() -> (Origin, Node, [Vec<u8>; 3]) {
    let (origin, node) = origin_and_node();
    let bodies = [pattern_body(3_000, 91), pattern_body(40_000, 92), pattern_body(5_000, 93)];
    for (key, body) in ["a", "b"].iter().zip(&bodies) {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
        assert_eq!(get(node.data_addr(), &object_path(key), &[]).expect("mirror").status, 200);
        get_stored(node.data_addr(), &object_path(key), body);
    }
    origin.set("/dir1/c", Reply::ok(bodies[2].clone()).with_head_delay(Duration::from_millis(100)));
    (origin, node, bodies)
}

#[test]
fn five_pipelined_gets_are_answered_in_order() {
    let (origin, node, bodies) = two_stored_one_absent();
    let addr = node.data_addr();
    let order = [("a", 0), ("c", 2), ("b", 1), ("a", 0), ("b", 1)];
    let mut raw = Vec::new();
    for (key, _) in order {
        raw.extend(request_bytes("GET", addr, &object_path(key), &[]));
    }
    let mut conn = Conn::new(addr);
    conn.send(&raw).expect("one write");
    for (i, (key, body)) in order.iter().enumerate() {
        let resp = conn.read_response().unwrap_or_else(|e| panic!("response {i} ({key}): {e:?}"));
        assert_eq!(resp.status, 200, "response {i} ({key}): {resp:?}");
        assert!(resp.body == bodies[*body], "response {i} is not {key}'s body: {resp:?}");
    }
    assert!(!conn.peer_closed_within(Duration::from_millis(200)), "the connection closed after the pipeline");
    assert_origin_count(&origin, "/dir1/c", 1);
}

#[test]
fn http10_without_keep_alive_closes_after_the_response() {
    let (origin, node, bodies) = two_stored_one_absent();
    let addr = node.data_addr();
    let mut conn = Conn::new(addr);
    let resp = conn.request(format!("GET {} HTTP/1.0\r\n\r\n", object_path("a")).as_bytes()).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == bodies[0]);
    assert!(conn.peer_closed_within(Duration::from_secs(3)), "HTTP/1.0 connection left open");

    // A miss from a chunked origin: an HTTP/1.0 client cannot take chunked, so the body is
    // delimited by the close, and must still be whole.
    let body = pattern_body(30_000, 94);
    origin.set("/dir1/chunky", Reply::chunked(body.clone(), &[1000, 5000]));
    let mut conn = Conn::new(addr);
    let resp = conn.request(format!("GET {} HTTP/1.0\r\n\r\n", object_path("chunky")).as_bytes()).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(!resp.chunked, "chunked sent to an HTTP/1.0 client: {resp:?}");
    assert!(resp.body == body, "{resp:?}");
}

#[test]
fn http10_with_keep_alive_stays_open() {
    let (_origin, node, bodies) = two_stored_one_absent();
    let addr = node.data_addr();
    let mut conn = Conn::new(addr);
    for (key, body) in [("a", &bodies[0]), ("b", &bodies[1])] {
        let raw = format!("GET {} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", object_path(key));
        let resp = conn.request(raw.as_bytes()).unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.body == *body);
        assert!(!resp.close_delimited, "{resp:?}");
    }
    assert!(!conn.peer_closed_within(Duration::from_millis(300)), "keep-alive HTTP/1.0 connection was closed");
}

#[test]
fn expect_100_continue_on_a_get_is_answered_normally() {
    let (_origin, node, bodies) = two_stored_one_absent();
    let addr = node.data_addr();
    let mut conn = Conn::new(addr);
    // The client skips interim 1xx heads: what matters is the final answer and the connection
    // staying usable.
    for key in ["a", "c"] {
        let resp = conn
            .request(&request_bytes("GET", addr, &object_path(key), &[("Expect", "100-continue")]))
            .unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
        assert_eq!(resp.status, 200, "{key}: {resp:?}");
    }
    let resp = conn.request(&request_bytes("GET", addr, &object_path("b"), &[])).expect("GET b");
    assert!(resp.status == 200 && resp.body == bodies[1], "{resp:?}");
}

#[test]
fn date_and_server_are_on_every_response() {
    let (origin, node, _bodies) = two_stored_one_absent();
    let addr = node.data_addr();
    origin.set("/dir1/fails", Reply::status(500));
    let mut responses: Vec<(&str, Response)> = Vec::new();
    let mut add = |what: &'static str, resp: Response| responses.push((what, resp));

    add("hit", get(addr, &object_path("a"), &[]).expect("hit"));
    let miss = get(addr, &object_path("c"), &[]).expect("miss");
    assert_eq!(source_of(&miss), "origin");
    add("miss", miss);
    add("head", head(addr, &object_path("a"), &[]).expect("head"));
    add("206", get(addr, &object_path("a"), &[("Range", "bytes=0-9")]).expect("206"));
    add("304", get(addr, &object_path("a"), &[("If-None-Match", "*")]).expect("304"));
    add("412", get(addr, &object_path("a"), &[("If-Match", "\"x\"")]).expect("412"));
    add("416", get(addr, &object_path("a"), &[("Range", "bytes=999999-")]).expect("416"));
    add("404 key", get(addr, &object_path("none"), &[]).expect("404"));
    add("404 head", head(addr, &object_path("none"), &[]).expect("404 head"));
    add("404 bucket", get(addr, "/no-such-bucket/k", &[]).expect("404 bucket"));
    add("403", request(addr, "DELETE", &object_path("a"), &[]).expect("403"));
    add("405", request(addr, "PATCH", &object_path("a"), &[]).expect("405"));
    add("424", get(addr, &object_path("fails"), &[]).expect("424"));
    for (what, raw) in [
        ("400", b"GARBAGE\r\n\r\n".to_vec()),
        ("431", raw_get("k", &format!("X-Big: {}\r\n", "a".repeat(17 * 1024)), "")),
        ("414", format!("GET /example-bucket/{} HTTP/1.1\r\nHost: x\r\n\r\n", "k".repeat(9 * 1024)).into_bytes()),
    ] {
        let mut conn = Conn::new(addr);
        let _ = conn.send(&raw);
        add(what, conn.read_response().unwrap_or_else(|e| panic!("{what}: {e:?}")));
    }

    let statuses: Vec<u16> = responses.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 206, 304, 412, 416, 404, 404, 404, 403, 405, 424, 400, 431, 414]);
    for (what, resp) in &responses {
        let date = resp.header("date").unwrap_or_else(|| panic!("{what}: no Date: {resp:?}"));
        httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{what}: Date {date:?} is not an HTTP date: {e}"));
        let server = resp.header("server").unwrap_or_else(|| panic!("{what}: no Server: {resp:?}"));
        assert!(!server.is_empty(), "{what}: empty Server");
    }
}

#[test]
fn unknown_methods_are_405_and_unsigned_writes_are_403() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    origin.set("/dir1/k", Reply::ok("k"));
    for method in ["OPTIONS", "PATCH"] {
        let resp = request(addr, method, &object_path("k"), &[]).unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert_s3_error(&resp, 405, Some("MethodNotAllowed"));
        assert_eq!(resp.header("allow"), Some("GET, HEAD, PUT, DELETE"), "{method}: {resp:?}");
    }
    // S3 writes without a signature: refused, nothing done.
    for method in ["PUT", "DELETE"] {
        let resp = request(addr, method, &object_path("k"), &[]).unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert_s3_error(&resp, 403, Some("AccessDenied"));
    }
    // With a body: answered, then closed (the refused body is not read).
    let mut conn = Conn::new(addr);
    let raw = format!("PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", object_path("k"));
    let resp = conn.request(raw.as_bytes()).expect("PUT with a body");
    assert_s3_error(&resp, 403, Some("AccessDenied"));
    assert!(conn.peer_closed_within(Duration::from_secs(3)), "connection open after an unread request body");
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}
