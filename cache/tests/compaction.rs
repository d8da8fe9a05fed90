//! Compaction and capacity: disk use follows live bytes, and nothing live is ever lost.
//!
//! The story: a store churns (objects overwritten, deleted, fills abandoned) far past what it
//! holds; compaction rewrites the mostly-dead segments, keeping exactly the current versions and
//! the tombstones older records still need, and a crash at any step (modelled here by the old
//! file coming back next to its copy) changes nothing a reader sees. `store.max_bytes` refuses
//! what would not fit, until compaction makes room.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, CompactionConfig, Error, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn config(dir: &Path, max_bytes: u64) -> StoreConfig {
    StoreConfig {
        // 1 MiB segments: records over 256 KiB get their own file.
        segment_bytes: 1 << 20,
        max_bytes,
        // No background thread: the tests call `compact` themselves.
        compaction: CompactionConfig {
            interval: std::time::Duration::ZERO,
            min_dead_ratio: 0.5,
            bytes_per_sec: 1 << 30,
        },
        ..StoreConfig::new(dir)
    }
}

fn open(dir: &Path) -> Arc<Store> {
    Store::open(config(dir, 0)).expect("open store").0
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn put(store: &Arc<Store>, k: &str, data: &Bytes) -> Result<(), Error> {
    let meta = RecordMeta::new(SystemTime::now());
    let mut w = store.begin(0, ObjectKeyRef::new("b", k), meta, Some(data.len() as u64), CommitRule::LastWins)?;
    w.append(data)?;
    w.commit().map(|_| ())
}

fn get(store: &Store, k: &str) -> Option<Bytes> {
    store.get(ObjectKeyRef::new("b", k)).unwrap().map(|o| o.body)
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

#[test]
fn overwritten_and_deleted_objects_are_reclaimed_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Five rounds of 40 objects of 60 KiB: each round overwrites the last, and every fifth key
    // is deleted at the end. About 12 MiB written for 2 MiB live.
    for round in 0..5u8 {
        for i in 0..40 {
            put(&store, &format!("k{i}"), &body(60_000, round * 40 + i as u8)).unwrap();
        }
    }
    for i in (0..40).step_by(5) {
        store.delete(0, ObjectKeyRef::new("b", &format!("k{i}"))).unwrap();
    }
    let before = store.disk_bytes();
    let report = store.compact().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    let after = store.disk_bytes();
    let live = store.live_bytes();
    assert_eq!(after, file_bytes(dir.path()), "disk_bytes is what the files hold");
    assert!(after < before / 2, "compaction reclaimed little: {before} -> {after} (live {live})");
    assert!(after < live * 2 + (2 << 20), "disk {after} should be near live {live}");
    let check = |store: &Store| {
        for i in 0..40 {
            let expected = (i % 5 != 0).then(|| body(60_000, 4 * 40 + i as u8));
            assert!(get(store, &format!("k{i}")) == expected, "k{i}");
        }
    };
    check(&store);
    drop(store);
    check(&open(dir.path()));
}

#[test]
fn a_tombstone_is_kept_while_an_older_record_of_its_key_exists() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // "old" goes into the first segment, with live neighbours that keep that segment from being
    // compacted.
    put(&store, "old", &body(100_000, 1)).unwrap();
    for i in 0..6 {
        put(&store, &format!("neighbour{i}"), &body(100_000, 2)).unwrap();
    }
    // Fill later segments with objects that die, and delete "old" among them.
    for i in 0..30 {
        put(&store, &format!("churn{i}"), &body(100_000, 3)).unwrap();
        if i == 15 {
            store.delete(0, ObjectKeyRef::new("b", "old")).unwrap();
        }
    }
    for i in 0..30 {
        store.delete(0, ObjectKeyRef::new("b", &format!("churn{i}"))).unwrap();
    }
    store.compact().unwrap();
    assert!(get(&store, "old").is_none(), "bodies differ");
    // The segment now holding the needed tombstone is not copied again and again.
    let again = store.compact().unwrap();
    assert_eq!(again.segments_compacted, 0, "{again:?}");
    drop(store);
    let store = open(dir.path());
    assert!(get(&store, "old").is_none(), "the delete came back: a needed tombstone was dropped");
    for i in 0..6 {
        assert!(get(&store, &format!("neighbour{i}")) == Some(body(100_000, 2)), "bodies differ");
    }
}

