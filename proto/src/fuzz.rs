//! Property checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus replay
//! test (`proto/tests/fuzz_corpus.rs`).
//!
//! Each function takes arbitrary bytes, runs them through one part of this crate, and panics
//! when a property is violated; bytes the parser refuses are fine (refusing is its job). The
//! fuzz targets are one line each, so libFuzzer and plain `cargo test` on stable run exactly
//! the same checks. Properties checked, beyond "does not panic":
//! - `request_head` / `response_head`: spans stay inside the head, `head_len <= data.len()`;
//!   the head alone parses to the same head, shorter prefixes are `Partial` (a head must not
//!   parse differently depending on how TCP split it); encode -> parse gives an equal head
//!   (modulo offsets), and encoding is a fixed point.
//! - `round_trip`: a pipelined stream of requests (or of responses, when it starts with
//!   `HTTP/`) is split into messages using the parsed framing, re-encoded canonically (heads
//!   via `encode_request`/`encode_response`, chunked bodies re-chunked), and split again: same
//!   messages, same payloads, nothing left over.
//! - `chunked`: decoding in one go, in two pieces and byte by byte agree (payload, end, error);
//!   re-chunking the payload decodes back to it.
//! - `range`: resolved ranges are non-empty and inside the object; writing them back as a
//!   canonical `bytes=` header resolves to the same ranges.
//! - `path`: `decode_path` -> `encode_key` -> `decode_path` gives the same key, and
//!   `encode_key` is stable.
//!
//! This module is test support, not node code: it allocates and panics freely.

use bytes::BytesMut;

use crate::head::{BodyFraming, Method, Status, Version};
use crate::limits::{MAX_HEAD_BYTES, MAX_RANGES};
use crate::span::Span;
use crate::{
    decode_path, encode_chunk_header, encode_key, encode_request, encode_response, parse_range, parse_request,
    parse_response, response_framing, single_range_start, Chunk, ChunkedDecoder, Headers, ParseError, RangeRequest,
    RequestHead, ResponseHead, CHUNK_END, LAST_CHUNK,
};

/// A property check: panics when `data` breaks a property.
pub type Check = fn(&[u8]);

/// Every fuzz target, by name: the file `fuzz/fuzz_targets/<name>.rs` and the corpus folder
/// `fuzz/corpus/<name>/` use the same name.
pub const TARGETS: &[(&str, Check)] = &[
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked", chunked),
    ("round_trip", round_trip),
    ("range", range),
    ("path", path),
];

/// The check for a target name, if there is one.
pub fn target(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

// ---------------------------------------------------------------------------------------------
// Heads
// ---------------------------------------------------------------------------------------------

/// A request head as bytes rather than offsets, so heads parsed from different buffers compare.
#[derive(Debug, PartialEq, Eq)]
struct RequestView<'a> {
    method: Method,
    method_text: &'a [u8],
    target: &'a [u8],
    path: &'a [u8],
    query: Option<&'a [u8]>,
    version: Version,
    fields: Vec<(&'a [u8], &'a [u8])>,
    body: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

fn request_view<'a>(head: &RequestHead, buf: &'a [u8]) -> RequestView<'a> {
    RequestView {
        method: head.method,
        method_text: head.method_span.get(buf),
        target: head.target.get(buf),
        path: head.path.get(buf),
        query: head.query.map(|q| q.get(buf)),
        version: head.version,
        fields: fields(&head.headers, buf),
        body: head.body,
        keep_alive: head.keep_alive,
        expect_continue: head.expect_continue,
    }
}

/// A response head as bytes, plus its framing both ways (after GET and after HEAD).
#[derive(Debug, PartialEq, Eq)]
struct ResponseView<'a> {
    status: u16,
    version: Version,
    reason: &'a [u8],
    fields: Vec<(&'a [u8], &'a [u8])>,
    keep_alive: bool,
    framing: Result<BodyFraming, ParseError>,
    framing_after_head: Result<BodyFraming, ParseError>,
}

fn response_view<'a>(head: &ResponseHead, buf: &'a [u8]) -> ResponseView<'a> {
    ResponseView {
        status: head.status,
        version: head.version,
        reason: head.reason.get(buf),
        fields: fields(&head.headers, buf),
        keep_alive: head.keep_alive,
        framing: response_framing(head, buf, false),
        framing_after_head: response_framing(head, buf, true),
    }
}

