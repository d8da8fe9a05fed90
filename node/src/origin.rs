//! The origin client: one HTTP/1.1 GET to a mirror origin, its response head, and its body as a
//! stream of `Bytes`.
//!
//! The origin is untrusted: its response head goes through the same `proto` parser and smuggling
//! rules as client requests, the body framing is decided by RFC 9112 §6.3 (Content-Length,
//! chunked, or close-delimited), and a Content-Length body that ends early is an error, never a
//! short object. Every wait is bounded: connect, first byte (request sent -> head received) and
//! idle (between two body reads).
//!
//! Each body read fills a fresh buffer which is frozen into `Bytes` and handed out: the mirror
//! fill writes that same `Bytes` to the client socket and to the segment file (the tee), so the
//! body is never copied in user space (chunked bodies are sliced, not copied, out of the buffer).
//!
//! Connections are kept alive and pooled per core ([`Pool`]); a body read to its end returns its
//! connection to the pool.
//!
//! Reaching a host ([`Network`]): names are resolved off the worker by [`crate::dns`] (answers
//! and failures cached), and every address is checked by [`crate::netguard`] right before the
//! connect, on every hop (redirects included): never the node's own listeners, never link-local
//! or metadata addresses unless allowed by name, private ranges as `origin.allow_private` says.
//! The addresses of a name are tried in order; a refused one is skipped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use edgemirror_proto::{self as proto, BodyFraming, Chunk, ChunkedDecoder, ParseError, Status};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::OriginConfig;
use crate::dns::{ResolveError, Resolver};
use crate::netguard::{AddressPolicy, Refusal};
use crate::readbuf;
use crate::rules::OriginAddr;
use crate::stream::OriginStream;
use crate::tls;

/// How the origin client reaches hosts: the process-wide resolver and the address policy.
pub struct Network {
    pub resolver: Resolver,
    pub policy: AddressPolicy,
}

/// The first read of a response: its head, and the start of its body.
const HEAD_READ_BYTES: u64 = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("refused to connect to the origin: {0}")]
    Refused(Refusal),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("origin i/o: {0}")]
    Io(#[from] io::Error),
    #[error("origin sent an invalid response: {0}")]
    Protocol(ParseError),
    #[error("origin closed the connection after {got} of {expected} body bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("origin closed the connection before the response head")]
    NoResponse,
    #[error("TLS with {host}: {reason}")]
    Tls { host: String, reason: String },
}

/// A parsed origin response head and the means to read its body.
pub struct OriginResponse {
    pub status: u16,
    /// The head's bytes; `head` spans index into it.
    pub head_buf: Bytes,
    pub head: proto::ResponseHead,
    pub body: BodyReader,
}

impl OriginResponse {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.headers.get(&self.head_buf, name)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.head.headers.iter().map(|h| (h.name.get(&self.head_buf), h.value.get(&self.head_buf)))
    }
}

/// The methods the node sends upstream: GET to mirror, HEAD to answer a client's HEAD of an
/// object not stored yet without fetching it; PUT, POST and DELETE to the shared store only
/// (`backend.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// Where a request may connect: an address a rule named goes through the whole address policy;
/// one the operator configured outside the rules (a fleet peer, the shared store) may also be
/// private, as such clusters usually are. Neither may be this node's own listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Rule,
    Configured,
}

/// What is sent: the request head, and the body for a write (sent as it is: a slice of a
/// stored record, never copied). The head must carry the body's `Content-Length`.
#[derive(Clone)]
pub struct Outgoing {
    pub head: Bytes,
    pub body: Option<Bytes>,
    pub reach: Reach,
}

impl Outgoing {
    /// A bodiless request to an address a rule named.
    pub fn rule(head: Bytes) -> Outgoing {
        Outgoing { head, body: None, reach: Reach::Rule }
    }
}

/// A header to send to an origin: name and value bytes as the client sent them (or a rule set).
pub type HeaderPair = (Vec<u8>, Vec<u8>);

