//! `encode_request` and `encode_response`: a parsed head written back in canonical form.
//!
//! Owns the serialisation of heads that came out of `parse_request` / `parse_response`. The
//! output is the canonical form of the head, so two spellings of one head encode to the same
//! bytes, and the output parses back to an equal head (the property `crate::fuzz` checks):
//! - no empty lines before the start line (RFC 9112 §2.2 lets a server skip them);
//! - start line with single SP separators: `METHOD SP target SP HTTP/1.x CRLF`, or
//!   `HTTP/1.x SP code SP [reason] CRLF` (the SP before an empty reason is kept, RFC 9112 §4);
//! - one `Name: value CRLF` per field, in wire order: the name as sent (field names are
//!   case-insensitive, but some origins are not), one SP after the colon, and the value as
//!   parsed (leading and trailing OWS already gone);
//! - the empty line ending the head.
//!
//! It does not validate or rewrite anything: hop-by-hop headers, Host, framing headers all go
//! out as they came in; what to forward is the node's decision. Bodies are not written here
//! (see `encode_chunk_header` for chunked ones).

use crate::head::Version;
use crate::request::RequestHead;
use crate::response::ResponseHead;
use crate::Headers;

/// Appends `head` to `out` in canonical form. `buf` is the buffer `head` was parsed from.
///
/// The method is the exact text sent (`method_span`), so `Method::Other` methods survive; a
/// head built by hand with an empty `method_span` gets `method.as_str()`.
pub fn encode_request(head: &RequestHead, buf: &[u8], out: &mut Vec<u8>) {
    let method = head.method_span.get(buf);
    if method.is_empty() {
        out.extend_from_slice(head.method.as_str().as_bytes());
    } else {
        out.extend_from_slice(method);
    }
    out.push(b' ');
    out.extend_from_slice(head.target.get(buf));
    out.push(b' ');
    out.extend_from_slice(version_text(head.version));
    out.extend_from_slice(b"\r\n");
    encode_fields(&head.headers, buf, out);
}

/// Appends `head` to `out` in canonical form. `buf` is the buffer `head` was parsed from.
///
/// The status code is written as three digits (`parse_response` only accepts 100..=599). A
/// reason phrase that held obs-text was dropped by the parser and is written empty.
pub fn encode_response(head: &ResponseHead, buf: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(version_text(head.version));
    out.push(b' ');
    // Three digits by hand: no formatting machinery on the response path. A code outside
    // 100..=999 (only from a hand-built head) is clamped rather than mis-sized.
    let code = head.status.clamp(100, 999);
    out.extend_from_slice(&[b'0' + (code / 100) as u8, b'0' + (code / 10 % 10) as u8, b'0' + (code % 10) as u8]);
    out.push(b' ');
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    encode_fields(&head.headers, buf, out);
}

fn version_text(version: Version) -> &'static [u8] {
    match version {
        Version::Http10 => b"HTTP/1.0",
        Version::Http11 => b"HTTP/1.1",
    }
}

