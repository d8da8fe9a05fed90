//! Back-to-origin on a miss: a GET for an absent key is fetched from `rule.url + key`, streamed
//! to the client and written to the store at the same time (seed: image-back-to-origin.md).
//!
//! These tests check both sides of the node: what the origin receives (target, Host, no client
//! headers) and what the client receives (status, body, saved headers, framing, streaming), and
//! how rules are chosen (in order, first `key_prefix` match wins).

use std::time::{Duration, Instant};

use crate::support::client::{get, request_bytes, Conn, PartialBody};
use crate::support::node::NodeBuilder;
use crate::support::origin::{Origin, Reply};
use crate::support::{
    assert_origin_count, assert_s3_error, expected_etag, get_stored, get_until_source, object_path, origin_and_node,
    pattern_body, source_of,
};

#[test]
fn absent_key_is_fetched_from_origin_then_served_from_store() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    // Over 128 KiB: repeats go to the RAM tier (32-128 KiB objects are sent from the page cache).
    let body = pattern_body(200_000, 1);
    origin.set("/dir1/image/example_object.jpg", Reply::ok(body.clone()));
    let path = object_path("image/example_object.jpg");

    // Client headers must not travel to the origin (the seed's a-header/b-header example).
    let first = get(addr, &path, &[("a-header", "111"), ("b-header", "222")]).expect("first GET");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body == body, "first GET body differs: {first:?}");
    assert_eq!(source_of(&first), "origin");
    // The origin announced a length; relaying it lets clients detect a cut.
    assert_eq!(first.header("content-length"), Some("200000"), "{first:?}");

    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let upstream = &requests[0];
    assert_eq!(upstream.method, "GET");
    assert_eq!(upstream.path, "/dir1/image/example_object.jpg");
    assert_eq!(upstream.header("host"), Some(origin.addr().to_string().as_str()));
    assert_eq!(upstream.header("a-header"), None, "client header forwarded: {upstream:?}");
    assert_eq!(upstream.header("b-header"), None, "client header forwarded: {upstream:?}");

    let second = get_stored(addr, &path, &body);
    assert_eq!(second.header("etag"), Some(expected_etag(&body).as_str()), "{second:?}");
    let last_modified = second.header("last-modified").expect("Last-Modified on a stored object");
    httpdate::parse_http_date(last_modified)
        .unwrap_or_else(|e| panic!("Last-Modified {last_modified:?} is not an HTTP date: {e}"));
    assert_eq!(second.header("content-length"), Some("200000"));
    assert!(!second.chunked);
    assert_origin_count(&origin, "/dir1/image/example_object.jpg", 1);

    let third = get_until_source(addr, &path, &body, &["memory"]);
    assert_eq!(third.header("etag"), second.header("etag"));
    assert_eq!(third.header("last-modified"), second.header("last-modified"));
    assert_origin_count(&origin, "/dir1/image/example_object.jpg", 1);
}

#[test]
fn key_is_percent_encoded_towards_the_origin() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    // Key "dir a/über+plus~x_y-z.txt": unreserved characters and '/' travel as they are, the
    // space, the UTF-8 bytes and '+' are percent-encoded (RFC 3986 §2.1: uppercase hex).
    let encoded = "dir%20a/%C3%BCber%2Bplus~x_y-z.txt";
    let body = b"encoded key".to_vec();
    origin.set(&format!("/dir1/{encoded}"), Reply::ok(body.clone()));

    let resp = get(addr, &object_path(encoded), &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}; origin saw {:?}", origin.requests());
    assert_eq!(resp.body, body);
    let requests = origin.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, format!("/dir1/{encoded}"));

    // Stored under the decoded key: the same encoded request finds it.
    get_stored(addr, &object_path(encoded), &body);
    assert_eq!(origin.requests().len(), 1);
}

