//! Origin name resolution, off the worker threads and cached process-wide.
//!
//! # Why
//!
//! `getaddrinfo` blocks, and monoio's `TcpStream::connect(host)` calls it on the core's own
//! thread: one slow resolver (a 5 s timeout per nameserver is glibc's default) stalls every
//! connection of that core. This module owns the blocking call and moves it to a small pool of
//! `dns-N` threads; workers only ever await a `tokio::sync::oneshot` (the node's monoio runtime
//! is built with its `sync` feature, so a waker fired from a `dns-N` thread wakes the task).
//!
//! # What it owns
//!
//! - [`Resolver`]: one per process, shared as `Arc<Resolver>` by all worker threads. It holds
//!   the pool, the job queue and one cache for all cores (a name resolved on core 0 is a hit on
//!   core 1).
//! - The cache, keyed by (lower-cased host, port): answers are reused for
//!   [`ResolverConfig::positive_ttl`], failures for [`ResolverConfig::negative_ttl`] (a name that
//!   does not resolve must not send every request to the resolver), and lookups of one name that
//!   is already in flight join it: one `getaddrinfo`, many waiters.
//! - [`ResolveError`]: which host failed, and why ([`ResolveReason`]).
//!
//! It does not decide whether an address may be connected to (that is `netguard`, which must
//! judge each address returned here right before connecting to it), and it does not connect.
//!
//! # Flow of [`Resolver::resolve`]
//!
//! 1. IP literals (`192.0.2.1`, `::1`, `[::1]`) answer at once, without the cache or the pool.
//! 2. Cache lock: a fresh entry answers (no allocation: the key is built on the stack); an entry
//!    in flight takes one more waiter; otherwise an in-flight entry is inserted and a job queued,
//!    both under the lock so no second job for the same key can slip in.
//! 3. A `dns-N` thread runs the lookup, de-duplicates the addresses (keeping resolver order: the
//!    caller tries each in turn), stores the answer with its expiry, and then sends it to every
//!    waiter. Because the thread, not the first caller, completes the entry, a caller that gives
//!    up (a timeout drops its future) neither loses the answer for the others nor leaves a stuck
//!    in-flight entry.
//!
//! Callers bound the wait themselves (e.g. with the origin connect timeout): glibc's own timeout
//! still runs on the `dns-N` thread, and its answer is cached for the next request.
//!
//! # Bounds
//!
//! - Jobs wait in a queue of [`ResolverConfig::max_queued`]; beyond that `resolve` fails at once
//!   with [`ResolveReason::Busy`] (not cached). In-flight entries therefore number at most
//!   `max_queued + threads`.
//! - Finished entries number at most [`ResolverConfig::max_entries`]: inserting a new name into
//!   a full cache first drops every expired entry, then the entry closest to expiry.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Resolver threads started by default. Two keep one slow name from delaying every other miss;
/// more only help when many distinct names miss at once, which origin rules rarely cause.
pub const DEFAULT_THREADS: usize = 2;
/// How long a successful answer is reused (the node's former per-core TTL, kept).
pub const DEFAULT_POSITIVE_TTL: Duration = Duration::from_secs(30);
/// How long a failure is reused: short, so a fixed DNS record is picked up quickly, but long
/// enough that a broken name costs one lookup per 5 s instead of one per request.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Finished cache entries kept. Origin rules name few hosts; redirects can name any, so bound it.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;
/// Jobs allowed to wait for a resolver thread before `resolve` answers [`ResolveReason::Busy`].
pub const DEFAULT_MAX_QUEUED: usize = 256;
/// Longest host name accepted: 253 characters in text form (RFC 1035 §2.3.4: 255 octets on the
/// wire) plus an optional trailing dot. Longer names cannot resolve, so they never reach the pool.
pub const MAX_HOST_BYTES: usize = 254;
/// Cache key buffer: host, ':' and up to five port digits.
const KEY_BYTES: usize = MAX_HOST_BYTES + 1 + 5;

/// The blocking lookup run on a `dns-N` thread: host and port in, addresses out.
type LookupFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;
/// What the cache stores and what waiters receive.
type Answer = Result<Arc<[SocketAddr]>, ResolveReason>;

