//! Reloading the config without a restart (SIGHUP and `POST /v1/reload`): rules, buckets, S3
//! keys, limits and TLS certificates apply to new requests, requests in flight finish, a bad
//! file is refused naming its field, and settings that need a restart are named.

use std::thread;
use std::time::Duration;

use crate::s3::{s3_toml, signed, SECRET};
use crate::support::client::{get, Conn};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::tls::{tls_section, ClientOptions, TestCa, TlsConn};
use crate::support::{
    admin_json, admin_request, assert_origin_count, pattern_body, poll_until, put_rules, ADMIN_TOKEN, BUCKET,
};

/// Rewrites the node's config file with `edit` applied to its text.
fn edit_config(node: &Node, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(node.config_path()).expect("read config");
    std::fs::write(node.config_path(), edit(text)).expect("write config");
}

fn reload(node: &Node) -> (u16, serde_json::Value) {
    let resp = admin_request(node.admin_addr(), "POST", "/v1/reload", Some(ADMIN_TOKEN), None);
    (resp.status, admin_json(&resp))
}

/// Waits until the node's log has `n` lines containing `what` (a SIGHUP is handled
/// asynchronously).
fn wait_log(node: &Node, what: &str, n: usize) {
    poll_until(
        || (node.stderr().matches(what).count() >= n).then_some(()),
        || format!("no {what:?} in the log:\n{}", node.stderr()),
    );
}

#[test]
fn sighup_applies_rules_buckets_and_keys_to_new_requests_and_finishes_those_in_flight() {
    let (a, b) = (Origin::start(), Origin::start());
    let slow = pattern_body(400_000, 5);
    // A download that is still running when the reload comes.
    a.set("/dir1/slow.bin", Reply::ok(slow.clone()).with_paced(40_000, Duration::from_millis(100)));
    for origin in [&a, &b] {
        for key in ["one", "two", "three"] {
            origin.set(&format!("/dir1/{key}"), Reply::ok(format!("{key} from {}", origin.url())));
        }
    }
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", a.url()), "")
        .with_extra_toml(&s3_toml())
        .with_extra_toml("[[buckets]]\nname = \"api-rules\"\n")
        .start();
    let addr = node.data_addr();
    // A bucket whose rules come from the rule API: a reload keeps them.
    let rule = serde_json::json!([{"address": {"hostName": b.addr().to_string(), "path": "/dir1/"}}]);
    put_rules(node.admin_addr(), "api-rules", &rule.to_string());

    let download = thread::spawn(move || get(addr, &format!("/{BUCKET}/slow.bin"), &[]).expect("slow GET"));
    let mut kept = Conn::new(addr);
    let one = kept.request(format!("GET /{BUCKET}/one HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("one");
    assert_eq!(one.text(), format!("one from {}", a.url()));
    thread::sleep(Duration::from_millis(150));

    // The file now mirrors from b, declares a second bucket, and gives the key a new secret.
    let (a_url, b_url) = (a.url(), b.url());
    edit_config(&node, |t| {
        t.replace(&format!("{a_url}/dir1/"), &format!("{b_url}/dir1/")).replace(SECRET, "a-new-secret-after-the-reload")
            + &format!(
                "\n[[buckets]]\nname = \"second\"\n[[buckets.mirror]]\nurl = \"{b_url}/dir1/\"\nkey_prefix = \"\"\n"
            )
    });
    node.signal(libc::SIGHUP);
    wait_log(&node, "config reloaded", 1);

    // The connection opened before the reload: its next request follows the new rules.
    let two = kept.request(format!("GET /{BUCKET}/two HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("two");
    assert_eq!(two.text(), format!("two from {b_url}"));
    assert_origin_count(&a, "/dir1/two", 0);
    assert_eq!(get(addr, "/second/three", &[]).expect("second").text(), format!("three from {b_url}"));
    assert_eq!(get(addr, "/api-rules/one", &[]).expect("api-rules").text(), format!("one from {b_url}"));

    // S3: the old secret no longer signs, the new one does.
    let host = addr.to_string();
    let old = Conn::new(addr).request(&signed("PUT", &host, &format!("/{BUCKET}/k"), b"x", &[], SECRET)).expect("PUT");
    assert_eq!(old.status, 403, "{}", old.text());
    let new = signed("PUT", &host, &format!("/{BUCKET}/k"), b"x", &[], "a-new-secret-after-the-reload");
    assert_eq!(Conn::new(addr).request(&new).expect("PUT").status, 200);

    // The download that was running finished whole.
    let done = download.join().expect("download thread");
    assert_eq!(done.status, 200);
    assert!(done.body == slow, "the in-flight download was cut or mixed");
}

#[test]
fn a_bad_file_is_refused_naming_its_field_and_the_running_config_stays() {
    let origin = Origin::start();
    origin.set("/dir1/a", Reply::ok(b"a".to_vec()));
    let node = NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    edit_config(&node, |t| t.replace("workers = ", "header_timeout_ms = 0\nworkers = "));
    let (status, body) = reload(&node);
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("server.header_timeout_ms"), "{message}");
    wait_log(&node, "config reload refused", 1);
    assert!(node.stderr().contains("server.header_timeout_ms"));

    // A rule that fails validation is refused the same way, naming it.
    edit_config(&node, |t| {
        t.replace("header_timeout_ms = 0\n", "").replace(&format!("{}/dir1/", origin.url()), "ftp://nowhere/")
    });
    let (status, body) = reload(&node);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("buckets[0].mirror[0].url"), "{body}");
    // The running rules still serve.
    assert_eq!(get(node.data_addr(), &format!("/{BUCKET}/a"), &[]).expect("GET").text(), "a");
}

#[test]
fn settings_that_need_a_restart_are_named_and_keep_their_running_values() {
    let node = NodeBuilder::new().bucket(BUCKET).start();
    let addr = node.data_addr();
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    edit_config(&node, |t| {
        // The first listen line is [server]'s.
        t.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{free}\""), 1)
            .replace("[store]\n", "[store]\nsegment_bytes = 2097152\n")
    });
    let (status, body) = reload(&node);
    assert_eq!(status, 200, "{body}");
    let named: Vec<&str> = body["restartNeeded"].as_array().expect("list").iter().filter_map(|v| v.as_str()).collect();
    assert!(named.contains(&"server.listen") && named.contains(&"store"), "{body}");
    assert!(!named.contains(&"admin.listen"), "the admin listen line was not changed: {body}");
    assert!(node.stderr().contains("server.listen"), "{}", node.stderr());
    // Still on the old address.
    assert_eq!(get(addr, &format!("/{BUCKET}/nothing"), &[]).expect("GET").status, 404);
}

