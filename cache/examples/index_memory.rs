//! Memory the store's index costs per object: the baseline for the listing index (issue 12's
//! goal is under 100 bytes per object beyond the key itself).
//!
//!     cargo run --release -p edgemirror-cache --example index_memory -- [OBJECTS]
//!
//! Commits OBJECTS (default 200,000) one-byte objects with 40-byte keys and one saved header,
//! then reports the growth of the process's resident memory per object, less the key bytes.
//! Bodies are in the page cache, not the heap, and the segment mappings are shared file pages,
//! so the heap growth is the index (and the allocator's overhead around it).

use std::time::SystemTime;

use bytes::Bytes;
use edgemirror_cache::{
    CommitRule, CompactionConfig, ObjectKeyRef, RecordMeta, SavedHeader, Store, StoreConfig, SyncPolicy,
};

/// Resident anonymous memory of this process (RssAnon in /proc/self/status), in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let objects: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let dir = tempfile_dir();
    let config = StoreConfig {
        dir: dir.clone(),
        segment_bytes: 256 << 20,
        lanes: 1,
        sync: SyncPolicy::Never,
        max_object_bytes: 1 << 30,
        max_bytes: 0,
        min_free_bytes: 0,
        compaction: CompactionConfig { interval: std::time::Duration::ZERO, ..Default::default() },
        evictable_buckets: Vec::new(),
    };
    let store = Store::open(config).expect("open").0;
    let body = Bytes::from_static(b"x");
    let mut meta = RecordMeta::new(SystemTime::now());
    meta.headers.push((SavedHeader::ContentType, Bytes::from_static(b"image/jpeg")));
    let before = rss_anon();
    let mut key_bytes = 0u64;
    for i in 0..objects {
        let key = format!("images/2026/11/25/object-{i:012}.jpg");
        key_bytes += key.len() as u64;
        let mut w = store
            .begin(0, ObjectKeyRef::new("example-bucket", &key), meta.clone(), Some(1), CommitRule::LastWins)
            .expect("begin");
        w.append(&body).expect("append");
        w.commit().expect("commit");
    }
    let grown = rss_anon().saturating_sub(before);
    let per_object = grown as f64 / objects as f64;
    let per_key = key_bytes as f64 / objects as f64;
    println!(
        "{objects} objects: resident heap grew {:.1} MiB = {per_object:.0} bytes/object, of which {per_key:.0} are the key: {:.0} bytes/object beyond the key",
        grown as f64 / (1 << 20) as f64,
        per_object - per_key
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemirror-index-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
