//! One client connection: read a request head, answer it, repeat (keep-alive, pipelining).
//!
//! The read buffer is reused for the life of the connection; `proto` parses the head in place
//! and returns offsets into it, and the handlers borrow the path and headers from it. Bytes past
//! the head stay in the buffer: they are the next pipelined request.
//!
//! Timeouts: an idle keep-alive connection gets `server.idle_timeout`; once the first byte of a
//! head has arrived the whole head must arrive within `server.header_timeout` (a client sending a
//! byte a second cannot hold the connection); every write must progress within
//! `server.write_timeout`.
//!
//! A malformed head is answered with a 400 (431/414 for limits) S3 error body and the connection
//! is closed, since the stream can no longer be trusted to be in step.

use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use edgemirror_proto::{self as proto, BodyFraming, Status};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::error::S3Error;
use crate::iovec::{self, HeadBody, IovecPair};
use crate::object;
use crate::reply;
use crate::server::Worker;
use crate::stream::ClientStream;
use crate::tls;

/// Bodies up to this size are copied behind the head and sent with one write; larger ones are
/// sent from their own buffer (the cached `Bytes` or the segment mapping) without a copy.
const COALESCE_BODY_BYTES: usize = 16 * 1024;
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Whether the connection can carry another request after this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    KeepAlive,
    Close,
}

impl Disposition {
    /// After writing a response: keep the connection only if the write succeeded and the
    /// response allowed it.
    pub fn after(sent: io::Result<()>, keep_alive: bool) -> Disposition {
        match sent {
            Ok(()) if keep_alive => Disposition::KeepAlive,
            _ => Disposition::Close,
        }
    }
}

/// The writing half of a connection: the socket and the reused output buffer.
pub struct Conn {
    stream: ClientStream,
    /// Response head (and small bodies) being built.
    pub out: BytesMut,
    write_timeout: Duration,
    /// Reused for head + body vectored writes.
    iov: Option<IovecPair>,
}

impl Conn {
    /// Writes everything in `out` and clears it.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        match monoio::time::timeout(self.write_timeout, self.stream.write_all(out)).await {
            Ok((Ok(_), mut out)) => {
                out.clear();
                self.out = out;
                Ok(())
            }
            Ok((Err(e), _)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client write stalled")),
        }
    }

    /// Sends the head in `out` followed by `body`: a small body is copied behind the head (one
    /// plain write); a large one goes out with the head in one vectored write, uncopied.
    pub async fn send_with_body(&mut self, body: Bytes) -> io::Result<()> {
        if body.len() <= COALESCE_BODY_BYTES {
            self.out.extend_from_slice(&body);
            return self.flush().await;
        }
        let head = std::mem::take(&mut self.out);
        let head_len = head.len();
        let total = head_len + body.len();
        let pair = HeadBody::new(head, body, self.iov.take().unwrap_or_else(iovec::new_pair));
        let (res, pair) = match monoio::time::timeout(self.write_timeout, self.stream.writev(pair)).await {
            Ok(r) => r,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "client write stalled")),
        };
        let (mut head, body, iov) = pair.into_parts();
        self.iov = Some(iov);
        let n = res?;
        // A short write (or TLS, whose writev sends only the first buffer): finish plainly.
        if n < head_len {
            head.advance(n);
            self.out = head;
            self.flush().await?;
            self.write_bytes(body).await?;
        } else {
            head.clear();
            self.out = head;
            if n < total {
                self.write_bytes(body.slice(n - head_len..)).await?;
            }
        }
        Ok(())
    }

    /// Writes one buffer as it is (a body piece), bounded by the write timeout.
    pub async fn write_bytes(&mut self, body: Bytes) -> io::Result<()> {
        match monoio::time::timeout(self.write_timeout, self.stream.write_all(body)).await {
            Ok((res, _)) => res.map(|_| ()),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client write stalled")),
        }
    }
}

/// A parsed request as the handlers see it: the head's spans and the buffer they index.
pub struct Request<'a> {
    pub buf: &'a [u8],
    pub head: &'a proto::RequestHead,
    pub id: reply::RequestId,
}

