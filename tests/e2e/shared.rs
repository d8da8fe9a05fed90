//! A fleet of edges over a shared store of record (`store.backend = "s3"`), a real 3-node
//! Garage cluster on 127.0.0.1 (`tests/garage/cluster.sh`, replication factor 3):
//!
//! - every object is mirrored from the origin once across the fleet and written to the shared
//!   store once; an edge that never saw it (a new machine, an empty disk) serves it from there;
//! - one Garage node killed with `kill -9`: still no error, reads and writes; one edge killed:
//!   the others still serve its keys;
//! - a PUT, an overwrite or a DELETE through one edge is what every edge serves within the
//!   configured bound (`store.s3.staleness_ms`, measured here), and no read mixes two versions;
//! - listings, multipart uploads (their `-N` ETag the same on every edge) and user metadata
//!   through boto3, the real SDK;
//! - a range far into an object an edge lacks is passed through from the shared store at once,
//!   while the key's fill stores it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::client::{get, Response};
use crate::support::garage::Garage;
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{assert_origin_count, expected_etag, metric, pattern_body, poll_until, BUCKET};

const STALENESS_MS: u64 = 400;

/// The `[store]` lines and `[store.s3]` table of an edge over `garage`.
fn shared_store_toml(garage: &Garage) -> String {
    let endpoints = garage.s3.iter().map(|a| format!("\"http://{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[store.s3]\nendpoints = [{endpoints}]\nbucket = {:?}\nprefix = \"edge/\"\nregion = \"garage\"\naccess_key_id = {:?}\nsecret_access_key = {:?}\nstaleness_ms = {STALENESS_MS}\n",
        garage.bucket, garage.key, garage.secret
    )
}

/// An edge over `garage`: mirroring `origin` when given, else a bucket written through S3.
fn edge(garage: &Garage, origin: Option<&Origin>) -> Node {
    let builder = match origin {
        Some(o) => NodeBuilder::new().mirror(&format!("{}/dir1/", o.url()), ""),
        None => NodeBuilder::new().bucket(BUCKET),
    };
    builder
        .with_line("store", "backend = \"s3\"")
        .with_extra_toml(&crate::s3::s3_toml())
        .with_extra_toml(&shared_store_toml(garage))
        .start()
}

fn body_of(key: &str) -> Vec<u8> {
    let seed = key.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    pattern_body(30_000 + usize::from(seed) * 200, seed)
}

fn get_ok(node: &Node, key: &str) -> Response {
    let resp = get(node.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("GET");
    assert_eq!(resp.status, 200, "{key}: {}\nnode:\n{}", resp.text(), node.stderr());
    resp
}

fn sum(nodes: &[&Node], name: &str) -> u64 {
    nodes.iter().map(|n| metric(n, name)).sum()
}

#[test]
fn a_fleet_over_garage_mirrors_each_object_once_and_survives_a_dead_garage_node_and_edge() {
    let mut garage = Garage::start(3, "shared-store");
    let origin = Origin::start();
    let keys: Vec<String> = (0..24).map(|i| format!("site/asset-{i}.bin")).collect();
    const LAST_MODIFIED: &str = "Tue, 03 Mar 2026 10:00:00 GMT";
    for key in &keys {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body_of(key)).with_header("Last-Modified", LAST_MODIFIED));
    }
    let mut edges: Vec<Node> = (0..3).map(|_| edge(&garage, Some(&origin))).collect();
    crate::fleet::join(&edges);
    // Every key from every edge, each key starting at another edge.
    for (i, key) in keys.iter().enumerate() {
        for j in 0..3 {
            let resp = get_ok(&edges[(i + j) % 3], key);
            assert!(resp.body == body_of(key), "{key}: wrong body");
        }
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
    // Each object written to the shared store once (by the edge that fetched it), behind.
    let all: Vec<&Node> = edges.iter().collect();
    poll_until(
        || (sum(&all, "edgemirror_shared_writes_total") == keys.len() as u64).then_some(()),
        || format!("shared writes: {}", sum(&all, "edgemirror_shared_writes_total")),
    );
    assert_eq!(sum(&all, "edgemirror_shared_write_failures_total"), 0);

    // A new edge with an empty disk, not in the fleet: everything from the shared store.
    let fresh = edge(&garage, Some(&origin));
    for key in &keys {
        let resp = get_ok(&fresh, key);
        assert!(resp.body == body_of(key), "{key}: wrong body from the shared store");
        assert_eq!(resp.header("etag"), Some(expected_etag(&body_of(key)).as_str()));
        // The origin's validators on every edge: a browser's revalidation gets 304 anywhere.
        assert_eq!(resp.header("last-modified"), Some(LAST_MODIFIED), "{key}");
        let head = crate::support::client::head(fresh.data_addr(), &format!("/{BUCKET}/{key}"), &[]).expect("HEAD");
        assert!(
            head.header("x-amz-meta-edgemirror-etag").is_none()
                && head.header("x-amz-meta-edgemirror-last-modified").is_none()
        );
        let again =
            get(fresh.data_addr(), &format!("/{BUCKET}/{key}"), &[("If-Modified-Since", LAST_MODIFIED)]).expect("GET");
        assert_eq!(again.status, 304, "{key}");
    }
    assert_eq!(metric(&fresh, "edgemirror_shared_reads_total"), keys.len() as u64);
    let bytes: u64 = keys.iter().map(|k| body_of(k).len() as u64).sum();
    assert_eq!(metric(&fresh, "edgemirror_shared_read_bytes_total"), bytes);
    assert_eq!(metric(&fresh, "edgemirror_origin_bytes_total"), 0, "nothing from the origin");

    // One Garage node dies (kill -9): replication 3, quorum 2, and the edges move to another
    // endpoint. No error: reads of what the edges lack, and writes.
    garage.kill9(0);
    let fresh2 = edge(&garage, Some(&origin));
    for key in &keys {
        let resp = get_ok(&fresh2, key);
        assert!(resp.body == body_of(key), "{key}: wrong body with a Garage node down");
    }
    for (i, key) in ["new/after-kill-1", "new/after-kill-2"].iter().enumerate() {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body_of(key)));
        let resp = get_ok(&edges[i], key);
        assert!(resp.body == body_of(key));
    }
    poll_until(
        || (sum(&all, "edgemirror_shared_writes_total") == keys.len() as u64 + 2).then_some(()),
        || format!("shared writes with a Garage node down: {}", sum(&all, "edgemirror_shared_writes_total")),
    );
    assert_eq!(get_ok(&fresh2, "new/after-kill-1").body, body_of("new/after-kill-1"));

    // One edge dies too: the others serve every key.
    edges[1].kill9();
    for key in &keys {
        for e in [&edges[0], &edges[2]] {
            let resp = get_ok(e, key);
            assert!(resp.body == body_of(key));
        }
    }
    // The origin was asked again only where the shared store did not answer an edge (with a
    // node just killed, Garage may answer 503 for a moment: the edge then asks the origin rather
    // than fail the client, and counts it).
    let again: usize = keys.iter().map(|k| origin.count(&format!("/dir1/{k}")) - 1).sum();
    let unreachable: u64 =
        [&edges[0], &edges[2], &fresh, &fresh2].iter().map(|n| metric(n, "edgemirror_shared_unreachable_total")).sum();
    eprintln!("after the kills: {again} origin requests again, {unreachable} shared store requests unanswered");
    assert!(again as u64 <= unreachable, "{again} origin requests again, only {unreachable} shared store failures");
}

