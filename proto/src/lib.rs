//! `edgemirror-proto`: sans-I/O HTTP/1.1 for the edgemirror node.
//!
//! Owns the wire format and nothing else: functions take `&[u8]` and return a `Status` plus
//! offsets (`Span`s) into the caller's buffer, so the node can slice its read buffer into
//! refcounted `Bytes` without copying, and tests, fuzzers and benches can drive everything
//! without sockets. No runtime, no I/O, no allocation per header (fixed arrays sized by
//! `limits`). It does not own caching policy, routing or response building beyond the pieces
//! below.
//!
//! Request flow through this crate:
//! 1. `parse_request(buf)` -> `RequestHead` (or `Partial`: read more; or a `ParseError` whose
//!    `status()` is the answer). Smuggling-relevant rules (bare LF, CL/TE, Host) are enforced
//!    here, see `request.rs` and `head.rs`.
//! 2. `decode_path(head.path.get(buf))` -> object key; `parse_range`, `etag_matches`,
//!    `parse_http_date` read the request's Range and conditional headers.
//! 3. Towards the origin: `encode_key` builds the URL path; the origin's reply goes through
//!    `parse_response` and `response_framing`, and a chunked body through `ChunkedDecoder`.
//! 4. Towards the client: `encode_chunk_header`/`CHUNK_END`/`LAST_CHUNK` for chunked replies,
//!    `fmt_http_date` for Date/Last-Modified, `s3_error_xml` for error bodies.
//! 5. Re-serialising: `encode_request`/`encode_response` write a parsed head back in canonical
//!    form. Parse -> encode -> parse is checked by the property functions in `fuzz`, which the
//!    fuzz targets (`fuzz/`) and the corpus replay test (`tests/fuzz_corpus.rs`) both call.
//!
//! Main types: `Status`, `Span`, `Headers`, `RequestHead`, `ResponseHead`, `BodyFraming`,
//! `ChunkedDecoder`, `RangeRequest`, `ParseError`.
//!
//! Parsing untrusted bytes needs no `unsafe`, and this crate has none: it is forbidden. The
//! `fuzz` module exists only with the `fuzzing` feature (the fuzz targets and the corpus replay
//! test enable it), so the property functions are not part of the production API.

#![forbid(unsafe_code)]

mod chunked;
mod conditional;
mod encode;
mod error;
mod error_body;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod head;
mod headers;
pub mod limits;
mod path;
mod query;
mod range;
mod request;
mod response;
pub mod s3;
mod span;

pub use chunked::{encode_chunk_header, Chunk, ChunkedDecoder, CHUNK_END, LAST_CHUNK};
pub use conditional::{etag_matches, fmt_http_date, parse_http_date};
pub use encode::{encode_request, encode_response};
pub use error::ParseError;
pub use error_body::s3_error_xml;
pub use head::{BodyFraming, Method, Status, Version};
pub use headers::{HeaderSpan, Headers};
pub use limits::{
    RequestLimits, MAX_CHUNK_LINE_BYTES, MAX_HEADERS, MAX_HEAD_BYTES, MAX_RANGES, MAX_TRAILER_BYTES, MAX_URI_BYTES,
};
pub use path::{decode_path, encode_key, has_dot_segment};
pub use query::{has_query_param, query_param};
pub use range::{parse_range, single_range_start, ByteRanges, RangeRequest};
pub use request::{parse_request, parse_request_with, RequestHead};
pub use response::{parse_response, response_framing, ResponseHead};
pub use span::Span;
