//! `disk_bytes` is what the segment files hold.
//!
//! The story: a 5 GB fill failed midway and the next request fetched it again. The node then
//! reported 10 GB of segment files where `ls -l` summed to 5.1 GB. `disk_bytes` counted each
//! known-length record in full when its space was reserved, not when it was written, and nothing
//! gave the abandoned reservation back; its solo segment file even stayed on disk until the next
//! start. Bytes are now counted as they are written, and an abandoned solo segment is removed
//! at once. The metric is the sum of the files' lengths (`st_size`).

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        // Records above a quarter of this (2 MiB) get a solo segment.
        segment_bytes: 8 << 20,
        ..StoreConfig::new(dir)
    }
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn begin(store: &Arc<Store>, key: &str, len: Option<u64>) -> edgemirror_cache::RecordWriter {
    store.begin(0, ObjectKeyRef::new("b", key), RecordMeta::new(SystemTime::now()), len, CommitRule::LastWins).unwrap()
}

/// Sum of `st_size` over the segment files, and how many there are.
fn files_on_disk(dir: &Path) -> (u64, usize) {
    let mut sum = 0;
    let mut n = 0;
    for e in std::fs::read_dir(dir.join("segments")).unwrap() {
        sum += e.unwrap().metadata().unwrap().len();
        n += 1;
    }
    (sum, n)
}

#[test]
fn abandoned_then_retried_big_fill_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let big = body(6 << 20, 1);

    // A small object in a shared segment.
    let mut w = begin(&store, "small", Some(1000));
    w.append(&body(1000, 2)).unwrap();
    w.commit().unwrap();

    // The big fill fails after 1 MiB: its solo segment is abandoned. A client was following it.
    let mut w = begin(&store, "big", Some(big.len() as u64));
    w.append(&big.slice(..1 << 20)).unwrap();
    let follower = w.reader();
    drop(w);
    let (on_disk, files) = files_on_disk(dir.path());
    assert_eq!(files, 1, "the abandoned solo segment is removed at once");
    assert!(
        store.disk_bytes() > on_disk && store.disk_bytes() < on_disk + (1 << 20) + 4096,
        "an unlinked segment a reader still holds keeps its written bytes (and only those) counted: \
         {} vs {on_disk} in files",
        store.disk_bytes()
    );
    drop(follower);
    assert_eq!(store.disk_bytes(), on_disk, "the last handle gone, its bytes are gone");

    // An unknown-length body that spilled to a solo segment, then was abandoned.
    let mut w = begin(&store, "spilled", None);
    w.append(&body(3 << 20, 3)).unwrap();
    drop(w);

    // The retry succeeds.
    let mut w = begin(&store, "big", Some(big.len() as u64));
    for piece in big.chunks(1 << 20) {
        w.append(&Bytes::copy_from_slice(piece)).unwrap();
    }
    w.commit().unwrap();

    let (on_disk, files) = files_on_disk(dir.path());
    assert_eq!(files, 2, "the shared segment and the committed solo segment");
    assert!(on_disk > big.len() as u64);
    assert_eq!(store.disk_bytes(), on_disk, "disk_bytes is the files' total length");
    assert_eq!(store.write_failures(), 0);

    drop(store);
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert_eq!(store.disk_bytes(), files_on_disk(dir.path()).0, "and the same after a restart");
}
