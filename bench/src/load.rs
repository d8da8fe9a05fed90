//! The steady-state run: N keep-alive connections, each a closed loop (send, read the whole
//! response, send the next), spread over a few runtime threads, for a warm-up then a measured
//! window.
//!
//! Design: `--threads` OS threads (default 1), each a monoio runtime running one task per
//! connection. The runtime uses epoll by default ([`Driver`]): on this loopback workload an
//! io_uring client made the *servers* slower (nginx 1 KiB: 54-64k req/s with an io_uring client,
//! 74-77k with epoll, 72-75k with wrk; edgemirror 1 KiB: 102k vs 121-127k vs 121-138k), so
//! epoll is what lets the figure be the server's. A thread's state lives in one [`ThreadCtx`] shared by its tasks through `Rc`: no locks, no
//! atomics on the hot path (except the shared request counter under `--requests`).
//!
//! What is counted: a response whose last byte arrives inside the measured window
//! `[start + warmup, start + warmup + duration]`; its latency is from just before the request
//! write to the last body byte. A connection that fails is counted (by kind) and replaced. Being
//! a closed loop, latency under overload is the server's queueing as seen by N clients, not an
//! open-loop arrival process (no coordinated-omission correction).
//!
//! With `--rate`, requests are due at a fixed rate instead ([`Schedule`], as wrk2 does): a
//! connection takes the next due time, waits for it, and the latency counts from it, so a
//! request that waited for a free connection behind a slow server is charged for that wait.
//! Servers can then be compared at the same offered load.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::conn::{Conn, Failure, Tags};
use crate::mix::{Mix, MixTable, Picker};
use crate::stats::Stats;

/// Pause after a failed connect before the next try, so a dead server is not a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

pub struct LoadConfig {
    pub addr: SocketAddr,
    pub requests: &'static [&'static [u8]],
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Stop after this many requests in total (the window then runs from the start).
    pub max_requests: Option<u64>,
    pub mix: Mix,
    pub seed: u64,
    pub count_header: Option<String>,
    pub timeout: Duration,
    pub read_bytes: usize,
    pub driver: Driver,
    /// Open loop: requests due per second, in all ([`Schedule`]).
    pub rate: Option<f64>,
}

/// When each request of an open-loop thread is due: every `interval` from `first`.
struct Schedule {
    first: Instant,
    interval: Duration,
    next: Cell<u64>,
}

impl Schedule {
    fn new(first: Instant, per_second: f64) -> Schedule {
        Schedule { first, interval: Duration::from_secs_f64(1.0 / per_second), next: Cell::new(0) }
    }

    /// The due time of the next request.
    fn take(&self) -> Instant {
        let n = self.next.get();
        self.next.set(n + 1);
        self.first + self.interval.mul_f64(n as f64)
    }
}

pub struct LoadResult {
    pub stats: Stats,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// CPU time emload itself used during the window (user + system, all threads), when known.
    pub cpu: Option<Duration>,
}

/// This process's CPU time so far, from `/proc/self/stat` (utime + stime, in clock ticks of
/// 1/100 s: USER_HZ is 100 on Linux).
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The monoio driver of the load threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// Readiness (epoll): the default, see the module docs for why.
    Epoll,
    /// io_uring (falls back to epoll where the kernel lacks it).
    IoUring,
}

impl Driver {
    /// What will actually run.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::IoUring if monoio::utils::detect_uring() => "io_uring",
            _ => "epoll",
        }
    }
}

/// Builds a runtime sized for `connections` in-flight operations and runs `f` on it.
pub fn block_on<F: std::future::Future>(driver: Driver, connections: usize, f: F) -> Result<F::Output> {
    match driver {
        Driver::IoUring => {
            // Each connection has at most one read or write in flight, plus its timer.
            let entries = (connections * 2).next_power_of_two().clamp(256, 32768) as u32;
            let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .with_entries(entries)
                .build()
                .context("building an io_uring runtime")?;
            Ok(rt.block_on(f))
        }
        Driver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .context("building an epoll runtime")?;
            Ok(rt.block_on(f))
        }
    }
}

struct ThreadCtx {
    addr: SocketAddr,
    requests: &'static [&'static [u8]],
    picker: RefCell<Picker>,
    tags: Option<Tags>,
    /// Counts per interned tag index, inside the window only.
    tag_counts: RefCell<Vec<u64>>,
    stats: RefCell<Stats>,
    measure_from: Instant,
    end: Instant,
    limit: Option<(Arc<AtomicU64>, u64)>,
    timeout: Duration,
    read_bytes: usize,
    last_done: Cell<Instant>,
    schedule: Option<Schedule>,
}

impl ThreadCtx {
    /// The next request to send and the time its latency counts from (when it is due, open
    /// loop; now, closed loop), or `None` when the run is over.
    fn next_request(&self) -> Option<(&'static [u8], Instant)> {
        let now = self.schedule.as_ref().map_or_else(Instant::now, Schedule::take);
        if now >= self.end {
            return None;
        }
        if let Some((issued, max)) = &self.limit {
            if issued.fetch_add(1, Ordering::Relaxed) >= *max {
                return None;
            }
        }
        let k = self.picker.borrow_mut().next_key();
        Some((self.requests[k], now))
    }

    fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_from && t <= self.end
    }
}