#[test]
fn a_crash_between_copy_and_unlink_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for round in 0..3u8 {
        for i in 0..20 {
            put(&store, &format!("k{i}"), &body(50_000, round + i as u8)).unwrap();
        }
    }
    // Keep every segment file as it was before compaction.
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    // A reader holding a body from a segment about to be compacted away.
    let held = store.get(ObjectKeyRef::new("b", "k3")).unwrap().unwrap();
    let report = store.compact().unwrap();
    assert!(report.segments_compacted > 0);
    assert!(held.body == body(50_000, 2 + 3), "a slice of an unlinked segment still reads right");
    drop(store);
    // The crash: the old files are back beside their copies (same versions twice).
    for (p, bytes) in &saved {
        if !p.exists() {
            std::fs::write(p, bytes).unwrap();
        }
    }
    let store = open(dir.path());
    for i in 0..20 {
        assert!(get(&store, &format!("k{i}")) == Some(body(50_000, 2 + i as u8)), "k{i}");
    }
    // And the next pass cleans up again.
    store.compact().unwrap();
    for i in 0..20 {
        assert!(get(&store, &format!("k{i}")) == Some(body(50_000, 2 + i as u8)), "k{i}");
    }
}

#[test]
fn a_corrupt_body_met_by_compaction_is_dropped_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "victim", &body(50_000, 9)).unwrap();
    for i in 0..30 {
        put(&store, &format!("dead{i}"), &body(50_000, 1)).unwrap();
    }
    for i in 0..30 {
        store.delete(0, ObjectKeyRef::new("b", &format!("dead{i}"))).unwrap();
    }
    drop(store);
    // Flip a byte of the victim's body on disk (it is early in the first segment).
    let first = std::fs::read_dir(dir.path().join("segments")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.windows(16).position(|w| w == &body(50_000, 9)[1000..1016]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    let store = open(dir.path());
    let report = store.compact().unwrap();
    assert_eq!(report.corrupt_dropped, 1, "{report:?}");
    assert!(store.get(ObjectKeyRef::new("b", "victim")).unwrap().is_none(), "a bad body is never served");
}

#[test]
fn max_bytes_refuses_what_does_not_fit_but_takes_deletes_until_compaction_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path(), 4 << 20)).unwrap().0;
    let mut stored = 0;
    let refused = loop {
        match put(&store, &format!("k{stored}"), &body(100_000, 1)) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "max_bytes never refused");
    };
    assert!(matches!(refused, Error::NoSpace(_)), "{refused:?}");
    assert!(store.disk_bytes() <= 4 << 20, "{}", store.disk_bytes());
    for i in 0..stored {
        assert!(get(&store, &format!("k{i}")) == Some(body(100_000, 1)), "bodies differ");
    }
    // To the brim: empty objects until not even one fits.
    let mut empties = 0;
    while put(&store, &format!("e{empties}"), &Bytes::new()).is_ok() {
        empties += 1;
        assert!(empties < 100_000, "max_bytes never refused an empty object");
    }
    // Deletes still land at the limit (deleting is how room is made), then compaction makes room
    // without a restart.
    for i in 0..stored - 2 {
        store.delete(0, ObjectKeyRef::new("b", &format!("k{i}"))).unwrap();
    }
    store.compact().unwrap();
    put(&store, "after", &body(100_000, 2)).unwrap();
    assert!(get(&store, "after") == Some(body(100_000, 2)), "bodies differ");
}

