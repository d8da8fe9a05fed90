//! The S3 API on the data plane: PutObject, GetObject, HeadObject, DeleteObject, HeadBucket,
//! signed with AWS Signature V4, with a Rust signer built on `proto::s3::sigv4` and with the real
//! boto3 (installed by `.ci/run`).
//!
//! What a migration needs first: uploading what nobody asked for, overwriting, deleting, and the
//! store's promises holding under those writes (an upload lands whole or not at all; a write
//! always needs a valid signature; a mirror fill never replaces an upload).

use std::time::{Duration, SystemTime};

use edgemirror_proto::s3::sigv4;

use crate::support::client::{get, Conn, Response};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{assert_s3_error, pattern_body, source_of, BUCKET};

const ACCESS: &str = "EMTESTACCESSKEY";
pub(crate) const SECRET: &str = "em-test-secret-key-0123456789";
const REGION: &str = "us-east-1";

pub(crate) fn s3_toml() -> String {
    format!("[s3]\nregion = \"{REGION}\"\n[[s3.keys]]\naccess_key = \"{ACCESS}\"\nsecret_key = \"{SECRET}\"\n")
}

fn node_with_s3(origin: Option<&Origin>) -> Node {
    let builder = match origin {
        Some(o) => NodeBuilder::new().mirror(&format!("{}/dir1/", o.url()), ""),
        None => NodeBuilder::new().bucket(BUCKET),
    };
    builder.with_extra_toml(&s3_toml()).start()
}

/// A request signed in the header form, as SDKs send it: `x-amz-date`, `x-amz-content-sha256`
/// (the body's SHA-256) and `Authorization`.
pub(crate) fn signed(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    secret: &str,
) -> Vec<u8> {
    signed_with(method, host, path, body, extra, secret, &sigv4::sha256_hex(body))
}

/// [`signed`] with the `x-amz-content-sha256` value given (`STREAMING-...` for aws-chunked).
fn signed_with(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    secret: &str,
    payload: &str,
) -> Vec<u8> {
    let amz = sigv4::AmzDate::from_system_time(SystemTime::now()).expect("a date");
    let payload = payload.to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.into()),
        ("x-amz-content-sha256".into(), payload.clone()),
        ("x-amz-date".into(), amz.as_str().into()),
    ];
    for (n, v) in extra {
        headers.push((n.to_ascii_lowercase(), (*v).into()));
    }
    headers.sort();
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed_headers = sigv4::SignedHeaders::parse(names.join(";").into()).expect("signed headers");
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let canonical = sigv4::canonical_request(&sigv4::CanonicalRequest {
        method,
        path: path_only.as_bytes(),
        query: query.as_bytes(),
        headers: &pairs,
        signed_headers: &signed_headers,
        payload_hash: &payload,
        form: sigv4::AuthForm::Header,
    })
    .expect("canonical request");
    let scope = format!("{}/{REGION}/s3/aws4_request", amz.date());
    let to_sign = sigv4::string_to_sign(amz.as_str(), &scope, &canonical);
    let key = sigv4::signing_key(secret, amz.date(), REGION, "s3");
    let signature = sigv4::to_hex(&sigv4::signature(&key, &to_sign));
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in &headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str(&format!(
        "authorization: AWS4-HMAC-SHA256 Credential={ACCESS}/{scope}, SignedHeaders={}, Signature={signature}\r\n",
        names.join(";")
    ));
    raw.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = raw.into_bytes();
    out.extend_from_slice(body);
    out
}

pub(crate) fn send(node: &Node, raw: &[u8]) -> Response {
    Conn::new(node.data_addr()).request(raw).expect("S3 request")
}

pub(crate) fn put(node: &Node, key: &str, body: &[u8], extra: &[(&str, &str)]) -> Response {
    let host = node.data_addr().to_string();
    send(node, &signed("PUT", &host, &format!("/{BUCKET}/{key}"), body, extra, SECRET))
}

#[test]
fn put_get_overwrite_delete_with_signatures() {
    let node = node_with_s3(None);
    let addr = node.data_addr();
    let body = pattern_body(300_000, 1);
    let resp = put(&node, "up/a.bin", &body, &[("Content-Type", "application/x-test")]);
    assert_eq!(resp.status, 200, "{resp:?} {}", resp.text());
    let etag = resp.header("etag").expect("ETag").to_string();
    assert_eq!(etag, crate::support::expected_etag(&body));

    // Anonymous reads (public_read defaults to true).
    let got = get(addr, &format!("/{BUCKET}/up/a.bin"), &[]).expect("GET");
    assert_eq!(got.status, 200);
    assert!(got.body == body);
    assert_eq!(got.header("content-type"), Some("application/x-test"));
    assert_eq!(got.header("etag"), Some(etag.as_str()));

    // Overwrite: the last commit wins, the cached copy is not served.
    let resp = put(&node, "up/a.bin", b"second version", &[]);
    assert_eq!(resp.status, 200, "{resp:?}");
    let got = get(addr, &format!("/{BUCKET}/up/a.bin"), &[]).expect("GET");
    assert_eq!(got.body, b"second version");

    // Delete: 204, gone, and 204 again for a key that is not there.
    let host = addr.to_string();
    for _ in 0..2 {
        let resp = send(&node, &signed("DELETE", &host, &format!("/{BUCKET}/up/a.bin"), b"", &[], SECRET));
        assert_eq!(resp.status, 204, "{resp:?} {}", resp.text());
    }
    let got = get(addr, &format!("/{BUCKET}/up/a.bin"), &[]).expect("GET");
    assert_s3_error(&got, 404, Some("NoSuchKey"));

    // HeadBucket.
    let resp = send(&node, &signed("HEAD", &host, &format!("/{BUCKET}"), b"", &[], SECRET));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("x-amz-bucket-region"), Some(REGION));
    let resp = send(&node, &signed("HEAD", &host, "/no-such-bucket", b"", &[], SECRET));
    assert_eq!(resp.status, 404);
}

#[test]
fn uploads_are_checked_before_they_are_stored() {
    let node = node_with_s3(None);
    let host = node.data_addr().to_string();
    let path = format!("/{BUCKET}/checked.bin");
    // Wrong secret, unknown key, no signature.
    let resp = send(&node, &signed("PUT", &host, &path, b"data", &[], "not-the-secret-at-all"));
    assert_s3_error(&resp, 403, Some("SignatureDoesNotMatch"));
    let raw = format!("PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\n\r\ndata");
    assert_s3_error(&send(&node, raw.as_bytes()), 403, Some("AccessDenied"));
    // A body that is not what was signed.
    let mut tampered = signed("PUT", &host, &path, b"data", &[], SECRET);
    let n = tampered.len();
    tampered[n - 1] = b'X';
    assert_s3_error(&send(&node, &tampered), 400, Some("XAmzContentSHA256Mismatch"));
    // Content-MD5 that does not match, and one that is not an MD5.
    use base64::Engine as _;
    let wrong = base64::engine::general_purpose::STANDARD.encode([0u8; 16]);
    assert_s3_error(
        &send(&node, &signed("PUT", &host, &path, b"data", &[("Content-MD5", &wrong)], SECRET)),
        400,
        Some("BadDigest"),
    );
    assert_s3_error(
        &send(&node, &signed("PUT", &host, &path, b"data", &[("Content-MD5", "nope")], SECRET)),
        400,
        Some("InvalidDigest"),
    );
    // A body that stops short: nothing stored.
    let mut short = signed("PUT", &host, &path, &vec![b'z'; 10_000], &[], SECRET);
    short.truncate(short.len() - 5000);
    let mut conn = Conn::new(node.data_addr());
    conn.send(&short).unwrap();
    conn.shutdown_write();
    let _ = conn.read_response();
    // None of these stored anything.
    let got = get(node.data_addr(), &path, &[]).expect("GET");
    assert_s3_error(&got, 404, Some("NoSuchKey"));
    // Not offered yet: a named 501.
    let resp = send(&node, &signed("GET", &host, &format!("/{BUCKET}/k?acl"), b"", &[], SECRET));
    assert_s3_error(&resp, 501, Some("NotImplemented"));
}

#[test]
fn an_upload_wins_over_a_mirror_fill_that_began_before_it() {
    let origin = Origin::start();
    let node = node_with_s3(Some(&origin));
    let addr = node.data_addr();
    // A slow fill of the key (a second and a half of origin body)...
    origin.set("/dir1/race.bin", Reply::ok(pattern_body(150_000, 2)).with_paced(10_000, Duration::from_millis(100)));
    let reader = std::thread::spawn(move || get(addr, &format!("/{BUCKET}/race.bin"), &[]).expect("GET"));
    while origin.count("/dir1/race.bin") == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and an upload of the same key that commits while it runs.
    let resp = put(&node, "race.bin", b"uploaded", &[]);
    assert_eq!(resp.status, 200, "{resp:?}");
    let filled = reader.join().unwrap();
    assert_eq!(filled.status, 200, "the fill's client still got the origin's body");
    let got = get(addr, &format!("/{BUCKET}/race.bin"), &[]).expect("GET");
    assert_eq!(got.body, b"uploaded", "the fill replaced the upload");
    assert_ne!(source_of(&got), "origin");
}

