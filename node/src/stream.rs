//! The byte streams the node speaks HTTP over: plain TCP or TLS, for clients ([`ClientStream`])
//! and origins ([`OriginStream`]). Each is an enum delegating monoio's owned-buffer read and
//! write traits, so the connection loop and the origin client are written once.
//!
//! TLS is [`TlsStream`]: a `rustls` connection driven over a monoio `TcpStream`. It sends
//! every record rustls has sealed with one write: a response's head and body (a vectored
//! write) are sealed together, up to `SEND_BYTES` (128 KiB) at a time, and leave in one `send`.
//! Why our own driver and not monoio-rustls (bench/RESULTS.md, "Issue 14, twelfth pass"):
//! that adapter stages the records in a 16 KiB buffer, smaller than one full record (16,406
//! bytes), so each record left in two sends, the second of 22 bytes, and a vectored write sent
//! only its first buffer: a 64 KiB hit over TLS took about ten sends and twelve loopback
//! segments against nginx's five. Reads take a whole record at a time (`READ_BYTES`). The send
//! buffers are the worker's, lent for one send each.

use std::io::{self, BufRead, IoSlice, Write};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut, RawBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection, SideData};

/// A TLS client connection (the HTTPS listener's side).
pub type ServerTls = TlsStream<ServerConnection>;
/// A TLS connection to an origin.
pub type ClientTls = TlsStream<ClientConnection>;

pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<ServerTls>),
}

pub enum OriginStream {
    Plain(TcpStream),
    Tls(Box<ClientTls>),
}

impl OriginStream {
    /// Has the kernel acknowledge what the origin sends from now on at once, not with a delayed
    /// ACK: called when an answer's body has more to come after the bytes read with its head (an
    /// error is ignored; the body is read either way).
    ///
    /// On a keep-alive connection, the kernel takes request and answer for an interactive
    /// exchange and delays its ACKs, and the origin's sender then waits for them. On a body
    /// from an origin that corks its sends (nginx's `tcp_nopush` with `sendfile`), a segment
    /// left unacknowledged while the origin held the rest back stalled single cold 1 MiB misses
    /// by ~10 ms: their p99 was 11-13.5 ms in 9 runs of 11 at low load, and 1.6-1.8 ms in 4 of 4
    /// with this (bench/RESULTS.md, "Issue 14, eighteenth pass"). With 1,500-byte segments,
    /// bodies from 4 KiB up stalled the same way: 4.7 ms at 4 KiB, 40-67 ms at 16 and 64 KiB,
    /// in 2-8% of single cold GETs ("nineteenth pass"). The kernel leaves the mode
    /// when the node sends on the connection again: it lasts for this answer.
    pub fn quick_ack(&self) {
        let tcp = match self {
            OriginStream::Plain(tcp) => tcp,
            OriginStream::Tls(tls) => &tls.tcp,
        };
        let _ = socket2::SockRef::from(&borrowed_fd(tcp)).set_quickack(true);
    }
}

/// `tcp`'s descriptor, borrowed for as long as `tcp` is: for socket options and system calls
/// monoio has no method for (through `socket2::SockRef`).
pub fn borrowed_fd(tcp: &TcpStream) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: `tcp` owns the descriptor, open until it is dropped, and the borrow cannot
    // outlive `tcp`.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(tcp)) }
}

/// How many bytes one socket read asks for: a whole TLS record (16 KiB of plaintext and up to
/// 256 bytes of header, padding and tag) and what follows it.
const READ_BYTES: usize = 32 * 1024;

/// rustls' limit on sealed records not yet taken from it: the plaintext one write may hand it,
/// and so the most one `send` carries. A 64 KiB body and its head fit in one.
const SEND_BYTES: usize = 128 * 1024;

/// How many send buffers a worker keeps for its connections' next sends. A connection holds one
/// only while its send is in flight; idle, it holds none.
const POOLED_SEND_BUFFERS: usize = 16;

thread_local! {
    /// This thread's free send buffers (each runtime thread, a worker or the admin thread, has
    /// its own; a stream never leaves its thread). Reused rather than allocated per send: a
    /// 66 KiB buffer allocated and freed around each 64 KiB response cost 9.0 page faults a hit
    /// (1.1 pooled) as glibc gave the heap's top back and took it again, and left 5.7 KiB more
    /// per idle connection (`bench/idle_tls.py`). A buffer keeps its capacity, at most about
    /// twice `SEND_BYTES`: 16 of them are a few MiB per thread at most.
    static SEND_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_send_buffer() -> Vec<u8> {
    SEND_BUFFERS.with(|pool| pool.borrow_mut().pop()).unwrap_or_default()
}

fn give_send_buffer(mut buf: Vec<u8>) {
    buf.clear();
    SEND_BUFFERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_SEND_BUFFERS {
            pool.push(buf);
        }
    });
}

