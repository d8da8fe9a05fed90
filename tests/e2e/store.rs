//! Life of an object once mirrored: it is served from the node (memory, disk cache or store)
//! and never refreshed from the origin, over HEAD, keep-alive and pipelined connections, and
//! across graceful restarts and SIGKILL.
//!
//! The crash tests tell one story each:
//! - `kill9_after_a_mirror_completes_keeps_the_object`: the node reported the object stored;
//!   SIGKILL gives it no chance to flush; after restart the object must still be there.
//! - `kill9_mid_transfer_leaves_no_torn_object`: the node dies while the origin is still
//!   streaming a 4 MiB object; part of it is already in a segment file. After restart that
//!   partial record must not exist: with the origin gone the answer is 424, never a short 200.

use std::time::Duration;

use crate::support::client::{get, head, request_bytes, ClientError, Conn, PartialBody};
use crate::support::origin::Reply;
use crate::support::{
    assert_origin_count, assert_s3_error, expected_etag, get_stored, get_until_source, object_path, origin_and_node,
    pattern_body, source_of,
};

/// Sources that prove an answer came from persistent state after a restart (the memory tier
/// starts empty).
const PERSISTENT_SOURCES: &[&str] = &["store", "disk-cache"];

#[test]
fn stored_object_is_never_refreshed() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let first_body = pattern_body(20_000, 10);
    origin.set("/dir1/fixed.bin", Reply::ok(first_body.clone()));
    let path = object_path("fixed.bin");
    assert_eq!(get(addr, &path, &[]).expect("GET").status, 200);
    get_stored(addr, &path, &first_body);

    // Seed: a changed origin file does not update the stored one.
    origin.set("/dir1/fixed.bin", Reply::ok(pattern_body(30_000, 11)));
    let resp = get(addr, &path, &[]).expect("GET after origin change");
    assert_eq!(resp.status, 200);
    assert!(resp.body == first_body, "served the origin's new body: {resp:?}");

    origin.stop();
    let resp = get(addr, &path, &[]).expect("GET after origin stop");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == first_body);
    assert_origin_count(&origin, "/dir1/fixed.bin", 1);
}

#[test]
fn head_of_a_stored_key_has_length_and_no_body() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body = pattern_body(12_345, 12);
    origin.set("/dir1/h.bin", Reply::ok(body.clone()).with_header("Content-Type", "text/plain"));
    let path = object_path("h.bin");
    get(addr, &path, &[]).expect("mirror GET");
    let stored = get_stored(addr, &path, &body);

    let resp = head(addr, &path, &[]).expect("HEAD");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-length"), Some("12345"));
    assert_eq!(resp.header("etag"), Some(expected_etag(&body).as_str()));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("last-modified"), stored.header("last-modified"));

    // On one connection: HEAD then GET. If the HEAD leaked body bytes, the GET's head would be
    // parsed from them and fail.
    let mut conn = Conn::new(addr);
    let h = conn.request(&request_bytes("HEAD", addr, &path, &[])).expect("HEAD");
    assert_eq!(h.status, 200);
    let g = conn.request(&request_bytes("GET", addr, &path, &[])).expect("GET after HEAD");
    assert_eq!(g.status, 200);
    assert!(g.body == body);
    assert_origin_count(&origin, "/dir1/h.bin", 1);
}

#[test]
fn keep_alive_connection_serves_a_mirror_then_hits() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let body_a = pattern_body(9_000, 13);
    let body_b = pattern_body(3_000, 14);
    origin.set("/dir1/a", Reply::ok(body_a.clone()));
    origin.set("/dir1/b", Reply::chunked(body_b.clone(), &[1000]));

    // Miss (length-framed), miss (chunked), then a hit, all on one connection: each response
    // must be framed exactly, or the next one is misread.
    let mut conn = Conn::new(addr);
    for (key, body) in [("a", &body_a), ("b", &body_b), ("a", &body_a)] {
        let resp = conn
            .request(&request_bytes("GET", addr, &object_path(key), &[]))
            .unwrap_or_else(|e| panic!("GET {key} on the kept-alive connection: {e:?}"));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.body == *body, "GET {key}: {resp:?}");
    }
    assert!(conn.buffered().is_empty(), "stray bytes after three responses");
    assert_origin_count(&origin, "/dir1/a", 1);
}