#[test]
fn boto3_puts_heads_gets_and_deletes() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", region_name="{REGION}",
                  aws_access_key_id="{ACCESS}", aws_secret_access_key="{SECRET}",
                  config=Config(s3={{"addressing_style": "path"}}, retries={{"max_attempts": 1}}))
body = bytes(range(256)) * 4000
r = s3.put_object(Bucket="{BUCKET}", Key="boto/one.bin", Body=body, ContentType="application/x-boto")
h = s3.head_object(Bucket="{BUCKET}", Key="boto/one.bin")
assert h["ContentLength"] == len(body), h
assert h["ContentType"] == "application/x-boto", h
assert h["ETag"] == r["ETag"], (h, r)
g = s3.get_object(Bucket="{BUCKET}", Key="boto/one.bin")["Body"].read()
assert g == body
s3.head_bucket(Bucket="{BUCKET}")
s3.delete_object(Bucket="{BUCKET}", Key="boto/one.bin")
try:
    s3.head_object(Bucket="{BUCKET}", Key="boto/one.bin")
    raise SystemExit("still there after delete")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e.response
bad = boto3.client("s3", endpoint_url="http://{addr}", region_name="{REGION}",
                   aws_access_key_id="{ACCESS}", aws_secret_access_key="wrong-secret-123",
                   config=Config(s3={{"addressing_style": "path"}}, retries={{"max_attempts": 1}}))
try:
    bad.put_object(Bucket="{BUCKET}", Key="boto/bad.bin", Body=b"x")
    raise SystemExit("a wrong secret was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "SignatureDoesNotMatch", e.response
print("boto3 ok")
"#,
        addr = node.data_addr()
    );
    let out = std::process::Command::new("python3").arg("-c").arg(&script).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("boto3 ok"),
        "boto3 failed:\n{stdout}\n{stderr}\nnode:\n{}",
        node.stderr()
    );
}

/// Runs a Python snippet (boto3) or a shell line (the AWS CLI) with the node's credentials in
/// the environment; panics with both outputs and the node's log when it fails.
fn run_client(node: &Node, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed:\n{stdout}\n{stderr}\nnode:\n{}", node.stderr());
    stdout
}

#[test]
fn boto3_lists_with_prefixes_delimiters_and_pages() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
keys = ["a.txt", "dir/1", "dir/2", "dir/sub/3", "dir/sub/4", "e+f g.txt", "z/9"] + ["many/%03d" % i for i in range(23)]
for k in keys:
    s3.put_object(Bucket="{BUCKET}", Key=k, Body=k.encode())
# Everything, in pages of 5: every key once, in order.
seen = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="{BUCKET}", PaginationConfig={{"PageSize": 5}}):
    assert page["KeyCount"] <= 5, page
    seen += [o["Key"] for o in page.get("Contents", [])]
assert seen == sorted(keys), seen
# A delimiter rolls keys up.
r = s3.list_objects_v2(Bucket="{BUCKET}", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["a.txt", "e+f g.txt"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/", "many/", "z/"], r
r = s3.list_objects_v2(Bucket="{BUCKET}", Prefix="dir/", Delimiter="/")
assert [o["Key"] for o in r["Contents"]] == ["dir/1", "dir/2"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/sub/"], r
# Prefixes are counted as entries and never listed twice across pages.
prefixes, objects = [], []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="{BUCKET}", Delimiter="/", PaginationConfig={{"PageSize": 2}}):
    prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    objects += [o["Key"] for o in page.get("Contents", [])]
assert prefixes == ["dir/", "many/", "z/"] and objects == ["a.txt", "e+f g.txt"], (prefixes, objects)
# ListObjects v1 with a marker, and sizes and ETags.
r = s3.list_objects(Bucket="{BUCKET}", Prefix="many/", Marker="many/020")
assert [o["Key"] for o in r["Contents"]] == ["many/021", "many/022"], r
assert r["Contents"][0]["Size"] == len("many/021"), r
assert r["Contents"][0]["ETag"].startswith('"'), r
print("list ok")
"#,
        addr = node.data_addr()
    );
    let out = run_client(&node, "python3", &["-c", &script]);
    assert!(out.contains("list ok"), "{out}");
}

#[test]
fn the_aws_cli_syncs_a_tree_lists_and_copies_back() {
    let node = node_with_s3(None);
    let src = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for (i, rel) in ["index.html", "css/site.css", "img/a.jpg", "img/b.jpg", "img/deep/c.png"].iter().enumerate() {
        let path = src.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern_body(10_000 + i * 3000, i as u8)).unwrap();
        expected.push(format!("tree/{rel}"));
    }
    // S3 times (and ours) have one-second resolution, and sync uploads a file whose mtime is
    // newer than the object's: let the files be older than the upload, as files usually are.
    std::thread::sleep(Duration::from_millis(1100));
    let endpoint = format!("http://{}", node.data_addr());
    let target = format!("s3://{BUCKET}/tree/");
    run_client(
        &node,
        "python3",
        &["-m", "awscli", "s3", "sync", src.path().to_str().unwrap(), &target, "--endpoint-url", &endpoint],
    );
    let listing = run_client(
        &node,
        "python3",
        &["-m", "awscli", "s3", "ls", &target, "--recursive", "--endpoint-url", &endpoint],
    );
    let mut listed: Vec<String> =
        listing.lines().filter_map(|l| l.split_whitespace().nth(3).map(String::from)).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "{listing}");
    // A second sync has nothing to do; a copy back matches byte for byte.
    let again = run_client(
        &node,
        "python3",
        &["-m", "awscli", "s3", "sync", src.path().to_str().unwrap(), &target, "--endpoint-url", &endpoint],
    );
    assert!(again.trim().is_empty(), "the second sync uploaded again: {again}");
    let back = tempfile::tempdir().unwrap();
    run_client(
        &node,
        "python3",
        &[
            "-m",
            "awscli",
            "s3",
            "cp",
            &target,
            back.path().to_str().unwrap(),
            "--recursive",
            "--endpoint-url",
            &endpoint,
        ],
    );
    for rel in ["index.html", "css/site.css", "img/a.jpg", "img/b.jpg", "img/deep/c.png"] {
        let a = std::fs::read(src.path().join(rel)).unwrap();
        let b = std::fs::read(back.path().join(rel)).unwrap();
        assert!(a == b, "{rel} differs after a round trip");
    }
}

#[test]
fn batch_deletes_and_recursive_removal_with_the_cli() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
for i in range(30):
    s3.put_object(Bucket="{BUCKET}", Key="batch/%02d" % i, Body=b"x" * i)
r = s3.delete_objects(Bucket="{BUCKET}", Delete={{"Objects": [{{"Key": "batch/%02d" % i}} for i in range(10)] + [{{"Key": "batch/never"}}]}})
assert sorted(d["Key"] for d in r["Deleted"]) == sorted(["batch/%02d" % i for i in range(10)] + ["batch/never"]), r
assert not r.get("Errors"), r
r = s3.delete_objects(Bucket="{BUCKET}", Delete={{"Objects": [{{"Key": "batch/10"}}], "Quiet": True}})
assert not r.get("Deleted") and not r.get("Errors"), r
left = [o["Key"] for o in s3.list_objects_v2(Bucket="{BUCKET}", Prefix="batch/")["Contents"]]
assert left == ["batch/%02d" % i for i in range(11, 30)], left
print("batch ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("batch ok"));
    let endpoint = format!("http://{}", node.data_addr());
    run_client(
        &node,
        "python3",
        &["-m", "awscli", "s3", "rm", &format!("s3://{BUCKET}/batch/"), "--recursive", "--endpoint-url", &endpoint],
    );
    // (`aws s3 ls` exits 1 when nothing matches: ask the API directly.)
    let listing = run_client(
        &node,
        "python3",
        &[
            "-m",
            "awscli",
            "s3api",
            "list-objects-v2",
            "--bucket",
            BUCKET,
            "--prefix",
            "batch/",
            "--endpoint-url",
            &endpoint,
        ],
    );
    assert!(!listing.contains("\"Key\""), "{listing}");
    // A malformed body is S3's MalformedXML, and deletes nothing.
    let host = node.data_addr().to_string();
    let resp = send(&node, &signed("POST", &host, &format!("/{BUCKET}?delete"), b"<Delete><Object>", &[], SECRET));
    assert_s3_error(&resp, 400, Some("MalformedXML"));
}