/// Builds the request line and headers for a request of `path_and_query` (already encoded).
/// `host` is the `Host` value (the origin's, unless a rule passes the client's); `extra` are the
/// client headers a rule lets through and the headers it sets.
pub fn build_request(method: Method, path_and_query: &str, host: &[u8], extra: &[HeaderPair], via: &str) -> Bytes {
    let mut req = BytesMut::with_capacity(256 + path_and_query.len());
    let _ = write!(req, "{} {path_and_query} HTTP/1.1\r\nHost: ", method.as_str());
    req.extend_from_slice(host);
    req.extend_from_slice(b"\r\n");
    let mut has_user_agent = false;
    for (name, value) in extra {
        has_user_agent |= name.eq_ignore_ascii_case(b"user-agent");
        req.extend_from_slice(name);
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    if !has_user_agent {
        req.extend_from_slice(b"User-Agent: edgemirror\r\n");
    }
    let _ = write!(req, "Via: 1.1 {via}\r\n\r\n");
    req.freeze()
}

/// Sends `request` to `origin` (over a pooled keep-alive connection when one is idle) and reads
/// the response head. A pooled connection the origin closed meanwhile fails before any response
/// byte; the request is then retried once on a fresh connection (GET, HEAD, PUT and DELETE are
/// idempotent; the shared store's POSTs name their upload, so a repeat is harmless).
pub async fn fetch(
    origin: &OriginAddr,
    method: Method,
    request: Outgoing,
    cfg: &OriginConfig,
    pool: &Pool,
    net: &Network,
) -> Result<OriginResponse, OriginError> {
    let key: PoolKey = (origin.host.clone(), origin.port, origin.tls);
    // The whole exchange, connect to last body byte, within origin.total_timeout_ms.
    let total = cfg.total_timeout.map(|t| Instant::now() + t);
    if let Some(stream) = pool.take(&key) {
        match exchange(stream, method, request.clone(), cfg, key.clone(), total).await {
            Err(Exchange::Stale) => {}
            Err(Exchange::Failed(e)) => return Err(e),
            Ok(resp) => return Ok(resp),
        }
    }
    let tcp = connect(origin, cfg, net, request.reach).await?;
    let _ = tcp.set_nodelay(true);
    let stream = if origin.tls {
        let tls_error = |reason: String| OriginError::Tls { host: origin.host.clone(), reason };
        let name = tls::server_name(&origin.host).map_err(tls_error)?;
        match monoio::time::timeout(cfg.connect_timeout, crate::stream::connect(tcp, name, cfg.tls.clone())).await {
            Ok(Ok(s)) => OriginStream::Tls(Box::new(s)),
            // The reason (e.g. "invalid peer certificate: UnknownIssuer") reaches the log line.
            Ok(Err(e)) => return Err(tls_error(e.to_string())),
            Err(_) => return Err(OriginError::Timeout("TLS handshake")),
        }
    } else {
        OriginStream::Plain(tcp)
    };
    match exchange(stream, method, request, cfg, key, total).await {
        Ok(resp) => Ok(resp),
        Err(Exchange::Stale) => Err(OriginError::NoResponse),
        Err(Exchange::Failed(e)) => Err(e),
    }
}

/// Resolves the origin's host and connects to the first of its addresses that the policy allows
/// and that answers.
async fn connect(
    origin: &OriginAddr,
    cfg: &OriginConfig,
    net: &Network,
    reach: Reach,
) -> Result<TcpStream, OriginError> {
    let addrs = net.resolver.resolve(&origin.host, origin.port).await?;
    let mut first_error = None;
    for &addr in addrs.iter() {
        let checked = match reach {
            Reach::Rule => net.policy.check(&origin.host, addr),
            Reach::Configured => net.policy.check_configured(&origin.host, addr),
        };
        if let Err(refusal) = checked {
            first_error.get_or_insert(OriginError::Refused(refusal));
            continue;
        }
        match monoio::time::timeout(cfg.connect_timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(source)) => first_error.get_or_insert(OriginError::Connect { addr, source }),
            Err(_) => first_error.get_or_insert(OriginError::Timeout("connect")),
        };
    }
    Err(first_error.unwrap_or(OriginError::NoResponse))
}

enum Exchange {
    /// Nothing came back at all: on a reused connection, the origin had closed it.
    Stale,
    Failed(OriginError),
}

