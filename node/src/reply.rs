//! Writing response heads into a reused buffer: the bottom of the data plane's response path.
//!
//! The head of every response is built with `put_slice`/`write!` into the connection's output
//! `BytesMut`, so answering allocates nothing: the `Date` value is formatted once a second per
//! worker ([`DateCache`]), the request id is a counter rendered in place ([`RequestId`]).
//!
//! One builder, [`object_head`], writes the head of every response that describes an object:
//! a stored one (200/206), one streaming from its origin (200/206 without ETag) and a 304. Body
//! framing and the `Connection` header are decided in one place, [`finish`]; `Content-Range` is
//! formatted in one place, [`content_range`].

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use edgemirror_cache::{RecordMeta, SavedHeader};

use crate::error::S3Error;
use crate::metrics::Source;

/// Value of the `Server` header.
pub const SERVER: &str = "edgemirror";
/// Response header naming the tier that produced the bytes: memory, disk-cache, store, origin
/// (`origin-unstored` when the store could not take the object); on an error, `origin` when the
/// origin's answer decided it, else `edge`.
pub const SOURCE_HEADER: &str = "x-edgemirror-source";
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Identifies one request in logs, the `x-request-id` header and S3 error bodies:
/// process start (seconds), worker, per-worker sequence.
#[derive(Clone, Copy, Debug)]
pub struct RequestId {
    pub epoch: u32,
    pub worker: u16,
    pub seq: u64,
}

impl RequestId {
    /// The id's text: 8 hex digits of the epoch, 4 of the worker, 10 of the sequence.
    pub fn to_hex(&self) -> [u8; 22] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut out = [0u8; 22];
        let parts = [(u64::from(self.epoch), 0..8), (u64::from(self.worker), 8..12), (self.seq, 12..22)];
        for (value, span) in parts {
            let mut v = value;
            for i in span.rev() {
                out[i] = HEX[(v & 0xf) as usize];
                v >>= 4;
            }
        }
        out
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // ASCII hex digits: always UTF-8.
        f.write_str(std::str::from_utf8(&self.to_hex()).unwrap_or_default())
    }
}

/// The IMF-fixdate of the current second, re-rendered when the second changes.
pub struct DateCache {
    inner: RefCell<(u64, String)>,
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache { inner: RefCell::new((u64::MAX, String::new())) }
    }
}

impl DateCache {
    pub fn put(&self, out: &mut BytesMut) {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut cached = self.inner.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, httpdate::fmt_http_date(now));
        }
        out.put_slice(cached.1.as_bytes());
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        424 => "Failed Dependency",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// How the body of a response is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and a body of unknown length: the end of the connection ends the body.
    Close,
    /// A response that has no body whatever it describes (304): no framing header, since a
    /// Content-Length would describe the 200's body (RFC 9110 §8.6).
    NoBody,
}

/// Starts a response: status line and the headers every response carries.
pub fn start(out: &mut BytesMut, status: u16, date: &DateCache, id: RequestId) {
    let _ = write!(out, "HTTP/1.1 {status} {}\r\nServer: {SERVER}\r\nDate: ", reason(status));
    date.put(out);
    let _ = write!(out, "\r\n{REQUEST_ID_HEADER}: {id}\r\n");
}

pub fn header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Body framing headers, `Connection: close` when the connection ends after this response, and
/// the blank line that ends the head.
pub fn finish(out: &mut BytesMut, framing: Framing, keep_alive: bool) {
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        Framing::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::NoBody => {}
    }
    // Explicit either way: an HTTP/1.0 client assumes close unless told keep-alive.
    if !keep_alive || framing == Framing::Close {
        out.put_slice(b"Connection: close\r\n\r\n");
    } else {
        out.put_slice(b"Connection: keep-alive\r\n\r\n");
    }
}

