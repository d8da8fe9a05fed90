//! Failures and who they are blamed on.
//!
//! Upstream: origin 404 is the client's 404 (NoSuchKey); any other origin failure before the
//! response head (5xx, refused connection, no first byte in time) is 424 MirrorFailed (seed:
//! "In case of the status code other than 200 ... 424 ... MirrorFailed"). A failure after the
//! head went out can only be signalled by cutting the client connection: a short `200` would be
//! taken as the object. Nothing of a failed mirror is stored.
//!
//! Downstream: a malformed request gets 400 with an XML error body, then the connection closes.
//! Config: a bad value or an unknown key stops the process at start-up, naming the key.

use std::time::{Duration, Instant};

use crate::support::client::{get, ClientError, Conn};
use crate::support::node::NodeBuilder;
use crate::support::origin::{Origin, Reply};
use crate::support::{
    assert_origin_count, assert_s3_error, closed_port_addr, object_path, origin_and_node, pattern_body, source_of,
};

#[test]
fn origin_404_is_no_such_key_and_nothing_is_stored() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    origin.set("/dir1/missing.txt", Reply::status(404));
    let path = object_path("missing.txt");

    let resp = get(addr, &path, &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
    let resp = get(addr, &path, &[]).expect("second GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
    // A 404 is not remembered: each GET asks the origin again.
    assert_origin_count(&origin, "/dir1/missing.txt", 2);
}

#[test]
fn origin_500_is_mirror_failed_and_nothing_is_stored() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    origin.set("/dir1/flaky.txt", Reply::status(500));
    let path = object_path("flaky.txt");

    let resp = get(addr, &path, &[]).expect("GET");
    assert_s3_error(&resp, 424, Some("MirrorFailed"));

    // The origin recovers: the next GET mirrors for real.
    origin.set("/dir1/flaky.txt", Reply::ok("recovered"));
    let resp = get(addr, &path, &[]).expect("GET after recovery");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"recovered");
    assert_eq!(source_of(&resp), "origin");
    assert_origin_count(&origin, "/dir1/flaky.txt", 2);
}

#[test]
fn refused_origin_connection_is_mirror_failed() {
    let dead = closed_port_addr();
    let node = NodeBuilder::new().mirror(&format!("http://{dead}/dir1/"), "").start();
    let resp = get(node.data_addr(), &object_path("anything"), &[]).expect("GET");
    assert_s3_error(&resp, 424, Some("MirrorFailed"));
}

#[test]
fn origin_slower_than_first_byte_timeout_is_mirror_failed() {
    let origin = Origin::start();
    let node =
        NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").with_first_byte_timeout_ms(1000).start();
    origin.set("/dir1/sleepy.txt", Reply::ok("too late").with_head_delay(Duration::from_secs(5)));

    let start = Instant::now();
    let resp = get(node.data_addr(), &object_path("sleepy.txt"), &[]).expect("GET");
    let took = start.elapsed();
    assert_s3_error(&resp, 424, Some("MirrorFailed"));
    // The answer must come from the node's timeout (1 s), not from the origin finally
    // answering (5 s); the bound is loose on purpose.
    assert!(took < Duration::from_millis(4000), "424 only after {took:?}");
}

#[test]
fn truncated_origin_body_cuts_the_client_connection() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(100_000, 40);
    // CL 100 000; 25 000 bytes, a pause (so the node has surely sent its head), 25 000 more,
    // then the origin closes.
    origin.set(
        "/dir1/torn.bin",
        Reply::truncated(body.clone(), 50_000).with_pieces(&[25_000], Duration::from_millis(500)),
    );
    let path = object_path("torn.bin");

    match get(addr, &path, &[]) {
        Err(ClientError::IncompleteBody { head, received_bytes }) => {
            assert_eq!(head.status, 200, "{head:?}");
            assert!(received_bytes <= 50_000, "more bytes than the origin sent: {received_bytes}");
        }
        Ok(resp) => panic!("a truncated mirror must cut the connection, got {resp:?}"),
        Err(other) => panic!("expected the connection to be cut mid-body, got {other:?}"),
    }

    // Nothing stored: the next GET goes to the origin again and gets the whole object.
    origin.set("/dir1/torn.bin", Reply::ok(body.clone()));
    let resp = get(addr, &path, &[]).expect("GET after the torn transfer");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body, "{resp:?}");
    assert_eq!(source_of(&resp), "origin");
    assert_origin_count(&origin, "/dir1/torn.bin", 2);
}