/// Settings of a [`Resolver`]. `Default` gives the documented defaults above.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// Resolver threads (`dns-0`, `dns-1`, ...); 0 is treated as 1.
    pub threads: usize,
    /// How long a successful answer is reused.
    pub positive_ttl: Duration,
    /// How long a failed lookup (not found, resolver error) is reused.
    pub negative_ttl: Duration,
    /// Finished cache entries kept; 0 is treated as 1.
    pub max_entries: usize,
    /// Jobs that may wait for a free resolver thread; 0 is treated as 1.
    pub max_queued: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            threads: DEFAULT_THREADS,
            positive_ttl: DEFAULT_POSITIVE_TTL,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

/// Why a name did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveReason {
    /// The name has no address (NXDOMAIN, or no A/AAAA record).
    NotFound,
    /// Any other resolver failure (e.g. "Temporary failure in name resolution"); `message` is
    /// the system's text. Kept as kind + text because `io::Error` is not `Clone` and one cached
    /// failure is handed to many waiters.
    Io { kind: io::ErrorKind, message: String },
    /// Empty, or longer than [`MAX_HOST_BYTES`]: refused without a lookup.
    InvalidName,
    /// The job queue is full (more distinct names missing at once than the pool keeps up with).
    /// Not cached: the next request tries again.
    Busy,
    /// The resolver threads are gone (the `Resolver` was dropped, or a lookup panicked). Not
    /// cached.
    ResolverGone,
}

impl ResolveReason {
    /// Short stable label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResolveReason::NotFound => "not_found",
            ResolveReason::Io { .. } => "io",
            ResolveReason::InvalidName => "invalid_name",
            ResolveReason::Busy => "busy",
            ResolveReason::ResolverGone => "resolver_gone",
        }
    }

    /// Sorts a lookup error. std reports every `getaddrinfo` failure as
    /// `ErrorKind::Uncategorized` carrying `gai_strerror`'s text, so "no such name" (EAI_NONAME,
    /// EAI_NODATA) can only be told apart by that text; anything else stays `Io`.
    fn from_lookup_error(error: &io::Error) -> ResolveReason {
        let message = error.to_string();
        let not_found = error.kind() == io::ErrorKind::NotFound
            || message.contains("Name or service not known")
            || message.contains("No address associated with hostname");
        if not_found {
            ResolveReason::NotFound
        } else {
            ResolveReason::Io { kind: error.kind(), message }
        }
    }
}

impl fmt::Display for ResolveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveReason::NotFound => f.write_str("no such host"),
            ResolveReason::Io { kind, message } => write!(f, "{message} ({kind:?})"),
            ResolveReason::InvalidName => write!(f, "not a valid host name (empty or over {MAX_HOST_BYTES} bytes)"),
            ResolveReason::Busy => f.write_str("resolver queue full"),
            ResolveReason::ResolverGone => f.write_str("resolver threads have stopped"),
        }
    }
}

/// A failed [`Resolver::resolve`]: the name as the caller gave it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveError {
    pub host: String,
    pub port: u16,
    pub reason: ResolveReason,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "resolving {}:{}: {}", self.host, self.port, self.reason)
    }
}

impl std::error::Error for ResolveError {}

/// Process-wide resolver: a pool of `dns-N` threads behind one cache. Share it as
/// `Arc<Resolver>`. Dropping it closes the queue; each thread exits after its current lookup
/// (threads are not joined, so a drop never waits for a slow `getaddrinfo`).
pub struct Resolver {
    shared: Arc<Shared>,
    jobs: SyncSender<Job>,
    threads: usize,
}

/// State the callers and the `dns-N` threads share.
struct Shared {
    cache: Mutex<Cache>,
    lookup: Box<LookupFn>,
    positive_ttl: Duration,
    negative_ttl: Duration,
    clock: Clock,
}

struct Cache {
    entries: HashMap<Box<str>, Entry>,
    max_entries: usize,
}

enum Entry {
    /// A finished lookup, reused until `expires_at`.
    Ready { answer: Answer, expires_at: Instant },
    /// A job is queued or running; each waiter gets the answer when it finishes.
    InFlight { waiters: Vec<oneshot::Sender<Answer>> },
}

struct Job {
    /// Cache key (`host:port`, host lower-cased) of the in-flight entry to complete.
    key: Box<str>,
    /// The host as the first caller spelled it: DNS ignores case, but the scope of a scoped
    /// IPv6 literal (`fe80::1%eth0`) is an interface name, which does not.
    host: Box<str>,
    port: u16,
}

