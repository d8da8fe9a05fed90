//! A raw HTTP/1.1 client over a blocking `TcpStream`.
//!
//! Deliberately not a "real" HTTP client library: tests need to see exactly what the node put
//! on the wire (chunked or not, close-delimited or not), to pipeline by writing raw bytes, and
//! above all to tell "the peer closed before the body completed" apart from "here is a short
//! body". A client that quietly returned the bytes it got would let a node that sends a short
//! `200` for a truncated mirror pass. So body decoding is strict:
//! - Content-Length: EOF (or reset) before that many bytes -> [`ClientError::IncompleteBody`].
//! - chunked: EOF before the terminating `0\r\n\r\n` -> `IncompleteBody`; bad chunk syntax ->
//!   [`ClientError::Malformed`].
//! - close-delimited: EOF ends the body (that framing cannot express truncation, which is why
//!   [`Response::close_delimited`] is reported, so tests can insist on a real framing).
//! - both Content-Length and Transfer-Encoding, or conflicting Content-Lengths -> `Malformed`
//!   (RFC 9112 §6.3: a response like that is a smuggling hazard, never acceptable from the node).
//!
//! A read that waits longer than the read timeout is [`ClientError::Timeout`], distinct from a
//! cut connection, so "the node hung" and "the node cut the connection" fail differently.
//!
//! Flow: [`Conn::send`] writes bytes; [`Conn::read_head`] parses a response head out of the
//! connection's buffer; a [`PartialBody`] decodes the body incrementally, so a test can observe
//! the first bytes of a streamed body before the rest exists; [`Conn::request`] does all three.
//!
//! [`Conn`] is generic over its byte stream ([`Stream`]): plain `TcpStream` by default, and the
//! HTTPS client in [`super::tls`] runs the same parser over a rustls stream.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Default per-read timeout. Generous: the slowest scripted origin in the suite paces a piece
/// every few hundred ms, and a node first-byte timeout is at most a few seconds.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response head larger than this is treated as malformed (the node's own limit is far lower).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Longest chunk-size line accepted (size + extensions), to fail fast on garbage.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// How the response body is delimited, decided from the head (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// HEAD response, 1xx, 204, 304: no body whatever the headers say.
    NoBody,
    Length(usize),
    Chunked,
    /// Neither Content-Length nor Transfer-Encoding: the body ends when the peer closes.
    CloseDelimited,
}

/// A parsed response head; header names are lowercased, values trimmed, order kept.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

impl ResponseHead {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A complete response.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Lowercased names, in wire order; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunk framing removed).
    pub body: Vec<u8>,
    /// The node sent `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body was delimited by the peer closing the connection.
    pub close_delimited: bool,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of header `name`, in wire order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as text, lossily; for assertions on XML error bodies.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// Bodies can be megabytes; a failing assert must print something readable.
impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 300;
        let shown = &self.body[..self.body.len().min(SHOWN)];
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body_start", &String::from_utf8_lossy(shown))
            .field("chunked", &self.chunked)
            .field("close_delimited", &self.close_delimited)
            .finish()
    }
}

/// Why a response could not be read completely.
#[derive(Debug)]
pub enum ClientError {
    /// Connect or write failed, or an unexpected socket error.
    Io(io::Error),
    /// A read waited longer than the read timeout: the peer is alive but silent.
    Timeout,
    /// The peer closed (or reset) before a full response head arrived.
    ClosedBeforeHead { received: Vec<u8> },
    /// The peer closed (or reset) in the middle of a body whose end was announced (by
    /// Content-Length or chunked framing). This is how a node must signal a failed mirror once
    /// the head is out.
    IncompleteBody { head: ResponseHead, received_bytes: usize },
    /// The bytes are not valid HTTP/1.1 (or are ambiguous framing).
    Malformed(String),
}

impl ClientError {
    pub fn is_incomplete_body(&self) -> bool {
        matches!(self, ClientError::IncompleteBody { .. })
    }
}

