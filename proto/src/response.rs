//! `parse_response` and `response_framing`: an origin's response head and how its body ends.
//!
//! Owns the status line and the response-only framing rules of RFC 9112 §6.3. The origin is
//! untrusted: its heads get the same checks as client requests (bare LF, limits, Content-Length
//! syntax and agreement, CL together with TE, TE ending in `chunked`), because a response we
//! mis-frame gets cached and served to everyone. Body bytes are read by the caller (with a
//! `ChunkedDecoder` when framing says `Chunked`).
//!
//! Flow: `parse_response(buf)` -> `ResponseHead` (1xx heads come back too: skip `head_len` bytes
//! and parse again) -> `response_framing(&head, buf, request_was_head)` -> read the body.

use crate::error::ParseError;
use crate::head::{check_bare_lf, map_header_error, scan_headers, BodyFraming, Status, Version};
use crate::headers::Headers;
use crate::limits::{MAX_HEADERS, MAX_HEAD_BYTES};
use crate::span::{span_of, Span};

/// A parsed response head. All spans index the buffer given to `parse_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, 100..=599.
    pub status: u16,
    pub version: Version,
    /// Reason phrase; empty when absent or when it holds non-ASCII bytes.
    pub reason: Span,
    pub headers: Headers,
    /// Bytes consumed by the head, including the final CRLF.
    pub head_len: usize,
    /// From Connection and the version only. A `CloseDelimited` body (see `response_framing`)
    /// also ends the connection, whatever this says.
    pub keep_alive: bool,
}

/// Parses a response head from the start of `buf`. `Ok(Partial)`: read more and call again.
pub fn parse_response(buf: &[u8]) -> Result<Status<ResponseHead>, ParseError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut raw);
    let head_len = match res.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_bare_lf(window)?;
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(Status::Partial);
        }
        Err(e) => {
            // httparse fills version, code, reason in order; reason is set once the status line
            // is through.
            return Err(match (e, res.version, res.reason) {
                (httparse::Error::Version, None, _) => ParseError::BadVersion,
                (_, _, None) => ParseError::BadStatusLine,
                (e, _, Some(_)) => map_header_error(e, window),
            });
        }
    };
    check_bare_lf(&window[..head_len])?;

    let (Some(minor), Some(status), Some(reason)) = (res.version, res.code, res.reason) else {
        // httparse fills all three before returning Complete.
        return Err(ParseError::BadStatusLine);
    };
    if !(100..=599).contains(&status) {
        return Err(ParseError::BadStatusLine);
    }
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(ParseError::BadVersion),
    };
    let headers = Headers::from_httparse(buf, res.headers);
    // Validate framing now, so a bad origin head fails at parse time for every status.
    let facts = scan_headers(buf, &headers, version)?;
    Ok(Status::Complete(ResponseHead {
        status,
        version,
        reason: span_of(buf, reason.as_bytes()),
        headers,
        head_len,
        keep_alive: facts.keep_alive,
    }))
}

