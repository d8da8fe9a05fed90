//! One keep-alive client connection: send a request, read one whole response, repeat.
//!
//! No pipelining: a request goes out only after the previous response has been read to its end.
//! The response head is parsed with `httparse` from a reused read buffer; the body is framed by
//! Content-Length, chunked coding, or the end of the connection (RFC 9112 §6.3) and only counted,
//! never kept: reads of body bytes go to the start of the same buffer, one read per
//! `--read-kib`. Interim 1xx responses are skipped.
//!
//! Failures are classified ([`Failure`]) rather than carried as `io::Error`: the load loop only
//! counts them and reconnects.

use std::net::SocketAddr;
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// Headers parsed per response head; peers send ~10.
const MAX_HEADERS: usize = 64;
/// A response head larger than this is a protocol failure (the read buffer grows up to it).
const MAX_HEAD_BYTES: usize = 1 << 20;

/// Why an exchange (or a connect) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Connect,
    /// Read or write error (reset, refused mid-way).
    Io,
    /// The server closed the connection before the response ended.
    Eof,
    /// Malformed response head or chunked framing.
    Parse,
    Timeout,
}

impl Failure {
    pub const ALL: [Failure; 5] = [Failure::Connect, Failure::Io, Failure::Eof, Failure::Parse, Failure::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Eof => "eof",
            Failure::Parse => "parse",
            Failure::Timeout => "timeout",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Distinct values of one response header (`--count-header`), interned so a response records a
/// small index instead of a string. Per thread; merged by value at the end.
pub struct Tags {
    name: String,
    values: std::cell::RefCell<Vec<Box<[u8]>>>,
}

impl Tags {
    pub fn new(name: &str) -> Tags {
        Tags { name: name.to_ascii_lowercase(), values: Default::default() }
    }

    pub fn intern(&self, value: &[u8]) -> usize {
        let mut values = self.values.borrow_mut();
        if let Some(i) = values.iter().position(|v| **v == *value) {
            return i;
        }
        values.push(value.into());
        values.len() - 1
    }

    pub fn value(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.values.borrow()[i]).into_owned()
    }
}

/// What one exchange produced.
#[derive(Clone, Copy, Debug)]
pub struct Response {
    pub status: u16,
    pub head_bytes: usize,
    pub body_bytes: u64,
    /// Whether the connection can carry the next request.
    pub keep_alive: bool,
    /// When the first byte of the response was read.
    pub first_byte: Instant,
    /// Index into [`Tags`] of the counted header's value, if present.
    pub tag: Option<usize>,
}

enum Framing {
    Length(u64),
    Chunked,
    Close,
}

pub struct Conn {
    stream: TcpStream,
    /// Unconsumed response bytes are `buf[start..]`; capacity is the read size.
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    pub async fn connect(addr: SocketAddr, read_bytes: usize) -> Result<Conn, Failure> {
        let stream = TcpStream::connect_addr(addr).await.map_err(|_| Failure::Connect)?;
        // Requests are one small write each; nodelay keeps them from waiting on ACKs.
        let _ = stream.set_nodelay(true);
        Ok(Conn { stream, buf: Vec::with_capacity(read_bytes.max(4096)), start: 0 })
    }

    /// Sends `request` and reads the whole response.
    pub async fn exchange(&mut self, request: &'static [u8], tags: Option<&Tags>) -> Result<Response, Failure> {
        let (res, _) = self.stream.write_all(request).await;
        res.map_err(|_| Failure::Io)?;
        self.read_response(tags).await
    }

    async fn read_response(&mut self, tags: Option<&Tags>) -> Result<Response, Failure> {
        let mut first_byte = (self.start < self.buf.len()).then(Instant::now);
        let (status, head_bytes, framing, mut keep_alive, tag) = loop {
            if self.start < self.buf.len() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf[self.start..]) {
                    Ok(httparse::Status::Complete(n)) => {
                        let status = resp.code.unwrap_or(0);
                        if (100..200).contains(&status) && status != 101 {
                            self.start += n;
                            continue;
                        }
                        let head = parse_head(&resp, tags)?;
                        self.start += n;
                        break (status, n, head.0, head.1, head.2);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err(Failure::Parse),
                }
            }
            self.read_more().await?;
            first_byte.get_or_insert_with(Instant::now);
        };
        let first_byte = first_byte.unwrap_or_else(Instant::now);

