//! What an operator sees of a running node: the access log (JSON and combined, reopened on
//! SIGUSR1) and the Prometheus metrics (histograms by source, origin exchanges), checked with
//! `promtool check metrics` from Debian's `prometheus` package.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::s3::{put, s3_toml};
use crate::support::client::{get, Conn};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{
    admin_request, metric_sample as sample, pattern_body, poll_until, promtool_check, source_of, ADMIN_TOKEN, BUCKET,
};

fn node_with_log(origin: &Origin, format: &str) -> Node {
    NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml(&s3_toml())
        .with_extra_toml(&format!("[access_log]\npath = \"access.log\"\nformat = \"{format}\"\n"))
        .start()
}

/// The lines of `path` once it holds at least `n` (the writer thread flushes every 200 ms).
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    poll_until(
        || Some(read().lines().map(str::to_string).collect::<Vec<_>>()).filter(|lines| lines.len() >= n),
        || format!("{} has fewer than {n} lines:\n{}", path.display(), read()),
    )
}

#[test]
fn the_access_log_has_a_json_line_per_request_with_source_origin_and_s3_fields() {
    let origin = Origin::start();
    // Over 128 KiB, so that its repeats come from the RAM tier (`memory`).
    let body = pattern_body(150_000, 3);
    origin.set("/dir1/a.bin", Reply::ok(body.clone()).with_header("ETag", "\"e\""));
    origin.set("/dir1/gone", Reply::status(404));
    origin.set("/dir1/broken", Reply::status(503));
    let node = node_with_log(&origin, "json");
    let addr = node.data_addr();

    let miss = get(addr, &format!("/{BUCKET}/a.bin"), &[("User-Agent", "probe/1.0")]).expect("GET");
    assert_eq!((miss.status, source_of(&miss)), (200, "origin"));
    let hit = crate::support::get_until_source(addr, &format!("/{BUCKET}/a.bin"), &body, &["memory"]);
    let range = get(addr, &format!("/{BUCKET}/a.bin"), &[("Range", "bytes=0-9")]).expect("range");
    assert_eq!(range.status, 206);
    let gone = get(addr, &format!("/{BUCKET}/gone"), &[]).expect("404");
    assert_eq!(gone.status, 404);
    let broken = get(addr, &format!("/{BUCKET}/broken"), &[]).expect("424");
    assert_eq!(broken.status, 424);
    let upload = put(&node, "up/x.txt", b"hello", &[]);
    assert_eq!(upload.status, 200, "{}", upload.text());
    // A malformed request: 400 and a line with no bucket.
    let bad = Conn::new(addr).request(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    let bad = bad.expect("400");
    assert_eq!(bad.status, 400);

    // Lines are in order per core; the cores' buffers are written one after the other, so the
    // lines are found by request id.
    let log = node.dir().join("access.log");
    let ids: Vec<&str> = [&miss, &hit, &range, &gone, &broken, &upload, &bad]
        .iter()
        .map(|r| r.header("x-request-id").expect("x-request-id"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = wait_lines(&log, ids.len());
        if ids.iter().all(|id| lines.iter().any(|l| l.contains(id))) || Instant::now() > deadline {
            break lines;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let entries: Vec<serde_json::Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let line_of = |resp: &crate::support::client::Response| -> serde_json::Value {
        let id = resp.header("x-request-id").expect("x-request-id");
        entries.iter().find(|e| e["request_id"] == id).unwrap_or_else(|| panic!("no line for {id}: {lines:#?}")).clone()
    };
    let first = line_of(&miss);
    assert_eq!(first["method"], "GET");
    assert_eq!((first["bucket"].as_str(), first["key"].as_str()), (Some(BUCKET), Some("a.bin")));
    assert_eq!((first["status"].as_u64(), first["source"].as_str()), (Some(200), Some("origin")));
    assert_eq!(first["s3_op"], "GetObject");
    assert_eq!(first["user_agent"], "probe/1.0");
    assert_eq!(first["origin_url"].as_str(), Some(format!("{}/dir1/a.bin", origin.url()).as_str()));
    assert_eq!(first["origin_status"], 200);
    assert!(first["origin_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{first}");
    let bytes = first["bytes"].as_u64().expect("bytes");
    assert!(bytes > body.len() as u64 && bytes < body.len() as u64 + 2048, "{first}");
    let (ttfb, total) = (first["ttfb_ms"].as_f64().expect("ttfb"), first["duration_ms"].as_f64().expect("duration"));
    assert!(0.0 <= ttfb && ttfb <= total, "{first}");
    assert!(first["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{first}");
    assert!(first["time"].as_str().is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{first}");

    let hit = line_of(&hit);
    assert_eq!(hit["source"], "memory", "{hit}");
    assert!(hit.get("origin_url").is_none(), "{hit}");
    let range = line_of(&range);
    assert_eq!((range["status"].as_u64(), range["source"].as_str()), (Some(206), Some("memory")), "{range}");
    let gone = line_of(&gone);
    assert_eq!((gone["status"].as_u64(), gone["origin_status"].as_u64()), (Some(404), Some(404)), "{gone}");
    let broken = line_of(&broken);
    assert_eq!((broken["status"].as_u64(), broken["origin_status"].as_u64()), (Some(424), Some(503)), "{broken}");
    let upload = line_of(&upload);
    assert_eq!((upload["s3_op"].as_str(), upload["method"].as_str()), (Some("PutObject"), Some("PUT")), "{upload}");
    assert_eq!(upload["access_key"], "EMTESTACCESSKEY");
    assert_eq!(upload["source"], "edge");
    let malformed = line_of(&bad);
    assert_eq!(malformed["status"], 400);
    assert_eq!(malformed["s3_op"], "-");
    assert!(malformed.get("bucket").is_none(), "{malformed}");
}

#[test]
fn the_combined_format_is_nginx_s_and_sigusr1_reopens_the_file() {
    let origin = Origin::start();
    origin.set("/dir1/a.txt", Reply::ok(b"abc".to_vec()));
    let node = node_with_log(&origin, "combined");
    let addr = node.data_addr();
    let path = format!("/{BUCKET}/a.txt?x=%22y%22");
    assert_eq!(get(addr, &path, &[("User-Agent", "say \"hi\""), ("Referer", "http://r/")]).expect("GET").status, 200);

    let log = node.dir().join("access.log");
    let lines = wait_lines(&log, 1);
    let line = &lines[0];
    // 127.0.0.1 - - [26/Nov/2026:03:04:05 +0000] "GET /example-bucket/a.txt?x=%22y%22 HTTP/1.1" 200 N "http://r/" "say \x22hi\x22"
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains(" +0000] \"GET /example-bucket/a.txt?x=%22y%22 HTTP/1.1\" 200 "), "{line}");
    assert!(line.ends_with(" \"http://r/\" \"say \\x22hi\\x22\""), "{line}");

    // logrotate: move the file away, signal, and the next line goes to a new file.
    let rotated = node.dir().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    node.signal(libc::SIGUSR1);
    poll_until(|| log.exists().then_some(()), || "no new access.log after SIGUSR1".into());
    assert_eq!(get(addr, &path, &[]).expect("GET").status, 200);
    let fresh = wait_lines(&log, 1);
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert!(fresh[0].contains("\"-\" \"-\""), "{}", fresh[0]);
    assert_eq!(std::fs::read_to_string(&rotated).expect("rotated").lines().count(), 1);
}

#[test]
fn the_access_log_can_go_to_stdout() {
    let origin = Origin::start();
    origin.set("/dir1/a.txt", Reply::ok(b"abc".to_vec()));
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml("[access_log]\npath = \"stdout\"\n")
        .start();
    let resp = get(node.data_addr(), &format!("/{BUCKET}/a.txt"), &[]).expect("GET");
    let line = node.next_stdout_line(Duration::from_secs(10)).expect("a line on stdout");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["request_id"].as_str(), resp.header("x-request-id"));
    assert_eq!(v["source"], "origin");
}

#[test]
fn lines_buffered_at_sigterm_are_written() {
    let origin = Origin::start();
    origin.set("/dir1/a.txt", Reply::ok(b"abc".to_vec()));
    // Lines are written only at exit (or with 64 KiB of them).
    let mut node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml("[access_log]\npath = \"access.log\"\nflush_ms = 600000\n")
        .start();
    for _ in 0..20 {
        assert_eq!(get(node.data_addr(), &format!("/{BUCKET}/a.txt"), &[]).expect("GET").status, 200);
    }
    // Each line is recorded just after its response is sent: give the last one that moment.
    thread::sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(node.dir().join("access.log")).expect("log").lines().count(), 0);
    node.stop();
    let text = std::fs::read_to_string(node.dir().join("access.log")).expect("log");
    assert_eq!(text.lines().count(), 20, "{text}");
}

#[test]
fn metrics_have_histograms_by_source_and_origin_and_pass_promtool() {
    let origin = Origin::start();
    let body = pattern_body(5000, 9);
    origin.set("/dir1/a.bin", Reply::ok(body.clone()));
    origin.set("/dir1/broken", Reply::status(500));
    let node = NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml(&s3_toml())
        .with_extra_toml("[access_log]\npath = \"access.log\"\n")
        .start();
    let addr = node.data_addr();
    assert_eq!(get(addr, &format!("/{BUCKET}/a.bin"), &[]).expect("miss").status, 200);
    crate::support::get_until_source(addr, &format!("/{BUCKET}/a.bin"), &body, &["memory"]);
    assert_eq!(get(addr, &format!("/{BUCKET}/broken"), &[]).expect("424").status, 424);
    assert_eq!(put(&node, "p.txt", b"x", &[]).status, 200);

    // A request is recorded just after its response is sent: wait for the last one.
    let put_count = "edgemirror_request_duration_seconds_count{method=\"PUT\",status=\"2xx\",source=\"edge\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let resp = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None);
        assert_eq!(resp.status, 200);
        let page = resp.text();
        if page.contains(put_count) || Instant::now() > deadline {
            break page;
        }
        thread::sleep(Duration::from_millis(20));
    };
    promtool_check(&page);

    let h = "edgemirror_request_duration_seconds";
    assert_eq!(sample(&page, &format!("{h}_count{{method=\"GET\",status=\"2xx\",source=\"origin\"}}")), 1.0);
    assert!(sample(&page, &format!("{h}_count{{method=\"GET\",status=\"2xx\",source=\"memory\"}}")) >= 1.0);
    // A 424 is the origin's failure: its source is the origin.
    assert_eq!(sample(&page, &format!("{h}_count{{method=\"GET\",status=\"4xx\",source=\"origin\"}}")), 1.0);
    assert_eq!(sample(&page, &format!("{h}_count{{method=\"PUT\",status=\"2xx\",source=\"edge\"}}")), 1.0);
    let inf = sample(&page, &format!("{h}_bucket{{method=\"GET\",status=\"2xx\",source=\"origin\",le=\"+Inf\"}}"));
    assert_eq!(inf, 1.0);
    assert!(page.contains("edgemirror_request_ttfb_seconds_bucket{method=\"GET\",status=\"2xx\",source=\"memory\","));
    let served = sample(&page, "edgemirror_response_bytes_total{source=\"origin\"}");
    assert!(served > body.len() as f64, "{served}");
    let o = origin.url();
    assert_eq!(sample(&page, &format!("edgemirror_origin_responses_total{{origin=\"{o}\",status=\"2xx\"}}")), 1.0);
    assert_eq!(sample(&page, &format!("edgemirror_origin_responses_total{{origin=\"{o}\",status=\"5xx\"}}")), 1.0);
    assert_eq!(sample(&page, &format!("edgemirror_origin_fetch_duration_seconds_count{{origin=\"{o}\"}}")), 2.0);
    assert!(sample(&page, "edgemirror_access_log_lines_total") >= 4.0);
    assert!(sample(&page, "edgemirror_store_free_bytes") > 0.0);
    assert_eq!(sample(&page, "edgemirror_fills_in_flight"), 0.0);
    // A 5,000-byte body is hashed on its worker: nothing queued for the MD5 threads, no fill waited.
    assert_eq!(sample(&page, "edgemirror_md5_queued_bytes"), 0.0);
    assert_eq!(sample(&page, "edgemirror_fill_md5_waits_total"), 0.0);
    assert_eq!(sample(&page, "edgemirror_fill_md5_wait_seconds_total"), 0.0);
    // The failing origin has a breaker entry (one failure counted, still closed).
    let breaker = format!("edgemirror_origin_breaker_state{{origin=\"{o}\",state=\"closed\"}}");
    assert_eq!(sample(&page, &breaker), 1.0);
    // No label carries a key.
    assert!(!page.contains("a.bin") && !page.contains("broken"), "a key leaked into a label");
}

/// `deploy/grafana/edgemirror-dashboard.json` graphs only what the node exports: every metric
/// its queries name is a family on a running node's `/metrics` page (histogram series by their
/// family), so a renamed metric breaks this test rather than a dashboard.
#[test]
fn the_grafana_dashboard_queries_metrics_the_node_exports() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/edgemirror-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard file")).expect("dashboard is JSON");
    let node = NodeBuilder::new().bucket(BUCKET).with_extra_toml("[access_log]\npath = \"access.log\"\n").start();
    let page = admin_request(node.admin_addr(), "GET", "/metrics", Some(ADMIN_TOKEN), None).text();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut checked = 0;
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let names =
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("edgemirror_"));
            for name in names {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| page.contains(&format!("# TYPE {f} histogram"))))
                    .unwrap_or(name);
                assert!(
                    page.contains(&format!("# TYPE {family} ")),
                    "panel {:?} queries {name}, which the node does not export",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} metric names found in the dashboard");
}