fn fields<'a>(headers: &Headers, buf: &'a [u8]) -> Vec<(&'a [u8], &'a [u8])> {
    headers.iter().map(|h| (h.name.get(buf), h.value.get(buf))).collect()
}

fn assert_span_within(span: Span, limit: usize, what: &str) {
    assert!(
        span.start <= span.end && span.end as usize <= limit,
        "{what} span {span:?} outside the head (head_len {limit})"
    );
}

/// A split point in `0..=len` chosen by `seed`, spread over the whole range (not just its first
/// 256 bytes, as `seed % len` would be).
fn split_point(seed: u8, len: usize) -> usize {
    len * usize::from(seed) / 255
}

/// Strict prefix lengths of a head of `head_len` bytes to re-parse: the longest one, plus three
/// spread by a hash of the whole input (the first byte alone is nearly always the method's first
/// letter, so it would pin the split). All of `0..head_len` is reachable as the fuzzer mutates.
fn head_prefixes(data: &[u8], head_len: usize) -> [usize; 4] {
    // FNV-1a: cheap, and every byte of the input moves it.
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let at = |shift: u32| ((h >> shift) as usize) % head_len;
    [head_len - 1, at(0), at(21), at(42)]
}

/// Parses a request head and checks it: spans inside the head, the head alone and any prefix
/// behave consistently, and encode -> parse gives an equal head.
pub fn request_head(data: &[u8]) {
    let head = match parse_request(data) {
        Ok(Status::Complete(head)) => head,
        Ok(Status::Partial) => {
            // A head that has not ended by the limit is refused, never left pending.
            assert!(data.len() < MAX_HEAD_BYTES, "Partial at {} bytes", data.len());
            return;
        }
        Err(_) => return,
    };
    let n = head.head_len;
    assert!(n > 0 && n <= data.len() && n <= MAX_HEAD_BYTES, "head_len {n}");
    for (span, what) in [(head.method_span, "method"), (head.target, "target"), (head.path, "path")] {
        assert_span_within(span, n, what);
    }
    for h in head.headers.iter() {
        assert_span_within(h.name, n, "header name");
        assert_span_within(h.value, n, "header value");
        assert!(!h.name.is_empty(), "empty header name");
        let v = h.value.get(data);
        assert!(
            !v.starts_with(b" ") && !v.starts_with(b"\t") && !v.ends_with(b" ") && !v.ends_with(b"\t"),
            "header value not trimmed: {v:?}"
        );
    }
    assert!(!head.method_span.is_empty() && !head.target.is_empty());
    assert_eq!(head.method, Method::from_bytes(head.method_span.get(data)));
    // path and query tile the target around the first '?'.
    assert_eq!(head.path.start, head.target.start);
    match head.query {
        Some(q) => {
            assert_span_within(q, n, "query");
            assert_eq!(data.get(head.path.end as usize), Some(&b'?'));
            assert_eq!((q.start, q.end), (head.path.end + 1, head.target.end));
            assert!(!head.path.get(data).contains(&b'?'));
        }
        None => assert_eq!(head.path, head.target),
    }
    assert!(head.body != BodyFraming::CloseDelimited);

    // The head alone parses to the same head; strict prefixes are Partial, whatever the split.
    assert_eq!(parse_request(&data[..n]), Ok(Status::Complete(head.clone())));
    for k in head_prefixes(data, n) {
        assert_eq!(parse_request(&data[..k]), Ok(Status::Partial), "prefix {k} of {n}");
    }

    // encode -> parse gives an equal head, and the encoding is a fixed point.
    let mut enc = Vec::new();
    encode_request(&head, data, &mut enc);
    if enc.len() > MAX_HEAD_BYTES {
        // Canonical form adds a space after each colon: it may outgrow the limit.
        assert_eq!(parse_request(&enc), Err(ParseError::HeadTooLarge));
        return;
    }
    let again = match parse_request(&enc) {
        Ok(Status::Complete(again)) => again,
        other => panic!("encoded head {:?} does not parse: {other:?}", lossy(&enc)),
    };
    assert_eq!(again.head_len, enc.len());
    assert_eq!(request_view(&again, &enc), request_view(&head, data));
    let mut enc2 = Vec::new();
    encode_request(&again, &enc, &mut enc2);
    assert_eq!(lossy(&enc2), lossy(&enc), "encoding is not a fixed point");
}