/// The head of a response about one object.
pub struct ObjectHead<'a> {
    /// 200, 206 or 304.
    pub status: u16,
    pub record: &'a RecordMeta,
    /// Absent while the body is still streaming from the origin (it is the MD5 of bytes that
    /// have not arrived yet).
    pub etag: Option<&'a str>,
    /// The tier that answered: memory, disk-cache, store, origin, origin-unstored.
    pub source: Source,
    /// A 206's range (`start..end`, end exclusive) of an object of `size` bytes.
    pub range: Option<(Range<u64>, u64)>,
    pub framing: Framing,
    /// The client sent `x-amz-checksum-mode: ENABLED`: add the stored checksum, if any (on a
    /// whole object only: it is the whole body's, and a client checks what it received
    /// against it).
    pub checksum: bool,
    /// Headers a GetObject asked to have replaced (`response-content-type` and the rest).
    pub overrides: &'a Overrides,
    /// For `GET ?partNumber=N` of a multipart object: its number of parts
    /// (`x-amz-mp-parts-count`).
    pub parts_count: Option<u32>,
    /// For `GET ?partNumber=N`: the part's checksum (header name, value) and the object's
    /// checksum type.
    pub part_checksum: Option<(&'a str, &'a str, &'static str)>,
    /// Add the origin's ETag of a mirrored object (`x-edgemirror-origin-etag`): for HEAD, so
    /// provenance can be checked without costing every GET the bytes.
    pub provenance: bool,
}

/// The type of a stored checksum value: a multipart object's composite checksum ends in
/// `-{parts}` (base64 has no `-`); any other is the whole body's.
pub fn checksum_type(value: &[u8]) -> &'static str {
    if value.contains(&b'-') {
        "COMPOSITE"
    } else {
        "FULL_OBJECT"
    }
}

/// GetObject's `response-content-type`, `-content-language`, `-expires`, `-cache-control`,
/// `-content-disposition` and `-content-encoding` query parameters: the value to send instead
/// of the stored header (S3 honours them on signed requests only; the caller checks that).
#[derive(Debug, Default)]
pub struct Overrides(Vec<(SavedHeader, String)>);

impl Overrides {
    /// Whether the query asks for any response header to be replaced.
    pub fn asked(query: Option<&[u8]>) -> bool {
        query.is_some_and(|q| Overrides::PARAMS.iter().any(|(param, _)| edgemirror_proto::has_query_param(q, param)))
    }

