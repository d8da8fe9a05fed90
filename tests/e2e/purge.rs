//! Purge, the CDN "refresh" (`POST /v1/regions/{r}/buckets/{b}/purge`), end to end.
//!
//! An operator who changed files at the origin purges them: no tier may serve the old copy
//! afterwards (RAM, the disk cache, the store; across a restart too), and the next GET mirrors
//! the new one. A purge that lands while a fill of the key is running keeps that fill's copy out
//! of the store (it may predate the change). A purge with `refetch` keeps serving the old copy
//! until the new one has committed, and keeps it if the origin fails.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::client::get;
use crate::support::metric;
use crate::support::node::Node;
use crate::support::origin::{Origin, Reply};
use crate::support::{
    admin_json, admin_request, assert_origin_count, get_stored, object_path, origin_and_node, pattern_body, source_of,
    ADMIN_TOKEN, BUCKET,
};

fn purge_path() -> String {
    format!("/v1/regions/cn-north-1/buckets/{BUCKET}/purge")
}

/// POSTs a purge and returns its `result` object (asserting a 200).
fn purge(node: &Node, body: Value) -> Value {
    let resp = admin_request(node.admin_addr(), "POST", &purge_path(), Some(ADMIN_TOKEN), Some(&body.to_string()));
    assert_eq!(resp.status, 200, "purge {body}: {resp:?} {}", resp.text());
    admin_json(&resp)["result"].clone()
}

fn get_body(node: &Node, key: &str) -> (Vec<u8>, String) {
    let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET");
    assert_eq!(resp.status, 200, "GET {key}: {resp:?}");
    let source = source_of(&resp).to_string();
    (resp.body, source)
}

#[test]
fn purged_keys_are_mirrored_again_and_others_stay() {
    let (origin, node) = origin_and_node();
    for (k, seed) in [("a.txt", 1), ("b.txt", 2)] {
        origin.set(&format!("/dir1/{k}"), Reply::ok(pattern_body(2000, seed)));
        get_stored(node.data_addr(), &object_path(k), &pattern_body(2000, seed));
    }
    let result = purge(&node, json!({"keys": ["a.txt", "never-stored.txt"]}));
    assert_eq!(result["purged"], 1, "{result}");

    origin.set("/dir1/a.txt", Reply::ok("the new a"));
    let (body, source) = get_body(&node, "a.txt");
    assert_eq!((body.as_slice(), source.as_str()), (&b"the new a"[..], "origin"), "no tier served the purged copy");
    let (body, source) = get_body(&node, "b.txt");
    assert_eq!(body, pattern_body(2000, 2));
    assert_ne!(source, "origin");
    assert_origin_count(&origin, "/dir1/a.txt", 2);
    assert_origin_count(&origin, "/dir1/b.txt", 1);

    let metrics = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None).text();
    assert!(metrics.contains("edgemirror_objects_purged_total 1"), "{metrics}");
}

#[test]
fn a_prefix_purge_takes_every_key_under_it() {
    let (origin, node) = origin_and_node();
    for k in ["img/1.jpg", "img/2.jpg", "img2/3.jpg", "doc/4.txt"] {
        origin.set(&format!("/dir1/{k}"), Reply::ok(k.as_bytes().to_vec()));
        get_stored(node.data_addr(), &object_path(k), k.as_bytes());
    }
    assert_eq!(purge(&node, json!({"prefix": "img/"}))["purged"], 2);
    for k in ["img/1.jpg", "img/2.jpg", "img2/3.jpg", "doc/4.txt"] {
        let (_, source) = get_body(&node, k);
        let purged = k.starts_with("img/");
        assert_eq!(source == "origin", purged, "{k}: {source}");
    }
}

#[test]
fn a_purge_survives_a_restart() {
    let (origin, mut node) = origin_and_node();
    let body = pattern_body(50_000, 3);
    origin.set("/dir1/k.bin", Reply::ok(body.clone()));
    get_stored(node.data_addr(), &object_path("k.bin"), &body);
    assert_eq!(purge(&node, json!({"keys": ["k.bin"]}))["purged"], 1);
    node.restart();
    let (got, source) = get_body(&node, "k.bin");
    assert_eq!(source, "origin", "the purged object came back after a restart");
    assert!(got == body);
    assert_origin_count(&origin, "/dir1/k.bin", 2);
}