/// Parses a response head and checks it like `request_head`, plus `response_framing` (which
/// must accept every head `parse_response` returns).
pub fn response_head(data: &[u8]) {
    let head = match parse_response(data) {
        Ok(Status::Complete(head)) => head,
        Ok(Status::Partial) => {
            assert!(data.len() < MAX_HEAD_BYTES, "Partial at {} bytes", data.len());
            return;
        }
        Err(_) => return,
    };
    let n = head.head_len;
    assert!(n > 0 && n <= data.len() && n <= MAX_HEAD_BYTES, "head_len {n}");
    assert!((100..=599).contains(&head.status), "status {}", head.status);
    assert_span_within(head.reason, n, "reason");
    for h in head.headers.iter() {
        assert_span_within(h.name, n, "header name");
        assert_span_within(h.value, n, "header value");
        assert!(!h.name.is_empty(), "empty header name");
    }
    let view = response_view(&head, data);
    assert!(view.framing.is_ok(), "framing of a parsed head: {:?}", view.framing);
    assert_eq!(view.framing_after_head, Ok(BodyFraming::None));
    if (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
        assert_eq!(view.framing, Ok(BodyFraming::None));
    }

    assert_eq!(parse_response(&data[..n]), Ok(Status::Complete(head.clone())));
    for k in head_prefixes(data, n) {
        assert_eq!(parse_response(&data[..k]), Ok(Status::Partial), "prefix {k} of {n}");
    }

    let mut enc = Vec::new();
    encode_response(&head, data, &mut enc);
    if enc.len() > MAX_HEAD_BYTES {
        assert_eq!(parse_response(&enc), Err(ParseError::HeadTooLarge));
        return;
    }
    let again = match parse_response(&enc) {
        Ok(Status::Complete(again)) => again,
        other => panic!("encoded head {:?} does not parse: {other:?}", lossy(&enc)),
    };
    assert_eq!(again.head_len, enc.len());
    assert_eq!(response_view(&again, &enc), view);
    let mut enc2 = Vec::new();
    encode_response(&again, &enc, &mut enc2);
    assert_eq!(lossy(&enc2), lossy(&enc), "encoding is not a fixed point");
}

// ---------------------------------------------------------------------------------------------
// Message streams
// ---------------------------------------------------------------------------------------------

/// Splits `data` into pipelined messages, canonicalises them, and checks that the canonical
/// stream splits into the same messages and is a fixed point. Streams starting with `HTTP/` are
/// responses (each framed as the answer to a GET), all others requests.
pub fn round_trip(data: &[u8]) {
    if data.starts_with(b"HTTP/") {
        let (mut msgs, _) = split_responses(data);
        msgs.truncate(fitting(&msgs, |m, out| encode_response(&m.head, data, out)));
        let canon = encode_responses(&msgs, data);
        let (again, used) = split_responses(&canon);
        assert_eq!(used, canon.len(), "canonical stream not consumed whole");
        assert_eq!(again.len(), msgs.len());
        for (a, b) in msgs.iter().zip(&again) {
            assert_eq!(response_view(&b.head, &canon), response_view(&a.head, data));
            assert_eq!(b.payload, a.payload);
        }
        assert_eq!(lossy(&encode_responses(&again, &canon)), lossy(&canon));
    } else {
        let (mut msgs, _) = split_requests(data);
        msgs.truncate(fitting(&msgs, |m, out| encode_request(&m.head, data, out)));
        let canon = encode_requests(&msgs, data);
        let (again, used) = split_requests(&canon);
        assert_eq!(used, canon.len(), "canonical stream not consumed whole");
        assert_eq!(again.len(), msgs.len());
        for (a, b) in msgs.iter().zip(&again) {
            assert_eq!(request_view(&b.head, &canon), request_view(&a.head, data));
            assert_eq!(b.payload, a.payload);
        }
        assert_eq!(lossy(&encode_requests(&again, &canon)), lossy(&canon));
    }
}

/// How many messages, from the first, have a canonical head within `MAX_HEAD_BYTES`: the
/// canonical form adds a space after each colon, so a head near the limit may outgrow it (and
/// is then refused on the way back, as `request_head` checks); the comparison stops there.
fn fitting<H>(msgs: &[Message<H>], encode_head: impl Fn(&Message<H>, &mut Vec<u8>)) -> usize {
    let mut out = Vec::new();
    msgs.iter()
        .take_while(|m| {
            out.clear();
            encode_head(m, &mut out);
            out.len() <= MAX_HEAD_BYTES
        })
        .count()
}

