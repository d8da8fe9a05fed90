//! Chunked transfer coding (RFC 9112 §7.1): a resumable decoder and the encoder's pieces.
//!
//! Owns the byte-level state machine for `chunk-size [ext] CRLF data CRLF ... 0 CRLF trailers
//! CRLF`. It does not own buffers: `ChunkedDecoder::decode` reads a slice and returns how many
//! bytes it consumed plus one event; `Data` events are offsets into that same slice, so the
//! caller can hand out `Bytes` slices of its read buffer without copying.
//!
//! Why not `httparse::parse_chunk_size`: it takes "\r\n" as a zero-size (last) chunk, does not
//! bound the extension length, and leaves the CRLF after data and the trailers to the caller —
//! each of those is a smuggling or memory-exhaustion hole. Here every byte of framing goes
//! through one `match`, which keeps the rules in one place:
//! - chunk-size is 1+ hex digits fitting u64, then optional BWS, `;` extensions (ignored);
//! - the size line, extensions and CRLF included, is at most `MAX_CHUNK_LINE_BYTES`;
//! - chunk data is followed by exactly CRLF; LF without CR is refused everywhere;
//! - trailer lines are consumed and dropped, at most `MAX_TRAILER_BYTES` in total.
//!
//! Framing bytes are consumed as they arrive (the state remembers partial lines), so `Partial`
//! always consumes the whole input: the caller never has to keep framing bytes around.

use bytes::BytesMut;

use crate::error::ParseError;
use crate::limits::{MAX_CHUNK_LINE_BYTES, MAX_TRAILER_BYTES};

/// Goes after each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";
/// The last-chunk with no trailers: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// One event from `ChunkedDecoder::decode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes `input[start..end]` (non-empty; possibly only part of a chunk).
    Data { start: usize, end: usize },
    /// All input consumed; call again with more bytes.
    Partial,
    /// The last-chunk, trailers and final CRLF were consumed: the body is complete. Bytes after
    /// the consumed count belong to the next message.
    End,
}

/// Where the decoder is in the chunked grammar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk-size.
    #[default]
    SizeStart,
    /// Inside the chunk-size digits.
    Size,
    /// Whitespace after the digits (BWS before `;`).
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// Saw the CR ending the size line.
    SizeLf,
    /// Inside chunk data; `ChunkedDecoder::size` bytes left.
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Saw the CR ending a trailer line.
    TrailerLineLf,
    /// Saw the CR of the final CRLF.
    EndLf,
    /// Body complete.
    Done,
}

