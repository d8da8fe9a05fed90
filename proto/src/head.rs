//! Types shared by request and response heads, and the checks both must pass.
//!
//! Owns `Status`, `Version`, `Method` and `BodyFraming` (spans live in `span.rs`), plus the
//! crate-internal validation that is the same for both directions: bare-LF detection (httparse
//! accepts LF line endings; we do not, RFC 9112 §2.2), mapping httparse errors to `ParseError`,
//! and one pass over the headers that validates Content-Length / Transfer-Encoding (the request-smuggling surface,
//! RFC 9112 §6) and reads Connection, Expect and Host. The start lines themselves are parsed in
//! `request.rs` and `response.rs`.

use crate::error::ParseError;
use crate::headers::{list_contains, list_elements, trim_ows, Headers};

/// Result of feeding a parser: the value, or "need more bytes" (never an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// HTTP version of a head. Only 1.0 and 1.1 parse; anything else is `BadVersion`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// Request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
/// The exact text of an `Other` method is `RequestHead::method_span`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Options,
    Other,
}

impl Method {
    pub(crate) fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"PUT" => Method::Put,
            b"POST" => Method::Post,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// Method name for logs and metric labels; `Other` is "OTHER" to keep label sets bounded.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }
}

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body follows.
    None,
    /// Exactly this many bytes follow.
    ContentLength(u64),
    /// Chunked transfer coding: feed the bytes to a `ChunkedDecoder`.
    Chunked,
    /// The body runs until the peer closes (responses only); the connection cannot be reused.
    CloseDelimited,
}

/// Rejects any LF not preceded by CR in `head` (RFC 9112 §2.2 lets us reject; accepting it lets
/// a front proxy and us disagree on where a header ends).
pub(crate) fn check_bare_lf(head: &[u8]) -> Result<(), ParseError> {
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            return Err(ParseError::BareLf);
        }
        prev = b;
    }
    Ok(())
}

/// Maps an httparse error raised in the header section. A header line starting with whitespace
/// is obs-fold (RFC 9112 §5.2); httparse reports it as a bad header name.
pub(crate) fn map_header_error(e: httparse::Error, buf: &[u8]) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::HeaderName if has_folded_line(buf) => ParseError::ObsFold,
        _ => ParseError::BadHeader,
    }
}

/// True when a line inside the head (before the first empty line) starts with SP or HTAB.
fn has_folded_line(buf: &[u8]) -> bool {
    for w in buf.windows(3) {
        if w[0] == b'\n' && (w[1] == b' ' || w[1] == b'\t') {
            return true;
        }
        // End of head: stop before body bytes.
        if w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && w[2] == b'\n')) {
            return false;
        }
    }
    false
}

/// Facts about a head gathered in one pass over its headers, already validated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeadFacts {
    /// Agreed Content-Length, if any was sent.
    pub content_length: Option<u64>,
    /// A valid Transfer-Encoding ending in `chunked` was sent.
    pub chunked: bool,
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1.
    pub expect_continue: bool,
    /// Number of Host fields.
    pub host_count: usize,
}

/// Validates framing headers and reads connection semantics. Rules (RFC 9112 §6, §9.3):
/// - Content-Length: every list element of every CL field is a non-empty run of digits that
///   fits u64, and all are equal.
/// - Transfer-Encoding: the codings of all TE fields, in order, end with exactly one `chunked`;
///   not allowed in HTTP/1.0 messages; not allowed together with Content-Length.
/// - keep-alive: 1.1 unless `Connection: close`; 1.0 only with `Connection: keep-alive`.
pub(crate) fn scan_headers(buf: &[u8], headers: &Headers, version: Version) -> Result<HeadFacts, ParseError> {
    let mut facts = HeadFacts::default();
    let mut has_te = false;
    let mut chunked_last = false;
    let mut te_bad = false;
    let mut close = false;
    let mut keep_alive = false;

    for h in headers.iter() {
        let name = h.name.get(buf);
        let value = h.value.get(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            for elem in list_elements(value) {
                let n = parse_decimal(elem).ok_or(ParseError::BadContentLength)?;
                match facts.content_length {
                    Some(prev) if prev != n => return Err(ParseError::ConflictingContentLength),
                    _ => facts.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_te = true;
            for coding in list_elements(value).filter(|e| !e.is_empty()) {
                if chunked_last {
                    // Something after `chunked` (another coding or a second `chunked`).
                    te_bad = true;
                }
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= list_contains(value, "close");
            keep_alive |= list_contains(value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            facts.expect_continue |= trim_ows(value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            facts.host_count += 1;
        }
    }

    if has_te {
        if facts.content_length.is_some() {
            return Err(ParseError::ContentLengthWithTransferEncoding);
        }
        if te_bad || !chunked_last || version == Version::Http10 {
            return Err(ParseError::BadTransferEncoding);
        }
        facts.chunked = true;
    }
    facts.keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive && !close,
    };
    facts.expect_continue &= version == Version::Http11;
    Ok(facts)
}

/// A non-empty run of ASCII digits that fits u64; no sign, no spaces.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_round_trip() {
        for m in ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"] {
            assert_eq!(Method::from_bytes(m.as_bytes()).as_str(), m);
        }
        assert_eq!(Method::from_bytes(b"get"), Method::Other);
        assert_eq!(Method::from_bytes(b"PATCH").as_str(), "OTHER");
    }

    #[test]
    fn bare_lf() {
        assert_eq!(check_bare_lf(b"a\r\nb\r\n\r\n"), Ok(()));
        assert_eq!(check_bare_lf(b"a\nb"), Err(ParseError::BareLf));
        assert_eq!(check_bare_lf(b"\n"), Err(ParseError::BareLf));
        assert_eq!(check_bare_lf(b"a\r\n\n"), Err(ParseError::BareLf));
        assert_eq!(check_bare_lf(b"a\r"), Ok(()));
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"0012"), Some(12));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        for bad in [&b""[..], b"+1", b"-1", b"1 2", b"0x10", b" 1"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn folded_line_detection() {
        assert!(has_folded_line(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"));
        assert!(has_folded_line(b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"));
        assert!(!has_folded_line(b"GET / HTTP/1.1\r\nA: b\r\n\r\n body\r\n more"));
    }
}
