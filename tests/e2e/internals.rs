//! Defects and holes found by probing the node as an attacker or a careless operator would
//! (issue 10), each pinned by a test that failed before its fix.
//!
//! - path traversal at the origin: a mirror never requests a path outside its MirrorURL path;
//! - a 304 to an HTTP/1.0 keep-alive client keeps the connection alive and says so;
//! - closing with an unread request body does not destroy the response (lingering close);
//! - a connection that never sends a byte is closed after the header timeout, not the idle one;
//! - a flood of idle connections cannot take the descriptors a miss needs;
//! - two processes never share one store directory;
//! - SSRF and self-loops: no spelling of the node's own address, and no redirect, reaches the
//!   node itself or a cloud metadata address; private origins follow `origin.allow_private`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::client::{get, Conn};
use crate::support::metric;
use crate::support::node::NodeBuilder;
use crate::support::origin::{Origin, Reply};
use crate::support::{
    admin_request, assert_s3_error, back_source_path, expected_etag, get_stored, object_path, origin_and_node,
    pattern_body, ADMIN_TOKEN,
};

#[test]
fn a_mirror_never_requests_a_path_outside_its_mirror_url() {
    let origin = Origin::start();
    origin.set("/secret.txt", Reply::ok("outside the mirrored directory"));
    origin.set("/dir/w/ok.txt", Reply::ok("inside"));
    let node = NodeBuilder::new().mirror(&format!("{}/dir/", origin.url()), "").start();
    let addr = node.data_addr();

    // Every spelling of '.', '..' and '/' that decodes to a dot segment, and the backslash some
    // origins treat as a separator.
    let attempts = [
        "w/..%2fsecret.txt",
        "w/..%2Fsecret.txt",
        "w/%2e%2e/secret.txt",
        "w/%2E%2E%2Fsecret.txt",
        "w/.%2e/secret.txt",
        "w/%2e./secret.txt",
        "..%2fsecret.txt",
        "%2e%2e/secret.txt",
        "w/..%5csecret.txt",
        "w/%2e%2e%5c..%5csecret.txt",
        "w/./ok.txt",
        "w/%2e/ok.txt",
        "w/../secret.txt",
        "w/..",
    ];
    for key in attempts {
        let path = object_path(key);
        let resp = get(addr, &path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        // Refused before any origin is asked (a request target the parser itself rejects is a
        // 400 too).
        assert_eq!(resp.status, 400, "GET {path}: {resp:?}");
        assert_ne!(resp.body, b"outside the mirrored directory");
    }
    let asked: Vec<String> = origin.requests().iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert!(asked.is_empty(), "nothing should have reached the origin; it was asked for {asked:?}");
    // Dots that are not whole segments are ordinary key characters, and the mirror still works.
    let resp = get(addr, &object_path("w/ok.txt"), &[]).expect("GET");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"inside"[..]));
    let refused = get(addr, &object_path("w/..%2fsecret.txt"), &[]).expect("GET");
    assert_s3_error(&refused, 400, Some("InvalidRequest"));
}

#[test]
fn a_304_to_an_http10_keep_alive_client_keeps_the_connection() {
    let (origin, node) = origin_and_node();
    let body = pattern_body(1000, 3);
    origin.set("/dir1/k.bin", Reply::ok(body.clone()));
    let path = object_path("k.bin");
    get_stored(node.data_addr(), &path, &body);
    let etag = expected_etag(&body);

    let mut conn = Conn::new(node.data_addr());
    let req = format!("GET {path} HTTP/1.0\r\nConnection: keep-alive\r\nIf-None-Match: {etag}\r\n\r\n");
    let resp = conn.request(req.as_bytes()).expect("conditional GET");
    assert_eq!(resp.status, 304, "{resp:?}");
    // HTTP/1.0 assumes close unless told otherwise (RFC 9112 §9.3).
    assert_eq!(resp.header("connection"), Some("keep-alive"), "{resp:?}");
    assert!(resp.header("content-length").is_none(), "a 304 announces no length: {resp:?}");
    let again = conn.request(req.as_bytes()).expect("a second request on the kept connection");
    assert_eq!(again.status, 304);
}