#[test]
fn chunked_origin_dying_mid_body_cuts_the_client_connection() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(100_000, 41);
    // Chunks stop after 40 000 bytes, with no terminating chunk; the origin closes.
    origin.set(
        "/dir1/torn-chunked.bin",
        Reply::chunked(body.clone(), &[10_000; 4]).with_piece_delay(Duration::from_millis(200)).with_cut_after(40_000),
    );
    let path = object_path("torn-chunked.bin");

    match get(addr, &path, &[]) {
        Err(ClientError::IncompleteBody { head, .. }) => assert_eq!(head.status, 200, "{head:?}"),
        Ok(resp) => panic!("a torn chunked mirror must cut the connection, got {resp:?}"),
        Err(other) => panic!("expected the connection to be cut mid-body, got {other:?}"),
    }

    origin.set("/dir1/torn-chunked.bin", Reply::ok(body.clone()));
    let resp = get(addr, &path, &[]).expect("GET after the torn transfer");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body);
    assert_origin_count(&origin, "/dir1/torn-chunked.bin", 2);
}

#[test]
fn malformed_request_is_400_then_the_connection_closes() {
    let (_origin, node) = origin_and_node();
    let mut conn = Conn::new(node.data_addr());
    conn.send(b"GARBAGE\r\n\r\n").expect("send garbage");
    let resp = conn.read_response().expect("a 400 response");
    assert_s3_error(&resp, 400, None);
    assert!(conn.peer_closed_within(Duration::from_secs(3)), "connection still open after a 400");
}

#[test]
fn bad_listen_address_stops_startup_naming_the_key() {
    let exited = NodeBuilder::new().with_listen("nope").start_expecting_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(exited.stderr.contains("listen"), "stderr does not name `listen`:\n{}", exited.stderr);
}

#[test]
fn unknown_config_key_stops_startup_naming_the_key() {
    let exited = NodeBuilder::new().with_line("server", "no_such_knob = 1").start_expecting_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(exited.stderr.contains("no_such_knob"), "stderr does not name the unknown key:\n{}", exited.stderr);
}

#[test]
fn error_responses_say_who_decided_them_in_the_source_header() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    origin.set("/dir1/gone.txt", Reply::status(404));
    origin.set("/dir1/broken.txt", Reply::status(500));
    let cases = [
        ("/no-such-bucket/k".to_string(), 404, "edge"),
        (object_path("gone.txt"), 404, "origin"),
        (object_path("broken.txt"), 424, "origin"),
        (object_path("w/..%2fx"), 400, "edge"),
    ];
    for (path, status, source) in cases {
        let resp = get(addr, &path, &[]).expect("GET");
        assert_eq!(resp.status, status, "{path}: {resp:?}");
        assert_eq!(source_of(&resp), source, "{path}: {resp:?}");
    }
    let raw = crate::support::client::send_raw(addr, b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 400") && text.contains("x-edgemirror-source: edge"), "{text}");
}