#[test]
fn boto3_over_https_uploads_aws_chunked_with_a_trailing_checksum() {
    use crate::support::tls::{tls_section, TestCa};
    let ca = TestCa::new("edgemirror s3 test CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let node = NodeBuilder::new()
        .bucket(BUCKET)
        .with_file("pki/ca.pem", ca.cert_pem())
        .with_file("pki/leaf.pem", leaf.cert_pem.clone())
        .with_file("pki/leaf.key", leaf.key_pem.clone())
        .with_extra_toml(&(s3_toml() + &tls_section(&[("pki/leaf.pem", "pki/leaf.key")])))
        .start();
    let tls = node.tls_addr().expect("a TLS listener");
    let ca_path = node.dir().join("pki/ca.pem");
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="https://{tls}", verify="{ca}",
                  config=Config(s3={{"addressing_style": "path"}}, retries={{"max_attempts": 1}}))
for size in (0, 5, 70000, 300000):
    body = bytes((i * 7) % 251 for i in range(size))
    for alg in ("CRC32", "SHA256", "SHA1"):  # CRC32C and CRC64NVME need botocore[crt]
        key = "chunked/%s-%d" % (alg, size)
        try:
            s3.put_object(Bucket="{BUCKET}", Key=key, Body=body, ChecksumAlgorithm=alg)
        except botocore.exceptions.ClientError as e:
            raise SystemExit("%s %d: %s" % (alg, size, e.response))
        got = s3.get_object(Bucket="{BUCKET}", Key=key)["Body"].read()
        assert got == body, (alg, size, len(got))
        # The trailing checksum is kept with the object and returned (and validated by boto3).
        head = s3.head_object(Bucket="{BUCKET}", Key=key, ChecksumMode="ENABLED")
        assert ("Checksum" + alg) in head, (alg, size, head)
        assert s3.get_object(Bucket="{BUCKET}", Key=key, ChecksumMode="ENABLED")["Body"].read() == body
        # And the upload's framing is not the object's encoding.
        assert "ContentEncoding" not in head, head
print("chunked ok")
"#,
        ca = ca_path.display()
    );
    let out = run_client(&node, "python3", &["-c", &script]);
    assert!(out.contains("chunked ok"), "{out}");
}

#[test]
fn an_aws_chunked_upload_with_a_wrong_trailing_checksum_stores_nothing() {
    use base64::Engine as _;
    let node = node_with_s3(None);
    let host = node.data_addr().to_string();
    let data = b"hello world";
    let crc = base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(data).to_be_bytes());
    let framed =
        |checksum: &str| format!("b\r\nhello world\r\n0\r\nx-amz-checksum-crc32:{checksum}\r\n\r\n").into_bytes();
    let extra = [
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "11"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
    ];
    let path = format!("/{BUCKET}/chunked.txt");
    let put = |body: &[u8]| {
        send(&node, &signed_with("PUT", &host, &path, body, &extra, SECRET, sigv4::STREAMING_UNSIGNED_PAYLOAD_TRAILER))
    };
    let resp = put(&framed("AAAAAA=="));
    assert_s3_error(&resp, 400, Some("BadDigest"));
    assert_eq!(get(node.data_addr(), &path, &[]).expect("GET").status, 404, "a bad upload was stored");
    let resp = put(&framed(&crc));
    assert_eq!(resp.status, 200, "{resp:?} {}", resp.text());
    let got = get(node.data_addr(), &path, &[]).expect("GET");
    assert_eq!(got.body, data, "the framing was stored instead of the payload");
}

#[test]
fn boto3_lists_buckets_locates_them_and_uses_presigned_urls() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, urllib.request
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}, signature_version="s3v4"))
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert names == ["{BUCKET}"], names
loc = s3.get_bucket_location(Bucket="{BUCKET}")["LocationConstraint"]
assert loc in (None, ""), loc
# A presigned PUT, then a presigned GET, with plain HTTP and no credentials on the client side.
put_url = s3.generate_presigned_url("put_object", Params={{"Bucket": "{BUCKET}", "Key": "pre/signed.txt"}}, ExpiresIn=300)
req = urllib.request.Request(put_url, data=b"presigned body", method="PUT")
assert urllib.request.urlopen(req).status == 200
get_url = s3.generate_presigned_url("get_object", Params={{"Bucket": "{BUCKET}", "Key": "pre/signed.txt"}}, ExpiresIn=300)
assert urllib.request.urlopen(get_url).read() == b"presigned body"
# A tampered presigned URL is refused.
bad = put_url.replace("pre/signed.txt", "pre/other.txt")
try:
    urllib.request.urlopen(urllib.request.Request(bad, data=b"x", method="PUT"))
    raise SystemExit("a tampered presigned URL was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 403, e.code
print("buckets ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("buckets ok"));
    let endpoint = format!("http://{}", node.data_addr());
    let listing = run_client(&node, "python3", &["-m", "awscli", "s3", "ls", "--endpoint-url", &endpoint]);
    assert!(listing.contains(BUCKET), "{listing}");
}

#[test]
fn user_metadata_content_language_and_checksums_are_kept_and_returned() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
r = s3.put_object(Bucket="{BUCKET}", Key="meta.txt", Body=b"Hello world", ContentLanguage="de",
                  Metadata={{"Purpose": "migration", "owner": "ops"}}, ChecksumAlgorithm="CRC32")
h = s3.head_object(Bucket="{BUCKET}", Key="meta.txt", ChecksumMode="ENABLED")
assert h["Metadata"] == {{"purpose": "migration", "owner": "ops"}}, h["Metadata"]
assert h["ContentLanguage"] == "de", h
assert h.get("ChecksumCRC32") == "i9aeUg==", h
g = s3.get_object(Bucket="{BUCKET}", Key="meta.txt")
assert g["Metadata"]["purpose"] == "migration", g
try:
    s3.put_object(Bucket="{BUCKET}", Key="big-meta.txt", Body=b"x", Metadata={{"a": "b" * 3000}})
    raise SystemExit("3000 bytes of metadata were accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "MetadataTooLarge", e.response
print("meta ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("meta ok"));
}

#[test]
fn copy_object_copies_within_the_node_with_copied_or_replaced_metadata() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
body = bytes(range(256)) * 5000
s3.put_object(Bucket="{BUCKET}", Key="src/a b.bin", Body=body, ContentType="application/x-src", Metadata={{"k": "v"}})
r = s3.copy_object(Bucket="{BUCKET}", Key="dst/copied.bin", CopySource={{"Bucket": "{BUCKET}", "Key": "src/a b.bin"}})
assert r["CopyObjectResult"]["ETag"].strip('"'), r
g = s3.get_object(Bucket="{BUCKET}", Key="dst/copied.bin")
assert g["Body"].read() == body
assert g["ContentType"] == "application/x-src" and g["Metadata"] == {{"k": "v"}}, g
s3.copy_object(Bucket="{BUCKET}", Key="dst/replaced.bin", CopySource="{BUCKET}/src/a b.bin",
               MetadataDirective="REPLACE", ContentType="text/plain", Metadata={{"n": "2"}})
h = s3.head_object(Bucket="{BUCKET}", Key="dst/replaced.bin")
assert h["ContentType"] == "text/plain" and h["Metadata"] == {{"n": "2"}}, h
try:
    s3.copy_object(Bucket="{BUCKET}", Key="x", CopySource="{BUCKET}/no/such/key")
    raise SystemExit("a copy of a missing key succeeded")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchKey", e.response
# The CLI's server-side copy.
print("copy ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("copy ok"));
    let endpoint = format!("http://{}", node.data_addr());
    run_client(
        &node,
        "python3",
        &[
            "-m",
            "awscli",
            "s3",
            "cp",
            &format!("s3://{BUCKET}/dst/copied.bin"),
            &format!("s3://{BUCKET}/cli/copy.bin"),
            "--endpoint-url",
            &endpoint,
        ],
    );
    let resp = get(node.data_addr(), &format!("/{BUCKET}/cli/copy.bin"), &[]).expect("GET");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 256 * 5000);
}

#[test]
fn rclone_copies_lists_checks_and_deletes() {
    let node = node_with_s3(None);
    let src = tempfile::tempdir().unwrap();
    for (i, rel) in ["a.txt", "dir/b.bin", "dir/sub/c.bin"].iter().enumerate() {
        let path = src.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern_body(5_000 + i * 40_000, i as u8)).unwrap();
    }
    let remote = format!("edge:{BUCKET}/rc");
    let env_args = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--s3-provider=Other",
                &format!("--s3-endpoint=http://{}", node.data_addr()),
                &format!("--s3-access-key-id={ACCESS}"),
                &format!("--s3-secret-access-key={SECRET}"),
                &format!("--s3-region={REGION}"),
                "--s3-force-path-style=true",
                "--retries=1",
                "--low-level-retries=1",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    };
    let rclone = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut full = vec!["--config", "/dev/null"];
        full.extend(refs);
        // `edge:` is an on-the-fly remote of type s3 (the flags above configure it).
        std::process::Command::new("rclone")
            .args(&full)
            .env("RCLONE_CONFIG_EDGE_TYPE", "s3")
            // A CA bundle from the environment makes the AWS SDK in rclone refuse plain HTTP.
            .env_remove("AWS_CA_BUNDLE")
            .output()
            .expect("run rclone")
    };
    let check = |out: std::process::Output, what: &str| {
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "rclone {what} failed:\n{text}\nnode:\n{}", node.stderr());
        text
    };
    check(rclone(env_args(&["copy", src.path().to_str().unwrap(), &remote])), "copy");
    let listing = check(rclone(env_args(&["lsf", "-R", &remote])), "lsf");
    for rel in ["a.txt", "dir/b.bin", "dir/sub/c.bin"] {
        assert!(listing.lines().any(|l| l == rel), "{rel} not listed: {listing}");
    }
    check(rclone(env_args(&["check", src.path().to_str().unwrap(), &remote])), "check");
    check(rclone(env_args(&["delete", &remote])), "delete");
    let listing = check(rclone(env_args(&["lsf", "-R", &remote])), "lsf after delete");
    assert!(!listing.lines().any(|l| l.ends_with(".txt") || l.ends_with(".bin")), "{listing}");

    // A bucket of rclone's own: mkdir creates it, copy fills it, purge empties and removes it.
    check(rclone(env_args(&["mkdir", "edge:rclone-made"])), "mkdir");
    check(rclone(env_args(&["copy", src.path().to_str().unwrap(), "edge:rclone-made"])), "copy into the new bucket");
    check(rclone(env_args(&["check", src.path().to_str().unwrap(), "edge:rclone-made"])), "check the new bucket");
    let buckets = check(rclone(env_args(&["lsd", "edge:"])), "lsd");
    assert!(buckets.contains("rclone-made") && buckets.contains(BUCKET), "{buckets}");
    check(rclone(env_args(&["purge", "edge:rclone-made"])), "purge");
    let buckets = check(rclone(env_args(&["lsd", "edge:"])), "lsd after purge");
    assert!(!buckets.contains("rclone-made"), "{buckets}");
}