    pub const PARAMS: [(&'static str, SavedHeader); 6] = [
        ("response-content-type", SavedHeader::ContentType),
        ("response-content-language", SavedHeader::ContentLanguage),
        ("response-expires", SavedHeader::Expires),
        ("response-cache-control", SavedHeader::CacheControl),
        ("response-content-disposition", SavedHeader::ContentDisposition),
        ("response-content-encoding", SavedHeader::ContentEncoding),
    ];

    /// The overrides a request's query asks for (none without a query: no work on a plain GET).
    pub fn from_query(query: Option<&[u8]>) -> Overrides {
        let Some(query) = query.filter(|q| q.windows(9).any(|w| w == b"response-")) else {
            return Overrides::default();
        };
        let found = Self::PARAMS.iter().filter_map(|(param, name)| {
            edgemirror_proto::query_param(query, param).map(|v| (*name, v.replace(['\r', '\n'], " ")))
        });
        Overrides(found.collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, name: SavedHeader) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Writes the whole head of a response about an object. A 200/206 carries the saved origin
/// headers, ETag, Last-Modified, storage class, `Accept-Ranges` and the source tier, so stored
/// and streaming objects are described the same way; a 304 carries only the validators and
/// caching headers a 200 would have carried (RFC 9110 §15.4.5).
pub fn object_head(out: &mut BytesMut, h: &ObjectHead<'_>, date: &DateCache, id: RequestId, keep_alive: bool) {
    start(out, h.status, date, id);
    if h.status == 304 {
        if let Some(etag) = h.etag {
            header(out, "ETag", etag.as_bytes());
        }
        last_modified(out, h.record.last_modified);
        for name in [SavedHeader::CacheControl, SavedHeader::Expires] {
            if let Some(v) = h.record.header(name) {
                header(out, name.as_str(), v);
            }
        }
    } else {
        for (name, value) in &h.record.headers {
            if h.overrides.get(*name).is_none() {
                header(out, name.as_str(), value);
            }
        }
        for (name, value) in &h.overrides.0 {
            header(out, name.as_str(), value.as_bytes());
        }
        // The node's own entries (a shared store's version, ETag...) are not the client's.
        for (name, value) in h.record.user.iter().filter(|(name, _)| !crate::sharedstore::is_own_meta(name)) {
            out.put_slice(b"x-amz-meta-");
            header(out, name, value);
        }
        if let (true, 200, Some((name, value))) = (h.checksum, h.status, &h.record.checksum) {
            header(out, name, value);
            // A multipart object's composite checksum ends in `-{parts}`; anything else is the
            // whole body's.
            header(out, "x-amz-checksum-type", checksum_type(value).as_bytes());
        }
        if let Some(etag) = h.etag {
            header(out, "ETag", etag.as_bytes());
        }
        last_modified(out, h.record.last_modified);
        header(out, "x-amz-storage-class", h.record.storage_class.as_str().as_bytes());
        header(out, "Accept-Ranges", b"bytes");
        if let Some((name, value, kind)) = h.part_checksum {
            header(out, name, value.as_bytes());
            header(out, "x-amz-checksum-type", kind.as_bytes());
        }
        if let (true, Some(etag)) = (h.provenance, &h.record.origin_etag) {
            header(out, "x-edgemirror-origin-etag", etag.as_bytes());
        }
        if let Some(parts) = h.parts_count {
            let _ = write!(out, "x-amz-mp-parts-count: {parts}\r\n");
        }
        if let Some((range, size)) = &h.range {
            content_range(out, Some(range.clone()), *size);
        }
    }
    header(out, SOURCE_HEADER, h.source.as_str().as_bytes());
    finish(out, h.framing, keep_alive);
}

/// `Content-Range: bytes start-last/size` (RFC 9110 §14.4), or `bytes */size` for a 416.
pub fn content_range(out: &mut BytesMut, range: Option<Range<u64>>, size: u64) {
    match range {
        Some(r) => {
            let _ = write!(out, "Content-Range: bytes {}-{}/{size}\r\n", r.start, r.end - 1);
        }
        None => {
            let _ = write!(out, "Content-Range: bytes */{size}\r\n");
        }
    }
}

/// `Last-Modified: <IMF-fixdate>`, formatted in place.
pub fn last_modified(out: &mut BytesMut, t: SystemTime) {
    let _ = write!(out, "Last-Modified: {}\r\n", httpdate::HttpDate::from(t));
}

/// Writes a complete S3 error response (head and XML body) into `out`. The body is omitted for
/// HEAD requests, as HTTP requires, but its length is still announced.
pub fn error(
    out: &mut BytesMut,
    err: &S3Error,
    key: Option<&str>,
    date: &DateCache,
    id: RequestId,
    keep_alive: bool,
    is_head: bool,
) {
    let body = edgemirror_proto::s3_error_xml(err.code(), &err.message(), key, &id.to_string());
    start(out, err.status(), date, id);
    // The same id under S3's name: SDKs report it with the error (botocore's RequestId).
    let _ = write!(out, "x-amz-request-id: {id}\r\n");
    header(out, "Content-Type", b"application/xml");
    header(out, SOURCE_HEADER, err.source().as_str().as_bytes());
    match err {
        S3Error::MethodNotAllowed => header(out, "Allow", b"GET, HEAD, PUT, DELETE"),
        // RFC 9110 §15.5.17: a 416 names the current length.
        S3Error::InvalidRange { size } => content_range(out, None, *size),
        _ => {}
    }
    finish(out, Framing::Length(body.len() as u64), keep_alive && !err.closes_connection());
    if !is_head {
        out.put_slice(body.as_bytes());
    }
}