#[test]
fn writes_through_one_edge_are_served_by_every_edge_within_the_bound() {
    let garage = Garage::start(3, "shared-store");
    let edges: Vec<Node> = (0..3).map(|_| edge(&garage, None)).collect();
    let put = |node: &Node, key: &str, body: &[u8]| {
        let host = node.data_addr().to_string();
        let raw = crate::s3::signed("PUT", &host, &format!("/{BUCKET}/{key}"), body, &[], crate::s3::SECRET);
        let resp = crate::support::client::Conn::new(node.data_addr()).request(&raw).expect("PUT");
        assert_eq!(resp.status, 200, "PUT {key}: {}\nnode:\n{}", resp.text(), node.stderr());
    };
    let v1 = pattern_body(200_000, 1);
    let v2 = pattern_body(150_000, 2);
    put(&edges[0], "doc/readme.txt", &v1);
    // Every edge, none of which has it locally but the writer: the same bytes and ETag.
    for e in &edges {
        let resp = get_ok(e, "doc/readme.txt");
        assert!(resp.body == v1);
        assert_eq!(resp.header("etag"), Some(expected_etag(&v1).as_str()));
    }

    // Overwrite through edge 0 while edges 1 and 2 are read in a loop: every read is v1 or
    // v2, whole; each edge serves v2 within the bound.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = edges[1..]
        .iter()
        .map(|e| {
            let (addr, stop, v1, v2) = (e.data_addr(), stop.clone(), v1.clone(), v2.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let resp = get(addr, &format!("/{BUCKET}/doc/readme.txt"), &[]).expect("GET");
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    assert!(
                        resp.body == v1 || resp.body == v2,
                        "a read mixed two versions ({} bytes)",
                        resp.body.len()
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let written = Instant::now();
    put(&edges[0], "doc/readme.txt", &v2);
    let put_took = written.elapsed();
    let mut seen = Vec::new();
    for e in &edges {
        let took = poll_until(
            || (get_ok(e, "doc/readme.txt").body == v2).then(|| written.elapsed()),
            || "an edge still serves the old version after 10 s".into(),
        );
        seen.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    let reads: usize = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    let bound = Duration::from_millis(STALENESS_MS) + put_took + Duration::from_millis(500);
    eprintln!("overwrite seen by the edges after {seen:?} (PUT took {put_took:?}; staleness {STALENESS_MS} ms; {reads} reads)");
    assert!(seen.iter().all(|t| *t <= bound), "overwrite seen after {seen:?}, bound {bound:?}");

    // Conditional writes are judged by what the shared store holds, not by an edge's cache:
    // edge 2 never read this key, edge 0 wrote it.
    let put_if = |node: &Node, key: &str, body: &[u8], condition: (&str, &str)| {
        let host = node.data_addr().to_string();
        let raw = crate::s3::signed("PUT", &host, &format!("/{BUCKET}/{key}"), body, &[condition], crate::s3::SECRET);
        crate::support::client::Conn::new(node.data_addr()).request(&raw).expect("PUT")
    };
    put(&edges[0], "doc/only-a.txt", b"from a");
    let refused = put_if(&edges[2], "doc/only-a.txt", b"from c", ("If-None-Match", "*"));
    assert_eq!(refused.status, 412, "{}", refused.text());
    let missing = put_if(&edges[2], "doc/none.txt", b"x", ("If-Match", "\"0123456789abcdef0123456789abcdef\""));
    assert_eq!(missing.status, 404, "{}", missing.text());
    let matched = put_if(&edges[2], "doc/only-a.txt", b"from c", ("If-Match", &expected_etag(b"from a")));
    assert_eq!(matched.status, 200, "{}", matched.text());
    assert_eq!(get_ok(&edges[2], "doc/only-a.txt").body, b"from c");

    // A DELETE through edge 2: every edge answers 404 within the bound.
    let host = edges[2].data_addr().to_string();
    let raw = crate::s3::signed("DELETE", &host, &format!("/{BUCKET}/doc/readme.txt"), b"", &[], crate::s3::SECRET);
    let resp = crate::support::client::Conn::new(edges[2].data_addr()).request(&raw).expect("DELETE");
    assert_eq!(resp.status, 204, "{}", resp.text());
    let deleted = Instant::now();
    for e in &edges {
        let took = poll_until(
            || {
                let resp = get(e.data_addr(), &format!("/{BUCKET}/doc/readme.txt"), &[]).expect("GET");
                (resp.status == 404).then(|| deleted.elapsed())
            },
            || "an edge still serves a deleted object after 10 s".into(),
        );
        assert!(took <= Duration::from_millis(STALENESS_MS + 500), "delete seen after {took:?}");
    }
    let stale: u64 = edges.iter().map(|e| metric(e, "edgemirror_shared_stale_total")).sum();
    assert!(stale >= 2, "the edges that held a copy dropped it: {stale}");
}

/// boto3 against edges over the shared store: what one edge writes, another lists, reads
/// with its metadata, copies, and (multipart) serves with the same ETag.
#[test]
fn boto3_writes_through_one_edge_and_lists_and_reads_through_another() {
    let garage = Garage::start(3, "shared-store");
    let a = edge(&garage, None);
    let b = edge(&garage, None);
    let script = format!(
        r#"
import boto3, time
from botocore.config import Config
def client(addr):
    return boto3.client("s3", endpoint_url="http://" + addr, config=Config(s3={{"addressing_style": "path"}}))
a, b = client("{a}"), client("{b}")
keys = ["a.txt", "dir/1", "dir/2", "dir/sub/3", "z/9"] + ["many/%03d" % i for i in range(12)]
for k in keys:
    a.put_object(Bucket="{BUCKET}", Key=k, Body=k.encode(), ContentType="text/plain", Metadata={{"origin-id": k}})
seen = []
for page in b.get_paginator("list_objects_v2").paginate(Bucket="{BUCKET}", PaginationConfig={{"PageSize": 4}}):
    seen += [o["Key"] for o in page.get("Contents", [])]
assert seen == sorted(keys), seen
r = b.list_objects_v2(Bucket="{BUCKET}", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["a.txt"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/", "many/", "z/"], r
r = b.list_objects_v2(Bucket="{BUCKET}", Delimiter="/", MaxKeys=2)
got = [o["Key"] for o in r.get("Contents", [])] + [p["Prefix"] for p in r.get("CommonPrefixes", [])]
r2 = b.list_objects_v2(Bucket="{BUCKET}", Delimiter="/", ContinuationToken=r["NextContinuationToken"])
got += [o["Key"] for o in r2.get("Contents", [])] + [p["Prefix"] for p in r2.get("CommonPrefixes", [])]
assert sorted(got) == ["a.txt", "dir/", "many/", "z/"], got
h = b.head_object(Bucket="{BUCKET}", Key="dir/sub/3")
assert h["Metadata"] == {{"origin-id": "dir/sub/3"}}, h
assert h["ContentType"] == "text/plain", h
got = b.get_object(Bucket="{BUCKET}", Key="dir/sub/3")["Body"].read()
assert got == b"dir/sub/3", got
g = b.get_object(Bucket="{BUCKET}", Key="dir/sub/3")
assert g["Metadata"] == {{"origin-id": "dir/sub/3"}}, g
# New metadata on the same bytes (a copy onto itself): one ETag, a new version; b, which holds
# the old copy, serves the new metadata once its copy is stale.
a.copy_object(Bucket="{BUCKET}", Key="dir/sub/3", CopySource={{"Bucket": "{BUCKET}", "Key": "dir/sub/3"}},
              MetadataDirective="REPLACE", ContentType="application/json", Metadata={{"origin-id": "changed"}})
time.sleep({stale})
h = b.head_object(Bucket="{BUCKET}", Key="dir/sub/3")
assert h["ContentType"] == "application/json" and h["Metadata"] == {{"origin-id": "changed"}}, h
g = b.get_object(Bucket="{BUCKET}", Key="dir/sub/3")
assert g["ContentType"] == "application/json" and g["Body"].read() == b"dir/sub/3", g
# A flexible checksum given to a comes back from b (and is never shown as user metadata).
put = a.put_object(Bucket="{BUCKET}", Key="sum/crc", Body=b"checked bytes", ChecksumAlgorithm="CRC32")
got = b.get_object(Bucket="{BUCKET}", Key="sum/crc", ChecksumMode="ENABLED")
assert got.get("ChecksumCRC32") == put["ChecksumCRC32"], (got.get("ChecksumCRC32"), put["ChecksumCRC32"])
assert got["Metadata"] == {{}}, got["Metadata"]
a.delete_object(Bucket="{BUCKET}", Key="sum/crc")
# A multipart upload through a: b serves it with the same ETag.
part = 5 * 1024 * 1024
m = a.create_multipart_upload(Bucket="{BUCKET}", Key="big/file.bin")
parts = []
for n in (1, 2):
    body = bytes([n]) * (part if n == 1 else 1000)
    e = a.upload_part(Bucket="{BUCKET}", Key="big/file.bin", UploadId=m["UploadId"], PartNumber=n, Body=body)
    parts.append({{"PartNumber": n, "ETag": e["ETag"]}})
done = a.complete_multipart_upload(Bucket="{BUCKET}", Key="big/file.bin", UploadId=m["UploadId"], MultipartUpload={{"Parts": parts}})
assert done["ETag"].endswith('-2"'), done
hb = b.head_object(Bucket="{BUCKET}", Key="big/file.bin")
assert hb["ETag"] == done["ETag"], (hb["ETag"], done["ETag"])
gb = b.get_object(Bucket="{BUCKET}", Key="big/file.bin")
assert gb["ETag"] == done["ETag"], gb
got = gb["Body"].read()
assert got == bytes([1]) * part + bytes([2]) * 1000, len(got)
# A copy through b of an object only a wrote (b reads it from the shared store first).
b.copy_object(Bucket="{BUCKET}", Key="copied/1", CopySource={{"Bucket": "{BUCKET}", "Key": "dir/1"}})
got = a.get_object(Bucket="{BUCKET}", Key="copied/1")["Body"].read()
assert got == b"dir/1", got
assert a.head_object(Bucket="{BUCKET}", Key="copied/1")["Metadata"] == {{"origin-id": "dir/1"}}
# Deletes through b, in a batch: gone for a.
b.delete_objects(Bucket="{BUCKET}", Delete={{"Objects": [{{"Key": k}} for k in keys]}})
time.sleep({stale})
# (Garage's listing may lag a delete through another of its nodes for a moment.)
for attempt in range(40):
    left = [o["Key"] for o in a.list_objects_v2(Bucket="{BUCKET}").get("Contents", [])]
    if left == ["big/file.bin", "copied/1"]:
        break
    assert attempt < 39, left
    time.sleep(0.1)
for k in keys:
    try:
        a.head_object(Bucket="{BUCKET}", Key=k)
        raise SystemExit("still there: " + k)
    except a.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e.response
# A bucket made through a is one every edge serves (within the staleness bound); whether it
# is empty is the shared store's to say; deleted through b, it is gone from a too.
a.create_bucket(Bucket="tmp-bucket")
assert "tmp-bucket" in [x["Name"] for x in b.list_buckets()["Buckets"]]
b.put_object(Bucket="tmp-bucket", Key="via-b", Body=b"x")
assert a.get_object(Bucket="tmp-bucket", Key="via-b")["Body"].read() == b"x"
try:
    b.delete_bucket(Bucket="tmp-bucket")
    raise SystemExit("b deleted a bucket the shared store holds an object of")
except b.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "BucketNotEmpty", e.response
a.delete_object(Bucket="tmp-bucket", Key="via-b")
# Garage's listing may show a key just deleted through another of its nodes for a moment
# (seen once under load): DeleteBucket is retried as a client would.
for attempt in range(40):
    try:
        b.delete_bucket(Bucket="tmp-bucket")
        break
    except b.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "BucketNotEmpty" and attempt < 39, e.response
        time.sleep(0.1)
time.sleep({stale})
try:
    a.head_bucket(Bucket="tmp-bucket")
    raise SystemExit("a still has the bucket b deleted")
except a.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("404", "NoSuchBucket"), e.response
assert "tmp-bucket" not in [x["Name"] for x in a.list_buckets()["Buckets"]]
print("boto3 ok")
"#,
        a = a.data_addr(),
        b = b.data_addr(),
        stale = (STALENESS_MS as f64 + 300.0) / 1000.0,
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .env("AWS_ACCESS_KEY_ID", "EMTESTACCESSKEY")
        .env("AWS_SECRET_ACCESS_KEY", crate::s3::SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE", "true")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("boto3 ok"),
        "boto3 failed:\n{stdout}\n{}\nedge a:\n{}\nedge b:\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.stderr(),
        b.stderr()
    );
}

/// A range far into an object an edge does not hold is passed through from the shared store at
/// once (206, `x-edgemirror-source: shared`), while the key's fill stores the whole object; a
/// range near the start follows the fill; a range past the end is 416.
#[test]
fn a_far_range_of_an_object_the_edge_lacks_is_passed_through_from_the_shared_store() {
    let garage = Garage::start(1, "shared-store");
    let writer = edge(&garage, None);
    let reader = edge(&garage, None);
    let body = pattern_body(6 << 20, 7);
    let host = writer.data_addr().to_string();
    let raw = crate::s3::signed("PUT", &host, &format!("/{BUCKET}/video/big.mp4"), &body, &[], crate::s3::SECRET);
    let resp = crate::support::client::Conn::new(writer.data_addr()).request(&raw).expect("PUT");
    assert_eq!(resp.status, 200, "{}", resp.text());

    let path = format!("/{BUCKET}/video/big.mp4");
    let start = 5 << 20;
    let resp = get(reader.data_addr(), &path, &[("Range", &format!("bytes={start}-{}", start + 999))]).expect("GET");
    assert_eq!(resp.status, 206, "{}", resp.text());
    assert_eq!(crate::support::source_of(&resp), "shared");
    assert_eq!(resp.header("content-range"), Some(format!("bytes {start}-{}/{}", start + 999, body.len()).as_str()));
    assert!(resp.body == body[start..start + 1000]);
    assert_eq!(resp.header("etag"), Some(expected_etag(&body).as_str()));
    assert_eq!(metric(&reader, "edgemirror_shared_ranges_total"), 1, "passed through, not waiting for the fill");
    // A suffix range too (passed through, or from the fill if it is that far along by now).
    let resp = get(reader.data_addr(), &path, &[("Range", "bytes=-10")]).expect("GET");
    assert_eq!(resp.status, 206, "{}", resp.text());
    assert!(resp.body == body[body.len() - 10..]);
    let passed = metric(&reader, "edgemirror_shared_ranges_total");
    // The fill the first range started stores the whole object: later ranges are local.
    let resp = poll_until(
        || {
            let r = get(reader.data_addr(), &path, &[("Range", "bytes=100-199")]).expect("GET");
            (r.status == 206 && crate::support::source_of(&r) != "shared").then_some(r)
        },
        || "the object was not stored by the edge that passed a range through".into(),
    );
    assert!(resp.body == body[100..200]);
    let resp = get(reader.data_addr(), &path, &[("Range", &format!("bytes={start}-{}", start + 9))]).expect("GET");
    assert_eq!(resp.status, 206);
    assert_ne!(crate::support::source_of(&resp), "shared", "a stored object's ranges are local");
    assert!(resp.body == body[start..start + 10]);
    assert_eq!(metric(&reader, "edgemirror_shared_ranges_total"), passed, "no more pass-through once stored");
    // Past the end: 416, from a fresh edge that lacks the object.
    let third = edge(&garage, None);
    let resp = get(third.data_addr(), &path, &[("Range", &format!("bytes={}-", body.len() + 10))]).expect("GET");
    assert_eq!(resp.status, 416, "{}", resp.text());
}

/// Over a shared store, a purge through one edge is the fleet's: the shared copy goes, every
/// edge drops its own within the bound, and the next GET anywhere mirrors the object again.
#[test]
fn a_purge_through_one_edge_makes_every_edge_mirror_the_object_again() {
    let garage = Garage::start(1, "shared-store");
    let origin = Origin::start();
    origin.set("/dir1/news/today.html", Reply::ok(b"first edition".to_vec()));
    let a = edge(&garage, Some(&origin));
    let b = edge(&garage, Some(&origin));
    assert_eq!(get_ok(&a, "news/today.html").body, b"first edition");
    poll_until(|| (metric(&a, "edgemirror_shared_writes_total") == 1).then_some(()), || "no write behind".into());
    assert_eq!(get_ok(&b, "news/today.html").body, b"first edition");
    assert_eq!(metric(&b, "edgemirror_shared_reads_total"), 1, "b read it from the shared store");
    assert_origin_count(&origin, "/dir1/news/today.html", 1);

    origin.set("/dir1/news/today.html", Reply::ok(b"second edition".to_vec()));
    let resp = crate::support::admin_request(
        a.admin_addr(),
        "POST",
        &format!("/v1/regions/r/buckets/{BUCKET}/purge"),
        Some(crate::support::ADMIN_TOKEN),
        Some(r#"{"keys": ["news/today.html"]}"#),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let purged = Instant::now();
    assert_eq!(get_ok(&a, "news/today.html").body, b"second edition", "the purging edge at once");
    // Its new copy goes to the shared store behind; b, once its copy is stale, reads that.
    poll_until(|| (metric(&a, "edgemirror_shared_writes_total") == 2).then_some(()), || "no second write".into());
    poll_until(
        || (get_ok(&b, "news/today.html").body == b"second edition").then_some(()),
        || "the other edge still serves the purged copy".into(),
    );
    assert!(purged.elapsed() <= Duration::from_millis(STALENESS_MS + 500), "seen after {:?}", purged.elapsed());
    assert_origin_count(&origin, "/dir1/news/today.html", 2);
}

/// A backfill through one edge over a shared store fills the shared store: keys it holds
/// already (written through any edge) are skipped, each fetched key counts as done only once it
/// is written there, and a new edge then serves every key without the origin.
#[test]
fn a_backfill_through_one_edge_fills_the_shared_store() {
    let garage = Garage::start(1, "shared-store");
    let origin = Origin::start();
    let keys: Vec<String> = (0..40).map(|i| format!("archive/{i:03}.txt")).collect();
    for key in &keys {
        origin.set(&format!("/dir1/{key}"), Reply::ok(format!("body of {key}")));
    }
    let a = edge(&garage, Some(&origin));
    let b = edge(&garage, Some(&origin));
    // Five keys are in the shared store already, through edge b; a does not hold them.
    for key in &keys[..5] {
        assert_eq!(get_ok(&b, key).body, format!("body of {key}").into_bytes());
    }
    poll_until(|| (metric(&b, "edgemirror_shared_writes_total") == 5).then_some(()), || "b's writes".into());
    let path = format!("/v1/regions/garage/buckets/{BUCKET}/backfill");
    let body = serde_json::json!({"keys": keys, "concurrency": 4}).to_string();
    let resp =
        crate::support::admin_request(a.admin_addr(), "POST", &path, Some(crate::support::ADMIN_TOKEN), Some(&body));
    assert_eq!(resp.status, 202, "{}", resp.text());
    let end = poll_until(
        || {
            let resp =
                crate::support::admin_request(a.admin_addr(), "GET", &path, Some(crate::support::ADMIN_TOKEN), None);
            let status = crate::support::admin_json(&resp)["result"].clone();
            (status["state"] != "running").then_some(status)
        },
        || "the backfill did not end".into(),
    );
    assert_eq!(end["state"], "complete", "{end}");
    assert_eq!(end["keys"]["skipped"], 5, "the keys the shared store held: {end}");
    assert_eq!(end["keys"]["done"], 35, "done counts the fetched keys: {end}");
    // Written through, not behind: the job's end means the shared store has everything.
    assert_eq!(metric(&a, "edgemirror_shared_writes_total"), 35);
    let fresh = edge(&garage, Some(&origin));
    for key in &keys {
        assert_eq!(get_ok(&fresh, key).body, format!("body of {key}").into_bytes());
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
    assert_eq!(metric(&fresh, "edgemirror_shared_reads_total"), 40);
}
