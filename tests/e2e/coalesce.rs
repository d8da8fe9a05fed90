//! One origin fetch per object (issue 4): concurrent misses of one key share one fill; every
//! client follows the record being written at its own pace; what a client may ask of an object
//! (ranges, conditionals, HEAD) and what the node checks before storing (Content-MD5, length);
//! and a large mirror with bounded memory.
//!
//! The stories:
//! - a crowd of 200 clients on one cold key makes one origin request and gets 200 identical
//!   bodies; a client that arrives mid-transfer still gets the whole body; a client that leaves
//!   does not stop the fill; an origin that dies mid-body cuts every client and stores nothing;
//!   a slow client does not slow a fast one;
//! - a Range on a miss is served from the whole-object fill (the origin never sees the Range),
//!   so the object is stored whole;
//! - a 256 MiB object streams through with the node's anonymous memory growing by far less than
//!   its size (bytes go origin -> segment file -> mapping -> client, never a whole-body buffer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::json;

use crate::support::client::{get, head, request_bytes, ClientError, Conn, PartialBody, Response};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{
    assert_origin_count, assert_s3_error, expected_etag, get_stored, object_path, origin_and_node, pattern_body,
    put_rules, source_of, BUCKET, STORED_SOURCES,
};

/// Base64 of the MD5 of `bytes`: a Content-MD5 value (RFC 1864).
fn content_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// Sends each request on one keep-alive connection in turn and reads its answer. A response
/// that carried an unannounced body (a 304 with bytes after it) would garble the next one.
fn on_one_conn(addr: SocketAddr, requests: &[Vec<u8>]) -> Vec<Response> {
    let mut conn = Conn::new(addr);
    requests
        .iter()
        .map(|raw| conn.request(raw).unwrap_or_else(|e| panic!("{}: {e:?}", String::from_utf8_lossy(raw))))
        .collect()
}

/// Mirrors `body` under `key` and waits until it is stored; returns the stored answer.
fn stored(origin: &Origin, node: &Node, key: &str, reply: Reply) -> Response {
    let body = reply.body().to_vec();
    origin.set(&format!("/dir1/{key}"), reply);
    let first = get(node.data_addr(), &object_path(key), &[]).expect("mirror GET");
    assert_eq!(first.status, 200, "{first:?}");
    get_stored(node.data_addr(), &object_path(key), &body)
}

// ---------------------------------------------------------------------------------------------
// Coalescing and followers.

#[test]
fn two_hundred_concurrent_misses_make_one_origin_request() {
    const CLIENTS: usize = 200;
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = Arc::new(pattern_body(1 << 20, 70));
    // Slow on purpose: 300 ms before the head, then 16 pieces 40 ms apart. The crowd arrives
    // while the fill is still running.
    let slow = |b: &[u8]| {
        Reply::ok(b.to_vec())
            .with_head_delay(Duration::from_millis(300))
            .with_paced(64 * 1024, Duration::from_millis(40))
    };
    origin.set("/dir1/crowd.bin", slow(&body));
    origin.set("/dir1/alone.bin", slow(&body));

    let start = Instant::now();
    let alone = get(addr, &object_path("alone.bin"), &[]).expect("single client");
    let alone_took = start.elapsed();
    assert!(alone.status == 200 && alone.body == *body, "{alone:?}");

    // Every client connects first, then all send at once.
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let body = Arc::clone(&body);
            thread::spawn(move || -> Result<String, String> {
                let conn = Conn::try_new(addr);
                barrier.wait();
                let mut conn = conn.map_err(|e| format!("client {i}: connect: {e}"))?;
                let resp = conn
                    .request(&request_bytes("GET", addr, &object_path("crowd.bin"), &[]))
                    .map_err(|e| format!("client {i}: {e:?}"))?;
                if resp.status != 200 || resp.body != *body {
                    return Err(format!("client {i}: wrong answer {resp:?}"));
                }
                Ok(source_of(&resp).to_string())
            })
        })
        .collect();
    barrier.wait();
    let crowd_start = Instant::now();
    let results: Vec<Result<String, String>> =
        clients.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("client thread panicked".into()))).collect();
    let crowd_took = crowd_start.elapsed();

    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {CLIENTS} clients failed: {failures:#?}", failures.len());
    let from_origin = results.iter().filter(|r| r.as_ref().is_ok_and(|s| s == "origin")).count();
    println!(
        "coalesce: {CLIENTS} clients done in {crowd_took:?} ({from_origin} followed the fill, {} from the store); \
         one client alone took {alone_took:?}",
        CLIENTS - from_origin
    );
    assert_origin_count(&origin, "/dir1/crowd.bin", 1);
    assert_origin_count(&origin, "/dir1/alone.bin", 1);
}

