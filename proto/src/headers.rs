//! `Headers`: the header fields of one parsed head, as offsets into the read buffer.
//!
//! Owns the fixed-size header array and the small helpers for reading comma-separated field
//! values (RFC 9110 §5.6.1). It does not know what any header means: framing and connection
//! semantics live in `head.rs`. No allocation: a stack array of `MAX_HEADERS` spans (1 KiB),
//! filled once per head from httparse's output.

use crate::limits::MAX_HEADERS;
use crate::span::{span_of, Span};

/// One header field: name and value as spans into the buffer the head was parsed from.
/// The value has leading and trailing whitespace already removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderSpan {
    pub name: Span,
    pub value: Span,
}

/// The header fields of a head, in wire order, without allocation.
#[derive(Clone)]
pub struct Headers {
    // Stack array: ~20 headers per request, filled once per request; 64 x 16 bytes.
    fields: [HeaderSpan; MAX_HEADERS],
    len: usize,
}

impl Headers {
    /// Copies httparse's parsed headers (which borrow `buf`) into spans.
    /// httparse was given an array of `MAX_HEADERS`, so `parsed` never has more.
    pub(crate) fn from_httparse(buf: &[u8], parsed: &[httparse::Header<'_>]) -> Headers {
        let mut headers = Headers::default();
        for (slot, h) in headers.fields.iter_mut().zip(parsed) {
            *slot = HeaderSpan { name: span_of(buf, h.name.as_bytes()), value: span_of(buf, h.value) };
            headers.len += 1;
        }
        headers
    }

    /// Number of header fields.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the head had no header fields.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Header fields in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &HeaderSpan> {
        self.fields[..self.len].iter()
    }

    /// Header fields in wire order, mutable (to move spans to another buffer).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn fields_mut(&mut self) -> impl Iterator<Item = &mut HeaderSpan> {
        self.fields[..self.len].iter_mut()
    }

    /// Value of the first field named `name` (ASCII case-insensitive), as a slice of `buf`.
    /// `buf` must be the buffer the head was parsed from.
    pub fn get<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.iter().find(|h| h.name.get(buf).eq_ignore_ascii_case(name.as_bytes())).map(|h| h.value.get(buf))
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers { fields: [HeaderSpan::default(); MAX_HEADERS], len: 0 }
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.fields[..self.len] == other.fields[..other.len]
    }
}

impl Eq for Headers {}

impl std::fmt::Debug for Headers {
    // Only the used slots: 64 default entries would drown the output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Elements of a comma-separated list value, each trimmed of OWS. Empty elements are yielded
/// as empty slices: some callers must reject them (Content-Length), others skip them
/// (RFC 9110 §5.6.1.2 asks recipients to ignore empty list elements).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// True when the comma-separated `value` contains `token` (ASCII case-insensitive).
pub(crate) fn list_contains(value: &[u8], token: &str) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_is_case_insensitive_and_first_match() {
        let buf = b"Host: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let mut raw = [httparse::EMPTY_HEADER; 4];
        let parsed = httparse::parse_headers(buf, &mut raw);
        let Ok(httparse::Status::Complete((_, parsed))) = parsed else {
            panic!("fixture must parse: {parsed:?}");
        };
        let headers = Headers::from_httparse(buf, parsed);
        assert_eq!(headers.len(), 3);
        assert!(!headers.is_empty());
        assert_eq!(headers.get(buf, "x-a"), Some(&b"1"[..]));
        assert_eq!(headers.get(buf, "HOST"), Some(&b"a"[..]));
        assert_eq!(headers.get(buf, "missing"), None);
        let names: Vec<&[u8]> = headers.iter().map(|h| h.name.get(buf)).collect();
        assert_eq!(names, [&b"Host"[..], b"X-A", b"x-a"]);
        assert!(format!("{headers:?}").matches("HeaderSpan").count() == 3);
    }

    #[test]
    fn empty_headers() {
        let h = Headers::default();
        assert!(h.is_empty());
        assert_eq!(h.iter().count(), 0);
        assert_eq!(h.get(b"", "host"), None);
    }

    #[test]
    fn list_helpers() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        let v: Vec<&[u8]> = list_elements(b"a, b ,,\tc").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
        assert!(list_contains(b"keep-alive, Upgrade", "upgrade"));
        assert!(!list_contains(b"keep-alive-ish", "keep-alive"));
    }
}
