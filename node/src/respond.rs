//! What a handler answers through: the request as parsed ([`Request`]), the writing half of the
//! connection ([`Conn`]: socket, reused output buffer, timed writes) and whether the connection
//! may carry another request afterwards ([`Disposition`]).
//!
//! This sits below every handler and above only the byte-level pieces ([`crate::reply`] for
//! heads, [`crate::iovec`] for vectored writes, [`crate::stream`] for plain/TLS sockets), so
//! handlers never import the connection loop that calls them.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use edgemirror_proto::{self as proto};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::config::Config;
use crate::iovec::{self, HeadBody, IovecPair};
use crate::metrics::{OriginFetch, Source};
use crate::reply::RequestId;
use crate::stream::ClientStream;

/// Bodies up to this size are copied behind the head and sent with one write; larger ones are
/// sent from their own buffer (the cached `Bytes` or the segment mapping) without a copy.
const COALESCE_BODY_BYTES: usize = 16 * 1024;

/// Lingering close (as nginx's `lingering_close`): after our FIN, how long we keep reading and
/// discarding what the client still sends, and how much of it. Closing a socket with unread
/// bytes in its receive queue makes the kernel send a reset, and a reset can destroy the
/// response the client has not read yet (RFC 9112 §9.6).
const LINGER_TOTAL: Duration = Duration::from_secs(2);
const LINGER_READ: Duration = Duration::from_millis(500);
const LINGER_MAX_BYTES: usize = 4 << 20;

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

/// A parsed request as the handlers see it: the head's spans and the buffer they index, and the
/// config taken for it (one snapshot per request: a reload applies to the next one).
pub struct Request<'a> {
    pub buf: &'a [u8],
    pub head: &'a proto::RequestHead,
    pub id: RequestId,
    pub config: &'a Config,
}

impl<'a> Request<'a> {
    /// A header's value, borrowed from the request buffer (it outlives `self`).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.head.headers.get(self.buf, name)
    }

    pub fn is_head(&self) -> bool {
        self.head.method == proto::Method::Head
    }

    /// The raw query string, without '?'.
    pub fn query(&self) -> Option<&[u8]> {
        self.head.query.map(|q| q.get(self.buf))
    }

    pub fn keep_alive(&self) -> bool {
        self.head.keep_alive
    }
}

/// What the connection sent for the request being answered, and what its handler said about it:
/// read by the access log and the request metrics once the request is answered, then reset.
/// Status, byte count and first-byte time are taken by the connection as it writes (so they
/// are what the client was sent); the handlers set the rest.
#[derive(Debug)]
pub struct Tally {
    /// When the first byte of the request head arrived.
    pub started: Instant,
    /// The final status sent (0 until a final response head went out).
    pub status: u16,
    /// Bytes handed to the socket, interim responses included (a write that fails counts whole).
    pub sent: u64,
    /// When the final response's first byte was written.
    pub first_byte: Option<Instant>,
    pub source: Source,
    /// A miss: the exchange with the origin (shared by every client of the fill).
    pub origin: Option<OriginFetch>,
    /// A signed request: its access key.
    pub access_key: Option<String>,
}

impl Tally {
    pub fn new(started: Instant) -> Tally {
        Tally { started, status: 0, sent: 0, first_byte: None, source: Source::Edge, origin: None, access_key: None }
    }

    /// Before `len` bytes starting with `first` are written: a write that begins a response head
    /// (`HTTP/1.1 NNN`, the only form [`crate::reply::start`] writes) gives the status; the first
    /// write of the final response is its first byte.
    fn note_write(&mut self, first: &[u8], len: usize) {
        if self.status < 200 {
            if let Some(status) = first
                .strip_prefix(b"HTTP/1.1 ")
                .and_then(|rest| rest.get(..3))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok())
            {
                self.status = status;
            }
        }
        if self.status >= 200 && self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        self.sent += len as u64;
    }
}