/// One message of a stream: its head (spans index the whole stream) and body payload.
struct Message<H> {
    head: H,
    framing: BodyFraming,
    payload: Vec<u8>,
}

/// Complete requests at the front of `data`, and the bytes they take.
fn split_requests(data: &[u8]) -> (Vec<Message<RequestHead>>, usize) {
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Ok(Status::Complete(head)) = parse_request(&data[at..]) {
        let body_at = at + head.head_len;
        let Some((payload, body_len)) = read_body(head.body, &data[body_at..]) else {
            break;
        };
        let head = shift_request(head, at);
        msgs.push(Message { framing: head.body, head, payload });
        at = body_at + body_len;
    }
    (msgs, at)
}

/// Complete responses at the front of `data`, and the bytes they take.
fn split_responses(data: &[u8]) -> (Vec<Message<ResponseHead>>, usize) {
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Ok(Status::Complete(head)) = parse_response(&data[at..]) {
        let framing = match response_framing(&head, &data[at..], false) {
            Ok(f) => f,
            Err(e) => panic!("framing of a parsed head: {e:?}"),
        };
        let body_at = at + head.head_len;
        let Some((payload, body_len)) = read_body(framing, &data[body_at..]) else {
            break;
        };
        msgs.push(Message { head: shift_response(head, at), framing, payload });
        at = body_at + body_len;
        if framing == BodyFraming::CloseDelimited {
            break;
        }
    }
    (msgs, at)
}

/// The body at the front of `rest` under `framing`: payload and bytes taken on the wire, or
/// None when it is incomplete or invalid.
fn read_body(framing: BodyFraming, rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    match framing {
        BodyFraming::None => Some((Vec::new(), 0)),
        BodyFraming::ContentLength(n) => {
            let n = usize::try_from(n).ok()?;
            Some((rest.get(..n)?.to_vec(), n))
        }
        BodyFraming::Chunked => match decode_chunked(rest, &[]) {
            Ok(Decoded { payload, end: Some(end) }) => Some((payload, end)),
            _ => None,
        },
        BodyFraming::CloseDelimited => Some((rest.to_vec(), rest.len())),
    }
}

fn encode_requests(msgs: &[Message<RequestHead>], buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_request(&m.head, buf, &mut out);
        encode_body(m.framing, &m.payload, &mut out);
    }
    out
}

fn encode_responses(msgs: &[Message<ResponseHead>], buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        encode_response(&m.head, buf, &mut out);
        encode_body(m.framing, &m.payload, &mut out);
    }
    out
}

/// The canonical body: as is, or as one chunk (none when empty) plus the last-chunk.
fn encode_body(framing: BodyFraming, payload: &[u8], out: &mut Vec<u8>) {
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(&encode_chunked(payload, payload.len().max(1)));
    } else {
        out.extend_from_slice(payload);
    }
}

fn shift(span: Span, by: usize) -> Span {
    // Streams are fuzz inputs, far below 4 GiB.
    let by = u32::try_from(by).unwrap_or(u32::MAX);
    Span { start: span.start.saturating_add(by), end: span.end.saturating_add(by) }
}

fn shift_headers(headers: &Headers, by: usize) -> Headers {
    let mut out = headers.clone();
    for h in out.fields_mut() {
        h.name = shift(h.name, by);
        h.value = shift(h.value, by);
    }
    out
}

/// The head with its spans moved from `data[at..]` to `data`.
fn shift_request(head: RequestHead, at: usize) -> RequestHead {
    RequestHead {
        method_span: shift(head.method_span, at),
        target: shift(head.target, at),
        path: shift(head.path, at),
        query: head.query.map(|q| shift(q, at)),
        headers: shift_headers(&head.headers, at),
        ..head
    }
}

fn shift_response(head: ResponseHead, at: usize) -> ResponseHead {
    ResponseHead {
        // An empty reason may be the default span (obs-text): keep it empty.
        reason: if head.reason.is_empty() { Span::default() } else { shift(head.reason, at) },
        headers: shift_headers(&head.headers, at),
        ..head
    }
}

// ---------------------------------------------------------------------------------------------
// Chunked bodies
// ---------------------------------------------------------------------------------------------

/// What decoding a chunked body produced.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    payload: Vec<u8>,
    /// Bytes consumed through `Chunk::End`, if the body ended.
    end: Option<usize>,
}

