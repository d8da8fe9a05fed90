//! Crash consistency of the segment store.
//!
//! The promise: after a crash at any moment, an object is either visible whole (and its body
//! passes its checksum) or not visible at all, and no committed object is lost. A killed process
//! leaves a prefix of what it wrote (the page cache keeps every completed write), so the tests
//! below model a crash as "the file ends at byte N" for every N, and as "the writer vanished
//! mid-object" for each way an object is written.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgemirror_cache::{
    CommitRule, ObjectKeyRef, RecordMeta, RecordWriter, SavedHeader, Store, StoreConfig, SyncPolicy,
};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig { lanes: 2, ..StoreConfig::new(dir) }
}

fn open(dir: &Path) -> Arc<Store> {
    Store::open(config(dir)).expect("open store").0
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn put(store: &Arc<Store>, key: &str, data: &Bytes, announce: bool) {
    let mut meta = RecordMeta::new(SystemTime::now());
    meta.headers.push((SavedHeader::ContentType, Bytes::from_static(b"text/plain")));
    let len = announce.then_some(data.len() as u64);
    let mut w = store.begin(0, ObjectKeyRef::new("b", key), meta, len, CommitRule::LastWins).unwrap();
    for piece in data.chunks(1000) {
        w.append(&Bytes::copy_from_slice(piece)).unwrap();
    }
    let obj = w.commit().unwrap();
    assert_eq!(obj.body, *data);
}

/// A writer for `key` in bucket "b", on lane 0, last writer wins.
fn writer(store: &Arc<Store>, key: &str, len: Option<u64>) -> RecordWriter {
    store.begin(0, ObjectKeyRef::new("b", key), RecordMeta::new(SystemTime::now()), len, CommitRule::LastWins).unwrap()
}

fn get(store: &Store, key: &str) -> Option<Bytes> {
    store.get(ObjectKeyRef::new("b", key)).unwrap().map(|o| o.body)
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn committed_objects_survive_reopen_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let small = body(3000, 1);
    let chunked_small = body(5000, 2);
    let chunked_big = body(3 << 20, 3); // > 1 MiB buffer: spills to a solo segment
    let big = body(3 << 20, 4); // > segment_bytes / 4: solo segment
    put(&store, "small", &small, true);
    put(&store, "chunked-small", &chunked_small, false);
    put(&store, "chunked-big", &chunked_big, false);
    put(&store, "big", &big, true);
    let before = store.get(ObjectKeyRef::new("b", "small")).unwrap().unwrap().meta;
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.object_count(), 4);
    assert_eq!(get(&store, "small").unwrap(), small);
    assert_eq!(get(&store, "chunked-small").unwrap(), chunked_small);
    assert_eq!(get(&store, "chunked-big").unwrap(), chunked_big);
    assert_eq!(get(&store, "big").unwrap(), big);
    let after = store.get(ObjectKeyRef::new("b", "small")).unwrap().unwrap().meta;
    assert_eq!(before, after, "metadata (headers, md5, last-modified) survives");
    assert_eq!(after.record.header(SavedHeader::ContentType).unwrap().as_ref(), b"text/plain");
}

#[test]
fn the_last_commit_wins_and_stays_the_winner_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "k", &body(100, 1), true);
    // Another lane (another core's segment file): the order on disk is not the commit order.
    let mut w = store
        .begin(1, ObjectKeyRef::new("b", "k"), RecordMeta::new(SystemTime::now()), Some(50), CommitRule::LastWins)
        .unwrap();
    w.append(&body(50, 9)).unwrap();
    let winner = w.commit().unwrap();
    assert_eq!(winner.body, body(50, 9), "the later commit is what readers get");
    assert_eq!(get(&store, "k").unwrap(), body(50, 9));
    drop(store);
    assert_eq!(get(&open(dir.path()), "k").unwrap(), body(50, 9));
}