/// A blocking byte stream a [`Conn`] can speak HTTP/1.1 over.
pub trait Stream: Read + Write {
    /// Bounds every later read (`None`: wait forever).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Tells the peer we will send nothing more (the read side stays open).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// One client connection; keeps unread bytes between responses so pipelined and keep-alive
/// responses are split exactly at their framing boundaries.
pub struct Conn<S: Stream = TcpStream> {
    stream: S,
    buf: Vec<u8>,
    /// Set once a read returned EOF or reset; later reads return EOF at once.
    eof: bool,
}

impl Conn<TcpStream> {
    /// Connects with the default timeouts; panics (fails the test) if the connect fails, since
    /// every caller would do that anyway.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn::try_new(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_new(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        // Small requests must leave at once; timing tests measure the node, not Nagle.
        stream.set_nodelay(true)?;
        Ok(Conn::over(stream))
    }

    /// Wraps an already connected stream (e.g. one made with a small receive buffer through
    /// `socket2`), with the default timeouts.
    pub fn from_stream(stream: TcpStream) -> io::Result<Conn> {
        stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Conn::over(stream))
    }
}

impl<S: Stream> Conn<S> {
    /// Wraps a connected, ready stream as is (its timeouts are the caller's business).
    pub fn over(stream: S) -> Conn<S> {
        Conn { stream, buf: Vec::new(), eof: false }
    }

    /// The underlying stream (e.g. to ask a TLS session what it negotiated).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    }

    /// Writes raw bytes (one or several requests, or deliberate garbage).
    pub fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.stream.write_all(raw)?;
        self.stream.flush()
    }

    /// Sends one raw request and reads its response. A request starting with `HEAD ` is read
    /// as having no body.
    pub fn request(&mut self, raw: &[u8]) -> Result<Response, ClientError> {
        self.send(raw).map_err(ClientError::Io)?;
        if raw.starts_with(b"HEAD ") {
            self.read_head_response()
        } else {
            self.read_response()
        }
    }

    /// Reads the next response to a GET-like request (body per its framing).
    pub fn read_response(&mut self) -> Result<Response, ClientError> {
        let head = self.read_head(false)?;
        self.read_rest(head)
    }

    /// Reads the next response to a HEAD request: never a body, whatever Content-Length says.
    pub fn read_head_response(&mut self) -> Result<Response, ClientError> {
        let head = self.read_head(true)?;
        self.read_rest(head)
    }

    fn read_rest(&mut self, head: ResponseHead) -> Result<Response, ClientError> {
        let mut body = PartialBody::new(&head);
        self.read_body_to_end(&mut body)?;
        Ok(Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            chunked: head.framing == Framing::Chunked,
            close_delimited: head.framing == Framing::CloseDelimited,
            body: body.decoded,
        })
    }

    /// Reads one response head, skipping interim 1xx heads (except 101, which ends HTTP).
    /// `for_head_request` makes the framing [`Framing::NoBody`].
    pub fn read_head(&mut self, for_head_request: bool) -> Result<ResponseHead, ClientError> {
        loop {
            let end = loop {
                if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                    break pos + 4;
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(ClientError::Malformed("response head too large".into()));
                }
                if self.fill()? == 0 {
                    return Err(ClientError::ClosedBeforeHead { received: std::mem::take(&mut self.buf) });
                }
            };
            let raw: Vec<u8> = self.buf.drain(..end).collect();
            let head = parse_head(&raw, for_head_request)?;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
    }

    /// Decodes body bytes until at least `min_bytes` are decoded or the body is complete.
    /// Lets a test timestamp the arrival of a body's first bytes.
    pub fn read_body_at_least(&mut self, body: &mut PartialBody, min_bytes: usize) -> Result<(), ClientError> {
        loop {
            body.advance(&mut self.buf)?;
            if body.is_done() || body.decoded.len() >= min_bytes {
                return Ok(());
            }
            if self.fill()? == 0 {
                return body.on_eof();
            }
        }
    }

    /// Decodes the rest of the body.
    pub fn read_body_to_end(&mut self, body: &mut PartialBody) -> Result<(), ClientError> {
        self.read_body_at_least(body, usize::MAX)?;
        // read_body_at_least only stops early on EOF or completion; EOF was handled there.
        debug_assert!(body.is_done());
        Ok(())
    }

    /// Waits up to `timeout` for the peer to close. True on EOF or reset; false if the timeout
    /// passed with the connection still open. Bytes that arrive meanwhile are kept in the
    /// buffer (see [`Conn::buffered`]) and do not count as closing.
    pub fn peer_closed_within(&mut self, timeout: Duration) -> bool {
        if self.eof {
            return true;
        }
        let deadline = Instant::now() + timeout;
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.set_read_timeout(left);
            match self.fill() {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(ClientError::Timeout) => break false,
                Err(_) => break true,
            }
        };
        // Later reads on this connection get the usual patience, not the leftover of ours.
        self.set_read_timeout(DEFAULT_READ_TIMEOUT);
        closed
    }

    /// Bytes received but not consumed by any response yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Half-closes our side: tells the node we will send no more requests.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown_write();
    }

    /// Appends one read's worth of bytes to the buffer; `Ok(0)` is EOF. A reset counts as EOF:
    /// for a test, "the node killed the connection" is the same event however the kernel
    /// reported it (FIN or RST depends on unread bytes in the node's socket). So does
    /// `UnexpectedEof`, which is how rustls reports a bare FIN without close_notify (a plain
    /// `TcpStream` never returns it).
    fn fill(&mut self) -> Result<usize, ClientError> {
        if self.eof {
            return Ok(0);
        }
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(ClientError::Timeout),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                self.eof = true;
                Ok(0)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => self.fill(),
            Err(e) => Err(ClientError::Io(e)),
        }
    }
}

