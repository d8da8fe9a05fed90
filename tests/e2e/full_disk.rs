//! When the store cannot take a mirrored object (issue: "When a mirror-mode store is full"):
//! a miss is still answered, from the origin, and nothing is stored.
//!
//! The stories:
//! - `a_full_disk_keeps_answering_and_stores_again_when_space_returns`: a real, small file
//!   system (a 16 MiB tmpfs, 6 MiB of it taken by a ballast file) fills up with mirrored 1 MiB
//!   objects. Segment files grow as they are written, so the object that finds the disk full
//!   finds out mid-body: the client must still get all of it. Once the disk is at 0 bytes free
//!   the store refuses at the start and says so (`x-edgemirror-source: origin-unstored`). Every
//!   object committed before stays whole; deleting the ballast lets the node store again without
//!   a restart; a restart and a SIGKILL lose nothing committed.
//! - `an_object_the_store_refuses_is_still_coalesced_and_fetched_again_next_time`: objects over
//!   `store.max_object_bytes` (known length: refused at `begin`; chunked: refused at the append
//!   that passes the limit) are served whole; concurrent clients and a late joiner share one
//!   origin fetch; the next GET fetches again; ranges work.
//! - `uploads_that_find_the_disk_full_are_refused_whole_and_lose_nothing`: the same disk filled
//!   by S3 PUTs: 507 `InsufficientStorage`, no half object, a refused overwrite keeps the old
//!   body, deletes still land (the store's ballast is released for them), uploads are taken
//!   again once space returns, restart and SIGKILL lose nothing.
//! - `a_truncated_or_corrupt_origin_body_of_an_unstored_fill_cuts_the_client`: the integrity rule
//!   holds for unstored fills too: a client never takes a short or unverified body for a whole
//!   one.

use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use md5::{Digest, Md5};
use tempfile::TempDir;

use crate::support::client::{get, request_bytes, ClientError, Conn, PartialBody, Response};
use crate::support::metric;
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{assert_origin_count, get_stored, object_path, pattern_body, source_of, STORED_SOURCES};

/// The answer of a fill the store refused before the head went out.
const UNSTORED: &str = "origin-unstored";

/// A tmpfs of a given size mounted at a fresh temp dir: a real file system that really fills
/// up (ENOSPC). Unmounted lazily (`umount -l`) on drop, so a node still holding files there
/// cannot keep it busy.
struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    /// Mounts it; `None` (the caller skips its test) only when mounting is not permitted
    /// (EPERM: not root). Any other failure fails the test.
    fn mount(size_bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::Builder::new().prefix("edgemirror-full-disk-").tempdir().expect("temp dir");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("path without NUL");
        let data = CString::new(format!("size={size_bytes}")).expect("options");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call; mount(2)
        // reads them and keeps nothing.
        let rc = unsafe { libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, data.as_ptr().cast()) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EPERM) {
                eprintln!("SKIPPED: mounting a tmpfs needs root ({err}); the full-disk test did not run");
                return None;
            }
            panic!("mount tmpfs at {}: {err}", dir.path().display());
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free, as `df` says (statvfs).
    fn free_bytes(&self) -> u64 {
        let path = CString::new(self.path().as_os_str().as_bytes()).expect("path");
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is NUL-terminated and outlives the call; `st` is a writable statvfs,
        // read only after the call succeeded.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        assert_eq!(rc, 0, "statvfs: {}", std::io::Error::last_os_error());
        // SAFETY: statvfs returned 0, so it initialised the struct.
        let st = unsafe { st.assume_init() };
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let target = CString::new(self.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: `target` is NUL-terminated and outlives the call.
        let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            eprintln!("umount -l {}: {}", self.path().display(), std::io::Error::last_os_error());
        }
    }
}

/// Writes `len` bytes to `path` (a ballast that takes space on the small disk).
fn write_ballast(path: &Path, len: usize) {
    let mut f = fs::File::create(path).expect("create ballast");
    f.write_all(&vec![0xa5; len]).expect("write ballast");
    f.sync_all().expect("sync ballast");
}

