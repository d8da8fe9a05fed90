//! The access log: one line per request, formatted on the core that served it and written by a
//! background thread, so a slow disk (or a stdout nobody reads) never stalls a request.
//!
//! Each worker appends its lines to its own buffer ([`AccessLog::record`]; the lock is only ever
//! contended by the writer's swap). The writer thread swaps each buffer for an empty one every
//! `access_log.flush_ms` (200 ms by default), or sooner when a buffer passes `WAKE_BYTES`
//! (64 KiB), and writes what it took. When the writer falls behind and a buffer holds
//! `MAX_BUFFERED_BYTES` (8 MiB), further lines are dropped and counted (`edgemirror_access_log_dropped_total`): memory stays bounded and the
//! request path never waits on the log. Lines are in order within a core; across cores they
//! may be out of order by up to the flush interval (as with nginx's buffered per-worker logs):
//! sort by `time` where the order matters.
//!
//! Formats: JSON lines ([`Format::Json`], the default: every field of [`Entry`]) or nginx's
//! "combined" ([`Format::Combined`]). The file is opened for appending and reopened on SIGUSR1
//! ([`AccessLog::reopen`]), which is what logrotate's `postrotate` sends.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use crate::metrics::Counter;
use crate::reply::RequestId;

/// A worker's buffer this full wakes the writer at once.
const WAKE_BYTES: usize = 64 * 1024;
/// A worker's buffer this full drops further lines until the writer catches up.
const MAX_BUFFERED_BYTES: usize = 8 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $bytes_sent "$http_referer" "$http_user_agent"` (the S3 access key is the user; the bytes
    /// are the whole response's, head included, as nginx's `$bytes_sent`).
    Combined,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Combined => "combined",
        }
    }
}

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    /// Appended to; reopened by path on SIGUSR1.
    File(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `None`: no access log.
    pub target: Option<Target>,
    pub format: Format,
    /// How long a line may wait in a worker's buffer before it is written.
    pub flush_interval: Duration,
}

/// One request, as logged. Borrowed from the request and the connection's tally; formatted at
/// once into the worker's buffer.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: RequestId,
    pub client: Option<SocketAddr>,
    pub method: &'a str,
    pub bucket: Option<&'a str>,
    pub key: Option<&'a str>,
    pub status: u16,
    /// Bytes of the response written to the client, head included.
    pub bytes: u64,
    pub duration: Duration,
    /// `None` when nothing was sent (the client went away first).
    pub ttfb: Option<Duration>,
    /// memory, disk-cache, store, origin, origin-unstored or edge.
    pub source: &'a str,
    pub origin_url: Option<&'a str>,
    /// The origin's status; absent when it did not answer.
    pub origin_status: Option<u16>,
    /// Time to the origin's response head (or to its failure).
    pub origin_time: Option<Duration>,
    /// The S3 operation (`GetObject`, `PutObject`, ...), or `-` for a request that never parsed.
    pub s3_op: &'a str,
    pub access_key: Option<&'a str>,
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    /// The request line's path and query as sent, for the combined format.
    pub path: &'a [u8],
    pub query: Option<&'a [u8]>,
}

/// The log of a running node (see the module doc).
pub struct AccessLog {
    format: Format,
    target: Target,
    flush_interval: Duration,
    /// One per worker, plus one for everything else.
    buffers: Box<[Mutex<Buffer>]>,
    /// The open file (or stdout); the writer thread and [`AccessLog::flush`] write through it.
    out: Mutex<Box<dyn Write + Send>>,
    writer: OnceLock<Thread>,
    reopen: AtomicBool,
    pub lines: Counter,
    pub dropped: Counter,
    pub write_failures: Counter,
}

impl AccessLog {
    /// Opens the target and starts the writer thread; `None` when the log is off.
    pub fn start(config: &AccessLogConfig, workers: usize) -> io::Result<Option<Arc<AccessLog>>> {
        let Some(target) = config.target.clone() else { return Ok(None) };
        let out = open(&target)?;
        let log = Arc::new(AccessLog {
            format: config.format,
            target,
            flush_interval: config.flush_interval,
            buffers: (0..=workers).map(|_| Mutex::new(Buffer::default())).collect(),
            out: Mutex::new(out),
            writer: OnceLock::new(),
            reopen: AtomicBool::new(false),
            lines: Counter::default(),
            dropped: Counter::default(),
            write_failures: Counter::default(),
        });
        let for_thread = log.clone();
        let handle = std::thread::Builder::new().name("edgemirror-accesslog".into()).spawn(move || {
            for_thread.run();
        })?;
        let _ = log.writer.set(handle.thread().clone());
        Ok(Some(log))
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Appends `entry` to worker `worker`'s buffer (any other caller passes `usize::MAX`).
    pub fn record(&self, worker: usize, entry: &Entry<'_>) {
        let i = worker.min(self.buffers.len() - 1);
        let mut buf = lock(&self.buffers[i]);
        if buf.lines.len() >= MAX_BUFFERED_BYTES {
            drop(buf);
            self.dropped.inc();
            return;
        }
        let before = buf.lines.len();
        let Buffer { lines, clock } = &mut *buf;
        let time = clock.rfc3339(entry.time);
        match self.format {
            Format::Json => json(lines, time, entry),
            Format::Combined => combined(lines, time, entry),
        }
        let wake = before < WAKE_BYTES && lines.len() >= WAKE_BYTES;
        drop(buf);
        self.lines.inc();
        if wake {
            self.wake();
        }
    }

    /// Asks the writer to reopen the file by its path (after logrotate renamed it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        self.wake();
    }

    /// Writes every buffered line now (at shutdown).
    pub fn flush(&self) {
        let mut spare = Vec::new();
        self.drain(&mut spare);
    }

    fn wake(&self) {
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    fn run(&self) {
        let mut spare = Vec::with_capacity(WAKE_BYTES);
        loop {
            std::thread::park_timeout(self.flush_interval);
            if self.reopen.swap(false, Ordering::AcqRel) {
                match open(&self.target) {
                    Ok(file) => {
                        // What is buffered belongs to the file being closed.
                        self.drain(&mut spare);
                        *lock(&self.out) = file;
                        tracing::info!(target = ?self.target, "access log reopened");
                    }
                    Err(e) => tracing::error!(target = ?self.target, error = %e, "cannot reopen the access log"),
                }
            }
            self.drain(&mut spare);
        }
    }

    /// Takes each worker's lines (a swap under its lock) and writes them.
    fn drain(&self, spare: &mut Vec<u8>) {
        let mut out = lock(&self.out);
        for buffer in self.buffers.iter() {
            std::mem::swap(&mut lock(buffer).lines, spare);
            if spare.is_empty() {
                continue;
            }
            if let Err(e) = out.write_all(spare) {
                self.write_failures.inc();
                tracing::warn!(error = %e, bytes = spare.len(), "access log write failed; lines lost");
            }
            spare.clear();
        }
        let _ = out.flush();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn open(target: &Target) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => {
            let file: File = OpenOptions::new().create(true).append(true).open(path)?;
            Box::new(file)
        }
    })
}

/// A worker's lines, and the text of the millisecond its last line was stamped with.
#[derive(Default)]
struct Buffer {
    lines: Vec<u8>,
    clock: Clock,
}

/// The RFC 3339 text of a time, kept for the millisecond: at 100,000 lines a second a core
/// formats the time once per hundred lines.
#[derive(Default)]
struct Clock {
    ms: u64,
    text: [u8; 24],
}

impl Clock {
    /// `2026-11-26T03:04:05.678Z`.
    fn rfc3339(&mut self, t: SystemTime) -> &[u8] {
        let ms = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if ms != self.ms || self.text[0] == 0 {
            let mut text = [0u8; 24];
            let mut cursor = &mut text[..];
            // Always 24 bytes for years 1000-9999 (humantime's millisecond form).
            if write!(cursor, "{}", humantime::format_rfc3339_millis(t)).is_ok() && cursor.is_empty() {
                self.text = text;
                self.ms = ms;
            }
        }
        &self.text
    }
}

/// A duration in milliseconds with microseconds (`1.283`), as nginx's `$request_time` has
/// milliseconds.
fn write_ms(buf: &mut Vec<u8>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    write_int(buf, us / 1000);
    let frac = us % 1000;
    buf.extend_from_slice(&[b'.', b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
}

fn write_int(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `a.b.c.d:port` (IPv6: `[..]:port`, through std's formatting, which is slower).
fn write_addr(buf: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                write_int(buf, octet.into());
            }
            buf.push(b':');
            write_int(buf, v4.port().into());
        }
        SocketAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

/// A JSON string: the escaping is serde_json's. Bytes that are not UTF-8 (a header may hold
/// any) are replaced, as `String::from_utf8_lossy` does.
fn write_str(buf: &mut Vec<u8>, v: &[u8]) {
    // Most values need no escaping: copied as they are.
    if v.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(v);
        buf.push(b'"');
        return;
    }
    let text = String::from_utf8_lossy(v);
    if serde_json::to_writer(&mut *buf, &*text).is_err() {
        buf.extend_from_slice(b"null");
    }
}

/// One JSON object and a newline. Laid out by hand, as this is the request path's cost of
/// logging: a derived `Serialize` (times, ids and addresses through `collect_str`) took 620 ns
/// a line, this about 100 (release build, this machine). serde_json escapes every string that
/// needs it.
fn json(buf: &mut Vec<u8>, time: &[u8], e: &Entry<'_>) {
    buf.extend_from_slice(b"{\"time\":\"");
    buf.extend_from_slice(time);
    buf.extend_from_slice(b"\",\"request_id\":\"");
    buf.extend_from_slice(&e.request_id.to_hex());
    buf.extend_from_slice(b"\",\"client\":");
    match e.client {
        Some(a) => {
            buf.push(b'"');
            write_addr(buf, a);
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"method\":");
    write_str(buf, e.method.as_bytes());
    // Field names as whole byte strings: `write!` through fmt cost as much as the rest.
    for (name, value) in [(&b",\"bucket\":"[..], e.bucket), (b",\"key\":", e.key)] {
        if let Some(v) = value {
            buf.extend_from_slice(name);
            write_str(buf, v.as_bytes());
        }
    }
    buf.extend_from_slice(b",\"status\":");
    write_int(buf, e.status.into());
    buf.extend_from_slice(b",\"bytes\":");
    write_int(buf, e.bytes);
    buf.extend_from_slice(b",\"duration_ms\":");
    write_ms(buf, e.duration);
    buf.extend_from_slice(b",\"ttfb_ms\":");
    match e.ttfb {
        Some(t) => write_ms(buf, t),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"source\":");
    write_str(buf, e.source.as_bytes());
    if let Some(url) = e.origin_url {
        buf.extend_from_slice(b",\"origin_url\":");
        write_str(buf, url.as_bytes());
    }
    if let Some(status) = e.origin_status {
        buf.extend_from_slice(b",\"origin_status\":");
        write_int(buf, status.into());
    }
    if let Some(t) = e.origin_time {
        buf.extend_from_slice(b",\"origin_ms\":");
        write_ms(buf, t);
    }
    buf.extend_from_slice(b",\"s3_op\":");
    write_str(buf, e.s3_op.as_bytes());
    let optional = [
        (&b",\"access_key\":"[..], e.access_key.map(str::as_bytes)),
        (b",\"user_agent\":", e.user_agent),
        (b",\"referer\":", e.referer),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            buf.extend_from_slice(name);
            write_str(buf, v);
        }
    }
    buf.extend_from_slice(b"}\n");
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// nginx's combined line. Strings are escaped as nginx's `escape=default` does: `"`, `\`,
/// control and non-ASCII bytes as `\xHH`.
fn combined(buf: &mut Vec<u8>, time: &[u8], e: &Entry<'_>) {
    // `2026-11-26T03:04:05.678Z` -> `26/Nov/2026:03:04:05 +0000` (the node logs in UTC).
    let field = |r: std::ops::Range<usize>| time.get(r).and_then(|b| std::str::from_utf8(b).ok());
    let month = field(5..7).and_then(|m| m.parse::<usize>().ok()).and_then(|m| MONTHS.get(m.wrapping_sub(1)));
    match e.client {
        Some(SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                write_int(buf, octet.into());
            }
        }
        Some(a) => {
            let _ = write!(buf, "{}", a.ip());
        }
        None => buf.push(b'-'),
    }
    buf.extend_from_slice(b" - ");
    buf.extend_from_slice(e.access_key.unwrap_or("-").as_bytes());
    buf.extend_from_slice(b" [");
    if let (Some(month), Some(day), Some(year), Some(clock)) = (month, field(8..10), field(0..4), field(11..19)) {
        for part in [day, "/", month, "/", year, ":", clock, " +0000"] {
            buf.extend_from_slice(part.as_bytes());
        }
    }
    buf.extend_from_slice(b"] \"");
    escaped(buf, e.method.as_bytes());
    buf.push(b' ');
    escaped(buf, e.path);
    if let Some(q) = e.query {
        buf.push(b'?');
        escaped(buf, &redact_query(q));
    }
    buf.extend_from_slice(b" HTTP/1.1\" ");
    write_int(buf, e.status.into());
    buf.push(b' ');
    write_int(buf, e.bytes);
    buf.extend_from_slice(b" \"");
    escaped(buf, e.referer.unwrap_or(b"-"));
    buf.extend_from_slice(b"\" \"");
    escaped(buf, e.user_agent.unwrap_or(b"-"));
    buf.extend_from_slice(b"\"\n");
}