#[test]
fn cache_mode_buckets_give_up_their_least_recently_read_objects_under_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 4 << 20);
    cfg.evictable_buckets = vec!["cache".into()];
    let store = Store::open(cfg).unwrap().0;
    let put_in = |bucket: &str, k: &str| {
        let data = body(100_000, 7);
        let meta = RecordMeta::new(SystemTime::now());
        let mut w =
            store.begin(0, ObjectKeyRef::new(bucket, k), meta, Some(data.len() as u64), CommitRule::LastWins)?;
        w.append(&data)?;
        w.commit().map(|_| ())
    };
    // A mirror-mode bucket's objects are never evicted.
    for i in 0..5 {
        put_in("mirror", &format!("m{i}")).unwrap();
    }
    // Fill with cache-mode objects until refused, reading "hot" now and then to keep it recent.
    let mut n = 0;
    while put_in("cache", &format!("c{n}")).is_ok() {
        n += 1;
        store.version(ObjectKeyRef::new("cache", "c0"));
        assert!(n < 200, "never refused");
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    store.version(ObjectKeyRef::new("cache", "c0"));
    let report = store.compact().unwrap();
    assert!(report.evicted > 0, "{report:?}");
    eprintln!("report {report:?} disk {} segments {}", store.disk_bytes(), store.segment_count());
    // Down to 80% of max_bytes, give or take the active segment that compaction leaves alone.
    assert!(store.disk_bytes() <= (4 << 20) / 10 * 8 + (1 << 20), "{}", store.disk_bytes());
    assert!(store.disk_bytes() < 4 << 20, "{}", store.disk_bytes());
    for i in 0..5 {
        assert!(store.contains(ObjectKeyRef::new("mirror", &format!("m{i}"))), "mirror-mode m{i} was evicted");
    }
    assert!(store.contains(ObjectKeyRef::new("cache", "c0")), "the most recently read object was evicted");
    // Room again: writes are accepted without a restart.
    put_in("cache", "after").unwrap();
}

/// A lane seals its segment when it rolls to the next, while records reserved in it may still
/// be written (a slow fill, a tombstone before its trailer). Compaction must leave such a segment alone
/// until they are finished: else it drops the unfinished record as dead, unlinks the file, and
/// the record's commit lands in an unlinked file, lost at the next start.
#[test]
fn a_segment_with_a_record_still_being_written_is_not_compacted_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let slow_body = body(100_000, 7);
    let meta = RecordMeta::new(SystemTime::now());
    let mut slow = store
        .begin(0, ObjectKeyRef::new("b", "slow"), meta, Some(slow_body.len() as u64), CommitRule::LastWins)
        .unwrap();
    slow.append(&slow_body.slice(..50_000)).unwrap();
    // Fill the rest of its segment and roll the lane to the next (sealing the first), then make
    // everything committed in the first segment dead.
    for i in 0..20 {
        put(&store, &format!("filler{i}"), &body(60_000, i)).unwrap();
    }
    for i in 0..20 {
        store.delete(0, ObjectKeyRef::new("b", &format!("filler{i}"))).unwrap();
    }
    let first = store.compact().unwrap();
    // The slow record is finished after the pass.
    slow.append(&slow_body.slice(50_000..)).unwrap();
    slow.commit().unwrap();
    assert!(get(&store, "slow") == Some(slow_body.clone()));
    // Once it is finished, its segment may be compacted: the record is copied, not dropped.
    let second = store.compact().unwrap();
    assert!(first.segments_compacted + second.segments_compacted > 0, "{first:?} {second:?}");
    drop(store);
    let store = open(dir.path());
    assert!(get(&store, "slow") == Some(slow_body), "the committed record was lost at the restart");
    for i in 0..20 {
        assert!(get(&store, &format!("filler{i}")).is_none(), "filler{i} came back");
    }
}