#[test]
fn an_unread_request_body_does_not_destroy_the_response() {
    let (origin, node) = origin_and_node();
    // Large enough that the end of the response is still in the node's send queue when it
    // closes: closing with unread bytes in the receive queue sends a reset, which throws that
    // queue away.
    let body = pattern_body(4 << 20, 9);
    origin.set("/dir1/big.bin", Reply::ok(body.clone()));
    let path = object_path("big.bin");
    get_stored(node.data_addr(), &path, &body);

    let mut s = TcpStream::connect(node.data_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A GET with a body this data plane does not read: the node answers, then closes.
    let request_body = vec![b'x'; 256 * 1024];
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", request_body.len());
    s.write_all(head.as_bytes()).expect("head");
    // Send the body in pieces while the node is already answering; errors are fine (a reset).
    for piece in request_body.chunks(32 * 1024) {
        if s.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                panic!("reading the response failed after {} bytes: {e} (the node reset the connection)", got.len())
            }
        }
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..head_end]));
    assert_eq!(got.len() - head_end, body.len(), "the whole body arrived");
    assert!(got[head_end..] == body[..]);
}

#[test]
fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let node = NodeBuilder::new()
        .bucket("example-bucket")
        .with_line("server", "header_timeout_ms = 500")
        .with_line("server", "idle_timeout_ms = 60000")
        .start();
    let mut conn = Conn::new(node.data_addr());
    let started = Instant::now();
    assert!(conn.peer_closed_within(Duration::from_secs(10)), "the silent connection was kept open");
    // Closed by the header timeout, long before the 60 s idle timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Writes a wrapper that starts the node with at most `nofile` descriptors (soft and hard).