/// Resumable decoder for one chunked body. Create one per message.
#[derive(Clone, Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    /// Chunk size being parsed (size states), then bytes of it still to deliver (`Data`).
    size: u64,
    /// Bytes of the current size line seen so far.
    line_bytes: usize,
    /// Bytes of trailer section seen so far.
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decode from `input`; returns (bytes consumed from input, event). Data may be a prefix of a
    /// chunk (whatever is available); Partial means consume `consumed` and call again with more
    /// bytes; End means the last-chunk, trailers and final CRLF were consumed.
    ///
    /// On `Data { start, end }`, `consumed == end`: call again with `input[end..]`. After `End`,
    /// further calls return `(0, End)`. Errors are final.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Chunk), ParseError> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Done => return Ok((pos, Chunk::End)),
                State::Data => {
                    let available = input.len() - pos;
                    if available == 0 {
                        return Ok((pos, Chunk::Partial));
                    }
                    // min() with a usize keeps the result a valid usize on every platform.
                    let take = usize::try_from(self.size).map_or(available, |s| s.min(available));
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    let end = pos + take;
                    return Ok((end, Chunk::Data { start: pos, end }));
                }
                _ => {
                    let Some(&b) = input.get(pos) else {
                        return Ok((pos, Chunk::Partial));
                    };
                    pos += 1;
                    self.step(b)?;
                }
            }
        }
    }

    /// True once the whole body, trailers included, has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether `input` starts with a whole chunked body: its last chunk, trailers and final
    /// CRLF. Only the framing is walked; chunk data is skipped. Malformed framing counts as not
    /// whole (a decoder reading the body reports it).
    pub fn ends_within(input: &[u8]) -> bool {
        let mut dec = ChunkedDecoder::new();
        let mut pos = 0;
        loop {
            match dec.decode(&input[pos..]) {
                Ok((_, Chunk::End)) => return true,
                Ok((_, Chunk::Partial)) | Err(_) => return false,
                Ok((used, Chunk::Data { .. })) => pos += used,
            }
        }
    }

    /// Advances the framing state machine by one byte (never called in `Data` or `Done`).
    fn step(&mut self, b: u8) -> Result<(), ParseError> {
        match self.state {
            State::SizeStart | State::Size | State::SizeWs | State::Ext | State::SizeLf => {
                // Counted before parsing so that an endless line fails while still partial.
                self.line_bytes += 1;
                if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                    return Err(ParseError::ChunkLineTooLong);
                }
            }
            State::TrailerStart | State::TrailerLine | State::TrailerLineLf | State::EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(ParseError::TrailerTooLarge);
                }
            }
            State::Data | State::DataCr | State::DataLf | State::Done => {}
        }

        let digit = hex_value(b);
        self.state = match (self.state, b, digit) {
            // A chunk-size must start with a hex digit: "\r\n" is not a zero-size chunk.
            (State::SizeStart, _, Some(d)) => {
                self.size = u64::from(d);
                State::Size
            }
            (State::SizeStart, _, None) => return Err(ParseError::BadChunkSize),
            (State::Size, _, Some(d)) => {
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(d)))
                    .ok_or(ParseError::BadChunkSize)?;
                State::Size
            }
            (State::Size | State::SizeWs, b' ' | b'\t', _) => State::SizeWs,
            (State::Size | State::SizeWs, b';', _) => State::Ext,
            (State::Size | State::SizeWs | State::Ext, b'\r', _) => State::SizeLf,
            (State::Size | State::SizeWs | State::Ext, b'\n', _) => return Err(ParseError::BareLf),
            (State::Size | State::SizeWs, _, _) => return Err(ParseError::BadChunkSize),
            // Extensions are ignored, but control bytes in them are not valid in any form.
            (State::Ext, _, _) if b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80 => State::Ext,
            (State::Ext, _, _) => return Err(ParseError::BadChunkSize),
            (State::SizeLf, b'\n', _) => {
                self.line_bytes = 0;
                if self.size == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            (State::SizeLf, _, _) => return Err(ParseError::BadChunkSize),
            (State::DataCr, b'\r', _) => State::DataLf,
            (State::DataLf, b'\n', _) => State::SizeStart,
            (State::DataCr | State::DataLf, _, _) => return Err(ParseError::BadChunkTerminator),
            (State::TrailerStart, b'\r', _) => State::EndLf,
            (State::TrailerStart | State::TrailerLine, b'\n', _) => return Err(ParseError::BareLf),
            (State::TrailerLine, b'\r', _) => State::TrailerLineLf,
            (State::TrailerStart | State::TrailerLine, _, _) => State::TrailerLine,
            (State::TrailerLineLf, b'\n', _) => State::TrailerStart,
            // CR not followed by LF inside the trailer section.
            (State::TrailerLineLf, _, _) => return Err(ParseError::BadHeader),
            (State::EndLf, b'\n', _) => State::Done,
            (State::EndLf, _, _) => return Err(ParseError::BadChunkTerminator),
            (State::Data | State::Done, _, _) => self.state,
        };
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends the size line for a chunk of `len` bytes: "{hex}\r\n". Follow it with the data and
/// `CHUNK_END`. `len` must not be 0 (that is the last-chunk: use `LAST_CHUNK`).
pub fn encode_chunk_header(len: usize, out: &mut BytesMut) {
    // Up to 16 hex digits for a 64-bit usize, plus CRLF; built on the stack, no formatting.
    let mut digits = [0u8; 18];
    let mut i = 16;
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    digits[16] = b'\r';
    digits[17] = b'\n';
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What feeding a body in pieces produced.
    #[derive(Debug, PartialEq, Eq)]
    struct Decoded {
        data: Vec<u8>,
        /// Bytes consumed through `End`, if it was reached.
        end_at: Option<usize>,
    }

    /// Feeds `input` split at `cuts` to a fresh decoder, the way a connection would: each read
    /// is decoded until Partial, and nothing is kept between reads (Partial consumes all).
    fn feed(input: &[u8], cuts: &[usize]) -> Result<Decoded, ParseError> {
        let mut dec = ChunkedDecoder::new();
        let mut data = Vec::new();
        let mut consumed_total = 0;
        let mut bounds = cuts.to_vec();
        bounds.push(input.len());
        let mut from = 0;
        for to in bounds {
            let mut piece = &input[from..to];
            from = to;
            loop {
                let (n, ev) = dec.decode(piece)?;
                assert!(n <= piece.len());
                consumed_total += n;
                match ev {
                    Chunk::Data { start, end } => {
                        assert!(start < end && end == n, "{start}..{end} consumed {n}");
                        data.extend_from_slice(&piece[start..end]);
                        piece = &piece[n..];
                    }
                    Chunk::Partial => {
                        assert_eq!(n, piece.len(), "Partial must consume all input");
                        break;
                    }
                    Chunk::End => {
                        assert!(dec.is_done());
                        assert_eq!(dec.decode(b"more"), Ok((0, Chunk::End)));
                        return Ok(Decoded { data, end_at: Some(consumed_total) });
                    }
                }
            }
        }
        assert!(!dec.is_done());
        Ok(Decoded { data, end_at: None })
    }

    /// Valid bodies and the payload each carries.
    fn fixtures() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut big_body = b"1000\r\n".to_vec();
        let big: Vec<u8> = (0..0x1000u32).map(|i| (i % 251) as u8).collect();
        big_body.extend_from_slice(&big);
        big_body.extend_from_slice(b"\r\n3\r\nend\r\n0\r\n\r\n");
        let mut big_payload = big.clone();
        big_payload.extend_from_slice(b"end");
        vec![
            (b"5\r\nhello\r\n0\r\n\r\n".to_vec(), b"hello".to_vec()),
            (b"0\r\n\r\n".to_vec(), Vec::new()),
            (
                b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n".to_vec(),
                b"Wikipedia in\r\n\r\nchunks.".to_vec(),
            ),
            (b"5;name=value;flag\r\nhello\r\n6 ; q=\"a b\"\r\n world\r\n000\r\n\r\n".to_vec(), b"hello world".to_vec()),
            (
                b"A\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53\r\n\r\n".to_vec(),
                b"0123456789".to_vec(),
            ),
            (b"00000002\r\n\n\n\r\n0\r\n\r\n".to_vec(), b"\n\n".to_vec()),
            (big_body, big_payload),
        ]
    }

    #[test]
    fn whole_body_at_once() {
        let input = b"5\r\nhello\r\n0\r\n\r\n";
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.decode(input), Ok((8, Chunk::Data { start: 3, end: 8 })));
        assert_eq!(dec.decode(&input[8..]), Ok((7, Chunk::End)));
        assert!(dec.is_done());
    }

    #[test]
    fn shotgun_two_pieces() {
        for (body, payload) in fixtures() {
            for k in 0..=body.len() {
                let got = feed(&body, &[k]);
                assert_eq!(got, Ok(Decoded { data: payload.clone(), end_at: Some(body.len()) }), "split at {k}");
            }
        }
    }

    #[test]
    fn shotgun_byte_at_a_time_and_uneven_pieces() {
        for (body, payload) in fixtures() {
            let every: Vec<usize> = (1..body.len()).collect();
            let got = feed(&body, &every);
            assert_eq!(got, Ok(Decoded { data: payload.clone(), end_at: Some(body.len()) }));
            // Deterministic uneven piece sizes (LCG), several seeds.
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
                let got = feed(&body, &cuts);
                assert_eq!(got, Ok(Decoded { data: payload.clone(), end_at: Some(body.len()) }));
            }
        }
    }

    #[test]
    fn truncated_body_is_partial() {
        for (body, _) in fixtures() {
            for k in 0..body.len() {
                let got = feed(&body[..k], &[]);
                assert_eq!(got.map(|d| d.end_at), Ok(None), "prefix {k}");
            }
        }
    }

    #[test]
    fn stops_at_end_of_body() {
        let input = b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
        let got = feed(input, &[]);
        assert_eq!(got, Ok(Decoded { data: b"abc".to_vec(), end_at: Some(13) }));
    }

    #[test]
    fn round_trip_with_encoder() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = BytesMut::new();
        for piece in payload.chunks(777) {
            encode_chunk_header(piece.len(), &mut out);
            out.extend_from_slice(piece);
            out.extend_from_slice(CHUNK_END);
        }
        out.extend_from_slice(LAST_CHUNK);
        let got = feed(&out, &[1, 2, 3, 100, 1000, 4000]);
        assert_eq!(got, Ok(Decoded { data: payload, end_at: Some(out.len()) }));
    }

    #[test]
    fn encode_header() {
        let mut out = BytesMut::new();
        encode_chunk_header(0x1a2b, &mut out);
        encode_chunk_header(1, &mut out);
        encode_chunk_header(16, &mut out);
        encode_chunk_header(usize::MAX, &mut out);
        let expected = format!("1a2b\r\n1\r\n10\r\n{:x}\r\n", usize::MAX);
        assert_eq!(&out[..], expected.as_bytes());
    }

    fn first_error(input: &[u8]) -> Option<ParseError> {
        // Same verdict whether the bytes arrive at once or one by one.
        let whole = feed(input, &[]).err();
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(feed(input, &every).err(), whole, "{:?}", String::from_utf8_lossy(input));
        whole
    }

    #[test]
    fn chunk_size_rules() {
        use ParseError::*;
        assert_eq!(first_error(b"\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"\r\nhello\r\n0\r\n\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b";ext\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b" 5\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"-5\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"0x5\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"5 5\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"5\r\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"5;a\x00b\r\nhello\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"5\nhello\r\n0\r\n\r\n"), Some(BareLf));
        assert_eq!(first_error(b"5;ext\nhello\r\n"), Some(BareLf));
        // 16 hex digits fit u64; 17 overflow.
        assert_eq!(first_error(b"ffffffffffffffff\r\nabc"), None);
        assert_eq!(first_error(b"10000000000000000\r\n"), Some(BadChunkSize));
        assert_eq!(first_error(b"0000000000000000000000ff\r\n"), None);
    }

    #[test]
    fn chunk_line_cap_applies_while_partial() {
        let mut line = b"5;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(line.len(), MAX_CHUNK_LINE_BYTES);
        let mut ok = line.clone();
        ok.extend_from_slice(b"hello\r\n0\r\n\r\n");
        assert_eq!(feed(&ok, &[7]).map(|d| d.data), Ok(b"hello".to_vec()));

        // One byte longer, never terminated: refused without seeing a CRLF.
        let long = vec![b'x'; MAX_CHUNK_LINE_BYTES];
        let mut input = b"5;".to_vec();
        input.extend_from_slice(&long);
        assert_eq!(first_error(&input), Some(ParseError::ChunkLineTooLong));
        let zeros = vec![b'0'; MAX_CHUNK_LINE_BYTES + 1];
        assert_eq!(feed(&zeros, &[]), Err(ParseError::ChunkLineTooLong));
        // The cap is per line, not per body.
        let mut many = Vec::new();
        for _ in 0..100 {
            many.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
        }
        many.extend_from_slice(LAST_CHUNK);
        assert_eq!(feed(&many, &[]).map(|d| d.data.len()), Ok(100));
    }

    #[test]
    fn data_terminator_rules() {
        use ParseError::*;
        assert_eq!(first_error(b"5\r\nhelloX\r\n0\r\n\r\n"), Some(BadChunkTerminator));
        assert_eq!(first_error(b"5\r\nhello\n0\r\n\r\n"), Some(BadChunkTerminator));
        assert_eq!(first_error(b"5\r\nhello\r0\r\n\r\n"), Some(BadChunkTerminator));
        // A chunk longer than its declared size is the classic smuggling probe.
        assert_eq!(first_error(b"3\r\nhello\r\n0\r\n\r\n"), Some(BadChunkTerminator));
        assert_eq!(first_error(b"0\r\n\rX"), Some(BadChunkTerminator));
    }

    #[test]
    fn trailer_rules() {
        use ParseError::*;
        assert_eq!(first_error(b"0\r\nX: y\n\r\n"), Some(BareLf));
        assert_eq!(first_error(b"0\r\n\n"), Some(BareLf));
        assert_eq!(first_error(b"0\r\nX: y\rZ\r\n\r\n"), Some(BadHeader));
        // Trailers are capped in total, even while partial.
        let mut input = b"0\r\n".to_vec();
        while input.len() < MAX_TRAILER_BYTES + 100 {
            input.extend_from_slice(b"X-Trailer: some value here\r\n");
        }
        assert_eq!(first_error(&input), Some(TrailerTooLarge));
        // Exactly at the cap is fine: trailer lines plus the final CRLF.
        let mut input = b"0\r\nX: ".to_vec();
        input.resize(3 + MAX_TRAILER_BYTES - 4, b'v');
        input.extend_from_slice(b"\r\n\r\n");
        assert_eq!(feed(&input, &[]).map(|d| d.end_at), Ok(Some(input.len())));
        let mut over = input[..input.len() - 4].to_vec();
        over.extend_from_slice(b"v\r\n\r\n");
        assert_eq!(feed(&over, &[]), Err(TrailerTooLarge));
    }

    #[test]
    fn garbage_never_panics() {
        for (body, _) in fixtures().into_iter().take(6) {
            for i in 0..body.len() {
                for b in [0u8, b'\r', b'\n', b' ', b';', b'f', 0xff] {
                    let mut m = body.clone();
                    m[i] = b;
                    if let Ok(d) = feed(&m, &[i]) {
                        assert!(d.end_at.is_none_or(|e| e <= m.len()));
                    }
                }
            }
        }
    }
}