#[test]
fn multipart_uploads_from_boto3_and_the_cli() {
    let node = node_with_s3(None);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pattern_body(20 << 20, 7)).unwrap();
    let script = format!(
        r#"
import boto3, botocore, hashlib
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
cfg = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)
s3.upload_file("{big}", "{BUCKET}", "mp/big.bin", Config=cfg, ExtraArgs={{"ContentType": "application/x-big", "Metadata": {{"m": "1"}}}})
h = s3.head_object(Bucket="{BUCKET}", Key="mp/big.bin")
assert h["ContentLength"] == 20 * 1024 * 1024, h
assert h["ETag"].endswith('-3"'), h["ETag"]
assert h["ContentType"] == "application/x-big" and h["Metadata"] == {{"m": "1"}}, h
s3.download_file("{BUCKET}", "mp/big.bin", "{big}.back")
assert hashlib.md5(open("{big}", "rb").read()).digest() == hashlib.md5(open("{big}.back", "rb").read()).digest()
# By hand: list the parts and the uploads, then abort; a part too small is refused at completion.
u = s3.create_multipart_upload(Bucket="{BUCKET}", Key="mp/manual.bin")["UploadId"]
e1 = s3.upload_part(Bucket="{BUCKET}", Key="mp/manual.bin", UploadId=u, PartNumber=1, Body=b"a" * 1000)["ETag"]
e2 = s3.upload_part(Bucket="{BUCKET}", Key="mp/manual.bin", UploadId=u, PartNumber=2, Body=b"b" * 1000)["ETag"]
parts = s3.list_parts(Bucket="{BUCKET}", Key="mp/manual.bin", UploadId=u)["Parts"]
assert [p["PartNumber"] for p in parts] == [1, 2] and parts[0]["ETag"] == e1, parts
ups = s3.list_multipart_uploads(Bucket="{BUCKET}")["Uploads"]
assert [x["UploadId"] for x in ups] == [u], ups
for bad, code in (([{{"PartNumber": 1, "ETag": e1}}, {{"PartNumber": 2, "ETag": e2}}], "EntityTooSmall"),
                  ([{{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}}], "InvalidPart"),
                  ([{{"PartNumber": 2, "ETag": e2}}, {{"PartNumber": 1, "ETag": e1}}], "InvalidPartOrder")):
    try:
        s3.complete_multipart_upload(Bucket="{BUCKET}", Key="mp/manual.bin", UploadId=u, MultipartUpload={{"Parts": bad}})
        raise SystemExit("completed although " + code)
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == code, e.response
# A single small part is a valid upload.
s3.complete_multipart_upload(Bucket="{BUCKET}", Key="mp/manual.bin", UploadId=u, MultipartUpload={{"Parts": [{{"PartNumber": 2, "ETag": e2}}]}})
assert s3.get_object(Bucket="{BUCKET}", Key="mp/manual.bin")["Body"].read() == b"b" * 1000
u2 = s3.create_multipart_upload(Bucket="{BUCKET}", Key="mp/aborted.bin")["UploadId"]
s3.upload_part(Bucket="{BUCKET}", Key="mp/aborted.bin", UploadId=u2, PartNumber=1, Body=b"z" * 100)
s3.abort_multipart_upload(Bucket="{BUCKET}", Key="mp/aborted.bin", UploadId=u2)
assert not s3.list_multipart_uploads(Bucket="{BUCKET}").get("Uploads"), "uploads left"
try:
    s3.upload_part(Bucket="{BUCKET}", Key="mp/aborted.bin", UploadId=u2, PartNumber=2, Body=b"z")
    raise SystemExit("a part of an aborted upload was accepted")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchUpload", e.response
print("multipart ok")
"#,
        addr = node.data_addr(),
        big = big.display()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("multipart ok"));
    // The CLI's own multipart upload of the same file, and a copy back.
    let endpoint = format!("http://{}", node.data_addr());
    run_client(
        &node,
        "python3",
        &[
            "-m",
            "awscli",
            "s3",
            "cp",
            big.to_str().unwrap(),
            &format!("s3://{BUCKET}/cli/big.bin"),
            "--endpoint-url",
            &endpoint,
        ],
    );
    let got = get(node.data_addr(), &format!("/{BUCKET}/cli/big.bin"), &[]).expect("GET");
    assert_eq!(got.status, 200);
    assert!(got.body == pattern_body(20 << 20, 7), "the CLI's multipart upload differs");
}