fn limited_binary(dir: &std::path::Path, nofile: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("edgemirror-nofile-{nofile}.sh"));
    let script =
        format!("#!/bin/sh\nulimit -n {nofile} || exit 97\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_edgemirror"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn an_idle_connection_flood_cannot_take_the_descriptors_a_miss_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    origin.set("/dir1/during-flood.bin", Reply::ok(pattern_body(100_000, 4)));
    origin.set("/dir1/before.txt", Reply::ok("before"));
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_binary(&limited_binary(tmp.path(), 400))
        .with_line("server", "header_timeout_ms = 20000")
        .start();
    let addr = node.data_addr();

    // A client already connected before the flood.
    let mut client = Conn::new(addr);
    let resp = client.request(format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", object_path("before.txt")).as_bytes());
    assert_eq!(resp.expect("GET before the flood").status, 200);

    // 500 connections that never send a byte: more than the node has descriptors. (This test
    // process needs them too: lift its soft limit to its hard one.)
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass; no other memory is touched.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    let mut flood = Vec::new();
    for _ in 0..500 {
        match TcpStream::connect(addr) {
            Ok(s) => flood.push(s),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    // A miss now needs an origin socket and a store file; the flood must not have taken them.
    let req = format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", object_path("during-flood.bin"));
    let resp = client.request(req.as_bytes()).expect("GET during the flood");
    assert_eq!(resp.status, 200, "a miss during the flood: {resp:?}\nnode stderr:\n{}", node.stderr());
    assert_eq!(resp.body.len(), 100_000);
    assert!(!node.stderr().contains("Too many open files"), "{}", node.stderr());
    drop(flood);
}

#[test]
fn a_second_process_refuses_a_store_directory_in_use() {
    let (origin, node) = origin_and_node();
    let body = pattern_body(300_000, 7);
    origin.set("/dir1/kept.bin", Reply::ok(body.clone()));
    let path = object_path("kept.bin");
    get_stored(node.data_addr(), &path, &body);

    // The same config again, as a user starting the node twice would.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgemirror"))
        .arg("--config")
        .arg(node.config_path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run a second node");
    assert!(!out.status.success(), "the second process must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(stderr.contains(&node.pid().to_string()), "the message names the running node's pid: {stderr}");

    // The running node lost nothing, now or after a restart.
    let resp = get(node.data_addr(), &path, &[]).expect("GET");
    assert_eq!(resp.status, 200);
    let mut node = node;
    node.restart();
    let resp = get(node.data_addr(), &path, &[]).expect("GET after restart");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body);
    assert_eq!(origin.count("/dir1/kept.bin"), 1);
}

#[test]
fn the_rule_api_refuses_every_spelling_of_the_nodes_own_listeners() {
    let node = NodeBuilder::new().bucket("example-bucket").start();
    for port in [node.data_addr().port(), node.admin_addr().port()] {
        for host in ["127.1", "2130706433", "0", "0.0.0.0", "[::ffff:127.0.0.1]", "localhost.", "127.0.0.1", "[::1]"] {
            let body = format!(r#"{{"backSourceRules":[{{"address":{{"hostName":"{host}:{port}"}}}}]}}"#);
            let resp = admin_request(
                node.admin_addr(),
                "PUT",
                &back_source_path("example-bucket"),
                Some(ADMIN_TOKEN),
                Some(&body),
            );
            assert_eq!(resp.status, 400, "{host}:{port} was accepted: {}", resp.text());
            assert!(resp.text().contains("own listener"), "{host}:{port}: {}", resp.text());
        }
    }
    for host in ["169.254.169.254", "[fe80::1]", "100.100.100.200", "[::ffff:169.254.169.254]"] {
        let body = format!(r#"{{"backSourceRules":[{{"address":{{"hostName":"{host}"}}}}]}}"#);
        let resp = admin_request(
            node.admin_addr(),
            "PUT",
            &back_source_path("example-bucket"),
            Some(ADMIN_TOKEN),
            Some(&body),
        );
        assert_eq!(resp.status, 400, "{host} was accepted: {}", resp.text());
        assert!(resp.text().contains("metadata"), "{host}: {}", resp.text());
    }
}

#[test]
fn an_origin_redirect_never_reaches_the_node_itself_or_a_metadata_address() {
    let (origin, node) = origin_and_node();
    let admin = node.admin_addr();
    let data = node.data_addr();
    let targets = [
        format!("http://127.0.0.1:{}/health", admin.port()),
        format!("http://127.1:{}/metrics", admin.port()),
        format!("http://localhost:{}/health", admin.port()),
        format!("http://[::ffff:127.0.0.1]:{}/health", admin.port()),
        format!("http://0.0.0.0:{}/health", admin.port()),
        format!("http://2130706433:{}/example-bucket/x", data.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ];
    for (i, target) in targets.iter().enumerate() {
        let key = format!("redir-{i}.txt");
        origin.set(&format!("/dir1/{key}"), Reply::redirect(302, target));
        let resp = get(data, &object_path(&key), &[]).expect("GET");
        assert_s3_error(&resp, 424, Some("MirrorFailed"));
        // Nothing was stored: the origin is asked again.
        let again = get(data, &object_path(&key), &[]).expect("GET again");
        assert_eq!(again.status, 424, "{target}");
    }
    let log = node.stderr();
    assert!(log.contains("own listener"), "the refusal reason is logged: {log}");
    assert!(log.contains("metadata"), "the refusal reason is logged: {log}");
}

#[test]
fn with_private_addresses_refused_a_loopback_origin_is_a_config_error() {
    let origin = Origin::start();
    let exited = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("origin", "allow_private = false")
        .start_expecting_exit();
    assert!(!exited.status.success());
    assert!(exited.stderr.contains("buckets[0].mirror[0].url"), "{}", exited.stderr);
    assert!(exited.stderr.contains("allow_private"), "{}", exited.stderr);
}

#[test]
fn a_424_is_logged_with_its_reason() {
    let (origin, node) = origin_and_node();
    origin.set("/dir1/flaky.txt", Reply::status(503));
    let resp = get(node.data_addr(), &object_path("flaky.txt"), &[]).expect("GET");
    let request_id = assert_s3_error(&resp, 424, Some("MirrorFailed"));
    // The client is not told why (the reason may name internal hosts); the operator is, on the
    // line that carries the request id the client saw.
    assert!(!resp.text().contains("503"), "{}", resp.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = node.stderr();
        let line = log.lines().find(|l| l.contains("424 mirror failed") && l.contains(&request_id));
        if let Some(line) = line {
            assert!(line.contains("origin status 503"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no 424 line with request id {request_id} and its reason:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn segment_file_bytes(store_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(store_dir.join("segments")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn store_disk_bytes_reports_files_not_reservations_after_a_failed_fill() {
    let origin = Origin::start();
    let body = pattern_body(3 << 20, 5);
    // Announces 3 MiB, sends 1 MiB, then closes: the fill fails and its record is abandoned.
    origin.set("/dir1/big.bin", Reply::truncated(body.clone(), 1 << 20));
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        // Records over a quarter segment get a segment file of their own.
        .with_line("store", "segment_bytes = 4194304")
        .start();
    let path = object_path("big.bin");
    let resp = get(node.data_addr(), &path, &[]);
    match resp {
        Err(e) => assert!(e.is_incomplete_body(), "{e:?}"),
        Ok(r) => assert_eq!(r.status, 424, "{r:?}"),
    }

    origin.set("/dir1/big.bin", Reply::ok(body.clone()));
    get_stored(node.data_addr(), &path, &body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (reported, on_disk) = (metric(&node, "edgemirror_store_disk_bytes"), segment_file_bytes(node.store_dir()));
        if reported == on_disk {
            // One copy of the object, not the failed reservation as well.
            assert!(on_disk < (body.len() as u64) * 3 / 2 + (4 << 20), "{on_disk}");
            break;
        }
        assert!(Instant::now() < deadline, "store_disk_bytes {reported} != {on_disk} bytes of segment files");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&node, "edgemirror_store_write_failures_total"), 0);
}