#[test]
fn late_joiner_gets_the_whole_body() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(1 << 20, 71);
    // 128 KiB at once, then a 1.5 s pause, then the rest: the second client arrives mid-body.
    origin.set("/dir1/late.bin", Reply::ok(body.clone()).with_pieces(&[128 * 1024], Duration::from_millis(1500)));
    let path = object_path("late.bin");

    let mut first = Conn::new(addr);
    first.send(&request_bytes("GET", addr, &path, &[])).expect("send");
    let head = first.read_head(false).expect("first head");
    assert_eq!(head.status, 200, "{head:?}");
    let mut first_body = PartialBody::new(&head);
    first.read_body_at_least(&mut first_body, 64 * 1024).expect("first bytes");
    assert!(first_body.bytes().len() < body.len(), "the whole body arrived before the origin's pause");

    let second = get(addr, &path, &[]).expect("late joiner");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(second.body == body, "the late joiner's body differs: {second:?}");
    // It joined the running fill (rather than waiting for the store).
    assert_eq!(source_of(&second), "origin", "{second:?}");

    first.read_body_to_end(&mut first_body).expect("rest of the first body");
    assert!(first_body.bytes() == body.as_slice(), "the first client's body differs");
    assert_origin_count(&origin, "/dir1/late.bin", 1);
}

#[test]
fn first_client_leaving_does_not_stop_the_fill() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(1 << 20, 72);
    origin.set("/dir1/left.bin", Reply::ok(body.clone()).with_pieces(&[64 * 1024], Duration::from_millis(800)));
    let path = object_path("left.bin");

    {
        let mut conn = Conn::new(addr);
        conn.send(&request_bytes("GET", addr, &path, &[])).expect("send");
        let head = conn.read_head(false).expect("head");
        let mut partial = PartialBody::new(&head);
        conn.read_body_at_least(&mut partial, 16 * 1024).expect("first bytes");
        // Dropping the connection mid-body: the only client of the fill is gone.
    }
    // Stay away until the origin has sent everything, so no other client keeps the fill alive.
    thread::sleep(Duration::from_millis(1500));
    let resp = get_stored(addr, &path, &body);
    assert!(STORED_SOURCES.contains(&source_of(&resp)));
    assert_origin_count(&origin, "/dir1/left.bin", 1);
}

#[test]
fn origin_failing_mid_body_cuts_every_waiter_and_stores_nothing() {
    const WAITERS: usize = 5;
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(1 << 20, 73);
    // Announces 1 MiB, sends 100 000 bytes, pauses, sends up to 600 000, then closes.
    origin.set(
        "/dir1/torn.bin",
        Reply::truncated(body.clone(), 600_000)
            .with_head_delay(Duration::from_millis(300))
            .with_pieces(&[100_000], Duration::from_millis(500)),
    );
    let path = object_path("torn.bin");

    let barrier = Arc::new(Barrier::new(WAITERS));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let path = path.clone();
            thread::spawn(move || {
                let mut conn = Conn::new(addr);
                barrier.wait();
                conn.request(&request_bytes("GET", addr, &path, &[]))
            })
        })
        .collect();
    for (i, waiter) in waiters.into_iter().enumerate() {
        match waiter.join().expect("waiter thread") {
            Err(ClientError::IncompleteBody { head, received_bytes }) => {
                assert_eq!(head.status, 200, "waiter {i}: {head:?}");
                assert!(received_bytes <= 600_000, "waiter {i}: {received_bytes} bytes, more than the origin sent");
            }
            other => panic!("waiter {i}: expected a cut body, got {other:?}"),
        }
    }

    // Nothing stored; a fresh fetch starts and can succeed.
    origin.set("/dir1/torn.bin", Reply::ok(body.clone()));
    let resp = get(addr, &path, &[]).expect("GET after the failure");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body);
    assert_eq!(source_of(&resp), "origin");
    get_stored(addr, &path, &body);
    assert_origin_count(&origin, "/dir1/torn.bin", 2);
}

