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

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, SystemTime};

use serde::Serialize;

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
#[derive(Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    #[serde(serialize_with = "display")]
    pub request_id: RequestId,
    #[serde(serialize_with = "display_or_null")]
    pub client: Option<SocketAddr>,
    pub method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    pub status: u16,
    /// Bytes of the response written to the client, head included.
    pub bytes: u64,
    pub duration_ms: f64,
    /// `None` when nothing was sent (the client went away first).
    pub ttfb_ms: Option<f64>,
    /// memory, disk-cache, store, origin, origin-unstored or edge.
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_url: Option<&'a str>,
    /// The origin's status; absent when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_status: Option<u16>,
    /// Time to the origin's response head (or to its failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_ms: Option<f64>,
    /// The S3 operation (`GetObject`, `PutObject`, ...), or `-` for a request that never parsed.
    pub s3_op: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referer: Option<Cow<'a, str>>,
    /// The request line's path and query as sent, for the combined format.
    #[serde(skip)]
    pub path: &'a [u8],
    #[serde(skip)]
    pub query: Option<&'a [u8]>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn display<S: serde::Serializer>(v: &RequestId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn display_or_null<S: serde::Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(a) => s.collect_str(a),
        None => s.serialize_none(),
    }
}

/// The log of a running node (see the module doc).
pub struct AccessLog {
    format: Format,
    target: Target,
    flush_interval: Duration,
    /// One per worker, plus one for everything else.
    buffers: Box<[Mutex<Vec<u8>>]>,
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
            buffers: (0..=workers).map(|_| Mutex::new(Vec::with_capacity(WAKE_BYTES))).collect(),
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
        if buf.len() >= MAX_BUFFERED_BYTES {
            drop(buf);
            self.dropped.inc();
            return;
        }
        let before = buf.len();
        match self.format {
            Format::Json => {
                if serde_json::to_writer(&mut *buf, entry).is_err() {
                    buf.truncate(before);
                    return;
                }
                buf.push(b'\n');
            }
            Format::Combined => combined(&mut buf, entry),
        }
        let wake = before < WAKE_BYTES && buf.len() >= WAKE_BYTES;
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
            std::mem::swap(&mut *lock(buffer), spare);
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

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// nginx's combined line. Strings are escaped as nginx's `escape=default` does: `"`, `\`,
/// control and non-ASCII bytes as `\xHH`.
fn combined(buf: &mut Vec<u8>, e: &Entry<'_>) {
    // `2026-11-26T03:04:05.678Z` -> `26/Nov/2026:03:04:05 +0000` (the node logs in UTC).
    let t = humantime::format_rfc3339_millis(e.time).to_string();
    let month = t.get(5..7).and_then(|m| m.parse::<usize>().ok()).and_then(|m| MONTHS.get(m.wrapping_sub(1)));
    match e.client {
        Some(a) => {
            let _ = write!(buf, "{}", a.ip());
        }
        None => buf.push(b'-'),
    }
    let _ = write!(buf, " - {} [", e.access_key.unwrap_or("-"));
    if let (Some(month), Some(day), Some(year), Some(time)) = (month, t.get(8..10), t.get(0..4), t.get(11..19)) {
        let _ = write!(buf, "{day}/{month}/{year}:{time} +0000");
    }
    buf.extend_from_slice(b"] \"");
    escaped(buf, e.method.as_bytes());
    buf.push(b' ');
    escaped(buf, e.path);
    if let Some(q) = e.query {
        buf.push(b'?');
        escaped(buf, q);
    }
    let _ = write!(buf, " HTTP/1.1\" {} {} \"", e.status, e.bytes);
    escaped(buf, e.referer.as_deref().unwrap_or("-").as_bytes());
    buf.extend_from_slice(b"\" \"");
    escaped(buf, e.user_agent.as_deref().unwrap_or("-").as_bytes());
    buf.extend_from_slice(b"\"\n");
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
            duration_ms: 1.5,
            ttfb_ms: Some(0.25),
            source: "origin",
            origin_url: Some("http://origin.example/dir/x"),
            origin_status: Some(200),
            origin_ms: Some(1.0),
            s3_op: "GetObject",
            access_key: None,
            user_agent: Some(Cow::Borrowed("curl/8 \"x\"")),
            referer: None,
            path: b"/b/dir/%22quoted%22%0A.txt",
            query: Some(b"x=1"),
        }
    }

    #[test]
    fn json_lines_are_json_with_every_field() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let mut buf = Vec::new();
        serde_json::to_writer(&mut buf, &entry(t)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["client"], "10.1.2.3:5555");
        assert_eq!(v["request_id"], "0000000A000100000000FF");
        assert_eq!(v["key"], "dir/\"quoted\"\n.txt");
        assert_eq!(v["status"], 200);
        assert_eq!(v["ttfb_ms"], 0.25);
        assert_eq!(v["origin_status"], 200);
        assert_eq!(v["s3_op"], "GetObject");
        assert!(v.get("access_key").is_none() && v.get("path").is_none());
    }

    #[test]
    fn combined_lines_follow_nginx() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let mut buf = Vec::new();
        combined(&mut buf, &entry(t));
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
            buffers: vec![Mutex::new(Vec::new())].into_boxed_slice(),
            out: Mutex::new(Box::new(io::sink())),
            writer: OnceLock::new(),
            reopen: AtomicBool::new(false),
            lines: Counter::default(),
            dropped: Counter::default(),
            write_failures: Counter::default(),
        };
        let e = entry(SystemTime::now());
        while lock(&log.buffers[0]).len() < MAX_BUFFERED_BYTES {
            log.record(0, &e);
        }
        let lines = log.lines.get();
        log.record(0, &e);
        assert_eq!((log.lines.get(), log.dropped.get()), (lines, 1));
        log.flush();
        assert!(lock(&log.buffers[0]).is_empty());
        log.record(0, &e);
        assert_eq!(log.lines.get(), lines + 1);
    }
}
