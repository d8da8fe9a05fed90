//! Capacity: `store.max_bytes` and bucket modes, end to end.
//!
//! An edge that mirrors more than its disk holds: a cache-mode bucket gives up its oldest
//! objects and keeps answering every GET, a mirror-mode bucket never loses a stored object, and
//! the store stays within `store.max_bytes` once compaction has caught up.

use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{admin_request, pattern_body, source_of, ADMIN_TOKEN};

fn metric(node: &Node, name: &str) -> u64 {
    let text = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_cache_mode_bucket_evicts_to_stay_within_max_bytes_and_a_mirror_mode_one_keeps_everything() {
    let origin = Origin::start();
    let max_bytes: u64 = 6 << 20;
    let node = NodeBuilder::new()
        .mirror(&format!("{}/mirror/", origin.url()), "")
        .with_line("store", "segment_bytes = 1048576")
        .with_line("store", &format!("max_bytes = {max_bytes}"))
        .with_line("store", "min_free_bytes = 0")
        .with_line("store", "compaction_interval_ms = 200")
        .with_extra_toml(&format!(
            "[[buckets]]\nname = \"edge-cache\"\nmode = \"cache\"\n[[buckets.mirror]]\nurl = \"{}/cache/\"\n",
            origin.url()
        ))
        .start();
    let addr = node.data_addr();
    let size = 100_000;
    // Mirror-mode objects first: 1 MB of the 6 MiB.
    for i in 0..10u8 {
        origin.set(&format!("/mirror/m{i}"), Reply::ok(pattern_body(size, i)));
        let resp = get(addr, &format!("/example-bucket/m{i}"), &[]).expect("GET");
        assert_eq!(resp.status, 200);
    }
    // Then 15 MB through the cache-mode bucket, far more than fits.
    for i in 0..150u32 {
        let body = pattern_body(size, i as u8);
        origin.set(&format!("/cache/c{i}"), Reply::ok(body.clone()));
        let resp = get(addr, &format!("/edge-cache/c{i}"), &[]).expect("GET");
        assert_eq!(resp.status, 200, "c{i}: {resp:?}");
        assert!(resp.body == body, "c{i}: body differs");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let disk = metric(&node, "edgemirror_store_disk_bytes");
        if disk <= max_bytes {
            break;
        }
        assert!(Instant::now() < deadline, "the store stayed at {disk} bytes, over max_bytes {max_bytes}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric(&node, "edgemirror_store_evictions_total") > 0);
    // Every mirror-mode object is still stored.
    for i in 0..10u8 {
        let resp = get(addr, &format!("/example-bucket/m{i}"), &[]).expect("GET");
        assert_eq!(resp.status, 200);
        assert!(resp.body == pattern_body(size, i));
        assert_ne!(source_of(&resp), "origin", "mirror-mode m{i} was evicted");
        assert_eq!(origin.count(&format!("/mirror/m{i}")), 1);
    }
    // An evicted cache-mode object is simply mirrored again.
    let resp = get(addr, "/edge-cache/c0", &[]).expect("GET");
    assert_eq!(resp.status, 200);
    assert!(resp.body == pattern_body(size, 0));
}