/// A failing origin opens its circuit breaker: after `breaker_failures` failures within the
/// window, misses answer 424 without contacting it; after `breaker_open_ms` one probe goes, and
/// its success closes the breaker. 404 is an answer, not a failure.
#[test]
fn a_failing_origin_opens_its_breaker_and_a_good_probe_closes_it() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("origin", "breaker_failures = 3")
        .with_line("origin", "breaker_window_ms = 60000")
        .with_line("origin", "breaker_open_ms = 1500")
        .start();
    let addr = node.data_addr();
    origin.set("/dir1/missing", Reply::status(404));
    for _ in 0..4 {
        assert_s3_error(&get(addr, &object_path("missing"), &[]).unwrap(), 404, Some("NoSuchKey"));
    }
    origin.set("/dir1/down", Reply::status(503));
    for _ in 0..3 {
        assert_s3_error(&get(addr, &object_path("down"), &[]).unwrap(), 424, Some("MirrorFailed"));
    }
    assert_origin_count(&origin, "/dir1/down", 3);

    // Open: refused at once, for every key of that origin, and the origin sees nothing.
    origin.set("/dir1/down", Reply::ok("back"));
    origin.set("/dir1/other", Reply::ok("other"));
    let started = Instant::now();
    for key in ["down", "other", "down"] {
        assert_s3_error(&get(addr, &object_path(key), &[]).unwrap(), 424, Some("MirrorFailed"));
    }
    assert!(started.elapsed() < Duration::from_millis(500), "an open breaker answers at once");
    assert_origin_count(&origin, "/dir1/down", 3);
    assert_origin_count(&origin, "/dir1/other", 0);
    assert_eq!(crate::support::metric(&node, "edgemirror_origin_breakers_open"), 1);
    assert!(crate::support::metric(&node, "edgemirror_origin_breaker_rejections_total") >= 3);
    assert!(node.stderr().contains("origin circuit open"), "{}", node.stderr());
    let breaker = |node: &crate::support::node::Node| {
        let path = format!("/v1/regions/cn-north-1/buckets/{}/backSource", crate::support::BUCKET);
        let resp =
            crate::support::admin_request(node.admin_addr(), "GET", &path, Some(crate::support::ADMIN_TOKEN), None);
        crate::support::admin_json(&resp)["result"]["status"][0]["origins"][0]["breaker"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(breaker(&node), "open", "the rule's status shows the breaker");

    // After breaker_open_ms, a probe goes through; the origin is back, so it closes.
    std::thread::sleep(Duration::from_millis(1600));
    let probe = get(addr, &object_path("down"), &[]).unwrap();
    assert_eq!((probe.status, probe.body.as_slice()), (200, &b"back"[..]), "{probe:?}");
    let other = get(addr, &object_path("other"), &[]).unwrap();
    assert_eq!(other.status, 200, "closed again: {other:?}");
    assert_eq!(crate::support::metric(&node, "edgemirror_origin_breakers_open"), 0);
    assert!(node.stderr().contains("origin circuit closed"), "{}", node.stderr());
    assert_eq!(breaker(&node), "closed");
}

/// `origin.total_timeout_ms` bounds the whole exchange: an origin that keeps sending, each piece
/// well within the idle timeout, but too slowly overall, is cut; nothing is stored.
#[test]
fn an_origin_slower_than_the_total_deadline_is_cut_and_nothing_is_stored() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("origin", "total_timeout_ms = 600")
        .start();
    let body = pattern_body(40_000, 3);
    origin.set("/dir1/slow.bin", Reply::ok(body.clone()).with_paced(4_000, Duration::from_millis(150)));
    let started = Instant::now();
    let first = get(node.data_addr(), &object_path("slow.bin"), &[]);
    let elapsed = started.elapsed();
    match first {
        Ok(resp) => assert_ne!(resp.body, body, "a whole body after the deadline: {resp:?}"),
        Err(e) => assert!(e.is_incomplete_body(), "{e:?}"),
    }
    assert!(elapsed < Duration::from_millis(1_400), "cut near the deadline, not after the 1.5 s body: {elapsed:?}");
    assert!(node.stderr().contains("total deadline"), "{}", node.stderr());
    // Nothing was stored: the next GET asks the origin again.
    origin.set("/dir1/slow.bin", Reply::ok(body.clone()));
    let again = get(node.data_addr(), &object_path("slow.bin"), &[]).unwrap();
    assert_eq!(again.status, 200);
    assert!(again.body == body);
    assert_origin_count(&origin, "/dir1/slow.bin", 2);
}

/// `origin.max_fetches_per_origin`: at most that many exchanges with one origin at a time, across
/// cores; the others wait for a slot (and all succeed).
#[test]
fn fetches_from_one_origin_are_capped_and_wait_for_a_slot() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_workers(2)
        .with_line("origin", "max_fetches_per_origin = 1")
        .start();
    for i in 0..3 {
        origin
            .set(&format!("/dir1/slow{i}"), Reply::ok(format!("body {i}")).with_head_delay(Duration::from_millis(300)));
    }
    let addr = node.data_addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|i| std::thread::spawn(move || get(addr, &object_path(&format!("slow{i}")), &[]).unwrap()))
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let resp = c.join().unwrap();
        assert_eq!((resp.status, resp.body), (200, format!("body {i}").into_bytes()));
    }
    // One at a time: three 300 ms heads take 900 ms (in parallel they would take 300).
    assert!(started.elapsed() >= Duration::from_millis(850), "{:?}", started.elapsed());
    assert!(crate::support::metric(&node, "edgemirror_origin_fetch_slot_waits_total") >= 2);
    // The rule's status shows the origin's slots.
    let path = format!("/v1/regions/cn-north-1/buckets/{}/backSource", crate::support::BUCKET);
    let resp = crate::support::admin_request(node.admin_addr(), "GET", &path, Some(crate::support::ADMIN_TOKEN), None);
    let origin_status = &crate::support::admin_json(&resp)["result"]["status"][0]["origins"][0];
    assert_eq!(
        (origin_status["fetchesInFlight"].as_u64(), origin_status["maxFetches"].as_u64()),
        (Some(0), Some(1)),
        "{origin_status}"
    );
}

/// `origin.max_bytes_per_sec_per_origin`: an origin body is read no faster than the cap (a
/// tenth of a second of burst), and arrives whole.
#[test]
fn origin_reads_keep_to_the_byte_rate_cap() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("origin", "max_bytes_per_sec_per_origin = 4194304")
        .start();
    let body = pattern_body(3 << 20, 6);
    origin.set("/dir1/big.bin", Reply::ok(body.clone()));
    let started = Instant::now();
    let resp = get(node.data_addr(), &object_path("big.bin"), &[]).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status, 200);
    assert!(resp.body == body, "the paced body differs");
    // 3 MiB at 4 MiB/s with 0.4 MiB of burst: about 0.65 s (unpaced, loopback: milliseconds).
    assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
    assert!(crate::support::metric_f64(&node, "edgemirror_origin_paced_seconds_total") >= 0.5);
}