#[test]
fn buckets_are_created_and_deleted_through_s3_and_survive_a_restart() {
    let mut node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
def code(call, **kw):
    try:
        call(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise SystemExit(f"{{call.__name__}} {{kw}} succeeded")
s3.create_bucket(Bucket="made-by-s3")
# S3's legacy answer in us-east-1: creating a bucket you own again succeeds and changes nothing.
s3.create_bucket(Bucket="made-by-s3")
s3.create_bucket(Bucket="{BUCKET}")
assert code(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
assert code(s3.create_bucket, Bucket="elsewhere", CreateBucketConfiguration={{"LocationConstraint": "eu-west-1"}}) == "InvalidLocationConstraint"
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert names == ["{BUCKET}", "made-by-s3"], names
s3.head_bucket(Bucket="made-by-s3")
s3.put_object(Bucket="made-by-s3", Key="k/one", Body=b"first object")
mpu = s3.create_multipart_upload(Bucket="made-by-s3", Key="unfinished")["UploadId"]
s3.upload_part(Bucket="made-by-s3", Key="unfinished", UploadId=mpu, PartNumber=1, Body=b"x" * 1000)
assert code(s3.delete_bucket, Bucket="made-by-s3") == "BucketNotEmpty"
assert code(s3.delete_bucket, Bucket="{BUCKET}") == "AccessDenied"
assert code(s3.delete_bucket, Bucket="never-made") == "NoSuchBucket"
s3.create_bucket(Bucket="kept-across-restart")
s3.put_object(Bucket="kept-across-restart", Key="kept", Body=b"still here")
print("phase one ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("phase one ok"));

    node.restart();
    let script = format!(
        r#"
import boto3, botocore
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
assert names == ["{BUCKET}", "kept-across-restart", "made-by-s3"], names
assert s3.get_object(Bucket="made-by-s3", Key="k/one")["Body"].read() == b"first object"
assert s3.get_object(Bucket="kept-across-restart", Key="kept")["Body"].read() == b"still here"
s3.delete_object(Bucket="made-by-s3", Key="k/one")
s3.delete_bucket(Bucket="made-by-s3")
try:
    s3.head_bucket(Bucket="made-by-s3")
    raise SystemExit("a deleted bucket still answers")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "404", e.response
# Re-created, it starts empty: no objects, no uploads left from before.
s3.create_bucket(Bucket="made-by-s3")
assert s3.list_objects_v2(Bucket="made-by-s3")["KeyCount"] == 0
assert s3.list_multipart_uploads(Bucket="made-by-s3").get("Uploads", []) == []
print("phase two ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("phase two ok"));

    // The AWS CLI's mb and rb, and rb --force (delete every object, then the bucket).
    let endpoint = format!("http://{}", node.data_addr());
    let cli = |args: &[&str]| {
        let mut all = vec!["-m", "awscli", "s3"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--endpoint-url", &endpoint]);
        run_client(&node, "python3", &all)
    };
    cli(&["mb", "s3://cli-bucket"]);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f.bin"), pattern_body(70_000, 3)).unwrap();
    cli(&["cp", src.path().join("f.bin").to_str().unwrap(), "s3://cli-bucket/f.bin"]);
    cli(&["rb", "--force", "s3://cli-bucket"]);
    let listing = cli(&["ls"]);
    assert!(!listing.contains("cli-bucket") && listing.contains("kept-across-restart"), "{listing}");
}

/// An upload that began before its bucket was deleted must not land in the deleted bucket: it
/// would be invisible, and come back when the name is created again. DeleteBucket flags the
/// bucket before it checks that it is empty, and a commit into a flagged bucket is refused.
#[test]
fn an_upload_racing_delete_bucket_never_lands_in_the_deleted_bucket() {
    let node = node_with_s3(None);
    let host = node.data_addr().to_string();
    let ok = |raw: Vec<u8>, status: u16| {
        let r = send(&node, &raw);
        assert_eq!(r.status, status, "{r:?}");
    };
    ok(signed("PUT", &host, "/racing", b"", &[], SECRET), 200);

    // The upload's head and half its body are in; the object's record is being written.
    let body = pattern_body(100_000, 9);
    let raw = signed("PUT", &host, "/racing/k", &body, &[], SECRET);
    let (first, rest) = raw.split_at(raw.len() - 50_000);
    let mut upload = Conn::new(node.data_addr());
    upload.send(first).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The bucket holds no committed object yet: it is deleted.
    ok(signed("DELETE", &host, "/racing", b"", &[], SECRET), 204);

    // The rest of the body arrives: the bucket is gone, and so is the upload.
    upload.send(rest).unwrap();
    let answer = upload.read_response().unwrap();
    assert_s3_error(&answer, 404, Some("NoSuchBucket"));

    // Created again, the bucket is empty.
    ok(signed("PUT", &host, "/racing", b"", &[], SECRET), 200);
    let r = send(&node, &signed("GET", &host, "/racing/k", b"", &[], SECRET));
    assert_s3_error(&r, 404, Some("NoSuchKey"));
    let listing = send(&node, &signed("GET", &host, "/racing?list-type=2", b"", &[], SECRET));
    assert!(listing.text().contains("<KeyCount>0</KeyCount>"), "{}", listing.text());
}

/// UploadPartCopy (whole sources and `bytes=first-last` ranges, boto3's multipart `copy` of a
/// large object) and the `x-amz-copy-source-if-*` conditions of both copies.
#[test]
fn parts_are_copied_from_stored_objects_with_ranges_and_conditions() {
    let node = node_with_s3(None);
    let script = format!(
        r#"
import boto3, botocore, hashlib, datetime
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
def code(call, **kw):
    try:
        call(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise SystemExit(f"{{call.__name__}} {{kw}} succeeded")
big = bytes((i * 7) % 251 for i in range(12 * 1024 * 1024))
s3.put_object(Bucket="{BUCKET}", Key="src/big", Body=big)
etag = s3.head_object(Bucket="{BUCKET}", Key="src/big")["ETag"]

# By hand: two ranged copies of the source and a whole small one.
u = s3.create_multipart_upload(Bucket="{BUCKET}", Key="dst/ranged")["UploadId"]
src = {{"Bucket": "{BUCKET}", "Key": "src/big"}}
p1 = s3.upload_part_copy(Bucket="{BUCKET}", Key="dst/ranged", UploadId=u, PartNumber=1, CopySource=src, CopySourceRange="bytes=0-5242879")
p2 = s3.upload_part_copy(Bucket="{BUCKET}", Key="dst/ranged", UploadId=u, PartNumber=2, CopySource=src, CopySourceRange="bytes=6291456-12582911", CopySourceIfMatch=etag)
s3.put_object(Bucket="{BUCKET}", Key="src/small", Body=b"tail")
p3 = s3.upload_part_copy(Bucket="{BUCKET}", Key="dst/ranged", UploadId=u, PartNumber=3, CopySource={{"Bucket": "{BUCKET}", "Key": "src/small"}})
assert p1["CopyPartResult"]["ETag"] == '"' + hashlib.md5(big[:5242880]).hexdigest() + '"', p1
parts = [{{"PartNumber": n, "ETag": p["CopyPartResult"]["ETag"]}} for n, p in ((1, p1), (2, p2), (3, p3))]
listed = s3.list_parts(Bucket="{BUCKET}", Key="dst/ranged", UploadId=u)["Parts"]
assert [p["Size"] for p in listed] == [5242880, 6291456, 4], listed
s3.complete_multipart_upload(Bucket="{BUCKET}", Key="dst/ranged", UploadId=u, MultipartUpload={{"Parts": parts}})
got = s3.get_object(Bucket="{BUCKET}", Key="dst/ranged")["Body"].read()
assert got == big[:5242880] + big[6291456:] + b"tail", len(got)

# Bad ranges and failed conditions are refused with S3's codes, and store no part.
for bad in ["0-2", "bytes=0", "bytes=hello-world", "bytes=0-2,3-5", "bytes=5-4"]:
    assert code(s3.upload_part_copy, Bucket="{BUCKET}", Key="dst/ranged", UploadId=u, PartNumber=4, CopySource=src, CopySourceRange=bad) in ("InvalidArgument", "NoSuchUpload"), bad
u2 = s3.create_multipart_upload(Bucket="{BUCKET}", Key="dst/refused")["UploadId"]
kw = dict(Bucket="{BUCKET}", Key="dst/refused", UploadId=u2, PartNumber=1, CopySource=src)
assert code(s3.upload_part_copy, CopySourceRange="bytes=0-12582912", **kw) == "InvalidRange"
assert code(s3.upload_part_copy, CopySourceIfMatch='"0123"', **kw) == "PreconditionFailed"
assert code(s3.upload_part_copy, CopySourceIfNoneMatch=etag, **kw) == "PreconditionFailed"
assert code(s3.upload_part_copy, Bucket="{BUCKET}", Key="dst/refused", UploadId=u2, PartNumber=1, CopySource={{"Bucket": "{BUCKET}", "Key": "src/none"}}) == "NoSuchKey"
assert code(s3.upload_part_copy, Bucket="{BUCKET}", Key="dst/refused", UploadId="0" * 32, PartNumber=1, CopySource=src) == "NoSuchUpload"
assert s3.list_parts(Bucket="{BUCKET}", Key="dst/refused", UploadId=u2).get("Parts", []) == []
s3.abort_multipart_upload(Bucket="{BUCKET}", Key="dst/refused", UploadId=u2)

# CopyObject's source conditions.
later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
earlier = datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc)
s3.copy_object(Bucket="{BUCKET}", Key="dst/c1", CopySource=src, CopySourceIfMatch=etag, CopySourceIfModifiedSince=earlier)
assert code(s3.copy_object, Bucket="{BUCKET}", Key="dst/c2", CopySource=src, CopySourceIfMatch='"0123"') == "PreconditionFailed"
assert code(s3.copy_object, Bucket="{BUCKET}", Key="dst/c2", CopySource=src, CopySourceIfModifiedSince=later) == "PreconditionFailed"
assert code(s3.copy_object, Bucket="{BUCKET}", Key="dst/c2", CopySource=src, CopySourceIfUnmodifiedSince=earlier) == "PreconditionFailed"
assert code(s3.head_object, Bucket="{BUCKET}", Key="dst/c2") == "404"

# boto3's managed copy of a large object: UploadPartCopy in parallel ranges.
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.copy(src, "{BUCKET}", "dst/managed", Config=cfg)
h = s3.head_object(Bucket="{BUCKET}", Key="dst/managed")
assert h["ETag"].endswith('-3"'), h["ETag"]
assert s3.get_object(Bucket="{BUCKET}", Key="dst/managed")["Body"].read() == big
print("part copies ok")
"#,
        addr = node.data_addr()
    );
    assert!(run_client(&node, "python3", &["-c", &script]).contains("part copies ok"));
}

/// A multipart upload nobody finishes is aborted once older than `store.multipart_max_age_s`:
/// its parts leave the store, and an upload younger than that is left alone.
#[test]
fn abandoned_multipart_uploads_are_reclaimed_after_their_age() {
    let node = NodeBuilder::new()
        .bucket(BUCKET)
        .with_line("store", "multipart_max_age_s = 2")
        .with_extra_toml(&s3_toml())
        .start();
    let script = format!(
        r#"
import boto3, botocore, time
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}))
old = s3.create_multipart_upload(Bucket="{BUCKET}", Key="left/behind")["UploadId"]
for n in (1, 2):
    s3.upload_part(Bucket="{BUCKET}", Key="left/behind", UploadId=old, PartNumber=n, Body=b"p" * 100000)
assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="{BUCKET}")["Uploads"]] == [old]
print("started")
time.sleep(4.5)
young = s3.create_multipart_upload(Bucket="{BUCKET}", Key="still/going")["UploadId"]
uploads = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="{BUCKET}").get("Uploads", [])]
assert uploads == [young], uploads
try:
    s3.upload_part(Bucket="{BUCKET}", Key="left/behind", UploadId=old, PartNumber=3, Body=b"late")
    raise SystemExit("a part of a reclaimed upload was taken")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "NoSuchUpload", e.response
print("reclaimed ok")
"#,
        addr = node.data_addr()
    );
    let out = run_client(&node, "python3", &["-c", &script]);
    assert!(out.contains("reclaimed ok"), "{out}");
    // The parts are deleted from the store, not only hidden: the young upload's record is all
    // that is left of either upload.
    assert_eq!(crate::support::metric(&node, "edgemirror_store_objects"), 1);
    assert!(crate::support::metric(&node, "edgemirror_store_objects_deleted_total") >= 3);
    assert!(node.stderr().contains("abandoned multipart uploads aborted"), "{}", node.stderr());
}

