//! More big objects than `vm.max_map_count` allows mappings, and what reading them costs.
//!
//!     cargo run --release -p edgemirror-cache --example solo_many -- [OBJECTS] [KIB]
//!
//! Stores OBJECTS (default 70,000) objects of KIB KiB (default 20) in a store whose segments are
//! 64 KiB, so each object is a solo segment (a file of its own). Before the mapping cache every
//! solo segment stayed mapped, and the store stopped at `vm.max_map_count` (65,530). Then, after
//! a reopen, it reads every object (touching every byte, as a socket write would) and reports:
//! the most mappings of the store's files the process held at once; the read rate when each
//! read maps its file again (more objects than the cache holds); when the mapping is cached (a
//! working set within the cache); and a `pread` into a buffer, the copy a read-instead-of-map
//! design would pay, over the same files.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use edgemirror_cache::{CommitRule, CompactionConfig, ObjectKeyRef, RecordMeta, Store, StoreConfig};

fn store_mappings(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().filter(|l| l.contains(dir.to_str().unwrap())).count()
}

fn touch(body: &[u8]) -> u32 {
    edgemirror_cache::crc::crc32c(body)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let objects: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(70_000);
    let kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("edgemirror-solo-many-{}", std::process::id()));
    let config = StoreConfig {
        segment_bytes: 64 << 10,
        compaction: CompactionConfig { interval: std::time::Duration::ZERO, ..Default::default() },
        ..StoreConfig::new(dir.clone())
    };
    let body = Bytes::from((0..kib << 10).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let key = |i: usize| format!("big/{i:08}");
    {
        let store = Store::open(config.clone()).expect("open").0;
        let started = Instant::now();
        for i in 0..objects {
            let k = key(i);
            let mut w = store
                .begin(
                    0,
                    ObjectKeyRef::new("b", &k),
                    RecordMeta::new(SystemTime::now()),
                    Some(body.len() as u64),
                    CommitRule::LastWins,
                )
                .expect("begin");
            w.append(&body).expect("append");
            w.commit().expect("commit");
        }
        println!(
            "stored {objects} objects of {kib} KiB, each a file of its own, in {:.1} s; mappings held: {}",
            started.elapsed().as_secs_f64(),
            store_mappings(&dir)
        );
    }
    let store = Store::open(config).expect("reopen").0;
    assert_eq!(store.object_count(), objects, "every object is back after a reopen");
    let mut peak = 0;
    let mut pass = |label: &str, keys: &mut dyn Iterator<Item = usize>| {
        let started = Instant::now();
        let (mut reads, mut bytes, mut sum) = (0u64, 0u64, 0u32);
        for i in keys {
            let got = store.get(ObjectKeyRef::new("b", &key(i))).expect("get").expect("stored");
            sum ^= touch(&got.body);
            bytes += got.body.len() as u64;
            reads += 1;
            if reads % 1024 == 0 {
                peak = peak.max(store_mappings(&dir));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{label:<44} {:>9.0} reads/s {:>6.2} GB/s {:>6.1} us/read",
            reads as f64 / secs,
            bytes as f64 / secs / 1e9,
            secs * 1e6 / reads as f64
        );
        std::hint::black_box(sum);
    };
    pass("first read (maps, checks the CRC)", &mut (0..objects));
    pass("every object again (maps each again)", &mut (0..objects));
    let hot = 1000.min(objects);
    pass("a working set of 1000 (cached mappings)", &mut (0..20).flat_map(|_| 0..hot));
    println!(
        "most mappings of the store held at once: {peak} (cached now: {}); vm.max_map_count = {}",
        store.cached_mappings(),
        max_map_count.trim()
    );
    // The same bytes by pread into one buffer: the copy a read-based design pays instead of the
    // mapping and its page faults.
    let mut files: Vec<_> = std::fs::read_dir(dir.join("segments"))
        .expect("segments")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > (kib as u64) << 10).unwrap_or(false))
        .collect();
    files.sort();
    let mut buf = vec![0u8; (kib << 10) + 4096];
    let started = Instant::now();
    let (mut reads, mut bytes, mut sum) = (0u64, 0u64, 0u32);
    for path in &files {
        let file = std::fs::File::open(path).expect("open segment");
        let n = file.read_at(&mut buf, 0).expect("pread");
        sum ^= touch(&buf[..n]);
        bytes += n as u64;
        reads += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<44} {:>9.0} reads/s {:>6.2} GB/s {:>6.1} us/read",
        "pread of each file (open, read, close)",
        reads as f64 / secs,
        bytes as f64 / secs / 1e9,
        secs * 1e6 / reads as f64
    );
    std::hint::black_box(sum);
    println!("descriptors open: {}", std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
