//! The miss path (`--cold`): C concurrent GETs of one not-yet-cached key, sent at once.
//!
//! Each round: open C connections (not timed), take `t0`, then send the same request on all of
//! them in one go (the tasks are spawned back to back on one runtime, so the C writes reach the
//! kernel within one submission batch). Per request it records the time from `t0` to the first
//! response byte (TTFB) and to the last body byte; per round, the time until the last request
//! finished. Round r asks for key `r % keys` (with `--url-template` and `--keys R`, every round
//! is a fresh key). With C = 1 this is the latency of one miss; with C = 1000 it shows whether
//! the server coalesces concurrent misses (count the origin's requests, or `--count-header`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};

use crate::conn::{Conn, Failure, Tags};
use crate::load::{block_on, Driver};
use crate::stats::{new_histogram, Stats};

pub struct ColdConfig {
    pub addr: SocketAddr,
    pub requests: &'static [&'static [u8]],
    pub concurrency: usize,
    pub rounds: usize,
    /// Untimed wait after each round.
    pub pause: Duration,
    pub timeout: Duration,
    pub read_bytes: usize,
    pub count_header: Option<String>,
    pub driver: Driver,
}

/// One request of a round.
pub struct ColdRequest {
    pub round: usize,
    pub status: Option<u16>,
    pub failure: Option<Failure>,
    pub ttfb: Option<Duration>,
    pub total: Duration,
    pub body_bytes: u64,
    pub tag: Option<String>,
    /// When the round's requests were sent (wall clock), to line a slow one up with what the
    /// server or the machine logged at that moment.
    pub sent: SystemTime,
}

pub struct ColdResult {
    /// `latency` holds the time to the last byte, `ttfb` the time to the first, both from `t0`.
    pub stats: Stats,
    /// Per round: time from `t0` until the last of its requests ended (ok or not).
    pub last_finish: hdrhistogram::Histogram<u64>,
    pub requests: Vec<ColdRequest>,
}

pub fn run(cfg: &ColdConfig) -> Result<ColdResult> {
    block_on(cfg.driver, cfg.concurrency, run_rounds(cfg))?
}

async fn run_rounds(cfg: &ColdConfig) -> Result<ColdResult> {
    let tags = Rc::new(cfg.count_header.as_deref().map(Tags::new));
    let mut stats = Stats::default();
    let mut last_finish = new_histogram();
    let mut all = Vec::with_capacity(cfg.rounds * cfg.concurrency);
    for round in 0..cfg.rounds {
        let request = cfg.requests[round % cfg.requests.len()];

        let connecting: Vec<_> = (0..cfg.concurrency)
            .map(|_| {
                let (addr, read_bytes, timeout) = (cfg.addr, cfg.read_bytes, cfg.timeout);
                monoio::spawn(async move {
                    match monoio::time::timeout(timeout, Conn::connect(addr, read_bytes)).await {
                        Ok(r) => r,
                        Err(_) => Err(Failure::Timeout),
                    }
                })
            })
            .collect();
        let mut conns = Vec::with_capacity(cfg.concurrency);
        for c in connecting {
            match c.await {
                Ok(conn) => conns.push(conn),
                Err(f) => {
                    stats.fail(f);
                    all.push(ColdRequest {
                        round,
                        status: None,
                        failure: Some(f),
                        ttfb: None,
                        total: Duration::ZERO,
                        body_bytes: 0,
                        tag: None,
                        sent: SystemTime::now(),
                    });
                }
            }
        }

        let (t0, sent) = (Instant::now(), SystemTime::now());
        let running: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let tags = tags.clone();
                let timeout = cfg.timeout;
                monoio::spawn(async move {
                    let r = monoio::time::timeout(timeout, conn.exchange(request, (*tags).as_ref())).await;
                    let done = Instant::now();
                    let r = match r {
                        Ok(r) => r,
                        Err(_) => Err(Failure::Timeout),
                    };
                    (r, done)
                })
            })
            .collect();
        let mut last = t0;
        for task in running {
            let (r, done) = task.await;
            last = last.max(done);
            let total = done.duration_since(t0);
            let mut req =
                ColdRequest { round, status: None, failure: None, ttfb: None, total, body_bytes: 0, tag: None, sent };
            match r {
                Ok(resp) => {
                    let ttfb = resp.first_byte.saturating_duration_since(t0);
                    stats.record(&resp, total.as_nanos() as u64);
                    stats.ttfb.saturating_record((ttfb.as_nanos() as u64).max(1));
                    req.status = Some(resp.status);
                    req.ttfb = Some(ttfb);
                    req.body_bytes = resp.body_bytes;
                    if let Some(t) = (*tags).as_ref() {
                        match resp.tag {
                            Some(i) => {
                                let v = t.value(i);
                                *stats.tags.entry(v.clone()).or_default() += 1;
                                req.tag = Some(v);
                            }
                            None => stats.untagged += 1,
                        }
                    }
                }
                Err(f) => {
                    stats.fail(f);
                    req.failure = Some(f);
                }
            }
            all.push(req);
        }
        last_finish.saturating_record((last.duration_since(t0).as_nanos() as u64).max(1));
        if !cfg.pause.is_zero() {
            monoio::time::sleep(cfg.pause).await;
        }
    }
    Ok(ColdResult { stats, last_finish, requests: all })
}

/// Writes every request as CSV: round, status, failure, ttfb_us, total_us, body_bytes, tag,
/// sent_unix_us (when its round was sent, microseconds since the Unix epoch).
pub fn write_csv(path: &std::path::Path, result: &ColdResult) -> Result<()> {
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    writeln!(out, "round,status,failure,ttfb_us,total_us,body_bytes,tag,sent_unix_us")?;
    for r in &result.requests {
        writeln!(
            out,
            "{},{},{},{},{:.1},{},{},{}",
            r.round,
            r.status.map(|s| s.to_string()).unwrap_or_default(),
            r.failure.map(Failure::as_str).unwrap_or(""),
            r.ttfb.map(|t| format!("{:.1}", t.as_secs_f64() * 1e6)).unwrap_or_default(),
            r.total.as_secs_f64() * 1e6,
            r.body_bytes,
            r.tag.as_deref().unwrap_or(""),
            r.sent.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros()),
        )?;
    }
    out.flush()?;
    Ok(())
}
