//! The harness tested against itself: the scripted origin talks to the raw client, with no node
//! in between. The node tests trust these two pieces to report exactly what was on the wire
//! (framing, cuts, timing, recorded requests), so each misbehaviour the node tests rely on is
//! checked here first. Also covers the config renderer and the ready-line parser.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::client::{
    get, head, request_bytes, send_raw, send_raw_with_timeout, ClientError, Conn, Framing, PartialBody, Response,
};
use crate::support::node::{parse_ready_line, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{assert_s3_error, expected_etag, md5_hex, pattern_body, xml_tag};

/// A server that accepts one connection, reads the request head, writes `reply`, then either
/// closes or (with `hold`) keeps the socket open for `hold`. For responses the scripted origin
/// refuses to produce (invalid framing), to check the client rejects them.
fn one_shot_server(reply: &'static [u8], hold: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(reply);
        thread::sleep(hold);
    });
    addr
}

#[test]
fn origin_serves_scripted_body_and_records_the_request() {
    let origin = Origin::start();
    let body = pattern_body(10_000, 1);
    origin.set(
        "/dir1/a.jpg",
        Reply::ok(body.clone()).with_header("Content-Type", "image/jpeg").with_header("X-Other", "1"),
    );

    let resp = get(origin.addr(), "/dir1/a.jpg", &[("a-header", "111")]).unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body == body);
    assert!(!resp.chunked && !resp.close_delimited);
    assert_eq!(resp.header("content-length"), Some("10000"));
    // Names are lowercased by the client whatever the wire case.
    assert_eq!(resp.header("content-type"), Some("image/jpeg"));
    assert_eq!(resp.header("X-OTHER"), Some("1"));

    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/dir1/a.jpg");
    assert_eq!(reqs[0].header("host"), Some(origin.addr().to_string().as_str()));
    assert_eq!(reqs[0].header("A-Header"), Some("111"));
    assert_eq!(origin.count("/dir1/a.jpg"), 1);
    assert!(origin.url().starts_with("http://127.0.0.1:"));
}

#[test]
fn unscripted_path_is_404_and_still_recorded() {
    let origin = Origin::start();
    let resp = get(origin.addr(), "/nothing/here", &[]).unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(origin.count("/nothing/here"), 1);
}

#[test]
fn query_is_recorded_raw_and_falls_back_to_the_path_script() {
    let origin = Origin::start();
    origin.set("/p", Reply::ok("plain"));
    origin.set("/p?v=2", Reply::ok("exact"));
    assert_eq!(get(origin.addr(), "/p?v=1", &[]).unwrap().body, b"plain");
    assert_eq!(get(origin.addr(), "/p?v=2", &[]).unwrap().body, b"exact");
    let paths: Vec<String> = origin.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/p?v=1", "/p?v=2"]);
    assert_eq!(origin.count("/p"), 2);
    assert_eq!(origin.count("/p?v=2"), 1);
}

#[test]
fn keep_alive_carries_three_requests_on_one_connection() {
    let origin = Origin::start();
    origin.set("/a", Reply::ok("aaa"));
    origin.set("/b", Reply::chunked("bbbbbb", &[2, 2]));
    let addr = origin.addr();
    let mut conn = Conn::new(addr);
    for (path, want) in [("/a", "aaa"), ("/b", "bbbbbb"), ("/a", "aaa")] {
        let resp = conn.request(&request_bytes("GET", addr, path, &[])).unwrap();
        assert_eq!(resp.body, want.as_bytes());
    }
    let conns: Vec<u64> = origin.requests().iter().map(|r| r.conn_id).collect();
    assert_eq!(conns, [0, 0, 0], "all three on the first connection");
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let origin = Origin::start();
    // The first answer is slow: order must still hold.
    origin.set("/slow", Reply::ok("first").with_head_delay(Duration::from_millis(200)));
    origin.set("/fast", Reply::ok("second"));
    let addr = origin.addr();
    let mut raw = request_bytes("GET", addr, "/slow", &[]);
    raw.extend(request_bytes("GET", addr, "/fast", &[]));
    let mut conn = Conn::new(addr);
    conn.send(&raw).unwrap();
    assert_eq!(conn.read_response().unwrap().body, b"first");
    assert_eq!(conn.read_response().unwrap().body, b"second");
}