/// Where "now" comes from. Tests drive a manual clock so TTL expiry needs no sleeping.
enum Clock {
    System,
    #[cfg(test)]
    Manual(Arc<tests::ManualClock>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// Outcome of the cache step of `resolve`.
enum Step {
    /// Answered without waiting: a fresh cache entry, or a failure to queue the job.
    Done(Answer),
    Wait(oneshot::Receiver<Answer>),
}

impl Resolver {
    /// Starts `config.threads` resolver threads that call the system resolver (`getaddrinfo`
    /// through `ToSocketAddrs`). Fails only if a thread cannot be spawned.
    pub fn new(config: ResolverConfig) -> io::Result<Resolver> {
        Resolver::with_lookup(config, |host, port| (host, port).to_socket_addrs().map(Iterator::collect))
    }

    /// Like [`Resolver::new`], with `lookup` in place of the system resolver. It runs on the
    /// `dns-N` threads, so it may block. Used by tests (a fake that counts calls) and usable for
    /// static host overrides (end-to-end tests mapping names to `127.0.0.1`).
    pub fn with_lookup<F>(config: ResolverConfig, lookup: F) -> io::Result<Resolver>
    where
        F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        Resolver::build(config, Box::new(lookup), Clock::System)
    }

    fn build(config: ResolverConfig, lookup: Box<LookupFn>, clock: Clock) -> io::Result<Resolver> {
        let threads = config.threads.max(1);
        let shared = Arc::new(Shared {
            cache: Mutex::new(Cache { entries: HashMap::new(), max_entries: config.max_entries.max(1) }),
            lookup,
            positive_ttl: config.positive_ttl,
            negative_ttl: config.negative_ttl,
            clock,
        });
        let (jobs, queue) = mpsc::sync_channel::<Job>(config.max_queued.max(1));
        // std's Receiver has one consumer; the threads take turns holding it. A thread blocked
        // in `recv` under the lock only keeps out threads that would wait for a job anyway.
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let shared = Arc::clone(&shared);
            let queue = Arc::clone(&queue);
            // If a later spawn fails, `jobs` is dropped on return and the threads already
            // started see the queue close and exit.
            thread::Builder::new().name(format!("dns-{n}")).spawn(move || run_thread(&shared, &queue))?;
        }
        Ok(Resolver { shared, jobs, threads })
    }

    /// Resolver threads running (for the start-up log line).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// All addresses of `host` (de-duplicated, in resolver order) with `port` set. IP literals
    /// answer at once; other names come from the cache or one shared lookup on the pool.
    ///
    /// Cancel-safe: dropping the future only drops this caller's wait; the lookup finishes and
    /// is cached for the next caller.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Arc<[SocketAddr]>, ResolveError> {
        let fail = |reason| ResolveError { host: host.to_owned(), port, reason };
        if let Some(ip) = parse_ip_literal(host) {
            return Ok(Arc::from(&[SocketAddr::new(ip, port)][..]));
        }
        let step = {
            // Scoped so the 260-byte key is not part of the future's state across the await.
            let key = KeyBuf::new(host, port).ok_or_else(|| fail(ResolveReason::InvalidName))?;
            self.lookup_or_join(key.as_str(), host, port)
        };
        let waiter = match step {
            Step::Done(answer) => return answer.map_err(fail),
            Step::Wait(waiter) => waiter,
        };
        // The sender is dropped unanswered only if the lookup panicked or the pool is gone.
        waiter.await.unwrap_or(Err(ResolveReason::ResolverGone)).map_err(fail)
    }

    /// The cache step: a fresh entry answers, an in-flight one takes a waiter, anything else
    /// becomes in flight and a job is queued (under the same lock, so one job per key).
    fn lookup_or_join(&self, key: &str, host: &str, port: u16) -> Step {
        let now = self.shared.clock.now();
        let mut cache = lock(&self.shared.cache);
        match cache.entries.get_mut(key) {
            Some(Entry::Ready { answer, expires_at }) if now < *expires_at => return Step::Done(answer.clone()),
            Some(Entry::InFlight { waiters }) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                return Step::Wait(rx);
            }
            // Expired: the slot is reused below, so the map does not grow.
            Some(Entry::Ready { .. }) => {}
            None => cache.make_room(now),
        }
        let (tx, rx) = oneshot::channel();
        match self.jobs.try_send(Job { key: key.into(), host: host.into(), port }) {
            Ok(()) => {
                cache.entries.insert(key.into(), Entry::InFlight { waiters: vec![tx] });
                Step::Wait(rx)
            }
            Err(TrySendError::Full(_)) => Step::Done(Err(ResolveReason::Busy)),
            Err(TrySendError::Disconnected(_)) => Step::Done(Err(ResolveReason::ResolverGone)),
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("threads", &self.threads)
            .field("positive_ttl", &self.shared.positive_ttl)
            .field("negative_ttl", &self.shared.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Makes room for one new entry: drops every expired entry, then, if still full, the
    /// finished entry closest to expiry. In-flight entries are never evicted (their waiters
    /// would hang); they are bounded by the job queue. O(entries), and only on a miss into a
    /// full cache, which then costs a `getaddrinfo` anyway.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.max_entries {
            return;
        }
        self.entries.retain(|_, entry| !matches!(entry, Entry::Ready { expires_at, .. } if *expires_at <= now));
        if self.entries.len() < self.max_entries {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Ready { expires_at, .. } => Some((*expires_at, key)),
                Entry::InFlight { .. } => None,
            })
            .min_by_key(|(expires_at, _)| *expires_at)
            .map(|(_, key)| key.clone());
        if let Some(key) = oldest {
            self.entries.remove(&key);
        }
    }
}