#[test]
fn abandoned_writers_are_invisible_before_and_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "before", &body(2000, 1), true);
    // Known length, half written (origin cut mid-body).
    let mut w = store
        .begin(0, ObjectKeyRef::new("b", "cut"), RecordMeta::new(SystemTime::now()), Some(4000), CommitRule::LastWins)
        .unwrap();
    w.append(&body(2000, 2)).unwrap();
    assert!(w.commit().is_err(), "a short body must not commit");
    // Unknown length spilled to a solo segment, then abandoned.
    let mut w = store
        .begin(0, ObjectKeyRef::new("b", "spill"), RecordMeta::new(SystemTime::now()), None, CommitRule::LastWins)
        .unwrap();
    w.append(&body(3 << 20, 3)).unwrap();
    drop(w);
    put(&store, "after", &body(2000, 4), true);
    assert!(get(&store, "cut").is_none() && get(&store, "spill").is_none());
    assert_eq!(segment_files(dir.path()).len(), 1, "the abandoned solo segment is removed at once");
    drop(store);

    let store = open(dir.path());
    assert!(get(&store, "cut").is_none() && get(&store, "spill").is_none());
    assert_eq!(get(&store, "before").unwrap(), body(2000, 1));
    assert_eq!(get(&store, "after").unwrap(), body(2000, 4));
    assert_eq!(segment_files(dir.path()).len(), 1, "the shared segment is kept");
}

#[test]
fn more_bytes_than_announced_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut w = store
        .begin(0, ObjectKeyRef::new("b", "k"), RecordMeta::new(SystemTime::now()), Some(10), CommitRule::LastWins)
        .unwrap();
    assert!(w.append(&body(11, 0)).is_err());
}

/// A crash leaves each segment file cut at some byte. For every cut of a segment holding three
/// objects, exactly the objects that lie wholly before the cut are visible, with their bodies.
#[test]
fn torn_tail_at_every_byte_exposes_only_whole_objects() {
    let src = tempfile::tempdir().unwrap();
    let store = open(src.path());
    let objects = [("a", body(300, 1)), ("b", body(1, 2)), ("c", body(700, 3))];
    for (k, data) in &objects {
        put(&store, k, data, true);
    }
    drop(store);
    let files = segment_files(src.path());
    assert_eq!(files.len(), 1);
    let full = std::fs::read(&files[0]).unwrap();

    // Where each record ends: found by committing prefixes is circular, so compute from sizes:
    // every record here has the same name/meta lengths, and ends are increasing.
    let mut visible_at_full = 0;
    for cut in 0..=full.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("segments")).unwrap();
        std::fs::write(dir.path().join("segments").join(files[0].file_name().unwrap()), &full[..cut]).unwrap();
        let store = open(dir.path());
        let mut visible = 0;
        for (i, (k, data)) in objects.iter().enumerate() {
            if let Some(b) = get(&store, k) {
                assert_eq!(b, *data, "cut {cut}: object {k} visible with wrong bytes");
                assert_eq!(visible, i, "cut {cut}: {k} visible although an earlier object is not");
                visible += 1;
            }
        }
        if cut == full.len() {
            visible_at_full = visible;
        }
    }
    assert_eq!(visible_at_full, 3);
}

#[test]
fn damaged_body_is_detected_on_first_read_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "k", &body(5000, 7), true);
    drop(store);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();

    let store = open(dir.path());
    assert!(store.get(ObjectKeyRef::new("b", "k")).is_err(), "crc mismatch is reported");
    assert!(get(&store, "k").is_none(), "and the object is gone, so the node can fetch it again");
}

#[test]
fn garbage_between_records_is_skipped_by_resynchronising() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "a", &body(100, 1), true);
    put(&store, "b", &body(100, 2), true);
    drop(store);
    let file = &segment_files(dir.path())[0];
    let mut bytes = std::fs::read(file).unwrap();
    // Smash the first record's header magic: "a" is lost, "b" must still be found.
    bytes[64] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
    let store = open(dir.path());
    assert!(get(&store, "a").is_none());
    assert_eq!(get(&store, "b").unwrap(), body(100, 2));
}

#[test]
fn interval_sync_policy_runs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.sync = SyncPolicy::Interval(Duration::from_millis(10));
    let (store, _) = Store::open(cfg).unwrap();
    put(&store, "k", &body(10, 1), true);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(&store, "k").unwrap(), body(10, 1));
}