/// What ceph's s3-tests found missing (tests/s3-tests/): ranged reads of an object stored with
/// a checksum (boto3's `download_file` validates every range against what the node sends),
/// conditional writes, a retried Complete, `?partNumber=N`, `response-*` overrides, checksums
/// echoed by PutObject.
#[test]
fn conformance_of_ranges_conditions_parts_and_overrides() {
    let node = node_with_s3(None);
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
import boto3, botocore, hashlib, urllib.request
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{addr}", config=Config(s3={{"addressing_style": "path"}}, signature_version="s3v4"))
B = "{BUCKET}"
def code(call, **kw):
    try:
        call(**kw)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    raise SystemExit(f"{{call.__name__}} {{kw}} succeeded")

# A 20 MiB object stored with a checksum, downloaded in ranges.
big = bytes((i * 13) % 251 for i in range(20 * 1024 * 1024))
put = s3.put_object(Bucket=B, Key="ranged", Body=big, ChecksumAlgorithm="SHA256")
assert put.get("ChecksumSHA256") == __import__("base64").b64encode(hashlib.sha256(big).digest()).decode(), put
cfg = TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024)
s3.download_file(B, "ranged", "{dir}/ranged", Config=cfg)
assert open("{dir}/ranged", "rb").read() == big
r = s3.get_object(Bucket=B, Key="ranged", Range="bytes=4-7", ChecksumMode="ENABLED")
assert r["Body"].read() == big[4:8] and "ChecksumSHA256" not in r, r
assert "ChecksumSHA256" in s3.head_object(Bucket=B, Key="ranged", ChecksumMode="ENABLED")

# Conditional writes.
s3.put_object(Bucket=B, Key="cond", Body=b"one", IfNoneMatch="*")
assert code(s3.put_object, Bucket=B, Key="cond", Body=b"two", IfNoneMatch="*") == "PreconditionFailed"
etag = s3.head_object(Bucket=B, Key="cond")["ETag"]
assert code(s3.put_object, Bucket=B, Key="cond", Body=b"two", IfMatch='"00000000000000000000000000000000"') == "PreconditionFailed"
etag_two = s3.put_object(Bucket=B, Key="cond", Body=b"two", IfMatch=etag)["ETag"]
assert code(s3.put_object, Bucket=B, Key="cond", Body=b"three", IfMatch=etag) == "PreconditionFailed"
assert code(s3.put_object, Bucket=B, Key="absent", Body=b"x", IfMatch="*") == "NoSuchKey"
assert s3.get_object(Bucket=B, Key="cond")["Body"].read() == b"two"

# A multipart object: its parts by number, and a retried Complete.
u = s3.create_multipart_upload(Bucket=B, Key="mp")["UploadId"]
parts = []
for n, size in ((1, 5 << 20), (2, 5 << 20), (3, 1000)):
    body = bytes([n]) * size
    parts.append({{"PartNumber": n, "ETag": s3.upload_part(Bucket=B, Key="mp", UploadId=u, PartNumber=n, Body=body)["ETag"]}})
assert code(s3.get_object, Bucket=B, Key="mp", PartNumber=1) == "NoSuchKey"
done = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=u, MultipartUpload={{"Parts": parts}})
again = s3.complete_multipart_upload(Bucket=B, Key="mp", UploadId=u, MultipartUpload={{"Parts": parts}})
assert again["ETag"] == done["ETag"], (again, done)
p2 = s3.get_object(Bucket=B, Key="mp", PartNumber=2)
assert p2["PartsCount"] == 3 and p2["ContentLength"] == 5 << 20 and p2["ETag"] == done["ETag"], p2
assert p2["ContentRange"] == f"bytes {{5 << 20}}-{{(10 << 20) - 1}}/{{(10 << 20) + 1000}}", p2["ContentRange"]
assert p2["Body"].read() == bytes([2]) * (5 << 20)
h3 = s3.head_object(Bucket=B, Key="mp", PartNumber=3)
assert h3["ContentLength"] == 1000 and h3["PartsCount"] == 3, h3
assert code(s3.get_object, Bucket=B, Key="mp", PartNumber=4) == "InvalidPart"
whole = s3.get_object(Bucket=B, Key="cond", PartNumber=1)
assert whole["Body"].read() == b"two" and "PartsCount" not in whole
assert code(s3.get_object, Bucket=B, Key="cond", PartNumber=2) == "InvalidPart"
# A Complete naming other parts than the object's is still NoSuchUpload.
assert code(s3.complete_multipart_upload, Bucket=B, Key="mp", UploadId=u, MultipartUpload={{"Parts": parts[:2]}}) == "NoSuchUpload"

# Multipart flexible checksums: COMPOSITE (SHA256 of the parts' SHA256s, -N) and FULL_OBJECT
# (the CRC32 of the whole body), checked against each part and the client's own value.
for alg, kind, parts_sums, whole in (
    ("SHA256", "COMPOSITE", None, None),
    ("CRC32", "FULL_OBJECT", ["JRTCyQ==", "QoZTGg==", "YAgjqw=="], "WgDhBQ=="),
):
    key = "mp-" + alg
    u = s3.create_multipart_upload(Bucket=B, Key=key, ChecksumAlgorithm=alg, ChecksumType=kind)
    assert (u["ChecksumAlgorithm"], u["ChecksumType"]) == (alg, kind), u
    done_parts = []
    for n, fill in ((1, b"A"), (2, b"B"), (3, b"C")):
        r = s3.upload_part(Bucket=B, Key=key, UploadId=u["UploadId"], PartNumber=n, Body=fill * (5 << 20), ChecksumAlgorithm=alg)
        if parts_sums:
            assert r["Checksum" + alg] == parts_sums[n - 1], r
        done_parts.append({{"PartNumber": n, "ETag": r["ETag"], "Checksum" + alg: r["Checksum" + alg]}})
    listed = s3.list_parts(Bucket=B, Key=key, UploadId=u["UploadId"])["Parts"]
    assert [p["Checksum" + alg] for p in listed] == [p["Checksum" + alg] for p in done_parts], listed
    wrong = [dict(p, **{{"Checksum" + alg: done_parts[0]["Checksum" + alg]}}) for p in done_parts]
    assert code(s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=u["UploadId"], MultipartUpload={{"Parts": wrong}}) == "BadDigest"
    bad = {{"Checksum" + alg: "AAAAAA=="}}
    assert code(s3.complete_multipart_upload, Bucket=B, Key=key, UploadId=u["UploadId"], MultipartUpload={{"Parts": done_parts}}, **bad) == "BadDigest"
    # Parts listed without their checksums take the ones they were uploaded with.
    listed_plain = done_parts if alg == "SHA256" else [{{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}} for p in done_parts]
    r = s3.complete_multipart_upload(Bucket=B, Key=key, UploadId=u["UploadId"], MultipartUpload={{"Parts": listed_plain}})
    if whole:
        assert r["Checksum" + alg] == whole, r
    else:
        raw = b"".join(__import__("base64").b64decode(p["Checksum" + alg]) for p in done_parts)
        assert r["Checksum" + alg] == __import__("base64").b64encode(hashlib.sha256(raw).digest()).decode() + "-3", r
    assert r["ChecksumType"] == kind, r
    h = s3.head_object(Bucket=B, Key=key, ChecksumMode="ENABLED")
    assert (h["Checksum" + alg], h["ChecksumType"]) == (r["Checksum" + alg], kind), h
    assert "Checksum" + alg not in s3.head_object(Bucket=B, Key=key)
    # Each part keeps its checksum: by number, and in GetObjectAttributes.
    p2 = s3.get_object(Bucket=B, Key=key, PartNumber=2)
    assert (p2["Checksum" + alg], p2["ChecksumType"]) == (done_parts[1]["Checksum" + alg], kind), p2
    a = s3.get_object_attributes(Bucket=B, Key=key, ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"], MaxParts=2, PartNumberMarker=1)
    assert a["ETag"] == r["ETag"].strip('"') and a["ObjectSize"] == 15 << 20 and a["StorageClass"] == "STANDARD", a
    assert (a["Checksum"]["Checksum" + alg], a["Checksum"]["ChecksumType"]) == (r["Checksum" + alg], kind), a
    op = a["ObjectParts"]
    assert (op["TotalPartsCount"], op["PartNumberMarker"], op["NextPartNumberMarker"], op["IsTruncated"]) == (3, 1, 3, False), op
    assert [(x["PartNumber"], x["Size"], x["Checksum" + alg]) for x in op["Parts"]] == [(n, 5 << 20, done_parts[n - 1]["Checksum" + alg]) for n in (2, 3)], op

# GetObjectAttributes of a single-part object: no ObjectParts.
a = s3.get_object_attributes(Bucket=B, Key="cond", ObjectAttributes=["ETag", "ObjectSize", "ObjectParts"])
assert a["ObjectSize"] == 3 and a["ETag"] == etag_two.strip('"') and "ObjectParts" not in a, a

# response-* overrides, on signed requests only.
r = s3.get_object(Bucket=B, Key="cond", ResponseContentType="foo/bar", ResponseContentDisposition="bla",
                  ResponseCacheControl="no-cache", ResponseContentLanguage="esperanto", ResponseExpires="Thu, 01 Dec 1994 16:00:00 GMT")
assert (r["ContentType"], r["ContentDisposition"], r["CacheControl"], r["ContentLanguage"]) == ("foo/bar", "bla", "no-cache", "esperanto"), r
try:
    urllib.request.urlopen("http://{addr}/" + B + "/cond?response-content-type=foo/bar")
    raise SystemExit("an anonymous override was taken")
except urllib.error.HTTPError as e:
    assert e.code in (400, 403), e.code

# Creating a bucket one owns again is S3's legacy 200 in us-east-1.
s3.create_bucket(Bucket=B)

# ListObjectVersions: every object is its key's one version, null.
v = s3.list_object_versions(Bucket=B, Prefix="c")
assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v["Versions"]] == [("cond", "null", True)], v
keys, marker = [], None
while True:
    kw = {{"KeyMarker": marker}} if marker else {{}}
    page = s3.list_object_versions(Bucket=B, MaxKeys=2, **kw)
    keys += [x["Key"] for x in page.get("Versions", [])]
    if not page["IsTruncated"]:
        break
    marker = page["NextKeyMarker"]