/// The writing half of a connection: the socket and the reused output buffer.
pub struct Conn {
    pub(crate) stream: ClientStream,
    /// The client's address (for the access log).
    pub peer: Option<std::net::SocketAddr>,
    /// The request being answered (see [`Tally`]).
    pub tally: Tally,
    /// Response head (and small bodies) being built.
    pub out: BytesMut,
    write_timeout: Duration,
    /// Reused for head + body vectored writes.
    iov: Option<IovecPair>,
    /// Whether the socket was made non-blocking for [`Conn::send_with_file`].
    nonblocking: bool,
}

/// A non-blocking system call's result: the count, `None` when it would block (or was
/// interrupted: waiting for the socket returns at once if it has room), or its error.
fn would_block(res: io::Result<usize>) -> io::Result<Option<usize>> {
    match res {
        Ok(n) => Ok(Some(n)),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The largest page [`Conn::send_with_file`] splits a body at. With bigger pages (64 KiB on
/// some arm64 and ppc64le) the bytes before the boundary could be most of the body: there it
/// goes out from where it starts.
const MAX_SPLIT_PAGE: u64 = 4096;

/// The kernel's page size: [`Conn::send_with_file`] starts `sendfile` at a page boundary.
fn page_bytes() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf takes no pointers.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64)
}

/// How many of `len` bytes at file offset `offset` lie before the first page boundary: the part
/// of a body [`Conn::send_with_file`] copies after the head rather than send from the file.
fn to_page_boundary(offset: u64, len: usize, page: u64) -> usize {
    ((page - offset % page) % page).min(len as u64) as usize
}

/// Whether [`Conn::send_with_file`] may be used: on Linux 6.0 or later. It leaves the socket
/// non-blocking, and io_uring in older kernels (before 5.14 or so) ends a vectored write to a
/// non-blocking socket with EAGAIN where it should wait for room; 6.0 keeps a margin.
pub fn sendfile_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(|| kernel_at_least(&kernel_release(), (6, 0)))
}

/// The running kernel's release (`uname -r`), empty if unknown.
fn kernel_release() -> String {
    // SAFETY: uname fills the struct we pass; all-zero is a valid utsname.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    // SAFETY: uname NUL-terminates each field within its array.
    unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned()
}

/// Whether a release string such as "6.18.44-fc" is at least `major.minor`.
fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Runs one write, bounded by `limit`: a client that stops reading cannot hold the task.
async fn timed<T>(limit: Duration, write: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    match monoio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client write stalled")),
    }
}

impl Conn {
    pub fn new(stream: ClientStream, write_timeout: Duration) -> Conn {
        Conn {
            stream,
            peer: None,
            tally: Tally::new(Instant::now()),
            out: BytesMut::with_capacity(4096),
            write_timeout,
            iov: None,
            nonblocking: false,
        }
    }

    /// Bounds every write from now on (the running config's `server.write_timeout_ms`).
    pub fn set_write_timeout(&mut self, limit: Duration) {
        self.write_timeout = limit;
    }

