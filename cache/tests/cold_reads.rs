//! Cold reads: which parts of a record are not in memory, so a thread-per-core server can read
//! them asynchronously instead of faulting on them with the whole core waiting.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{CommitRule, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn put(store: &std::sync::Arc<Store>, key: &str, data: &Bytes) {
    let mut w = store
        .begin(
            0,
            ObjectKeyRef::new("b", key),
            RecordMeta::new(SystemTime::now()),
            Some(data.len() as u64),
            CommitRule::LastWins,
        )
        .unwrap();
    w.append(data).unwrap();
    w.commit().unwrap();
}

/// Drops every segment file's pages from the page cache (they are clean once synced, and not
/// in this process's page tables: nothing has read them through the mapping).
fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir.join("segments")).unwrap() {
        let file = std::fs::File::open(entry.unwrap().path()).unwrap();
        file.sync_all().unwrap();
        // SAFETY: a valid descriptor; fadvise changes no memory of ours.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }
}

#[test]
fn spans_not_in_memory_are_named_and_reading_them_brings_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap().0;
    let small: Bytes = (0..65_536u32).map(|i| i as u8).collect::<Vec<u8>>().into();
    let big: Bytes = (0..3_000_000u32).map(|i| (i / 7) as u8).collect::<Vec<u8>>().into();
    put(&store, "small", &small);
    put(&store, "big", &big);
    let key = |k| ObjectKeyRef::new("b", k);

    assert!(store.cold_spans(key("small"), 1 << 20).is_none(), "just written: in memory");
    assert!(store.cold_spans(key("missing"), 1 << 20).is_none());

    evict(dir.path());
    let cold = store.cold_spans(key("small"), 1 << 20).expect("evicted");
    assert_eq!(cold.spans.len(), 1, "head, body and trailer in one span: {:?}", cold.spans);
    assert!(cold.spans[0].1 > small.len() as u64, "{:?}", cold.spans);
    // A body larger than max_body: its head with the first max_body bytes, and its trailer.
    let cold_big = store.cold_spans(key("big"), 1 << 20).expect("evicted");
    assert_eq!(cold_big.spans.len(), 2, "{:?}", cold_big.spans);
    let (head, tail) = (cold_big.spans[0], cold_big.spans[1]);
    assert!(head.1 >= 1 << 20 && head.1 < (1 << 20) + 8192, "{head:?}");
    assert!(tail.0 >= head.0 + big.len() as u64, "{head:?} {tail:?}");

    // Read as the node would (here with pread), the spans are in memory and a lookup of the
    // same objects reads them whole.
    for c in [cold, cold_big] {
        for (offset, len) in c.spans {
            let mut buf = vec![0u8; len as usize];
            c.file.read_exact_at(&mut buf, offset).unwrap();
        }
    }
    assert!(store.cold_spans(key("small"), 1 << 20).is_none());
    assert!(store.cold_spans(key("big"), 1 << 20).is_none());
    assert_eq!(store.get(key("small")).unwrap().unwrap().body, small);
    assert_eq!(store.get(key("big")).unwrap().unwrap().body, big);
}

#[test]
fn a_record_read_from_the_file_is_served_from_what_was_read_while_it_is_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap().0;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let body: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    for k in ["whole", "short", "overwritten"] {
        put(&store, k, &body);
    }
    evict(dir.path());
    let read_cold = |k: &str| {
        let cold = store.cold_spans(ObjectKeyRef::new("b", k), 1 << 20).expect("evicted");
        let [(offset, len)] = cold.spans[..] else { panic!("one span: {:?}", cold.spans) };
        let mut buf = vec![0u8; len as usize];
        cold.file.read_exact_at(&mut buf, offset).unwrap();
        (cold, Bytes::from(buf))
    };
    let lookup_read = |k: &str, cold, read: &Bytes| {
        rt.block_on(store.lookup_read(ObjectKeyRef::new("b", k), Some((cold, read)))).unwrap().expect("stored")
    };

    let (cold, read) = read_cold("whole");
    let obj = lookup_read("whole", &cold, &read);
    assert_eq!(obj.body, body);
    assert!(read.as_ptr_range().contains(&obj.body.as_ptr()), "served from the bytes read, not the mapping");

    // Bytes that do not hold the whole record (cut short) are not used: the mapping serves.
    let (cold, read) = read_cold("short");
    let read = read.slice(..100);
    let obj = lookup_read("short", &cold, &read);
    assert_eq!(obj.body, body);
    assert!(!read.as_ptr_range().contains(&obj.body.as_ptr()), "served from the mapping");

    // Overwritten since the read: the bytes read are of an old version, the current one serves.
    let (cold, read) = read_cold("overwritten");
    let second = Bytes::from_static(b"the second version");
    put(&store, "overwritten", &second);
    assert_eq!(lookup_read("overwritten", &cold, &read).body, second);
}