#[test]
fn saved_headers_are_kept_and_others_dropped() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    // Content-Encoding is a label here: the node stores the bytes as they are, never decodes.
    let body = pattern_body(5_000, 2);
    let saved = [
        ("content-type", "image/jpeg"),
        ("content-encoding", "gzip"),
        ("content-disposition", "attachment; filename=\"cat.jpg\""),
        ("cache-control", "max-age=60, public"),
        ("expires", "Thu, 01 Dec 2044 16:00:00 GMT"),
    ];
    let mut reply = Reply::ok(body.clone()).with_header("X-Other", "1");
    for (name, value) in saved {
        reply = reply.with_header(name, value);
    }
    origin.set("/dir1/cat.jpg", reply);
    let path = object_path("cat.jpg");

    let mirrored = get(addr, &path, &[]).expect("GET");
    assert_eq!(mirrored.status, 200, "{mirrored:?}");
    assert!(mirrored.body == body);
    let stored = get_stored(addr, &path, &body);
    let memory = get_until_source(addr, &path, &body, &["memory"]);

    for resp in [&mirrored, &stored, &memory] {
        for (name, value) in saved {
            assert_eq!(resp.header(name), Some(value), "{name} in {resp:?}");
        }
        assert_eq!(resp.header("x-other"), None, "X-Other must not be saved: {resp:?}");
    }
    // Mirrored objects are stored in the standard class (seed: "as the standard storage type").
    for resp in [&stored, &memory] {
        assert_eq!(resp.header("x-amz-storage-class"), Some("STANDARD"), "{resp:?}");
    }
    assert_origin_count(&origin, "/dir1/cat.jpg", 1);
}

#[test]
fn first_matching_rule_wins() {
    let images = Origin::start();
    let rest = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", images.url()), "img/")
        .mirror(&format!("{}/other/", rest.url()), "")
        .start();
    let addr = node.data_addr();
    images.set("/dir1/img/cat.jpg", Reply::ok("cat"));
    rest.set("/other/doc/readme.txt", Reply::ok("readme"));

    let cat = get(addr, &object_path("img/cat.jpg"), &[]).expect("GET img");
    assert_eq!(cat.status, 200, "{cat:?}");
    assert_eq!(cat.body, b"cat");
    let doc = get(addr, &object_path("doc/readme.txt"), &[]).expect("GET doc");
    assert_eq!(doc.status, 200, "{doc:?}");
    assert_eq!(doc.body, b"readme");

    // The whole key (prefix included) is appended to the rule's URL.
    let image_paths: Vec<String> = images.requests().into_iter().map(|r| r.path).collect();
    let rest_paths: Vec<String> = rest.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(image_paths, ["/dir1/img/cat.jpg"]);
    assert_eq!(rest_paths, ["/other/doc/readme.txt"]);
}

#[test]
fn catch_all_rule_listed_first_shadows_later_rules() {
    let images = Origin::start();
    let rest = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/other/", rest.url()), "")
        .mirror(&format!("{}/dir1/", images.url()), "img/")
        .start();
    rest.set("/other/img/cat.jpg", Reply::ok("from the catch-all"));

    let resp = get(node.data_addr(), &object_path("img/cat.jpg"), &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"from the catch-all");
    assert!(images.requests().is_empty(), "{:?}", images.requests());
}

