//! The `aws-chunked` body framing of S3 streaming uploads: a resumable, sans-I/O decoder.
//!
//! SDKs upload with `Content-Encoding: aws-chunked` and one of three `x-amz-content-sha256`
//! values ([`AwsChunkedMode`]); the body then looks like this (RFC 9112 chunked coding with
//! fixed extensions, wrapped inside an ordinary `Content-Length` or chunked HTTP body):
//!
//! ```text
//! STREAMING-AWS4-HMAC-SHA256-PAYLOAD           signed chunks
//!   10000;chunk-signature=<64 hex>\r\n <65536 bytes> \r\n
//!   400;chunk-signature=<64 hex>\r\n <1024 bytes> \r\n
//!   0;chunk-signature=<64 hex>\r\n
//!   \r\n
//! STREAMING-UNSIGNED-PAYLOAD-TRAILER           unsigned chunks, trailing checksum (boto3, AWS CLI)
//!   2000\r\n <8192 bytes> \r\n
//!   0\r\n
//!   x-amz-checksum-crc32:<base64>\r\n
//!   \r\n
//! STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER   signed chunks, signed trailer
//!   ... 0;chunk-signature=<64 hex>\r\n
//!   x-amz-checksum-crc32c:<base64>\r\n
//!   x-amz-trailer-signature:<64 hex>\r\n
//!   \r\n
//! ```
//!
//! [`AwsChunkedDecoder::decode`] has the shape of `crate::ChunkedDecoder::decode`: it reads a
//! slice and returns how many bytes it consumed plus one [`AwsChunk`] event. `Data` events are
//! offsets into that slice, so payload bytes are never copied. Framing bytes are consumed as
//! they arrive (the state remembers partial lines, and trailer lines are kept in a small
//! buffer inside the decoder), so `Partial` always consumes the whole input.
//!
//! What the caller does with the events (the node's PUT handler):
//! - `Data`: hash the bytes into the chunk's SHA-256 (signed modes) and the object's checksum,
//!   and stream them on;
//! - `ChunkEnd { signature }`: the chunk is complete, data and CRLF; in signed modes verify
//!   `signature` against the chunk's hash and the previous signature (`sigv4`), and refuse
//!   the upload before acting on the data if it does not match. The final zero-size chunk has
//!   one too (over the empty string);
//! - `Trailer`: compare the checksum with the one computed over the data;
//! - `TrailerSignature`: verify it over the trailer fields (`name:value\n` each);
//! - `End`: the body is complete. Bytes after the consumed count are not part of it.
//!
//! Rules, all enforced while bytes are still arriving (a peer cannot make us buffer):
//! - chunk-size is 1 to [`MAX_SIZE_DIGITS`] hex digits and at most [`MAX_AWS_CHUNK_BYTES`];
//! - signed modes: exactly `;chunk-signature=` and 64 hex digits after the size, nothing else;
//!   the unsigned mode: nothing after the size;
//! - every line ends in CRLF; a bare LF, or a CR not followed by LF, is refused everywhere;
//!   chunk data is followed by exactly CRLF;
//! - every chunk but the last non-empty one is at least [`MIN_AWS_CHUNK_BYTES`] (S3's rule;
//!   [`AwsChunkedDecoder::with_min_chunk_bytes`] can relax it);
//! - with [`AwsChunkedDecoder::with_decoded_length`] (from `x-amz-decoded-content-length`), the
//!   chunks must add up to exactly that: refused as soon as a chunk-size goes past it, or when
//!   the last chunk comes short of it;
//! - trailer lines are `name:value` (optional blanks around the value), at most
//!   [`MAX_TRAILER_LINE_BYTES`] each and [`MAX_TRAILERS`] of them, only in the trailer modes;
//!   `x-amz-trailer-signature` only in the signed-trailer mode, where it is required and last.
//!
//! Not supported: SigV4a (`STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD[-TRAILER]`), whose chunk
//! signatures are DER-encoded ECDSA of varying length padded with `*`. `from_content_sha256`
//! does not recognise those values, so the handler answers them as not implemented.

/// Largest chunk accepted. S3 documents no maximum; SDKs send 64 KiB (Java, Go) to 1 MiB
/// (boto3) chunks. 16 MiB bounds what one chunk signature can make us hash before it is
/// checked.
pub const MAX_AWS_CHUNK_BYTES: u64 = 16 * 1024 * 1024;

/// Smallest chunk allowed except for the last non-empty one ("Each chunk must be at least
/// 8 KB, except the last one", AWS SigV4 streaming documentation).
pub const MIN_AWS_CHUNK_BYTES: u64 = 8 * 1024;

/// Most hex digits in a chunk-size. `MAX_AWS_CHUNK_BYTES` needs 7; leading zeros may pad it.
/// This bounds the size line at 16 + 17 + 64 + 2 = 99 bytes.
pub const MAX_SIZE_DIGITS: u8 = 16;

/// Longest trailer line, without its CRLF. The longest line S3 clients send is
/// `x-amz-trailer-signature:` plus 64 hex digits (88 bytes); a SHA-256 checksum line is 66.
pub const MAX_TRAILER_LINE_BYTES: usize = 128;

/// Most trailer fields (the trailer signature not counted). S3 takes one checksum per request.
pub const MAX_TRAILERS: usize = 4;

// `TrailerField` keeps offsets into its line as u8.
const _: () = assert!(MAX_TRAILER_LINE_BYTES <= u8::MAX as usize);

/// The chunk extension that carries a chunk's signature in the signed modes.
const SIGNATURE_EXT: &[u8] = b";chunk-signature=";

/// The trailer that carries the trailer signature in the signed-trailer mode.
const TRAILER_SIGNATURE: &[u8] = b"x-amz-trailer-signature";

