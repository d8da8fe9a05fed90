//! Storage faults at every step: a full disk, I/O errors and short writes at any write of a fill,
//! a commit, a delete or a compaction, and a power loss that keeps only synced bytes.
//!
//! The promise under test: a failed operation has no effect, a successful one survives, and
//! nothing torn is ever visible. The main test replays one workload (puts, an overwrite, a
//! delete, a compaction) once for every write it makes, failing that write and every later one,
//! then simulates a power loss and reopens the store: what it holds must be exactly the result
//! of the operations that reported success (redb's crash-test style).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use edgemirror_cache::segment::faults::{self, Faults};
use edgemirror_cache::{CommitRule, CompactionConfig, Error, ObjectKeyRef, RecordMeta, Store, StoreConfig, SyncPolicy};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_bytes: 1 << 20,
        // Every success is synced, so a simulated power loss may take only what failed.
        sync: SyncPolicy::Always,
        compaction: CompactionConfig { interval: Duration::ZERO, min_dead_ratio: 0.3, bytes_per_sec: 1 << 30 },
        ..StoreConfig::new(dir)
    }
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn key(k: &str) -> ObjectKeyRef<'_> {
    ObjectKeyRef::new("b", k)
}

fn put(store: &Arc<Store>, k: &str, data: &Bytes, announce: bool) -> Result<(), Error> {
    let len = announce.then_some(data.len() as u64);
    let mut w = store.begin(0, key(k), RecordMeta::new(SystemTime::now()), len, CommitRule::LastWins)?;
    for piece in data.chunks(40_000) {
        w.append(&Bytes::copy_from_slice(piece))?;
    }
    w.commit().map(|_| ())
}

#[derive(Clone, Debug)]
enum Op {
    Put(&'static str, Bytes, bool),
    Delete(&'static str),
    Compact,
}

fn workload() -> Vec<Op> {
    vec![
        Op::Put("a", body(100_000, 1), true),
        Op::Put("b", body(300_000, 2), true), // a segment of its own (over a quarter segment)
        Op::Put("c", body(150_000, 3), false), // unknown length, buffered then placed
        Op::Put("a", body(90_000, 4), true),  // overwrite
        Op::Delete("b"),
        Op::Put("d", body(500_000, 5), false), // unknown length, spilled to its own segment
        Op::Put("e", body(200_000, 6), true),
        Op::Delete("c"),
        Op::Compact,
        Op::Put("f", body(10_000, 7), true),
    ]
}

/// Runs the workload; returns what the store must hold afterwards (the successful operations
/// applied in order) and how many operations failed.
fn run(store: &Arc<Store>, ops: &[Op]) -> (BTreeMap<&'static str, Bytes>, usize) {
    let mut expected = BTreeMap::new();
    let mut failed = 0;
    for op in ops {
        match op {
            Op::Put(k, data, announce) => match put(store, k, data, *announce) {
                Ok(()) => {
                    expected.insert(*k, data.clone());
                }
                Err(_) => failed += 1,
            },
            Op::Delete(k) => match store.delete(0, key(k)) {
                Ok(_) => {
                    expected.remove(k);
                }
                Err(_) => failed += 1,
            },
            // A failed compaction must change nothing a reader sees.
            Op::Compact => failed += store.compact().is_err() as usize,
        }
    }
    (expected, failed)
}

fn check(store: &Store, expected: &BTreeMap<&'static str, Bytes>, context: &str) {
    for k in ["a", "b", "c", "d", "e", "f"] {
        let got = store.get(key(k)).unwrap_or_else(|e| panic!("{context}: {k}: {e}")).map(|o| o.body);
        let want = expected.get(k);
        assert!(
            got.as_ref() == want,
            "{context}: {k}: got {:?} bytes, want {:?}",
            got.map(|b| b.len()),
            want.map(|b| b.len())
        );
    }
}

fn writes_of_the_workload() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(Faults::default());
    faults::install(dir.path(), plan.clone());
    let store = Store::open(config(dir.path())).unwrap().0;
    let (expected, failed) = run(&store, &workload());
    assert_eq!(failed, 0);
    check(&store, &expected, "no faults");
    plan.writes()
}

#[test]
fn every_write_failing_in_turn_then_a_power_loss_keeps_exactly_the_successes() {
    let total = writes_of_the_workload();
    assert!(total > 30, "the workload makes {total} writes");
    for (errno, short) in [(libc::EIO, None), (libc::ENOSPC, None), (libc::EIO, Some(5usize))] {
        for n in 0..=total {
            let dir = tempfile::tempdir().unwrap();
            let plan = Arc::new(Faults::default());
            faults::install(dir.path(), plan.clone());
            match short {
                Some(landed) => plan.short_write_after(n, landed, errno),
                None => plan.fail_writes_after(n, errno),
            }
            let context = format!("errno {errno}, short {short:?}, failing from write {n}");
            let store = Store::open(config(dir.path())).unwrap().0;
            let (expected, _) = run(&store, &workload());
            // While it runs, the store answers for what succeeded.
            check(&store, &expected, &format!("{context}, before the crash"));
            drop(store);
            plan.heal();
            plan.crash().unwrap();
            let store = Store::open(config(dir.path())).unwrap_or_else(|e| panic!("{context}: reopen: {e}")).0;
            check(&store, &expected, &format!("{context}, after a power loss"));
            // And it works again: new writes, a compaction, another reopen.
            put(&store, "g", &body(50_000, 9), true).unwrap();
            store.compact().unwrap();
            drop(store);
            let store = Store::open(config(dir.path())).unwrap().0;
            check(&store, &expected, &format!("{context}, after healing"));
            assert!(store.get(key("g")).unwrap().is_some());
        }
    }
}

#[test]
fn a_full_disk_is_no_space_and_the_store_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Arc::new(Faults::default());
    faults::install(dir.path(), plan.clone());
    let store = Store::open(config(dir.path())).unwrap().0;
    put(&store, "kept", &body(100_000, 1), true).unwrap();
    plan.fail_writes_after(2, libc::ENOSPC);
    let err = put(&store, "big", &body(400_000, 2), true).unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    let err = store.delete(0, key("kept")).unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    assert!(store.get(key("kept")).unwrap().is_some(), "a failed delete deleted nothing");
    assert!(store.get(key("big")).unwrap().is_none());
    assert!(store.write_failures() > 0);
    plan.heal();
    put(&store, "big", &body(400_000, 2), true).unwrap();
    store.delete(0, key("kept")).unwrap();
    drop(store);
    let store = Store::open(config(dir.path())).unwrap().0;
    assert!(store.get(key("kept")).unwrap().is_none());
    assert_eq!(store.get(key("big")).unwrap().unwrap().body, body(400_000, 2));
}