/// Readers following a record while it is written see exactly the bytes written so far, in every
/// placement (reserved, buffered unknown-length, spilled unknown-length, solo).
#[test]
fn fill_reader_follows_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (name, len, announce) in [
        ("reserved", 200_000, true),
        ("solo", 3 << 20, true),
        ("buffered", 300_000, false),
        ("spilled", 3 << 20, false),
    ] {
        let data = body(len, 5);
        let mut w = store
            .begin(
                0,
                ObjectKeyRef::new("b", name),
                RecordMeta::new(SystemTime::now()),
                announce.then_some(len as u64),
                CommitRule::LastWins,
            )
            .unwrap();
        let reader = w.reader();
        assert!(reader.read(0, 10).unwrap().is_none(), "{name}: nothing before the first append");
        let mut seen = Vec::new();
        for piece in data.chunks(64 * 1024) {
            w.append(&Bytes::copy_from_slice(piece)).unwrap();
            // Read everything newly written, in small reads.
            while let Some(b) = reader.read(seen.len() as u64, 10_000).unwrap() {
                seen.extend_from_slice(&b);
            }
            assert_eq!(seen.len() as u64, reader.written());
        }
        assert_eq!(seen, data, "{name}: reader saw the body");
        w.commit().unwrap();
    }
}

#[test]
fn md5_mismatch_refuses_commit() {
    use md5::{Digest, Md5};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = body(1000, 1);
    let mut w = writer(&store, "bad", Some(1000));
    w.expect_md5([0; 16]);
    w.append(&data).unwrap();
    assert!(w.commit().is_err());
    assert!(get(&store, "bad").is_none());
    let mut w = writer(&store, "good", Some(1000));
    w.expect_md5(Md5::digest(&data).into());
    w.append(&data).unwrap();
    w.commit().unwrap();
}

/// A writer whose MD5 is computed elsewhere commits only with that digest, and the digest is
/// still checked against the origin's Content-MD5.
#[test]
fn deferred_md5_commit() {
    use md5::{Digest, Md5};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = body(70_000, 3);
    let digest: [u8; 16] = Md5::digest(&data).into();
    let begin = |k: &str| writer(&store, k, Some(70_000));

    let mut w = begin("no-digest");
    w.defer_md5();
    w.append(&data).unwrap();
    assert!(w.commit().is_err(), "commit() without the deferred digest must fail");

    let mut w = begin("checked");
    w.defer_md5();
    w.expect_md5([9; 16]);
    w.append(&data).unwrap();
    assert!(w.commit_with_md5(digest).is_err(), "Content-MD5 is still enforced");

    let mut w = begin("ok");
    w.defer_md5();
    w.append(&data).unwrap();
    let obj = w.commit_with_md5(digest).unwrap();
    assert_eq!(obj.meta.md5, digest);
    drop(store);
    let store = open(dir.path());
    assert_eq!(get(&store, "ok").unwrap(), data);
    assert!(get(&store, "no-digest").is_none() && get(&store, "checked").is_none());
}

/// A writer whose MD5 and body CRC-32C are both computed elsewhere (a fill's hasher) commits
/// only with both, and the CRC it is given is the one its body is checked against after a
/// restart: the right one reads back, a wrong one is caught at the first read.
#[test]
fn deferred_digests_commit() {
    use md5::{Digest, Md5};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let data = body(300_000, 5);
    let md5: [u8; 16] = Md5::digest(&data).into();
    let crc = edgemirror_cache::crc::crc32c(&data);
    let begin = |k: &str| {
        let mut w = writer(&store, k, None);
        w.defer_digests();
        for piece in data.chunks(65_537) {
            w.append(&Bytes::copy_from_slice(piece)).unwrap();
        }
        w
    };

    assert!(begin("md5-only").commit_with_md5(md5).is_err(), "the CRC was deferred too");
    assert!(begin("none").commit().is_err());
    let mut plain = writer(&store, "plain", None);
    plain.append(&data).unwrap();
    assert!(plain.commit_with_digests(md5, crc).is_err(), "digests given to a writer that takes its own");

    let mut checked = begin("checked");
    checked.expect_md5([9; 16]);
    assert!(checked.commit_with_digests(md5, crc).is_err(), "Content-MD5 is still enforced");

    assert_eq!(begin("ok").commit_with_digests(md5, crc).unwrap().meta.md5, md5);
    begin("wrong-crc").commit_with_digests(md5, crc ^ 1).unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(get(&store, "ok").unwrap(), data);
    for gone in ["md5-only", "none", "plain", "checked"] {
        assert!(get(&store, gone).is_none(), "{gone}");
    }
    let wrong = store.get(ObjectKeyRef::new("b", "wrong-crc"));
    assert!(!matches!(wrong, Ok(Some(_))), "a body that does not match its CRC is never served");
    assert!(get(&store, "wrong-crc").is_none(), "and it leaves the index");
}