/// Body of a `dns-N` thread: take a job, look it up, complete its entry; exit when the queue
/// closes (the `Resolver` was dropped).
fn run_thread(shared: &Shared, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The guard is a temporary: the queue is unlocked before the lookup runs.
        let Ok(job) = lock(queue).recv() else { return };
        // A panicking lookup must not leave its entry in flight forever: catch it, drop the
        // waiters (they see `ResolverGone`) and keep the thread serving.
        let outcome = catch_unwind(AssertUnwindSafe(|| (shared.lookup)(&job.host, job.port)));
        let now = shared.clock.now();
        let (answer, ttl) = match outcome {
            Ok(Ok(addrs)) => match dedup(addrs) {
                Some(addrs) => (Ok(addrs), shared.positive_ttl),
                None => (Err(ResolveReason::NotFound), shared.negative_ttl),
            },
            Ok(Err(error)) => (Err(ResolveReason::from_lookup_error(&error)), shared.negative_ttl),
            Err(_panic) => {
                lock(&shared.cache).entries.remove(&job.key);
                continue;
            }
        };
        let entry = Entry::Ready { answer: answer.clone(), expires_at: now + ttl };
        let previous = lock(&shared.cache).entries.insert(job.key, entry);
        // Wake the waiters after the lock is released; a waiter that gave up is simply skipped.
        if let Some(Entry::InFlight { waiters }) = previous {
            for waiter in waiters {
                let _gave_up = waiter.send(answer.clone());
            }
        }
    }
}

/// Addresses in resolver order without repeats (getaddrinfo repeats an address per socket type
/// or per duplicate record); `None` when there are none.
fn dedup(addrs: Vec<SocketAddr>) -> Option<Arc<[SocketAddr]>> {
    let mut unique: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for addr in addrs {
        // Quadratic, but answers hold a handful of addresses.
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    (!unique.is_empty()).then(|| Arc::from(unique))
}

/// `192.0.2.1`, `2001:db8::1` or `[2001:db8::1]` (the URL form). Other forms getaddrinfo
/// accepts (`127.1`, scoped `fe80::1%eth0`) go through the pool, which answers them without
/// network traffic.
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse().ok()
}

/// The cache key `host:port` with the host lower-cased (DNS names are case-insensitive,
/// RFC 4343), built on the stack so that a cache hit allocates nothing.
struct KeyBuf {
    bytes: [u8; KEY_BYTES],
    len: usize,
}