#[test]
fn pipelined_gets_are_answered_in_order() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let stored_body = pattern_body(4_000, 15);
    origin.set("/dir1/stored", Reply::ok(stored_body.clone()));
    get(addr, &object_path("stored"), &[]).expect("mirror GET");
    get_stored(addr, &object_path("stored"), &stored_body);

    // First a slow miss, then a hit that could be answered at once: order must still hold
    // (RFC 9112 §9.3.2).
    let slow_body = pattern_body(2_000, 16);
    origin.set("/dir1/slow", Reply::ok(slow_body.clone()).with_head_delay(Duration::from_millis(300)));
    let mut raw = request_bytes("GET", addr, &object_path("slow"), &[]);
    raw.extend(request_bytes("GET", addr, &object_path("stored"), &[]));
    let mut conn = Conn::new(addr);
    conn.send(&raw).expect("send two pipelined requests in one write");

    let first = conn.read_response().expect("first pipelined response");
    let second = conn.read_response().expect("second pipelined response");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.body == slow_body, "responses out of order: {first:?}");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(second.body == stored_body, "responses out of order: {second:?}");
}

#[test]
fn restart_serves_objects_from_the_store() {
    let (origin, mut node) = origin_and_node();
    // Sizes cover the empty object, tiny ones, and one bigger than a typical cache block.
    let objects: Vec<(String, Vec<u8>)> = [0usize, 1, 1_000, 100_000, 1_500_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("persist/{i}.bin"), pattern_body(len, 20 + i as u8)))
        .collect();
    for (key, body) in &objects {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()).with_header("Content-Type", "application/x-test"));
        let resp = get(node.data_addr(), &object_path(key), &[]).expect("mirror GET");
        assert_eq!(resp.status, 200, "{resp:?}");
        get_stored(node.data_addr(), &object_path(key), body);
    }
    let count_before = origin.requests().len();

    node.restart();

    for (key, body) in &objects {
        let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET after restart");
        assert_eq!(resp.status, 200, "{key}: {resp:?}");
        assert!(resp.body == *body, "{key}: body differs after restart: {resp:?}");
        let source = source_of(&resp);
        assert!(PERSISTENT_SOURCES.contains(&source), "{key}: source {source:?} after restart");
        assert_eq!(resp.header("etag"), Some(expected_etag(body).as_str()), "{key}");
        assert_eq!(resp.header("content-type"), Some("application/x-test"), "{key}");
        assert_eq!(resp.header("content-length"), Some(body.len().to_string().as_str()));
    }
    assert_eq!(origin.requests().len(), count_before, "restart sent GETs to the origin");
}

/// Many fills at once (their bodies' MD5 and the record's CRC-32C taken by the hasher, on the
/// worker's lanes while enough arrive together and on the MD5 thread otherwise; the unit tests
/// in `hash.rs` cover each way): every record reads back after a restart, where each body is
/// checked against its CRC on its first read. A wrong CRC would drop the object, and the GET
/// would go back to the origin.
#[test]
fn concurrent_mirrors_read_back_after_restart() {
    let (origin, mut node) = origin_and_node();
    let objects: Vec<(String, Vec<u8>)> =
        (0..24usize).map(|i| (format!("many/{i}.bin"), pattern_body(150_000 + i * 7_919, 60 + i as u8))).collect();
    for (key, body) in &objects {
        // Every fill's head waits, so their bodies arrive together.
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()).with_head_delay(Duration::from_millis(200)));
    }
    let addr = node.data_addr();
    std::thread::scope(|scope| {
        for (key, body) in &objects {
            scope.spawn(move || {
                let resp = get(addr, &object_path(key), &[]).expect("mirror GET");
                assert_eq!(resp.status, 200, "{key}: {resp:?}");
                assert!(resp.body == *body, "{key}: body differs");
            });
        }
    });
    for (key, body) in &objects {
        get_stored(addr, &object_path(key), body);
    }
    let count_before = origin.requests().len();

    node.restart();

    for (key, body) in &objects {
        let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET after restart");
        assert_eq!(resp.status, 200, "{key}: {resp:?}");
        assert!(resp.body == *body, "{key}: body differs after restart");
        assert!(PERSISTENT_SOURCES.contains(&source_of(&resp)), "{key}: source {:?}", source_of(&resp));
        assert_eq!(resp.header("etag"), Some(expected_etag(body).as_str()), "{key}");
    }
    assert_eq!(origin.requests().len(), count_before, "a record did not read back: its GET went to the origin");
}

