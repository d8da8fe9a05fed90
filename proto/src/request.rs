//! `parse_request`: one HTTP/1.1 request head from the front of a read buffer.
//!
//! Owns the request line (method, request-target split into path and query, version) and the
//! request-only rules: Host presence (RFC 9112 §3.2), the URI length limit, and request body
//! framing (RFC 9112 §6.3: TE chunked, else Content-Length, else no body). It does not decode
//! the path (`path.rs`), read the body (`chunked.rs` or the caller), or know about sockets:
//! the caller appends bytes to one buffer and calls again on `Partial`.
//!
//! Flow: httparse tokenizes the head (bounded to `MAX_HEAD_BYTES`) into a stack array; we then
//! reject what httparse lets through (bare LF, oversize target) and validate framing in
//! `head::scan_headers`. `head_len` tells the caller where the body (or the next pipelined
//! request) starts.

use crate::error::ParseError;
use crate::head::{check_bare_lf, map_header_error, scan_headers, BodyFraming, Method, Status, Version};
use crate::headers::Headers;
use crate::limits::{RequestLimits, MAX_HEADERS};
use crate::span::{span_of, Span};

/// A parsed request head. All spans index the buffer given to `parse_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// Exact method text (useful for `Method::Other`).
    pub method_span: Span,
    /// Raw request-target as sent (origin-form `/a?b`, or absolute-form / asterisk-form /
    /// authority-form, which the caller may refuse).
    pub target: Span,
    /// `target` up to the first '?', still percent-encoded (see `decode_path`).
    pub path: Span,
    /// After the first '?', without it; `None` when the target has no '?'.
    pub query: Option<Span>,
    pub version: Version,
    pub headers: Headers,
    /// Bytes consumed by the head, including the final CRLF: the body or next request starts here.
    pub head_len: usize,
    /// `None`, `ContentLength` or `Chunked`: a request body is never close-delimited.
    pub body: BodyFraming,
    /// Whether the connection may serve another request after this one.
    pub keep_alive: bool,
    /// HTTP/1.1 `Expect: 100-continue`: send `100 Continue` before reading the body.
    pub expect_continue: bool,
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(Partial)` means append more bytes and call again with the whole buffer. Errors are
/// final: answer with `err.status()` and close the connection.
pub fn parse_request(buf: &[u8]) -> Result<Status<RequestHead>, ParseError> {
    parse_request_with(buf, &RequestLimits::DEFAULT)
}

/// [`parse_request`] under configured limits (each at most its const ceiling).
pub fn parse_request_with(buf: &[u8], limits: &RequestLimits) -> Result<Status<RequestHead>, ParseError> {
    let limits = limits.clamped();
    // Never look past the head limit: bounds the work per call as well as the memory.
    let window = &buf[..buf.len().min(limits.head_bytes)];
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_bare_lf(window)?;
            check_partial_target(window, limits.uri_bytes)?;
            if buf.len() >= limits.head_bytes {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(Status::Partial);
        }
        Err(e) => {
            // httparse sets `version` once the request line is through; errors before that are
            // in the request line.
            return Err(match (e, req.version) {
                (httparse::Error::Version, None) => ParseError::BadVersion,
                (_, None) => {
                    check_partial_target(window, limits.uri_bytes)?;
                    ParseError::BadRequestLine
                }
                (_, Some(_)) if !request_line_ends_in_crlf(window, req.path) => ParseError::BadRequestLine,
                (e, Some(_)) => map_header_error(e, window),
            });
        }
    };
    check_bare_lf(&window[..head_len])?;

    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        // httparse fills all three before returning Complete.
        return Err(ParseError::BadRequestLine);
    };
    if target.len() > limits.uri_bytes {
        return Err(ParseError::UriTooLong);
    }
    if req.headers.len() > limits.headers {
        return Err(ParseError::TooManyHeaders);
    }
    let version = match minor {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(ParseError::BadVersion),
    };
    let method_span = span_of(buf, method.as_bytes());
    let target = span_of(buf, target.as_bytes());
    let (path, query) = split_target(buf, target);
    let headers = Headers::from_httparse(buf, req.headers);

    let facts = scan_headers(buf, &headers, version)?;
    if facts.host_count > 1 {
        // RFC 9112 §3.2: more than one Host is a 400; two hosts means two cache keys.
        return Err(ParseError::BadHeader);
    }
    if facts.host_count == 0 && version == Version::Http11 {
        return Err(ParseError::MissingHost);
    }
    let body = if facts.chunked {
        BodyFraming::Chunked
    } else if let Some(n) = facts.content_length {
        BodyFraming::ContentLength(n)
    } else {
        BodyFraming::None
    };

    Ok(Status::Complete(RequestHead {
        method: Method::from_bytes(method.as_bytes()),
        method_span,
        target,
        path,
        query,
        version,
        headers,
        head_len,
        body,
        keep_alive: facts.keep_alive,
        expect_continue: facts.expect_continue,
    }))
}

/// Splits the target at the first '?' into path and query spans.
fn split_target(buf: &[u8], target: Span) -> (Span, Option<Span>) {
    match target.get(buf).iter().position(|&b| b == b'?') {
        Some(q) => {
            // q < target.len() <= MAX_URI_BYTES, so it fits u32 and the adds cannot overflow.
            let q = q as u32;
            let path = Span { start: target.start, end: target.start + q };
            let query = Span { start: target.start + q + 1, end: target.end };
            (path, Some(query))
        }
        None => (target, None),
    }
}

/// After httparse read the version, checks that CRLF follows it: an error right there (e.g.
/// `HTTP/1.1 \r\n`) is in the request line, not in the headers.
fn request_line_ends_in_crlf(window: &[u8], target: Option<&str>) -> bool {
    let Some(target) = target else {
        return false;
    };
    // target, SP, "HTTP/1.x" (8 bytes), then CRLF.
    let end = span_of(window, target.as_bytes()).end as usize;
    let crlf = end.checked_add(9).and_then(|at| window.get(at..at.checked_add(2)?));
    crlf == Some(b"\r\n")
}

/// While the request line is incomplete, fail early with 414 once the target alone is over the
/// limit, instead of waiting for the whole head to hit 431.
fn check_partial_target(window: &[u8], uri_limit: usize) -> Result<(), ParseError> {
    // httparse skips empty lines before the request line (RFC 9112 §2.2).
    let line = {
        let mut s = window;
        while let [b'\r' | b'\n', rest @ ..] = s {
            s = rest;
        }
        s
    };
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Ok(());
    };
    let after = &line[sp + 1..];
    let target_len = after.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(after.len());
    if target_len > uri_limit {
        return Err(ParseError::UriTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_HEAD_BYTES, MAX_URI_BYTES};

    fn complete(buf: &[u8]) -> RequestHead {
        match parse_request(buf) {
            Ok(Status::Complete(h)) => h,
            other => panic!("expected Complete for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn err(buf: &[u8]) -> ParseError {
        match parse_request(buf) {
            Err(e) => e,
            other => panic!("expected error for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Every strict prefix of the head is Partial; every prefix that contains the whole head
    /// parses to the same result as the full buffer.
    fn shotgun(buf: &[u8]) -> RequestHead {
        let full = complete(buf);
        for k in 0..buf.len() {
            let got = parse_request(&buf[..k]);
            if k < full.head_len {
                assert_eq!(got, Ok(Status::Partial), "prefix {k} of {:?}", String::from_utf8_lossy(buf));
            } else {
                assert_eq!(got, Ok(Status::Complete(full.clone())), "prefix {k}");
            }
        }
        full
    }

    const CURL: &[u8] = b"GET /bucket/photos/cat%20one.jpg?versionId=3&x=y HTTP/1.1\r\n\
Host: edge.example.com\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\r\n";

    const BROWSER: &[u8] = b"GET /static/app.js HTTP/1.1\r\n\
Host: cdn.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Accept: */*\r\n\
Sec-Fetch-Site: same-origin\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Dest: script\r\n\
Referer: https://cdn.example.com/index.html\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n\
Cookie: session=abc123; theme=dark; _ga=GA1.2.3456789.1700000000\r\n\
If-None-Match: \"5f3a-1bc\", W/\"5f3a-1bd\"\r\n\
If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
Range: bytes=0-1023\r\n\r\n";

    const PUT_CL: &[u8] = b"PUT /bucket/key HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\
Expect: 100-Continue\r\n\r\nhello";

    const POST_CHUNKED: &[u8] = b"POST /upload HTTP/1.1\r\nHost: h\r\n\
Transfer-Encoding: gzip, Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    const HTTP10: &[u8] = b"HEAD /x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";

    #[test]
    fn curl_request() {
        let h = shotgun(CURL);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.method_span.get(CURL), b"GET");
        assert_eq!(h.target.get(CURL), b"/bucket/photos/cat%20one.jpg?versionId=3&x=y");
        assert_eq!(h.path.get(CURL), b"/bucket/photos/cat%20one.jpg");
        assert_eq!(h.query.map(|q| q.get(CURL)), Some(&b"versionId=3&x=y"[..]));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers.len(), 3);
        assert_eq!(h.headers.get(CURL, "user-agent"), Some(&b"curl/8.5.0"[..]));
        assert_eq!(h.head_len, CURL.len());
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn browser_request() {
        let h = shotgun(BROWSER);
        assert_eq!(h.headers.len(), 17);
        assert_eq!(h.query, None);
        assert_eq!(h.path, h.target);
        assert_eq!(h.headers.get(BROWSER, "range"), Some(&b"bytes=0-1023"[..]));
        assert!(h.keep_alive);
    }

    #[test]
    fn put_with_content_length_and_expect() {
        let h = shotgun(PUT_CL);
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.body, BodyFraming::ContentLength(5));
        assert!(h.expect_continue);
        assert_eq!(&PUT_CL[h.head_len..], b"hello");
    }

    #[test]
    fn post_chunked() {
        let h = shotgun(POST_CHUNKED);
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(POST_CHUNKED[h.head_len..].starts_with(b"5\r\nhello"));
    }

    #[test]
    fn http10_keep_alive_without_host() {
        let h = shotgun(HTTP10);
        assert_eq!(h.method, Method::Head);
        assert_eq!(h.version, Version::Http10);
        assert!(h.keep_alive);
        let h = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(h.headers.len(), 0);
        // Expect is an HTTP/1.1 mechanism.
        let h = complete(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn pipelined_requests() {
        let mut buf = CURL.to_vec();
        buf.extend_from_slice(PUT_CL);
        buf.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
        let first = shotgun(&buf);
        assert_eq!(first.head_len, CURL.len());
        let rest = &buf[first.head_len..];
        let second = complete(rest);
        assert_eq!(second.body, BodyFraming::ContentLength(5));
        let rest = &rest[second.head_len + 5..];
        let third = complete(rest);
        assert_eq!(third.path.get(rest), b"/next");
        assert_eq!(third.head_len, rest.len());
    }

    #[test]
    fn other_methods_and_targets() {
        let buf = b"PATCH * HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = complete(buf);
        assert_eq!(h.method, Method::Other);
        assert_eq!(h.method_span.get(buf), b"PATCH");
        assert_eq!(h.path.get(buf), b"*");
        let buf = b"DELETE /a? HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = complete(buf);
        assert_eq!(h.method, Method::Delete);
        assert_eq!(h.path.get(buf), b"/a");
        assert_eq!(h.query, Some(Span { start: 10, end: 10 }));
        let h = complete(b"OPTIONS /?a?b HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.method, Method::Options);
        assert_eq!(h.query.map(|q| q.len()), Some(3));
    }

    #[test]
    fn leading_empty_line_is_skipped() {
        let buf = b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = shotgun(buf);
        assert_eq!(h.method_span, Span { start: 2, end: 5 });
    }

    #[test]
    fn bare_lf_rejected() {
        assert_eq!(err(b"GET / HTTP/1.1\nHost: h\r\n\r\n"), ParseError::BareLf);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\n\r\n"), ParseError::BareLf);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\r\n\n"), ParseError::BareLf);
        assert_eq!(err(b"GET / HTTP/1.1\nHost: h\n\n"), ParseError::BareLf);
        assert_eq!(err(b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), ParseError::BareLf);
        // Detected while still partial.
        assert_eq!(err(b"GET / HTTP/1.1\nHost: h"), ParseError::BareLf);
        // A bare LF in the body is not our business.
        let h = complete(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n\n\n");
        assert_eq!(h.body, BodyFraming::ContentLength(2));
    }

    #[test]
    fn bare_cr_and_obs_fold_rejected() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), ParseError::ObsFold);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), ParseError::ObsFold);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: h\rX: a\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHo(st: h\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(err(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"), ParseError::BadHeader);
    }

    #[test]
    fn request_line_errors() {
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"GET / HTTP/1.2\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"GET / FTP/1.1\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), ParseError::BadRequestLine);
        assert_eq!(err(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), ParseError::BadVersion);
        assert_eq!(err(b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n"), ParseError::BadRequestLine);
        assert_eq!(err(b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), ParseError::BadRequestLine);
        assert_eq!(err(b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), ParseError::BadRequestLine);
        assert_eq!(err(b"GET / HTTP/1.1\rHost: h\r\n\r\n"), ParseError::BadRequestLine);
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), ParseError::MissingHost);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), ParseError::BadHeader);
        assert_eq!(complete(b"GET / HTTP/1.1\r\nHOST: a\r\n\r\n").headers.len(), 1);
    }

    #[test]
    fn content_length_rules() {
        let p = |cl: &str| {
            let buf = format!("PUT / HTTP/1.1\r\nHost: h\r\n{cl}\r\n\r\n");
            parse_request(buf.as_bytes()).map(|s| match s {
                Status::Complete(h) => h.body,
                Status::Partial => panic!("partial"),
            })
        };
        assert_eq!(p("Content-Length: 0"), Ok(BodyFraming::ContentLength(0)));
        assert_eq!(p("Content-Length: 42"), Ok(BodyFraming::ContentLength(42)));
        assert_eq!(p("content-length:   7   "), Ok(BodyFraming::ContentLength(7)));
        assert_eq!(p("Content-Length: 7\r\nContent-Length: 7"), Ok(BodyFraming::ContentLength(7)));
        assert_eq!(p("Content-Length: 7, 7,7"), Ok(BodyFraming::ContentLength(7)));
        assert_eq!(p("Content-Length: 18446744073709551615"), Ok(BodyFraming::ContentLength(u64::MAX)));
        for bad in [
            "Content-Length: +5",
            "Content-Length: -5",
            "Content-Length: 5 5",
            "Content-Length: ",
            "Content-Length: 0x5",
            "Content-Length: 5,",
            "Content-Length: ,5",
            "Content-Length: 18446744073709551616",
            "Content-Length: 99999999999999999999999",
        ] {
            assert_eq!(p(bad), Err(ParseError::BadContentLength), "{bad}");
        }
        for conflict in [
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5, 6",
            "Content-Length: 5\r\nContent-Length: 5, 50",
        ] {
            assert_eq!(p(conflict), Err(ParseError::ConflictingContentLength), "{conflict}");
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let p = |te: &str, version: &str| {
            let buf = format!("POST / {version}\r\nHost: h\r\n{te}\r\n\r\n");
            parse_request(buf.as_bytes()).map(|s| match s {
                Status::Complete(h) => h.body,
                Status::Partial => panic!("partial"),
            })
        };
        let v11 = "HTTP/1.1";
        assert_eq!(p("Transfer-Encoding: chunked", v11), Ok(BodyFraming::Chunked));
        assert_eq!(p("transfer-encoding: CHUNKED", v11), Ok(BodyFraming::Chunked));
        assert_eq!(p("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", v11), Ok(BodyFraming::Chunked));
        assert_eq!(p("Transfer-Encoding: gzip,,chunked", v11), Ok(BodyFraming::Chunked));
        for bad in [
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
            "Transfer-Encoding: ",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding: chunked;q=1",
            "Transfer-Encoding: \"chunked\"",
        ] {
            assert_eq!(p(bad, v11), Err(ParseError::BadTransferEncoding), "{bad}");
        }
        assert_eq!(p("Transfer-Encoding: chunked", "HTTP/1.0"), Err(ParseError::BadTransferEncoding));
        for smuggle in [
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
            "Transfer-Encoding: gzip\r\nContent-Length: 0",
        ] {
            assert_eq!(p(smuggle, v11), Err(ParseError::ContentLengthWithTransferEncoding), "{smuggle}");
        }
    }

    #[test]
    fn connection_and_expect() {
        let p = |hdrs: &str, version: &str| {
            let buf = format!("GET / {version}\r\nHost: h\r\n{hdrs}\r\n");
            complete(buf.as_bytes())
        };
        assert!(p("", "HTTP/1.1").keep_alive);
        assert!(!p("Connection: close\r\n", "HTTP/1.1").keep_alive);
        assert!(!p("Connection: Upgrade, CLOSE\r\n", "HTTP/1.1").keep_alive);
        assert!(!p("Connection: keep-alive\r\nConnection: close\r\n", "HTTP/1.1").keep_alive);
        assert!(p("Connection: closed\r\n", "HTTP/1.1").keep_alive);
        assert!(!p("", "HTTP/1.0").keep_alive);
        assert!(p("Connection: keep-alive\r\n", "HTTP/1.0").keep_alive);
        assert!(p("Connection: foo,  KEEP-ALIVE \r\n", "HTTP/1.0").keep_alive);
        assert!(!p("Connection: keep-alive, close\r\n", "HTTP/1.0").keep_alive);
        assert!(p("Expect: 100-continue\r\n", "HTTP/1.1").expect_continue);
        assert!(!p("Expect: 200-ok\r\n", "HTTP/1.1").expect_continue);
    }

    #[test]
    fn head_too_large() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        while buf.len() < MAX_HEAD_BYTES {
            // Long lines: the size limit, not the count limit, must trip.
            buf.extend_from_slice(format!("X-Filler: {}\r\n", "a".repeat(500)).as_bytes());
        }
        // Never completes: refused as soon as the limit is reached, while still partial.
        assert_eq!(err(&buf[..MAX_HEAD_BYTES]), ParseError::HeadTooLarge);
        assert_eq!(parse_request(&buf[..MAX_HEAD_BYTES - 1]), Ok(Status::Partial));
        // Completing past the limit does not help.
        buf.extend_from_slice(b"\r\n");
        assert_eq!(err(&buf), ParseError::HeadTooLarge);
    }

    #[test]
    fn head_exactly_at_limit_is_accepted() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        let pad = MAX_HEAD_BYTES - buf.len() - 4;
        buf.extend(std::iter::repeat_n(b'a', pad));
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(buf.len(), MAX_HEAD_BYTES);
        assert_eq!(complete(&buf).head_len, MAX_HEAD_BYTES);
    }

    #[test]
    fn too_many_headers() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 1..MAX_HEADERS {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut ok = buf.clone();
        ok.extend_from_slice(b"\r\n");
        assert_eq!(complete(&ok).headers.len(), MAX_HEADERS);
        buf.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(err(&buf), ParseError::TooManyHeaders);
    }

    #[test]
    fn uri_too_long() {
        let long = "a".repeat(MAX_URI_BYTES);
        let ok = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", &long[1..]);
        assert_eq!(complete(ok.as_bytes()).target.len(), MAX_URI_BYTES);
        let bad = format!("GET /{long} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(err(bad.as_bytes()), ParseError::UriTooLong);
        // Reported while the request line is still incomplete, before the head limit.
        let partial = format!("GET /{long}");
        assert_eq!(err(partial.as_bytes()), ParseError::UriTooLong);
        assert_eq!(parse_request(&partial.as_bytes()[..partial.len() - 1]), Ok(Status::Partial));
        // A target longer than the whole head limit is still a 414, not a 431.
        let huge = format!("GET /{}", "b".repeat(MAX_HEAD_BYTES * 2));
        assert_eq!(err(huge.as_bytes()), ParseError::UriTooLong);
    }

    #[test]
    fn garbage_never_panics() {
        // Cheap deterministic fuzz: mutate fixtures byte by byte, parse every prefix.
        for fixture in [CURL, BROWSER, PUT_CL, POST_CHUNKED, HTTP10] {
            for i in 0..fixture.len() {
                for b in [0u8, b'\r', b'\n', b' ', b':', 0xff] {
                    let mut m = fixture.to_vec();
                    m[i] = b;
                    if let Ok(Status::Complete(h)) = parse_request(&m) {
                        assert!(h.head_len <= m.len());
                        for hs in h.headers.iter() {
                            assert!(hs.name.end as usize <= h.head_len);
                            assert!(hs.value.end as usize <= h.head_len);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn configured_limits_tighten_the_ceilings() {
        let limits = RequestLimits { head_bytes: 128, headers: 2, uri_bytes: 16 };
        let ok = b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(parse_request_with(ok, &limits), Ok(Status::Complete(_))));
        let long_uri = b"GET /0123456789abcdefg HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(parse_request_with(long_uri, &limits).err(), Some(ParseError::UriTooLong));
        let three = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(parse_request_with(three, &limits).err(), Some(ParseError::TooManyHeaders));
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", "v".repeat(200));
        assert_eq!(parse_request_with(big.as_bytes(), &limits).err(), Some(ParseError::HeadTooLarge));
        // Config cannot raise a ceiling.
        let loose = RequestLimits { head_bytes: usize::MAX, headers: 1000, uri_bytes: usize::MAX };
        assert_eq!(loose.clamped(), RequestLimits::DEFAULT);
    }
}
