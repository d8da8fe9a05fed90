//! `ParseError`: why a head, chunked body or path from a peer was refused.
//!
//! One small `Copy` enum for everything `proto` rejects. "Need more bytes" is never an error
//! (that is `Status::Partial`). `status()` is the single place that maps a parse failure to the
//! HTTP status sent back to a client; `as_str()` gives a stable label for logs and metrics.
//! When the peer is the origin, the node maps any `ParseError` to its own upstream status (502)
//! instead of calling `status()`.

/// Why `proto` refused some bytes from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The head did not end within `MAX_HEAD_BYTES`.
    #[error("message head larger than the limit")]
    HeadTooLarge,
    /// More than `MAX_HEADERS` header fields.
    #[error("too many header fields")]
    TooManyHeaders,
    /// Request-target longer than `MAX_URI_BYTES`.
    #[error("request-target too long")]
    UriTooLong,
    /// Malformed request line (method or target).
    #[error("malformed request line")]
    BadRequestLine,
    /// Malformed header field (name or value), or a duplicated singleton such as Host.
    #[error("malformed header field")]
    BadHeader,
    /// A line ended in LF without the CR before it.
    #[error("bare LF line ending")]
    BareLf,
    /// A header line continued with leading whitespace (obs-fold, RFC 9112 §5.2).
    #[error("obsolete line folding")]
    ObsFold,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    BadVersion,
    /// HTTP/1.1 request without a Host header (RFC 9112 §3.2).
    #[error("missing Host header")]
    MissingHost,
    /// Content-Length that is not a plain decimal number fitting in u64.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Several Content-Length values that differ (RFC 9112 §6.3 rule 5).
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    /// Both Content-Length and Transfer-Encoding: a request-smuggling vector (RFC 9112 §6.1).
    #[error("Content-Length together with Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding not ending in `chunked`, `chunked` twice or not last, or in HTTP/1.0.
    #[error("invalid Transfer-Encoding")]
    BadTransferEncoding,
    /// Chunk-size line that is not hex digits, overflows u64, or has a bad extension.
    #[error("invalid chunk size")]
    BadChunkSize,
    /// Chunk-size line longer than `MAX_CHUNK_LINE_BYTES`.
    #[error("chunk-size line too long")]
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF, or the chunked body not ending in CRLF.
    #[error("chunk data not followed by CRLF")]
    BadChunkTerminator,
    /// Trailer section larger than `MAX_TRAILER_BYTES`.
    #[error("trailer section too large")]
    TrailerTooLarge,
    /// Malformed response status line.
    #[error("malformed status line")]
    BadStatusLine,
    /// Request path with bad percent-encoding, invalid UTF-8 or a NUL/CR/LF.
    #[error("invalid request path")]
    BadPath,
}

impl ParseError {
    /// HTTP status to answer a client with when its request fails to parse.
    pub fn status(self) -> u16 {
        match self {
            // RFC 6585 §5: Request Header Fields Too Large.
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => 431,
            // RFC 9110 §15.5.15: URI Too Long.
            ParseError::UriTooLong => 414,
            _ => 400,
        }
    }

    /// Stable snake_case label for logs and metrics. Do not rename: dashboards key on these.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::HeadTooLarge => "head_too_large",
            ParseError::TooManyHeaders => "too_many_headers",
            ParseError::UriTooLong => "uri_too_long",
            ParseError::BadRequestLine => "bad_request_line",
            ParseError::BadHeader => "bad_header",
            ParseError::BareLf => "bare_lf",
            ParseError::ObsFold => "obs_fold",
            ParseError::BadVersion => "bad_version",
            ParseError::MissingHost => "missing_host",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::ConflictingContentLength => "conflicting_content_length",
            ParseError::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            ParseError::BadTransferEncoding => "bad_transfer_encoding",
            ParseError::BadChunkSize => "bad_chunk_size",
            ParseError::ChunkLineTooLong => "chunk_line_too_long",
            ParseError::BadChunkTerminator => "bad_chunk_terminator",
            ParseError::TrailerTooLarge => "trailer_too_large",
            ParseError::BadStatusLine => "bad_status_line",
            ParseError::BadPath => "bad_path",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ParseError::{self, *};

    const ALL: [ParseError; 19] = [
        HeadTooLarge,
        TooManyHeaders,
        UriTooLong,
        BadRequestLine,
        BadHeader,
        BareLf,
        ObsFold,
        BadVersion,
        MissingHost,
        BadContentLength,
        ConflictingContentLength,
        ContentLengthWithTransferEncoding,
        BadTransferEncoding,
        BadChunkSize,
        ChunkLineTooLong,
        BadChunkTerminator,
        TrailerTooLarge,
        BadStatusLine,
        BadPath,
    ];

    #[test]
    fn status_mapping() {
        assert_eq!(HeadTooLarge.status(), 431);
        assert_eq!(TooManyHeaders.status(), 431);
        assert_eq!(UriTooLong.status(), 414);
        for e in ALL {
            if !matches!(e, HeadTooLarge | TooManyHeaders | UriTooLong) {
                assert_eq!(e.status(), 400, "{e:?}");
            }
        }
    }

    #[test]
    fn labels_are_unique_snake_case() {
        for (i, a) in ALL.iter().enumerate() {
            let s = a.as_str();
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            for b in &ALL[i + 1..] {
                assert_ne!(s, b.as_str());
            }
            assert!(!a.to_string().is_empty());
        }
    }
}
