//! A real HTTP/1.1 origin server whose behaviour is scripted per path, able to misbehave on cue.
//!
//! The node's mirror path has to survive origins that are slow, truncate bodies, chunk them
//! oddly, close-delimit them, answer 5xx or redirect. This server produces each of those from a
//! [`Reply`] script, byte for byte, on a real socket, and records every request it receives so a
//! test can assert what the node sent upstream (target, Host, forwarded headers, how often).
//!
//! Shape: one accept thread, one thread per connection (keep-alive and pipelining handled by a
//! per-connection read buffer). Requests are recorded as soon as their head is parsed, before
//! any scripted delay, so a test can see "the node asked" even while the reply is still pending.
//!
//! Stopping ([`Origin::stop`] or drop) closes the listener (new connects are refused, which
//! tests use as "the origin is gone"), shuts down every open connection, and makes in-progress
//! scripted delays end early, so no reply keeps trickling out after a test stopped the origin.
//! A stopped origin keeps its port closed but held ([`ClosedPort::hold`]) until it is dropped,
//! so a node a test restarts on `127.0.0.1:0` cannot be given the port its rules point at.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::ClosedPort;

/// An idle keep-alive connection is dropped after this long; longer than any test's pause
/// between requests, short enough that leaked threads go away.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Request heads larger than this get a 431 and a close.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The raw request target, including any query string, exactly as sent.
    pub path: String,
    /// Header names as sent (case kept), values trimmed, wire order.
    pub headers: Vec<(String, String)>,
    /// Which accepted connection carried it (0, 1, ...): lets tests observe connection reuse.
    pub conn_id: u64,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// How the body is framed on the wire.
#[derive(Clone, Debug)]
enum Framing {
    /// `Content-Length: body.len()`.
    Length,
    /// `Transfer-Encoding: chunked`; the pieces are the chunks.
    Chunked,
    /// No Content-Length, no Transfer-Encoding; the connection closes after the body.
    CloseDelimited,
}

/// A scripted answer for one path. Build with a constructor, adjust with `with_*` setters.
///
/// ```ignore
/// Reply::ok(b"hello").with_header("Content-Type", "text/plain")
/// Reply::chunked(body, &[10, 100, 4096]).with_piece_delay(Duration::from_millis(50))
/// Reply::ok(body).with_pieces(&[10], Duration::from_millis(1500)) // 10 bytes, pause, the rest
/// Reply::truncated(body, 50_000)                                  // CL = body.len(), 50 000 sent
/// Reply::status(500)
/// ```
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framing: Framing,
    /// Send only this many body bytes, then close: the framing still announces the whole body
    /// (Content-Length, or chunks with no terminating `0` chunk).
    cut_after: Option<usize>,
    /// Pause between reading the request and writing the status line.
    head_delay: Duration,
    /// Sizes of the body pieces written separately; whatever the sizes leave over goes out as
    /// one final piece. For chunked replies each piece is one chunk.
    pieces: Vec<usize>,
    /// Pause between pieces (not before the first one).
    piece_delay: Duration,
}

