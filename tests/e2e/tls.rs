//! TLS on both sides of the node: the HTTPS listener (`[tls]`, certificates chosen by SNI, ALPN
//! `http/1.1`, TLS 1.2 and 1.3) and `https` origins (verified against `origin.ca_file`, or not at
//! all with `origin.insecure_skip_verify`).
//!
//! Every certificate is made by the test with rcgen: a test CA signs `a.test` and `b.test` (both
//! also valid for the IP 127.0.0.1), written as PEM files next to the node's config and named by
//! relative paths, which also checks that those resolve against the config file's directory.
//! The HTTPS origin is the scripted plain origin behind a TLS-terminating front
//! ([`TlsFront`]), so the origin's request log still tells what the node asked for.
//!
//! What must hold: the same answers over HTTPS as over HTTP (mirror, then stored, keep-alive);
//! the certificate a client gets depends on its SNI, with the first configured one as the
//! default; an origin certificate the node cannot verify is an upstream failure (424
//! MirrorFailed) that the log explains; a plain HTTP client on the TLS port gets a readable 400;
//! a certificate or key that cannot be loaded stops start-up naming the file.

use std::time::{Duration, Instant};

use rustls::ProtocolVersion;

use crate::s3::{s3_toml, signed, SECRET};
use crate::support::client::{get, request_bytes, Conn};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::tls::{https_get, https_get_stored, tls_section, ClientOptions, Leaf, TestCa, TlsConn, TlsFront};
use crate::support::{assert_origin_count, assert_s3_error, object_path, pattern_body, source_of, BUCKET};

/// The test PKI: one CA and the two listener certificates it signs.
struct Pki {
    ca: TestCa,
    a: Leaf,
    b: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new("edgemirror e2e test CA");
        let a = ca.issue(&["a.test", "127.0.0.1"]);
        let b = ca.issue(&["b.test", "127.0.0.1"]);
        Pki { ca, a, b }
    }

    /// Writes `pki/{ca,a,b}.pem` and `pki/{a,b}.key` into the node's dir.
    fn files(&self, builder: NodeBuilder) -> NodeBuilder {
        builder
            .with_file("pki/ca.pem", self.ca.cert_pem())
            .with_file("pki/a.pem", self.a.cert_pem.clone())
            .with_file("pki/a.key", self.a.key_pem.clone())
            .with_file("pki/b.pem", self.b.cert_pem.clone())
            .with_file("pki/b.key", self.b.key_pem.clone())
    }

    /// The files plus a `[tls]` listener serving a.test (the default) and b.test.
    fn listener(&self, builder: NodeBuilder) -> NodeBuilder {
        self.files(builder).with_extra_toml(&tls_section(&[("pki/a.pem", "pki/a.key"), ("pki/b.pem", "pki/b.key")]))
    }
}

fn tls_addr(node: &Node) -> std::net::SocketAddr {
    node.tls_addr().expect("the ready line has no tls= address although [tls] is configured")
}

/// An HTTPS origin whose certificate (for 127.0.0.1) is signed by `ca`.
fn https_origin(ca: &TestCa) -> (Origin, TlsFront) {
    let origin = Origin::start();
    let front = TlsFront::start(origin.addr(), &ca.issue(&["127.0.0.1"]));
    (origin, front)
}