#[test]
fn key_outside_every_prefix_is_no_such_key() {
    let origin = Origin::start();
    let node = NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "img/").start();
    origin.set("/dir1/doc/x.txt", Reply::ok("must not be fetched"));

    let resp = get(node.data_addr(), &object_path("doc/x.txt"), &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

#[test]
fn bucket_without_rules_is_no_such_key() {
    let node = NodeBuilder::new().bucket("plain-bucket").start();
    let resp = get(node.data_addr(), "/plain-bucket/any/key", &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
}

#[test]
fn unknown_bucket_is_no_such_bucket() {
    let (origin, node) = origin_and_node();
    let resp = get(node.data_addr(), "/no-such-bucket/key", &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchBucket"));
    assert!(origin.requests().is_empty());
}

#[test]
fn each_bucket_uses_its_own_rules() {
    let first = Origin::start();
    let second = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/a/", first.url()), "")
        .bucket("second-bucket")
        .mirror(&format!("{}/b/", second.url()), "")
        .start();
    second.set("/b/k", Reply::ok("second"));

    let resp = get(node.data_addr(), "/second-bucket/k", &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"second");
    assert!(first.requests().is_empty());
}

#[test]
fn chunked_origin_is_relayed_chunked_then_stored_with_length() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(50_000, 3);
    origin.set(
        "/dir1/chunky.bin",
        Reply::chunked(body.clone(), &[1, 100, 4096, 10_000]).with_piece_delay(Duration::from_millis(20)),
    );
    let path = object_path("chunky.bin");

    // Seed: "If the chunked code is returned by the origin server, then OSS will return the
    // chunked code to the user."
    let mirrored = get(addr, &path, &[]).expect("GET");
    assert_eq!(mirrored.status, 200, "{mirrored:?}");
    assert!(mirrored.chunked, "expected Transfer-Encoding: chunked: {mirrored:?}");
    assert!(mirrored.body == body);
    assert_eq!(source_of(&mirrored), "origin");

    // Once stored the length is known.
    let stored = get_stored(addr, &path, &body);
    assert!(!stored.chunked, "{stored:?}");
    assert_eq!(stored.header("content-length"), Some("50000"));
    assert_eq!(stored.header("etag"), Some(expected_etag(&body).as_str()));
    assert_origin_count(&origin, "/dir1/chunky.bin", 1);
}

#[test]
fn close_delimited_origin_body_is_mirrored_and_stored() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(70_000, 4);
    origin.set("/dir1/old-server.bin", Reply::close_delimited(body.clone()));
    let path = object_path("old-server.bin");

    // Any framing towards the client is fine here; the body must be whole.
    let mirrored = get(addr, &path, &[]).expect("GET");
    assert_eq!(mirrored.status, 200, "{mirrored:?}");
    assert!(mirrored.body == body);

    let stored = get_stored(addr, &path, &body);
    assert_eq!(stored.header("content-length"), Some("70000"));
    assert_origin_count(&origin, "/dir1/old-server.bin", 1);
}

#[test]
fn response_streams_before_the_origin_finishes() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(64 * 1024, 5);
    // Head and 10 bytes at once, then a 1.5 s pause, then the rest.
    origin.set("/dir1/stream.bin", Reply::ok(body.clone()).with_pieces(&[10], Duration::from_millis(1500)));

    let mut conn = Conn::new(addr);
    let start = Instant::now();
    conn.send(&request_bytes("GET", addr, &object_path("stream.bin"), &[])).expect("send");
    let head = conn.read_head(false).expect("response head");
    let head_at = start.elapsed();
    assert_eq!(head.status, 200, "{head:?}");
    let mut partial = PartialBody::new(&head);
    conn.read_body_at_least(&mut partial, 10).expect("first bytes");
    let first_bytes_at = start.elapsed();
    conn.read_body_to_end(&mut partial).expect("rest of the body");
    let end_at = start.elapsed();

    assert!(partial.bytes() == body.as_slice(), "streamed body differs");
    // This checks the order of events, not speed: the head and first bytes must arrive well
    // inside the origin's 1.5 s pause (a node that buffers the whole object cannot do that),
    // the end after it. The bounds leave ~1 s of slack for a loaded 2-core machine.
    assert!(head_at < Duration::from_millis(1000), "head after {head_at:?}");
    assert!(first_bytes_at < Duration::from_millis(1000), "first bytes after {first_bytes_at:?}");
    assert!(end_at >= Duration::from_millis(1400), "whole body after only {end_at:?}");
}