impl Reply {
    /// 200 with a Content-Length body.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            framing: Framing::Length,
            cut_after: None,
            head_delay: Duration::ZERO,
            pieces: Vec::new(),
            piece_delay: Duration::ZERO,
        }
    }

    /// A status with an empty body (`Content-Length: 0`): 404, 500, 503...
    pub fn status(status: u16) -> Reply {
        Reply::ok(Vec::new()).with_status(status)
    }

    /// A redirect (`301`, `302`, `307`...) to `location`, empty body.
    pub fn redirect(status: u16, location: &str) -> Reply {
        Reply::status(status).with_header("Location", location)
    }

    /// 200 with `Transfer-Encoding: chunked`, the body cut into chunks of `chunk_sizes` (the
    /// remainder, if any, as a last chunk).
    pub fn chunked(body: impl Into<Vec<u8>>, chunk_sizes: &[usize]) -> Reply {
        let mut reply = Reply::ok(body);
        reply.framing = Framing::Chunked;
        reply.pieces = chunk_sizes.to_vec();
        reply
    }

    /// 200 whose body is delimited by closing the connection (HTTP/1.0 style).
    pub fn close_delimited(body: impl Into<Vec<u8>>) -> Reply {
        let mut reply = Reply::ok(body);
        reply.framing = Framing::CloseDelimited;
        reply
    }

    /// 200 announcing `Content-Length: body.len()` but sending only the first `sent` bytes, then
    /// closing: the classic origin failure mid-body.
    pub fn truncated(body: impl Into<Vec<u8>>, sent: usize) -> Reply {
        Reply::ok(body).with_cut_after(sent)
    }

    /// Closes the connection after `sent` body bytes, whatever the framing: with chunked
    /// framing the chunks stop mid-stream and the terminating `0` chunk never comes.
    pub fn with_cut_after(mut self, sent: usize) -> Reply {
        assert!(sent < self.body.len(), "a cut reply must send fewer bytes than it announces");
        self.cut_after = Some(sent);
        self
    }

    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Adds a response header (sent after the framing header).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Waits `delay` before sending anything: exercises the node's first-byte timeout.
    pub fn with_head_delay(mut self, delay: Duration) -> Reply {
        self.head_delay = delay;
        self
    }

    /// Sends the body in pieces of `sizes` (then the remainder) with `delay` between pieces.
    /// The head goes out with no delay, immediately followed by the first piece.
    pub fn with_pieces(mut self, sizes: &[usize], delay: Duration) -> Reply {
        self.pieces = sizes.to_vec();
        self.piece_delay = delay;
        self
    }

    /// Sends the whole body in `piece_size` pieces, `delay` apart: a slow, steady origin.
    pub fn with_paced(self, piece_size: usize, delay: Duration) -> Reply {
        assert!(piece_size > 0);
        let count = self.body.len() / piece_size;
        let sizes = vec![piece_size; count];
        self.with_pieces(&sizes, delay)
    }

    /// Delay between pieces (chunks, for a chunked reply) without changing the piece sizes.
    pub fn with_piece_delay(mut self, delay: Duration) -> Reply {
        self.piece_delay = delay;
        self
    }

    /// The body this reply announces (for truncated replies, the full announced body).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Body pieces as byte ranges, per `pieces` plus the remainder.
    fn piece_ranges(&self, len: usize) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for &size in &self.pieces {
            if start >= len {
                break;
            }
            let end = (start + size).min(len);
            ranges.push(start..end);
            start = end;
        }
        if start < len {
            ranges.push(start..len);
        }
        ranges
    }
}

/// State shared by the handle, the accept thread and the connection threads.
struct Shared {
    replies: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<RecordedRequest>>,
    stopped: AtomicBool,
    /// Clones of open connections, so `stop` can shut them down.
    conns: Mutex<Vec<TcpStream>>,
    next_conn_id: AtomicU64,
}

impl Shared {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Sleeps `d` in small steps; false if the origin was stopped meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while !self.is_stopped() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(20)));
        }
        false
    }
}

/// The running origin; dropping it stops it.
pub struct Origin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
    /// After [`Origin::stop`]: the origin's port, closed but held, so connects are still refused
    /// and the kernel hands the port to no one else while the test runs.
    port_hold: Mutex<Option<ClosedPort>>,
}