assert keys == ["cond", "mp", "mp-CRC32", "mp-SHA256", "ranged"], keys

# The one version of a key is null: it can be named, deleted by it; no other exists.
assert s3.get_object(Bucket=B, Key="cond", VersionId="null")["Body"].read() == b"two"
assert code(s3.get_object, Bucket=B, Key="cond", VersionId="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd") == "NoSuchVersion"
s3.put_object(Bucket=B, Key="versioned-delete", Body=b"x")
gone = s3.delete_objects(Bucket=B, Delete={{"Objects": [{{"Key": "versioned-delete", "VersionId": "null"}}], "Quiet": True}})
assert not gone.get("Errors"), gone
assert code(s3.head_object, Bucket=B, Key="versioned-delete") == "404"

# ListBuckets pages with max-buckets and a continuation token.
for name in ("page-a", "page-b"):
    s3.create_bucket(Bucket=name)
first = s3.list_buckets(MaxBuckets=2)
assert len(first["Buckets"]) == 2 and "ContinuationToken" in first, first
rest = s3.list_buckets(MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
assert [b["Name"] for b in first["Buckets"] + rest["Buckets"]] == sorted([B, "page-a", "page-b"]), rest
assert "ContinuationToken" not in rest

# A range of an empty object is 416; errors carry x-amz-request-id (botocore's RequestId).
s3.put_object(Bucket=B, Key="empty", Body=b"")
try:
    s3.get_object(Bucket=B, Key="empty", Range="bytes=40-50")
    raise SystemExit("a range of an empty object was served")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidRange" and e.response["ResponseMetadata"]["RequestId"], e.response

# Content-Encoding's aws-chunked token is the upload's framing, not the object's.
s3.put_object(Bucket=B, Key="gz", Body=b"", ContentEncoding="gzip, aws-chunked")
assert s3.head_object(Bucket=B, Key="gz")["ContentEncoding"] == "gzip"
s3.put_object(Bucket=B, Key="plain", Body=b"x", ContentEncoding="aws-chunked")
assert "ContentEncoding" not in s3.head_object(Bucket=B, Key="plain")
print("conformance ok")
"#,
        addr = node.data_addr(),
        dir = dir.path().display()
    );
    let out = run_client(&node, "python3", &["-c", &script]);
    assert!(out.contains("conformance ok"), "{out}");
}

/// s3cmd (pip, installed by `.ci/run`): make a bucket, put (single and multipart), list, sync a
/// tree, get, delete, remove the bucket. s3cmd signs with SigV4 and lists with ListObjects V1.
#[test]
fn s3cmd_puts_lists_syncs_gets_and_deletes() {
    let node = node_with_s3(None);
    let work = tempfile::tempdir().unwrap();
    let find = "import shutil, sysconfig, os\nprint(shutil.which('s3cmd') or os.path.join(sysconfig.get_path('scripts'), 's3cmd'))";
    let script = run_client(&node, "python3", &["-c", find]).trim().to_string();
    let cfg = work.path().join("s3cfg");
    let addr = node.data_addr();
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {ACCESS}\nsecret_key = {SECRET}\nhost_base = {addr}\nhost_bucket = {addr}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = {REGION}\nmultipart_chunk_size_mb = 5\n"
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        let mut all = vec![script.as_str(), "-c", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        run_client(&node, "python3", &all)
    };
    let small = work.path().join("small.txt");
    std::fs::write(&small, b"hello from s3cmd").unwrap();
    let big = work.path().join("big.bin");
    std::fs::write(&big, pattern_body(12 << 20, 5)).unwrap();
    let tree = work.path().join("tree");
    for (i, rel) in ["a.txt", "d/b.bin", "d/e/c.bin"].iter().enumerate() {
        let path = tree.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern_body(1000 + i * 30_000, i as u8)).unwrap();
    }

    s3cmd(&["mb", "s3://cmd-bucket"]);
    s3cmd(&["put", small.to_str().unwrap(), "s3://cmd-bucket/small.txt"]);
    s3cmd(&["put", big.to_str().unwrap(), "s3://cmd-bucket/big.bin"]);
    s3cmd(&["sync", &format!("{}/", tree.display()), "s3://cmd-bucket/tree/"]);
    let listing = s3cmd(&["ls", "--recursive", "s3://cmd-bucket"]);
    for key in ["small.txt", "big.bin", "tree/a.txt", "tree/d/b.bin", "tree/d/e/c.bin"] {
        assert!(listing.contains(&format!("s3://cmd-bucket/{key}")), "{key} missing:\n{listing}");
    }
    let top = s3cmd(&["ls", "s3://cmd-bucket/tree/"]);
    assert!(top.contains("DIR") && top.contains("s3://cmd-bucket/tree/d/"), "{top}");
    let back = work.path().join("big.back");
    s3cmd(&["get", "s3://cmd-bucket/big.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == pattern_body(12 << 20, 5), "the multipart upload differs");
    // A second sync finds nothing to upload.
    let again = s3cmd(&["sync", &format!("{}/", tree.display()), "s3://cmd-bucket/tree/"]);
    assert!(!again.contains("upload:"), "{again}");
    s3cmd(&["del", "--recursive", "--force", "s3://cmd-bucket"]);
    s3cmd(&["rb", "s3://cmd-bucket"]);
    assert!(!s3cmd(&["ls"]).contains("cmd-bucket"));
}

/// A plain `Transfer-Encoding: chunked` upload (no Content-Length, as `curl -T -` sends): stored
/// whole once its last chunk arrives, with the signed SHA-256 checked; cut short, nothing.
#[test]
fn a_chunked_upload_without_content_length_is_stored() {
    let node = node_with_s3(None);
    let host = node.data_addr().to_string();
    let body = pattern_body(300_000, 4);
    let chunked = |body: &[u8], pieces: &[usize], finish: bool| {
        // Signed over the body's hash, framed as chunks instead of a Content-Length.
        let path = format!("/{BUCKET}/chunked");
        let raw = signed_with("PUT", &host, &path, b"", &[], SECRET, &sigv4::sha256_hex(body));
        let text = String::from_utf8(raw).unwrap().replace("content-length: 0\r\n", "transfer-encoding: chunked\r\n");
        let mut out = text.into_bytes();
        let mut at = 0;
        for &n in pieces {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            out.extend_from_slice(&body[at..at + n]);
            out.extend_from_slice(b"\r\n");
            at += n;
        }
        if finish {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        out
    };
    let r = send(&node, &chunked(&body, &[100_000, 150_000, 50_000], true));
    assert_eq!(r.status, 200, "{r:?}");
    let got = get(node.data_addr(), &format!("/{BUCKET}/chunked"), &[]).unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == body, "the chunked upload differs");

    // The same upload stopping after its second chunk: nothing replaces the stored object.
    let mut conn = Conn::new(node.data_addr());
    conn.send(&chunked(&pattern_body(300_000, 9), &[100_000, 150_000], false)).unwrap();
    conn.shutdown_write();
    let cut = conn.read_response();
    assert!(cut.map(|r| r.status != 200).unwrap_or(true), "a cut body must not succeed");
    let after = get(node.data_addr(), &format!("/{BUCKET}/chunked"), &[]).unwrap();
    assert!(after.body == body, "the stored object changed");
}

/// A private S3 origin (`address.s3`): another S3-compatible server whose bucket needs signed
/// reads (here a second node, which checks AWS Signature V4 as S3 does; the signing side is the
/// rusty-s3 crate). GET and HEAD are signed; a wrong secret is 424 with the origin's 403 in the
/// log; GET of the rules never shows the secret.
#[test]
fn a_private_s3_bucket_is_mirrored_with_signed_requests() {
    let private = node_with_s3(None);
    let host = private.data_addr().to_string();
    let ok = |raw: Vec<u8>, status: u16| {
        let r = send(&private, &raw);
        assert_eq!(r.status, status, "{r:?}");
    };
    ok(signed("PUT", &host, "/privbkt", b"", &[], SECRET), 200);
    let body = pattern_body(200_000, 8);
    let meta = [("content-type", "image/png"), ("x-amz-meta-owner", "design team")];
    ok(signed("PUT", &host, "/privbkt/assets/logo.png", &body, &meta, SECRET), 200);
    ok(signed("PUT", &host, "/privbkt/assets/other.txt", b"other", &[], SECRET), 200);
    // Private indeed: an anonymous read is refused.
    assert_eq!(get(private.data_addr(), "/privbkt/assets/logo.png", &[]).unwrap().status, 403);

    let edge = NodeBuilder::new().bucket(BUCKET).start();
    let rule = |secret: &str| {
        format!(
            r#"[{{"address": {{"hostName": "{host}", "path": "/assets/", "s3": {{"bucket": "privbkt", "region": "{REGION}", "accessKeyId": "{ACCESS}", "secretAccessKey": "{secret}"}}}}}}]"#
        )
    };
    crate::support::put_rules(edge.admin_addr(), BUCKET, &rule(SECRET));
    let got = get(edge.data_addr(), &crate::support::object_path("logo.png"), &[]).unwrap();
    assert_eq!(got.status, 200, "{got:?}\n{}", edge.stderr());
    assert!(got.body == body);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("x-amz-meta-owner"), Some("design team"), "S3 user metadata comes along");
    let again = get(edge.data_addr(), &crate::support::object_path("logo.png"), &[]).unwrap();
    assert!(crate::support::STORED_SOURCES.contains(&source_of(&again)), "stored after the first fetch: {again:?}");
    // HEAD of an object not stored yet asks the origin with a signed HEAD.
    let head = crate::support::client::head(edge.data_addr(), &crate::support::object_path("other.txt"), &[]).unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("5")), "{head:?}");

    // The secret never comes back.
    let listed = crate::support::admin_request(
        edge.admin_addr(),
        "GET",
        &format!("/v1/regions/cn-north-1/buckets/{BUCKET}/backSource"),
        Some(crate::support::ADMIN_TOKEN),
        None,
    );
    assert!(!listed.text().contains(SECRET) && listed.text().contains("<redacted>"), "{}", listed.text());

    // A wrong secret: the origin refuses (403), the client gets 424, the log says why.
    crate::support::put_rules(edge.admin_addr(), BUCKET, &rule("wrong-secret-key-000000"));
    let refused = get(edge.data_addr(), &crate::support::object_path("other.txt"), &[]).unwrap();
    assert_s3_error(&refused, 424, Some("MirrorFailed"));
    assert!(edge.stderr().contains("status=403"), "{}", edge.stderr());
}

