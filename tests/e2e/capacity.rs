//! Capacity: `store.max_bytes` and bucket modes, end to end.
//!
//! An edge that mirrors more than its disk holds: a cache-mode bucket gives up its oldest
//! objects and keeps answering every GET, a mirror-mode bucket never loses a stored object, and
//! the store stays within `store.max_bytes` once compaction has caught up.

use std::time::{Duration, Instant};

use crate::support::client::get;
use crate::support::metric;
use crate::support::node::NodeBuilder;
use crate::support::origin::{Origin, Reply};
use crate::support::{admin_request, pattern_body, source_of, ADMIN_TOKEN};

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

/// A mirror-mode store at `store.max_bytes` refuses uploads (507), but deletes still land: they
/// are how an operator makes room, so their tombstones are admitted past the limit. Once
/// compaction has reclaimed the deleted bodies, uploads are taken again.
#[test]
fn deletes_are_taken_at_max_bytes_and_make_room_for_uploads_again() {
    use crate::s3::{put, s3_toml, send, signed, SECRET};
    use crate::support::{assert_s3_error, BUCKET};
    let max_bytes: u64 = 4 << 20;
    let node = NodeBuilder::new()
        .bucket(BUCKET)
        .with_extra_toml(&s3_toml())
        .with_line("store", "segment_bytes = 1048576")
        .with_line("store", &format!("max_bytes = {max_bytes}"))
        .with_line("store", "min_free_bytes = 0")
        .with_line("store", "compaction_interval_ms = 200")
        .start();
    let size = 300_000;
    let mut stored = Vec::new();
    // Long keys: a tombstone records its key, so deleting one of these needs more room than
    // any of the short-keyed fillers below could leave.
    let long = "k".repeat(600);
    for i in 0..40u8 {
        let key = format!("{long}{i}");
        let resp = put(&node, &key, &pattern_body(size, i), &[]);
        if resp.status != 200 {
            assert_s3_error(&resp, 507, Some("InsufficientStorage"));
            break;
        }
        stored.push(key);
    }
    assert!(stored.len() >= 5 && stored.len() < 40, "{} uploads of 300 KB under a 4 MiB limit", stored.len());
    // Then fill the rest to the last byte the limit allows: ever smaller uploads, down to empty.
    let mut fillers = 0;
    for filler_size in [100_000, 10_000, 1_000, 100, 10, 0] {
        loop {
            let resp = put(&node, &format!("f{fillers}"), &pattern_body(filler_size, 7), &[]);
            if resp.status != 200 {
                assert_s3_error(&resp, 507, Some("InsufficientStorage"));
                break;
            }
            stored.push(format!("f{fillers}"));
            fillers += 1;
        }
    }
    assert_s3_error(&put(&node, "x", b"", &[]), 507, Some("InsufficientStorage"));

    // Every delete lands at the limit: the S3 DELETE, and the admin purge.
    let host = node.data_addr().to_string();
    let (purged, deleted) = stored.split_at(1);
    assert!(purged[0].starts_with(&long), "the purged key is a long one");
    for key in deleted {
        let resp = send(&node, &signed("DELETE", &host, &format!("/{BUCKET}/{key}"), b"", &[], SECRET));
        assert_eq!(resp.status, 204, "DELETE {key} at max_bytes: {resp:?}");
    }
    let purge = admin_request(
        node.admin_addr(),
        "POST",
        &format!("/v1/regions/r/buckets/{BUCKET}/purge"),
        Some(ADMIN_TOKEN),
        Some(&format!(r#"{{"keys": ["{}"]}}"#, purged[0])),
    );
    assert_eq!(purge.status, 200, "purge at max_bytes: {}", purge.text());
    for key in &stored {
        assert_eq!(get(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET").status, 404, "{key}");
    }

    // Compaction gives the space back; uploads are taken again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = put(&node, "after-room", &pattern_body(size, 200), &[]);
        if resp.status == 200 {
            break;
        }
        assert_s3_error(&resp, 507, Some("InsufficientStorage"));
        assert!(
            Instant::now() < deadline,
            "no room came back: {} bytes on disk",
            metric(&node, "edgemirror_store_disk_bytes")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let resp = get(node.data_addr(), &format!("/{BUCKET}/after-room"), &[]).expect("GET");
    assert!(resp.status == 200 && resp.body == pattern_body(size, 200));
}