/// Appends to `path` until the file system is full, and keeps at it until it stays full: a
/// fill that just ended may give back the blocks of the record it abandoned a moment later.
fn fill_to_the_brim(disk: &SmallDisk, path: &Path) {
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).expect("open top-off file");
    let block = vec![0x5a; 4096];
    let mut quiet_rounds = 0;
    while quiet_rounds < 3 {
        let mut wrote = 0;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => wrote += n,
                Err(e) if e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("top-off write: {e}"),
            }
        }
        quiet_rounds = if wrote == 0 { quiet_rounds + 1 } else { 0 };
        thread::sleep(Duration::from_millis(100));
    }
    assert!(disk.free_bytes() < 4096, "the disk is not full: {} bytes free", disk.free_bytes());
}

/// GETs `key`, requiring a 200 with exactly `body`; returns the source.
fn get_whole(node: &Node, key: &str, body: &[u8]) -> String {
    let resp = get(node.data_addr(), &object_path(key), &[]).unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    assert_eq!(resp.status, 200, "GET {key}: {resp:?}");
    assert!(resp.body == body, "GET {key}: the body differs from the origin's ({} bytes) {resp:?}", body.len());
    source_of(&resp).to_string()
}

fn content_md5(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes))
}

/// A node mirroring `example-bucket` to `<origin>/dir1/`, with its store at `store_dir`.
fn node_on(origin: &Origin, store_dir: &Path) -> Node {
    NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_store_dir(store_dir)
        // No foyer disk tier on the small disk: the store is what fills it.
        .with_disk_bytes(0)
        .with_line("store", "segment_bytes = 4194304")
        // The real disk decides, not the store's watermark.
        .with_line("store", "min_free_bytes = 0")
        .start()
}

