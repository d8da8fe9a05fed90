//! One client connection: read a request head, answer it, repeat (keep-alive, pipelining).
//!
//! The read buffer is reused for the life of the connection; `proto` parses the head in place
//! and returns offsets into it, and the handlers borrow the path and headers from it. Bytes past
//! the head stay in the buffer: they are the next pipelined request.
//!
//! Timeouts: a new connection must deliver its first request head within
//! `server.header_timeout` (a connection that never sends a byte is closed then, not after the
//! idle timeout: idle sockets are what an fd-exhaustion flood is made of); between requests an
//! idle keep-alive connection gets `server.idle_timeout`; once the first byte of a head has
//! arrived the whole head must arrive within `server.header_timeout` (a client sending a byte a
//! second cannot hold the connection); every write must progress within `server.write_timeout`.
//!
//! Closing: when the client may still be sending (a request body this data plane does not take,
//! pipelined requests after a `Connection: close`), the close lingers ([`Conn::close`]) so the
//! response is not destroyed by a reset.
//!
//! A malformed head is answered with a 400 (431/414 for limits) S3 error body and the connection
//! is closed, since the stream can no longer be trusted to be in step.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use edgemirror_proto::{self as proto, Status};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use crate::body::RequestBody;
use crate::error::S3Error;
use crate::reply;
use crate::respond::{Conn, Disposition, Request, Tally};
use crate::s3;
use crate::stream::ClientStream;
use crate::worker::Worker;

const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Serves one accepted connection until it closes.
/// `accepted` is when the connection was accepted: its first head is due `header_timeout` later.
/// `peer` is the client's address, for the access log.
pub async fn serve(stream: ClientStream, worker: Rc<Worker>, accepted: Instant, peer: Option<SocketAddr>) {
    let mut conn = Conn::new(stream, worker.config().server.write_timeout);
    conn.peer = peer;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut first = true;
    loop {
        // The config is taken per request: a reload applies from the next request on.
        let config = worker.config();
        let cfg = &config.server;
        conn.set_write_timeout(cfg.write_timeout);
        // Read until a whole head is buffered. The first request's clock starts at accept.
        let mut head_started: Option<Instant> = match (first, buf.is_empty()) {
            (true, _) => Some(accepted),
            (false, false) => Some(Instant::now()),
            (false, true) => None,
        };
        first = false;
        let head = loop {
            match proto::parse_request_with(&buf, &cfg.limits) {
                Ok(Status::Complete(head)) => break head,
                Ok(Status::Partial) => {}
                Err(e) => {
                    worker.metrics().bad_requests.inc();
                    let err = S3Error::BadRequest(e);
                    let id = worker.next_request_id();
                    tracing::debug!(request_id = %id, error = e.as_str(), "malformed request");
                    conn.tally = Tally::new(head_started.unwrap_or_else(Instant::now));
                    reply::error(&mut conn.out, &err, None, &worker.date, id, false, false);
                    let _ = conn.flush().await;
                    s3::record(&worker, &conn, id, None, None);
                    return conn.close(true).await;
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
                Ok((Ok(0), _)) | Ok((Err(_), _)) => return conn.close(false).await,
                Ok((Ok(_), slice)) => {
                    buf = slice.into_inner();
                    head_started.get_or_insert_with(Instant::now);
                }
                // Idle keep-alive or slow head: drop the connection (the buffer went with the
                // cancelled read, which is fine: nothing in it will be answered).
                Err(_) => return conn.close(false).await,
            }
        };

        let id = worker.next_request_id();
        conn.tally = Tally::new(head_started.unwrap_or_else(Instant::now));
        // What was read past the head is the start of the body (and maybe the next request):
        // the body reader takes it, and gives back what follows the body.
        let after_head = buf.split_off(head.head_len);
        let mut body = RequestBody::new(head.body, after_head, cfg.body_timeout);
        let request = Request { buf: &buf, head: &head, id, config: &config };
        let disposition = s3::handle(&worker, &mut conn, &request, &mut body).await;
        match body.into_leftover() {
            Some(rest) if disposition == Disposition::KeepAlive && head.keep_alive => buf = rest,
            // A body the handler did not read (an error answered first), or a close: the client
            // may still be sending.
            Some(rest) => return conn.close(!rest.is_empty()).await,
            None => return conn.close(true).await,
        }
    }
}

/// Completes the TLS handshake of a connection to the HTTPS listener, within the header
/// timeout. A client speaking plain HTTP to this port gets a plain-text 400 (its first byte is
/// not a TLS handshake record, 0x16) instead of a TLS alert it cannot read.
pub async fn tls_handshake(
    stream: monoio::net::TcpStream,
    server_tls: std::sync::Arc<rustls::ServerConfig>,
    worker: &Worker,
) -> Option<ClientStream> {
    let limit = worker.config().server.header_timeout;
    let stream_peer = stream.peer_addr().ok();
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
        let mut conn = Conn::new(ClientStream::Plain(stream), limit);
        conn.peer = stream_peer;
        let id = worker.next_request_id();
        let err = S3Error::InvalidRequest("a plain HTTP request was sent to the HTTPS port");
        reply::error(&mut conn.out, &err, None, &worker.date, id, false, false);
        let _ = conn.flush().await;
        s3::record(worker, &conn, id, None, None);
        conn.close(true).await;
        return None;
    }
    match monoio::time::timeout(limit, crate::stream::accept(stream, &first, server_tls)).await {
        Ok(Ok(tls)) => Some(ClientStream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}