/// Feeds `data` to one decoder, cut at `cuts` (ascending), like successive socket reads, and
/// checks the decoder's contract on every call.
fn decode_chunked(data: &[u8], cuts: &[usize]) -> Result<Decoded, ParseError> {
    let mut dec = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let mut consumed = 0;
    let mut from = 0;
    for to in cuts.iter().copied().chain([data.len()]) {
        let mut piece = &data[from..to];
        from = to;
        loop {
            let (n, ev) = dec.decode(piece)?;
            assert!(n <= piece.len(), "consumed {n} of {}", piece.len());
            consumed += n;
            match ev {
                Chunk::Data { start, end } => {
                    assert!(start < end && end == n, "Data {start}..{end}, consumed {n}");
                    payload.extend_from_slice(&piece[start..end]);
                    piece = &piece[n..];
                }
                Chunk::Partial => {
                    assert_eq!(n, piece.len(), "Partial must consume all input");
                    assert!(!dec.is_done());
                    break;
                }
                Chunk::End => {
                    assert!(dec.is_done());
                    assert_eq!(dec.decode(b"0\r\n\r\n"), Ok((0, Chunk::End)));
                    return Ok(Decoded { payload, end: Some(consumed) });
                }
            }
        }
    }
    Ok(Decoded { payload, end: None })
}

/// `payload` as a chunked body in chunks of `chunk_len` bytes (the last may be shorter).
fn encode_chunked(payload: &[u8], chunk_len: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    for piece in payload.chunks(chunk_len) {
        encode_chunk_header(piece.len(), &mut out);
        out.extend_from_slice(piece);
        out.extend_from_slice(CHUNK_END);
    }
    out.extend_from_slice(LAST_CHUNK);
    out.to_vec()
}