/// Waits up to 5 s for a stderr line that satisfies `pred` (the log line for a request may be
/// written a moment after its response).
fn wait_for_log_line(node: &Node, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stderr = node.stderr();
        if let Some(line) = stderr.lines().find(|l| pred(l)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no stderr line {what}; stderr:\n{stderr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn https_client_through_node_to_https_origin_mirrors_then_serves_stored() {
    let pki = Pki::new();
    let (origin, front) = https_origin(&pki.ca);
    let body = pattern_body(200_000, 41);
    origin.set("/dir1/site/big.bin", Reply::ok(body.clone()).with_header("Content-Type", "application/x-test"));
    let node = pki
        .listener(NodeBuilder::new().mirror(&format!("{}/dir1/", front.url()), ""))
        .with_line("origin", "ca_file = \"pki/ca.pem\"")
        .start();
    let addr = tls_addr(&node);
    let client = ClientOptions::trusting(&pki.ca);
    let path = object_path("site/big.bin");

    let first = https_get(addr, "a.test", &client, &path).expect("first HTTPS GET");
    assert_eq!(first.status, 200, "{first:?}\nfront handshake errors: {:?}", front.handshake_errors());
    assert!(first.body == body, "body over HTTPS differs from the origin's: {first:?}");
    assert_eq!(source_of(&first), "origin");
    assert_eq!(first.header("content-type"), Some("application/x-test"));
    assert!(front.handshakes_done() >= 1, "the node never completed a handshake with the https origin");
    assert_origin_count(&origin, "/dir1/site/big.bin", 1);

    let second = https_get_stored(addr, "a.test", &client, &path, &body);
    assert!(second.header("etag").is_some(), "a stored answer carries an ETag: {second:?}");
    // Same object on the plain port: one store behind both listeners.
    let plain = get(node.data_addr(), &path, &[]).expect("plain GET");
    assert_eq!(plain.status, 200);
    assert!(plain.body == body);
    assert_origin_count(&origin, "/dir1/site/big.bin", 1);
}

/// Over TLS there is no `sendfile` (the bytes are encrypted in user space): 64 KiB store hits
/// are sent from memory and copied into the RAM tier, while the same object over plain HTTP goes
/// out with `sendfile` (tests/e2e/store.rs has that path in full).
#[test]
fn tls_hits_of_sendfile_sizes_are_copied_and_cached_in_ram() {
    let pki = Pki::new();
    let origin = Origin::start();
    let body = pattern_body(65_536, 43);
    origin.set("/dir1/mid.bin", Reply::ok(body.clone()));
    let node = pki.listener(NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "")).start();
    let (addr, client, path) = (tls_addr(&node), ClientOptions::trusting(&pki.ca), object_path("mid.bin"));
    let sent_from_file = || crate::support::metric(&node, "edgemirror_sendfile_bytes_total");
    https_get_stored(addr, "a.test", &client, &path, &body);
    // The RAM tier admits a key on its second store hit (its doorkeeper).
    let sources: Vec<String> = (0..3)
        .map(|_| {
            let resp = https_get(addr, "a.test", &client, &path).expect("HTTPS GET");
            assert!(resp.status == 200 && resp.body == body, "{resp:?}");
            source_of(&resp).to_string()
        })
        .collect();
    assert_eq!(
        sources.last().map(String::as_str),
        Some("memory"),
        "TLS store hits are copied into the RAM tier: {sources:?}"
    );
    assert_eq!(sent_from_file(), 0, "no sendfile under TLS");
    let plain = get(node.data_addr(), &path, &[]).expect("plain GET");
    assert!(plain.status == 200 && plain.body == body, "{plain:?}");
    assert_eq!(sent_from_file(), 0, "the RAM tier's copy, once made, serves plain HTTP too");
}

#[test]
fn sni_selects_the_certificate_and_anything_else_gets_the_first() {
    let pki = Pki::new();
    let by_name = |name: &str| if name == "a" { &pki.a } else { &pki.b };
    // Both orders, so that "a.test got a.test" cannot be the default answering by luck.
    for (first_name, second_name) in [("a", "b"), ("b", "a")] {
        let first = by_name(first_name);
        let (c1, k1) = (format!("pki/{first_name}.pem"), format!("pki/{first_name}.key"));
        let (c2, k2) = (format!("pki/{second_name}.pem"), format!("pki/{second_name}.key"));
        let node = pki.files(NodeBuilder::new()).with_extra_toml(&tls_section(&[(&c1, &k1), (&c2, &k2)])).start();
        let addr = tls_addr(&node);
        let verified = ClientOptions::trusting(&pki.ca);
        let any = ClientOptions::accepting_any_certificate();
        let order = format!("certs in order {first_name}.test, {second_name}.test");

        let leaf = |name: &str, options: &ClientOptions| {
            TlsConn::connect(addr, name, options)
                .unwrap_or_else(|e| panic!("handshake as {name:?} ({order}): {e:?}"))
                .peer_leaf()
        };
        assert!(leaf("a.test", &verified) == pki.a.cert_der, "SNI a.test did not get a.test's certificate ({order})");
        assert!(leaf("b.test", &verified) == pki.b.cert_der, "SNI b.test did not get b.test's certificate ({order})");
        // An IP address is never sent as SNI (RFC 6066 §3); both leaves are valid for it.
        assert!(
            leaf("127.0.0.1", &verified) == first.cert_der,
            "no SNI (IP) did not get the first certificate ({order})"
        );
        let no_sni = any.clone().without_sni();
        assert!(
            leaf(&format!("{second_name}.test"), &no_sni) == first.cert_der,
            "a client sending no SNI did not get the first certificate ({order})"
        );
        assert!(
            leaf("unknown.test", &any) == first.cert_der,
            "an unknown name did not get the first certificate ({order})"
        );
    }
}

#[test]
fn alpn_offering_h2_and_http11_negotiates_http11() {
    let pki = Pki::new();
    let node = pki.listener(NodeBuilder::new()).start();
    let addr = tls_addr(&node);
    let options = ClientOptions::trusting(&pki.ca).with_alpn(&["h2", "http/1.1"]);
    let mut conn = TlsConn::connect(addr, "a.test", &options).expect("handshake");
    assert_eq!(conn.alpn().as_deref(), Some(&b"http/1.1"[..]), "negotiated ALPN");
    // And it speaks HTTP/1.1 on that connection.
    let resp = conn.request(&request_bytes("GET", addr, "/no-such-bucket/x", &[])).expect("GET over h2+http/1.1 ALPN");
    assert_s3_error(&resp, 404, Some("NoSuchBucket"));
}

#[test]
fn origin_certificate_from_an_unknown_ca_is_mirror_failed_and_logged() {
    let rogue = TestCa::new("not trusted by the node");
    let (origin, front) = https_origin(&rogue);
    origin.set("/dir1/x.txt", Reply::ok(b"must not be served".to_vec()));
    // No ca_file: the node trusts the public roots only.
    let node = NodeBuilder::new().mirror(&format!("{}/dir1/", front.url()), "").start();

    let resp = get(node.data_addr(), &object_path("x.txt"), &[]).expect("GET");
    assert_s3_error(&resp, 424, Some("MirrorFailed"));
    assert_origin_count(&origin, "/dir1/x.txt", 0);
    assert_eq!(front.handshakes_done(), 0, "a handshake with an untrusted certificate completed");
    // The operator must learn why from the log, not only that the mirror failed.
    wait_for_log_line(&node, "mentioning the origin's certificate", |l| l.to_ascii_lowercase().contains("certificate"));
}

#[test]
fn insecure_skip_verify_accepts_the_same_untrusted_origin() {
    let rogue = TestCa::new("not trusted by the node");
    let (origin, front) = https_origin(&rogue);
    let body = pattern_body(50_000, 3);
    origin.set("/dir1/x.bin", Reply::ok(body.clone()));
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", front.url()), "")
        .with_line("origin", "insecure_skip_verify = true")
        .start();

    let resp = get(node.data_addr(), &object_path("x.bin"), &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}\nfront handshake errors: {:?}", front.handshake_errors());
    assert!(resp.body == body, "body differs from the origin's: {resp:?}");
    assert_origin_count(&origin, "/dir1/x.bin", 1);
    // Turning verification off is said out loud at start.
    wait_for_log_line(&node, "about insecure_skip_verify", |l| l.contains("insecure_skip_verify"));
}

#[test]
fn tls12_only_and_tls13_only_clients_both_work() {
    let pki = Pki::new();
    let origin = Origin::start();
    let body = pattern_body(70_000, 12);
    origin.set("/dir1/v.bin", Reply::ok(body.clone()));
    let node = pki.listener(NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "")).start();
    let addr = tls_addr(&node);
    let path = object_path("v.bin");

    for (version, expected) in
        [(&rustls::version::TLS12, ProtocolVersion::TLSv1_2), (&rustls::version::TLS13, ProtocolVersion::TLSv1_3)]
    {
        let options = ClientOptions::trusting(&pki.ca).with_versions(&[version]);
        let mut conn = TlsConn::connect(addr, "b.test", &options)
            .unwrap_or_else(|e| panic!("{expected:?}-only client could not connect: {e:?}"));
        assert_eq!(conn.protocol_version(), Some(expected));
        let resp = conn.request(&request_bytes("GET", addr, &path, &[])).expect("GET");
        assert_eq!(resp.status, 200, "{expected:?}: {resp:?}");
        assert!(resp.body == body, "{expected:?}: body differs: {resp:?}");
    }
    assert_origin_count(&origin, "/dir1/v.bin", 1);
}

#[test]
fn plain_http_to_the_tls_port_gets_a_plain_400_then_close() {
    let pki = Pki::new();
    let node = pki.listener(NodeBuilder::new()).start();
    let addr = tls_addr(&node);

    let mut conn = Conn::new(addr);
    let resp = conn
        .request(&request_bytes("GET", addr, "/example-bucket/x", &[]))
        .expect("a readable plain-text HTTP response on the TLS port");
    assert_s3_error(&resp, 400, None);
    assert!(conn.peer_closed_within(Duration::from_secs(5)), "the node kept the connection open after the 400");
}

#[test]
fn missing_certificate_or_key_file_stops_startup_naming_it() {
    let pki = Pki::new();
    for (cert, key, missing) in
        [("pki/missing-cert.pem", "pki/a.key", "missing-cert.pem"), ("pki/a.pem", "pki/missing.key", "missing.key")]
    {
        let exited = pki.files(NodeBuilder::new()).with_extra_toml(&tls_section(&[(cert, key)])).start_expecting_exit();
        assert!(!exited.status.success(), "exit status {:?}", exited.status);
        assert!(exited.stderr.contains(missing), "stderr does not name {missing}:\n{}", exited.stderr);
    }
}

#[test]
fn key_not_matching_the_certificate_stops_startup_naming_the_key() {
    let pki = Pki::new();
    let exited = pki
        .files(NodeBuilder::new())
        .with_extra_toml(&tls_section(&[("pki/a.pem", "pki/b.key")]))
        .start_expecting_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(exited.stderr.contains("b.key"), "stderr does not name the key file:\n{}", exited.stderr);
}

#[test]
fn keep_alive_carries_three_requests_over_one_tls_connection() {
    let pki = Pki::new();
    let origin = Origin::start();
    let one = pattern_body(30_000, 1);
    let two = pattern_body(5_000, 2);
    origin.set("/dir1/one.bin", Reply::ok(one.clone()));
    origin.set("/dir1/two.bin", Reply::chunked(two.clone(), &[1000, 3000]));
    let node = pki.listener(NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "")).start();
    let addr = tls_addr(&node);

    let mut conn = TlsConn::connect(addr, "a.test", &ClientOptions::trusting(&pki.ca)).expect("handshake");
    for (i, (key, body)) in [("one.bin", &one), ("one.bin", &one), ("two.bin", &two)].into_iter().enumerate() {
        let resp = conn
            .request(&request_bytes("GET", addr, &object_path(key), &[]))
            .unwrap_or_else(|e| panic!("request {} ({key}) on the kept-alive TLS connection: {e:?}", i + 1));
        assert_eq!(resp.status, 200, "request {}: {resp:?}", i + 1);
        assert!(resp.body == *body, "request {} ({key}): body differs: {resp:?}", i + 1);
        assert!(!resp.close_delimited, "request {}: a close-delimited body ends the connection", i + 1);
    }
    assert_origin_count(&origin, "/dir1/one.bin", 1);
    assert_origin_count(&origin, "/dir1/two.bin", 1);
}