#[test]
fn a_full_disk_keeps_answering_and_stores_again_when_space_returns() {
    const OBJECT: usize = 1 << 20;
    let Some(disk) = SmallDisk::mount(16 << 20) else { return };
    let ballast = disk.path().join("ballast");
    write_ballast(&ballast, 6 << 20);
    let store_dir: PathBuf = disk.path().join("store");
    let origin = Origin::start();
    let mut node = node_on(&origin, &store_dir);

    // Mirror distinct 1 MiB objects until the store takes no more, and a few beyond.
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused = 0;
    let mut refused_sources = Vec::new();
    for i in 0..40u8 {
        let key = format!("obj{i}");
        let body = pattern_body(OBJECT, i);
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
        let first = get_whole(&node, &key, &body);
        // Stored or not, the second GET tells.
        let second = get_whole(&node, &key, &body);
        if STORED_SOURCES.contains(&second.as_str()) {
            assert_eq!(first, "origin", "{key}: a stored object was mirrored, not refused");
            assert_eq!(refused, 0, "{key} was stored after an earlier object found the disk full");
            assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
            stored.push((key, body));
        } else {
            // Not stored: fetched again, whole again. A refusal at the start says so; one that
            // came mid-body (the disk filled under the fill) could only say `origin`.
            assert!(["origin", UNSTORED].contains(&first.as_str()), "{key}: first answer from {first}");
            assert!(["origin", UNSTORED].contains(&second.as_str()), "{key}: second answer from {second}");
            assert_origin_count(&origin, &format!("/dir1/{key}"), 2);
            refused_sources.push((first, second));
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert!(!stored.is_empty(), "nothing was stored on a 10 MiB store");
    assert_eq!(refused, 3, "the 16 MiB disk never filled up");
    eprintln!(
        "full disk: {} objects of 1 MiB stored, then answered (first GET, second GET) from {refused_sources:?}",
        stored.len()
    );

    // Not a byte left: the store refuses at the start, and the answers say so.
    let brim = disk.path().join("brim");
    fill_to_the_brim(&disk, &brim);
    let refused_before = metric(&node, "edgemirror_fills_unstored_total");
    for i in 0..3u8 {
        let key = format!("brim{i}");
        let body = pattern_body(OBJECT, 100 + i);
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
        assert_eq!(get_whole(&node, &key, &body), UNSTORED, "{key} on a disk with no room");
        assert_eq!(get_whole(&node, &key, &body), UNSTORED, "{key} again: not stored, fetched again");
        assert_origin_count(&origin, &format!("/dir1/{key}"), 2);
    }
    assert!(metric(&node, "edgemirror_fills_unstored_total") >= refused_before + 6);
    assert!(metric(&node, "edgemirror_store_write_failures_total") > 0, "the disk refused writes");
    assert!(node.stderr().contains("served from the origin without being stored"), "the refusal is logged");

    // Everything committed before the disk filled is still whole (and was never fetched again).
    for (key, body) in &stored {
        let source = get_whole(&node, key, body);
        assert!(STORED_SOURCES.contains(&source.as_str()), "{key} answered from {source}");
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }

    // Space comes back: the next object is stored, without a restart.
    fs::remove_file(&ballast).expect("remove ballast");
    let key = "after-space";
    let body = pattern_body(OBJECT, 200);
    origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
    assert_eq!(get_whole(&node, key, &body), "origin");
    get_stored(node.data_addr(), &object_path(key), &body);
    assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    stored.push((key.to_string(), body));

    // Nothing committed is lost across a clean restart, nor across SIGKILL.
    node.restart();
    for (key, body) in &stored {
        assert_eq!(get_whole(&node, key, body), "store", "{key} after a restart");
    }
    node.kill9();
    node.restart();
    for (key, body) in &stored {
        let source = get_whole(&node, key, body);
        assert!(STORED_SOURCES.contains(&source.as_str()), "{key} after SIGKILL answered from {source}");
        assert_origin_count(&origin, &format!("/dir1/{key}"), 1);
    }
    drop(node);
}

/// A node whose store takes objects of at most 100 000 bytes.
fn node_with_small_objects(origin: &Origin) -> Node {
    NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("store", "max_object_bytes = 100000")
        .start()
}

#[test]
fn an_object_the_store_refuses_is_still_coalesced_and_fetched_again_next_time() {
    const CLIENTS: usize = 4;
    let origin = Origin::start();
    let node = node_with_small_objects(&origin);
    let addr = node.data_addr();
    let body = Arc::new(pattern_body(1 << 20, 30));
    // Slow on purpose: the clients all arrive while the origin still holds its head back.
    origin.set(
        "/dir1/big.bin",
        Reply::ok(body.to_vec())
            .with_head_delay(Duration::from_millis(300))
            .with_paced(64 * 1024, Duration::from_millis(10)),
    );
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut conn = Conn::new(addr);
                barrier.wait();
                conn.request(&request_bytes("GET", addr, &object_path("big.bin"), &[]))
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let resp: Response = client.join().expect("client thread").unwrap_or_else(|e| panic!("client {i}: {e:?}"));
        assert_eq!(resp.status, 200, "client {i}: {resp:?}");
        assert!(resp.body == *body, "client {i}: body differs");
        assert_eq!(source_of(&resp), UNSTORED, "client {i}");
        assert_eq!(resp.header("etag"), None, "a streamed answer has no ETag");
    }
    assert_origin_count(&origin, "/dir1/big.bin", 1);

    // Not stored: the next GET fetches again.
    origin.set("/dir1/big.bin", Reply::ok(body.to_vec()));
    assert_eq!(get_whole(&node, "big.bin", &body), UNSTORED);
    assert_origin_count(&origin, "/dir1/big.bin", 2);

    // A client arriving mid-transfer still gets the whole body from the same fetch.
    origin.set("/dir1/late.bin", Reply::ok(body.to_vec()).with_pieces(&[128 * 1024], Duration::from_millis(1000)));
    let mut first = Conn::new(addr);
    first.send(&request_bytes("GET", addr, &object_path("late.bin"), &[])).expect("send");
    let head = first.read_head(false).expect("first head");
    assert_eq!(head.header("x-edgemirror-source"), Some(UNSTORED));
    let mut first_body = PartialBody::new(&head);
    first.read_body_at_least(&mut first_body, 64 * 1024).expect("first bytes");
    assert!(first_body.bytes().len() < body.len(), "the whole body arrived before the origin's pause");
    assert_eq!(get_whole(&node, "late.bin", &body), UNSTORED, "late joiner");
    first.read_body_to_end(&mut first_body).expect("rest of the first body");
    assert!(first_body.bytes() == body.as_slice());
    assert_origin_count(&origin, "/dir1/late.bin", 1);

    // Ranges: one range from the bytes as they come; several: the whole object (nothing to
    // answer multipart from).
    origin.set("/dir1/ranged.bin", Reply::ok(body.to_vec()));
    let resp = get(addr, &object_path("ranged.bin"), &[("Range", "bytes=1000-1999")]).expect("range GET");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert!(resp.body == body[1000..2000]);
    assert_eq!(resp.header("content-range"), Some("bytes 1000-1999/1048576"));
    let resp = get(addr, &object_path("ranged.bin"), &[("Range", "bytes=0-9,100-109")]).expect("multi-range GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == *body);

    // A chunked origin has no length to refuse up front: the store refuses at the append that
    // passes the limit, mid-body, and the client still gets the whole object. Its head says
    // `origin` if it went out before the refusal, `origin-unstored` if the fill got there first
    // (the legacy driver may read the whole body before the follower runs).
    origin.set("/dir1/chunked.bin", Reply::chunked(body.to_vec(), &[16 * 1024; 64]));
    for _ in 0..2 {
        let source = get_whole(&node, "chunked.bin", &body);
        assert!(["origin", UNSTORED].contains(&source.as_str()), "chunked.bin from {source}");
    }
    assert_origin_count(&origin, "/dir1/chunked.bin", 2);

    // Objects that fit are stored as always.
    let small = pattern_body(50_000, 31);
    origin.set("/dir1/small.bin", Reply::ok(small.clone()));
    assert_eq!(get_whole(&node, "small.bin", &small), "origin");
    get_stored(addr, &object_path("small.bin"), &small);
    assert_origin_count(&origin, "/dir1/small.bin", 1);

    // big.bin twice, late.bin, ranged.bin (its second GET may join the first's fill), chunked.bin
    // twice.
    assert!(metric(&node, "edgemirror_fills_unstored_total") >= 6);
    assert_eq!(metric(&node, "edgemirror_fill_store_failures_total"), 0, "no fill was cut");
}

#[test]
fn a_truncated_or_corrupt_origin_body_of_an_unstored_fill_cuts_the_client() {
    let origin = Origin::start();
    let node = node_with_small_objects(&origin);
    let addr = node.data_addr();
    let body = pattern_body(1 << 20, 40);

    // Announces 1 MiB, sends 100 000 bytes, pauses (the head and those bytes reach the client),
    // sends up to 300 000, closes.
    origin.set(
        "/dir1/torn.bin",
        Reply::truncated(body.clone(), 300_000).with_pieces(&[100_000], Duration::from_millis(300)),
    );
    match get(addr, &object_path("torn.bin"), &[]) {
        Err(ClientError::IncompleteBody { head, received_bytes }) => {
            assert_eq!(head.status, 200, "{head:?}");
            assert_eq!(head.header("x-edgemirror-source"), Some(UNSTORED));
            assert!(received_bytes <= 300_000, "{received_bytes} bytes, more than the origin sent");
        }
        other => panic!("expected a cut body, got {other:?}"),
    }

    // A wrong Content-MD5: every byte arrives but the last, then the connection is cut.
    origin.set(
        "/dir1/md5.bin",
        Reply::ok(body.clone())
            .with_header("Content-MD5", &content_md5(b"another body"))
            .with_pieces(&[100_000], Duration::from_millis(300)),
    );
    match get(addr, &object_path("md5.bin"), &[]) {
        Err(ClientError::IncompleteBody { head, received_bytes }) => {
            assert_eq!(head.status, 200, "{head:?}");
            assert!(received_bytes < body.len(), "the unverified last byte went out");
        }
        other => panic!("expected a cut body, got {other:?}"),
    }
    // With the right digest the same object arrives whole (and is still not stored).
    origin.set("/dir1/md5.bin", Reply::ok(body.clone()).with_header("Content-MD5", &content_md5(&body)));
    assert_eq!(get_whole(&node, "md5.bin", &body), UNSTORED);
    assert_origin_count(&origin, "/dir1/md5.bin", 2);
}

/// The full disk again, filled by S3 uploads rather than mirror fills: an upload the disk cannot
/// take is 507 `InsufficientStorage` and leaves nothing behind (no half object, and an
/// overwrite that fails keeps the old one); every upload answered 200 before stays whole; the
/// node takes uploads again once space returns, without a restart; a restart and a SIGKILL lose
/// nothing committed.
#[test]
fn uploads_that_find_the_disk_full_are_refused_whole_and_lose_nothing() {
    use crate::s3::{put, s3_toml, send, signed, SECRET};
    use crate::support::{assert_s3_error, BUCKET};
    const OBJECT: usize = 1 << 20;
    let Some(disk) = SmallDisk::mount(16 << 20) else { return };
    let ballast = disk.path().join("ballast");
    write_ballast(&ballast, 6 << 20);
    let mut node = NodeBuilder::new()
        .bucket(BUCKET)
        .with_extra_toml(&s3_toml())
        .with_store_dir(&disk.path().join("store"))
        .with_disk_bytes(0)
        .with_line("store", "segment_bytes = 4194304")
        .with_line("store", "min_free_bytes = 0")
        .with_line("store", "compaction_interval_ms = 200")
        .start();
    let read = |node: &Node, key: &str| get(node.data_addr(), &object_path(key), &[]).expect("GET");

    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    let mut refused = Vec::new();
    for i in 0..40u8 {
        let key = format!("up{i}");
        let body = pattern_body(OBJECT, i);
        let resp = put(&node, &key, &body, &[]);
        if resp.status == 200 {
            assert!(refused.is_empty(), "{key} was taken after an earlier upload found the disk full");
            stored.push((key, body));
            continue;
        }
        assert_s3_error(&resp, 507, Some("InsufficientStorage"));
        // Nothing of the refused upload is visible.
        assert_s3_error(&read(&node, &key), 404, Some("NoSuchKey"));
        refused.push(key);
        if refused.len() == 3 {
            break;
        }
    }
    assert!(!stored.is_empty(), "nothing was stored on a 10 MiB store");
    assert_eq!(refused.len(), 3, "the 16 MiB disk never filled up");
    eprintln!("full disk through uploads: {} objects of 1 MiB stored before the first 507", stored.len());

    // Not a byte left: an overwrite is refused and the object keeps its old body.
    fill_to_the_brim(&disk, &disk.path().join("brim"));
    let first_key = &stored[0].0;
    assert_s3_error(&put(&node, first_key, &pattern_body(OBJECT, 250), &[]), 507, Some("InsufficientStorage"));
    assert_s3_error(&put(&node, "small", b"tiny", &[]), 507, Some("InsufficientStorage"));
    for (key, body) in &stored {
        let resp = read(&node, key);
        assert_eq!(resp.status, 200, "{key}: {resp:?}");
        assert!(resp.body == *body, "{key}: the body changed on a full disk");
    }
    // Deletes still land on a disk with no free block: the first one that finds ENOSPC releases
    // the store's ballast and tries again.
    let host = node.data_addr().to_string();
    for _ in 0..2 {
        let (key, _) = stored.pop().expect("an object");
        let deleted = send(&node, &signed("DELETE", &host, &format!("/{BUCKET}/{key}"), b"", &[], SECRET));
        assert_eq!(deleted.status, 204, "DELETE {key} on a full disk: {deleted:?}");
        assert_s3_error(&read(&node, &key), 404, Some("NoSuchKey"));
    }
    assert!(node.stderr().contains("ballast released"), "the release is logged");
    assert!(!node.store_dir().join("BALLAST").exists());
    assert_eq!(metric(&node, "edgemirror_store_ballast_bytes"), 0, "the release shows in the metrics");
    assert!(metric(&node, "edgemirror_store_write_failures_total") > 0, "the disk refused writes");

    // Space comes back: uploads are taken again without a restart, and compaction writes the
    // store's ballast again.
    fs::remove_file(&ballast).expect("remove ballast");
    fs::remove_file(disk.path().join("brim")).expect("remove top-off file");
    for key in &refused {
        let body = pattern_body(OBJECT, 150);
        assert_eq!(put(&node, key, &body, &[]).status, 200, "{key} once space returned");
        stored.push((key.clone(), body));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&node, "edgemirror_store_ballast_bytes") == 0 {
        assert!(std::time::Instant::now() < deadline, "the ballast was not written again");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(fs::metadata(node.store_dir().join("BALLAST")).expect("ballast").len(), 4 << 20);

    node.restart();
    for (key, body) in &stored {
        let resp = read(&node, key);
        assert!(resp.status == 200 && resp.body == *body, "{key} after a restart: {resp:?}");
    }
    node.kill9();
    node.restart();
    for (key, body) in &stored {
        let resp = read(&node, key);
        assert!(resp.status == 200 && resp.body == *body, "{key} after SIGKILL: {resp:?}");
    }
}