/// Fails a read or write on a direction a cancelled call left out of step ([`TlsStream`]'s
/// `read_cut`, `write_cut`).
fn check_cut(cut: bool) -> io::Result<()> {
    match cut {
        true => Err(io::Error::new(io::ErrorKind::BrokenPipe, "TLS stream cut by a cancelled read or write")),
        false => Ok(()),
    }
}

/// A rustls connection (`ServerConnection` or `ClientConnection`) over a TCP stream.
pub struct TlsStream<C> {
    tcp: TcpStream,
    tls: C,
    /// Bytes read from the socket that rustls has not taken yet: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Set while a socket read (write) is in flight. Still set when the next one starts, the
    /// last was cancelled (its caller's timeout dropped it) and bytes may be lost or sent in
    /// part: that direction is out of step with the peer, and every later read (write) fails.
    /// A read cut leaves writes whole, so a body read that timed out can still be answered.
    read_cut: bool,
    write_cut: bool,
}

/// Completes a server handshake on `tcp`. `prefix` holds the bytes already read from it (to tell
/// TLS from plain HTTP); rustls reads them first.
pub async fn accept(tcp: TcpStream, prefix: &[u8], config: Arc<ServerConfig>) -> io::Result<ServerTls> {
    let tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, tls, prefix);
    stream.handshake().await?;
    Ok(stream)
}

/// Completes a client handshake with the origin named `name` on `tcp`.
pub async fn connect(tcp: TcpStream, name: ServerName<'static>, config: Arc<ClientConfig>) -> io::Result<ClientTls> {
    let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut stream = TlsStream::new(tcp, tls, &[]);
    stream.handshake().await?;
    Ok(stream)
}

impl<C, D> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    D: SideData,
{
    fn new(tcp: TcpStream, mut tls: C, prefix: &[u8]) -> TlsStream<C> {
        tls.set_buffer_limit(Some(SEND_BYTES));
        let mut rbuf = Vec::with_capacity(READ_BYTES.max(prefix.len()));
        rbuf.extend_from_slice(prefix);
        TlsStream { tcp, tls, rbuf, rpos: 0, read_cut: false, write_cut: false }
    }

