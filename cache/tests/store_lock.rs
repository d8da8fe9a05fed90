//! One store directory, one owner.
//!
//! The story: two node processes were started on one `store.dir` (a copied unit file that kept
//! the path). The second one's start-up recovery saw the first one's in-progress solo segment,
//! a file with nothing committed yet, took it for an abandoned fill and deleted it; and both
//! processes handed out the same segment ids. `Store::open` now takes an exclusive flock on
//! `store.dir/LOCK` before it touches anything, and refuses the directory while another store
//! holds it. flock is per open file description, so a second open in the same process is
//! refused too: that is how this test stands in for the second process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, Error, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig { lanes: 2, ..StoreConfig::new(dir) }
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn put(store: &Arc<Store>, key: &str, data: &Bytes) {
    let meta = RecordMeta::new(SystemTime::now());
    let mut w =
        store.begin(0, ObjectKeyRef::new("b", key), meta, Some(data.len() as u64), CommitRule::LastWins).unwrap();
    w.append(data).unwrap();
    w.commit().unwrap();
}

fn get(store: &Store, key: &str) -> Option<Bytes> {
    store.get(ObjectKeyRef::new("b", key)).unwrap().map(|o| o.body)
}

/// Every segment file with its length.
fn segment_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            (path, len)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn second_open_of_a_store_dir_is_refused_and_the_first_store_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let lock = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
    assert_eq!(lock.trim(), std::process::id().to_string(), "the holder's pid is in the LOCK file");

    put(&store, "committed", &body(5000, 1));
    // An unknown-length body past the in-memory buffer: a solo segment with nothing committed
    // yet, which is exactly what recovery deletes.
    let spilled = body(3 << 20, 2);
    let mut w = store
        .begin(0, ObjectKeyRef::new("b", "in-progress"), RecordMeta::new(SystemTime::now()), None, CommitRule::LastWins)
        .unwrap();
    w.append(&spilled.slice(..2 << 20)).unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);

    let err = Store::open(config(dir.path())).expect_err("a second open of a held store.dir must fail");
    match &err {
        Error::Locked { dir: locked, pid } => {
            assert_eq!(locked, dir.path());
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("is in use by another edgemirror process"), "{msg}");
    assert!(msg.contains(&format!("(pid {})", std::process::id())), "{msg}");

    assert_eq!(segment_files(dir.path()), files, "the refused open deleted or changed nothing");
    assert_eq!(get(&store, "committed").unwrap(), body(5000, 1));
    w.append(&spilled.slice(2 << 20..)).unwrap();
    w.commit().expect("the first store's in-progress record still commits");
    assert_eq!(get(&store, "in-progress").unwrap(), spilled);
    put(&store, "after", &body(100, 3));

    drop(store);
    let (store, report) = Store::open(config(dir.path())).expect("dropping the store released the lock");
    assert_eq!(report.objects, 3);
    assert_eq!(get(&store, "committed").unwrap(), body(5000, 1));
    assert_eq!(get(&store, "in-progress").unwrap(), spilled);
    assert_eq!(get(&store, "after").unwrap(), body(100, 3));
}