#[test]
fn a_fill_running_during_a_purge_is_not_stored() {
    let (origin, node) = origin_and_node();
    let body = pattern_body(200_000, 4);
    // 20 pieces, 50 ms apart: the fill runs for about a second.
    origin.set("/dir1/slow.bin", Reply::ok(body.clone()).with_paced(10_000, Duration::from_millis(50)));
    let addr = node.data_addr();
    let client = std::thread::spawn(move || get(addr, &object_path("slow.bin"), &[]).expect("GET"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.count("/dir1/slow.bin") == 0 {
        assert!(Instant::now() < deadline, "the fill never reached the origin");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    purge(&node, json!({"keys": ["slow.bin"]}));
    let resp = client.join().unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body == body, "the client still got the whole body");

    origin.set("/dir1/slow.bin", Reply::ok("after the purge"));
    let (got, source) = get_body(&node, "slow.bin");
    assert_eq!((got.as_slice(), source.as_str()), (&b"after the purge"[..], "origin"));
    let metrics = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None).text();
    assert!(metrics.contains("edgemirror_fills_superseded_total 1"), "{metrics}");
}

#[test]
fn a_refetch_serves_the_old_copy_until_the_new_one_commits() {
    let (origin, node) = origin_and_node();
    origin.set("/dir1/page.html", Reply::ok("version 1"));
    get_stored(node.data_addr(), &object_path("page.html"), b"version 1");
    origin.set("/dir1/page.html", Reply::ok("version 2").with_head_delay(Duration::from_millis(800)));
    let result = purge(&node, json!({"keys": ["page.html"], "refetch": true}));
    assert_eq!((result["refetching"].as_u64(), result["noRule"].as_u64()), (Some(1), Some(0)), "{result}");
    let (body, _) = get_body(&node, "page.html");
    assert_eq!(body, b"version 1", "the old copy is served while the new one is fetched");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (body, _) = get_body(&node, "page.html");
        if body == b"version 2" {
            break;
        }
        assert_eq!(body, b"version 1");
        assert!(Instant::now() < deadline, "the new copy never replaced the old one");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_origin_count(&origin, "/dir1/page.html", 2);
}

#[test]
fn a_failed_refetch_keeps_the_old_copy() {
    let (origin, node) = origin_and_node();
    origin.set("/dir1/k.txt", Reply::ok("the good copy"));
    get_stored(node.data_addr(), &object_path("k.txt"), b"the good copy");
    origin.set("/dir1/k.txt", Reply::status(500));
    purge(&node, json!({"keys": ["k.txt"], "refetch": true}));
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.count("/dir1/k.txt") < 2 {
        assert!(Instant::now() < deadline, "the refetch never reached the origin");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let (body, _) = get_body(&node, "k.txt");
    assert_eq!(body, b"the good copy");
}

#[test]
fn bad_purge_requests_are_refused_with_a_reason() {
    let origin = Origin::start();
    let node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "img/").start();
    let admin = node.admin_addr();
    let body = json!({"keys": ["a"]}).to_string();
    let resp = admin_request(admin, "POST", &purge_path(), None, Some(&body));
    assert_eq!(resp.status, 401);
    let resp = admin_request(admin, "GET", &purge_path(), Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 405);
    let too_many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    for (body, field) in [
        (json!({"keys": ["a"], "prefix": "b"}), "either keys or prefix"),
        (json!({}), "either keys or prefix"),
        (json!({"keys": too_many}), "keys"),
        (json!({"keys": [""]}), "keys[0]"),
        (json!({"keys": ["a"], "bogus": 1}), "bogus"),
    ] {
        let resp = admin_request(admin, "POST", &purge_path(), Some(ADMIN_TOKEN), Some(&body.to_string()));
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        assert!(resp.text().contains(field), "{body}: {}", resp.text());
    }
    // A refetch of a key no rule covers cannot be done: counted, not fetched.
    let result = purge(&node, json!({"keys": ["img/x", "doc/y"], "refetch": true}));
    assert_eq!((result["refetching"].as_u64(), result["noRule"].as_u64()), (Some(1), Some(1)), "{result}");
}

#[test]
fn churn_through_purges_keeps_disk_use_near_the_live_bytes() {
    let origin = Origin::start();
    let mut node = crate::support::node::NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("store", "segment_bytes = 1048576")
        .with_line("store", "compaction_interval_ms = 100")
        .with_line("store", "min_free_bytes = 0")
        .start();
    let addr = node.data_addr();
    let (keys, size) = (30, 100_000);
    // Six rounds of the same keys, each purged before the next: ~18 MB mirrored, 3 MB live.
    for round in 0..6u8 {
        for i in 0..keys {
            origin.set(&format!("/dir1/k{i}"), Reply::ok(pattern_body(size, round.wrapping_mul(40) + i as u8)));
        }
        for i in 0..keys {
            get_stored(addr, &object_path(&format!("k{i}")), &pattern_body(size, round.wrapping_mul(40) + i as u8));
        }
        if round < 5 {
            assert_eq!(purge(&node, json!({"prefix": "k"}))["purged"], keys);
        }
    }
    let live = (keys * size) as u64;
    let deadline = Instant::now() + Duration::from_secs(15);
    let disk = loop {
        let disk = metric(&node, "edgemirror_store_disk_bytes");
        if disk < live * 2 {
            break disk;
        }
        assert!(Instant::now() < deadline, "disk use stayed at {disk} bytes for {live} live bytes");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metric(&node, "edgemirror_store_compactions_total") > 0);
    eprintln!("churn: {disk} bytes on disk for {live} live bytes ({:.2}x)", disk as f64 / live as f64);
    node.restart();
    for i in 0..keys {
        let (body, source) = get_body(&node, &format!("k{i}"));
        assert!(body == pattern_body(size, 5 * 40 + i as u8), "k{i} after compaction and restart");
        assert_ne!(source, "origin", "k{i} was lost");
    }
}

/// `origin.negative_ttl_ms`: an origin 404 is remembered for the TTL (the origin is asked once),
/// asked again after it, and a purge forgets it at once.
#[test]
fn origin_404s_are_remembered_for_the_negative_ttl_and_purge_forgets_them() {
    let origin = Origin::start();
    let node = crate::support::node::NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("origin", "negative_ttl_ms = 700")
        .start();
    origin.set("/dir1/absent", Reply::status(404));
    let missing = |node: &Node| {
        let resp = get(node.data_addr(), &object_path("absent"), &[]).expect("GET");
        assert_eq!(resp.status, 404, "{resp:?}");
    };
    for _ in 0..5 {
        missing(&node);
    }
    assert_origin_count(&origin, "/dir1/absent", 1);
    assert_eq!(metric(&node, "edgemirror_origin_negative_hits_total"), 4);
    assert_eq!(metric(&node, "edgemirror_origin_negative_entries"), 1);

    std::thread::sleep(std::time::Duration::from_millis(800));
    missing(&node);
    assert_origin_count(&origin, "/dir1/absent", 2);

    // The file appears at the origin: still a 404 within the TTL, until a purge.
    origin.set("/dir1/absent", Reply::ok("arrived"));
    missing(&node);
    assert_eq!(purge(&node, json!({"keys": ["absent"]}))["purged"], 0);
    assert_eq!(get_body(&node, "absent").0, b"arrived");
    assert_origin_count(&origin, "/dir1/absent", 3);
}

fn backfill_path() -> String {
    format!("/v1/regions/cn-north-1/buckets/{BUCKET}/backfill")
}

fn backfill_status(node: &Node) -> Value {
    let resp = admin_request(node.admin_addr(), "GET", &backfill_path(), Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 200, "{resp:?} {}", resp.text());
    admin_json(&resp)["result"].clone()
}

fn wait_for(node: &Node, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = backfill_status(node);
        if done(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A backfill of 2,000 keys from a key list: stored keys are skipped, the rest fetched through
/// the rule; killed with SIGKILL part-way, the node resumes the job from its checkpoint at start,
/// and no key that had been stored is fetched again. A 404 and a failing key are listed with
/// their reasons after the retries; the end state says whether cut-over is safe.
#[test]
fn a_backfill_imports_a_key_list_survives_a_kill_and_reports_failures() {
    let origin = Origin::start();
    let mut node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    let keys: Vec<String> = (0..2000).map(|i| format!("site/page-{i:04}.html")).collect();
    for (i, key) in keys.iter().enumerate() {
        // Paced, so the kill lands mid-way.
        origin.set(
            &format!("/dir1/{key}"),
            Reply::ok(format!("page {i}")).with_head_delay(std::time::Duration::from_millis(2)),
        );
    }
    origin.set("/dir1/site/missing.html", Reply::status(404));
    origin.set("/dir1/site/broken.html", Reply::status(500));
    // One key is already stored: it is skipped.
    assert_eq!(get_body(&node, "site/page-0000.html").0, b"page 0");
    let mut all = keys.clone();
    all.extend(["site/missing.html".to_string(), "site/broken.html".to_string()]);
    let body = json!({"keys": all, "concurrency": 4}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 202, "{resp:?} {}", resp.text());
    let again = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(again.status, 409, "one job per bucket at a time");

    let part = wait_for(&node, "a third done", |s| s["keys"]["done"].as_u64().unwrap_or(0) >= 600);
    assert_eq!(part["state"], "running", "{part}");
    node.kill9();
    node.restart();

    let end = wait_for(&node, "the resumed job ends", |s| s["state"] != "running");
    assert!(node.stderr().contains("backfill resumed from its checkpoint"), "{}", node.stderr());
    assert!(end["keys"]["skipped"].as_u64().unwrap() >= 1, "the stored key is skipped: {end}");
    assert_eq!(end["state"], "complete_with_failures", "{end}");
    assert_eq!(end["keys"]["total"], 2002);
    assert_eq!(end["keys"]["failed"], 2, "{end}");
    let page = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None).text();
    crate::support::promtool_check(&page);
    let series = |s: &str| crate::support::metric_sample(&page, &format!("edgemirror_backfill_{s}"));
    assert_eq!(series(&format!("keys{{bucket=\"{BUCKET}\",state=\"total\"}}")), 2002.0);
    assert_eq!(series(&format!("keys{{bucket=\"{BUCKET}\",state=\"failed\"}}")), 2.0);
    assert_eq!(series(&format!("running{{bucket=\"{BUCKET}\"}}")), 0.0);
    let reasons: Vec<String> =
        end["failures"].as_array().unwrap().iter().map(|f| format!("{} {}", f["key"], f["reason"])).collect();
    assert!(reasons.iter().any(|r| r.contains("missing.html") && r.contains("404")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("broken.html") && r.contains("3 tries")), "{reasons:?}");
    assert_origin_count(&origin, "/dir1/site/broken.html", 3);

    // Every key is stored, and none was fetched twice but those in flight at the kill.
    let mut twice = 0;
    for (i, key) in keys.iter().enumerate() {
        let (body, source) = get_body(&node, key);
        assert_eq!(body, format!("page {i}").into_bytes());
        assert_ne!(source, "origin", "{key} was stored by the backfill");
        let count = origin.count(&format!("/dir1/{key}"));
        assert!(count <= 2, "{key} fetched {count} times");
        twice += (count == 2) as usize;
    }
    assert!(twice <= 4, "{twice} keys fetched twice: at most the 4 in flight at the kill");
    assert_eq!(origin.count("/dir1/site/page-0000.html"), 1, "a stored key is skipped");
}

/// `edgemirror backfill --follow`: the operator's CLI starts the job from a key file, follows it
/// to its end, prints failed keys, and its exit status is the outcome (0 complete, 1 failures).
#[test]
fn the_backfill_cli_follows_a_job_to_its_end() {
    let origin = Origin::start();
    let node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    let dir = tempfile::tempdir().unwrap();
    let run = |keys: &[String]| {
        let file = dir.path().join("keys.txt");
        std::fs::write(&file, keys.join("\n") + "\n").unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_edgemirror"))
            .args(["backfill", "--admin", &format!("http://{}", node.admin_addr()), "--token", ADMIN_TOKEN])
            .args(["--bucket", BUCKET, "--keys", file.to_str().unwrap(), "--follow"])
            .output()
            .expect("run edgemirror backfill")
    };
    let keys: Vec<String> = (0..300).map(|i| format!("k/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        origin.set(&format!("/dir1/{key}"), Reply::ok(vec![b'x'; 100 + i]));
    }
    let out = run(&keys);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("backfill complete: 300 fetched, 0 already stored, 0 failed"), "{stdout}");

    origin.set("/dir1/k/missing", Reply::status(404));
    let mut more = keys[..10].to_vec();
    more.push("k/missing".into());
    let out = run(&more);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("0 fetched, 10 already stored, 1 failed") && stdout.contains("failed: k/missing"),
        "{stdout}"
    );
    // A wrong token is a clear error, status 2.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_edgemirror"))
        .args(["backfill", "--admin", &format!("http://{}", node.admin_addr()), "--token", "wrong"])
        .args(["--bucket", BUCKET, "--keys", dir.path().join("keys.txt").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// A backfill whose keys come from a text file at a URL (`keysUrl`), one key per line.
#[test]
fn a_backfill_takes_its_keys_from_a_url() {
    let origin = Origin::start();
    let node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    let keys: Vec<String> = (0..50).map(|i| format!("u/{i}")).collect();
    for key in &keys {
        origin.set(&format!("/dir1/{key}"), Reply::ok(key.clone()));
    }
    origin.set("/lists/keys.txt", Reply::ok(keys.join("\n") + "\n\n"));
    let body = json!({"keysUrl": format!("{}/lists/keys.txt", origin.url())}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let end = wait_for(&node, "the job ends", |s| !matches!(s["state"].as_str(), Some("listing" | "running")));
    assert_eq!((end["state"].as_str(), end["keys"]["done"].as_u64()), (Some("complete"), Some(50)), "{end}");
    assert_eq!(get_body(&node, "u/7").0, b"u/7");
    // A list that cannot be fetched ends the job as failed, saying why.
    let body = json!({"keysUrl": format!("{}/lists/none.txt", origin.url())}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 202);
    let end = wait_for(&node, "the job fails", |s| s["state"] != "listing");
    assert_eq!(end["state"], "failed", "{end}");
    assert!(end["failures"][0]["reason"].as_str().unwrap().contains("keysUrl"), "{end}");
}

/// A job still gathering its keys is running: a second one is refused (both would write the
/// bucket's checkpoint). Killed while listing (its keys are not in the checkpoint), it comes back
/// failed, saying why, and a new job can start.
#[test]
fn a_backfill_killed_while_listing_comes_back_failed_and_can_be_started_again() {
    let origin = Origin::start();
    let mut node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    origin.set("/dir1/k", Reply::ok("k"));
    origin.set("/lists/slow.txt", Reply::ok("k\n").with_head_delay(std::time::Duration::from_secs(30)));
    origin.set("/lists/keys.txt", Reply::ok("k\n"));
    let slow = json!({"keysUrl": format!("{}/lists/slow.txt", origin.url())}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&slow));
    assert_eq!(resp.status, 202, "{}", resp.text());
    assert_eq!(backfill_status(&node)["state"], "listing");
    let again = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&slow));
    assert_eq!(again.status, 409, "a second job while the first lists its keys: {}", again.text());

    node.kill9();
    node.restart();
    let status = backfill_status(&node);
    assert_eq!(status["state"], "failed", "{status}");
    assert!(
        status["failures"][0]["reason"].as_str().unwrap().contains("stopped while the keys were gathered"),
        "{status}"
    );
    let fresh = json!({"keysUrl": format!("{}/lists/keys.txt", origin.url())}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&fresh));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let end = wait_for(&node, "the new job ends", |s| !matches!(s["state"].as_str(), Some("listing" | "running")));
    assert_eq!(end["state"], "complete", "{end}");
}

/// `maxBytesPerSec`: a backfill job reads the origin no faster than its own cap.
#[test]
fn a_backfill_keeps_to_its_byte_rate_cap() {
    let origin = Origin::start();
    let node = crate::support::node::NodeBuilder::new().mirror(&format!("{}/dir1/", origin.url()), "").start();
    let keys: Vec<String> = (0..20).map(|i| format!("big/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        origin.set(&format!("/dir1/{key}"), Reply::ok(pattern_body(100_000, i as u8)));
    }
    let started = std::time::Instant::now();
    let body = json!({"keys": keys, "concurrency": 8, "maxBytesPerSec": 2_000_000}).to_string();
    let resp = admin_request(node.admin_addr(), "POST", &backfill_path(), Some(ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let end = wait_for(&node, "the job ends", |s| s["state"] != "running");
    let elapsed = started.elapsed();
    assert_eq!(end["state"], "complete", "{end}");
    assert_eq!(end["bytes"], 2_000_000);
    // 2 MB at 2 MB/s with 0.2 MB of burst: about 0.9 s (unpaced: milliseconds).
    assert!(elapsed >= std::time::Duration::from_millis(800), "{elapsed:?}");
}