/// The node sends a miss's head together with the first body bytes when they are already
/// there, but never holds it back to wait for them: an origin that sends its head and then
/// pauses before any body byte still gets the client its head at once.
#[test]
fn the_head_is_not_held_for_body_bytes_that_have_not_come() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(64 * 1024, 6);
    // The head alone (a first piece of no bytes), then a 1.5 s pause, then the body.
    origin.set("/dir1/late-body.bin", Reply::ok(body.clone()).with_pieces(&[0], Duration::from_millis(1500)));

    let mut conn = Conn::new(addr);
    let start = Instant::now();
    conn.send(&request_bytes("GET", addr, &object_path("late-body.bin"), &[])).expect("send");
    let head = conn.read_head(false).expect("response head");
    let head_at = start.elapsed();
    assert_eq!(head.status, 200, "{head:?}");
    let mut partial = PartialBody::new(&head);
    conn.read_body_to_end(&mut partial).expect("the body");
    let end_at = start.elapsed();
    assert!(partial.bytes() == body.as_slice(), "streamed body differs");
    // The order of events, with ~1 s of slack for a loaded machine (as the test above).
    assert!(head_at < Duration::from_millis(1000), "head after {head_at:?}");
    assert!(end_at >= Duration::from_millis(1400), "whole body after only {end_at:?}");
}

#[test]
fn the_origins_last_modified_is_kept() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let lm = "Wed, 21 Oct 2015 07:28:00 GMT";
    let body = pattern_body(5000, 2);
    origin.set("/dir1/dated.bin", Reply::ok(body.clone()).with_header("Last-Modified", lm));
    origin.set("/dir1/undated.bin", Reply::ok(body.clone()));
    let path = object_path("dated.bin");

    let streamed = get(addr, &path, &[]).expect("GET");
    assert_eq!(streamed.header("last-modified"), Some(lm), "{streamed:?}");
    let stored = get_stored(addr, &path, &body);
    assert_eq!(stored.header("last-modified"), Some(lm), "{stored:?}");
    // Conditional requests use the origin's validator.
    let not_modified = get(addr, &path, &[("If-Modified-Since", lm)]).expect("conditional GET");
    assert_eq!(not_modified.status, 304, "{not_modified:?}");
    let earlier = get(addr, &path, &[("If-Modified-Since", "Tue, 20 Oct 2015 07:28:00 GMT")]).expect("GET");
    assert_eq!(earlier.status, 200);

    // No Last-Modified from the origin: the time it was mirrored.
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(2);
    let resp = get(addr, &object_path("undated.bin"), &[]).expect("GET");
    let t = httpdate::parse_http_date(resp.header("last-modified").expect("Last-Modified")).unwrap();
    assert!(t >= before, "{resp:?}");
}

#[test]
fn virtual_host_addressing_names_the_bucket_in_the_host() {
    let origin = Origin::start();
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml("[s3]\ndomain = \"s3.test\"")
        .start();
    let addr = node.data_addr();
    let body = pattern_body(3000, 8);
    origin.set("/dir1/img/a.jpg", Reply::ok(body.clone()));
    let raw = |host: &str, path: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    // The seed's own example form: the bucket in the Host, the key as the whole path.
    let resp = Conn::new(addr).request(&raw("example-bucket.s3.test", "/img/a.jpg")).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body);
    // With a port, in any case; and path style keeps working, also on the domain itself.
    for (host, path) in [
        ("Example-Bucket.S3.Test:8080", "/img/a.jpg"),
        ("s3.test", "/example-bucket/img/a.jpg"),
        ("127.0.0.1", "/example-bucket/img/a.jpg"),
    ] {
        let resp = Conn::new(addr).request(&raw(host, path)).expect("GET");
        assert_eq!(resp.status, 200, "{host} {path}: {resp:?}");
        assert!(resp.body == body);
    }
    let resp = Conn::new(addr).request(&raw("other.s3.test", "/img/a.jpg")).expect("GET");
    assert_eq!(resp.status, 404, "an unknown virtual-host bucket: {resp:?}");
    assert_eq!(origin.count("/dir1/img/a.jpg"), 1);
}