        let framing = if status == 204 || status == 304 { Framing::Length(0) } else { framing };
        let body_bytes = match framing {
            Framing::Length(n) => {
                self.skip_body(n).await?;
                n
            }
            Framing::Chunked => self.skip_chunked().await?,
            Framing::Close => {
                keep_alive = false;
                self.skip_to_eof().await?
            }
        };
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Response { status, head_bytes, body_bytes, keep_alive, first_byte, tag })
    }

    /// Appends at least one byte to the buffer, compacting or growing it first.
    async fn read_more(&mut self) -> Result<(), Failure> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            if self.buf.len() >= MAX_HEAD_BYTES {
                return Err(Failure::Parse);
            }
            self.buf.reserve(self.buf.capacity());
        }
        let (len, cap) = (self.buf.len(), self.buf.capacity());
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.stream.read(buf.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        match res {
            Ok(0) => Err(Failure::Eof),
            Ok(_) => Ok(()),
            Err(_) => Err(Failure::Io),
        }
    }

    /// Reads into the whole buffer, discarding what was there; returns the byte count.
    async fn read_fresh(&mut self) -> Result<usize, Failure> {
        self.buf.clear();
        self.start = 0;
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = self.stream.read(buf).await;
        self.buf = buf;
        match res {
            Ok(0) => Err(Failure::Eof),
            Ok(n) => Ok(n),
            Err(_) => Err(Failure::Io),
        }
    }

    /// Consumes up to `n` buffered bytes; returns how many.
    fn take_buffered(&mut self, n: u64) -> u64 {
        let take = ((self.buf.len() - self.start) as u64).min(n);
        self.start += take as usize;
        take
    }

    async fn skip_body(&mut self, mut remaining: u64) -> Result<(), Failure> {
        remaining -= self.take_buffered(remaining);
        while remaining > 0 {
            self.read_fresh().await?;
            remaining -= self.take_buffered(remaining);
        }
        Ok(())
    }

    async fn skip_chunked(&mut self) -> Result<u64, Failure> {
        let mut body = 0u64;
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..]) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.start += n;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.read_more().await?,
                    Err(_) => return Err(Failure::Parse),
                }
            };
            if size == 0 {
                break;
            }
            body = body.checked_add(size).ok_or(Failure::Parse)?;
            // The data and the CRLF after it.
            self.skip_body(size.checked_add(2).ok_or(Failure::Parse)?).await?;
        }
        // Trailer section: header lines up to an empty line.
        loop {
            match self.buf[self.start..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    self.start += 2;
                    return Ok(body);
                }
                Some(i) => self.start += i + 2,
                None => self.read_more().await?,
            }
        }
    }

    async fn skip_to_eof(&mut self) -> Result<u64, Failure> {
        let mut body = self.take_buffered(u64::MAX);
        loop {
            match self.read_fresh().await {
                Ok(n) => {
                    body += n as u64;
                    self.start = n;
                }
                Err(Failure::Eof) => return Ok(body),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Framing, keep-alive and the counted header's value from a parsed head.
fn parse_head(
    resp: &httparse::Response<'_, '_>,
    tags: Option<&Tags>,
) -> Result<(Framing, bool, Option<usize>), Failure> {
    let mut framing = Framing::Close;
    let mut keep_alive = resp.version == Some(1);
    let mut tag = None;
    for h in resp.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if matches!(framing, Framing::Chunked) {
                continue;
            }
            let n =
                std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or(Failure::Parse)?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&c| c == b',').next().unwrap_or(b"");
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&c| c == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        }
        if let Some(t) = tags {
            if name.eq_ignore_ascii_case(&t.name) {
                tag = Some(t.intern(h.value));
            }
        }
    }
    Ok((framing, keep_alive, tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-connection server that answers each request with the next canned response, written
    /// in small pieces to exercise partial reads, then closes.
    fn serve(responses: Vec<Vec<u8>>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_nodelay(true).unwrap();
            for resp in responses {
                let mut got = Vec::new();
                let mut b = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&b[..n]);
                }
                for piece in resp.chunks(7) {
                    s.write_all(piece).unwrap();
                    s.flush().unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        });
        addr
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        // The default driver of emload.
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap().block_on(f)
    }

    const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn reads_length_chunked_interim_and_close_delimited_bodies() {
        let body = vec![b'a'; 5000];
        let mut r1 = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nX-Src: memory\r\n\r\n".to_vec();
        r1.extend_from_slice(&body);
        let r2 = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nX-Src: origin\r\n\r\n5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: t\r\n\r\n".to_vec();
        let r3 = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let addr = serve(vec![r1, r2, r3]);
        run(async move {
            let tags = Tags::new("x-src");
            let mut c = Conn::connect(addr, 1024).await.unwrap();
            let a = c.exchange(REQ, Some(&tags)).await.unwrap();
            assert_eq!((a.status, a.body_bytes, a.keep_alive), (200, 5000, true));
            assert_eq!(tags.value(a.tag.unwrap()), "memory");
            let b = c.exchange(REQ, Some(&tags)).await.unwrap();
            assert_eq!((b.status, b.body_bytes, b.keep_alive), (404, 8, true));
            assert_eq!(tags.value(b.tag.unwrap()), "origin");
            let d = c.exchange(REQ, None).await.unwrap();
            assert_eq!((d.status, d.body_bytes, d.keep_alive), (200, 2, false));
        });
    }

    #[test]
    fn close_delimited_body_and_early_eof() {
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec()]);
        run(async move {
            let mut c = Conn::connect(addr, 4096).await.unwrap();
            let r = c.exchange(REQ, None).await.unwrap();
            assert_eq!((r.body_bytes, r.keep_alive), (13, false));
        });
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec()]);
        run(async move {
            let mut c = Conn::connect(addr, 4096).await.unwrap();
            assert_eq!(c.exchange(REQ, None).await.unwrap_err(), Failure::Eof);
        });
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec()]);
        run(async move {
            let mut c = Conn::connect(addr, 4096).await.unwrap();
            assert_eq!(c.exchange(REQ, None).await.unwrap_err(), Failure::Parse);
        });
    }
}
