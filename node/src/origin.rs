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
//! DNS: names are resolved with the system resolver on first use and cached per worker for
//! [`DNS_TTL`]; IP literals never touch the resolver. The lookup blocks the worker the first time
//! a name is seen (monoio resolves synchronously too); rules normally name few hosts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use edgemirror_proto::{self as proto, BodyFraming, Chunk, ChunkedDecoder, ParseError, Status};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::{OriginAddr, OriginConfig};

/// How long a resolved origin address is reused.
pub const DNS_TTL: Duration = Duration::from_secs(30);
/// Size of each body read from the origin.
const READ_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("resolving {host}: {source}")]
    Resolve { host: String, source: io::Error },
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
        self.head
            .headers
            .iter()
            .map(|h| (h.name.get(&self.head_buf), h.value.get(&self.head_buf)))
    }
}

/// Builds the request line and headers for a GET of `path_and_query` (already encoded).
pub fn build_request(
    origin: &OriginAddr,
    path_and_query: &str,
    extra: &[(String, String)],
) -> BytesMut {
    let mut req = BytesMut::with_capacity(256 + path_and_query.len());
    let _ = write!(
        req,
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\n",
        origin.host_header
    );
    for (name, value) in extra {
        let _ = write!(req, "{name}: {value}\r\n");
    }
    // One request per connection until the origin pool lands; the origin closes after the body.
    req.extend_from_slice(b"User-Agent: edgemirror\r\nConnection: close\r\n\r\n");
    req
}

/// Sends `request` to `origin` and reads the response head.
pub async fn fetch(
    origin: &OriginAddr,
    request: BytesMut,
    cfg: &OriginConfig,
) -> Result<OriginResponse, OriginError> {
    let addr = resolve(&origin.host, origin.port)?;
    let mut stream =
        match monoio::time::timeout(cfg.connect_timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(OriginError::Connect { addr, source }),
            Err(_) => return Err(OriginError::Timeout("connect")),
        };
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + cfg.first_byte_timeout;
    let (res, _) =
        match monoio::time::timeout(cfg.first_byte_timeout, stream.write_all(request)).await {
            Ok(r) => r,
            Err(_) => return Err(OriginError::Timeout("sending the request")),
        };
    res?;

    let mut buf = BytesMut::with_capacity(8 * 1024);
    let head = loop {
        match proto::parse_response(&buf).map_err(OriginError::Protocol)? {
            Status::Complete(head) if head.status >= 100 && head.status < 200 => {
                // Interim responses (100 Continue, 103 Early Hints) precede the real one.
                buf.advance(head.head_len);
            }
            Status::Complete(head) => break head,
            Status::Partial => {
                let left = deadline.saturating_duration_since(Instant::now());
                let (n, b) =
                    read_more(&mut stream, buf, left, "waiting for the response head").await?;
                buf = b;
                if n == 0 {
                    return Err(OriginError::NoResponse);
                }
            }
        }
    };
    let framing = proto::response_framing(&head, &buf, false).map_err(OriginError::Protocol)?;
    let head_buf = buf.split_to(head.head_len).freeze();
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
    };
    Ok(OriginResponse {
        status: head.status,
        head_buf,
        head,
        body,
    })
}

/// Reads into the spare capacity of `buf` (appending), bounded by `limit`.
async fn read_more(
    stream: &mut TcpStream,
    mut buf: BytesMut,
    limit: Duration,
    what: &'static str,
) -> Result<(usize, BytesMut), OriginError> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(READ_BYTES);
    }
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
    stream: TcpStream,
    /// Bytes read but not yet handed out.
    buf: BytesMut,
    framing: BodyFraming,
    /// Content-Length bodies: bytes still to come.
    remaining: u64,
    decoder: ChunkedDecoder,
    received: u64,
    done: bool,
    idle_timeout: Duration,
}

impl BodyReader {
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
                    self.fill(self.remaining.min(READ_BYTES as u64) as usize)
                        .await?;
                    if self.buf.is_empty() {
                        return Err(OriginError::Truncated {
                            got: total - self.remaining,
                            expected: total,
                        });
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
                let (consumed, chunk) = self
                    .decoder
                    .decode(&self.buf)
                    .map_err(OriginError::Protocol)?;
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
                        self.fill(READ_BYTES).await?;
                        if self.buf.len() == before {
                            return Err(OriginError::Truncated {
                                got: self.received,
                                expected: u64::MAX,
                            });
                        }
                    }
                }
            },
            BodyFraming::CloseDelimited => {
                if self.buf.is_empty() {
                    self.fill(READ_BYTES).await?;
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

    /// Reads at least one more byte into `buf` (unless the origin closed).
    async fn fill(&mut self, want: usize) -> Result<(), OriginError> {
        let buf = if self.buf.is_empty() {
            // A fresh buffer per read: the previous one is owned by the `Bytes` handed out.
            BytesMut::with_capacity(want.max(4096))
        } else {
            std::mem::take(&mut self.buf)
        };
        let (_, buf) = read_more(
            &mut self.stream,
            buf,
            self.idle_timeout,
            "reading the origin body",
        )
        .await?;
        self.buf = buf;
        Ok(())
    }
}

thread_local! {
    static DNS: RefCell<HashMap<(String, u16), (SocketAddr, Instant)>> = RefCell::new(HashMap::new());
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, OriginError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let key = (host.to_string(), port);
    if let Some(addr) = DNS.with(|d| {
        d.borrow()
            .get(&key)
            .filter(|(_, at)| at.elapsed() < DNS_TTL)
            .map(|(a, _)| *a)
    }) {
        return Ok(addr);
    }
    let addr = (host, port)
        .to_socket_addrs()
        .and_then(|mut it| {
            it.next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
        })
        .map_err(|source| OriginError::Resolve {
            host: host.to_string(),
            source,
        })?;
    DNS.with(|d| d.borrow_mut().insert(key, (addr, Instant::now())));
    Ok(addr)
}
