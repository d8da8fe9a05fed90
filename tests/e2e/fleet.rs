//! A fleet of edges in front of one origin (`[fleet]`): each object is fetched from the origin
//! once across the fleet (the key's owner fetches it; the others ask the owner), concurrent
//! misses on every edge included; an edge that dies is skipped and its keys still served; the
//! peers' secret is what lets a request through as a peer's. Membership is set by a reload, as
//! an operator adds a node: each node's ports are known only once it runs.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::client::get;
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{admin_json, admin_request, assert_origin_count, metric, pattern_body, ADMIN_TOKEN, BUCKET};

const SECRET: &str = "fleet-secret-0123456789";

/// `n` nodes mirroring `origin`, then joined into one fleet by a reload of each.
fn fleet(origin: &Origin, n: usize, extra_toml: &str) -> Vec<Node> {
    let nodes: Vec<Node> = (0..n)
        .map(|_| NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").with_extra_toml(extra_toml).start())
        .collect();
    join(&nodes);
    nodes
}

/// Joins running nodes into one fleet: `[fleet]` appended to each config, then a reload.
pub(crate) fn join(nodes: &[Node]) {
    let n = nodes.len();
    let urls: Vec<String> = nodes.iter().map(|n| format!("http://{}", n.data_addr())).collect();
    let peers = urls.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
    for (node, me) in nodes.iter().zip(&urls) {
        let mut text = std::fs::read_to_string(node.config_path()).expect("config");
        text.push_str(&format!(
            "\n[fleet]\nself = {me:?}\npeers = [{peers}]\nsecret = {SECRET:?}\nprobe_interval_ms = 200\n"
        ));
        std::fs::write(node.config_path(), text).expect("write config");
        let resp = admin_request(node.admin_addr(), "POST", "/v1/reload", Some(ADMIN_TOKEN), None);
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(admin_json(&resp)["restartNeeded"].as_array().map(Vec::len), Some(0), "{}", resp.text());
        assert_eq!(metric(node, "edgemirror_fleet_peers"), n as u64);
    }
}

/// An origin serving [`body_of`] each key under `/dir1/`.
fn origin_serving(keys: &[String]) -> Origin {
    let origin = Origin::start();
    for key in keys {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body_of(key)));
    }
    origin
}

fn body_of(key: &str) -> Vec<u8> {
    let seed = key.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    pattern_body(20_000 + usize::from(seed) * 100, seed)
}