/// The node's TLS driver seals up to 128 KiB of a response per send and reads a whole record at
/// a time: bodies of many records must cross it byte-exact both ways. From an HTTPS origin (the
/// node reads records) to an HTTPS client (it writes them), whole, as a range that starts and
/// ends inside records, and as an upload (a request body of many records, read by the node).
#[test]
fn bodies_of_many_records_cross_tls_byte_exact_both_ways() {
    let pki = Pki::new();
    let (origin, front) = https_origin(&pki.ca);
    let body = pattern_body(3 * 1024 * 1024 + 12_345, 47);
    origin.set("/dir1/huge.bin", Reply::ok(body.clone()));
    let node = pki
        .listener(NodeBuilder::new().mirror(&format!("{}/dir1/", front.url()), ""))
        .with_line("origin", "ca_file = \"pki/ca.pem\"")
        .with_extra_toml(&s3_toml())
        .start();
    let (addr, client, path) = (tls_addr(&node), ClientOptions::trusting(&pki.ca), object_path("huge.bin"));

    let first = https_get(addr, "a.test", &client, &path).expect("HTTPS GET, a miss");
    assert_eq!((first.status, source_of(&first)), (200, "origin"), "{first:?}");
    assert!(first.body == body, "the mirrored body differs over TLS (len {})", first.body.len());
    https_get_stored(addr, "a.test", &client, &path, &body);

    let mut conn = TlsConn::connect(addr, "a.test", &client).expect("handshake");
    let (start, end) = (100_000usize, 1_300_000usize);
    let range = format!("bytes={start}-{end}");
    let part = conn.request(&request_bytes("GET", addr, &path, &[("Range", &range)])).expect("range GET");
    assert_eq!(part.status, 206, "{part:?}");
    assert!(part.body == body[start..=end], "the range differs over TLS (len {})", part.body.len());

    let upload = pattern_body(2 * 1024 * 1024 + 777, 48);
    let key = format!("/{BUCKET}/up.bin");
    let put = conn.request(&signed("PUT", &addr.to_string(), &key, &upload, &[], SECRET)).expect("PUT over TLS");
    assert_eq!(put.status, 200, "{}", put.text());
    let back = conn.request(&request_bytes("GET", addr, &key, &[])).expect("GET of the upload");
    assert_eq!(back.status, 200, "{back:?}");
    assert!(back.body == upload, "the uploaded body differs (len {})", back.body.len());
    assert_origin_count(&origin, "/dir1/huge.bin", 1);
}