/// Query parameters that are credentials (presigned URLs, SigV2 and SigV4, OSS): their values
/// are logged as `REDACTED`.
const SECRET_PARAMS: [&str; 6] =
    ["x-amz-signature", "x-amz-credential", "x-amz-security-token", "signature", "awsaccesskeyid", "ossaccesskeyid"];

/// `query` with the values of [`SECRET_PARAMS`] replaced (names compared without case).
pub fn redact_query(query: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let secret = |param: &[u8]| {
        let name = param.split(|&b| b == b'=').next().unwrap_or_default();
        SECRET_PARAMS.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(name)) && param.contains(&b'=')
    };
    if !query.split(|&b| b == b'&').any(secret) {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut out = Vec::with_capacity(query.len());
    for (i, param) in query.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        match param.iter().position(|&b| b == b'=').filter(|_| secret(param)) {
            Some(eq) => {
                out.extend_from_slice(&param[..=eq]);
                out.extend_from_slice(b"REDACTED");
            }
            None => out.extend_from_slice(param),
        }
    }
    std::borrow::Cow::Owned(out)
}

fn escaped(buf: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(buf, "\\x{b:02X}");
        } else {
            buf.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: SystemTime) -> Entry<'static> {
        Entry {
            time,
            request_id: RequestId { epoch: 10, worker: 1, seq: 255 },
            client: Some("10.1.2.3:5555".parse().unwrap()),
            method: "GET",
            bucket: Some("b"),
            key: Some("dir/\"quoted\"\n.txt"),
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(1_500),
            ttfb: Some(Duration::from_micros(250)),
            source: "origin",
            origin_url: Some("http://origin.example/dir/x"),
            origin_status: Some(200),
            origin_time: Some(Duration::from_micros(1_000_001)),
            s3_op: "GetObject",
            access_key: None,
            user_agent: Some(b"curl/8 \"x\""),
            referer: None,
            path: b"/b/dir/%22quoted%22%0A.txt",
            query: Some(b"x=1"),
        }
    }

    fn json_of(e: &Entry<'_>) -> serde_json::Value {
        let mut buf = Vec::new();
        json(&mut buf, Clock::default().rfc3339(e.time), e);
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&buf).unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&buf)))
    }

    #[test]
    fn json_lines_are_json_with_every_field() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let v = json_of(&entry(t));
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["client"], "10.1.2.3:5555");
        assert_eq!(v["request_id"], "0000000A000100000000FF");
        assert_eq!(v["key"], "dir/\"quoted\"\n.txt");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["ttfb_ms"], 0.25);
        assert_eq!(v["origin_ms"], 1000.001);
        assert_eq!(v["origin_status"], 200);
        assert_eq!(v["s3_op"], "GetObject");
        assert_eq!(v["user_agent"], "curl/8 \"x\"");
        assert!(v.get("access_key").is_none() && v.get("path").is_none() && v.get("referer").is_none());
        let mut bare = entry(t);
        (bare.client, bare.ttfb, bare.bucket, bare.key, bare.origin_url) = (None, None, None, None, None);
        let v = json_of(&bare);
        assert!(v["client"].is_null() && v["ttfb_ms"].is_null() && v.get("bucket").is_none(), "{v}");
    }

    #[test]
    fn any_key_or_header_bytes_give_a_json_line_that_reads_back() {
        // Every byte value, escapes, quotes, multi-byte UTF-8, and bytes that are not UTF-8.
        let all: Vec<u8> = (0..=255u8).collect();
        let texts: [&[u8]; 5] = [&all, b"\"\\\n\r\t\x00\x1f\x7f", "é€😀".as_bytes(), b"\xff\xfe ok", b""];
        for bytes in texts {
            let text = String::from_utf8_lossy(bytes).into_owned();
            let mut e = entry(SystemTime::now());
            (e.key, e.user_agent, e.referer) = (Some(text.as_str()), Some(bytes), Some(bytes));
            let v = json_of(&e);
            assert_eq!(v["key"], text.as_str());
            assert_eq!(v["user_agent"], text.as_str());
            assert_eq!(v["referer"], text.as_str());
        }
    }

    #[test]
    fn the_clock_formats_once_per_millisecond_and_right_at_each() {
        let mut clock = Clock::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(clock.rfc3339(base), b"2026-11-18T11:06:40.123Z");
        assert_eq!(clock.rfc3339(base + Duration::from_micros(999)), b"2026-11-18T11:06:40.123Z");
        assert_eq!(clock.rfc3339(base + Duration::from_millis(1)), b"2026-11-18T11:06:40.124Z");
        assert_eq!(clock.rfc3339(base + Duration::from_secs(86_400)), b"2026-11-19T11:06:40.123Z");
    }

    #[test]
    fn credentials_in_queries_are_redacted() {
        let q = b"X-Amz-Algorithm=AWS4&X-Amz-Credential=AK%2F2026&x-amz-signature=abc&partNumber=2&Signature";
        assert_eq!(
            &*redact_query(q),
            &b"X-Amz-Algorithm=AWS4&X-Amz-Credential=REDACTED&x-amz-signature=REDACTED&partNumber=2&Signature"[..]
        );
        assert!(matches!(redact_query(b"a=1&b=2"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn combined_lines_follow_nginx() {
        let e = entry(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123));
        let mut buf = Vec::new();
        combined(&mut buf, Clock::default().rfc3339(e.time), &e);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "10.1.2.3 - - [18/Nov/2026:11:06:40 +0000] \"GET /b/dir/%22quoted%22%0A.txt?x=1 HTTP/1.1\" 200 1234 \
             \"-\" \"curl/8 \\x22x\\x22\"\n"
        );
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let log = AccessLog {
            format: Format::Json,
            target: Target::Stdout,
            flush_interval: Duration::from_millis(200),
            buffers: vec![Mutex::new(Buffer::default())].into_boxed_slice(),
            out: Mutex::new(Box::new(io::sink())),
            writer: OnceLock::new(),
            reopen: AtomicBool::new(false),
            lines: Counter::default(),
            dropped: Counter::default(),
            write_failures: Counter::default(),
        };
        let e = entry(SystemTime::now());
        while lock(&log.buffers[0]).lines.len() < MAX_BUFFERED_BYTES {
            log.record(0, &e);
        }
        let lines = log.lines.get();
        log.record(0, &e);
        assert_eq!((log.lines.get(), log.dropped.get()), (lines, 1));
        log.flush();
        assert!(lock(&log.buffers[0]).lines.is_empty());
        log.record(0, &e);
        assert_eq!(log.lines.get(), lines + 1);
    }
}