/// A body being decoded; owns the decoded bytes so far.
pub struct PartialBody {
    head: ResponseHead,
    state: BodyState,
    decoded: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
enum BodyState {
    Length { remaining: usize },
    Close,
    ChunkSize,
    ChunkData { remaining: usize },
    ChunkDataEnd,
    Trailers,
    Done,
}

impl PartialBody {
    pub fn new(head: &ResponseHead) -> PartialBody {
        let state = match head.framing {
            Framing::NoBody | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length { remaining: n },
            Framing::Chunked => BodyState::ChunkSize,
            Framing::CloseDelimited => BodyState::Close,
        };
        PartialBody { head: head.clone(), state, decoded: Vec::new() }
    }

    /// Decoded bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.decoded
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.decoded
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Consumes as much of `buf` as the framing allows.
    fn advance(&mut self, buf: &mut Vec<u8>) -> Result<(), ClientError> {
        loop {
            match self.state {
                BodyState::Done => return Ok(()),
                BodyState::Close => {
                    self.decoded.append(buf);
                    return Ok(());
                }
                BodyState::Length { remaining } | BodyState::ChunkData { remaining } => {
                    if buf.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(buf.len());
                    self.decoded.extend(buf.drain(..n));
                    let remaining = remaining - n;
                    self.state = match (self.state, remaining) {
                        (BodyState::Length { .. }, 0) => BodyState::Done,
                        (BodyState::Length { .. }, _) => BodyState::Length { remaining },
                        (_, 0) => BodyState::ChunkDataEnd,
                        (_, _) => BodyState::ChunkData { remaining },
                    };
                }
                BodyState::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE_BYTES)? else {
                        return Ok(());
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 { BodyState::Trailers } else { BodyState::ChunkData { remaining: size } };
                }
                BodyState::ChunkDataEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ClientError::Malformed("chunk data not followed by CRLF".into()));
                    }
                    buf.drain(..2);
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    let Some(line) = take_line(buf, MAX_HEAD_BYTES)? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        self.state = BodyState::Done;
                    }
                }
            }
        }
    }

    /// The connection ended: fine for a close-delimited body, a cut for any other.
    fn on_eof(&mut self) -> Result<(), ClientError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::Close => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(ClientError::IncompleteBody { head: self.head.clone(), received_bytes: self.decoded.len() }),
        }
    }
}

