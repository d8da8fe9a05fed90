//! Request paths in and origin paths out: percent-decoding and -encoding (RFC 3986 §2.1).
//!
//! Owns the strict decoder used to turn a request path into the object key, and the encoder
//! used to put a key back into an origin URL. It does not normalise (no `.`/`..` removal, no
//! slash merging): keys are opaque, as in S3, and the caller decides what to refuse.
//! The decoder is stricter than `percent_encoding::percent_decode`, which passes a malformed
//! `%zz` through unchanged: two spellings of one key must not map to two cache entries, and a
//! decoded CR/LF/NUL must never reach a log line or an origin request line.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::ParseError;

/// Bytes kept as-is by `encode_key`: RFC 3986 unreserved plus '/'.
const KEY_KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// Percent-decode a request path into UTF-8. Rejects invalid UTF-8, "%" not followed by two hex
/// digits, and decoded NUL/CR/LF -> ParseError::BadPath.
///
/// Borrows when there is nothing to decode (the common case); '+' stays '+' (that is a form
/// encoding rule, not a path one).
pub fn decode_path(raw: &[u8]) -> Result<Cow<'_, str>, ParseError> {
    let forbidden = |b: u8| b == 0 || b == b'\r' || b == b'\n';
    if !raw.contains(&b'%') {
        if raw.iter().any(|&b| forbidden(b)) {
            return Err(ParseError::BadPath);
        }
        return std::str::from_utf8(raw).map(Cow::Borrowed).map_err(|_| ParseError::BadPath);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let byte = if b == b'%' {
            let hi = raw.get(i + 1).and_then(|&h| hex(h));
            let lo = raw.get(i + 2).and_then(|&l| hex(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(ParseError::BadPath);
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            b
        };
        if forbidden(byte) {
            return Err(ParseError::BadPath);
        }
        out.push(byte);
    }
    String::from_utf8(out).map(Cow::Owned).map_err(|_| ParseError::BadPath)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Percent-encode an object key for an origin URL path: keep unreserved (A-Za-z0-9-._~) and '/',
/// encode everything else. Appends to `out`.
pub fn encode_key(key: &str, out: &mut String) {
    for piece in utf8_percent_encode(key, KEY_KEEP) {
        out.push_str(piece);
    }
}

/// True when `key`, read as a path, holds a `.` or `..` segment. Segments are split at '/' and
/// also at '\\', which some origins (IIS, Windows file servers) treat as a separator after
/// decoding `%5C`. A mirror must not put such a key into an origin URL: a normalising origin
/// would resolve it outside the MirrorURL's directory (RFC 3986 §5.2.4), and the percent-encoded
/// spellings (`%2E%2E`) are equivalent to the plain ones (§6.2.2.2), so encoding cannot help.
pub fn has_dot_segment(key: &str) -> bool {
    key.split(['/', '\\']).any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_in_every_position() {
        for k in ["..", ".", "../a", "./a", "a/..", "a/.", "a/../b", "a/./b", "a\\..\\b", "..\\a", "a/..\\b"] {
            assert!(has_dot_segment(k), "{k}");
        }
        for k in ["a", "a..b", "...", "a/.../b", ".a", "a.", "a/.b/c", "..a/b", "a/b..", "", "/", "a//b"] {
            assert!(!has_dot_segment(k), "{k}");
        }
    }

    #[test]
    fn borrows_when_nothing_to_decode() {
        assert!(matches!(decode_path(b"/a/b.jpg"), Ok(Cow::Borrowed("/a/b.jpg"))));
        assert!(matches!(decode_path(b"/a+b"), Ok(Cow::Borrowed("/a+b"))));
        assert!(matches!(decode_path(b""), Ok(Cow::Borrowed(""))));
    }

    #[test]
    fn decodes() {
        assert_eq!(decode_path(b"/cat%20one.jpg").as_deref(), Ok("/cat one.jpg"));
        assert_eq!(decode_path(b"/%E2%82%AC%2fx").as_deref(), Ok("/\u{20ac}/x"));
        assert_eq!(decode_path(b"%25").as_deref(), Ok("%"));
        assert_eq!(decode_path(b"/caf\xc3\xa9").as_deref(), Ok("/caf\u{e9}"));
    }

    #[test]
    fn rejects() {
        for bad in [
            &b"/%"[..],
            b"/%2",
            b"/%zz",
            b"/%2g",
            b"/%%20",
            b"/%00",
            b"/%0d",
            b"/%0A",
            b"/a\0b",
            b"/a\rb",
            b"/a\nb",
            b"/%ff",
            b"/%c3",
            b"/\xff",
            b"/%C3%28",
            b"/%+1",
        ] {
            assert_eq!(decode_path(bad), Err(ParseError::BadPath), "{bad:?}");
        }
    }

    #[test]
    fn encodes_keys() {
        let mut out = String::from("/bucket/");
        encode_key("photos/cat one+two?x=1#y%z~._-\u{e9}", &mut out);
        assert_eq!(out, "/bucket/photos/cat%20one%2Btwo%3Fx%3D1%23y%25z~._-%C3%A9");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        for key in ["a b/c", "\u{1f600}/x%y", "plain/key.txt", "sp ace?&=#"] {
            let mut out = String::new();
            encode_key(key, &mut out);
            assert_eq!(decode_path(out.as_bytes()).as_deref(), Ok(key));
        }
    }
}