#[test]
fn slow_reader_does_not_slow_a_fast_one() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    // Larger than what kernel buffers can absorb for the slow reader (its receive buffer is
    // pinned small, the node's send buffer autotunes to a few MiB at most).
    let body = Arc::new(pattern_body(16 << 20, 74));
    origin.set("/dir1/shared.bin", Reply::ok(body.to_vec()));
    let path = object_path("shared.bin");

    let progress = Arc::new(AtomicUsize::new(0));
    let hurry = Arc::new(AtomicBool::new(false));
    let slow = {
        let (progress, hurry, path) = (Arc::clone(&progress), Arc::clone(&hurry), path.clone());
        thread::spawn(move || -> Result<Vec<u8>, ClientError> {
            use socket2::{Domain, Protocol, Socket, Type};
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(ClientError::Io)?;
            socket.set_recv_buffer_size(32 * 1024).map_err(ClientError::Io)?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(5)).map_err(ClientError::Io)?;
            let mut conn = Conn::from_stream(socket.into()).map_err(ClientError::Io)?;
            conn.send(&request_bytes("GET", addr, &path, &[])).map_err(ClientError::Io)?;
            let head = conn.read_head(false)?;
            let mut partial = PartialBody::new(&head);
            // 16 KiB every 100 ms (~160 KiB/s) until told to hurry.
            while !partial.is_done() && !hurry.load(Ordering::SeqCst) {
                let want = partial.bytes().len() + 16 * 1024;
                conn.read_body_at_least(&mut partial, want)?;
                progress.store(partial.bytes().len(), Ordering::SeqCst);
                thread::sleep(Duration::from_millis(100));
            }
            conn.read_body_to_end(&mut partial)?;
            Ok(partial.into_bytes())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while progress.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the slow reader got no body bytes in 10 s");
        thread::sleep(Duration::from_millis(10));
    }

    let start = Instant::now();
    let fast = get(addr, &path, &[]).expect("fast reader");
    let fast_took = start.elapsed();
    let slow_progress = progress.load(Ordering::SeqCst);
    assert_eq!(fast.status, 200, "{fast:?}");
    assert!(fast.body == *body, "the fast reader's body differs");
    println!("slow reader: fast client done in {fast_took:?} while the slow one had {slow_progress} bytes");
    // At 160 KiB/s the slow reader needs ~100 s for 16 MiB: if the fast one had to wait for it,
    // it would have hit its 10 s read timeout above, or the slow one would be done by now.
    assert!(slow_progress < body.len() / 2, "the slow reader had {slow_progress} bytes when the fast one finished");

    hurry.store(true, Ordering::SeqCst);
    let slow_body = slow.join().expect("slow thread").expect("slow reader");
    assert!(slow_body == *body, "the slow reader's body differs");
    assert_origin_count(&origin, "/dir1/shared.bin", 1);
}

// ---------------------------------------------------------------------------------------------
// Ranges.