/// Decodes `data` as a chunked body in one go, in two pieces split where the first byte says,
/// and byte by byte: all three must agree. A body that ends must decode the same without the
/// bytes after it, every shorter prefix must be an incomplete (not failed) body, and its payload
/// re-chunked must decode back to it.
pub fn chunked(data: &[u8]) {
    let whole = decode_chunked(data, &[]);
    let seed = data.first().copied().unwrap_or(0);
    let split = split_point(seed, data.len());
    assert_eq!(decode_chunked(data, &[split]), whole, "split at {split}");
    let every: Vec<usize> = (1..data.len()).collect();
    assert_eq!(decode_chunked(data, &every), whole, "byte by byte");

    let Ok(Decoded { payload, end }) = whole else {
        return;
    };
    if let Some(end) = end {
        assert_eq!(decode_chunked(&data[..end], &[]), Ok(Decoded { payload: payload.clone(), end: Some(end) }));
        for k in [end - 1, split_point(seed, end - 1)] {
            match decode_chunked(&data[..k], &[]) {
                Ok(Decoded { payload: p, end: None }) if payload.starts_with(&p) => {}
                other => panic!("prefix {k} of a body ending at {end}: {other:?}"),
            }
        }
    }
    for chunk_len in [payload.len().max(1), 1 + usize::from(seed)] {
        let enc = encode_chunked(&payload, chunk_len);
        assert_eq!(
            decode_chunked(&enc, &[]),
            Ok(Decoded { payload: payload.clone(), end: Some(enc.len()) }),
            "re-chunked in {chunk_len}-byte chunks"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Range and path
// ---------------------------------------------------------------------------------------------

/// Resolves `data` as a Range header value against several object sizes and checks the result;
/// satisfiable ranges, written back as a canonical `bytes=a-b,...` value, resolve the same.
/// Surrounding whitespace and the case of the unit must not matter.
pub fn range(data: &[u8]) {
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(data);
    padded.push(b' ');
    let upper = data.get(..6).filter(|u| u.eq_ignore_ascii_case(b"bytes=")).map(|_| {
        let mut v = b"BYTES=".to_vec();
        v.extend_from_slice(&data[6..]);
        v
    });
    // The start read without the size is where the resolved range starts, when there is one.
    match single_range_start(data) {
        Some(Some(first)) if first < u64::MAX => match parse_range(data, u64::MAX) {
            RangeRequest::Satisfiable(r) => assert_eq!((r.len(), r.first().start), (1, first), "{:?}", lossy(data)),
            other => panic!("{other:?} for a single range from {first}: {:?}", lossy(data)),
        },
        Some(None) => {
            assert!(matches!(parse_range(data, 10_000), RangeRequest::Satisfiable(_) | RangeRequest::Unsatisfiable))
        }
        _ => {}
    }
    for size in [0, 1, 2, 100, 10_000, data.len() as u64, u64::MAX] {
        let got = parse_range(data, size);
        assert_eq!(parse_range(&padded, size), got, "surrounding whitespace");
        if let Some(upper) = &upper {
            assert_eq!(parse_range(upper, size), got, "unit case");
        }
        let ranges = match &got {
            RangeRequest::Full => continue,
            RangeRequest::Unsatisfiable => {
                assert!(size > 0, "416 for an empty object");
                continue;
            }
            RangeRequest::Satisfiable(r) => r,
        };
        assert!(size > 0);
        assert!((1..=MAX_RANGES).contains(&ranges.len()) && !ranges.is_empty());
        assert_eq!(ranges.iter().count(), ranges.len());
        assert_eq!(ranges.iter().next(), Some(ranges.first()));
        let mut canon = b"bytes=".to_vec();
        for (i, r) in ranges.iter().enumerate() {
            assert!(r.start < r.end && r.end <= size, "{r:?} for size {size}");
            if i > 0 {
                canon.push(b',');
            }
            canon.extend_from_slice(format!("{}-{}", r.start, r.end - 1).as_bytes());
        }
        assert_eq!(parse_range(&canon, size), got, "canonical {:?}", lossy(&canon));
    }
}

/// Decodes `data` as a request path; a key that decodes must survive `encode_key` ->
/// `decode_path` unchanged, and `encode_key` must be stable and emit only URL-safe bytes.
pub fn path(data: &[u8]) {
    let Ok(key) = decode_path(data) else {
        return;
    };
    // Borrowed exactly when there was nothing to decode.
    assert_eq!(matches!(key, std::borrow::Cow::Borrowed(_)), !data.contains(&b'%'));
    assert!(!key.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n'));
    let mut enc = String::new();
    encode_key(&key, &mut enc);
    assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/%".contains(&b)), "encode_key emitted {enc:?}");
    let again = match decode_path(enc.as_bytes()) {
        Ok(again) => again,
        Err(e) => panic!("encoded key {enc:?} does not decode: {e:?}"),
    };
    assert_eq!(again, key);
    let mut enc2 = String::new();
    encode_key(&again, &mut enc2);
    assert_eq!(enc2, enc);
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_unique_and_found() {
        for (i, (name, _)) in TARGETS.iter().enumerate() {
            assert!(target(name).is_some());
            assert!(TARGETS[i + 1..].iter().all(|(n, _)| n != name));
        }
        assert!(target("nope").is_none());
    }

    #[test]
    fn checks_accept_empty_and_tiny_inputs() {
        for (_, check) in TARGETS {
            for input in [&b""[..], b"\r", b"\n", b"0", b"%", b"HTTP/", b"GET / HTTP/1.1\r\n"] {
                check(input);
            }
        }
    }

    #[test]
    fn checks_pass_on_valid_messages() {
        request_head(b"\r\nGET /a%20b?x HTTP/1.1\r\nHost: h\r\nX:\r\nY:  z \r\n\r\nrest");
        response_head(b"HTTP/1.1 200 OK\r\nContent-Length:3\r\n\r\nabc");
        response_head(b"HTTP/1.1 200 \xc3\xa9\r\n\r\n");
        round_trip(
            b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;x\r\nhi\r\n1\r\n!\r\n0\r\nT: v\r\n\r\n\
GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /partial",
        );
        round_trip(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
3\r\nabc\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil close",
        );
        chunked(b"5\r\nhello\r\n6;e=1\r\n world\r\n0\r\nX: y\r\n\r\nnext");
        range(b"bytes=0-9, -5,50-");
        path(b"/bucket/caf%C3%A9%20au%20lait+x");
    }

    #[test]
    fn round_trip_checks_stream_structure() {
        // The split finds the messages the stream holds, with offsets into the whole stream.
        let data = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let (msgs, used) = split_requests(data);
        assert_eq!(used, data.len());
        let paths: Vec<&[u8]> = msgs.iter().map(|m| m.head.path.get(data)).collect();
        assert_eq!(paths, [&b"/a"[..], b"/b"]);
        let data = b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 \xff\r\nContent-Length: 1\r\n\r\nxy";
        let (msgs, used) = split_responses(data);
        assert_eq!(used, data.len() - 1);
        assert_eq!(msgs[1].payload, b"x");
        assert!(msgs[1].head.reason.is_empty());
    }
}