    /// Runs the handshake to its end, then sends what rustls has queued after it (a TLS 1.3
    /// server's session tickets). A rustls error (a bad certificate, no common cipher) comes back
    /// as `InvalidData` carrying it, after the alert rustls queued is sent.
    async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.send_records().await?;
            } else if !self.receive().await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed during the TLS handshake"));
            }
        }
        self.send_records().await
    }

    /// Hands rustls the next bytes from the socket (reading when none are left) and processes
    /// them. Returns false when nothing more will come: the end of the stream, or the peer's
    /// close_notify.
    async fn receive(&mut self) -> io::Result<bool> {
        check_cut(self.read_cut)?;
        let mut open = true;
        if self.rpos == self.rbuf.len() {
            let mut buf = std::mem::take(&mut self.rbuf);
            buf.clear();
            buf.reserve(READ_BYTES);
            self.rpos = 0;
            self.read_cut = true;
            let (res, buf) = self.tcp.read(buf).await;
            self.read_cut = false;
            self.rbuf = buf;
            open = res? > 0;
        }
        let mut unread = &self.rbuf[self.rpos..];
        // At the end of the stream `unread` is empty and rustls records the end.
        let n = self.tls.read_tls(&mut unread)?;
        if n == 0 && open {
            // rustls took nothing although bytes are waiting: calling again would spin.
            return Err(io::Error::new(io::ErrorKind::InvalidData, "TLS: the peer's bytes were not taken"));
        }
        self.rpos += n;
        match self.tls.process_new_packets() {
            Ok(state) => Ok(open && !state.peer_has_closed()),
            Err(e) => {
                // rustls has queued an alert saying why; the peer may read it, or not.
                let _ = self.send_records().await;
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Sends every record rustls holds, gathered into one write.
    async fn send_records(&mut self) -> io::Result<()> {
        check_cut(self.write_cut)?;
        while self.tls.wants_write() {
            let mut out = take_send_buffer();
            // `Vec`'s vectored write takes every record rustls offers in one call.
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            self.write_cut = true;
            let (res, out) = self.tcp.write_all(out).await;
            self.write_cut = false;
            give_send_buffer(out);
            res?;
        }
        Ok(())
    }

    /// Seals as much of `bufs` as rustls takes (up to `SEND_BYTES`) and sends it.
    async fn write_plaintext(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        check_cut(self.write_cut)?;
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let mut n = self.tls.writer().write_vectored(bufs)?;
        if n == 0 {
            // rustls still holds records (queued after a read): send them, then it takes more.
            self.send_records().await?;
            n = self.tls.writer().write_vectored(bufs)?;
        }
        self.send_records().await?;
        Ok(n)
    }
}

impl<C, D> AsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    D: SideData,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let room = buf.bytes_total();
        if room == 0 {
            return (Ok(0), buf);
        }
        loop {
            let mut reader = self.tls.reader();
            match reader.fill_buf() {
                // Empty only after the peer's close_notify: the end of the stream.
                Ok(plain) => {
                    let n = plain.len().min(room);
                    // SAFETY: `buf` has `room` writable bytes at `write_ptr`, which do not
                    // overlap rustls' buffer; `set_init` then covers exactly the bytes written.
                    unsafe {
                        std::ptr::copy_nonoverlapping(plain.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    reader.consume(n);
                    return (Ok(n), buf);
                }
                // No plaintext yet: read more. After a TCP end without close_notify the reader
                // answers UnexpectedEof, never WouldBlock again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.receive().await {
                return (Err(e), buf);
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        // Into the first buffer only, as a short read may.
        // SAFETY: the raw buffer points into `buf`, which outlives it.
        let res = match unsafe { RawBuf::new_from_iovec_mut(&mut buf) } {
            Some(raw) => self.read(raw).await.0,
            None => Ok(0),
        };
        if let Ok(n) = res {
            // SAFETY: `n` bytes were written into the first buffer.
            unsafe { buf.set_init(n) };
        }
        (res, buf)
    }
}

impl<C, D> AsyncWriteRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>>,
    D: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `buf` owns these initialised bytes while this future runs.
        let slice = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let res = self.write_plaintext(&[IoSlice::new(slice)]).await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let ptr = buf.read_iovec_ptr();
        let len = buf.read_iovec_len();
        if len == 0 {
            return (Ok(0), buf);
        }
        // SAFETY: `buf` owns `len` iovecs at `ptr`, and the bytes they describe, while this
        // future runs; `IoSlice` has the layout of `iovec` on Unix.
        let bufs = unsafe { std::slice::from_raw_parts(ptr as *const IoSlice<'_>, len) };
        let res = self.write_plaintext(bufs).await;
        (res, buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.send_records().await?;
        self.tcp.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        // A stream cut mid-record cannot carry a close_notify the peer could read.
        if !self.write_cut {
            self.tls.send_close_notify();
            self.send_records().await?;
        }
        self.tcp.shutdown().await
    }
}

macro_rules! delegate_io {
    ($ty:ident) => {
        impl AsyncReadRent for $ty {
            async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.read(buf).await,
                    $ty::Tls(s) => s.read(buf).await,
                }
            }

            async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.readv(buf).await,
                    $ty::Tls(s) => s.readv(buf).await,
                }
            }
        }

        impl AsyncWriteRent for $ty {
            async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.write(buf).await,
                    $ty::Tls(s) => s.write(buf).await,
                }
            }

            async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
                match self {
                    $ty::Plain(s) => s.writev(buf).await,
                    $ty::Tls(s) => s.writev(buf).await,
                }
            }

            async fn flush(&mut self) -> std::io::Result<()> {
                match self {
                    $ty::Plain(s) => s.flush().await,
                    $ty::Tls(s) => s.flush().await,
                }
            }

            async fn shutdown(&mut self) -> std::io::Result<()> {
                match self {
                    $ty::Plain(s) => s.shutdown().await,
                    $ty::Tls(s) => s.shutdown().await,
                }
            }
        }
    };
}

delegate_io!(ClientStream);
delegate_io!(OriginStream);

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket option TCP_QUICKACK of `tcp`, set when `set` is given, then read.
    fn quickack(tcp: &TcpStream, set: Option<bool>) -> bool {
        let fd = borrowed_fd(tcp);
        let sock = socket2::SockRef::from(&fd);
        if let Some(on) = set {
            sock.set_quickack(on).unwrap();
        }
        sock.quickack().unwrap()
    }

    /// `quick_ack` takes the connection out of the kernel's delayed-ACK ("pingpong") mode, which
    /// a keep-alive connection enters when it answers soon after it receives.
    #[test]
    fn quick_ack_leaves_the_delayed_ack_mode() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let _peer = listener.accept().unwrap();
            // What the kernel does on its own after an exchange; the option reads 0 then.
            assert!(!quickack(&tcp, Some(false)), "the socket did not enter the delayed-ACK mode");
            let stream = OriginStream::Plain(tcp);
            stream.quick_ack();
            let OriginStream::Plain(tcp) = &stream else { unreachable!() };
            assert!(quickack(tcp, None), "still in the delayed-ACK mode");
        });
    }
}