/// The `x-amz-content-sha256` values that announce an `aws-chunked` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsChunkedMode {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every chunk signed, no trailer.
    SignedChunks,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: plain chunks, then trailers (a checksum). What
    /// boto3 and the AWS CLI send over HTTPS since 2025.
    UnsignedTrailer,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks, then trailers and
    /// `x-amz-trailer-signature`.
    SignedTrailer,
}

impl AwsChunkedMode {
    /// The mode an `x-amz-content-sha256` value announces, if it is one of the three.
    pub fn from_content_sha256(value: &[u8]) -> Option<Self> {
        [AwsChunkedMode::SignedChunks, AwsChunkedMode::UnsignedTrailer, AwsChunkedMode::SignedTrailer]
            .into_iter()
            .find(|m| m.as_str().as_bytes() == value)
    }

    /// The `x-amz-content-sha256` value (also fine as a log label).
    pub fn as_str(self) -> &'static str {
        match self {
            AwsChunkedMode::SignedChunks => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            AwsChunkedMode::UnsignedTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            AwsChunkedMode::SignedTrailer => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        }
    }

    /// True if every chunk carries `;chunk-signature=`.
    pub fn is_signed(self) -> bool {
        !matches!(self, AwsChunkedMode::UnsignedTrailer)
    }

    /// True if trailer fields may follow the last chunk.
    pub fn has_trailer(self) -> bool {
        !matches!(self, AwsChunkedMode::SignedChunks)
    }
}

/// One event from [`AwsChunkedDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AwsChunk {
    /// Payload bytes `input[start..end]` (non-empty; possibly only part of a chunk).
    Data { start: usize, end: usize },
    /// A chunk is complete: all its data was delivered and its CRLF read; for the final
    /// zero-size chunk, its size line was read. `signature` is the chunk's
    /// `chunk-signature` (decoded from hex) in the signed modes, `None` in the unsigned one.
    ChunkEnd { signature: Option<[u8; 32]> },
    /// A trailer field was read (a checksum such as `x-amz-checksum-crc32: <base64>`).
    Trailer(TrailerField),
    /// `x-amz-trailer-signature` (signed-trailer mode only), decoded from hex. Always the last
    /// trailer.
    TrailerSignature { signature: [u8; 32] },
    /// All input consumed; call again with more bytes.
    Partial,
    /// The final CRLF was read: the body is complete. Bytes after the consumed count are not
    /// part of it.
    End,
}

/// A trailer field, copied out of the body (trailer lines may straddle reads, and are tiny).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TrailerField {
    line: [u8; MAX_TRAILER_LINE_BYTES],
    name_len: u8,
    value_start: u8,
    value_end: u8,
}

impl TrailerField {
    /// The field name as sent, e.g. `x-amz-checksum-crc32` (compare ASCII case-insensitively).
    pub fn name(&self) -> &[u8] {
        &self.line[..usize::from(self.name_len)]
    }

    /// The value without the blanks around it, e.g. `DUoRhQ==`.
    pub fn value(&self) -> &[u8] {
        &self.line[usize::from(self.value_start)..usize::from(self.value_end)]
    }
}

impl std::fmt::Debug for TrailerField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrailerField")
            .field("name", &String::from_utf8_lossy(self.name()))
            .field("value", &String::from_utf8_lossy(self.value()))
            .finish()
    }
}

/// Why an `aws-chunked` body was refused. Errors are final: the decoder keeps returning the
/// first one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AwsChunkedError {
    /// A chunk-size that is empty or not hex, or a size line with something unexpected in it.
    #[error("invalid aws-chunked chunk size")]
    BadChunkSize,
    /// More than `MAX_SIZE_DIGITS` hex digits.
    #[error("aws-chunked size line too long")]
    ChunkLineTooLong,
    /// A chunk larger than `MAX_AWS_CHUNK_BYTES`.
    #[error("aws-chunked chunk larger than the limit")]
    ChunkTooLarge,
    /// A chunk below the minimum size followed by another non-empty chunk.
    #[error("aws-chunked chunk smaller than the minimum and not the last")]
    ChunkTooSmall,
    /// A signed mode's size line without `;chunk-signature=`.
    #[error("aws-chunked chunk without chunk-signature")]
    MissingChunkSignature,
    /// A chunk signature that is not 64 hex digits, or a signature or other extension in the
    /// unsigned mode.
    #[error("malformed aws-chunked chunk signature or extension")]
    BadChunkSignature,
    /// Chunk data not followed by CRLF, a CR not followed by LF, or a body not ending in CRLF.
    #[error("aws-chunked framing not terminated by CRLF")]
    BadChunkTerminator,
    /// A line ended in LF without the CR before it.
    #[error("bare LF in aws-chunked framing")]
    BareLf,
    /// A malformed trailer line, a trailer in a mode without trailers, a trailer signature
    /// where none belongs or not last.
    #[error("malformed aws-chunked trailer")]
    BadTrailer,
    /// A trailer line longer than `MAX_TRAILER_LINE_BYTES`, or more than `MAX_TRAILERS`.
    #[error("aws-chunked trailer too large")]
    TrailerTooLarge,
    /// The signed-trailer mode's body ended without `x-amz-trailer-signature`.
    #[error("aws-chunked trailer signature missing")]
    MissingTrailerSignature,
    /// The chunks carry more bytes than `x-amz-decoded-content-length`.
    #[error("aws-chunked body longer than x-amz-decoded-content-length")]
    LongerThanDeclared,
    /// The last chunk came before `x-amz-decoded-content-length` bytes.
    #[error("aws-chunked body shorter than x-amz-decoded-content-length")]
    ShorterThanDeclared,
}

