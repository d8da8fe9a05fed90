//! The store at scale: millions of small objects written straight through the store API (no
//! HTTP), then the store reopened in a fresh process: how long start-up takes and how much RAM
//! the rebuilt index holds per object (issue 14's goal: under 10 s and under 100 bytes beyond
//! the key at 10 million objects).
//!
//!     cargo run --release -p edgemirror-cache --example store_scale -- write DIR OBJECTS [seq|random]
//!     cargo run --release -p edgemirror-cache --example store_scale -- open DIR
//!
//! `write` commits OBJECTS one-byte objects with 41-byte keys and one saved header into a new
//! store under DIR, in key order (`seq`) or in an order unrelated to it (`random`, the default:
//! real uploads and mirror fills do not arrive sorted), and reports the commit rate and the heap
//! growth per object. `open` opens the store (recovery scans every segment and rebuilds the
//! index) and reports the time `Store::open` took and the heap the index holds per object.
//! `bench/store_scale.sh` runs both, with the page cache warm and dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use edgemirror_cache::{CommitRule, CompactionConfig, ObjectKeyRef, RecordMeta, SavedHeader, Store, StoreConfig};

/// Resident anonymous memory of this process (RssAnon in /proc/self/status), in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn config(dir: PathBuf) -> StoreConfig {
    StoreConfig {
        segment_bytes: 256 << 20,
        // No background compaction during the measurement.
        compaction: CompactionConfig { interval: Duration::ZERO, ..Default::default() },
        ..StoreConfig::new(dir)
    }
}

/// The key of object `n` of `objects`: 41 bytes. `random` spreads consecutive `n` across the key
/// order (an odd multiplier modulo a power of two is a permutation).
fn key(n: u64, random: bool) -> String {
    let id = if random { n.wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 40) - 1) } else { n };
    format!("images/2026/11/25/object-{id:012}.jpg")
}

fn write(dir: PathBuf, objects: u64, random: bool) {
    if dir.exists() {
        eprintln!("{} exists; give a new directory", dir.display());
        std::process::exit(2);
    }
    let store = Store::open(config(dir)).expect("open").0;
    let body = Bytes::from_static(b"x");
    let mut meta = RecordMeta::new(SystemTime::now());
    meta.headers.push((SavedHeader::ContentType, Bytes::from_static(b"image/jpeg")));
    let before = rss_anon();
    let started = Instant::now();
    let mut key_bytes = 0u64;
    for n in 0..objects {
        let key = key(n, random);
        key_bytes += key.len() as u64;
        let mut w = store
            .begin(0, ObjectKeyRef::new("example-bucket", &key), meta.clone(), Some(1), CommitRule::LastWins)
            .expect("begin");
        w.append(&body).expect("append");
        w.commit().expect("commit");
        if n > 0 && n % 1_000_000 == 0 {
            eprintln!("  {n} objects, {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    let took = started.elapsed();
    let grown = rss_anon().saturating_sub(before) as f64;
    let per_key = key_bytes as f64 / objects as f64;
    println!(
        "write: {objects} objects ({}) in {:.1} s = {:.0} commits/s; heap grew {:.0} MiB = {:.0} bytes/object beyond the {per_key:.0}-byte key",
        if random { "random order" } else { "key order" },
        took.as_secs_f64(),
        objects as f64 / took.as_secs_f64(),
        grown / (1 << 20) as f64,
        grown / objects as f64 - per_key,
    );
}

fn open(dir: PathBuf) {
    let before = rss_anon();
    let started = Instant::now();
    let (store, report) = Store::open(config(dir.clone())).expect("open");
    let took = started.elapsed();
    let grown = rss_anon().saturating_sub(before) as f64;
    let objects = report.objects.max(1) as f64;
    // Every key of this example is 41 bytes.
    let per_key = key(0, false).len() as f64;
    let disk = dir_bytes(&dir);
    println!(
        "open: {} objects in {} segments ({:.2} GiB on disk) recovered in {:.2} s = {:.0} objects/s; heap {:.0} MiB = {:.0} bytes/object beyond the key",
        report.objects,
        report.segments,
        disk as f64 / (1u64 << 30) as f64,
        took.as_secs_f64(),
        objects / took.as_secs_f64(),
        grown / (1 << 20) as f64,
        grown / objects - per_key,
    );
    // A lookup works: the index is whole.
    assert_eq!(store.object_count(), report.objects);
}

/// Bytes of the files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write", dir, objects, rest @ ..] => {
            let objects = objects.parse().expect("OBJECTS: a number");
            let random = match rest.first().copied() {
                None | Some("random") => true,
                Some("seq") => false,
                Some(other) => panic!("order {other:?}: seq or random"),
            };
            write(dir.into(), objects, random);
        }
        ["open", dir] => open(dir.into()),
        _ => {
            eprintln!("usage: store_scale write DIR OBJECTS [seq|random] | store_scale open DIR");
            std::process::exit(2);
        }
    }
}