#[test]
fn head_request_gets_length_but_no_body() {
    let origin = Origin::start();
    origin.set("/h", Reply::ok("12345"));
    let addr = origin.addr();
    let resp = head(addr, "/h", &[]).unwrap();
    assert_eq!(resp.header("content-length"), Some("5"));
    assert!(resp.body.is_empty());
    // The connection stays usable: no stray body bytes were sent after the HEAD.
    let mut conn = Conn::new(addr);
    let r1 = conn.request(&request_bytes("HEAD", addr, "/h", &[])).unwrap();
    assert!(r1.body.is_empty());
    let r2 = conn.request(&request_bytes("GET", addr, "/h", &[])).unwrap();
    assert_eq!(r2.body, b"12345");
}

#[test]
fn chunked_reply_uses_the_scripted_chunk_sizes() {
    let origin = Origin::start();
    let body = pattern_body(1000, 2);
    origin.set("/c", Reply::chunked(body.clone(), &[1, 16, 500]));
    let resp = get(origin.addr(), "/c", &[]).unwrap();
    assert!(resp.chunked);
    assert!(resp.body == body);
    assert_eq!(resp.header("content-length"), None);

    // On the wire: chunks of 1, 0x10, 0x1f4, then the remainder 0x1e3, then the last chunk.
    let raw = send_raw(origin.addr(), b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    let after_head = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(after_head.starts_with("1\r\n"), "{after_head:.20}");
    for size_line in ["\r\n10\r\n", "\r\n1f4\r\n", "\r\n1e3\r\n"] {
        assert!(after_head.contains(size_line), "missing chunk {size_line:?}");
    }
    assert!(after_head.ends_with("\r\n0\r\n\r\n"));
}

#[test]
fn close_delimited_reply_ends_at_close() {
    let origin = Origin::start();
    let body = pattern_body(30_000, 3);
    origin.set("/cd", Reply::close_delimited(body.clone()));
    let resp = get(origin.addr(), "/cd", &[]).unwrap();
    assert!(resp.close_delimited);
    assert!(!resp.chunked);
    assert!(resp.body == body);
}

#[test]
fn truncated_length_reply_is_an_incomplete_body_error() {
    let origin = Origin::start();
    origin.set("/t", Reply::truncated(pattern_body(100_000, 4), 50_000));
    match get(origin.addr(), "/t", &[]) {
        Err(ClientError::IncompleteBody { head, received_bytes }) => {
            assert_eq!(head.status, 200);
            assert_eq!(head.framing, Framing::Length(100_000));
            assert_eq!(received_bytes, 50_000);
        }
        other => panic!("expected IncompleteBody, got {other:?}"),
    }
}

#[test]
fn cut_chunked_reply_is_an_incomplete_body_error() {
    let origin = Origin::start();
    origin.set("/tc", Reply::chunked(pattern_body(10_000, 5), &[1000]).with_cut_after(3000));
    let err = get(origin.addr(), "/tc", &[]).unwrap_err();
    assert!(err.is_incomplete_body(), "{err:?}");
}

#[test]
fn status_only_and_redirect_replies() {
    let origin = Origin::start();
    origin.set("/e", Reply::status(500));
    origin.set("/r", Reply::redirect(302, "http://127.0.0.1:1/elsewhere"));
    let e = get(origin.addr(), "/e", &[]).unwrap();
    assert_eq!(e.status, 500);
    assert!(e.body.is_empty());
    let r = get(origin.addr(), "/r", &[]).unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://127.0.0.1:1/elsewhere"));
}

#[test]
fn head_delay_and_piece_delay_are_observable() {
    let origin = Origin::start();
    let body = pattern_body(5000, 6);
    origin.set(
        "/slow",
        Reply::ok(body.clone())
            .with_head_delay(Duration::from_millis(300))
            .with_pieces(&[10], Duration::from_millis(700)),
    );
    let addr = origin.addr();
    let mut conn = Conn::new(addr);
    let start = Instant::now();
    conn.send(&request_bytes("GET", addr, "/slow", &[])).unwrap();
    let head = conn.read_head(false).unwrap();
    let t_head = start.elapsed();
    let mut partial = PartialBody::new(&head);
    conn.read_body_at_least(&mut partial, 10).unwrap();
    let t_first = start.elapsed();
    assert!(partial.bytes().len() >= 10 && partial.bytes().len() < body.len());
    conn.read_body_to_end(&mut partial).unwrap();
    let t_end = start.elapsed();
    assert!(partial.bytes() == body.as_slice());
    // Generous bounds: the point is the order of events, not the scheduler's precision.
    assert!(t_head >= Duration::from_millis(250), "{t_head:?}");
    assert!(t_first < Duration::from_millis(900), "{t_first:?}");
    assert!(t_end >= Duration::from_millis(950), "{t_end:?}");
}

#[test]
fn paced_reply_sends_whole_body() {
    let origin = Origin::start();
    let body = pattern_body(100_000, 7);
    origin.set("/paced", Reply::ok(body.clone()).with_paced(30_000, Duration::from_millis(10)));
    assert!(get(origin.addr(), "/paced", &[]).unwrap().body == body);
}

#[test]
fn stopped_origin_refuses_connections_and_cuts_replies_in_progress() {
    let origin = Origin::start();
    origin.set("/long", Reply::ok(pattern_body(100_000, 8)).with_pieces(&[1000], Duration::from_secs(30)));
    let addr = origin.addr();
    let mut conn = Conn::new(addr);
    conn.send(&request_bytes("GET", addr, "/long", &[])).unwrap();
    let head = conn.read_head(false).unwrap();
    let mut partial = PartialBody::new(&head);
    conn.read_body_at_least(&mut partial, 1000).unwrap();

    let start = Instant::now();
    origin.stop();
    // The 30 s pause is abandoned: the client sees a cut quickly, not a timeout.
    let err = conn.read_body_to_end(&mut partial).unwrap_err();
    assert!(err.is_incomplete_body(), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // Refused "soon" rather than at once: a child that another test is forking at this moment
    // holds a copy of the listening socket until it execs (CLOEXEC acts only at exec), and the
    // kernel keeps accepting into it meanwhile. Seen about once in 20 runs with 16 test threads.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Conn::try_new(addr).is_ok() {
        assert!(Instant::now() < deadline, "connect after stop must be refused");
        thread::sleep(Duration::from_millis(20));
    }
    drop(origin); // a second stop (from Drop) is harmless
}

#[test]
fn client_rejects_both_content_length_and_chunked() {
    let addr = one_shot_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::ZERO,
    );
    let err = get(addr, "/", &[]).unwrap_err();
    assert!(matches!(err, ClientError::Malformed(_)), "{err:?}");
}