/// RFC 9112 §6.3: HEAD request, 1xx, 204, 304 -> None; TE chunked -> Chunked; CL ->
/// ContentLength; else CloseDelimited.
///
/// `buf` is the buffer `head` was parsed from. Errors only for a head that did not come from
/// `parse_response` (which has already run the same checks).
pub fn response_framing(head: &ResponseHead, buf: &[u8], request_was_head: bool) -> Result<BodyFraming, ParseError> {
    let facts = scan_headers(buf, &head.headers, head.version)?;
    let no_body = request_was_head || (100..200).contains(&head.status) || head.status == 204 || head.status == 304;
    Ok(if no_body {
        BodyFraming::None
    } else if facts.chunked {
        BodyFraming::Chunked
    } else if let Some(n) = facts.content_length {
        BodyFraming::ContentLength(n)
    } else {
        BodyFraming::CloseDelimited
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> ResponseHead {
        match parse_response(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("expected Complete for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn err(buf: &[u8]) -> ParseError {
        match parse_response(buf) {
            Err(e) => e,
            other => panic!("expected error for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn shotgun(buf: &[u8]) -> ResponseHead {
        let full = complete(buf);
        for k in 0..buf.len() {
            let got = parse_response(&buf[..k]);
            if k < full.head_len {
                assert_eq!(got, Ok(Status::Partial), "prefix {k} of {:?}", String::from_utf8_lossy(buf));
            } else {
                assert_eq!(got, Ok(Status::Complete(full.clone())), "prefix {k}");
            }
        }
        full
    }

    fn framing(buf: &[u8], request_was_head: bool) -> BodyFraming {
        let h = complete(buf);
        match response_framing(&h, buf, request_was_head) {
            Ok(f) => f,
            Err(e) => panic!("framing failed: {e:?}"),
        }
    }

    const S3_OK: &[u8] = b"HTTP/1.1 200 OK\r\n\
x-amz-id-2: 5o9aQm0m4yPjn0W1pJzA2a8+8hJt5k=\r\n\
x-amz-request-id: 0A49CE4060975EAC\r\n\
Date: Wed, 01 Mar 2006 12:00:00 GMT\r\n\
Last-Modified: Sun, 1 Jan 2006 12:00:00 GMT\r\n\
ETag: \"fba9dede5f27731c9771645a39863328\"\r\n\
Content-Length: 11\r\n\
Content-Type: text/plain\r\n\
Server: AmazonS3\r\n\r\nhello world";

    const NGINX_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx/1.22.1\r\n\
Content-Type: text/html\r\n\
Transfer-Encoding: chunked\r\n\
Connection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    const HTTP10_CLOSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close";

    #[test]
    fn s3_response() {
        let h = shotgun(S3_OK);
        assert_eq!(h.status, 200);
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.reason.get(S3_OK), b"OK");
        assert_eq!(h.headers.len(), 8);
        assert_eq!(h.headers.get(S3_OK, "etag"), Some(&b"\"fba9dede5f27731c9771645a39863328\""[..]));
        assert!(h.keep_alive);
        assert_eq!(&S3_OK[h.head_len..], b"hello world");
        assert_eq!(framing(S3_OK, false), BodyFraming::ContentLength(11));
        assert_eq!(framing(S3_OK, true), BodyFraming::None);
    }

    #[test]
    fn chunked_response() {
        let h = shotgun(NGINX_CHUNKED);
        assert!(h.keep_alive);
        assert_eq!(framing(NGINX_CHUNKED, false), BodyFraming::Chunked);
        assert_eq!(framing(NGINX_CHUNKED, true), BodyFraming::None);
    }

    #[test]
    fn close_delimited_http10() {
        let h = shotgun(HTTP10_CLOSE);
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
        assert_eq!(framing(HTTP10_CLOSE, false), BodyFraming::CloseDelimited);
        let buf = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert!(shotgun(buf).keep_alive);
        assert_eq!(framing(buf, false), BodyFraming::ContentLength(0));
        let buf = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        assert!(!shotgun(buf).keep_alive);
        assert_eq!(framing(buf, false), BodyFraming::CloseDelimited);
    }

    #[test]
    fn bodiless_statuses() {
        for status in
            ["100 Continue", "101 Switching Protocols", "103 Early Hints", "204 No Content", "304 Not Modified"]
        {
            let buf = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(framing(buf.as_bytes(), false), BodyFraming::None, "{status}");
        }
        let buf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(framing(buf, false), BodyFraming::ContentLength(0));
    }

    #[test]
    fn continue_then_final_in_one_buffer() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let first = complete(buf);
        assert_eq!(first.status, 100);
        assert_eq!(first.head_len, 25);
        let rest = &buf[first.head_len..];
        let second = shotgun(rest);
        assert_eq!(second.status, 201);
        assert_eq!(second.reason.get(rest), b"Created");
        assert_eq!(second.head_len, rest.len());
    }

    #[test]
    fn reason_phrase_variants() {
        let buf = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
        let h = shotgun(buf);
        assert!(h.reason.is_empty());
        let buf = b"HTTP/1.1 200 \r\n\r\n";
        assert!(complete(buf).reason.is_empty());
        let buf = b"HTTP/1.1 500 Internal Server Error\r\n\r\n";
        assert_eq!(complete(buf).reason.get(buf), b"Internal Server Error");
        // obs-text: httparse drops the phrase; we get an empty span, not a bogus one.
        let buf = b"HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\n\r\n";
        assert!(complete(buf).reason.is_empty());
    }

    #[test]
    fn status_line_errors() {
        assert_eq!(err(b"HTTP/2 200 OK\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"HTTP/1.2 200 OK\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"ICY 200 OK\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"HTTP/1.1 20 OK\r\n\r\n"), ParseError::BadStatusLine);
        assert_eq!(err(b"HTTP/1.1 2000 OK\r\n\r\n"), ParseError::BadStatusLine);
        assert_eq!(err(b"HTTP/1.1 abc OK\r\n\r\n"), ParseError::BadStatusLine);
        assert_eq!(err(b"HTTP/1.1 099 Low\r\n\r\n"), ParseError::BadStatusLine);
        assert_eq!(err(b"HTTP/1.1 600 High\r\n\r\n"), ParseError::BadStatusLine);
        assert_eq!(err(b"HTTP/1.1 200 O\x01K\r\n\r\n"), ParseError::BadStatusLine);
    }

    #[test]
    fn untrusted_origin_framing_rules() {
        assert_eq!(err(b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n"), ParseError::BareLf);
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\n\n"), ParseError::BareLf);
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), ParseError::ObsFold);
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ParseError::ContentLengthWithTransferEncoding
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            ParseError::ConflictingContentLength
        );
        assert_eq!(err(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), ParseError::BadContentLength);
        // Even on a 304: we validate every head we are going to cache.
        assert_eq!(err(b"HTTP/1.1 304 NM\r\nContent-Length: x\r\n\r\n"), ParseError::BadContentLength);
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            ParseError::BadTransferEncoding
        );
        assert_eq!(err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), ParseError::BadTransferEncoding);
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(framing(buf, false), BodyFraming::Chunked);
    }

    #[test]
    fn response_limits() {
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        while buf.len() < MAX_HEAD_BYTES {
            // Long lines: the size limit, not the count limit, must trip.
            buf.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(500)).as_bytes());
        }
        assert_eq!(err(&buf), ParseError::HeadTooLarge);
        assert_eq!(parse_response(&buf[..MAX_HEAD_BYTES - 1]), Ok(Status::Partial));
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(err(&buf), ParseError::TooManyHeaders);
    }

    #[test]
    fn garbage_never_panics() {
        for fixture in [S3_OK, NGINX_CHUNKED, HTTP10_CLOSE] {
            for i in 0..fixture.len() {
                for b in [0u8, b'\r', b'\n', b' ', b':', 0xff] {
                    let mut m = fixture.to_vec();
                    m[i] = b;
                    if let Ok(Status::Complete(h)) = parse_response(&m) {
                        assert!(h.head_len <= m.len());
                        assert!((100..=599).contains(&h.status));
                        assert!(response_framing(&h, &m, false).is_ok());
                    }
                }
            }
        }
    }
}