impl AwsChunkedError {
    /// The closest S3 error code (all answered 400): S3 has codes for chunk sizes, trailers
    /// and short bodies; any other framing fault is an `InvalidRequest`.
    pub fn s3_code(self) -> &'static str {
        match self {
            AwsChunkedError::ChunkTooSmall => "InvalidChunkSizeError",
            AwsChunkedError::BadTrailer
            | AwsChunkedError::TrailerTooLarge
            | AwsChunkedError::MissingTrailerSignature => "MalformedTrailerError",
            AwsChunkedError::LongerThanDeclared | AwsChunkedError::ShorterThanDeclared => "IncompleteBody",
            _ => "InvalidRequest",
        }
    }

    /// Stable snake_case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AwsChunkedError::BadChunkSize => "aws_chunked_bad_chunk_size",
            AwsChunkedError::ChunkLineTooLong => "aws_chunked_chunk_line_too_long",
            AwsChunkedError::ChunkTooLarge => "aws_chunked_chunk_too_large",
            AwsChunkedError::ChunkTooSmall => "aws_chunked_chunk_too_small",
            AwsChunkedError::MissingChunkSignature => "aws_chunked_missing_chunk_signature",
            AwsChunkedError::BadChunkSignature => "aws_chunked_bad_chunk_signature",
            AwsChunkedError::BadChunkTerminator => "aws_chunked_bad_chunk_terminator",
            AwsChunkedError::BareLf => "aws_chunked_bare_lf",
            AwsChunkedError::BadTrailer => "aws_chunked_bad_trailer",
            AwsChunkedError::TrailerTooLarge => "aws_chunked_trailer_too_large",
            AwsChunkedError::MissingTrailerSignature => "aws_chunked_missing_trailer_signature",
            AwsChunkedError::LongerThanDeclared => "aws_chunked_longer_than_declared",
            AwsChunkedError::ShorterThanDeclared => "aws_chunked_shorter_than_declared",
        }
    }
}

/// Where the decoder is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk-size.
    SizeStart,
    /// Inside the chunk-size digits.
    Size,
    /// Matching `;chunk-signature=`; `ext_matched` bytes of it seen.
    SignatureExt,
    /// Inside the 64 signature hex digits; `sig_nibbles` seen.
    Signature,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Inside chunk data; `size` bytes left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer line (kept in `line`).
    TrailerLine,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final CRLF.
    EndLf,
    /// Body complete.
    Done,
    /// Refused; every later call returns the same error.
    Failed(AwsChunkedError),
}

/// Resumable decoder for one `aws-chunked` body. Create one per request.
#[derive(Clone, Debug)]
pub struct AwsChunkedDecoder {
    mode: AwsChunkedMode,
    state: State,
    /// Chunk size being parsed (size states), then bytes of it still to deliver (`Data`).
    size: u64,
    size_digits: u8,
    ext_matched: u8,
    signature: [u8; 32],
    sig_nibbles: u8,
    /// Payload bytes delivered in `Data` events so far.
    delivered: u64,
    /// `x-amz-decoded-content-length`, if the caller gave it.
    declared: Option<u64>,
    min_chunk_bytes: u64,
    /// The previous chunk was non-empty and below `min_chunk_bytes`: only the last may be.
    previous_was_small: bool,
    line: [u8; MAX_TRAILER_LINE_BYTES],
    line_len: usize,
    trailers: usize,
    trailer_signed: bool,
}

impl AwsChunkedDecoder {
    /// A decoder for a body announced with `mode`.
    pub fn new(mode: AwsChunkedMode) -> Self {
        AwsChunkedDecoder {
            mode,
            state: State::SizeStart,
            size: 0,
            size_digits: 0,
            ext_matched: 0,
            signature: [0; 32],
            sig_nibbles: 0,
            delivered: 0,
            declared: None,
            min_chunk_bytes: MIN_AWS_CHUNK_BYTES,
            previous_was_small: false,
            line: [0; MAX_TRAILER_LINE_BYTES],
            line_len: 0,
            trailers: 0,
            trailer_signed: false,
        }
    }

    /// Requires the chunks to carry exactly `bytes` of payload (the request's
    /// `x-amz-decoded-content-length`, which S3 requires for these uploads).
    pub fn with_decoded_length(mut self, bytes: u64) -> Self {
        self.declared = Some(bytes);
        self
    }

    /// Sets the smallest size allowed for a chunk that is not the last non-empty one
    /// (default [`MIN_AWS_CHUNK_BYTES`]; 0 allows any).
    pub fn with_min_chunk_bytes(mut self, bytes: u64) -> Self {
        self.min_chunk_bytes = bytes;
        self
    }

    /// The mode this decoder was created for.
    pub fn mode(&self) -> AwsChunkedMode {
        self.mode
    }

    /// Payload bytes delivered in `Data` events so far.
    pub fn decoded_bytes(&self) -> u64 {
        self.delivered
    }