/// Parses a `multipart/byteranges` body into (Content-Range value, bytes) per part.
fn multipart_parts(resp: &Response) -> Vec<(String, Vec<u8>)> {
    let ct = resp.header("content-type").unwrap_or_else(|| panic!("no Content-Type: {resp:?}"));
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    let boundary = ct.split("boundary=").nth(1).unwrap_or_else(|| panic!("no boundary in {ct}")).trim_matches('"');
    let delimiter = format!("--{boundary}");
    let body = &resp.body;
    let find = |from: usize, needle: &[u8]| -> usize {
        from + body[from..].windows(needle.len()).position(|w| w == needle).unwrap_or_else(|| {
            panic!("{:?} not found after byte {from} of the multipart body", String::from_utf8_lossy(needle))
        })
    };
    let mut parts = Vec::new();
    let mut pos = find(0, delimiter.as_bytes()) + delimiter.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return parts;
        }
        assert!(body[pos..].starts_with(b"\r\n"), "no CRLF after a boundary at byte {pos}");
        let head_end = find(pos, b"\r\n\r\n");
        let head = String::from_utf8_lossy(&body[pos + 2..head_end]).into_owned();
        let range = head
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-range")))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("part without Content-Range: {head:?}"));
        let (first, last) = range
            .strip_prefix("bytes ")
            .and_then(|r| r.split('/').next())
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap_or_else(|| panic!("bad part Content-Range {range:?}"));
        let data_start = head_end + 4;
        let data_end = data_start + (last - first + 1);
        parts.push((range, body[data_start..data_end].to_vec()));
        assert!(body[data_end..].starts_with(format!("\r\n{delimiter}").as_bytes()), "part not followed by a boundary");
        pos = data_end + 2 + delimiter.len();
    }
}

#[test]
fn ranges_of_a_stored_object() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(10_000, 75);
    stored(&origin, &node, "r.bin", Reply::ok(body.clone()).with_header("Content-Type", "application/octet-stream"));
    let path = object_path("r.bin");

    for (range, start, end) in
        [("bytes=100-199", 100, 200), ("bytes=-500", 9_500, 10_000), ("bytes=9000-", 9_000, 10_000)]
    {
        let resp = get(addr, &path, &[("Range", range)]).expect("GET");
        assert_eq!(resp.status, 206, "{range}: {resp:?}");
        let want = format!("bytes {start}-{}/10000", end - 1);
        assert_eq!(resp.header("content-range"), Some(want.as_str()), "{range}: {resp:?}");
        assert_eq!(resp.header("content-length"), Some((end - start).to_string().as_str()), "{range}");
        assert!(resp.body == body[start..end], "{range}: wrong bytes");
    }

    let resp = get(addr, &path, &[("Range", "bytes=20000-")]).expect("GET");
    assert_s3_error(&resp, 416, Some("InvalidRange"));
    assert_eq!(resp.header("content-range"), Some("bytes */10000"), "{resp:?}");

    let resp = get(addr, &path, &[("Range", "bytes=0-9,100-199,-5")]).expect("GET");
    assert_eq!(resp.status, 206, "{resp:?}");
    let parts = multipart_parts(&resp);
    let want: Vec<(String, Vec<u8>)> = [(0, 10), (100, 200), (9_995, 10_000)]
        .iter()
        .map(|&(s, e)| (format!("bytes {s}-{}/10000", e - 1), body[s..e].to_vec()))
        .collect();
    assert_eq!(parts, want, "multipart parts");
    assert_origin_count(&origin, "/dir1/r.bin", 1);
}

#[test]
fn range_on_a_miss_fetches_and_stores_the_whole_object() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(100_000, 76);
    origin.set("/dir1/ranged-miss.bin", Reply::ok(body.clone()));
    let path = object_path("ranged-miss.bin");

    let resp = get(addr, &path, &[("Range", "bytes=1000-1999")]).expect("GET");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert_eq!(resp.header("content-range"), Some("bytes 1000-1999/100000"), "{resp:?}");
    assert!(resp.body == body[1000..2000], "wrong bytes for the range");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].header("range"), None, "the origin was asked for a range: {:?}", requests[0]);

    let whole = get_stored(addr, &path, &body);
    assert_eq!(whole.header("content-length"), Some("100000"));
    assert_origin_count(&origin, "/dir1/ranged-miss.bin", 1);
}