async fn exchange(
    mut stream: OriginStream,
    method: Method,
    request: Outgoing,
    cfg: &OriginConfig,
    key: PoolKey,
    total: Option<Instant>,
) -> Result<OriginResponse, Exchange> {
    match monoio::time::timeout(cfg.first_byte_timeout, stream.write_all(request.head)).await {
        Ok((Ok(_), _)) => {}
        Ok((Err(_), _)) => return Err(Exchange::Stale),
        Err(_) => return Err(Exchange::Failed(OriginError::Timeout("sending the request"))),
    }
    if let Some(body) = request.body.filter(|b| !b.is_empty()) {
        // A body may be large: it has the first-byte timeout plus a second per MiB (a floor of
        // 1 MiB/s), and a total deadline when one is set.
        let allowed = cfg.first_byte_timeout + Duration::from_secs(body.len() as u64 >> 20);
        let allowed = total.map_or(allowed, |t| allowed.min(t.saturating_duration_since(Instant::now())));
        match monoio::time::timeout(allowed, stream.write_all(body)).await {
            Ok((Ok(_), _)) => {}
            // A pooled connection the server closed takes the head into the socket buffer and
            // fails on the body: retried on a fresh connection like any stale one.
            Ok((Err(_), _)) => return Err(Exchange::Stale),
            Err(_) => return Err(Exchange::Failed(OriginError::Timeout("sending the request body"))),
        }
    }
    // The first byte of the answer is awaited from here: after the body, when there is one.
    let first_byte = Instant::now() + cfg.first_byte_timeout;
    let deadline = total.map_or(first_byte, |total| total.min(first_byte));
    let mut buf = BytesMut::with_capacity(HEAD_READ_BYTES as usize);
    let head = loop {
        match proto::parse_response(&buf).map_err(|e| Exchange::Failed(OriginError::Protocol(e)))? {
            Status::Complete(head) if head.status >= 100 && head.status < 200 => {
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                buf.advance(head.head_len);
            }
            Status::Complete(head) => break head,
            Status::Partial => {
                let left = deadline.saturating_duration_since(Instant::now());
                let was_empty = buf.is_empty();
                let room = readbuf::for_read(std::mem::take(&mut buf), HEAD_READ_BYTES);
                let (n, b) = match read_more(&mut stream, room, left, "waiting for the response head").await {
                    Ok(r) => r,
                    Err(OriginError::Io(_)) if was_empty => return Err(Exchange::Stale),
                    Err(e) => return Err(Exchange::Failed(e)),
                };
                buf = b;
                if n == 0 {
                    return Err(if was_empty { Exchange::Stale } else { Exchange::Failed(OriginError::NoResponse) });
                }
            }
        }
    };
    let framing = proto::response_framing(&head, &buf, method == Method::Head)
        .map_err(|e| Exchange::Failed(OriginError::Protocol(e)))?;
    // The rest of the body, if any is still to come, is acknowledged as it arrives: with
    // delayed ACKs the origin can wait for an ACK of the first segments before it sends the
    // last (`OriginStream::quick_ack`).
    if rest_to_come(framing, &buf[head.head_len..]) {
        stream.quick_ack();
    }
    let head_buf = buf.split_to(head.head_len).freeze();
    let reusable =
        head.keep_alive && matches!(framing, BodyFraming::ContentLength(_) | BodyFraming::Chunked | BodyFraming::None);
    let body = BodyReader {
        stream,
        buf,
        framing,
        remaining: match framing {
            BodyFraming::ContentLength(n) => n,
            _ => 0,
        },
        decoder: ChunkedDecoder::new(),
        received: 0,
        done: framing == BodyFraming::None || framing == BodyFraming::ContentLength(0),
        idle_timeout: cfg.idle_timeout,
        deadline: total,
        slot: None,
        pacers: Vec::new(),
        pool_key: reusable.then_some(key),
    };
    Ok(OriginResponse { status: head.status, head_buf, head, body })
}

/// Whether an answer's body has more to come than the bytes `arrived` with its head. When all
/// of it came with the head (a small body, or any body that fits one segment), there is nothing
/// for the origin to wait on, and acknowledging at once would only add an ACK (sustained 1 KiB
/// misses did 0.93x and 0.95x GET/s with one on every answer: bench/RESULTS.md, "Issue 14,
/// nineteenth pass"). A close-delimited body always may have more.
fn rest_to_come(framing: BodyFraming, arrived: &[u8]) -> bool {
    match framing {
        BodyFraming::None => false,
        BodyFraming::ContentLength(n) => n > arrived.len() as u64,
        BodyFraming::Chunked => !ChunkedDecoder::ends_within(arrived),
        BodyFraming::CloseDelimited => true,
    }
}