/// The console in a real browser: `tests/browser/console.py` drives headless Chromium (Debian's
/// `chromium` and `chromium-driver`, through Selenium) through creating, editing, re-ordering
/// and deleting rules, checking the node's rule API after each step; the screenshot of the end
/// state is kept in `target/test-artifacts/console.png`.
#[test]
fn the_console_creates_edits_reorders_and_deletes_rules_in_a_real_browser() {
    let origin = Origin::start();
    let node = NodeBuilder::new().bucket(BUCKET).start();
    let page = crate::support::client::get(node.admin_addr(), "/console", &[]).expect("GET /console");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|t| t.starts_with("text/html")));
    assert!(
        !page.text().contains("http://") && !page.text().contains("https://"),
        "the console loads nothing from elsewhere"
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let artifacts = root.join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/browser/console.py"))
        .args(["--admin", &format!("http://{}", node.admin_addr())])
        .args(["--token", ADMIN_TOKEN, "--bucket", BUCKET])
        .args(["--origin", &origin.addr().to_string()])
        .arg("--screenshot")
        .arg(&screenshot)
        .output()
        .expect("python3 (selenium from pip, chromium and chromium-driver from apt: .ci/run installs them)");
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "console.py failed:\n{log}");
    assert_eq!(log.matches("ok: ").count(), 9, "{log}");
    let png = std::fs::read(&screenshot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "not a screenshot: {} bytes", png.len());

    let rules = crate::support::get_rules(node.admin_addr(), BUCKET);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0]["address"]["path"], "/pictures/");
    assert_eq!(rules[0]["condition"]["keyPrefixEquals"], "img/");
}
