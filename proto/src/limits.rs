//! Hard limits on what a peer may make us buffer or parse.
//!
//! Every size that arrives from the wire is checked against one of these before we act on it,
//! so that a client or an (untrusted) origin cannot make the node hold unbounded state. The
//! consts are the ceilings (the parsers size stack arrays from them); [`RequestLimits`] lets a
//! deployment lower the request-head limits from config (`[server] max_head_bytes`,
//! `max_headers`, `max_uri_bytes`), never raise them.

/// Largest request or response head we accept, counting the start line, all header lines and the
/// final CRLFCRLF. Bigger heads fail with `HeadTooLarge` (431), even while still incomplete, so a
/// peer cannot make us buffer an endless head. nginx's default (`large_client_header_buffers 4
/// 8k`) allows 8 KiB per line; 16 KiB total leaves room for long cookies.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields in one head. It sizes the fixed `Headers` array (64 x 16 bytes on the
/// stack); a browser sends ~15-20 headers, so 64 is generous.
pub const MAX_HEADERS: usize = 64;

/// Longest request-target. Longer targets fail with `UriTooLong` (414).
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Longest chunk-size line in a chunked body, including chunk extensions and the CRLF.
/// Extensions are otherwise unbounded by RFC 9112 §7.1.1 and we ignore them anyway.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Most bytes of trailer section (all trailer lines plus the final CRLF) after the last chunk.
/// Trailers are read and discarded.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// Most byte ranges honoured in one `Range` header. RFC 9110 §14.2 lets a server ignore a
/// Range header with many (possibly overlapping) ranges; past this we serve the full object.
pub const MAX_RANGES: usize = 8;

/// The request-head limits in force, at most the consts above (config may tighten them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// At most [`MAX_HEAD_BYTES`].
    pub head_bytes: usize,
    /// At most [`MAX_HEADERS`].
    pub headers: usize,
    /// At most [`MAX_URI_BYTES`].
    pub uri_bytes: usize,
}

impl RequestLimits {
    /// The ceilings themselves.
    pub const DEFAULT: RequestLimits =
        RequestLimits { head_bytes: MAX_HEAD_BYTES, headers: MAX_HEADERS, uri_bytes: MAX_URI_BYTES };

    /// Clamps each limit to its ceiling (and to a floor that still admits a minimal request).
    pub fn clamped(self) -> RequestLimits {
        RequestLimits {
            head_bytes: self.head_bytes.clamp(64, MAX_HEAD_BYTES),
            headers: self.headers.clamp(1, MAX_HEADERS),
            uri_bytes: self.uri_bytes.clamp(1, MAX_URI_BYTES),
        }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits::DEFAULT
    }
}