impl KeyBuf {
    /// `None` for an empty host or one longer than [`MAX_HOST_BYTES`].
    fn new(host: &str, port: u16) -> Option<KeyBuf> {
        if host.is_empty() || host.len() > MAX_HOST_BYTES {
            return None;
        }
        let mut key = KeyBuf { bytes: [0; KEY_BYTES], len: 0 };
        for &b in host.as_bytes() {
            key.push(b.to_ascii_lowercase());
        }
        key.push(b':');
        let mut digits = [0u8; 5];
        let mut rest = port;
        let mut count = 0;
        loop {
            digits[count] = b'0' + (rest % 10) as u8;
            count += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for &d in digits[..count].iter().rev() {
            key.push(d);
        }
        Some(key)
    }

    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        // ASCII lower-casing keeps UTF-8 valid and the rest is ASCII, so this always succeeds;
        // an empty key (which matches nothing cached) would be the harmless fallback.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// Locks ignoring poison: no code panics while holding these locks with an entry half-updated
/// (lookups run outside them), so the data is consistent even after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// A clock the test moves by hand.
    pub(super) struct ManualClock {
        base: Instant,
        offset_ms: AtomicU64,
    }

    impl ManualClock {
        pub(super) fn now(&self) -> Instant {
            self.base + Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
        }

        fn advance(&self, by: Duration) {
            self.offset_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        }
    }

    /// Minimal executor: polls on this thread, parks until a `dns-N` thread wakes it.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            thread::park();
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    const CONFIG: ResolverConfig = ResolverConfig {
        threads: 2,
        positive_ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        max_entries: 4096,
        max_queued: 256,
    };

    /// A resolver whose lookup is `answer`, counting calls, on a manual clock.
    fn fake<F>(config: ResolverConfig, answer: F) -> (Resolver, Arc<AtomicUsize>, Arc<ManualClock>)
    where
        F: Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let clock = Arc::new(ManualClock { base: Instant::now(), offset_ms: AtomicU64::new(0) });
        let lookup = move |host: &str, port| {
            counted.fetch_add(1, Ordering::SeqCst);
            answer(host, port)
        };
        let resolver = Resolver::build(config, Box::new(lookup), Clock::Manual(Arc::clone(&clock))).expect("spawn");
        (resolver, calls, clock)
    }

    fn not_found() -> io::Error {
        // What std produces for EAI_NONAME.
        io::Error::other("failed to lookup address information: Name or service not known")
    }