/// Requests pipelined in one TLS record are each answered, in order, on the same connection,
/// a large body among them (its records and the next response's share sends).
#[test]
fn pipelined_requests_in_one_record_are_answered_in_order_over_tls() {
    let pki = Pki::new();
    let origin = Origin::start();
    let small = pattern_body(700, 5);
    let large = pattern_body(300_000, 6);
    origin.set("/dir1/small.bin", Reply::ok(small.clone()));
    origin.set("/dir1/large.bin", Reply::ok(large.clone()));
    let node = pki.listener(NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "")).start();
    let addr = tls_addr(&node);
    let client = ClientOptions::trusting(&pki.ca);
    https_get_stored(addr, "a.test", &client, &object_path("large.bin"), &large);

    let mut conn = TlsConn::connect(addr, "a.test", &client).expect("handshake");
    let order = [("small.bin", &small), ("large.bin", &large), ("small.bin", &small), ("large.bin", &large)];
    let mut raw = Vec::new();
    for (key, _) in order {
        raw.extend_from_slice(&request_bytes("GET", addr, &object_path(key), &[]));
    }
    conn.send(&raw).expect("send the pipelined requests");
    for (i, (key, body)) in order.into_iter().enumerate() {
        let resp = conn.read_response(false).unwrap_or_else(|e| panic!("response {} ({key}): {e:?}", i + 1));
        assert_eq!(resp.status, 200, "response {} ({key}): {resp:?}", i + 1);
        assert!(resp.body == *body, "response {} ({key}): body differs (len {})", i + 1, resp.body.len());
    }
}