#[test]
fn if_range_honours_the_range_only_for_the_current_etag() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(5_000, 77);
    let resp = stored(&origin, &node, "ir.bin", Reply::ok(body.clone()));
    let etag = resp.header("etag").expect("ETag").to_string();
    let last_modified = resp.header("last-modified").expect("Last-Modified").to_string();
    let path = object_path("ir.bin");

    for validator in [etag.as_str(), last_modified.as_str()] {
        let resp = get(addr, &path, &[("Range", "bytes=0-99"), ("If-Range", validator)]).expect("GET");
        assert_eq!(resp.status, 206, "If-Range {validator}: {resp:?}");
        assert!(resp.body == body[..100]);
    }
    let other = "\"0123456789abcdef0123456789abcdef\"";
    let resp = get(addr, &path, &[("Range", "bytes=0-99"), ("If-Range", other)]).expect("GET");
    assert_eq!(resp.status, 200, "If-Range with another ETag: {resp:?}");
    assert!(resp.body == body, "If-Range mismatch must send the whole object");
}

// ---------------------------------------------------------------------------------------------
// Conditionals.

#[test]
fn conditional_gets_on_a_stored_object() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(4_000, 78);
    let resp = stored(&origin, &node, "c.bin", Reply::ok(body.clone()));
    let etag = resp.header("etag").expect("ETag").to_string();
    assert_eq!(etag, expected_etag(&body));
    let lm = resp.header("last-modified").expect("Last-Modified").to_string();
    let lm_time = httpdate::parse_http_date(&lm).expect("Last-Modified is an HTTP date");
    let later = httpdate::fmt_http_date(lm_time + Duration::from_secs(86_400));
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let other = "\"0123456789abcdef0123456789abcdef\"";
    let path = object_path("c.bin");
    let list = format!("{other}, {etag}");
    let weak = format!("W/{etag}");

    // (headers, expected status)
    let cases: Vec<(Vec<(&str, &str)>, u16)> = vec![
        (vec![("If-None-Match", &etag)], 304),
        (vec![("If-None-Match", "*")], 304),
        (vec![("If-None-Match", &list)], 304),
        (vec![("If-None-Match", &weak)], 304),
        (vec![("If-None-Match", other)], 200),
        (vec![("If-Modified-Since", &lm)], 304),
        (vec![("If-Modified-Since", &later)], 304),
        (vec![("If-Modified-Since", past)], 200),
        // If-None-Match present: If-Modified-Since is ignored (RFC 9110 §13.1.3).
        (vec![("If-None-Match", other), ("If-Modified-Since", &lm)], 200),
        (vec![("If-Match", other)], 412),
        (vec![("If-Match", &etag)], 200),
        (vec![("If-Unmodified-Since", past)], 412),
        (vec![("If-Unmodified-Since", &lm)], 200),
        // If-Match present: If-Unmodified-Since is ignored (RFC 9110 §13.2.2).
        (vec![("If-Match", &etag), ("If-Unmodified-Since", past)], 200),
    ];
    let requests: Vec<Vec<u8>> = cases.iter().map(|(h, _)| request_bytes("GET", addr, &path, h)).collect();
    let answers = on_one_conn(addr, &requests);
    for ((headers, want), resp) in cases.iter().zip(&answers) {
        match want {
            304 => {
                assert_eq!(resp.status, 304, "{headers:?}: {resp:?}");
                assert_eq!(resp.header("etag"), Some(etag.as_str()), "{headers:?}: {resp:?}");
                assert!(resp.body.is_empty());
            }
            412 => {
                assert_s3_error(resp, 412, Some("PreconditionFailed"));
            }
            _ => {
                assert_eq!(resp.status, 200, "{headers:?}: {resp:?}");
                assert!(resp.body == body, "{headers:?}: body differs");
            }
        }
    }
    assert_origin_count(&origin, "/dir1/c.bin", 1);
}

