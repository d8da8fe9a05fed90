//! The shared store of record (`store.backend = "s3"`): an S3-compatible cluster (Garage, Ceph
//! RGW, MinIO, AWS S3) that every edge of a fleet reads and writes, with this node's tiers
//! (foyer memory and disk, the local segments) as caches in front of it.
//!
//! This module holds what the node keeps about it: where it is and how requests to it are
//! signed ([`SharedStoreConfig`]), how an object is named there (`{prefix}{bucket}/{key}`), how
//! its version is told ([`version_tag`]), and when a local copy was last found current
//! ([`Freshness`]). The requests themselves are made by `backend.rs`.
//!
//! Staleness is bounded: a local copy is served without asking for at most
//! `store.s3.staleness_ms` after the shared store last said it was current (a PUT or a fill
//! through this node counts as saying so). Past that, the next hit asks with HEAD: the same
//! version -> served and marked fresh; another version, or none -> the local copy is dropped
//! and the key read again. So after a PUT or DELETE through any node returns, every node
//! serves the new state within the bound plus one request's time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rules::{OriginAddr, S3Signer};

/// `[store.s3]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStoreConfig {
    pub endpoints: Vec<Endpoint>,
    pub staleness: Duration,
}

/// One address of the shared store's S3 API, and the signer of requests to it (a signature
/// names the host it is sent to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Path `/`.
    pub addr: OriginAddr,
    /// Its prefix is `store.s3.prefix`.
    pub signer: std::sync::Arc<S3Signer>,
}

impl SharedStoreConfig {
    /// Whether `key` can be named in the shared store: not with a `.` or `..` path segment,
    /// which a URL resolves away (`public/../private/x` would name another bucket's object).
    pub fn storable_key(key: &str) -> bool {
        !edgemirror_proto::has_dot_segment(key)
    }

    /// The endpoints in the order `bucket`/`key` asks them: starting at one picked by the key's
    /// hash (spreading the fleet's requests over the cluster's nodes), then around.
    pub fn order(&self, bucket: &str, key: &str) -> impl Iterator<Item = &Endpoint> {
        let n = self.endpoints.len();
        let start = (Freshness::hash(bucket, key) % n as u64) as usize;
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }

    /// The name of `bucket`/`key` in the shared bucket, after the configured prefix (the
    /// signer adds that).
    pub fn object_key(bucket: &str, key: &str) -> String {
        let mut name = String::with_capacity(bucket.len() + 1 + key.len());
        name.push_str(bucket);
        name.push('/');
        name.push_str(key);
        name
    }
}

/// S3's largest single PUT: bigger objects are not written to the shared store (the node
/// refuses them in this mode: `store.max_object_bytes` is capped to it).
pub const MAX_PUT_BYTES: u64 = 5 << 30;

/// The user-metadata name under which a node stores, with each object it writes, the ETag it
/// serves for it (a multipart upload's `"{md5}-{parts}"` survives the single PUT that copies it
/// there). It is never shown to clients as user metadata.
pub const ETAG_META: &str = "edgemirror-etag";

/// The user-metadata name under which a node stores the object's `Last-Modified` (for a mirrored
/// object, the origin's): every edge then answers conditional requests alike. Never shown to
/// clients as user metadata either.
pub const LAST_MODIFIED_META: &str = "edgemirror-last-modified";

/// The user-metadata name under which a node stores the flexible checksum an upload was
/// verified with (`x-amz-checksum-crc32=...`): every edge returns it with
/// `x-amz-checksum-mode: ENABLED`.
pub const CHECKSUM_META: &str = "edgemirror-checksum";

/// The user-metadata name of a write's version: a random id each client write and each fill
/// from the origin gets, kept with the local copy and stored with the object. Two writes of the
/// same bytes with other metadata (a CopyObject onto itself with `REPLACE`) have one ETag but
/// two versions: revalidation compares versions when both sides have one.
pub const VERSION_META: &str = "edgemirror-version";

/// Whether `name` (without `x-amz-meta-`) is one of the node's own metadata entries (never
/// shown to clients, never taken from them).
pub fn is_own_meta(name: &str) -> bool {
    [ETAG_META, LAST_MODIFIED_META, CHECKSUM_META, VERSION_META].iter().any(|own| name.eq_ignore_ascii_case(own))
}

/// The header that carries user-metadata entry `name`.
pub fn meta_header(name: &str) -> String {
    format!("x-amz-meta-{name}")
}

