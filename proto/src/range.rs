//! `Range` request header (RFC 9110 §14.1-14.2) resolved against a known object size.
//!
//! Owns the `bytes=` range-set grammar and its resolution to concrete byte offsets. It does not
//! build 206/416 responses (`Content-Range`, multipart bodies): that is the node's job.
//! The RFC lets a server ignore a Range header (§14.2), so anything we cannot or will not serve
//! as ranges (bad syntax, other units, more than `MAX_RANGES` parts, an empty object) becomes
//! `Full`, i.e. a plain 200. Resolved ranges are stored in a fixed array: no allocation.

use std::ops::Range;

use crate::headers::{list_elements, trim_ows};
use crate::limits::MAX_RANGES;

/// What to serve for a request's Range header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// Header absent or to be ignored: serve the whole object (200).
    Full,
    /// Serve these ranges (206).
    Satisfiable(ByteRanges),
    /// Valid syntax but no range overlaps the object: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Up to `MAX_RANGES` resolved, non-empty, half-open byte ranges in request order.
/// Overlapping ranges are kept as sent (at most `MAX_RANGES` of them, so the cost is bounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ByteRanges {
    // (start, end) pairs: `Range<u64>` is not `Copy`, so it cannot fill an array literal.
    ranges: [(u64, u64); MAX_RANGES],
    len: usize,
}

impl ByteRanges {
    /// Ranges in request order; each is non-empty and within the object.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges[..self.len].iter().map(|&(s, e)| s..e)
    }

    /// Number of ranges (1..=MAX_RANGES for a `Satisfiable` request).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for ranges inside `RangeRequest::Satisfiable`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first range: the only one when `len() == 1`, the common case.
    pub fn first(&self) -> Range<u64> {
        let (s, e) = self.ranges[0];
        s..e
    }
}

/// One syntactically valid range-spec, before resolution.
enum Spec {
    /// `first-last` or `first-` (last = None).
    Int { first: u64, last: Option<u64> },
    /// `-length`
    Suffix(u64),
}