/// Starts a backfill on `edge` with `body` (a JSON string) at `path` and waits for its end;
/// returns its report.
fn backfill_to_end(edge: &Node, path: &str, body: &str) -> serde_json::Value {
    let token = Some(crate::support::ADMIN_TOKEN);
    let started = crate::support::admin_request(edge.admin_addr(), "POST", path, token, Some(body));
    assert_eq!(started.status, 202, "{}", started.text());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = crate::support::admin_json(&crate::support::admin_request(edge.admin_addr(), "GET", path, token, None));
        if !matches!(s["result"]["state"].as_str(), Some("listing" | "running")) {
            return s["result"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A backfill from the origin's own listing (`listOrigin`, ListObjectsV2 pages of a private S3
/// bucket, signed) with `verify`: every object under the rule's prefix is imported and checked
/// against the listing's size and ETag.
#[test]
fn a_backfill_lists_a_private_s3_origin_and_verifies_every_object() {
    let private = node_with_s3(None);
    let host = private.data_addr().to_string();
    assert_eq!(send(&private, &signed("PUT", &host, "/srcbkt", b"", &[], SECRET)).status, 200);
    let mut expected = Vec::new();
    for i in 0..1500 {
        let body = pattern_body(10 + i % 700, i as u8);
        let key = format!("site/p{i:04}");
        let r = send(&private, &signed("PUT", &host, &format!("/srcbkt/{key}"), &body, &[], SECRET));
        assert_eq!(r.status, 200, "{r:?}");
        expected.push((key, body));
    }
    // Outside the rule's prefix: not listed for this bucket.
    assert_eq!(send(&private, &signed("PUT", &host, "/srcbkt/other/x", b"x", &[], SECRET)).status, 200);

    let edge = NodeBuilder::new().bucket(BUCKET).start();
    let rule = format!(
        r#"[{{"address": {{"hostName": "{host}", "path": "/site/", "s3": {{"bucket": "srcbkt", "accessKeyId": "{ACCESS}", "secretAccessKey": "{SECRET}"}}}}}}]"#
    );
    crate::support::put_rules(edge.admin_addr(), BUCKET, &rule);
    let path = format!("/v1/regions/cn-north-1/buckets/{BUCKET}/backfill");
    let body = r#"{"listOrigin": true, "verify": true, "concurrency": 16}"#;
    let status = backfill_to_end(&edge, &path, body);
    assert_eq!(status["state"], "complete", "{status}\n{}", edge.stderr());
    assert_eq!(status["keys"]["total"], 1500, "two listing pages, the prefix stripped: {status}");
    assert_eq!(status["keys"]["done"], 1500);
    // The CLI's --list-origin --verify: the same listing, everything already stored and checked.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_edgemirror"))
        .args(["backfill", "--admin", &format!("http://{}", edge.admin_addr()), "--token", crate::support::ADMIN_TOKEN])
        .args(["--bucket", BUCKET, "--list-origin", "--verify", "--follow"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{stdout}
{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(stdout.contains("backfill complete: 0 fetched, 1500 already stored, 0 failed"), "{stdout}");
    for (key, body) in expected.iter().step_by(37) {
        let local = key.strip_prefix("site/").unwrap();
        let got = get(edge.data_addr(), &format!("/{BUCKET}/{local}"), &[]).unwrap();
        assert_eq!(got.status, 200);
        assert!(got.body == *body, "{key}");
        assert_ne!(source_of(&got), "origin", "imported by the backfill");
    }
}

/// A private bucket in a real Garage cluster as the origin: objects mirrored with signed GETs
/// (and their user metadata), a signed HEAD, a wrong secret refused, and a backfill of the whole
/// bucket from Garage's own listing, verified.
#[test]
fn a_private_garage_bucket_is_mirrored_and_backfilled() {
    let garage = crate::support::garage::Garage::start(1, "origin-bucket");
    let script = format!(
        r#"
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url="http://{s3}", aws_access_key_id="{key}", aws_secret_access_key="{secret}",
                  region_name="garage", config=Config(s3={{"addressing_style": "path"}}))
for i in range(300):
    s3.put_object(Bucket="{bucket}", Key=f"site/p{{i:03}}", Body=bytes((j * i) % 251 for j in range(100 + i * 37)),
                  Metadata={{"n": str(i)}})
s3.put_object(Bucket="{bucket}", Key="elsewhere/x", Body=b"x")
print("uploaded")
"#,
        s3 = garage.s3[0],
        key = garage.key,
        secret = garage.secret,
        bucket = garage.bucket
    );
    let out = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("uploaded"), "{}", String::from_utf8_lossy(&out.stderr));

    let edge = NodeBuilder::new().bucket(BUCKET).start();
    let rule = |secret: &str| {
        format!(
            r#"[{{"address": {{"hostName": "{}", "path": "/site/", "s3": {{"bucket": "{}", "region": "garage", "accessKeyId": "{}", "secretAccessKey": "{secret}"}}}}}}]"#,
            garage.s3[0], garage.bucket, garage.key
        )
    };
    crate::support::put_rules(edge.admin_addr(), BUCKET, &rule(&garage.secret));
    let body = |i: usize| (0..100 + i * 37).map(|j| ((j * i) % 251) as u8).collect::<Vec<u8>>();
    let got = get(edge.data_addr(), &format!("/{BUCKET}/p007"), &[]).unwrap();
    assert_eq!(got.status, 200, "{got:?}\n{}", edge.stderr());
    assert!(got.body == body(7));
    assert_eq!(got.header("x-amz-meta-n"), Some("7"));
    assert_eq!(got.header("x-edgemirror-origin-etag"), None, "provenance is for HEAD only");
    let stored = crate::support::client::head(edge.data_addr(), &format!("/{BUCKET}/p007"), &[]).unwrap();
    assert_eq!(stored.header("x-edgemirror-origin-etag"), stored.header("etag"), "Garage's ETag is kept: {stored:?}");
    assert!(stored.header("etag").is_some_and(|e| e.len() == 34), "{stored:?}");
    let head = crate::support::client::head(edge.data_addr(), &format!("/{BUCKET}/p008"), &[]).unwrap();
    assert_eq!(head.status, 200, "{head:?}");

    // The whole bucket under the prefix, from Garage's listing, verified against it.
    let path = format!("/v1/regions/garage/buckets/{BUCKET}/backfill");
    let status = backfill_to_end(&edge, &path, r#"{"listOrigin": true, "verify": true}"#);
    assert_eq!(status["state"], "complete", "{status}\n{}", edge.stderr());
    assert_eq!(
        (status["keys"]["total"].as_u64(), status["keys"]["skipped"].as_u64()),
        (Some(300), Some(1)),
        "{status}"
    );
    let last = get(edge.data_addr(), &format!("/{BUCKET}/p299"), &[]).unwrap();
    assert!(last.body == body(299));
    assert_ne!(source_of(&last), "origin");

    // A wrong secret: Garage refuses, the client gets 424, the log says why.
    crate::support::put_rules(
        edge.admin_addr(),
        BUCKET,
        &rule("0000000000000000000000000000000000000000000000000000000000000000"),
    );
    // (a key not imported: everything under the prefix is stored now)
    assert_s3_error(&get(edge.data_addr(), &format!("/{BUCKET}/p999"), &[]).unwrap(), 424, Some("MirrorFailed"));
    assert!(edge.stderr().contains("status=403"), "{}", edge.stderr());
}