/// An upload over TLS that stops sending: the body read times out (its read is cancelled
/// mid-flight), the client still gets its 400 `IncompleteBody` over the same TLS stream, and the
/// worker goes on serving (one worker: a panic on the cancelled read's stream would take every
/// later request with it).
#[test]
fn an_upload_stalled_over_tls_is_answered_and_the_worker_serves_on() {
    let pki = Pki::new();
    let origin = Origin::start();
    let small = pattern_body(700, 9);
    origin.set("/dir1/small.bin", Reply::ok(small.clone()));
    let node = pki
        .listener(NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), ""))
        .with_workers(1)
        .with_line("server", "body_timeout_ms = 300")
        .with_extra_toml(&s3_toml())
        .start();
    let (addr, client) = (tls_addr(&node), ClientOptions::trusting(&pki.ca));

    let upload = pattern_body(100_000, 10);
    let raw = signed("PUT", &addr.to_string(), &format!("/{BUCKET}/stalled.bin"), &upload, &[], SECRET);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let mut conn = TlsConn::connect(addr, "a.test", &client).expect("handshake");
    conn.send(&raw[..head_end + 1000]).expect("send the head and the body's first 1000 bytes");
    let started = Instant::now();
    let resp = conn.read_response(false).expect("an answer to the stalled upload");
    assert_s3_error(&resp, 400, Some("IncompleteBody"));
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    assert!(conn.peer_closed_within(Duration::from_secs(5)), "the connection of the stalled upload stays open");

    for _ in 0..3 {
        let resp = https_get(addr, "a.test", &client, &object_path("small.bin")).expect("HTTPS GET after the stall");
        assert!(resp.status == 200 && resp.body == small, "{resp:?}");
    }
    let gone = https_get(addr, "a.test", &client, &format!("/{BUCKET}/stalled.bin")).expect("GET of the stalled key");
    assert_eq!(gone.status, 404, "nothing of the stalled upload is stored: {gone:?}");
}
