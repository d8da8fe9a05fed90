//! An ordered map from byte-string keys to values, packed for memory: the index's per-bucket key
//! order (S3 lists keys in byte order), at a few dozen bytes per key beyond the key itself.
//!
//! A `BTreeMap<Box<str>, V>` costs a heap allocation per key (malloc rounds a 41-byte key up to
//! 64) and leaves its nodes about half full when keys arrive in order (sorted uploads, `aws s3
//! sync` of a tree): about 100 bytes per key beyond the key with a 24-byte value, measured. Here
//! keys live in pages of at most [`PAGE_ENTRIES`]: one buffer of the page's key bytes end to end,
//! an array of where each key ends, and an array of the values. A page is found through a
//! `BTreeMap` of page bounds (one entry per page, not per key), and searched by bisection.
//!
//! Invariant: every key of a page is at least the page's bound and below the next page's bound;
//! the first page's bound is empty. A page that grows past [`PAGE_ENTRIES`] splits in two (the
//! right half's bound is its first key); one that shrinks under a quarter merges with its right
//! neighbour when they fit in one page. Buffers grow in small exact steps, so a page wastes at
//! most a few entries' room.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

/// Most keys in a page: a bisection of six steps, and an insert moves at most a few KiB.
pub(crate) const PAGE_ENTRIES: usize = 64;
/// Entries per page when pages are built from sorted keys ([`KeyPages::from_sorted`]): three
/// quarters full, so that later inserts among them do not split every page at once.
const BUILD_FILL: usize = PAGE_ENTRIES * 3 / 4;
/// Entries a page's arrays grow by at a time.
const GROWTH: usize = 8;

pub(crate) struct KeyPages<V> {
    /// Page bound -> page.
    pages: BTreeMap<Box<[u8]>, Page<V>>,
    len: usize,
}

struct Page<V> {
    /// The keys' bytes, in order, end to end.
    keys: Vec<u8>,
    /// Where each key ends in `keys` (key `i` starts where key `i - 1` ends).
    ends: Vec<u32>,
    values: Vec<V>,
}

impl<V> Page<V> {
    fn empty() -> Self {
        Page { keys: Vec::new(), ends: Vec::new(), values: Vec::new() }
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1] as usize
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.keys[self.start(i)..self.ends[i] as usize]
    }

    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn insert_at(&mut self, i: usize, key: &[u8], value: V) {
        let at = self.start(i);
        if self.keys.capacity() - self.keys.len() < key.len() {
            self.keys.reserve_exact(key.len() * GROWTH);
        }
        if self.values.len() == self.values.capacity() {
            self.values.reserve_exact(GROWTH);
            self.ends.reserve_exact(GROWTH);
        }
        self.keys.splice(at..at, key.iter().copied());
        let grown = key.len() as u32;
        for end in &mut self.ends[i..] {
            *end += grown;
        }
        self.ends.insert(i, at as u32 + grown);
        self.values.insert(i, value);
    }

    fn remove_at(&mut self, i: usize) -> V {
        let (start, end) = (self.start(i), self.ends[i] as usize);
        self.keys.drain(start..end);
        self.ends.remove(i);
        let shrunk = (end - start) as u32;
        for e in &mut self.ends[i..] {
            *e -= shrunk;
        }
        self.values.remove(i)
    }

    /// Moves the entries from `i` on into a page of their own.
    fn split_off(&mut self, i: usize) -> Page<V> {
        let at = self.start(i);
        let keys = self.keys[at..].to_vec();
        let ends = self.ends[i..].iter().map(|e| e - at as u32).collect();
        let values = self.values.split_off(i);
        // The left half moves to buffers of its exact size and the old ones are freed whole:
        // shrinking them in place left a hole per split that malloc rarely reused (measured:
        // 124 bytes per key beyond the key instead of 53, on a million keys in order).
        let mut left_keys = Vec::with_capacity(at);
        left_keys.extend_from_slice(&self.keys[..at]);
        self.keys = left_keys;
        self.ends = self.ends[..i].to_vec();
        let mut left_values = Vec::with_capacity(i);
        left_values.append(&mut self.values);
        self.values = left_values;
        Page { keys, ends, values }
    }

    /// Appends every entry of `right` (whose keys all sort after this page's).
    fn append(&mut self, right: Page<V>) {
        let base = self.keys.len() as u32;
        self.keys.extend_from_slice(&right.keys);
        self.ends.extend(right.ends.iter().map(|e| e + base));
        self.values.extend(right.values);
    }
}

impl<V> Default for KeyPages<V> {
    fn default() -> Self {
        KeyPages { pages: BTreeMap::new(), len: 0 }
    }
}