// ---------------------------------------------------------------------------------------------
// HEAD.

#[test]
fn head_of_an_absent_key_asks_the_origin_with_head_and_stores_nothing() {
    let (origin, node) = origin_and_node();
    let body = pattern_body(12_345, 3);
    origin.set(
        "/dir1/absent.bin",
        Reply::ok(body.clone())
            .with_header("Content-Type", "image/png")
            .with_header("ETag", "\"origin-etag\"")
            .with_header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    let resp = head(node.data_addr(), &object_path("absent.bin"), &[]).expect("HEAD");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-length"), Some("12345"), "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("image/png"), "{resp:?}");
    assert_eq!(resp.header("etag"), Some("\"origin-etag\""), "{resp:?}");
    assert_eq!(resp.header("last-modified"), Some("Wed, 21 Oct 2015 07:28:00 GMT"), "{resp:?}");
    assert_eq!(source_of(&resp), "origin");
    assert!(resp.body.is_empty());
    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("HEAD", "/dir1/absent.bin"));
    // Nothing stored: the GET that follows (boto3's download_file) mirrors it, once.
    let got = get(node.data_addr(), &object_path("absent.bin"), &[]).expect("GET");
    assert_eq!((got.status, source_of(&got)), (200, "origin"));
    assert!(got.body == body);
    assert_eq!(origin.count("/dir1/absent.bin"), 2);

    // The origin's 404 is a 404; its failure a 424 (no body either way, it is a HEAD).
    origin.set("/dir1/gone.bin", Reply::status(404));
    let resp = head(node.data_addr(), &object_path("gone.bin"), &[]).expect("HEAD");
    assert_eq!((resp.status, source_of(&resp)), (404, "origin"));
    origin.set("/dir1/broken.bin", Reply::status(503));
    let resp = head(node.data_addr(), &object_path("broken.bin"), &[]).expect("HEAD");
    assert_eq!(resp.status, 424);
}

#[test]
fn head_of_a_key_no_rule_covers_is_404_without_an_origin_request() {
    let origin = Origin::start();
    let node = NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "img/").start();
    let resp = head(node.data_addr(), &object_path("doc/absent.bin"), &[]).expect("HEAD");
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(origin.requests().is_empty(), "HEAD contacted the origin: {:?}", origin.requests());
}

/// HEAD through a `mirrorHead` rule: 200 with the object's headers; the fill stores the object.
fn assert_head_mirrors(origin: &Origin, node: &Node) {
    let body = pattern_body(7_000, 79);
    origin.set("/dir1/h.bin", Reply::ok(body.clone()).with_header("Content-Type", "image/png"));
    let resp = head(node.data_addr(), &object_path("h.bin"), &[]).expect("HEAD");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-length"), Some("7000"), "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("image/png"), "{resp:?}");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/dir1/h.bin");
    get_stored(node.data_addr(), &object_path("h.bin"), &body);
    assert_origin_count(origin, "/dir1/h.bin", 1);
}

#[test]
fn head_mirrors_with_mirror_head_set_in_toml() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .with_extra_toml(&format!(
            "[[buckets]]\nname = \"{BUCKET}\"\n[[buckets.mirror]]\nurl = \"{}/dir1/\"\nmirror_head = true",
            origin.url()
        ))
        .start();
    assert_head_mirrors(&origin, &node);
}

#[test]
fn head_mirrors_with_mirror_head_set_through_the_api() {
    let origin = Origin::start();
    let node = NodeBuilder::new().bucket(BUCKET).start();
    let rule = json!([{"address": {"hostName": origin.addr().to_string(), "path": "/dir1/"}, "mirrorHead": true}]);
    put_rules(node.admin_addr(), BUCKET, &rule.to_string());
    assert_head_mirrors(&origin, &node);
}

// ---------------------------------------------------------------------------------------------
// Integrity.