#[test]
fn kill9_after_a_mirror_completes_keeps_the_object() {
    let (origin, mut node) = origin_and_node();
    let body = pattern_body(300_000, 30);
    origin.set("/dir1/durable.bin", Reply::ok(body.clone()));
    let path = object_path("durable.bin");
    let resp = get(node.data_addr(), &path, &[]).expect("mirror GET");
    assert_eq!(resp.status, 200, "{resp:?}");
    // Kill as soon as the node says the object is stored: from then on it must survive a crash.
    get_stored(node.data_addr(), &path, &body);
    node.kill9();
    // With the origin gone, only the store can answer.
    origin.stop();
    node.restart();

    let resp = get(node.data_addr(), &path, &[]).expect("GET after kill -9");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body == body, "body differs after kill -9: {resp:?}");
    let source = source_of(&resp);
    assert!(PERSISTENT_SOURCES.contains(&source), "source {source:?} after kill -9");
    assert_eq!(resp.header("etag"), Some(expected_etag(&body).as_str()));
}

#[test]
fn kill9_mid_transfer_leaves_no_torn_object() {
    let (origin, mut node) = origin_and_node();
    // 4 MiB in 64 KiB pieces, 50 ms apart: about 3.2 s of transfer, long enough to die in.
    let body = pattern_body(4 << 20, 31);
    origin.set("/dir1/big.bin", Reply::ok(body.clone()).with_paced(64 * 1024, Duration::from_millis(50)));
    let path = object_path("big.bin");
    let addr = node.data_addr();

    let mut conn = Conn::new(addr);
    conn.send(&request_bytes("GET", addr, &path, &[])).expect("send");
    let head = conn.read_head(false).expect("response head");
    assert_eq!(head.status, 200, "{head:?}");
    let mut partial = PartialBody::new(&head);
    // A quarter of the object has reached the client, so the node has been writing it.
    conn.read_body_at_least(&mut partial, 1 << 20).expect("first MiB");
    assert!(partial.bytes().len() < body.len(), "the transfer finished before the kill");

    node.kill9();
    match conn.read_body_to_end(&mut partial) {
        Err(ClientError::IncompleteBody { .. }) => {}
        Ok(()) => panic!("a complete body arrived from a killed node"),
        Err(other) => panic!("expected a cut connection, got {other:?}"),
    }

    origin.stop();
    node.restart();
    // The torn record must not be visible: no origin to refill from, so MirrorFailed. Several
    // tries, because a torn object could also show up later (e.g. from a cache tier).
    for attempt in 0..3 {
        match get(node.data_addr(), &path, &[]) {
            Ok(resp) => {
                assert_ne!(resp.status, 200, "attempt {attempt}: torn object served: {resp:?}");
                assert_s3_error(&resp, 424, Some("MirrorFailed"));
            }
            Err(e) => panic!("attempt {attempt}: GET after restart failed: {e:?}"),
        }
    }
    let resp = head_after_restart(&node, &path);
    assert_ne!(resp, 200, "HEAD of the torn object answered 200");
}

/// Status of a HEAD for `path`, for the torn-object test: any non-200 is acceptable (HEAD of an
/// absent key may or may not trigger the mirror), only a 200 would mean the torn record exists.
fn head_after_restart(node: &crate::support::node::Node, path: &str) -> u16 {
    head(node.data_addr(), path, &[]).map(|r| r.status).unwrap_or_else(|e| panic!("HEAD after restart failed: {e:?}"))
}