#[test]
fn each_object_is_fetched_from_the_origin_once_across_the_fleet() {
    let keys: Vec<String> = (0..30).map(|i| format!("site/page-{i}.html")).collect();
    let origin = origin_serving(&keys);
    let nodes = fleet(&origin, 3, "");
    // Every key from every node, each key starting at another node.
    for (i, key) in keys.iter().enumerate() {
        for j in 0..nodes.len() {
            let node = &nodes[(i + j) % nodes.len()];
            let resp = get(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET");
            assert_eq!(resp.status, 200, "{key} from node {}: {}", (i + j) % 3, resp.text());
            assert!(resp.body == body_of(key), "{key}: wrong body");
        }
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
    // Each key: its owner filled from the origin; the two others asked the owner once each.
    let peer_fetches: u64 = nodes.iter().map(|n| metric(n, "edgemirror_fleet_peer_fetches_total")).sum();
    let origin_fills: u64 = nodes.iter().map(|n| metric(n, "edgemirror_origin_fetches_total")).sum();
    assert_eq!(peer_fetches, 2 * keys.len() as u64);
    assert_eq!(origin_fills, 3 * keys.len() as u64, "every fill counts, a peer's included");
    assert_eq!(nodes.iter().map(|n| metric(n, "edgemirror_fleet_peer_failures_total")).sum::<u64>(), 0);
}

#[test]
fn concurrent_misses_on_every_edge_cost_the_origin_one_request() {
    let origin = Arc::new(Origin::start());
    let keys: Vec<String> = (0..8).map(|i| format!("big/{i}.bin")).collect();
    for key in &keys {
        // Slow enough that every client arrives while the first fetch is in flight.
        origin.set(&format!("/dir1/{key}"), Reply::ok(body_of(key)).with_head_delay(Duration::from_millis(300)));
    }
    let nodes = fleet(&origin, 3, "");
    let addrs: Vec<_> = nodes.iter().map(Node::data_addr).collect();
    let clients: Vec<_> = keys
        .iter()
        .flat_map(|key| addrs.iter().flat_map(move |addr| (0..4).map(move |_| (key.clone(), *addr))))
        .map(|(key, addr)| {
            thread::spawn(move || {
                let resp = get(addr, &format!("/{BUCKET}/{key}"), &[]).expect("GET");
                (key, resp.status, resp.body)
            })
        })
        .collect();
    for c in clients {
        let (key, status, body) = c.join().expect("client");
        assert_eq!(status, 200, "{key}");
        assert!(body == body_of(&key), "{key}: wrong body");
    }
    for key in &keys {
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
}

#[test]
fn a_dead_edge_is_skipped_and_its_keys_are_still_served() {
    let keys: Vec<String> = (0..24).map(|i| format!("k/{i}")).collect();
    let origin = origin_serving(&keys);
    let mut nodes = fleet(&origin, 3, "");
    // Half the keys are fetched while all three run.
    for key in &keys[..12] {
        assert_eq!(get(nodes[0].data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET").status, 200);
    }
    nodes[2].kill9();
    // At once (before any probe saw it): a refused connection moves to the next peer.
    for key in &keys {
        for node in &nodes[..2] {
            let resp = get(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET");
            assert_eq!(resp.status, 200, "{key}: {}", resp.text());
            assert!(resp.body == body_of(key), "{key}: wrong body");
        }
    }
    // The dead node's keys were fetched by a survivor: still once per key at the origin, except
    // those only the dead node had (it took its copy with it).
    for key in &keys[12..] {
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
    // The probes mark it down.
    crate::support::poll_until(
        || (metric(&nodes[0], "edgemirror_fleet_peers_up") == 2).then_some(()),
        || "the dead peer is still up for node 0".into(),
    );
}

#[test]
fn only_the_fleet_secret_makes_a_request_a_peer_s() {
    let origin = Origin::start();
    origin.set("/dir1/private.txt", Reply::ok(b"for peers".to_vec()));
    // A bucket that is not public: anonymous reads are refused, peers' are not.
    let nodes = fleet(&origin, 2, "");
    for node in &nodes {
        let text = std::fs::read_to_string(node.config_path()).expect("config");
        std::fs::write(
            node.config_path(),
            text.replace("name = \"example-bucket\"", "name = \"example-bucket\"\npublic_read = false"),
        )
        .expect("write");
        assert_eq!(admin_request(node.admin_addr(), "POST", "/v1/reload", Some(ADMIN_TOKEN), None).status, 200);
    }
    let addr = nodes[0].data_addr();
    let path = format!("/{BUCKET}/private.txt");
    assert_eq!(get(addr, &path, &[]).expect("anonymous").status, 403);
    assert_eq!(get(addr, &path, &[("x-edgemirror-fleet", "not-the-secret-at-all")]).expect("spoofed").status, 403);
    let peer = get(addr, &path, &[("x-edgemirror-fleet", SECRET)]).expect("peer");
    assert_eq!((peer.status, peer.body.as_slice()), (200, &b"for peers"[..]));
    assert_origin_count(&origin, "/dir1/private.txt", 1);
}

#[test]
fn a_peer_without_the_bucket_or_rule_is_no_answer_and_never_sees_the_secret_passed_on() {
    let origin = Origin::start();
    for i in 0..16 {
        origin.set(&format!("/dir1/only/{i}"), Reply::ok(format!("object {i}")));
        origin.set(&format!("/all/{i}"), Reply::ok(format!("passed {i}")));
    }
    // Node 0 has a bucket node 1 lacks; node 0's other bucket passes every client header.
    let only = format!(
        "[[buckets]]\nname = \"only-here\"\n[[buckets.mirror]]\nurl = \"{}/dir1/\"\nkey_prefix = \"\"\n",
        origin.url()
    );
    let nodes = vec![
        NodeBuilder::new()
            .bucket(BUCKET)
            .with_extra_toml(&only)
            .with_extra_toml("[[buckets]]\nname = \"pass-all\"\n")
            .start(),
        NodeBuilder::new().bucket(BUCKET).start(),
    ];
    join(&nodes);
    let rule = serde_json::json!([{"address": {"hostName": origin.addr().to_string(), "path": "/all/"},
        "headerRule": {"allowAllHeaders": true}}]);
    crate::support::put_rules(nodes[0].admin_addr(), "pass-all", &rule.to_string());

    // Every key of only-here is served by node 0, whichever node owns it: node 1's NoSuchBucket
    // is its own answer, not the origin's, so node 0 asks the origin itself.
    for i in 0..16 {
        let resp = get(nodes[0].data_addr(), &format!("/only-here/only/{i}"), &[]).expect("GET");
        assert_eq!((resp.status, resp.text()), (200, format!("object {i}")));
    }
    assert!(metric(&nodes[0], "edgemirror_fleet_peer_failures_total") > 0, "no key was owned by node 1?");
    // A peer's request, through a rule that passes every header: the secret stays behind.
    for i in 0..4 {
        let resp = get(
            nodes[0].data_addr(),
            &format!("/pass-all/{i}"),
            &[("x-edgemirror-fleet", SECRET), ("x-custom", "yes")],
        );
        assert_eq!(resp.expect("GET").status, 200);
    }
    let seen = origin.requests();
    let passed: Vec<_> = seen.iter().filter(|r| r.path.starts_with("/all/")).collect();
    assert_eq!(passed.len(), 4);
    assert!(passed.iter().all(|r| r.header("x-custom") == Some("yes")), "the rule passes client headers");
    assert!(passed.iter().all(|r| r.header("x-edgemirror-fleet").is_none()), "the fleet secret reached an origin");
}

#[test]
fn heads_of_keys_an_edge_lacks_go_to_the_owner_not_the_origin() {
    let keys: Vec<String> = (0..12).map(|i| format!("dl/{i}.bin")).collect();
    let origin = origin_serving(&keys);
    let nodes = fleet(&origin, 3, "");
    for (i, key) in keys.iter().enumerate() {
        // One GET through any edge: the owner now holds the object.
        assert_eq!(get(nodes[i % 3].data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET").status, 200);
    }
    // HEAD then GET from every edge, as boto3's download_file does.
    for key in &keys {
        for node in &nodes {
            let head = crate::support::client::head(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("HEAD");
            assert_eq!(head.status, 200, "{key}");
            assert_eq!(head.header("content-length"), Some(body_of(key).len().to_string().as_str()), "{key}");
            assert_eq!(get(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET").status, 200);
        }
    }
    let heads = origin.requests().iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 0, "HEADs reached the origin though the owner held every object");
    for key in &keys {
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
}