impl<V> KeyPages<V> {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Builds the map from entries in strictly ascending key order (recovery, which sorts what
    /// it found first): each page is filled to [`BUILD_FILL`] entries in one go, with buffers
    /// of exactly its size, instead of the search, shift and split of an insert per key.
    pub(crate) fn from_sorted<'k>(entries: impl IntoIterator<Item = (&'k [u8], V)>) -> Self {
        let mut map = KeyPages::default();
        let mut batch: Vec<(&[u8], V)> = Vec::with_capacity(BUILD_FILL);
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            batch.extend(entries.by_ref().take(BUILD_FILL));
            let key_bytes = batch.iter().map(|(k, _)| k.len()).sum();
            let mut page = Page {
                keys: Vec::with_capacity(key_bytes),
                ends: Vec::with_capacity(batch.len()),
                values: Vec::with_capacity(batch.len()),
            };
            for (key, value) in batch.drain(..) {
                debug_assert!(page.len() == 0 || page.key(page.len() - 1) < key, "keys out of order");
                page.keys.extend_from_slice(key);
                page.ends.push(page.keys.len() as u32);
                page.values.push(value);
            }
            // The first page's bound is empty, below every key (the invariant inserts rely on).
            let bound: Box<[u8]> = if map.pages.is_empty() { Box::default() } else { page.key(0).into() };
            debug_assert!(map.pages.last_key_value().is_none_or(|(_, p)| p.key(p.len() - 1) < page.key(0)));
            map.len += page.len();
            map.pages.insert(bound, page);
        }
        map
    }

    /// The bound of the page that holds (or would hold) `key`.
    fn page_of(&self, key: &[u8]) -> Option<(&[u8], &Page<V>)> {
        self.pages.range::<[u8], _>((Unbounded, Included(key))).next_back().map(|(b, p)| (&**b, p))
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&V> {
        let (_, page) = self.page_of(key)?;
        page.search(key).ok().map(|i| &page.values[i])
    }

    /// Inserts or replaces; returns the value replaced.
    pub(crate) fn insert(&mut self, key: &[u8], value: V) -> Option<V> {
        if self.pages.is_empty() {
            self.pages.insert(Box::default(), Page::empty());
        }
        let (_, page) = self
            .pages
            .range_mut::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .expect("the first page's bound is empty, below every key");
        match page.search(key) {
            Ok(i) => return Some(std::mem::replace(&mut page.values[i], value)),
            Err(i) => page.insert_at(i, key, value),
        }
        self.len += 1;
        if page.len() > PAGE_ENTRIES {
            let right = page.split_off(page.len() / 2);
            let right_bound: Box<[u8]> = right.key(0).into();
            self.pages.insert(right_bound, right);
        }
        None
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let (bound, page) = self.pages.range_mut::<[u8], _>((Unbounded, Included(key))).next_back()?;
        let i = page.search(key).ok()?;
        let value = page.remove_at(i);
        self.len -= 1;
        if page.len() < PAGE_ENTRIES / 4 {
            let bound = bound.clone();
            self.merge_with_next(&bound);
        }
        Some(value)
    }

    /// Folds the page after `bound`'s into it when both fit in one page, and drops `bound`'s
    /// page if it is empty (the first page stays: its empty bound is below every key).
    fn merge_with_next(&mut self, bound: &[u8]) {
        let next = self.pages.range::<[u8], _>((Excluded(bound), Unbounded)).next().map(|(b, p)| (b.clone(), p.len()));
        let here = self.pages.get(bound).map(Page::len).unwrap_or(0);
        match next {
            Some((next_bound, n)) if here + n <= PAGE_ENTRIES => {
                let right = self.pages.remove(&next_bound).expect("just seen");
                if let Some(page) = self.pages.get_mut(bound) {
                    page.append(right);
                }
            }
            _ if here == 0 && !bound.is_empty() => {
                self.pages.remove(bound);
            }
            _ => {}
        }
    }

    /// The entries with keys at or after `from`, in key order.
    pub(crate) fn iter_from<'a>(&'a self, from: &[u8]) -> Iter<'a, V> {
        match self.page_of(from) {
            Some((bound, page)) => {
                let pos = page.search(from).unwrap_or_else(|i| i);
                let rest = self.pages.range::<[u8], _>((Excluded(bound), Unbounded));
                Iter { rest, page: Some(page), pos }
            }
            None => Iter { rest: self.pages.range::<[u8], _>((Unbounded, Unbounded)), page: None, pos: 0 },
        }
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        self.iter_from(b"")
    }

    #[cfg(test)]
    pub(crate) fn pages(&self) -> usize {
        self.pages.len()
    }
}