/// A hit on stored bytes that are not in memory (the page cache dropped them) is read with an
/// asynchronous read of the segment file before it is served (`store.cold_reads = "async"`,
/// the default), so the worker's core is not stalled on page faults; with `"fault"` the
/// mapping's faults read them. Both serve the same bytes, whole, ranged and to a HEAD.
#[test]
fn cold_stored_bytes_are_read_ahead_asynchronously_and_served_whole() {
    for mode in ["async", "fault"] {
        let origin = crate::support::origin::Origin::start();
        let mut node = crate::support::node::NodeBuilder::new()
            .mirror(&format!("{}/dir1/", origin.url()), "")
            // No foyer disk tier: after the restart every hit is a store hit.
            .with_disk_bytes(0)
            .with_line("store", &format!("cold_reads = \"{mode}\""))
            .start();
        // Bodies beyond a page (a cold read of the body) and beyond the 1 MiB read ahead (its
        // rest comes through the mapping).
        let objects: Vec<(String, Vec<u8>)> = [200_000usize, 3_000_000]
            .iter()
            .enumerate()
            .map(|(i, &len)| (format!("cold/{i}.bin"), pattern_body(len, 40 + i as u8)))
            .collect();
        for (key, body) in &objects {
            origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
            get_stored(node.data_addr(), &object_path(key), body);
        }
        node.restart();
        // Recovery read the records' heads; their bodies it never touched. Dropped from the
        // page cache, they are on disk only.
        evict_segments(&node);
        for (key, body) in &objects {
            let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET");
            assert_eq!(resp.status, 200, "{mode} {key}: {resp:?}");
            assert!(resp.body == *body, "{mode} {key}: body differs");
            assert_eq!(source_of(&resp), "store", "{mode} {key}");
        }
        let cold_reads = || crate::support::metric(&node, "edgemirror_store_cold_reads_total");
        let cold_bytes = || crate::support::metric(&node, "edgemirror_store_cold_read_bytes_total");
        // One read per object: the whole small record; the big one's head, first MiB and
        // trailer. (The rest of the big body this first read after a restart found in memory:
        // the body's CRC check, on a store-verify thread, read it.)
        let expected = if mode == "async" { 2 } else { 0 };
        assert_eq!(cold_reads(), expected, "{mode}: reads after the restart");
        // Cold again and checked: its head and first MiB in one read, then each later window of
        // 1 MiB its send finds cold (two), read and sent from the buffer.
        evict_segments(&node);
        let (key, body) = &objects[1];
        let bytes_before = cold_bytes();
        let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET");
        assert!(resp.status == 200 && resp.body == *body, "{mode}: {resp:?}");
        if mode == "async" {
            assert_eq!(cold_reads(), expected + 3, "{mode}: reads of the big body");
            assert!(cold_bytes() - bytes_before >= 3_000_000, "every body byte read with io_uring");
        } else {
            assert_eq!((cold_reads(), cold_bytes()), (0, 0), "{mode}");
        }
        evict_segments(&node);
        for (key, body) in &objects {
            let path = object_path(key);
            let resp = get(node.data_addr(), &path, &[("Range", "bytes=150000-150099")]).expect("range GET");
            assert_eq!(resp.status, 206, "{mode} {key}: {resp:?}");
            assert!(resp.body == body[150_000..150_100], "{mode} {key}: range differs");
            let resp = head(node.data_addr(), &path, &[]).expect("HEAD");
            assert_eq!(resp.status, 200, "{mode} {key}: {resp:?}");
            assert_eq!(resp.header("content-length"), Some(body.len().to_string().as_str()), "{mode} {key}");
        }
        // A range of more than a window, cold: sent window by window from where it starts.
        evict_segments(&node);
        let (key, body) = &objects[1];
        let resp = get(node.data_addr(), &object_path(key), &[("Range", "bytes=500000-2999999")]).expect("range GET");
        assert_eq!(resp.status, 206, "{mode}: {resp:?}");
        assert!(resp.body == body[500_000..], "{mode}: big range differs");
    }
}

/// Drops the pages of the node's segment files from memory: first out of the node's own mappings
/// (`process_madvise(MADV_PAGEOUT)`, which reclaims clean file pages even while mapped), then
/// out of the page cache (`posix_fadvise(DONTNEED)`).
fn evict_segments(node: &crate::support::node::Node) {
    use std::os::fd::AsRawFd;
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", node.pid())).expect("node's maps");
    let ranges: Vec<libc::iovec> = maps
        .lines()
        .filter(|l| l.ends_with(".seg"))
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            Some(libc::iovec { iov_base: start as *mut libc::c_void, iov_len: end - start })
        })
        .collect();
    // SAFETY: pidfd_open and process_madvise read no memory of ours but `ranges` (valid for the
    // call; they describe the node's address space, not ours); the pidfd is closed after.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, node.pid() as libc::pid_t, 0) as libc::c_int;
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        for range in &ranges {
            let rc = libc::syscall(
                libc::SYS_process_madvise,
                pidfd,
                range as *const libc::iovec,
                1usize,
                libc::MADV_PAGEOUT,
                0u32,
            );
            assert!(rc >= 0, "process_madvise: {}", std::io::Error::last_os_error());
        }
        libc::close(pidfd);
    }
    for entry in std::fs::read_dir(node.store_dir().join("segments")).expect("segments dir") {
        let file = std::fs::File::open(entry.expect("entry").path()).expect("open segment");
        file.sync_all().expect("fsync segment");
        // SAFETY: a valid descriptor for the call's duration; fadvise changes no memory of ours.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
}