    /// True once the whole body, trailers included, has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`; returns (bytes consumed from input, event).
    ///
    /// On `Data { start, end }`, `consumed == end`: call again with `input[end..]`. Other
    /// events consume the framing before them; `Partial` consumes all of `input`. After `End`,
    /// further calls return `(0, End)`. Errors are final (repeated on every later call).
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, AwsChunk), AwsChunkedError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok((pos, AwsChunk::End)),
                State::Failed(e) => return Err(e),
                State::Data => {
                    let available = input.len() - pos;
                    if available == 0 {
                        return Ok((pos, AwsChunk::Partial));
                    }
                    // size <= MAX_AWS_CHUNK_BYTES, so it fits usize everywhere we run; min()
                    // keeps it safe regardless.
                    let take = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    self.size -= take as u64;
                    self.delivered += take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    let end = pos + take;
                    return Ok((end, AwsChunk::Data { start: pos, end }));
                }
                _ => {
                    let Some(&b) = input.get(pos) else {
                        return Ok((pos, AwsChunk::Partial));
                    };
                    pos += 1;
                    match self.step(b) {
                        Ok(None) => {}
                        Ok(Some(event)) => return Ok((pos, event)),
                        Err(e) => {
                            self.state = State::Failed(e);
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Advances the framing state machine by one byte (never called in `Data`, `Done` or
    /// `Failed`). Returns the event the byte completes, if any.
    fn step(&mut self, b: u8) -> Result<Option<AwsChunk>, AwsChunkedError> {
        use AwsChunkedError::*;
        match self.state {
            State::SizeStart => {
                let d = hex_value(b).ok_or(if b == b'\n' { BareLf } else { BadChunkSize })?;
                self.size = u64::from(d);
                self.size_digits = 1;
                self.state = State::Size;
            }
            State::Size => match (hex_value(b), b) {
                (Some(d), _) => {
                    self.size_digits += 1;
                    if self.size_digits > MAX_SIZE_DIGITS {
                        return Err(ChunkLineTooLong);
                    }
                    // Checked per digit: the size never exceeds the cap, so it cannot overflow.
                    self.size = self.size * 16 + u64::from(d);
                    if self.size > MAX_AWS_CHUNK_BYTES {
                        return Err(ChunkTooLarge);
                    }
                }
                (None, b';') if self.mode.is_signed() => {
                    self.ext_matched = 1;
                    self.state = State::SignatureExt;
                }
                (None, b';') => return Err(BadChunkSignature),
                (None, b'\r') if self.mode.is_signed() => return Err(MissingChunkSignature),
                (None, b'\r') => self.state = State::SizeLf,
                (None, b'\n') => return Err(BareLf),
                (None, _) => return Err(BadChunkSize),
            },
            State::SignatureExt => {
                if SIGNATURE_EXT.get(usize::from(self.ext_matched)) != Some(&b) {
                    return Err(if b == b'\n' { BareLf } else { BadChunkSignature });
                }
                self.ext_matched += 1;
                if usize::from(self.ext_matched) == SIGNATURE_EXT.len() {
                    self.sig_nibbles = 0;
                    self.state = State::Signature;
                }
            }
            State::Signature => {
                if self.sig_nibbles == 64 {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b'\n' => return Err(BareLf),
                        _ => return Err(BadChunkSignature),
                    }
                } else {
                    let d = hex_value(b).ok_or(if b == b'\n' { BareLf } else { BadChunkSignature })?;
                    let i = usize::from(self.sig_nibbles / 2);
                    if self.sig_nibbles & 1 == 0 {
                        self.signature[i] = d << 4;
                    } else {
                        self.signature[i] |= d;
                    }
                    self.sig_nibbles += 1;
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(BadChunkTerminator);
                }
                return self.size_line_done();
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(BadChunkTerminator);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(BadChunkTerminator);
                }
                self.state = State::SizeStart;
                return Ok(Some(AwsChunk::ChunkEnd { signature: self.chunk_signature() }));
            }
            State::TrailerStart => match b {
                b'\r' => self.state = State::EndLf,
                b'\n' => return Err(BareLf),
                // No trailers in this mode, or a field after the trailer signature.
                _ if !self.mode.has_trailer() || self.trailer_signed => return Err(BadTrailer),
                _ => {
                    self.line[0] = b;
                    self.line_len = 1;
                    self.state = State::TrailerLine;
                }
            },
            State::TrailerLine => match b {
                b'\r' => self.state = State::TrailerLf,
                b'\n' => return Err(BareLf),
                _ => {
                    let slot = self.line.get_mut(self.line_len).ok_or(TrailerTooLarge)?;
                    *slot = b;
                    self.line_len += 1;
                }
            },
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(BadTrailer);
                }
                self.state = State::TrailerStart;
                return self.trailer_line_done().map(Some);
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(BadChunkTerminator);
                }
                if self.mode == AwsChunkedMode::SignedTrailer && !self.trailer_signed {
                    return Err(MissingTrailerSignature);
                }
                self.state = State::Done;
                return Ok(Some(AwsChunk::End));
            }
            State::Data | State::Done | State::Failed(_) => {}
        }
        Ok(None)
    }

    fn chunk_signature(&self) -> Option<[u8; 32]> {
        self.mode.is_signed().then_some(self.signature)
    }

    /// A size line (and its CRLF) is complete: check the size against the body's rules. The
    /// final zero-size chunk ends here (`ChunkEnd`); a non-empty one has no event until its
    /// data arrives.
    fn size_line_done(&mut self) -> Result<Option<AwsChunk>, AwsChunkedError> {
        // All earlier chunks were delivered in full, so `delivered` is their total.
        let total = self.delivered.saturating_add(self.size);
        if self.declared.is_some_and(|d| total > d) {
            return Err(AwsChunkedError::LongerThanDeclared);
        }
        if self.size == 0 {
            if self.declared.is_some_and(|d| total < d) {
                return Err(AwsChunkedError::ShorterThanDeclared);
            }
            self.state = State::TrailerStart;
            return Ok(Some(AwsChunk::ChunkEnd { signature: self.chunk_signature() }));
        }
        if self.previous_was_small {
            return Err(AwsChunkedError::ChunkTooSmall);
        }
        self.previous_was_small = self.size < self.min_chunk_bytes;
        self.state = State::Data;
        Ok(None)
    }

    /// A trailer line (and its CRLF) is complete: parse `name:value`.
    fn trailer_line_done(&mut self) -> Result<AwsChunk, AwsChunkedError> {
        let line = &self.line[..self.line_len];
        let colon = line.iter().position(|&b| b == b':').ok_or(AwsChunkedError::BadTrailer)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(AwsChunkedError::BadTrailer);
        }
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        let value_start = line[colon + 1..].iter().position(|b| !blank(b)).map_or(line.len(), |i| colon + 1 + i);
        let value_end = line.iter().rposition(|b| !blank(b)).map_or(value_start, |i| (i + 1).max(value_start));
        let value = &line[value_start..value_end];
        if !value.iter().all(|&b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b)) {
            return Err(AwsChunkedError::BadTrailer);
        }

        if name.eq_ignore_ascii_case(TRAILER_SIGNATURE) {
            if self.mode != AwsChunkedMode::SignedTrailer || self.trailer_signed || value.len() != 64 {
                return Err(AwsChunkedError::BadTrailer);
            }
            let mut signature = [0u8; 32];
            for (out, pair) in signature.iter_mut().zip(value.chunks_exact(2)) {
                let hi = hex_value(pair[0]).ok_or(AwsChunkedError::BadTrailer)?;
                let lo = hex_value(pair[1]).ok_or(AwsChunkedError::BadTrailer)?;
                *out = hi << 4 | lo;
            }
            self.trailer_signed = true;
            return Ok(AwsChunk::TrailerSignature { signature });
        }

        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(AwsChunkedError::TrailerTooLarge);
        }
        // Offsets fit u8: the line is at most MAX_TRAILER_LINE_BYTES (128) long.
        Ok(AwsChunk::Trailer(TrailerField {
            line: self.line,
            name_len: colon as u8,
            value_start: value_start as u8,
            value_end: value_end as u8,
        }))
    }
}