impl Request<'_> {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.headers.get(self.buf, name)
    }

    pub fn is_head(&self) -> bool {
        self.head.method == proto::Method::Head
    }

    /// The raw query string, without '?'.
    pub fn query(&self) -> Option<&[u8]> {
        self.head.query.map(|q| q.get(self.buf))
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve(stream: ClientStream, worker: Rc<Worker>) {
    let cfg = &worker.shared.config.server;
    let mut conn = Conn { stream, out: BytesMut::with_capacity(4096), write_timeout: cfg.write_timeout, iov: None };
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        // Read until a whole head is buffered.
        let mut head_started: Option<Instant> = (!buf.is_empty()).then(Instant::now);
        let head = loop {
            match proto::parse_request_with(&buf, &cfg.limits) {
                Ok(Status::Complete(head)) => break head,
                Ok(Status::Partial) => {}
                Err(e) => {
                    worker.metrics().bad_requests.inc();
                    let err = S3Error::BadRequest(e);
                    let id = worker.next_request_id();
                    tracing::debug!(request_id = %id, error = e.as_str(), "malformed request");
                    reply::error(&mut conn.out, &err, None, &worker.date, id, false, false);
                    let _ = conn.flush().await;
                    close(conn).await;
                    return;
                }
            }
            let limit = match head_started {
                None => cfg.idle_timeout,
                Some(at) => cfg.header_timeout.saturating_sub(at.elapsed()),
            };
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK_BYTES);
            }
            let (len, cap) = (buf.len(), buf.capacity());
            match monoio::time::timeout(limit, conn.stream.read(buf.slice_mut(len..cap))).await {
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return close(conn).await,
                Ok((Ok(_), slice)) => {
                    buf = slice.into_inner();
                    head_started.get_or_insert_with(Instant::now);
                }
                // Idle keep-alive or slow head: drop the connection (the buffer went with the
                // cancelled read, which is fine: nothing in it will be answered).
                Err(_) => return close(conn).await,
            }
        };

        let id = worker.next_request_id();
        let request = Request { buf: &buf, head: &head, id };
        let disposition = object::handle(&worker, &mut conn, &request).await;
        // This data plane takes no request bodies; after one, the stream position is unknown
        // unless we drain it, so the connection ends instead.
        let has_body = !matches!(head.body, BodyFraming::None | BodyFraming::ContentLength(0));
        if disposition == Disposition::Close || !head.keep_alive || has_body {
            return close(conn).await;
        }
        buf.advance(head.head_len);
    }
}

/// Completes the TLS handshake of a connection to the HTTPS listener, within the header
/// timeout. A client speaking plain HTTP to this port gets a plain-text 400 (its first byte is
/// not a TLS handshake record, 0x16) instead of a TLS alert it cannot read.
pub async fn tls_handshake(
    stream: monoio::net::TcpStream,
    acceptor: &monoio_rustls::TlsAcceptor,
    worker: &Worker,
) -> Option<ClientStream> {
    let limit = worker.shared.config.server.header_timeout;
    let mut stream = stream;
    let first = vec![0u8; 8];
    let first = match monoio::time::timeout(limit, stream.read(first)).await {
        Ok((Ok(n), mut b)) if n > 0 => {
            b.truncate(n);
            b
        }
        _ => return None,
    };
    if first[0] != 0x16 {
        let mut conn =
            Conn { stream: ClientStream::Plain(stream), out: BytesMut::new(), write_timeout: limit, iov: None };
        let id = worker.next_request_id();
        let err = S3Error::InvalidRequest("a plain HTTP request was sent to the HTTPS port");
        reply::error(&mut conn.out, &err, None, &worker.date, id, false, false);
        close(conn).await;
        return None;
    }
    let io = monoio::io::PrefixedReadIo::new(stream, std::io::Cursor::new(first));
    match monoio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(ClientStream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %tls::describe(&e), "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Flushes and shuts the socket down so the peer sees EOF promptly (under io_uring a dropped
/// stream only queues its close).
async fn close(mut conn: Conn) {
    let _ = conn.flush().await;
    let _ = monoio::time::timeout(Duration::from_secs(1), conn.stream.shutdown()).await;
}