/// See [`KeyPages::iter_from`].
pub(crate) struct Iter<'a, V> {
    rest: std::collections::btree_map::Range<'a, Box<[u8]>, Page<V>>,
    page: Option<&'a Page<V>>,
    pos: usize,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a [u8], &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(page) = self.page {
                if self.pos < page.len() {
                    let i = self.pos;
                    self.pos += 1;
                    return Some((page.key(i), &page.values[i]));
                }
            }
            self.page = Some(self.rest.next()?.1);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so a failure replays.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed.max(1);
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    fn check_same(pages: &KeyPages<u64>, model: &BTreeMap<Vec<u8>, u64>) {
        assert_eq!(pages.len(), model.len());
        let got: Vec<(Vec<u8>, u64)> = pages.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn behaves_like_a_btreemap_under_random_inserts_replaces_and_removes() {
        for seed in 1..=8u64 {
            let mut next = rng(seed);
            let mut pages = KeyPages::default();
            let mut model = BTreeMap::new();
            for step in 0..20_000u64 {
                // Keys from a small space, so replaces and removes hit; lengths vary, and some
                // keys are prefixes of others.
                let n = next() % 3000;
                let full = format!("k/{}/{n}", n % 7).into_bytes();
                let key = full[..(3 + next() as usize % full.len()).min(full.len())].to_vec();
                match next() % 10 {
                    0..=5 => assert_eq!(pages.insert(&key, step), model.insert(key.clone(), step), "insert {key:?}"),
                    6..=8 => assert_eq!(pages.remove(&key), model.remove(&key), "remove {key:?}"),
                    _ => assert_eq!(pages.get(&key), model.get(&key), "get {key:?}"),
                }
                if step % 997 == 0 {
                    check_same(&pages, &model);
                    let from = format!("k/{}", next() % 9).into_bytes();
                    let got: Vec<&[u8]> = pages.iter_from(&from).map(|(k, _)| k).take(50).collect();
                    let want: Vec<&[u8]> = model.range(from.clone()..).map(|(k, _)| k.as_slice()).take(50).collect();
                    assert_eq!(got, want, "from {from:?}");
                }
            }
            check_same(&pages, &model);
            // Emptied, it holds one page at most.
            let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
            for k in keys {
                assert!(pages.remove(&k).is_some());
            }
            assert!(pages.is_empty());
            assert!(pages.pages() <= 1, "{} pages left", pages.pages());
        }
    }

    #[test]
    fn built_from_sorted_keys_it_behaves_like_a_btreemap_under_later_changes() {
        for n in [0usize, 1, BUILD_FILL - 1, BUILD_FILL, BUILD_FILL + 1, 5_000] {
            let mut next = rng(n as u64 + 1);
            let mut model: BTreeMap<Vec<u8>, u64> =
                (0..n as u64).map(|i| (format!("k/{}/{i}", i % 7).into_bytes(), i)).collect();
            let mut pages = KeyPages::from_sorted(model.iter().map(|(k, v)| (k.as_slice(), *v)));
            check_same(&pages, &model);
            assert_eq!(pages.pages(), n.div_ceil(BUILD_FILL), "{n} keys");
            for k in model.keys().step_by(97) {
                assert_eq!(pages.get(k), model.get(k));
            }
            for step in 0..5_000u64 {
                let key = format!("k/{}/{}", next() % 8, next() % (n as u64 + 100)).into_bytes();
                if next().is_multiple_of(3) {
                    assert_eq!(pages.remove(&key), model.remove(&key), "remove {key:?}");
                } else {
                    assert_eq!(pages.insert(&key, step), model.insert(key.clone(), step), "insert {key:?}");
                }
            }
            check_same(&pages, &model);
        }
    }

    #[test]
    fn keys_in_order_fill_pages_and_iteration_starts_anywhere() {
        let mut pages = KeyPages::default();
        for i in 0..10_000u64 {
            pages.insert(format!("obj-{i:06}").as_bytes(), i);
        }
        // Sorted inserts split pages in half: between half and wholly full.
        assert!(pages.pages() <= 10_000 / (PAGE_ENTRIES / 2) + 1, "{} pages", pages.pages());
        assert_eq!(pages.get(b"obj-004242"), Some(&4242));
        assert_eq!(pages.get(b"obj-0042"), None);
        let from: Vec<u64> = pages.iter_from(b"obj-0099985").map(|(_, v)| *v).take(3).collect();
        assert_eq!(from, [9_999]);
        let from: Vec<u64> = pages.iter_from(b"obj-004242").map(|(_, v)| *v).take(3).collect();
        assert_eq!(from, [4242, 4243, 4244]);
        assert_eq!(pages.iter_from(b"z").next(), None);
        assert_eq!(pages.iter_from(b"").next().map(|(k, _)| k), Some(&b"obj-000000"[..]));
    }
}