#[test]
fn client_rejects_bad_chunk_framing() {
    let addr =
        one_shot_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", Duration::ZERO);
    let err = get(addr, "/", &[]).unwrap_err();
    assert!(matches!(err, ClientError::Malformed(_)), "{err:?}");
}

#[test]
fn client_reports_a_silent_peer_as_timeout_not_as_a_cut() {
    let addr = one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", Duration::from_secs(3));
    let mut conn = Conn::new(addr);
    conn.set_read_timeout(Duration::from_millis(300));
    let err = conn.request(&request_bytes("GET", addr, "/", &[])).unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}

#[test]
fn client_reports_close_before_head() {
    let addr = one_shot_server(b"HTTP/1.1 200 O", Duration::ZERO);
    let err = get(addr, "/", &[]).unwrap_err();
    match err {
        ClientError::ClosedBeforeHead { received } => assert_eq!(received, b"HTTP/1.1 200 O"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn peer_close_is_detected_and_open_connection_is_not() {
    let closing = one_shot_server(b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n", Duration::ZERO);
    let (bytes, closed) = send_raw_with_timeout(closing, b"GARBAGE\r\n\r\n", Duration::from_secs(3));
    assert!(bytes.starts_with(b"HTTP/1.1 400"));
    assert!(closed);

    let holding = one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Duration::from_secs(3));
    let mut conn = Conn::new(holding);
    let resp = conn.request(&request_bytes("GET", holding, "/", &[])).unwrap();
    assert_eq!(resp.status, 200);
    assert!(!conn.peer_closed_within(Duration::from_millis(300)));
}

#[test]
fn s3_error_assertion_accepts_a_well_formed_error() {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
                <Message>The specified key does not exist.</Message><Key>k</Key>\
                <RequestId>abc123</RequestId></Error>";
    let resp = Response {
        status: 404,
        reason: "Not Found".into(),
        headers: vec![("x-request-id".into(), "abc123".into()), ("content-length".into(), body.len().to_string())],
        body: body.as_bytes().to_vec(),
        chunked: false,
        close_delimited: false,
    };
    assert_eq!(assert_s3_error(&resp, 404, Some("NoSuchKey")), "abc123");
    assert_eq!(xml_tag(body, "Key"), Some("k"));
}

#[test]
fn etag_helper_is_quoted_md5() {
    // RFC 1321 test vector.
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(expected_etag(b""), "\"d41d8cd98f00b204e9800998ecf8427e\"");
}

#[test]
fn config_renders_with_exact_keys_and_ordered_rules() {
    let text = NodeBuilder::new()
        .mirror("http://127.0.0.1:1/dir1/", "img/")
        .mirror("http://127.0.0.1:2/", "")
        .bucket("no-rules")
        .bucket("other")
        .mirror("http://127.0.0.1:3/x/", "a\"b")
        .with_line("server", "extra_knob = 5")
        .with_extra_toml("[future]\nthing = true")
        .render(std::path::Path::new("/tmp/some dir/store"));
    let doc: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(doc["server"]["workers"].as_integer(), Some(2));
    assert_eq!(doc["server"]["extra_knob"].as_integer(), Some(5));
    assert_eq!(doc["admin"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(doc["admin"]["token"].as_str(), Some("test-token"));
    assert_eq!(doc["store"]["dir"].as_str(), Some("/tmp/some dir/store"));
    assert_eq!(doc["cache"]["memory_bytes"].as_integer(), Some(16_777_216));
    assert_eq!(doc["cache"]["disk_bytes"].as_integer(), Some(67_108_864));
    assert_eq!(doc["origin"]["connect_timeout_ms"].as_integer(), Some(2000));
    assert_eq!(doc["origin"]["first_byte_timeout_ms"].as_integer(), Some(3000));
    assert_eq!(doc["origin"]["idle_timeout_ms"].as_integer(), Some(3000));
    assert_eq!(doc["future"]["thing"].as_bool(), Some(true));

    let buckets = doc["buckets"].as_array().unwrap();
    let names: Vec<&str> = buckets.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["example-bucket", "no-rules", "other"]);
    let rules = buckets[0]["mirror"].as_array().unwrap();
    assert_eq!(rules[0]["url"].as_str(), Some("http://127.0.0.1:1/dir1/"));
    assert_eq!(rules[0]["key_prefix"].as_str(), Some("img/"));
    assert_eq!(rules[1]["url"].as_str(), Some("http://127.0.0.1:2/"));
    assert_eq!(rules[1]["key_prefix"].as_str(), Some(""));
    assert!(buckets[1].get("mirror").is_none());
    assert_eq!(buckets[2]["mirror"][0]["key_prefix"].as_str(), Some("a\"b"));
}

#[test]
fn ready_line_parses_both_addresses() {
    let (data, admin) = parse_ready_line("edgemirror ready data=127.0.0.1:4000 admin=127.0.0.1:4001").unwrap();
    assert_eq!(data, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(admin, "127.0.0.1:4001".parse().unwrap());
    assert!(parse_ready_line("edgemirror ready data=127.0.0.1:4000").is_none());
    assert!(parse_ready_line("something else").is_none());
}

/// Writes an executable shell script standing in for `edgemirror`.
fn stand_in(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Behaves like a node for the launcher: checks `--config FILE`, logs to stderr, counts its
/// starts next to the config, prints the ready line after another stdout line, exits 0 on TERM
/// (the trap is set before the ready line, as a real node installs signal handlers before it).
const READY_STAND_IN: &str = r#"
[ "$1" = "--config" ] && [ -f "$2" ] || { echo "usage: --config FILE" >&2; exit 64; }
echo "stand-in started with $2" >&2
trap 'echo "got TERM" >&2; exit 0' TERM
echo start >> "$(dirname "$2")/starts"
echo "some other stdout line"
echo "edgemirror ready data=127.0.0.1:4000 admin=127.0.0.1:4001"
while :; do sleep 0.05; done
"#;

#[test]
fn launcher_starts_stops_kills_and_restarts_a_stand_in() {
    let scripts = tempfile::tempdir().unwrap();
    let binary = stand_in(scripts.path(), "fake-node", READY_STAND_IN);
    let mut node = NodeBuilder::new().mirror("http://127.0.0.1:9/dir1/", "").with_binary(&binary).start();
    let starts =
        |node: &crate::support::node::Node| std::fs::read_to_string(node.dir().join("starts")).unwrap().lines().count();
    assert_eq!(node.data_addr(), "127.0.0.1:4000".parse().unwrap());
    assert_eq!(node.admin_addr(), "127.0.0.1:4001".parse().unwrap());
    assert!(node.store_dir().starts_with(node.dir()));
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    assert!(config.contains("[[buckets.mirror]]"), "{config}");
    assert!(node.is_running());
    assert_eq!(starts(&node), 1);

    node.kill9();
    assert!(!node.is_running());
    node.restart();
    assert_eq!(starts(&node), 2);
    assert!(node.is_running());

    let status = node.stop();
    assert!(status.success(), "{status:?}");
    let stderr = node.stderr();
    assert!(stderr.contains("got TERM"), "{stderr}");
    assert!(stderr.contains(&format!("stand-in started with {}", node.config_path().display())));
    assert!(stderr.contains("=== e2e: start #2 ==="), "{stderr}");

    node.restart(); // from stopped: just starts
    assert_eq!(starts(&node), 3);
    // Drop kills it.
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn launcher_fails_with_stderr_when_the_node_never_becomes_ready() {
    let scripts = tempfile::tempdir().unwrap();
    let silent = stand_in(scripts.path(), "silent", "echo 'stuck scanning segments' >&2\nwhile :; do sleep 0.05; done");
    let msg = panic_message(|| {
        NodeBuilder::new().with_binary(&silent).with_ready_timeout(Duration::from_millis(500)).start();
    });
    assert!(msg.contains("did not become ready"), "{msg}");
    assert!(msg.contains("stuck scanning segments"), "{msg}");

    let dying = stand_in(scripts.path(), "dying", "echo 'boom: no store' >&2\nexit 3");
    let msg = panic_message(|| {
        NodeBuilder::new().with_binary(&dying).start();
    });
    assert!(msg.contains("stdout closed before the ready line"), "{msg}");
    assert!(msg.contains("boom: no store"), "{msg}");
}

#[test]
fn launcher_reports_exit_status_and_stderr_of_a_rejected_config() {
    let scripts = tempfile::tempdir().unwrap();
    let rejecting = stand_in(scripts.path(), "rejecting", "echo 'invalid value for `server.listen`' >&2\nexit 2");
    let exited = NodeBuilder::new().with_binary(&rejecting).start_expecting_exit();
    assert_eq!(exited.status.code(), Some(2));
    assert!(exited.stderr.contains("server.listen"), "{}", exited.stderr);

    let msg = panic_message(|| {
        NodeBuilder::new().with_binary(&stand_in(scripts.path(), "ready", READY_STAND_IN)).start_expecting_exit();
    });
    assert!(msg.contains("started although its config is invalid"), "{msg}");
}
