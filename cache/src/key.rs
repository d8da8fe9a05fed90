//! Object identity: `(bucket, key)`.
//!
//! The index stores owned [`ObjectKey`]s and is probed with borrowed [`ObjectKeyRef`]s through
//! hashbrown's `Equivalent`, so a lookup on the request path allocates nothing. The hot cache
//! (foyer) is keyed by a 128-bit xxh3 digest of the pair ([`hot_key`]): a `Copy` key that is
//! stable across restarts (foyer's disk tier recovers by it); every cached value also carries its
//! bucket and key, and a mismatch is treated as a miss, so a digest collision cannot serve the
//! wrong object.

use std::hash::{Hash, Hasher};

/// Longest bucket name (S3 allows 63) and key (S3 allows 1024 bytes) the store accepts.
pub const MAX_BUCKET_BYTES: usize = 255;
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectKey {
    pub bucket: Box<str>,
    pub key: Box<str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectKeyRef<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

// Both forms must hash identically: bucket, a separator that cannot occur in UTF-8, key.
impl Hash for ObjectKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state)
    }
}

impl Hash for ObjectKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.bucket.as_bytes());
        state.write_u8(0xff);
        state.write(self.key.as_bytes());
    }
}

impl hashbrown::Equivalent<ObjectKey> for ObjectKeyRef<'_> {
    fn equivalent(&self, key: &ObjectKey) -> bool {
        *self == key.as_ref()
    }
}

impl ObjectKey {
    pub fn new(bucket: &str, key: &str) -> Self {
        ObjectKey { bucket: bucket.into(), key: key.into() }
    }

    pub fn as_ref(&self) -> ObjectKeyRef<'_> {
        ObjectKeyRef { bucket: &self.bucket, key: &self.key }
    }
}

impl<'a> ObjectKeyRef<'a> {
    pub fn new(bucket: &'a str, key: &'a str) -> Self {
        ObjectKeyRef { bucket, key }
    }

    pub fn validate(&self) -> crate::Result<()> {
        if self.bucket.is_empty() || self.bucket.len() > MAX_BUCKET_BYTES {
            return Err(crate::Error::InvalidKey("bucket name must be 1..=255 bytes"));
        }
        if self.key.is_empty() || self.key.len() > MAX_KEY_BYTES {
            return Err(crate::Error::InvalidKey("object key must be 1..=1024 bytes"));
        }
        Ok(())
    }
}

/// The hot cache key of an object: xxh3-128 over the same bytes the index hashes.
pub fn hot_key(key: ObjectKeyRef<'_>) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key.bucket.as_bytes());
    h.update(&[0xff]);
    h.update(key.key.as_bytes());
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_borrowed_hash_alike() {
        let s = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let owned = ObjectKey::new("b", "dir/k");
        let borrowed = ObjectKeyRef::new("b", "dir/k");
        assert_eq!(s.hash_one(&owned), s.hash_one(borrowed));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(hot_key(ObjectKeyRef::new("ab", "c")), hot_key(ObjectKeyRef::new("a", "bc")));
    }
}