/// The node's own entries stored with `meta`'s object in the shared store (signed user-metadata
/// headers): the ETag and Last-Modified its edge serves, its version, and the flexible checksum
/// it was verified with. [`restore_own_meta`] reads them back.
pub fn own_meta_headers(meta: &edgemirror_cache::ObjectMeta) -> Vec<(String, String)> {
    let mut headers = vec![
        (meta_header(ETAG_META), meta.etag()),
        (meta_header(LAST_MODIFIED_META), edgemirror_proto::fmt_http_date(meta.record.last_modified)),
    ];
    if let Some(version) = local_version(meta) {
        headers.push((meta_header(VERSION_META), String::from_utf8_lossy(version).into_owned()));
    }
    if let Some((name, value)) = &meta.record.checksum {
        headers.push((meta_header(CHECKSUM_META), format!("{name}={}", String::from_utf8_lossy(value))));
    }
    headers
}

/// Restores into a copy read back from the shared store what [`own_meta_headers`] stored with
/// it: its Last-Modified (for a mirrored object, the origin's), its version, and the flexible
/// checksum (`{header name}={value}`). The ETag is the fill's to take ([`version_tag`]).
pub fn restore_own_meta<'a>(meta: &mut edgemirror_cache::RecordMeta, header: impl Fn(&str) -> Option<&'a [u8]>) {
    if let Some(t) = header(&meta_header(LAST_MODIFIED_META)).and_then(edgemirror_proto::parse_http_date) {
        meta.last_modified = t;
    }
    if let Some(version) = header(&meta_header(VERSION_META)) {
        meta.user.push((VERSION_META.into(), bytes::Bytes::copy_from_slice(version.trim_ascii())));
    }
    let checksum =
        header(&meta_header(CHECKSUM_META)).and_then(|v| std::str::from_utf8(v).ok()?.trim().split_once('='));
    if let Some((name, value)) = checksum.filter(|(name, _)| name.starts_with("x-amz-checksum-")) {
        meta.checksum = Some((name.into(), bytes::Bytes::copy_from_slice(value.as_bytes())));
    }
}

/// Gives a write a new version ([`VERSION_META`]), dropping any own entry it carried (a
/// client's, or a copied object's).
pub fn stamp(user: &mut Vec<(Box<str>, bytes::Bytes)>) {
    user.retain(|(name, _)| !is_own_meta(name));
    let version = format!("{:016x}", edgemirror_cache::random_u64());
    user.push((VERSION_META.into(), bytes::Bytes::from(version)));
}

/// The version a local copy was written as, if it has one.
pub fn local_version(meta: &edgemirror_cache::ObjectMeta) -> Option<&[u8]> {
    meta.record.user.iter().find(|(name, _)| &**name == VERSION_META).map(|(_, v)| v.as_ref())
}

/// What the shared store holds of a key: the ETag every edge serves for it, its version when
/// a node wrote it, its size.
#[derive(Clone, Debug)]
pub struct Held {
    pub etag: String,
    pub version: Option<String>,
    pub size: Option<u64>,
}

/// Whether the local copy `meta` is the version the shared store holds: by version when both
/// have one, else by ETag.
pub fn same_version(meta: &edgemirror_cache::ObjectMeta, held: &Held) -> bool {
    match (local_version(meta), &held.version) {
        (Some(local), Some(there)) => local == there.as_bytes(),
        _ => held.etag.eq_ignore_ascii_case(&meta.etag()),
    }
}

/// The version of an object in the shared store, from its response head: the ETag a node stored
/// with it ([`ETAG_META`]), else the store's own ETag. Quoted, as ETags are sent.
pub fn version_tag<'a>(header: impl Fn(&str) -> Option<&'a [u8]>) -> Option<String> {
    let raw = header(&meta_header(ETAG_META)).or_else(|| header("etag"))?;
    let tag = std::str::from_utf8(raw).ok()?.trim();
    if tag.starts_with('"') {
        Some(tag.to_string())
    } else {
        Some(format!("\"{tag}\""))
    }
}

/// When each key's local copy was last found current in the shared store. Bounded: a shard
/// that fills up is emptied, which only makes its keys ask again.
pub struct Freshness {
    shards: Box<[Mutex<ahash::AHashMap<u64, Instant>>]>,
    per_shard: usize,
    /// Keys this node is writing to the shared store behind a fill (a revalidation that finds
    /// one absent there keeps the local copy: it is on its way).
    uploading: Mutex<ahash::AHashSet<u64>>,
    /// Keys being revalidated now: one HEAD per key at a time, however many hits arrive.
    revalidating: Mutex<ahash::AHashSet<u64>>,
}

const SHARDS: usize = 64;