#[test]
fn a_reload_serves_new_certificates_to_new_connections_and_keeps_the_old_ones_open() {
    let ca = TestCa::new("edgemirror reload test CA");
    let (first, second) = (ca.issue(&["a.test"]), ca.issue(&["a.test"]));
    let node = NodeBuilder::new()
        .bucket(BUCKET)
        .with_file("pki/a.pem", first.cert_pem.clone())
        .with_file("pki/a.key", first.key_pem.clone())
        .with_extra_toml(&tls_section(&[("pki/a.pem", "pki/a.key")]))
        .start();
    let tls = node.tls_addr().expect("tls listener");
    let options = ClientOptions::trusting(&ca);
    let mut before = TlsConn::connect(tls, "a.test", &options).expect("handshake");
    assert!(before.peer_leaf() == first.cert_der);

    std::fs::write(node.dir().join("pki/a.pem"), &second.cert_pem).expect("write cert");
    std::fs::write(node.dir().join("pki/a.key"), &second.key_pem).expect("write key");
    assert_eq!(reload(&node).0, 200);

    let after = TlsConn::connect(tls, "a.test", &options).expect("handshake after the reload");
    assert!(after.peer_leaf() == second.cert_der, "a new connection got the old certificate");
    let resp = before.http().request(format!("GET /{BUCKET}/x HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
    assert_eq!(resp.expect("request on the old connection").status, 404);

    // A certificate file that no longer parses: refused, and the running certificates stay.
    std::fs::write(node.dir().join("pki/a.pem"), "not a certificate").expect("write");
    let (status, body) = reload(&node);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("tls"), "{body}");
    let still = TlsConn::connect(tls, "a.test", &options).expect("handshake after a refused reload");
    assert!(still.peer_leaf() == second.cert_der);
}

#[test]
fn the_reload_endpoint_needs_the_token_and_a_post() {
    let node = NodeBuilder::new().bucket(BUCKET).start();
    let resp = admin_request(node.admin_addr(), "POST", "/v1/reload", None, None);
    assert_eq!(resp.status, 401);
    let resp = admin_request(node.admin_addr(), "GET", "/v1/reload", Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 405);
}

#[test]
fn limits_and_origin_settings_apply_after_a_reload() {
    let origin = Origin::start();
    origin.set("/dir1/gone", Reply::status(404));
    let node = NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    let addr = node.data_addr();
    let long = format!("/{BUCKET}/{}", "k".repeat(300));
    assert_eq!(get(addr, &long, &[]).expect("long URI").status, 404, "no limit hit before the reload");
    for _ in 0..2 {
        assert_eq!(get(addr, &format!("/{BUCKET}/gone"), &[]).expect("404").status, 404);
    }
    assert_origin_count(&origin, "/dir1/gone", 2);

    // A tighter request limit, and origin 404s remembered for a minute.
    edit_config(&node, |t| {
        t.replace("[server]\n", "[server]\nmax_uri_bytes = 200\n")
            .replace("[origin]\n", "[origin]\nnegative_ttl_ms = 60000\n")
    });
    let (status, body) = reload(&node);
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(addr, &long, &[]).expect("long URI").status, 414);
    for _ in 0..3 {
        assert_eq!(get(addr, &format!("/{BUCKET}/gone"), &[]).expect("404").status, 404);
    }
    assert_origin_count(&origin, "/dir1/gone", 3);
}
