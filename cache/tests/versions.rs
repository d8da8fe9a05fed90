//! Versions of a key: overwrites, deletes and conditional commits, before and after a restart.
//!
//! The story these tests tell: an operator purges a key while a mirror fill of it is running, a
//! client PUTs over a key a fill is fetching, the process is killed between any two writes.
//! Every commit (object or tombstone) takes the next number of one store-wide sequence, written
//! in its trailer; the highest number is the key's version. So a committed delete never comes
//! back, a fill that began before a PUT or a delete never replaces it, and what recovery rebuilds
//! is exactly what readers saw.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, Error, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn open(dir: &Path) -> Arc<Store> {
    let config = StoreConfig { lanes: 2, ..StoreConfig::new(dir) };
    Store::open(config).expect("open store").0
}

fn key(k: &str) -> ObjectKeyRef<'_> {
    ObjectKeyRef::new("b", k)
}

fn body(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(17).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

fn write(store: &Arc<Store>, k: &str, data: &Bytes, rule: CommitRule) -> Result<Bytes, Error> {
    let mut w = store.begin(0, key(k), RecordMeta::new(SystemTime::now()), Some(data.len() as u64), rule)?;
    w.append(data)?;
    w.commit().map(|o| o.body)
}

fn put(store: &Arc<Store>, k: &str, data: &Bytes) {
    assert_eq!(write(store, k, data, CommitRule::LastWins).unwrap(), *data);
}

fn get(store: &Store, k: &str) -> Option<Bytes> {
    store.get(key(k)).unwrap().map(|o| o.body)
}

#[test]
fn a_committed_delete_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "gone", &body(5000, 1));
    put(&store, "kept", &body(300, 2));
    let deleted = store.delete(0, key("gone")).unwrap().expect("it held an object");
    assert_eq!(deleted, 5000);
    assert_eq!(get(&store, "gone"), None);
    assert_eq!(store.delete(0, key("never-there")).unwrap(), None);
    drop(store);
    let store = open(dir.path());
    assert_eq!(get(&store, "gone"), None, "the delete survives a restart");
    assert_eq!(get(&store, "kept"), Some(body(300, 2)));
    // Written again after the delete: the new version wins, now and after a restart.
    put(&store, "gone", &body(10, 3));
    drop(store);
    assert_eq!(get(&open(dir.path()), "gone"), Some(body(10, 3)));
}

#[test]
fn a_delete_cut_before_its_trailer_did_not_happen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "k", &body(2000, 4));
    store.delete(0, key("k")).unwrap();
    drop(store);
    // A kill between the tombstone's header and the end of its trailer: the file ends early.
    // The tombstone is the last record written to lane 0's segment.
    let seg = std::fs::read_dir(dir.path().join("segments")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    for cut in [1, 8, 39] {
        let copy = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(copy.path().join("segments")).unwrap();
        let target = copy.path().join("segments").join(seg.file_name().unwrap());
        let bytes = std::fs::read(&seg).unwrap();
        std::fs::write(&target, &bytes[..(len - cut) as usize]).unwrap();
        let store = open(copy.path());
        assert_eq!(get(&store, "k"), Some(body(2000, 4)), "cut {cut} bytes before the end: the delete never committed");
    }
    assert_eq!(get(&open(dir.path()), "k"), None, "the whole file: deleted");
}

#[test]
fn a_fill_pinned_before_a_put_never_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The fill decides on its miss (pin), then the origin is slow; meanwhile a PUT commits.
    let pin = store.pin_version();
    put(&store, "k", &body(100, 5));
    let fill = write(&store, "k", &body(100, 6), CommitRule::IfUnchangedSince(pin));
    assert!(matches!(fill, Err(Error::Superseded)), "{fill:?}");
    assert_eq!(get(&store, "k"), Some(body(100, 5)));
    drop(store);
    assert_eq!(get(&open(dir.path()), "k"), Some(body(100, 5)), "the fill's record never became valid");
}

#[test]
fn a_fill_pinned_before_a_delete_does_not_store_what_it_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "present", &body(100, 7));
    let pin_present = store.pin_version();
    let pin_absent = store.pin_version();
    // A purge of a key being re-fetched, and of a key being fetched for the first time.
    store.delete(0, key("present")).unwrap();
    assert!(store.delete(0, key("absent")).unwrap().is_none());
    assert!(store.remembered_tombstones() >= 2, "pinned writers need them");
    let refetch = write(&store, "present", &body(100, 8), CommitRule::IfUnchangedSince(pin_present));
    assert!(matches!(refetch, Err(Error::Superseded)), "{refetch:?}");
    let first = write(&store, "absent", &body(100, 9), CommitRule::IfUnchangedSince(pin_absent));
    assert!(matches!(first, Err(Error::Superseded)), "{first:?}");
    assert_eq!(get(&store, "present"), None);
    assert_eq!(get(&store, "absent"), None);
    assert_eq!(store.remembered_tombstones(), 0, "no pin left: nothing needs remembering");
    drop(store);
    let store = open(dir.path());
    assert_eq!(get(&store, "present"), None);
    assert_eq!(get(&store, "absent"), None);
}