    #[test]
    fn returns_all_addresses_deduplicated_in_order() {
        let (resolver, calls, _) = fake(CONFIG, |_, port| {
            let a: Vec<SocketAddr> = ["192.0.2.1", "2001:db8::1", "192.0.2.1", "192.0.2.2", "2001:db8::1"]
                .iter()
                .map(|ip| SocketAddr::new(ip.parse().expect("ip"), port))
                .collect();
            Ok(a)
        });
        let got = block_on(resolver.resolve("Origin.Example", 8080)).expect("resolves");
        assert_eq!(&*got, &[addr("192.0.2.1:8080"), addr("[2001:db8::1]:8080"), addr("192.0.2.2:8080")]);
        // The key is case-insensitive: a differently-cased name is a hit.
        block_on(resolver.resolve("origin.example", 8080)).expect("cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Another port is another entry.
        block_on(resolver.resolve("origin.example", 8081)).expect("resolves");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn lookup_sees_the_callers_host_and_port() {
        let (resolver, _, _) = fake(CONFIG, |host, port| {
            assert_eq!((host, port), ("MiXeD.Example", 81));
            Ok(vec![addr("192.0.2.9:81")])
        });
        assert!(block_on(resolver.resolve("MiXeD.Example", 81)).is_ok());
    }

    #[test]
    fn ip_literals_never_touch_lookup() {
        let (resolver, calls, _) = fake(CONFIG, |_, _| panic!("lookup must not run for literals"));
        for (host, want) in [
            ("192.0.2.7", "192.0.2.7:80"),
            ("2001:db8::7", "[2001:db8::7]:80"),
            ("[2001:db8::7]", "[2001:db8::7]:80"),
            ("[::ffff:127.0.0.1]", "[::ffff:127.0.0.1]:80"),
        ] {
            let got = block_on(resolver.resolve(host, 80)).expect("literal");
            assert_eq!(&*got, &[addr(want)], "{host}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn failures_are_cached_for_negative_ttl() {
        let (resolver, calls, clock) = fake(CONFIG, |_, _| Err(not_found()));
        let err = block_on(resolver.resolve("nx.example", 80)).expect_err("fails");
        assert_eq!(err.reason, ResolveReason::NotFound);
        assert_eq!(err.host, "nx.example");
        assert_eq!(err.to_string(), "resolving nx.example:80: no such host");
        // Within the TTL: answered from the cache.
        clock.advance(Duration::from_millis(4_999));
        let again = block_on(resolver.resolve("nx.example", 80)).expect_err("cached failure");
        assert_eq!(again.reason, ResolveReason::NotFound);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After it: asked again.
        clock.advance(Duration::from_millis(2));
        assert!(block_on(resolver.resolve("nx.example", 80)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn other_errors_keep_kind_and_text_and_are_cached_too() {
        let (resolver, calls, _) =
            fake(CONFIG, |_, _| Err(io::Error::new(io::ErrorKind::TimedOut, "Temporary failure in name resolution")));
        let err = block_on(resolver.resolve("flaky.example", 443)).expect_err("fails");
        assert_eq!(
            err.reason,
            ResolveReason::Io {
                kind: io::ErrorKind::TimedOut,
                message: "Temporary failure in name resolution".to_owned()
            }
        );
        assert_eq!(err.reason.as_str(), "io");
        assert!(block_on(resolver.resolve("flaky.example", 443)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn empty_answer_is_not_found() {
        let (resolver, _, _) = fake(CONFIG, |_, _| Ok(Vec::new()));
        let err = block_on(resolver.resolve("empty.example", 80)).expect_err("no addresses");
        assert_eq!(err.reason, ResolveReason::NotFound);
    }

    #[test]
    fn answers_expire_after_positive_ttl() {
        let (resolver, calls, clock) = fake(CONFIG, |_, port| Ok(vec![SocketAddr::new([192, 0, 2, 1].into(), port)]));
        block_on(resolver.resolve("a.example", 80)).expect("resolves");
        clock.advance(Duration::from_millis(29_999));
        block_on(resolver.resolve("a.example", 80)).expect("cached");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_millis(2));
        block_on(resolver.resolve("a.example", 80)).expect("resolves again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn concurrent_lookups_of_one_name_share_one_call() {
        // The lookup waits for `release`, so every caller below arrives while it is in flight.
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let (resolver, calls, _) = fake(CONFIG, move |_, port| {
            let _ = lock(&gate).recv();
            Ok(vec![SocketAddr::new([192, 0, 2, 3].into(), port)])
        });
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        let mut pending: Vec<Pin<Box<_>>> = (0..16).map(|_| Box::pin(resolver.resolve("busy.example", 80))).collect();
        for future in &mut pending {
            // First poll: the first caller queues the job, the others join it.
            assert!(future.as_mut().poll(&mut cx).is_pending());
        }
        release.send(()).expect("lookup waiting");
        for future in pending {
            assert_eq!(&*block_on(future).expect("resolves"), &[addr("192.0.2.3:80")]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_caller_that_gives_up_does_not_lose_the_answer() {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let (resolver, calls, _) = fake(CONFIG, move |_, port| {
            let _ = lock(&gate).recv();
            Ok(vec![SocketAddr::new([192, 0, 2, 4].into(), port)])
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = Box::pin(resolver.resolve("drop.example", 80));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        let mut second = Box::pin(resolver.resolve("drop.example", 80));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(first); // e.g. the caller's connect timeout fired
        release.send(()).expect("lookup waiting");
        assert!(block_on(second).is_ok());
        assert!(block_on(resolver.resolve("drop.example", 80)).is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_panicking_lookup_fails_its_waiters_and_is_not_cached() {
        let (resolver, calls, _) = fake(ResolverConfig { threads: 1, ..CONFIG }, |_, _| panic!("injected"));
        let err = block_on(resolver.resolve("boom.example", 80)).expect_err("fails");
        assert_eq!(err.reason, ResolveReason::ResolverGone);
        // The thread survived and the entry was removed: the next call looks up again.
        assert!(block_on(resolver.resolve("boom.example", 80)).is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_full_queue_answers_busy_without_caching() {
        let (started_tx, started) = mpsc::channel::<()>();
        let (release, gate) = mpsc::channel::<()>();
        let hooks = Mutex::new((started_tx, gate));
        let config = ResolverConfig { threads: 1, max_queued: 1, ..CONFIG };
        let (resolver, _, _) = fake(config, move |_, port| {
            let hooks = lock(&hooks);
            let _ = hooks.0.send(());
            let _ = hooks.1.recv();
            Ok(vec![SocketAddr::new([192, 0, 2, 5].into(), port)])
        });
        let mut cx = Context::from_waker(Waker::noop());
        let mut running = Box::pin(resolver.resolve("one.example", 80));
        assert!(running.as_mut().poll(&mut cx).is_pending());
        started.recv().expect("the only thread took job one");
        let mut queued = Box::pin(resolver.resolve("two.example", 80));
        assert!(queued.as_mut().poll(&mut cx).is_pending());
        let err = block_on(resolver.resolve("three.example", 80)).expect_err("queue full");
        assert_eq!(err.reason, ResolveReason::Busy);
        release.send(()).expect("job one waiting");
        release.send(()).expect("job two will wait");
        assert!(block_on(running).is_ok());
        assert!(block_on(queued).is_ok());
        // Busy was not cached: three resolves now that the queue has room.
        release.send(()).expect("job three will wait");
        assert!(block_on(resolver.resolve("three.example", 80)).is_ok());
    }

    #[test]
    fn the_cache_is_bounded() {
        let config = ResolverConfig { max_entries: 4, ..CONFIG };
        let (resolver, calls, clock) = fake(config, |_, port| Ok(vec![SocketAddr::new([192, 0, 2, 6].into(), port)]));
        for n in 0..10u16 {
            block_on(resolver.resolve(&format!("h{n}.example"), 80)).expect("resolves");
            // Distinct expiry times, so "closest to expiry" is the oldest.
            clock.advance(Duration::from_millis(1));
        }
        assert!(lock(&resolver.shared.cache).entries.len() <= 4);
        // The newest name is still cached; the oldest was evicted.
        block_on(resolver.resolve("h9.example", 80)).expect("cached");
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        block_on(resolver.resolve("h0.example", 80)).expect("resolves again");
        assert_eq!(calls.load(Ordering::SeqCst), 11);
    }

    #[test]
    fn invalid_names_fail_without_lookup() {
        let (resolver, calls, _) = fake(CONFIG, |_, _| panic!("lookup must not run"));
        let long = "a".repeat(MAX_HOST_BYTES + 1);
        for host in ["", long.as_str()] {
            let err = block_on(resolver.resolve(host, 80)).expect_err("invalid");
            assert_eq!(err.reason, ResolveReason::InvalidName);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn dropping_the_resolver_stops_its_threads() {
        let (resolver, _, _) = fake(CONFIG, |_, port| Ok(vec![SocketAddr::new([192, 0, 2, 8].into(), port)]));
        block_on(resolver.resolve("last.example", 80)).expect("resolves");
        // Each thread holds a reference to the shared state until it exits.
        let shared = Arc::clone(&resolver.shared);
        drop(resolver);
        // Poll (10 ms steps, 2 s cap) rather than assert a time: only the exit is checked.
        for _ in 0..200 {
            if Arc::strong_count(&shared) == 1 {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("dns threads still running after the Resolver was dropped");
    }

    #[test]
    fn resolver_and_its_future_cross_threads() {
        // One `Arc<Resolver>` is shared by every worker thread; the future being `Send` keeps
        // it usable from a multi-threaded runtime too.
        fn assert_send_sync<T: Send + Sync>(_: &T) {}
        fn assert_send<T: Send>(_: &T) {}
        let resolver = Resolver::new(ResolverConfig { threads: 1, ..CONFIG }).expect("spawn");
        assert_send_sync(&resolver);
        assert_send(&resolver.resolve("x.example", 80));
    }

    #[test]
    fn key_is_lowercase_host_and_port() {
        let key = KeyBuf::new("WWW.Example.COM.", 65535).expect("valid");
        assert_eq!(key.as_str(), "www.example.com.:65535");
        assert_eq!(KeyBuf::new("h", 0).expect("valid").as_str(), "h:0");
        let longest = "x".repeat(MAX_HOST_BYTES);
        assert_eq!(KeyBuf::new(&longest, 80).expect("valid").as_str().len(), MAX_HOST_BYTES + 3);
    }

    #[test]
    fn system_resolver_answers_localhost() {
        let resolver = Resolver::new(ResolverConfig::default()).expect("spawn");
        assert_eq!(resolver.threads(), DEFAULT_THREADS);
        let addrs = block_on(resolver.resolve("localhost", 8080)).expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8080), "{addrs:?}");
    }
}