/// RFC 9110 §5.6.2 token characters (header field names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AwsChunkedMode::*;

    /// An event with its bytes, so events from differently split inputs compare.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Ev {
        Data(Vec<u8>),
        ChunkEnd(Option<[u8; 32]>),
        Trailer(Vec<u8>, Vec<u8>),
        TrailerSignature([u8; 32]),
    }

    /// What feeding a body produced: the events (adjacent `Data` merged) and how it ended:
    /// `Ok(Some(n))` = `End` after consuming n bytes, `Ok(None)` = input ran out.
    #[derive(Debug, PartialEq, Eq)]
    struct Decoded {
        events: Vec<Ev>,
        outcome: Result<Option<usize>, AwsChunkedError>,
    }

    /// Feeds `input` split at `cuts` to `dec`, the way a connection would: each read is decoded
    /// until Partial, and nothing is kept between reads (Partial consumes all).
    fn feed(mut dec: AwsChunkedDecoder, input: &[u8], cuts: &[usize]) -> Decoded {
        let mut events: Vec<Ev> = Vec::new();
        let mut consumed_total = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(input.len());
        let mut from = 0;
        for to in bounds {
            let mut piece = &input[from..to];
            from = to;
            loop {
                let (n, ev) = match dec.decode(piece) {
                    Ok(r) => r,
                    Err(e) => {
                        // Errors are sticky.
                        assert_eq!(dec.decode(b"0\r\n\r\n"), Err(e));
                        return Decoded { events, outcome: Err(e) };
                    }
                };
                assert!(n <= piece.len());
                consumed_total += n;
                let data_end = match ev {
                    AwsChunk::Data { start, end } => {
                        assert!(start < end && end == n, "{start}..{end} consumed {n}");
                        match events.last_mut() {
                            Some(Ev::Data(d)) => d.extend_from_slice(&piece[start..end]),
                            _ => events.push(Ev::Data(piece[start..end].to_vec())),
                        }
                        true
                    }
                    AwsChunk::ChunkEnd { signature } => {
                        events.push(Ev::ChunkEnd(signature));
                        true
                    }
                    AwsChunk::Trailer(t) => {
                        events.push(Ev::Trailer(t.name().to_vec(), t.value().to_vec()));
                        true
                    }
                    AwsChunk::TrailerSignature { signature } => {
                        events.push(Ev::TrailerSignature(signature));
                        true
                    }
                    AwsChunk::Partial => {
                        assert_eq!(n, piece.len(), "Partial must consume all input");
                        false
                    }
                    AwsChunk::End => {
                        assert!(dec.is_done());
                        assert_eq!(dec.decode(b"more"), Ok((0, AwsChunk::End)));
                        return Decoded { events, outcome: Ok(Some(consumed_total)) };
                    }
                };
                if !data_end {
                    break;
                }
                piece = &piece[n..];
            }
        }
        assert!(!dec.is_done());
        Decoded { events, outcome: Ok(None) }
    }

    fn sig(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    fn sig_hex(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    /// Small valid bodies (minimum chunk size relaxed) and the events each must give.
    fn fixtures() -> Vec<(AwsChunkedMode, Vec<u8>, Vec<Ev>)> {
        let signed = format!(
            "5;chunk-signature={}\r\nhello\r\n6;chunk-signature={}\r\n world\r\n0;chunk-signature={}\r\n\r\n",
            sig_hex(0x11),
            sig_hex(0xab),
            sig_hex(0xfe)
        );
        let unsigned = "5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        let signed_trailer = format!(
            "3;chunk-signature={}\r\nabc\r\n0;chunk-signature={}\r\nx-amz-checksum-crc32c:Nks/tw==\r\n\
x-amz-trailer-signature:{}\r\n\r\n",
            sig_hex(0x01),
            sig_hex(0x02),
            sig_hex(0x03)
        );
        vec![
            (
                SignedChunks,
                signed.into_bytes(),
                vec![
                    Ev::Data(b"hello".to_vec()),
                    Ev::ChunkEnd(Some(sig(0x11))),
                    Ev::Data(b" world".to_vec()),
                    Ev::ChunkEnd(Some(sig(0xab))),
                    Ev::ChunkEnd(Some(sig(0xfe))),
                ],
            ),
            (
                UnsignedTrailer,
                unsigned.as_bytes().to_vec(),
                vec![
                    Ev::Data(b"hello".to_vec()),
                    Ev::ChunkEnd(None),
                    Ev::ChunkEnd(None),
                    Ev::Trailer(b"x-amz-checksum-crc32".to_vec(), b"NhCmhg==".to_vec()),
                ],
            ),
            (
                SignedTrailer,
                signed_trailer.into_bytes(),
                vec![
                    Ev::Data(b"abc".to_vec()),
                    Ev::ChunkEnd(Some(sig(0x01))),
                    Ev::ChunkEnd(Some(sig(0x02))),
                    Ev::Trailer(b"x-amz-checksum-crc32c".to_vec(), b"Nks/tw==".to_vec()),
                    Ev::TrailerSignature(sig(0x03)),
                ],
            ),
            // Empty payloads.
            (UnsignedTrailer, b"0\r\n\r\n".to_vec(), vec![Ev::ChunkEnd(None)]),
            (
                SignedChunks,
                format!("0;chunk-signature={}\r\n\r\n", sig_hex(0x77)).into_bytes(),
                vec![Ev::ChunkEnd(Some(sig(0x77)))],
            ),
            // Upper-case hex, leading zeros, blanks around a trailer value, several trailers.
            (
                UnsignedTrailer,
                b"000A\r\n0123456789\r\n00\r\nx-amz-checksum-sha256: \t47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU= \r\nX-Other:\r\n\r\n"
                    .to_vec(),
                vec![
                    Ev::Data(b"0123456789".to_vec()),
                    Ev::ChunkEnd(None),
                    Ev::ChunkEnd(None),
                    Ev::Trailer(b"x-amz-checksum-sha256".to_vec(), b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_vec()),
                    Ev::Trailer(b"X-Other".to_vec(), Vec::new()),
                ],
            ),
        ]
    }

    fn decoder(mode: AwsChunkedMode) -> AwsChunkedDecoder {
        AwsChunkedDecoder::new(mode).with_min_chunk_bytes(0)
    }

    #[test]
    fn whole_body_at_once() {
        let input = b"5\r\nhello\r\n0\r\nx-amz-checksum-crc32:NhCmhg==\r\n\r\n";
        let mut dec = decoder(UnsignedTrailer);
        assert_eq!(dec.decode(input), Ok((8, AwsChunk::Data { start: 3, end: 8 })));
        assert_eq!(dec.decode(&input[8..]), Ok((2, AwsChunk::ChunkEnd { signature: None })));
        assert_eq!(dec.decode(&input[10..]), Ok((3, AwsChunk::ChunkEnd { signature: None })));
        let (n, ev) = dec.decode(&input[13..]).unwrap();
        let AwsChunk::Trailer(t) = ev else { panic!("{ev:?}") };
        assert_eq!((n, t.name(), t.value()), (31, &b"x-amz-checksum-crc32"[..], &b"NhCmhg=="[..]));
        assert_eq!(dec.decode(&input[44..]), Ok((2, AwsChunk::End)));
        assert!(dec.is_done());
        assert_eq!(dec.decoded_bytes(), 5);
    }

    #[test]
    fn shotgun_two_pieces() {
        for (mode, body, events) in fixtures() {
            let expected = Decoded { events, outcome: Ok(Some(body.len())) };
            assert_eq!(feed(decoder(mode), &body, &[]), expected);
            for k in 0..=body.len() {
                assert_eq!(feed(decoder(mode), &body, &[k]), expected, "{mode:?} split at {k}");
            }
        }
    }

    #[test]
    fn shotgun_byte_at_a_time_and_uneven_pieces() {
        for (mode, body, events) in fixtures() {
            let expected = Decoded { events, outcome: Ok(Some(body.len())) };
            let every: Vec<usize> = (1..body.len()).collect();
            assert_eq!(feed(decoder(mode), &body, &every), expected);
            for seed in 1..20u64 {
                let mut x = seed;
                let mut cuts = Vec::new();
                let mut at = 0;
                loop {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    at += 1 + (x >> 33) as usize % 17;
                    if at >= body.len() {
                        break;
                    }
                    cuts.push(at);
                }
                assert_eq!(feed(decoder(mode), &body, &cuts), expected);
            }
        }
    }

    #[test]
    fn truncated_bodies_are_partial() {
        for (mode, body, _) in fixtures() {
            for k in 0..body.len() {
                assert_eq!(feed(decoder(mode), &body[..k], &[]).outcome, Ok(None), "{mode:?} prefix {k}");
            }
        }
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nPUT /next HTTP/1.1\r\n";
        assert_eq!(feed(decoder(UnsignedTrailer), input, &[]).outcome, Ok(Some(13)));
    }

    fn first_error(mode: AwsChunkedMode, input: &[u8]) -> Option<AwsChunkedError> {
        first_error_with(decoder(mode), input)
    }

    fn first_error_with(dec: AwsChunkedDecoder, input: &[u8]) -> Option<AwsChunkedError> {
        // The same verdict whether the bytes arrive at once or one by one.
        let whole = feed(dec.clone(), input, &[]).outcome.err();
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(feed(dec, input, &every).outcome.err(), whole, "{:?}", String::from_utf8_lossy(input));
        whole
    }

    #[test]
    fn size_line_rules() {
        use AwsChunkedError::*;
        let u = |s: &str| first_error(UnsignedTrailer, s.as_bytes());
        assert_eq!(u("\r\n"), Some(BadChunkSize));
        assert_eq!(u(" 5\r\n"), Some(BadChunkSize));
        assert_eq!(u("5 \r\n"), Some(BadChunkSize));
        assert_eq!(u("-5\r\n"), Some(BadChunkSize));
        assert_eq!(u("0x5\r\n"), Some(BadChunkSize));
        assert_eq!(u("g\r\n"), Some(BadChunkSize));
        assert_eq!(u("5\n"), Some(BareLf));
        assert_eq!(u("\n"), Some(BareLf));
        assert_eq!(u("5\rX"), Some(BadChunkTerminator));
        assert_eq!(u("5\r\r\n"), Some(BadChunkTerminator));
        // Extensions have no place in the unsigned mode.
        assert_eq!(u("5;chunk-signature=00\r\n"), Some(BadChunkSignature));
        assert_eq!(u("5;x=y\r\n"), Some(BadChunkSignature));
        // Digits: at most MAX_SIZE_DIGITS, value at most MAX_AWS_CHUNK_BYTES, refused while
        // the line is still arriving.
        assert_eq!(u("0000000000001000\r\n"), None);
        assert_eq!(u("00000000000001000"), Some(ChunkLineTooLong));
        assert_eq!(u(&"0".repeat(10_000)), Some(ChunkLineTooLong));
        assert_eq!(u("1000000\r\n"), None); // exactly 16 MiB
        assert_eq!(u("1000001"), Some(ChunkTooLarge));
        assert_eq!(u("ffffffffffffffff"), Some(ChunkTooLarge));
    }

    #[test]
    fn chunk_signature_rules() {
        use AwsChunkedError::*;
        let s = |s: &str| first_error(SignedChunks, s.as_bytes());
        let good = sig_hex(0x5a);
        assert_eq!(s(&format!("5;chunk-signature={good}\r\nhello\r\n")), None);
        assert_eq!(s(&format!("5;chunk-signature={}\r\nhello\r\n", good.to_uppercase())), None);
        assert_eq!(s("5\r\nhello\r\n"), Some(MissingChunkSignature));
        assert_eq!(s(&format!("5;chunk-signaturE={good}\r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature ={good}\r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5; chunk-signature={good}\r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={}\r\n", &good[..63])), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={good}0\r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={good};x=y\r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={}g\r\n", &good[..63])), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={good} \r\n")), Some(BadChunkSignature));
        assert_eq!(s(&format!("5;chunk-signature={good}\n")), Some(BareLf));
        assert_eq!(s("5;chunk\n"), Some(BareLf));
        assert_eq!(s("5;chunk-signature=00\n"), Some(BareLf));
        // The signature bytes are decoded.
        let body = "1;chunk-signature=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\r\nx\r\n";
        let got = feed(decoder(SignedChunks), body.as_bytes(), &[]);
        let expected: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(got.events, [Ev::Data(b"x".to_vec()), Ev::ChunkEnd(Some(expected))]);
    }

    #[test]
    fn data_terminator_rules() {
        use AwsChunkedError::*;
        let u = |s: &str| first_error(UnsignedTrailer, s.as_bytes());
        assert_eq!(u("5\r\nhelloX\r\n"), Some(BadChunkTerminator));
        assert_eq!(u("5\r\nhello\n0\r\n\r\n"), Some(BadChunkTerminator));
        assert_eq!(u("5\r\nhello\r0\r\n\r\n"), Some(BadChunkTerminator));
        // A chunk longer than its declared size (a lying size): the data swallows the framing
        // that follows, then the terminator check catches it.
        assert_eq!(u("3\r\nhello\r\n0\r\n\r\n"), Some(BadChunkTerminator));
        // A declared size larger than the data: the body never completes.
        assert_eq!(feed(decoder(UnsignedTrailer), b"10\r\nhello\r\n0\r\n\r\n", &[]).outcome, Ok(None));
        assert_eq!(u("0\r\n\rX"), Some(BadChunkTerminator));
        let s = |s: String| first_error(SignedChunks, s.as_bytes());
        assert_eq!(s(format!("0;chunk-signature={}\r\n\n", sig_hex(1))), Some(BareLf));
        assert_eq!(s(format!("0;chunk-signature={}\r\nX", sig_hex(1))), Some(BadTrailer));
    }

    #[test]
    fn trailer_rules() {
        use AwsChunkedError::*;
        let u = |s: &str| first_error(UnsignedTrailer, s.as_bytes());
        let st = |s: String| first_error(SignedTrailer, s.as_bytes());
        let last = |b: u8| format!("0;chunk-signature={}\r\n", sig_hex(b));
        // Signed chunks without trailer: no trailer field at all.
        assert_eq!(
            first_error(SignedChunks, format!("{}x-amz-checksum-crc32:AAAAAA==\r\n\r\n", last(1)).as_bytes()),
            Some(BadTrailer)
        );
        // Malformed lines.
        assert_eq!(u("0\r\nno-colon\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\n:value\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nname :value\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nna(me:value\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nname:va\x01lue\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nname:v\u{e9}\r\n\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nname:value\rX\r\n"), Some(BadTrailer));
        assert_eq!(u("0\r\nname:value\n\r\n"), Some(BareLf));
        assert_eq!(u("0\r\n\n"), Some(BareLf));
        // A trailer signature only in the signed-trailer mode.
        assert_eq!(u(&format!("0\r\nx-amz-trailer-signature:{}\r\n\r\n", sig_hex(3))), Some(BadTrailer));
        // There it is required, must be well-formed, and comes last and once.
        assert_eq!(st(format!("{}x-amz-checksum-crc32:AAAAAA==\r\n\r\n", last(1))), Some(MissingTrailerSignature));
        assert_eq!(st(format!("{}\r\n", last(1))), Some(MissingTrailerSignature));
        assert_eq!(st(format!("{}x-amz-trailer-signature:{}\r\n\r\n", last(1), &sig_hex(3)[..62])), Some(BadTrailer));
        assert_eq!(st(format!("{}x-amz-trailer-signature:{}zz\r\n\r\n", last(1), &sig_hex(3)[..62])), Some(BadTrailer));
        let signature_line = format!("x-amz-trailer-signature:{}\r\n", sig_hex(3));
        assert_eq!(st(format!("{}{signature_line}\r\n", last(1))), None);
        assert_eq!(st(format!("{}{signature_line}x-amz-checksum-crc32:AAAAAA==\r\n\r\n", last(1))), Some(BadTrailer));
        assert_eq!(st(format!("{}{signature_line}{signature_line}\r\n", last(1))), Some(BadTrailer));
        // Sizes: a line of exactly MAX_TRAILER_LINE_BYTES passes, one more byte does not,
        // and the refusal comes before any CRLF.
        let name = "x-amz-checksum-crc32:";
        let fits = format!("0\r\n{name}{}\r\n\r\n", "A".repeat(MAX_TRAILER_LINE_BYTES - name.len()));
        assert_eq!(u(&fits), None);
        assert_eq!(
            u(&format!("0\r\n{name}{}", "A".repeat(MAX_TRAILER_LINE_BYTES - name.len() + 1))),
            Some(TrailerTooLarge)
        );
        assert_eq!(u(&format!("0\r\n{}", "A".repeat(100_000))), Some(TrailerTooLarge));
        let many = |n: usize| format!("0\r\n{}\r\n", "x-amz-checksum-crc32:AAAAAA==\r\n".repeat(n));
        assert_eq!(u(&many(MAX_TRAILERS)), None);
        assert_eq!(u(&many(MAX_TRAILERS + 1)), Some(TrailerTooLarge));
    }

    #[test]
    fn minimum_chunk_size() {
        use AwsChunkedError::*;
        let body = |sizes: &[usize]| {
            let mut b = Vec::new();
            for &n in sizes {
                b.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                b.resize(b.len() + n, b'a');
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(b"0\r\n\r\n");
            b
        };
        let dec = AwsChunkedDecoder::new(UnsignedTrailer);
        // Only the last non-empty chunk may be smaller than 8 KiB.
        assert_eq!(first_error_with(dec.clone(), &body(&[8192, 8192, 1])), None);
        assert_eq!(first_error_with(dec.clone(), &body(&[1])), None);
        assert_eq!(first_error_with(dec.clone(), &body(&[10_000, 9000, 8192])), None);
        assert_eq!(first_error_with(dec.clone(), &body(&[8192, 8191, 8192])), Some(ChunkTooSmall));
        assert_eq!(first_error_with(dec.clone(), &body(&[1, 1])), Some(ChunkTooSmall));
        // Relaxed on request.
        assert_eq!(first_error_with(dec.with_min_chunk_bytes(0), &body(&[1, 1, 1])), None);
    }

    #[test]
    fn decoded_length_must_match() {
        use AwsChunkedError::*;
        let dec = |n: u64| decoder(UnsignedTrailer).with_decoded_length(n);
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(first_error_with(dec(11), body), None);
        assert_eq!(feed(dec(11), body, &[]).outcome, Ok(Some(body.len())));
        // Too long: refused at the size line that goes past the declared length, before its data.
        assert_eq!(first_error_with(dec(10), body), Some(LongerThanDeclared));
        assert_eq!(first_error_with(dec(4), b"5\r\n"), Some(LongerThanDeclared));
        assert_eq!(first_error_with(dec(0), b"1\r\n"), Some(LongerThanDeclared));
        // Too short: refused at the last chunk.
        assert_eq!(first_error_with(dec(12), body), Some(ShorterThanDeclared));
        assert_eq!(first_error_with(dec(1), b"0\r\n"), Some(ShorterThanDeclared));
        assert_eq!(first_error_with(dec(0), b"0\r\n\r\n"), None);
        let mut d = dec(11);
        let _ = d.decode(&body[..7]);
        assert_eq!(d.decoded_bytes(), 4);
    }

    #[test]
    fn modes() {
        for mode in [SignedChunks, UnsignedTrailer, SignedTrailer] {
            assert_eq!(AwsChunkedMode::from_content_sha256(mode.as_str().as_bytes()), Some(mode));
            assert_eq!(AwsChunkedDecoder::new(mode).mode(), mode);
        }
        for other in [
            &b"UNSIGNED-PAYLOAD"[..],
            b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
            b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
            b"streaming-unsigned-payload-trailer",
            b"",
        ] {
            assert_eq!(AwsChunkedMode::from_content_sha256(other), None);
        }
        assert!(SignedChunks.is_signed() && !SignedChunks.has_trailer());
        assert!(!UnsignedTrailer.is_signed() && UnsignedTrailer.has_trailer());
        assert!(SignedTrailer.is_signed() && SignedTrailer.has_trailer());
    }

    #[test]
    fn error_labels_and_codes() {
        use AwsChunkedError::*;
        let all = [
            BadChunkSize,
            ChunkLineTooLong,
            ChunkTooLarge,
            ChunkTooSmall,
            MissingChunkSignature,
            BadChunkSignature,
            BadChunkTerminator,
            BareLf,
            BadTrailer,
            TrailerTooLarge,
            MissingTrailerSignature,
            LongerThanDeclared,
            ShorterThanDeclared,
        ];
        for (i, e) in all.iter().enumerate() {
            assert!(e.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{}", e.as_str());
            assert!(all[i + 1..].iter().all(|o| o.as_str() != e.as_str()));
            assert!(!e.s3_code().is_empty() && !e.to_string().is_empty());
        }
        assert_eq!(ChunkTooSmall.s3_code(), "InvalidChunkSizeError");
        assert_eq!(BadTrailer.s3_code(), "MalformedTrailerError");
        assert_eq!(ShorterThanDeclared.s3_code(), "IncompleteBody");
    }

    #[test]
    fn garbage_never_panics() {
        for (mode, body, _) in fixtures() {
            for i in 0..body.len() {
                for b in [0u8, b'\r', b'\n', b' ', b';', b':', b'0', b'f', b'g', 0xff] {
                    let mut m = body.clone();
                    m[i] = b;
                    let got = feed(decoder(mode), &m, &[i]);
                    if let Ok(Some(end)) = got.outcome {
                        assert!(end <= m.len());
                    }
                }
            }
        }
    }
}