/// Header fields, one per line, then the empty line that ends the head.
fn encode_fields(headers: &Headers, buf: &[u8], out: &mut Vec<u8>) {
    for h in headers.iter() {
        out.extend_from_slice(h.name.get(buf));
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.get(buf));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_request, parse_response, Method, ParseError, Status};

    fn request(buf: &[u8]) -> RequestHead {
        match parse_request(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("fixture must parse: {other:?}"),
        }
    }

    fn response(buf: &[u8]) -> ResponseHead {
        match parse_response(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("fixture must parse: {other:?}"),
        }
    }

    fn encoded_request(buf: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_request(&request(buf), buf, &mut out);
        out
    }

    fn encoded_response(buf: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_response(&response(buf), buf, &mut out);
        out
    }

    #[test]
    fn canonical_request_is_a_fixed_point() {
        let canonical: &[u8] = b"GET /bucket/cat%20one.jpg?versionId=3 HTTP/1.1\r\n\
Host: edge.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nRange: bytes=0-1023\r\n\r\n";
        assert_eq!(encoded_request(canonical), canonical);
    }

    #[test]
    fn request_is_canonicalised() {
        // Leading empty line, no space and extra OWS around values, HTTP/1.0, body after.
        let buf = b"\r\nPUT /k HTTP/1.0\r\nhost:h\r\nContent-Length:\t 3 \t\r\nX-Empty:\r\n\r\nabc";
        assert_eq!(encoded_request(buf), b"PUT /k HTTP/1.0\r\nhost: h\r\nContent-Length: 3\r\nX-Empty: \r\n\r\n");
    }

    #[test]
    fn request_keeps_exact_method_and_field_name_case() {
        let buf = b"PATCH * HTTP/1.1\r\nHOST: h\r\nx-Amz-Date: 20240101T000000Z\r\n\r\n";
        assert_eq!(encoded_request(buf), buf);
        // A hand-built head without a method span falls back to the method's name.
        let mut head = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        head.method = Method::Delete;
        head.method_span = Default::default();
        let mut out = Vec::new();
        encode_request(&head, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &mut out);
        assert_eq!(out, b"DELETE / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn encode_appends() {
        let buf = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut out = b"prefix|".to_vec();
        encode_request(&request(buf), buf, &mut out);
        assert_eq!(out, b"prefix|GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn request_round_trip_keeps_framing() {
        let buf = b"POST /upload?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\
Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let enc = encoded_request(buf);
        let again = request(&enc);
        let orig = request(buf);
        assert_eq!(again.head_len, enc.len());
        assert_eq!(again.body, orig.body);
        assert_eq!(again.keep_alive, orig.keep_alive);
        assert_eq!(encoded_request(&enc), enc);
    }

    #[test]
    fn canonical_response_is_a_fixed_point() {
        let canonical: &[u8] = b"HTTP/1.1 206 Partial Content\r\nServer: nginx/1.22.1\r\n\
Content-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(encoded_response(canonical), canonical);
    }

    #[test]
    fn response_is_canonicalised() {
        assert_eq!(encoded_response(b"HTTP/1.0 200\r\nServer:x\r\n\r\nbody"), b"HTTP/1.0 200 \r\nServer: x\r\n\r\n");
        // obs-text in the reason: the parser drops the phrase, so does the encoding.
        assert_eq!(encoded_response(b"HTTP/1.1 404 Nicht gefunden \xc3\xa9\r\n\r\n"), b"HTTP/1.1 404 \r\n\r\n");
        assert_eq!(encoded_response(b"HTTP/1.1 100 Continue\r\n\r\n"), b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(encoded_response(b"HTTP/1.1 599 x\r\n\r\n"), b"HTTP/1.1 599 x\r\n\r\n");
    }

    #[test]
    fn response_status_is_three_digits() {
        let buf = b"HTTP/1.1 200 OK\r\n\r\n";
        let mut head = response(buf);
        for (status, text) in [(0u16, "100"), (304, "304"), (1000, "999")] {
            head.status = status;
            let mut out = Vec::new();
            encode_response(&head, buf, &mut out);
            assert_eq!(&out[9..12], text.as_bytes(), "{status}");
        }
    }

    #[test]
    fn response_round_trip_keeps_framing() {
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n";
        let enc = encoded_response(buf);
        let (orig, again) = (response(buf), response(&enc));
        assert_eq!(crate::response_framing(&orig, buf, false), crate::response_framing(&again, &enc, false));
        assert_eq!(again.head_len, enc.len());
        // A head that grows past the limit when canonicalised ("A:v" -> "A: v") is refused on
        // the way back: callers must not assume the encoding fits wherever the original did.
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..40 {
            big.extend_from_slice(b"A:");
            big.extend(std::iter::repeat_n(b'v', 405));
            big.extend_from_slice(b"\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert!(big.len() <= crate::MAX_HEAD_BYTES && big.len() + 40 > crate::MAX_HEAD_BYTES);
        let mut out = Vec::new();
        encode_response(&response(&big), &big, &mut out);
        assert_eq!(out.len(), big.len() + 40);
        assert_eq!(parse_response(&out), Err(ParseError::HeadTooLarge));
    }
}
