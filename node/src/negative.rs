//! The negative cache: origin 404s remembered for `origin.negative_ttl_ms`, so a client asking
//! again and again for a key the origin does not have (a broken link, a scanner) costs the
//! origin one request per TTL instead of one per GET.
//!
//! Bounded: at most `origin.negative_entries` keys, the least recently asked-for dropped first
//! (the `lru` crate). An entry is 16 bytes of key digest (the hot cache's xxh3-128 of bucket and
//! key) and an expiry. A purge or delete of the key forgets it. `negative_ttl_ms = 0` (the
//! default, as in the reference feature) turns it off.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgemirror_cache::key::hot_key;
use edgemirror_cache::ObjectKeyRef;

#[derive(Debug)]
pub struct NegativeCache {
    /// The TTL in nanoseconds (0: off); a reload replaces it.
    ttl_ns: AtomicU64,
    entries: Mutex<lru::LruCache<u128, Instant>>,
    /// GETs and HEADs answered 404 from the cache, without asking the origin.
    pub hits: AtomicU64,
}

impl NegativeCache {
    pub fn new(ttl: Duration, capacity: usize) -> NegativeCache {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        NegativeCache {
            ttl_ns: AtomicU64::new(ttl.as_nanos().try_into().unwrap_or(u64::MAX)),
            entries: Mutex::new(lru::LruCache::new(capacity)),
            hits: AtomicU64::new(0),
        }
    }

    /// A new TTL (a reload): 404s remembered from now on keep it; those remembered already keep
    /// theirs, unless it is 0 (off: nothing is answered from the cache any more).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl_ns.store(ttl.as_nanos().try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_ns.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<u128, Instant>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the origin said 404 for `key` less than a TTL ago.
    pub fn is_missing(&self, key: ObjectKeyRef<'_>) -> bool {
        if self.ttl().is_zero() {
            return false;
        }
        let digest = hot_key(key);
        let mut entries = self.lock();
        match entries.get(&digest) {
            Some(expiry) if *expiry > Instant::now() => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(_) => {
                entries.pop(&digest);
                false
            }
            None => false,
        }
    }

    /// The origin said 404 for `key`.
    pub fn remember(&self, key: ObjectKeyRef<'_>) {
        if !self.ttl().is_zero() {
            self.lock().put(hot_key(key), Instant::now() + self.ttl());
        }
    }

    /// The key was purged or deleted: ask the origin again next time.
    pub fn forget(&self, key: ObjectKeyRef<'_>) {
        if !self.ttl().is_zero() {
            self.lock().pop(&hot_key(key));
        }
    }

    /// Keys remembered (expired ones included until asked for or pushed out).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_for_the_ttl_within_its_bound_and_forgets_on_purge() {
        let cache = NegativeCache::new(Duration::from_millis(40), 2);
        let (a, b, c) = (ObjectKeyRef::new("b", "a"), ObjectKeyRef::new("b", "b"), ObjectKeyRef::new("b", "c"));
        assert!(!cache.is_missing(a));
        cache.remember(a);
        assert!(cache.is_missing(a));
        cache.remember(b);
        cache.remember(c);
        assert!(!cache.is_missing(a), "bounded: the least recently used went");
        assert!(cache.is_missing(c));
        cache.forget(c);
        assert!(!cache.is_missing(c));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!cache.is_missing(b), "expired");
        assert_eq!(cache.hits.load(Ordering::Relaxed), 2);
        let off = NegativeCache::new(Duration::ZERO, 10);
        off.remember(a);
        assert!(!off.is_missing(a) && off.is_empty());
    }
}