pub fn run(cfg: &LoadConfig) -> Result<LoadResult> {
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let table = Arc::new(MixTable::new(cfg.mix, cfg.requests.len() as u64));
    let start = Instant::now();
    let (measure_from, end) = match cfg.max_requests {
        Some(_) => (start, start + cfg.duration),
        None => (start + cfg.warmup, start + cfg.warmup + cfg.duration),
    };
    let limit = cfg.max_requests.map(|n| (Arc::new(AtomicU64::new(0)), n));

    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let conns = cfg.connections / threads + usize::from(t < cfg.connections % threads);
        let table = table.clone();
        let limit = limit.clone();
        let addr = cfg.addr;
        let requests = cfg.requests;
        let count_header = cfg.count_header.clone();
        let seed = cfg.seed.wrapping_add((t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (timeout, read_bytes, driver) = (cfg.timeout, cfg.read_bytes, cfg.driver);
        // Each thread its share of the rate, its first request due a little apart from the others'.
        let schedule = cfg
            .rate
            .map(|r| r / threads as f64)
            .map(|r| move || Schedule::new(start + Duration::from_secs_f64(t as f64 / r / threads as f64), r));
        let handle = std::thread::Builder::new()
            .name(format!("emload-{t}"))
            .spawn(move || -> Result<(Stats, Instant)> {
                let ctx = Rc::new(ThreadCtx {
                    addr,
                    requests,
                    picker: RefCell::new(Picker::new(table, seed)),
                    tags: count_header.as_deref().map(Tags::new),
                    tag_counts: RefCell::new(Vec::new()),
                    stats: RefCell::new(Stats::default()),
                    measure_from,
                    end,
                    limit,
                    timeout,
                    read_bytes,
                    last_done: Cell::new(start),
                    schedule: schedule.map(|s| s()),
                });
                let c = ctx.clone();
                block_on(driver, conns, async move {
                    let tasks: Vec<_> = (0..conns).map(|_| monoio::spawn(connection_loop(c.clone()))).collect();
                    for t in tasks {
                        t.await;
                    }
                })?;
                let ctx = Rc::try_unwrap(ctx).map_err(|_| anyhow::anyhow!("a connection task outlived its runtime"))?;
                let mut stats = ctx.stats.into_inner();
                if let Some(tags) = &ctx.tags {
                    for (i, n) in ctx.tag_counts.into_inner().into_iter().enumerate() {
                        if n > 0 {
                            *stats.tags.entry(tags.value(i)).or_default() += n;
                        }
                    }
                }
                Ok((stats, ctx.last_done.get()))
            })
            .context("spawning a load thread")?;
        handles.push(handle);
    }

    // The main thread only waits: it samples emload's CPU time at the window's edges, so the
    // report can say whether the generator itself was near a full core.
    let cpu = match cfg.max_requests {
        Some(_) => None,
        None => {
            std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
            let before = process_cpu_time();
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            let after = process_cpu_time();
            before.zip(after).map(|(b, a)| a.saturating_sub(b))
        }
    };

    let mut stats = Stats::default();
    let mut last_done = start;
    for h in handles {
        let (s, done) = h.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        stats.merge(&s);
        last_done = last_done.max(done);
    }
    let elapsed = match cfg.max_requests {
        Some(_) => last_done.saturating_duration_since(start),
        None => cfg.duration,
    };
    Ok(LoadResult { stats, elapsed, cpu })
}

async fn connection_loop(ctx: Rc<ThreadCtx>) {
    'connect: loop {
        if Instant::now() >= ctx.end {
            return;
        }
        let mut conn = match monoio::time::timeout(ctx.timeout, Conn::connect(ctx.addr, ctx.read_bytes)).await {
            Ok(Ok(c)) => c,
            Ok(Err(f)) => {
                ctx.stats.borrow_mut().fail(f);
                monoio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(_) => {
                ctx.stats.borrow_mut().fail(Failure::Timeout);
                continue;
            }
        };
        loop {
            let Some((request, t0)) = ctx.next_request() else {
                return;
            };
            // Open loop: not before it is due.
            if let Some(wait) = t0.checked_duration_since(Instant::now()) {
                monoio::time::sleep(wait).await;
            }
            // A timeout drops the exchange mid-way, and the connection with it.
            let res = monoio::time::timeout(ctx.timeout, conn.exchange(request, ctx.tags.as_ref())).await;
            let t1 = Instant::now();
            ctx.last_done.set(ctx.last_done.get().max(t1));
            let counted = ctx.in_window(t1);
            match res {
                Ok(Ok(resp)) => {
                    if counted {
                        let ns = t1.duration_since(t0).as_nanos() as u64;
                        ctx.stats.borrow_mut().record(&resp, ns);
                        match resp.tag {
                            Some(i) => {
                                let mut counts = ctx.tag_counts.borrow_mut();
                                if counts.len() <= i {
                                    counts.resize(i + 1, 0);
                                }
                                counts[i] += 1;
                            }
                            None if ctx.tags.is_some() => ctx.stats.borrow_mut().untagged += 1,
                            None => {}
                        }
                    }
                    if !resp.keep_alive {
                        continue 'connect;
                    }
                }
                Ok(Err(f)) => {
                    if counted {
                        ctx.stats.borrow_mut().fail(f);
                    }
                    continue 'connect;
                }
                Err(_) => {
                    if counted {
                        ctx.stats.borrow_mut().fail(Failure::Timeout);
                    }
                    continue 'connect;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let before = process_cpu_time().expect("/proc/self/stat is readable");
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(process_cpu_time().unwrap() >= before);
    }

    #[test]
    fn an_open_loop_schedule_is_due_at_a_fixed_rate_whatever_the_caller_does() {
        let first = Instant::now();
        let schedule = Schedule::new(first, 4000.0);
        let due: Vec<Duration> = (0..5).map(|_| schedule.take() - first).collect();
        let want: Vec<Duration> = (0..5).map(|i| Duration::from_micros(250 * i)).collect();
        assert_eq!(due, want);
        // Due times do not move with the caller being late: the lateness is the server's.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(schedule.take() - first, Duration::from_micros(1250));
    }
}