impl Freshness {
    /// Room for about `entries` keys.
    pub fn new(entries: usize) -> Freshness {
        Freshness {
            shards: (0..SHARDS).map(|_| Mutex::new(ahash::AHashMap::new())).collect(),
            per_shard: entries.div_ceil(SHARDS).max(16),
            uploading: Mutex::new(ahash::AHashSet::new()),
            revalidating: Mutex::new(ahash::AHashSet::new()),
        }
    }

    pub(crate) fn hash(bucket: &str, key: &str) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(bucket.as_bytes());
        h.update(&[0]);
        h.update(key.as_bytes());
        h.digest()
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, ahash::AHashMap<u64, Instant>> {
        self.shards[(hash % SHARDS as u64) as usize].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local copy of `bucket`/`key` is the shared store's current version as of now.
    pub fn mark(&self, bucket: &str, key: &str) {
        let hash = Self::hash(bucket, key);
        let mut shard = self.shard(hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            shard.clear();
        }
        shard.insert(hash, Instant::now());
    }

    /// Whether the local copy was found current less than `within` ago.
    pub fn is_fresh(&self, bucket: &str, key: &str, within: Duration) -> bool {
        self.fresh(Self::hash(bucket, key), within)
    }

    fn fresh(&self, hash: u64, within: Duration) -> bool {
        self.shard(hash).get(&hash).is_some_and(|at| at.elapsed() < within)
    }

    /// Notes that this node starts (`true`) or has ended (`false`) writing `bucket`/`key` to the
    /// shared store.
    pub fn uploading(&self, bucket: &str, key: &str, on: bool) {
        let hash = Self::hash(bucket, key);
        let mut set = self.uploading.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(hash);
        } else {
            set.remove(&hash);
        }
    }

    /// Whether a hit may serve the local copy of `bucket`/`key` without asking the shared store:
    /// it was found current less than `within` ago, or this node is writing it there now (what
    /// is there may still be the previous version). One hash of the name for both.
    pub fn trusted(&self, bucket: &str, key: &str, within: Duration) -> bool {
        let hash = Self::hash(bucket, key);
        self.fresh(hash, within) || self.uploading.lock().unwrap_or_else(|e| e.into_inner()).contains(&hash)
    }

    /// Claims the revalidation of `bucket`/`key`: `None` when another request is revalidating it
    /// (that request's answer counts for this one too), else a guard that releases the claim.
    pub fn revalidate(&self, bucket: &str, key: &str) -> Option<Revalidation<'_>> {
        let hash = Self::hash(bucket, key);
        let claimed = self.revalidating.lock().unwrap_or_else(|e| e.into_inner()).insert(hash);
        claimed.then_some(Revalidation { freshness: self, hash })
    }

    /// Forgets `bucket`/`key`: its next hit asks the shared store.
    pub fn forget(&self, bucket: &str, key: &str) {
        let hash = Self::hash(bucket, key);
        self.shard(hash).remove(&hash);
    }
}

/// A claimed revalidation ([`Freshness::revalidate`]), released when dropped.
pub struct Revalidation<'a> {
    freshness: &'a Freshness,
    hash: u64,
}

impl Drop for Revalidation<'_> {
    fn drop(&mut self) {
        self.freshness.revalidating.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_tag_prefers_the_nodes_own_etag() {
        let headers = [("etag", b"\"aa\"".as_slice()), ("x-amz-meta-edgemirror-etag", b"\"bb-2\"".as_slice())];
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(version_tag(get).as_deref(), Some("\"bb-2\""));
        let get = |name: &str| headers[..1].iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(version_tag(get).as_deref(), Some("\"aa\""));
        let unquoted = |_: &str| Some(b"cc".as_slice());
        assert_eq!(version_tag(unquoted).as_deref(), Some("\"cc\""));
    }

    #[test]
    fn freshness_expires_and_stays_bounded() {
        let f = Freshness::new(SHARDS * 16);
        assert!(!f.is_fresh("b", "k", Duration::from_secs(1)));
        f.mark("b", "k");
        assert!(f.is_fresh("b", "k", Duration::from_secs(1)));
        assert!(!f.is_fresh("b", "k", Duration::ZERO));
        f.forget("b", "k");
        assert!(!f.is_fresh("b", "k", Duration::from_secs(1)));
        let claim = f.revalidate("b", "k").expect("the first claim");
        assert!(f.revalidate("b", "k").is_none(), "one revalidation per key at a time");
        assert!(f.revalidate("b", "other").is_some());
        drop(claim);
        assert!(f.revalidate("b", "k").is_some(), "released when dropped");
        for i in 0..100_000 {
            f.mark("b", &i.to_string());
        }
        let held: usize = f.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= SHARDS * 16, "{held} entries held");
    }
}