/// Reads into the spare capacity of `buf` (appending; the caller made room: [`readbuf::for_read`]),
/// bounded by `limit`.
async fn read_more(
    stream: &mut OriginStream,
    buf: BytesMut,
    limit: Duration,
    what: &'static str,
) -> Result<(usize, BytesMut), OriginError> {
    if buf.len() >= proto::MAX_HEAD_BYTES * 4 && what.starts_with("waiting") {
        return Err(OriginError::Protocol(ParseError::HeadTooLarge));
    }
    let len = buf.len();
    let cap = buf.capacity();
    // monoio reads into a slice starting at `len`: the bytes already in `buf` stay.
    match monoio::time::timeout(limit, stream.read(buf.slice_mut(len..cap))).await {
        Ok((Ok(n), slice)) => Ok((n, slice.into_inner())),
        Ok((Err(e), _)) => Err(OriginError::Io(e)),
        Err(_) => Err(OriginError::Timeout(what)),
    }
}

/// The origin's body, decoded from its framing, as a stream of `Bytes`.
pub struct BodyReader {
    stream: OriginStream,
    /// Bytes read but not yet handed out.
    buf: BytesMut,
    framing: BodyFraming,
    /// Content-Length bodies: bytes still to come.
    remaining: u64,
    decoder: ChunkedDecoder,
    received: u64,
    done: bool,
    idle_timeout: Duration,
    /// The exchange's total deadline (`origin.total_timeout_ms`), if any.
    deadline: Option<Instant>,
    /// The origin's fetch slot (`origin.max_fetches_per_origin`), released with the body.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The origin's byte-rate cap (`origin.max_bytes_per_sec_per_origin`).
    pacers: Vec<std::sync::Arc<crate::protect::Pacer>>,
    /// Set when the connection may be reused once the body has been read to its end.
    pool_key: Option<PoolKey>,
}

impl BodyReader {
    /// Keeps `slot` (a fetch slot of the origin) until this body is released or dropped.
    pub fn hold(&mut self, slot: Option<tokio::sync::OwnedSemaphorePermit>) {
        self.slot = slot;
    }

    /// Reads this body no faster than `pacer` allows (and any pacer given before).
    pub fn pace(&mut self, pacer: Option<std::sync::Arc<crate::protect::Pacer>>) {
        self.pacers.extend(pacer);
    }

    /// Hands the connection back to the pool if the body was read to its end and the origin
    /// allows keep-alive; otherwise the connection is dropped (closed).
    pub fn release(self, pool: &Pool) {
        if let (true, true, Some(key)) = (self.done, self.buf.is_empty(), self.pool_key) {
            pool.put(key, self.stream);
        }
    }

