//! A request's body, read on demand by the handler that takes it (an S3 PUT), never buffered
//! whole: [`RequestBody::next`] hands out the next piece as `Bytes`, bounded by the framing
//! (`Content-Length`, or `Transfer-Encoding: chunked` decoded by `proto`), each read within
//! `server.body_timeout`.
//!
//! The connection loop builds one per request from the bytes already read past the head and
//! takes it back after the handler ([`RequestBody::into_leftover`]): a body read to its end
//! leaves the connection usable (the bytes after it are the next pipelined request); a body the
//! handler did not read (an error answered early) ends the connection with a lingering close.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use edgemirror_proto::{BodyFraming, Chunk, ChunkedDecoder, ParseError};
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use crate::readbuf;
use crate::respond::Conn;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client sent no body bytes for {0:?}")]
    Timeout(Duration),
    #[error("the client closed the connection {got} bytes into the body")]
    Truncated { got: u64 },
    #[error("bad chunked framing: {0}")]
    Framing(ParseError),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// The body of one request.
pub struct RequestBody {
    framing: BodyFraming,
    /// Bytes read from the socket and not handed out yet (the start of the body, and maybe the
    /// next request after it).
    buf: BytesMut,
    /// `Content-Length` bodies: bytes still to hand out.
    remaining: u64,
    decoder: ChunkedDecoder,
    received: u64,
    done: bool,
    timeout: Duration,
}

impl RequestBody {
    /// The body of a request framed by `framing`, starting with `already` (read past the head).
    pub fn new(framing: BodyFraming, already: BytesMut, timeout: Duration) -> RequestBody {
        let (remaining, done) = match framing {
            BodyFraming::ContentLength(n) => (n, n == 0),
            BodyFraming::Chunked => (0, false),
            // Requests are never close-delimited (RFC 9112 §6.3): no body.
            BodyFraming::None | BodyFraming::CloseDelimited => (0, true),
        };
        RequestBody { framing, buf: already, remaining, decoder: ChunkedDecoder::new(), received: 0, done, timeout }
    }

    /// The announced length, if the client sent `Content-Length`.
    pub fn content_length(&self) -> Option<u64> {
        match self.framing {
            BodyFraming::ContentLength(n) => Some(n),
            BodyFraming::None => Some(0),
            _ => None,
        }
    }

    /// Body bytes handed out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next piece of the body, or `None` at its end.
    pub async fn next(&mut self, conn: &mut Conn) -> Result<Option<Bytes>, BodyError> {
        if self.done {
            return Ok(None);
        }
        match self.framing {
            BodyFraming::ContentLength(_) => {
                if self.buf.is_empty() {
                    self.fill(conn).await?;
                }
                let n = (self.buf.len() as u64).min(self.remaining) as usize;
                let piece = self.buf.split_to(n).freeze();
                self.remaining -= n as u64;
                self.received += n as u64;
                self.done = self.remaining == 0;
                Ok(Some(piece))
            }
            BodyFraming::Chunked => loop {
                let (consumed, chunk) = self.decoder.decode(&self.buf).map_err(BodyError::Framing)?;
                match chunk {
                    Chunk::Data { start, end } => {
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
                        self.fill(conn).await?;
                    }
                }
            },
            BodyFraming::None | BodyFraming::CloseDelimited => Ok(None),
        }
    }

    /// Reads at least one more byte from the client, within the body timeout.
    async fn fill(&mut self, conn: &mut Conn) -> Result<(), BodyError> {
        let want = match self.framing {
            BodyFraming::ContentLength(_) => self.remaining,
            _ => u64::MAX,
        };
        let buf = readbuf::for_read(std::mem::take(&mut self.buf), want);
        let (len, cap) = (buf.len(), buf.capacity());
        match monoio::time::timeout(self.timeout, conn.stream.read(buf.slice_mut(len..cap))).await {
            Ok((Ok(0), slice)) => {
                self.buf = slice.into_inner();
                Err(BodyError::Truncated { got: self.received })
            }
            Ok((Ok(_), slice)) => {
                self.buf = slice.into_inner();
                Ok(())
            }
            Ok((Err(e), _)) => Err(BodyError::Io(e)),
            Err(_) => Err(BodyError::Timeout(self.timeout)),
        }
    }

    /// After the handler: the bytes read past the body (the next pipelined request) when the
    /// body was read to its end, or `None` when it was not (the connection cannot go on).
    pub fn into_leftover(self) -> Option<BytesMut> {
        self.done.then_some(self.buf)
    }
}