/// Parses a Range header value against an object of `size` bytes.
/// "bytes=0-99", "bytes=-500", "bytes=9500-", multiple; syntactically invalid -> Full.
pub fn parse_range(value: &[u8], size: u64) -> RangeRequest {
    let Some(set) = byte_range_set(value) else {
        return RangeRequest::Full;
    };

    // Validate the whole set before resolving anything: one bad spec voids the header.
    let mut specs = [(0u64, 0u64); MAX_RANGES];
    let mut count = 0;
    let mut satisfiable = 0;
    for elem in list_elements(set) {
        if elem.is_empty() {
            continue; // RFC 9110 §5.6.1.2: ignore empty list elements.
        }
        let Some(spec) = parse_spec(elem) else {
            return RangeRequest::Full;
        };
        if count == MAX_RANGES {
            return RangeRequest::Full;
        }
        count += 1;
        if let Some(r) = resolve(spec, size) {
            specs[satisfiable] = r;
            satisfiable += 1;
        }
    }
    if count == 0 || size == 0 {
        // No range-spec at all is a syntax error; on an empty object no range can be
        // non-empty, and a 200 with an empty body is the useful answer.
        return RangeRequest::Full;
    }
    if satisfiable == 0 {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Satisfiable(ByteRanges { ranges: specs, len: satisfiable })
}

/// Where the one range of a Range header value starts, without the object's size (to judge
/// whether it lies ahead of the bytes at hand): `Some(Some(first))` for `bytes=first-[last]`,
/// `Some(None)` for a suffix (`bytes=-n`: counted from the end), `None` when the value is not a
/// single valid byte range (several, another unit, bad syntax).
pub fn single_range_start(value: &[u8]) -> Option<Option<u64>> {
    let mut elems = list_elements(byte_range_set(value)?).filter(|e| !e.is_empty());
    let spec = parse_spec(elems.next()?)?;
    if elems.next().is_some() {
        return None;
    }
    Some(match spec {
        Spec::Int { first, .. } => Some(first),
        Spec::Suffix(_) => None,
    })
}

/// The range set after `bytes=` (the unit is case-insensitive, RFC 9110 §14.1; only `bytes` is
/// defined), or `None` for another unit or no `=`.
fn byte_range_set(value: &[u8]) -> Option<&[u8]> {
    let value = trim_ows(value);
    let eq = value.iter().position(|&b| b == b'=')?;
    value[..eq].eq_ignore_ascii_case(b"bytes").then(|| &value[eq + 1..])
}

fn parse_spec(elem: &[u8]) -> Option<Spec> {
    let dash = elem.iter().position(|&b| b == b'-')?;
    let (first, last) = (&elem[..dash], &elem[dash + 1..]);
    if first.is_empty() {
        return Some(Spec::Suffix(parse_pos(last)?));
    }
    let first = parse_pos(first)?;
    if last.is_empty() {
        return Some(Spec::Int { first, last: None });
    }
    let last = parse_pos(last)?;
    // RFC 9110 §14.1.1: last-pos < first-pos makes the range-spec invalid.
    if last < first {
        return None;
    }
    Some(Spec::Int { first, last: Some(last) })
}

/// 1*DIGIT. Values past u64 saturate: a position that large is past any object anyway, and a
/// suffix that large means "everything".
fn parse_pos(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |acc, &b| acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// Half-open range within an object of `size` bytes, or None when it selects nothing.
fn resolve(spec: Spec, size: u64) -> Option<(u64, u64)> {
    match spec {
        Spec::Int { first, last } => {
            if first >= size {
                return None;
            }
            // last is inclusive; clamp to the object (RFC 9110 §14.1.2).
            let end = last.map_or(size, |l| l.saturating_add(1).min(size));
            Some((first, end))
        }
        Spec::Suffix(0) => None,
        Spec::Suffix(len) => Some((size.saturating_sub(len), size)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_ranges_start_without_the_size() {
        assert_eq!(single_range_start(b"bytes=100-"), Some(Some(100)));
        assert_eq!(single_range_start(b" Bytes=5-9 "), Some(Some(5)));
        assert_eq!(single_range_start(b"bytes=-500"), Some(None));
        for not_one in [&b"bytes=0-1,5-9"[..], b"items=0-1", b"bytes=9-5", b"bytes=x-", b"bytes=", b"0-1"] {
            assert_eq!(single_range_start(not_one), None, "{}", String::from_utf8_lossy(not_one));
        }
    }

    fn ranges(value: &str, size: u64) -> Vec<Range<u64>> {
        match parse_range(value.as_bytes(), size) {
            RangeRequest::Satisfiable(r) => {
                assert_eq!(r.len(), r.iter().count());
                assert!(!r.is_empty());
                assert_eq!(Some(r.first()), r.iter().next());
                r.iter().collect()
            }
            other => panic!("{value}: expected Satisfiable, got {other:?}"),
        }
    }

    fn single(value: &str, size: u64) -> Range<u64> {
        let all = ranges(value, size);
        assert_eq!(all.len(), 1, "{value}");
        all[0].clone()
    }

    #[test]
    fn single_ranges() {
        assert_eq!(single("bytes=0-99", 10_000), 0..100);
        assert_eq!(single("bytes=-500", 10_000), 9500..10_000);
        assert_eq!(single("bytes=9500-", 10_000), 9500..10_000);
        assert_eq!(single("bytes=0-0", 1), 0..1);
        assert_eq!(single("Bytes=5-5", 10), 5..6);
    }

    #[test]
    fn clamping() {
        assert_eq!(single("bytes=0-99999", 100), 0..100);
        assert_eq!(single("bytes=-1000", 100), 0..100);
        assert_eq!(single("bytes=50-18446744073709551615", 100), 50..100);
        assert_eq!(single("bytes=0-99999999999999999999999", 100), 0..100);
        assert_eq!(single("bytes=-99999999999999999999999", 100), 0..100);
    }

    #[test]
    fn multiple_ranges() {
        assert_eq!(ranges("bytes=0-9, 20-29,-5", 100), [0..10, 20..30, 95..100]);
        assert_eq!(ranges("bytes=0-9,,\t50-", 60), [0..10, 50..60]);
        // Unsatisfiable parts are dropped when another part is satisfiable.
        assert_eq!(single("bytes=500-600, 0-1", 100), 0..2);
        assert_eq!(single("bytes=-0, 0-1", 100), 0..2);
        let eight = "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7";
        assert_eq!(ranges(eight, 100).len(), 8);
        let nine = "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8";
        assert_eq!(parse_range(nine.as_bytes(), 100), RangeRequest::Full);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse_range(b"bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=100-200", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range(b"bytes=200-300, 100-", 100), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn ignored_headers() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=abc",
            "bytes=5",
            "bytes=-",
            "bytes=5-4",
            "bytes=0-1,x",
            "bytes=+1-2",
            "bytes=1 -2",
            "bytes=1--2",
            "items=0-1",
            "bytes =0-1",
            "bytes=0x1-2",
            "bytes=0-1;q",
            "bytes=1-2-3",
        ] {
            assert_eq!(parse_range(v.as_bytes(), 100), RangeRequest::Full, "{v:?}");
        }
        // Empty object: serve it whole rather than a 416 or an empty 206.
        assert_eq!(parse_range(b"bytes=0-10", 0), RangeRequest::Full);
        assert_eq!(parse_range(b"bytes=-10", 0), RangeRequest::Full);
    }
}