    /// The announced length, if the origin sent Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::ContentLength(n) => Some(n),
            BodyFraming::None => Some(0),
            _ => None,
        }
    }

    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// The next piece of the body, or `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, OriginError> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            BodyFraming::ContentLength(total) => {
                if self.buf.is_empty() {
                    self.fill(self.remaining).await?;
                    if self.buf.is_empty() {
                        return Err(OriginError::Truncated { got: total - self.remaining, expected: total });
                    }
                }
                let n = (self.buf.len() as u64).min(self.remaining) as usize;
                let piece = self.buf.split_to(n).freeze();
                self.remaining -= n as u64;
                self.done = self.remaining == 0;
                self.received += n as u64;
                Ok(Some(piece))
            }
            BodyFraming::Chunked => loop {
                let (consumed, chunk) = self.decoder.decode(&self.buf).map_err(OriginError::Protocol)?;
                match chunk {
                    Chunk::Data { start, end } => {
                        // Slice the data out of the frozen input: no copy.
                        let taken = self.buf.split_to(consumed).freeze();
                        self.received += (end - start) as u64;
                        return Ok(Some(taken.slice(start..end)));
                    }
                    Chunk::End => {
                        self.buf.advance(consumed);
                        self.done = true;
                        return Ok(None);
                    }
                    Chunk::Partial => {
                        self.buf.advance(consumed);
                        let before = self.buf.len();
                        self.fill(u64::MAX).await?;
                        if self.buf.len() == before {
                            return Err(OriginError::Truncated { got: self.received, expected: u64::MAX });
                        }
                    }
                }
            },
            BodyFraming::CloseDelimited => {
                if self.buf.is_empty() {
                    self.fill(u64::MAX).await?;
                    if self.buf.is_empty() {
                        self.done = true;
                        return Ok(None);
                    }
                }
                let piece = self.buf.split().freeze();
                self.received += piece.len() as u64;
                Ok(Some(piece))
            }
            BodyFraming::None => Ok(None),
        }
    }

    /// Reads at least one more byte into `buf` (unless the origin closed), up to `want`
    /// ([`readbuf::for_read`]).
    async fn fill(&mut self, want: u64) -> Result<(), OriginError> {
        let buf = readbuf::for_read(std::mem::take(&mut self.buf), want);
        let (limit, what) = match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(OriginError::Timeout("the origin's total deadline (origin.total_timeout_ms)"));
                }
                if left < self.idle_timeout {
                    (left, "the origin's total deadline (origin.total_timeout_ms)")
                } else {
                    (self.idle_timeout, "reading the origin body")
                }
            }
            None => (self.idle_timeout, "reading the origin body"),
        };
        let before = buf.len();
        let (_, buf) = read_more(&mut self.stream, buf, limit, what).await?;
        let read = buf.len() - before;
        self.buf = buf;
        let wait = self.pacers.iter().map(|p| p.take(read)).max().unwrap_or_default();
        if !wait.is_zero() {
            monoio::time::sleep(wait).await;
        }
        Ok(())
    }
}

/// Idle origin connections of one core, by `(host, port, tls)`. Connections never cross cores.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<PoolKey, Vec<(OriginStream, Instant)>>>,
}

/// Host, port, TLS.
type PoolKey = (String, u16, bool);

/// How long an idle origin connection is kept; origins commonly close after 60 s or more.
pub const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per origin per core.
pub const POOL_MAX_IDLE_PER_ORIGIN: usize = 16;

impl Pool {
    fn take(&self, key: &PoolKey) -> Option<OriginStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        while let Some((stream, at)) = list.pop() {
            if at.elapsed() < POOL_IDLE {
                return Some(stream);
            }
        }
        None
    }

    fn put(&self, key: PoolKey, stream: OriginStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        list.retain(|(_, at)| at.elapsed() < POOL_IDLE);
        if list.len() < POOL_MAX_IDLE_PER_ORIGIN {
            list.push((stream, Instant::now()));
        }
    }

    /// Idle connections held (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_body_with_more_to_come_is_acknowledged_at_once() {
        // Came whole with the head: nothing for the origin to wait on.
        assert!(!rest_to_come(BodyFraming::ContentLength(1024), &[b'x'; 1024]));
        assert!(!rest_to_come(BodyFraming::ContentLength(0), b""));
        assert!(!rest_to_come(BodyFraming::None, b""));
        assert!(!rest_to_come(BodyFraming::Chunked, b"5\r\nhello\r\n0\r\n\r\n"));
        assert!(!rest_to_come(BodyFraming::Chunked, b"0\r\n\r\n"));
        assert!(!rest_to_come(BodyFraming::Chunked, b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nEtag: 1\r\n\r\n"));
        // Part of it, or none of it, came with the head.
        assert!(rest_to_come(BodyFraming::ContentLength(4096), &[b'x'; 1200]));
        assert!(rest_to_come(BodyFraming::ContentLength(1024), b""));
        assert!(rest_to_come(BodyFraming::Chunked, b""));
        assert!(rest_to_come(BodyFraming::Chunked, b"1000\r\nabc"));
        // The last chunk without its final CRLF, and data that only looks like an end.
        assert!(rest_to_come(BodyFraming::Chunked, b"5\r\nhello\r\n0\r\n"));
        assert!(rest_to_come(BodyFraming::Chunked, b"5\r\n0\r\n\r\n\r\n"));
        // Malformed framing: left to the body reader, which reports it.
        assert!(rest_to_come(BodyFraming::Chunked, b"x\r\nhello\r\n0\r\n\r\n"));
        // Of a length not known yet.
        assert!(rest_to_come(BodyFraming::CloseDelimited, b"whatever came"));
    }
}