/// A GET whose fill fails its integrity check must never look whole: either the head went out
/// before the failure (status 200, then the connection closes early), or the failure came first
/// (the body arrived in one read, as under the epoll driver) and the answer is 424 MirrorFailed.
fn assert_cut(addr: SocketAddr, path: &str) {
    match get(addr, path, &[]) {
        Err(ClientError::IncompleteBody { head, .. }) => assert_eq!(head.status, 200, "{head:?}"),
        Ok(resp) => {
            assert_s3_error(&resp, 424, Some("MirrorFailed"));
        }
        other => panic!("GET {path}: expected a cut body or 424, got {other:?}"),
    }
}

#[test]
fn wrong_content_md5_cuts_the_client_and_stores_nothing() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(50_000, 80);
    let wrong = content_md5(b"some other body");
    origin.set("/dir1/md5.bin", Reply::ok(body.clone()).with_header("Content-MD5", &wrong));
    let path = object_path("md5.bin");
    assert_cut(addr, &path);

    // Not stored: the next GET fetches again, and with the right digest it is stored.
    origin.set("/dir1/md5.bin", Reply::ok(body.clone()).with_header("Content-MD5", &content_md5(&body)));
    let resp = get(addr, &path, &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(source_of(&resp), "origin", "the bad body was stored: {resp:?}");
    get_stored(addr, &path, &body);
    assert_origin_count(&origin, "/dir1/md5.bin", 2);
}

#[test]
fn correct_content_md5_is_stored() {
    let (origin, node) = origin_and_node();
    let body = pattern_body(50_000, 81);
    let resp =
        stored(&origin, &node, "good-md5.bin", Reply::ok(body.clone()).with_header("Content-MD5", &content_md5(&body)));
    assert_eq!(resp.header("etag"), Some(expected_etag(&body).as_str()));
    assert_origin_count(&origin, "/dir1/good-md5.bin", 1);
}

#[test]
fn body_shorter_than_content_length_is_cut_and_not_stored() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(80_000, 82);
    origin.set("/dir1/short.bin", Reply::truncated(body.clone(), 30_000));
    let path = object_path("short.bin");
    assert_cut(addr, &path);

    origin.set("/dir1/short.bin", Reply::ok(body.clone()));
    let resp = get(addr, &path, &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(source_of(&resp), "origin", "the short body was stored: {resp:?}");
    assert_origin_count(&origin, "/dir1/short.bin", 2);
}

// ---------------------------------------------------------------------------------------------
// A large object with bounded memory.

const BIG_BLOCK: usize = 1 << 20;
const BIG_BLOCKS: usize = 256;

/// Block `i` of the large object: one pattern block with its index stamped in the first 8
/// bytes, so a reordered, repeated or skipped block shows as a mismatch.
fn stamp_block(base: &[u8], block: &mut [u8], i: usize) {
    block.copy_from_slice(base);
    block[..8].copy_from_slice(&(i as u64).to_le_bytes());
}