/// One GET on a fresh connection. `path` is the raw request target (already percent-encoded).
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response, ClientError> {
    request(addr, "GET", path, headers)
}

/// One HEAD on a fresh connection.
pub fn head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response, ClientError> {
    request(addr, "HEAD", path, headers)
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Result<Response, ClientError> {
    let mut conn = Conn::try_new(addr).map_err(ClientError::Io)?;
    conn.request(&request_bytes(method, addr, path, headers))
}

/// The bytes of a request without a body, with `Host: addr` first and `headers` after.
pub fn request_bytes(method: &str, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Writes `bytes`, then reads until EOF or until 5 s pass without the peer closing; returns
/// everything read. For inputs the client cannot frame (garbage, half requests).
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    send_raw_with_timeout(addr, bytes, Duration::from_secs(5)).0
}

/// Like [`send_raw`] with an explicit deadline; also says whether the peer closed (true) or
/// the deadline passed with the connection open (false).
pub fn send_raw_with_timeout(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut conn = Conn::new(addr);
    // A write error is not fatal here: the peer may answer and close before reading all of a
    // garbage request, and what it answered is what the test wants.
    let _ = conn.send(bytes);
    let closed = conn.peer_closed_within(timeout);
    (conn.buf, closed)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Removes and returns one CRLF-terminated line (without the CRLF), or None if incomplete.
fn take_line(buf: &mut Vec<u8>, max: usize) -> Result<Option<Vec<u8>>, ClientError> {
    match find(buf, b"\r\n") {
        Some(pos) => {
            let line = buf[..pos].to_vec();
            buf.drain(..pos + 2);
            Ok(Some(line))
        }
        None if buf.len() > max => Err(ClientError::Malformed("line too long".into())),
        None => Ok(None),
    }
}

/// `1a2b;ext=1` -> 0x1a2b. Requires at least one hex digit (an empty size is not a last chunk).
fn parse_chunk_size(line: &[u8]) -> Result<usize, ClientError> {
    let text = std::str::from_utf8(line).map_err(|_| ClientError::Malformed("chunk size not ASCII".into()))?;
    let digits = text.split(';').next().unwrap_or("").trim_end_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ClientError::Malformed(format!("bad chunk size line {text:?}")));
    }
    usize::from_str_radix(digits, 16).map_err(|_| ClientError::Malformed(format!("chunk size overflows: {text:?}")))
}

/// Parses a head (status line + headers + CRLF CRLF) and decides its framing.
fn parse_head(raw: &[u8], for_head_request: bool) -> Result<ResponseHead, ClientError> {
    let text = std::str::from_utf8(raw).map_err(|_| ClientError::Malformed("response head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ClientError::Malformed(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| if s.len() == 3 { s.parse().ok() } else { None })
        .ok_or_else(|| ClientError::Malformed(format!("bad status code in {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();

    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| ClientError::Malformed(format!("header without colon: {line:?}")))?;
        if name.is_empty() || name.ends_with([' ', '\t']) || line.starts_with([' ', '\t']) {
            return Err(ClientError::Malformed(format!("bad header line {line:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }

    let te: Vec<&str> = headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
    let cls: Vec<&str> = headers.iter().filter(|(n, _)| n == "content-length").map(|(_, v)| v.as_str()).collect();
    if !te.is_empty() && !cls.is_empty() {
        return Err(ClientError::Malformed("both Transfer-Encoding and Content-Length".into()));
    }
    let no_body = for_head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::NoBody
    } else if !te.is_empty() {
        let last = te.join(",");
        let last = last.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return Err(ClientError::Malformed(format!("unsupported transfer-encoding {te:?}")));
        }
        Framing::Chunked
    } else if let Some(first) = cls.first() {
        if cls.iter().any(|v| v != first) {
            return Err(ClientError::Malformed(format!("conflicting content-lengths {cls:?}")));
        }
        let len = first.parse().map_err(|_| ClientError::Malformed(format!("bad content-length {first:?}")))?;
        Framing::Length(len)
    } else {
        Framing::CloseDelimited
    };
    Ok(ResponseHead { status, reason, headers, framing })
}