/// Store hits of 32-128 KiB over plain HTTP go out with `sendfile` from the segment file (the
/// page cache is their memory tier: they are not copied into the RAM tier), whole and ranged;
/// bodies outside that range, and parts of them, go out as before. The counter of bytes sent
/// with `sendfile` tells which path each answer took.
#[test]
fn store_hits_of_32_to_128_kib_go_out_with_sendfile_whole_and_ranged() {
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    let sent_from_file = || crate::support::metric(&node, "edgemirror_sendfile_bytes_total");
    // (length, whether in the range)
    let sizes =
        [(20_000, false), (32 * 1024, true), (65_536, true), (100_001, true), (128 * 1024, true), (200_000, false)];
    for (i, &(len, _)) in sizes.iter().enumerate() {
        origin.set(&format!("/dir1/sf/{i}.bin"), Reply::ok(pattern_body(len, 60 + i as u8)));
        get_stored(addr, &object_path(&format!("sf/{i}.bin")), &pattern_body(len, 60 + i as u8));
    }
    for (i, &(len, in_range)) in sizes.iter().enumerate() {
        let (path, body) = (object_path(&format!("sf/{i}.bin")), pattern_body(len, 60 + i as u8));
        for round in 0..2 {
            let before = sent_from_file();
            let resp = get(addr, &path, &[]).expect("GET");
            assert_eq!(resp.status, 200, "{len}: {resp:?}");
            assert!(resp.body == body, "{len}: body differs");
            assert_eq!(resp.header("etag"), Some(expected_etag(&body).as_str()), "{len}");
            let by_file = sent_from_file() - before;
            assert_eq!(by_file, if in_range { len as u64 } else { 0 }, "{len}, GET {round}: bytes sent with sendfile");
            if in_range {
                // Not copied into the RAM tier by the GET before.
                assert_eq!(source_of(&resp), "store", "{len}, GET {round}");
            }
        }
    }
    // A range of 40 KiB of a 100,001-byte object: sent from the file, from its offset.
    let body = pattern_body(100_001, 63);
    let path = object_path("sf/3.bin");
    let before = sent_from_file();
    let resp = get(addr, &path, &[("Range", "bytes=50000-90959")]).expect("range GET");
    assert_eq!(resp.status, 206, "{resp:?}");
    assert!(resp.body == body[50_000..90_960], "range differs");
    assert_eq!(sent_from_file() - before, 40_960);
    // Ranges of 32 KiB from 69 starts 61 bytes apart, over more than a page, on one keep-alive
    // connection: `sendfile` starts at the first page boundary in each, the bytes before it go
    // out with the head. A byte too many or too few would break the next response.
    let mut by_file = 0;
    let mut conn = Conn::new(addr);
    for start in (50_000..).step_by(61).take(69) {
        let range = format!("bytes={start}-{}", start + 32_767);
        let resp = conn.request(&request_bytes("GET", addr, &path, &[("Range", &range)])).expect("range GET");
        assert_eq!(resp.status, 206, "{start}: {resp:?}");
        assert!(resp.body == body[start..start + 32_768], "bytes {start}-: range differs");
        by_file += 32_768;
    }
    drop(conn);
    assert_eq!(sent_from_file() - before, 40_960 + by_file, "counted whole, as bytes of sendfile hits");
    let before = before + by_file;
    // A small range of it: one write with its head, as before.
    let resp = get(addr, &path, &[("Range", "bytes=-1000")]).expect("suffix range GET");
    assert!(resp.status == 206 && resp.body == body[99_001..], "{resp:?}");
    assert_eq!(sent_from_file() - before, 40_960, "a 1,000-byte range is not sent with sendfile");
    // HEAD and a conditional GET send no body.
    let resp = head(addr, &path, &[]).expect("HEAD");
    assert_eq!(resp.header("content-length"), Some("100001"));
    let etag = expected_etag(&body);
    let resp = get(addr, &path, &[("If-None-Match", etag.as_str())]).expect("conditional GET");
    assert_eq!(resp.status, 304, "{resp:?}");
    assert_eq!(sent_from_file() - before, 40_960);
    // Dropped from the page cache: the GET reads the record with io_uring into a buffer and
    // sends it from there (`sendfile` would wait on the disk); the next finds the file's pages
    // in memory again and uses `sendfile`.
    evict_segments(&node);
    let resp = get(addr, &path, &[]).expect("cold GET");
    assert!(resp.status == 200 && resp.body == body, "{resp:?}");
    assert_eq!(sent_from_file() - before, 40_960, "a cold read's buffer goes out as it is");
    let resp = get(addr, &path, &[]).expect("GET");
    assert!(resp.status == 200 && resp.body == body, "{resp:?}");
    assert_eq!(sent_from_file() - before, 40_960 + 100_001);
}