impl Origin {
    /// Binds `127.0.0.1:0` and starts serving. Unscripted paths answer 404.
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("origin: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("origin: local_addr");
        let shared = Arc::new(Shared {
            replies: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            next_conn_id: AtomicU64::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("origin-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("origin: spawn accept thread");
        Origin { addr, shared, accept_thread: Mutex::new(Some(accept_thread)), port_hold: Mutex::new(None) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts the answer for `path`: the exact request target is tried first, then the target
    /// without its query string. Replaces any earlier script for that path.
    pub fn set(&self, path: &str, reply: Reply) {
        self.shared.replies.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests had exactly this target (or this path, ignoring the query).
    pub fn count(&self, path: &str) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.path == path || strip_query(&r.path) == path).count()
    }

    /// Stops the server now (idempotent): refuses new connections and cuts open ones.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        let handle = self.accept_thread.lock().unwrap().take();
        if let Some(handle) = handle {
            // The accept thread is blocked in accept(); a throwaway connect wakes it so it can
            // see the flag and drop the listener. A failed connect means it is already gone.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = handle.join();
        }
        for conn in self.shared.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let mut hold = self.port_hold.lock().unwrap();
        if hold.is_none() {
            *hold = ClosedPort::hold(self.addr);
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.is_stopped() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            shared.conns.lock().unwrap().push(clone);
        }
        let conn_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new().name(format!("origin-conn-{conn_id}")).spawn(move || {
            // An I/O error just means the node went away; nothing to report.
            let _ = serve_connection(stream, conn_id, &conn_shared);
        });
        if spawned.is_err() {
            // Out of threads: the node will see a reset, which is a fair origin failure.
            continue;
        }
    }
    // Dropping the listener here is what makes later connects fail with "refused".
}

/// Serves requests on one connection until the peer closes, a reply closes it, or stop.
fn serve_connection(mut stream: TcpStream, conn_id: u64, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    // Pieces must leave when written: timing tests rely on the first piece not waiting for Nagle.
    stream.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let Some(head_end) = read_request_head(&mut stream, &mut buf, shared)? else {
            return Ok(());
        };
        let head: Vec<u8> = buf.drain(..head_end).collect();
        let Some(request) = parse_request(&head, conn_id) else {
            write_simple(&mut stream, 400, "bad request\n")?;
            return Ok(());
        };
        // Request bodies are not expected from the node (it only GETs), but stay in sync if one
        // comes so a keep-alive connection does not misparse the next request.
        let body_len: usize = request.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if request.header("transfer-encoding").is_some() {
            write_simple(&mut stream, 501, "chunked request bodies are not supported\n")?;
            return Ok(());
        }
        while buf.len() < body_len {
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..body_len);

        let wants_close = request.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let is_head = request.method == "HEAD";
        let reply = {
            let replies = shared.replies.lock().unwrap();
            replies.get(&request.path).or_else(|| replies.get(strip_query(&request.path))).cloned()
        };
        shared.requests.lock().unwrap().push(request);

        let reply = reply.unwrap_or_else(|| Reply::ok(b"not scripted\n".to_vec()).with_status(404));
        let keep_open = write_reply(&mut stream, &reply, is_head, wants_close, shared)?;
        if !keep_open {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// Reads until `buf` holds a full request head; returns its length, or None on EOF/stop.
fn read_request_head(stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> io::Result<Option<usize>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(pos + 4));
        }
        if buf.len() > MAX_REQUEST_HEAD_BYTES {
            write_simple(stream, 431, "request head too large\n")?;
            return Ok(None);
        }
        if shared.is_stopped() {
            return Ok(None);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn parse_request(head: &[u8], conn_id: u64) -> Option<RecordedRequest> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let version = parts.next()?;
    if method.is_empty() || path.is_empty() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Some(RecordedRequest { method, path, headers, conn_id })
}

/// Writes `reply`; returns whether the connection may carry another request.
fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    is_head: bool,
    wants_close: bool,
    shared: &Shared,
) -> io::Result<bool> {
    if !shared.sleep(reply.head_delay) {
        return Ok(false);
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    match reply.framing {
        Framing::Length => {
            head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
        }
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::CloseDelimited => {}
    }
    let closes = wants_close || reply.cut_after.is_some() || matches!(reply.framing, Framing::CloseDelimited);
    if closes {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if is_head {
        return Ok(!closes);
    }

    let sent_len = reply.cut_after.unwrap_or(reply.body.len());
    let chunked = matches!(reply.framing, Framing::Chunked);
    for (i, range) in reply.piece_ranges(sent_len).into_iter().enumerate() {
        if i > 0 && !shared.sleep(reply.piece_delay) {
            return Ok(false);
        }
        let piece = &reply.body[range];
        if chunked {
            // Head of the chunk, data and CRLF in one write so a chunk is never split by a pause.
            let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
            stream.write_all(&out)?;
        } else {
            stream.write_all(piece)?;
        }
    }
    if chunked && reply.cut_after.is_none() {
        stream.write_all(b"0\r\n\r\n")?;
    }
    stream.flush()?;
    Ok(!closes)
}

/// A minimal response for the origin's own protocol errors.
fn write_simple(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    stream.write_all(out.as_bytes())
}

fn strip_query(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}
