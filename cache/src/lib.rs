//! Where edgemirror's object bytes live.
//!
//! Three tiers, fastest first, as on a CDN node:
//!
//! 1. RAM: foyer's memory cache ([`hot`]).
//! 2. Fast disk: foyer's disk tier under `cache.dir` ([`hot`]). Best effort: it may drop
//!    entries, so it is never the only copy.
//! 3. Bulk disk: the segment store under `store.dir` ([`segment`]), the source of truth.
//!    Append-only segment files, records framed with magic, lengths and CRC-32C, an in-memory
//!    index rebuilt at start, bodies read through `memmap2` as zero-copy `Bytes`.
//!
//! A GET asks [`hot::HotCache::get`], then [`segment::Store::lookup`] (async: the first read of a
//! body in this process checks its CRC on a `store-verify` thread, not on the caller's core;
//! [`segment::Store::get`] is the synchronous form); a store hit is copied into the hot cache.
//! One store owns its directory: [`segment::Store::open`] holds `store.dir/LOCK` (flock). A mirrored object is written with [`segment::RecordWriter`] as its bytes arrive and
//! becomes visible only at [`segment::RecordWriter::commit`].
//!
//! This crate knows nothing of HTTP or of the runtime: writes are positional `pwrite`s to the
//! page cache, which do not block on the device (fsync policy aside).

pub mod crc;
pub mod error;
pub mod hot;
pub mod key;
pub mod meta;
pub mod segment;

pub use error::{Error, Result};
pub use hot::{HotCache, HotConfig, HotObject, HotTier};
pub use key::{ObjectKey, ObjectKeyRef};
pub use meta::{md5_from_hex, Etag, ObjectMeta, RecordMeta, SavedHeader, StorageClass};
pub use segment::{
    in_memory, random_u64, read_ahead, BodyFile, ColdSpans, CommitRule, CompactReport, CompactionConfig, FillReader,
    RecordWriter, RecoveryReport, Store, StoreConfig, StoredObject, SyncPolicy, VersionPin, WriteCondition,
};