/// `cache.sendfile = false` (nginx's `sendfile off`): 32-128 KiB store hits are copied like
/// the others, whole and ranged, and such an object is then cached in RAM like any other.
#[test]
fn with_sendfile_off_store_hits_are_copied_and_cached_in_ram() {
    let origin = crate::support::origin::Origin::start();
    let node = crate::support::node::NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_line("cache", "sendfile = false")
        .start();
    let addr = node.data_addr();
    let body = pattern_body(65_536, 91);
    origin.set("/dir1/off/64k.bin", Reply::ok(body.clone()));
    let path = object_path("off/64k.bin");
    get_stored(addr, &path, &body);
    let resp = get(addr, &path, &[("Range", "bytes=1000-40999")]).expect("range GET");
    assert!(resp.status == 206 && resp.body == body[1000..41_000], "{resp:?}");
    // The second store hit copies it into the RAM tier (the doorkeeper admits it), as for an
    // object outside the sendfile range.
    let resp = get_until_source(addr, &path, &body, &["memory"]);
    assert_eq!(source_of(&resp), "memory");
    assert_eq!(crate::support::metric(&node, "edgemirror_sendfile_bytes_total"), 0, "nothing went out with sendfile");
    assert_origin_count(&origin, "/dir1/off/64k.bin", 1);
}

/// A client that pipelines many requests and then reads slowly, through a small receive buffer,
/// keeps the node's socket full while it sends: `sendfile` must wait for room (the socket is
/// non-blocking for it) and go on from where it stopped, and the io_uring writes of a big body
/// on the same connection afterwards must still wait for the socket rather than fail. Every body
/// arrives whole, in order.
#[test]
fn a_slow_reader_gets_sendfile_and_copied_bodies_whole_on_one_connection() {
    use std::io::Write as _;
    let (origin, node) = origin_and_node();
    let addr = node.data_addr();
    // 200,000 bytes: a store hit sent with the head in one io_uring vectored write (WRITEV),
    // which older kernels end with EAGAIN on a non-blocking socket; 3,000,000: windows of
    // plain io_uring writes.
    let objects: Vec<(String, Vec<u8>)> = [128 * 1024, 3_000_000, 65_536, 200_000, 40_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| (format!("slow/{i}.bin"), pattern_body(len, 80 + i as u8)))
        .collect();
    for (key, body) in &objects {
        origin.set(&format!("/dir1/{key}"), Reply::ok(body.clone()));
        get_stored(addr, &object_path(key), body);
    }
    let before = crate::support::metric(&node, "edgemirror_sendfile_bytes_total");

    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    socket.connect_timeout(&addr.into(), Duration::from_secs(5)).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    // The 128 KiB object 64 times first: 8 MiB of `sendfile`, more than the node's socket
    // buffer holds while nothing is read (at most 4 MiB here, net.ipv4.tcp_wmem); then each
    // object in turn, twice.
    let order: Vec<&(String, Vec<u8>)> =
        std::iter::repeat_n(&objects[0], 64).chain(objects.iter()).chain(objects.iter()).collect();
    let mut pipelined = Vec::new();
    for (key, _) in &order {
        pipelined.extend_from_slice(&request_bytes("GET", addr, &object_path(key), &[]));
    }
    stream.write_all(&pipelined).expect("send the requests");
    // Nothing is read for a while: the node's sends fill both socket buffers and wait.
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = Conn::from_stream(stream).expect("conn");
    for (round, (key, body)) in order.iter().enumerate() {
        {
            let resp_head = conn.read_head(false).unwrap_or_else(|e| panic!("{key}, response {round}: {e:?}"));
            assert_eq!(resp_head.status, 200, "{key}, response {round}: {resp_head:?}");
            let mut part = PartialBody::new(&resp_head);
            // Small reads with pauses, so the node finds the socket full again and again.
            while !part.is_done() {
                let want = part.bytes().len() + 16 * 1024;
                conn.read_body_at_least(&mut part, want.min(body.len())).expect("body");
                if part.bytes().len() < 256 * 1024 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            assert!(part.bytes() == &body[..], "{key}, response {round}: body differs");
        }
    }
    let by_file = crate::support::metric(&node, "edgemirror_sendfile_bytes_total") - before;
    assert_eq!(by_file, 66 * 128 * 1024 + 2 * (65_536 + 40_000), "the bodies in range went out with sendfile");
}
