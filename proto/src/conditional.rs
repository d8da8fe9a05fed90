//! Parsing helpers for conditional requests (RFC 9110 §13): entity-tag lists and HTTP dates.
//!
//! Owns entity-tag list matching for If-Match / If-None-Match / If-Range and date parsing and
//! formatting (via `httpdate`). It does not decide precedence between conditions or pick the
//! 304/412 outcome: that needs the cached object's metadata and lives in the node.

use std::time::SystemTime;

/// True when `header_value` (`*` or a comma list of entity-tags) matches `etag`.
///
/// `etag` is our entity-tag as sent in an ETag header (`"abc"` or `W/"abc"`); a bare value
/// without quotes is taken as the opaque-tag itself. `weak` selects the comparison
/// (RFC 9110 §8.8.3.2): weak (If-None-Match) compares opaque-tags only; strong (If-Match,
/// If-Range) also requires both tags to be strong. A malformed list matches nothing after the
/// point where it breaks.
pub fn etag_matches(header_value: &[u8], etag: &str, weak: bool) -> bool {
    let (ours_weak, ours) = split_etag(etag.as_bytes());
    let mut rest = trim(header_value);
    if rest == b"*" {
        return true;
    }
    loop {
        // Skip list separators and whitespace (empty list elements are allowed).
        while let [b',' | b' ' | b'\t', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return false;
        }
        let Some((theirs_weak, theirs, tail)) = next_entity_tag(rest) else {
            return false;
        };
        let strong_ok = weak || (!theirs_weak && !ours_weak);
        if strong_ok && theirs == ours {
            return true;
        }
        rest = tail;
        // After a tag: only OWS then ',' or the end.
        let after = trim(rest);
        if !(after.is_empty() || after[0] == b',') {
            return false;
        }
    }
}

/// Splits our own ETag into (is_weak, opaque-tag without quotes).
fn split_etag(etag: &[u8]) -> (bool, &[u8]) {
    let (weak, tag) = match etag {
        [b'W', b'/', tail @ ..] => (true, tail),
        _ => (false, etag),
    };
    match tag {
        [b'"', inner @ .., b'"'] => (weak, inner),
        _ => (weak, tag),
    }
}

/// Parses `[W/] DQUOTE *etagc DQUOTE` from the start of `s`; returns (weak, opaque, rest).
/// Commas are legal inside the quotes, so the list cannot be split on commas first.
fn next_entity_tag(s: &[u8]) -> Option<(bool, &[u8], &[u8])> {
    let (weak, s) = match s {
        [b'W', b'/', tail @ ..] => (true, tail),
        _ => (false, s),
    };
    let [b'"', body @ ..] = s else {
        return None;
    };
    let close = body.iter().position(|&b| b == b'"')?;
    let opaque = &body[..close];
    // etagc = %x21 / %x23-7E / obs-text
    if !opaque.iter().all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
        return None;
    }
    Some((weak, opaque, &body[close + 1..]))
}

fn trim(s: &[u8]) -> &[u8] {
    crate::headers::trim_ows(s)
}

/// Parses an HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms).
pub fn parse_http_date(value: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(trim(value)).ok()?;
    httpdate::parse_http_date(s).ok()
}

/// Formats `t` as IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn fmt_http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn star_matches_anything() {
        assert!(etag_matches(b"*", "\"a\"", false));
        assert!(etag_matches(b" * ", "W/\"a\"", true));
    }

    #[test]
    fn strong_and_weak_comparison() {
        // RFC 9110 §8.8.3.2 table.
        assert!(!etag_matches(b"W/\"1\"", "W/\"1\"", false));
        assert!(etag_matches(b"W/\"1\"", "W/\"1\"", true));
        assert!(!etag_matches(b"W/\"1\"", "W/\"2\"", true));
        assert!(!etag_matches(b"W/\"1\"", "\"1\"", false));
        assert!(etag_matches(b"W/\"1\"", "\"1\"", true));
        assert!(etag_matches(b"\"1\"", "\"1\"", false));
        assert!(etag_matches(b"\"1\"", "\"1\"", true));
        assert!(!etag_matches(b"\"1\"", "W/\"1\"", false));
    }

    #[test]
    fn lists() {
        let v = b"\"xyzzy\", \"r2d2xxxx\",W/\"c3piozzzz\"";
        assert!(etag_matches(v, "\"r2d2xxxx\"", false));
        assert!(etag_matches(v, "\"c3piozzzz\"", true));
        assert!(!etag_matches(v, "\"c3piozzzz\"", false));
        assert!(!etag_matches(v, "\"nope\"", true));
        // Commas inside an entity-tag.
        assert!(etag_matches(b"\"a,b\", \"c\"", "\"a,b\"", false));
        assert!(!etag_matches(b"\"a,b\"", "\"a\"", false));
        // Empty elements and whitespace.
        assert!(etag_matches(b" , \"a\" ,, \"b\" ", "\"b\"", false));
        // Unquoted own etag is taken as the opaque-tag.
        assert!(etag_matches(b"\"abc\"", "abc", false));
        // S3-style multipart etag.
        assert!(etag_matches(
            b"\"d41d8cd98f00b204e9800998ecf8427e-2\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-2\"",
            false
        ));
    }

    #[test]
    fn malformed_lists() {
        assert!(!etag_matches(b"abc", "abc", true));
        assert!(!etag_matches(b"\"abc", "\"abc\"", true));
        assert!(!etag_matches(b"\"a\"\"b\"", "\"b\"", true));
        assert!(!etag_matches(b"w/\"a\"", "\"a\"", true));
        assert!(!etag_matches(b"\"a b\"", "\"a b\"", true));
        assert!(!etag_matches(b"", "\"a\"", true));
        // Matches before the break still count.
        assert!(etag_matches(b"\"a\", garbage", "\"a\"", true));
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(fmt_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse_http_date(b" Sun, 06 Nov 1994 08:49:37 GMT "), Some(t));
        assert_eq!(parse_http_date(b"yesterday"), None);
        assert_eq!(parse_http_date(b"\xff\xfe"), None);
        assert_eq!(parse_http_date(b""), None);
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_http_date(fmt_http_date(now).as_bytes()), Some(now));
    }
}