    /// Writes everything in `out` and clears it.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.tally.note_write(&self.out, self.out.len());
        let out = std::mem::take(&mut self.out);
        let mut out = timed(self.write_timeout, async {
            let (res, out) = self.stream.write_all(out).await;
            res.map(|_| out)
        })
        .await?;
        out.clear();
        self.out = out;
        Ok(())
    }

    /// Sends what is pending in `out` (a head) followed by `body`: a small body is copied behind
    /// it (one plain write); a large one goes out with it in one vectored write, uncopied; with
    /// nothing pending, the body goes out alone, uncopied.
    pub async fn send_with_body(&mut self, body: Bytes) -> io::Result<()> {
        if self.out.is_empty() {
            return self.write_bytes(body).await;
        }
        if body.len() <= COALESCE_BODY_BYTES {
            self.out.extend_from_slice(&body);
            return self.flush().await;
        }
        let head = std::mem::take(&mut self.out);
        let head_len = head.len();
        let total = head_len + body.len();
        // Counted here as one write; a short write's remainder below goes through `flush` and
        // `write_bytes`, which must not count those bytes again.
        self.tally.note_write(&head, total);
        let pair = HeadBody::new(head, body, self.iov.take().unwrap_or_else(iovec::new_pair));
        let (res, pair) = match monoio::time::timeout(self.write_timeout, self.stream.writev(pair)).await {
            Ok(r) => r,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "client write stalled")),
        };
        let (mut head, body, iov) = pair.into_parts();
        self.iov = Some(iov);
        let n = res?;
        // A short write (under TLS, any response over 128 KiB: one write seals that much): finish
        // plainly.
        if n < head_len {
            head.advance(n);
            let out = timed(self.write_timeout, async {
                let (res, out) = self.stream.write_all(head).await;
                res.map(|_| out)
            })
            .await?;
            self.out = out;
            self.out.clear();
            self.write_uncounted(body).await?;
        } else {
            head.clear();
            self.out = head;
            if n < total {
                self.write_uncounted(body.slice(n - head_len..)).await?;
            }
        }
        Ok(())
    }

    /// Whether the connection is plain TCP (not TLS): [`Conn::send_with_file`] can serve it.
    pub fn is_plain(&self) -> bool {
        matches!(self.stream, ClientStream::Plain(_))
    }

    /// Sends the head in `out`, then `body`, the bytes at `offset` in `file` (the file's
    /// mapping), with `sendfile(2)` from the first page boundary in it: the kernel hands the
    /// page cache's pages to the socket, with no copy into it. The bytes before that boundary
    /// (less than a 4 KiB page) are copied after the head in `out` and go out with it, as
    /// [`Conn::send_with_body`] copies bodies of up to 16 KiB there; `out` keeps its capacity
    /// for the connection's next response either way. Plain TCP only ([`Conn::is_plain`]; under
    /// TLS it is an error and nothing is sent). The caller knows the bytes are in memory: a page the copy
    /// or `sendfile` had to read from disk would stall the core.
    ///
    /// Both go out by system calls on the worker, not through io_uring (monoio has no
    /// `sendfile`): the socket is made non-blocking (once; on the kernels [`sendfile_supported`]
    /// allows, io_uring's own reads and writes on it still wait for the socket as before), and
    /// when it is full the task waits for it to drain.
    ///
    /// Why the split at a page (bench/RESULTS.md, "Issue 14, tenth pass"): `sendfile` then hands
    /// over whole pages only, and the head no longer goes out alone with a few hundred bytes.
    /// On loopback (a 65,483-byte segment) a 64 KiB hit left in three data segments (the head,
    /// 65,483 body bytes, the last 53) and, with the bodies measured, leaves in two. In
    /// `bench/ab_hit.sh`'s closed loops, where the load client is at or near its limit, the node
    /// served 1.09x (emload) and 1.13x (wrk) the 64 KiB hits a second, 1.00x with h2load; its
    /// CPU at one offered load barely moved (60-61% against 61-62%).
    /// The head is not held back for the body with `MSG_MORE` or `TCP_CORK`: over 300 keys that
    /// made 64 KiB hits 2.3x slower on loopback (the keys whose bodies start 552 or more bytes
    /// into their page about 4x; those at 200 and 376 were not slower), and with the split it
    /// was still slower than without.
    pub async fn send_with_file(&mut self, file: &std::fs::File, offset: u64, body: &[u8]) -> io::Result<()> {
        let ClientStream::Plain(stream) = &self.stream else {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "sendfile on a TLS connection"));
        };
        let borrowed = crate::stream::borrowed_fd(stream);
        let socket = socket2::SockRef::from(&borrowed);
        if !self.nonblocking {
            socket.set_nonblocking(true)?;
            self.nonblocking = true;
        }
        let mut head = std::mem::take(&mut self.out);
        self.tally.note_write(&head, head.len() + body.len());
        let page = page_bytes();
        let lead = if page <= MAX_SPLIT_PAGE { to_page_boundary(offset, body.len(), page) } else { 0 };
        head.extend_from_slice(&body[..lead]);
        let (offset, len) = (offset + lead as u64, body.len() - lead);
        let sent = timed(self.write_timeout, async {
            let mut at = 0;
            while at < head.len() {
                match would_block(socket.send_with_flags(&head[at..], libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT))? {
                    Some(n) => at += n,
                    None => stream.writable(false).await?,
                }
            }
            let mut off = offset as libc::off_t;
            let end = off + len as libc::off_t;
            while off < end {
                // SAFETY: two open descriptors; the kernel advances `off`, a local.
                let n =
                    unsafe { libc::sendfile(borrowed.as_raw_fd(), file.as_raw_fd(), &mut off, (end - off) as usize) };
                let res = usize::try_from(n).map_err(|_| io::Error::last_os_error());
                match would_block(res)? {
                    Some(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment file ends early")),
                    Some(_) => {}
                    None => stream.writable(false).await?,
                }
            }
            Ok(())
        })
        .await;
        head.clear();
        self.out = head;
        sent
    }

    /// Writes `buf` as it is (a body piece read into a buffer the caller reuses), bounded by
    /// the write timeout, and gives the buffer back.
    pub async fn write_vec(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        self.tally.note_write(&buf, buf.len());
        timed(self.write_timeout, async {
            let (res, buf) = self.stream.write_all(buf).await;
            res.map(|_| buf)
        })
        .await
    }

    /// Writes one buffer as it is (a body piece), bounded by the write timeout.
    pub async fn write_bytes(&mut self, body: Bytes) -> io::Result<()> {
        self.tally.note_write(&body, body.len());
        self.write_uncounted(body).await
    }

    async fn write_uncounted(&mut self, body: Bytes) -> io::Result<()> {
        timed(self.write_timeout, async { self.stream.write_all(body).await.0.map(|_| ()) }).await
    }

    /// Flushes what is pending and ends the connection so the peer sees EOF promptly (under
    /// io_uring a dropped stream only queues its close). With `unread`, the client may still be
    /// sending (a request body we did not take, pipelined requests we will not answer): after
    /// our FIN we read and discard for a bounded time, so the kernel does not answer those bytes
    /// with a reset that could destroy the response in flight.
    pub async fn close(mut self, unread: bool) {
        let _ = self.flush().await;
        let _ = monoio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        if unread {
            self.linger().await;
        }
    }

    async fn linger(&mut self) {
        let deadline = Instant::now() + LINGER_TOTAL;
        let mut discarded = 0;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        while discarded < LINGER_MAX_BYTES {
            let left = deadline.saturating_duration_since(Instant::now()).min(LINGER_READ);
            if left.is_zero() {
                return;
            }
            buf.clear();
            let cap = buf.capacity();
            match monoio::time::timeout(left, self.stream.read(buf.slice_mut(0..cap))).await {
                Ok((Ok(n), slice)) if n > 0 => {
                    discarded += n;
                    buf = slice.into_inner();
                }
                // EOF, an error, or quiet for LINGER_READ: the client has stopped sending.
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendfile_starts_at_the_first_page_boundary() {
        assert_eq!(to_page_boundary(0, 65_536, 4096), 0, "a body on a page boundary: all from the file");
        assert_eq!(to_page_boundary(8192, 40_000, 4096), 0);
        assert_eq!(to_page_boundary(200, 65_536, 4096), 3896);
        assert_eq!(to_page_boundary(4095, 65_536, 4096), 1);
        assert_eq!(to_page_boundary(4097, 65_536, 4096), 4095);
        assert_eq!(to_page_boundary(200, 1000, 4096), 1000, "no boundary within: all copied");
        assert_eq!(to_page_boundary(70_000, 65_536, 65_536), 61_072, "64 KiB pages");
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v669", (6, 0)));
        assert!(kernel_at_least("6.0.0", (6, 0)));
        assert!(kernel_at_least("10.1", (6, 0)));
        assert!(!kernel_at_least("5.15.0-91-generic", (6, 0)));
        assert!(!kernel_at_least("5.10.0-28-amd64", (6, 0)));
        assert!(!kernel_at_least("", (6, 0)), "unknown: no sendfile");
        assert!(!kernel_at_least("6", (6, 0)), "no minor: no sendfile");
        assert!(kernel_at_least(&kernel_release(), (3, 0)), "this machine's: {}", kernel_release());
    }
}
