//! Listing: a bucket's keys in byte order from the index, paged, with prefixes and a delimiter,
//! checked against a plain model (sort, filter, roll up) over random key sets, through
//! overwrites, deletes and a restart.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn open(dir: &Path) -> Arc<Store> {
    let config = StoreConfig { lanes: 2, ..StoreConfig::new(dir) };
    Store::open(config).expect("open store").0
}

fn put(store: &Arc<Store>, bucket: &str, key: &str, size: usize) {
    let data = Bytes::from(vec![b'x'; size]);
    let meta = RecordMeta::new(SystemTime::now());
    let mut w = store.begin(0, ObjectKeyRef::new(bucket, key), meta, Some(size as u64), CommitRule::LastWins).unwrap();
    w.append(&data).unwrap();
    w.commit().unwrap();
}

/// One page as S3 would list it from the sorted key set: (keys, prefixes, next_after).
fn model(
    keys: &BTreeSet<String>,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> (Vec<String>, Vec<String>, Option<String>) {
    let (mut objects, mut prefixes, mut entries) = (Vec::new(), Vec::new(), Vec::<String>::new());
    for key in keys.iter().filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a)) {
        let rolled =
            delimiter.and_then(|d| key[prefix.len()..].find(d).map(|i| key[..prefix.len() + i + d.len()].to_string()));
        match rolled {
            // Under the prefix just listed, or the one the previous page ended on.
            Some(p) if entries.last() == Some(&p) || after == Some(p.as_str()) => continue,
            _ if entries.len() == max => return (objects, prefixes, entries.last().cloned().filter(|_| max > 0)),
            Some(p) => {
                prefixes.push(p.clone());
                entries.push(p);
            }
            None => {
                objects.push(key.clone());
                entries.push(key.clone());
            }
        }
    }
    (objects, prefixes, None)
}

fn list(
    store: &Store,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<&str>,
    max: usize,
) -> (Vec<String>, Vec<String>, Option<String>) {
    let page = store.list("b", prefix, delimiter, after, max);
    (page.objects.iter().map(|m| m.key.to_string()).collect(), page.prefixes, page.next_after)
}

/// A small deterministic generator (xorshift), so a failure replays.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn pages_match_the_model_for_random_keys_prefixes_and_delimiters() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut next = rng(7);
    let parts = ["a", "b", "photos", "2026", "x y", "é", "a.b", "z"];
    let mut keys = BTreeSet::new();
    for _ in 0..1500 {
        let depth = 1 + next() as usize % 4;
        let key: Vec<&str> = (0..depth).map(|_| parts[next() as usize % parts.len()]).collect();
        let key = format!("{}{}", key.join("/"), if next().is_multiple_of(3) { "/" } else { "" });
        put(&store, "b", &key, 1 + next() as usize % 100);
        keys.insert(key);
    }
    // Another bucket's keys never show.
    put(&store, "other", "a/b", 5);
    for round in 0..2 {
        // Some deletes and overwrites, then (second round) a restart.
        for key in keys.clone().iter().take(1500).step_by(7) {
            store.delete(0, ObjectKeyRef::new("b", key)).unwrap();
            keys.remove(key);
        }
        for key in keys.iter().step_by(5) {
            put(&store, "b", key, 3);
        }
        if round == 1 {
            drop(store);
            store = open(dir.path());
        }
        for (prefix, delimiter) in [
            ("", None),
            ("", Some("/")),
            ("a/", Some("/")),
            ("photos", None),
            ("a", Some(".")),
            ("é/", Some("/")),
            ("nope", None),
        ] {
            for max in [0, 1, 3, 1000] {
                let mut after: Option<String> = None;
                let mut pages = 0;
                loop {
                    let want = model(&keys, prefix, delimiter, after.as_deref(), max);
                    let got = list(&store, prefix, delimiter, after.as_deref(), max);
                    assert_eq!(got, want, "prefix {prefix:?} delimiter {delimiter:?} after {after:?} max {max}");
                    pages += 1;
                    match got.2 {
                        Some(next) if pages < 3000 => after = Some(next),
                        _ => break,
                    }
                }
            }
        }
        // A start-after inside a rolled-up prefix, and one past every key.
        for after in ["a/b", "a/", "photos/2026", "zz"] {
            assert_eq!(list(&store, "", Some("/"), Some(after), 50), model(&keys, "", Some("/"), Some(after), 50));
        }
    }
    let listed = store.list("b", "", None, None, usize::MAX);
    assert_eq!(listed.objects.len(), keys.len());
    assert!(listed.objects.iter().all(|m| m.size > 0 && m.etag().len() == 34), "sizes and ETags come from the records");
}