#[test]
fn a_fill_pinned_after_the_last_change_replaces_the_old_version() {
    // A forced re-fetch: the old copy is served until the new one commits, then replaced.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "k", &body(100, 10));
    let pin = store.pin_version();
    assert_eq!(get(&store, "k"), Some(body(100, 10)), "the old copy is served meanwhile");
    assert_eq!(write(&store, "k", &body(70, 11), CommitRule::IfUnchangedSince(pin)).unwrap(), body(70, 11));
    assert_eq!(get(&store, "k"), Some(body(70, 11)));
    drop(store);
    assert_eq!(get(&open(dir.path()), "k"), Some(body(70, 11)));
}

#[test]
fn versions_are_numbered_on_and_cached_copies_can_tell_they_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    put(&store, "k", &body(10, 12));
    let v1 = store.version(key("k")).unwrap();
    put(&store, "k", &body(10, 13));
    let v2 = store.version(key("k")).unwrap();
    assert!(v2 > v1);
    store.delete(1, key("k")).unwrap();
    assert_eq!(store.version(key("k")), None);
    drop(store);
    let store = open(dir.path());
    put(&store, "k", &body(10, 14));
    assert!(store.version(key("k")).unwrap() > v2, "the sequence continues past what recovery found");
}

#[test]
fn keys_with_a_prefix_are_listed_for_a_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for k in ["img/a", "img/b", "img2/c", "doc/d"] {
        put(&store, k, &body(10, 1));
    }
    let mut keys: Vec<String> = store.keys_with_prefix("b", "img/").into_iter().map(|k| k.key.to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["img/a", "img/b"]);
    assert!(store.keys_with_prefix("other", "").is_empty());
    assert_eq!(store.keys_with_prefix("b", "").len(), 4);
}

/// A restart rebuilds exactly what readers saw, after a history of overwrites and deletes spread
/// over many segment files (small ones, so recovery's threads share them) and solo segments, in
/// buckets and keys that are prefixes of one another (recovery sorts by bucket, then key).
#[test]
fn a_restart_rebuilds_the_state_readers_saw_after_many_overwrites_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let config = || StoreConfig { lanes: 2, segment_bytes: 64 << 10, ..StoreConfig::new(dir.path()) };
    let buckets = ["a", "ab", "abc", "b"];
    let mut model: std::collections::BTreeMap<(&str, String), Bytes> = Default::default();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for round in 0..3 {
        let store = Store::open(config()).unwrap().0;
        check_same(&store, &model, &buckets, &format!("after restart {round}"));
        for step in 0..2_000usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bucket = buckets[(x % 4) as usize];
            let k = format!("{}{}", if (x >> 8) & 1 == 0 { "k" } else { "kk" }, (x >> 16) % 200);
            let at = ObjectKeyRef::new(bucket, &k);
            if (x >> 40).is_multiple_of(4) {
                let deleted = store.delete(step % 2, at).unwrap();
                assert_eq!(deleted.is_some(), model.remove(&(bucket, k.clone())).is_some(), "delete {bucket}/{k}");
            } else {
                // Now and then bigger than a quarter segment: a solo segment of its own.
                let size = if (x >> 50).is_multiple_of(16) { 20_000 } else { ((x >> 20) % 3_000) as usize };
                let data = body(size, (x >> 32) as u8);
                let mut w = store
                    .begin(step % 2, at, RecordMeta::new(SystemTime::now()), Some(size as u64), CommitRule::LastWins)
                    .unwrap();
                w.append(&data).unwrap();
                w.commit().unwrap();
                model.insert((bucket, k), data);
            }
        }
        check_same(&store, &model, &buckets, &format!("before restart {}", round + 1));
    }
    let segments = std::fs::read_dir(dir.path().join("segments")).map(|d| d.count()).unwrap_or(0);
    assert!(segments > 20, "the history spans many segment files: {segments}");
}

fn check_same(store: &Store, model: &std::collections::BTreeMap<(&str, String), Bytes>, buckets: &[&str], when: &str) {
    for bucket in buckets {
        let listed: Vec<String> = store.list_all(bucket, "").iter().map(|m| m.key.to_string()).collect();
        let want: Vec<String> = model.keys().filter(|(b, _)| b == bucket).map(|(_, k)| k.clone()).collect();
        assert_eq!(listed, want, "{when}: keys of bucket {bucket}");
    }
    for ((bucket, k), data) in model {
        let got = store.get(ObjectKeyRef::new(bucket, k)).unwrap().map(|o| o.body);
        assert_eq!(got.as_ref(), Some(data), "{when}: {bucket}/{k}");
    }
}