/// A one-purpose origin that generates the large object as it sends it (never holding more
/// than one block); answers any GET. Returns its address and its request counter.
fn big_origin(base: Arc<Vec<u8>>, stop: Arc<AtomicBool>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&count);
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let mut stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => {
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let (base, served, stop) = (Arc::clone(&base), Arc::clone(&served), Arc::clone(&stop));
            thread::spawn(move || {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                served.fetch_add(1, Ordering::SeqCst);
                let total = BIG_BLOCK * BIG_BLOCKS;
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n");
                if stream.write_all(reply.as_bytes()).is_err() {
                    return;
                }
                let mut block = vec![0u8; BIG_BLOCK];
                for i in 0..BIG_BLOCKS {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    stamp_block(&base, &mut block, i);
                    if stream.write_all(&block).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// `VmRSS` and `RssAnon` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

#[test]
fn large_object_streams_with_bounded_memory() {
    const MAX_ANON_GROWTH_KIB: u64 = 64 * 1024;
    let base = Arc::new(pattern_body(BIG_BLOCK, 83));
    let stop = Arc::new(AtomicBool::new(false));
    let (origin_addr, origin_count) = big_origin(Arc::clone(&base), Arc::clone(&stop));
    let node = NodeBuilder::new().mirror(&format!("http://{origin_addr}/dir1/"), "").start();
    let addr = node.data_addr();
    let pid = node.pid();
    let (rss_before, anon_before) = rss_kib(pid).expect("read /proc/PID/status");

    // Sample the node's memory while the object streams.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        thread::spawn(move || {
            let (mut rss_max, mut anon_max) = (0, 0);
            while sampling.load(Ordering::SeqCst) {
                if let Some((rss, anon)) = rss_kib(pid) {
                    rss_max = rss_max.max(rss);
                    anon_max = anon_max.max(anon);
                }
                thread::sleep(Duration::from_millis(20));
            }
            (rss_max, anon_max)
        })
    };

    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    stream.write_all(&request_bytes("GET", addr, &object_path("big.bin"), &[])).expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = Vec::new();
    let head_end = loop {
        if let Some(p) = first.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut buf).expect("read head");
        assert!(n > 0, "closed before the head: {:?}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    };
    let head_text = String::from_utf8_lossy(&first[..head_end]).into_owned();
    assert!(head_text.starts_with("HTTP/1.1 200"), "{head_text}");
    let total = BIG_BLOCK * BIG_BLOCKS;
    assert!(
        head_text.to_ascii_lowercase().contains(&format!("content-length: {total}\r\n")),
        "the streamed object should carry the origin's length: {head_text}"
    );

    // Check every byte against the generator as it arrives, and hash it for the ETag check.
    let mut md5 = Md5::new();
    let mut expected = vec![0u8; BIG_BLOCK];
    let mut expected_index = usize::MAX;
    let mut received = 0usize;
    let mut check = |data: &[u8], received: &mut usize| {
        md5.update(data);
        let mut data = data;
        while !data.is_empty() {
            let (block, offset) = (*received / BIG_BLOCK, *received % BIG_BLOCK);
            assert!(block < BIG_BLOCKS, "more bytes than announced");
            if block != expected_index {
                stamp_block(&base, &mut expected, block);
                expected_index = block;
            }
            let n = data.len().min(BIG_BLOCK - offset);
            assert!(data[..n] == expected[offset..offset + n], "bytes differ in block {block} at offset {offset}");
            *received += n;
            data = &data[n..];
        }
    };
    check(&first[head_end..], &mut received);
    while received < total {
        let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("read after {received} bytes: {e}"));
        assert!(n > 0, "connection closed after {received} of {total} bytes");
        check(&buf[..n], &mut received);
    }
    let took = start.elapsed();
    sampling.store(false, Ordering::SeqCst);
    let (rss_max, anon_max) = sampler.join().expect("sampler");
    stop.store(true, Ordering::SeqCst);
    let digest = md5.finalize();
    let md5_hex_got: String = digest.iter().map(|b| format!("{b:02x}")).collect();

    println!(
        "large object: {} MiB in {took:?}; node VmRSS {} -> max {} MiB, RssAnon {} -> max {} MiB",
        total >> 20,
        rss_before / 1024,
        rss_max / 1024,
        anon_before / 1024,
        anon_max / 1024
    );
    let growth = anon_max.saturating_sub(anon_before);
    assert!(
        growth < MAX_ANON_GROWTH_KIB,
        "RssAnon grew by {} MiB while streaming a {} MiB object (limit {} MiB)",
        growth / 1024,
        total >> 20,
        MAX_ANON_GROWTH_KIB / 1024
    );

    // Stored whole: a HEAD (which never mirrors) finds it, with the MD5 of what we received.
    let resp = head(addr, &object_path("big.bin"), &[]).expect("HEAD");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-length"), Some(total.to_string().as_str()));
    assert_eq!(resp.header("etag"), Some(format!("\"{md5_hex_got}\"").as_str()), "{resp:?}");
    assert_eq!(origin_count.load(Ordering::SeqCst), 1, "origin requests");
}
