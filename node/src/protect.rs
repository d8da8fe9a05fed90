//! Protecting origins from the node: a circuit breaker per origin ([`Breakers`]) and a cap on
//! the fetches in flight to each ([`FetchSlots`]). An origin is `scheme://host:port`.
//!
//! Circuit breakers, so a dead or failing origin is not hammered by every miss:
//! - **Closed:** requests go through. A failure (the origin could not be reached, timed out, or
//!   answered 5xx) is remembered for `origin.breaker_window_ms`; `origin.breaker_failures` of
//!   them within the window open the breaker.
//! - **Open:** misses for that origin answer 424 at once, without a connection, for
//!   `origin.breaker_open_ms`.
//! - **Half-open:** then one request goes through as a probe (the others are still refused); its
//!   success closes the breaker, its failure opens it again.
//!
//! Shared by every core behind one mutex: it is taken once or twice per origin exchange (a miss),
//! never on a hit. `breaker_failures = 0` turns breakers off.
//!
//! Pacers: at most `origin.max_bytes_per_sec_per_origin` bytes a second read from one origin,
//! across all cores (a token bucket per origin with a tenth of a second of burst); a body read
//! that runs ahead sleeps off its debt before the next read.
//!
//! Fetch slots: at most `origin.max_fetches_per_origin` exchanges with one origin at a time,
//! across all cores (a semaphore per origin); a fetch waits for a slot up to
//! `origin.first_byte_timeout_ms`, then fails (424). The slot is held until the origin's body has
//! been read to its end or dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[origin]` breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open a breaker; 0: breakers off.
    pub failures: u32,
    pub window: Duration,
    /// How long an open breaker refuses before it lets a probe through.
    pub open: Duration,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// `probing`: the one probe is out.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Counts the probes let through: a probe's [`Pass`] carries its number, so only that
    /// probe's answer, or its hand-back, touches the half-open breaker.
    probes: u64,
    /// When the failures still in the window happened (closed phase).
    failures: VecDeque<Instant>,
}

impl State {
    /// Lets the next request through as the half-open breaker's probe: its number.
    fn send_probe(&mut self) -> u64 {
        self.phase = Phase::HalfOpen { probing: true };
        self.probes += 1;
        self.probes
    }
}

/// Whether a request to an origin may go (the tests' view; the data plane takes a [`Pass`]).
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Go,
    /// The breaker is open (or its probe is out): the origin is not contacted.
    Refuse {
        retry_in: Duration,
    },
}

/// A request [`Breakers::pass`] let through. [`Pass::record`] tells the breaker how it ended.
/// Dropped unrecorded (the request never reached the origin), it hands back the half-open
/// breaker's probe if it was the one: otherwise the breaker would wait for that probe's answer,
/// and refuse every request to the origin, for ever.
#[must_use = "record how the request ended, or drop the pass if it never reached the origin"]
pub struct Pass<'a> {
    breakers: &'a Breakers,
    origin: &'a str,
    /// The probe's number ([`State::probes`]) when this request is the half-open breaker's probe
    /// (taken by [`Pass::record`]: a recorded probe is not handed back).
    probe: Option<u64>,
}

impl Pass<'_> {
    /// Records how the request ended (`ok`: the origin answered, below 500).
    pub fn record(mut self, ok: bool) {
        self.breakers.record_as(self.origin, ok, self.probe.take());
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(probe) = self.probe {
            self.breakers.probe_abandoned(self.origin, probe);
        }
    }
}

#[derive(Debug)]
pub struct Breakers {
    /// Replaced by a reload (`set_config`); read under its own lock, never while holding it.
    config: Mutex<BreakerConfig>,
    states: Mutex<HashMap<String, State>>,
    /// Requests refused by an open breaker.
    pub rejected: AtomicU64,
    /// Times a breaker opened (from closed or after a failed probe).
    pub opened: AtomicU64,
}

impl Breakers {
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config: Mutex::new(config),
            states: Mutex::default(),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// New settings (a reload): they apply to the next failure and the next opening. Turning
    /// breakers off forgets every breaker's state: turned on again, they start closed (a probe
    /// out when they were turned off is never waited for).
    pub fn set_config(&self, config: BreakerConfig) {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        if config.failures == 0 {
            self.states.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    fn config(&self) -> BreakerConfig {
        *self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May a request to `origin` go now? `Ok`: it goes, and its [`Pass`] is to be recorded (or
    /// dropped, when the request never reached the origin); `Err`: how long until a probe.
    pub fn pass<'a>(&'a self, origin: &'a str) -> Result<Pass<'a>, Duration> {
        let probe = self.admit_probe(origin)?;
        Ok(Pass { breakers: self, origin, probe })
    }

    /// May a request to `origin` go now? (Tests; the data plane takes a [`Pass`].)
    #[cfg(test)]
    fn admit(&self, origin: &str) -> Admit {
        match self.admit_probe(origin) {
            Ok(_) => Admit::Go,
            Err(retry_in) => Admit::Refuse { retry_in },
        }
    }

    /// Whether a request to `origin` may go now: `Ok` with the probe's number when it is the
    /// half-open breaker's probe, `Err` with how long until a probe.
    fn admit_probe(&self, origin: &str) -> Result<Option<u64>, Duration> {
        let config = self.config();
        if config.failures == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = states.get_mut(origin) else { return Ok(None) };
        let admitted = match state.phase {
            Phase::Closed => Ok(None),
            Phase::Open { until } if now < until => Err(until - now),
            Phase::HalfOpen { probing: true } => Err(config.open),
            // Open and due, or half-open with its probe handed back: this request probes.
            Phase::Open { .. } => {
                tracing::info!(origin, "origin circuit half-open: one probe goes through");
                Ok(Some(state.send_probe()))
            }
            Phase::HalfOpen { probing: false } => Ok(Some(state.send_probe())),
        };
        if admitted.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// The probe let through did not reach the origin (no fetch slot came free in time, or its
    /// request was dropped): the next request probes instead.
    fn probe_abandoned(&self, origin: &str, probe: u64) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(origin) {
            if matches!(state.phase, Phase::HalfOpen { probing: true }) && state.probes == probe {
                state.phase = Phase::HalfOpen { probing: false };
            }
        }
    }

    /// Records how a request to `origin` ended that was not a probe. (Tests; the data plane
    /// records through its [`Pass`].)
    #[cfg(test)]
    fn record(&self, origin: &str, ok: bool) {
        self.record_as(origin, ok, None)
    }

    /// [`Breakers::record`] for a request that was probe number `probe`, if it was one. While the
    /// breaker is half-open only its probe's answer counts: a late answer of a request let
    /// through before the breaker opened does not decide it.
    fn record_as(&self, origin: &str, ok: bool, probe: Option<u64>) {
        let config = self.config();
        if config.failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if ok && !states.contains_key(origin) {
            // The usual case, a healthy origin: nothing to keep.
            return;
        }
        let state = states.entry(origin.to_string()).or_insert_with(|| State {
            phase: Phase::Closed,
            probes: 0,
            failures: VecDeque::new(),
        });
        if matches!(state.phase, Phase::HalfOpen { .. }) && probe != Some(state.probes) {
            return;
        }
        match (&state.phase, ok) {
            (Phase::HalfOpen { .. }, true) => {
                state.phase = Phase::Closed;
                state.failures.clear();
                tracing::info!(origin, "origin circuit closed: the probe succeeded");
            }
            (Phase::HalfOpen { .. }, false) => {
                state.phase = Phase::Open { until: now + config.open };
                self.opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    origin,
                    open_ms = config.open.as_millis() as u64,
                    "origin circuit open again: the probe failed"
                );
            }
            (Phase::Closed, false) => {
                state.failures.push_back(now);
                while state.failures.front().is_some_and(|t| now.duration_since(*t) > config.window) {
                    state.failures.pop_front();
                }
                if state.failures.len() >= config.failures as usize {
                    state.phase = Phase::Open { until: now + config.open };
                    state.failures.clear();
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        origin,
                        failures = config.failures,
                        window_ms = config.window.as_millis() as u64,
                        open_ms = config.open.as_millis() as u64,
                        "origin circuit open: misses for it answer 424 without contacting it"
                    );
                }
            }
            // A success while closed, or a late answer while open: nothing changes.
            _ => {}
        }
        if matches!(state.phase, Phase::Closed) && state.failures.is_empty() {
            states.remove(origin);
        }
    }

    /// `origin`'s breaker now: `closed`, `open` or `half-open` (for the rules' status).
    pub fn state(&self, origin: &str) -> &'static str {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        match states.get(origin).map(|s| &s.phase) {
            None | Some(Phase::Closed) => "closed",
            Some(Phase::Open { until }) if *until > Instant::now() => "open",
            Some(_) => "half-open",
        }
    }

    /// Every origin whose breaker is not plainly closed (open, half-open, or closed with
    /// failures counting), and its state.
    pub fn states(&self) -> Vec<(String, &'static str)> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        states
            .iter()
            .map(|(origin, s)| {
                let state = match s.phase {
                    Phase::Closed => "closed",
                    Phase::Open { until } if until > now => "open",
                    _ => "half-open",
                };
                (origin.clone(), state)
            })
            .collect()
    }

    /// Breakers open or half-open now (the gauge `edgemirror_origin_breakers_open`).
    pub fn open_count(&self) -> usize {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.values().filter(|s| !matches!(s.phase, Phase::Closed)).count()
    }
}

/// The byte-rate caps of every origin (see the module doc).
#[derive(Debug)]
pub struct Pacers {
    /// Bytes a second per origin; 0: no cap.
    rate: AtomicU64,
    pacers: Mutex<HashMap<String, Arc<Pacer>>>,
    /// Milliseconds origin reads slept to keep to the cap.
    pub paced_ms: Arc<AtomicU64>,
}

/// One origin's token bucket.
#[derive(Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    /// (tokens, when last refilled); tokens go negative: a debt the reader sleeps off.
    state: Mutex<(f64, Instant)>,
    paced_ms: Arc<AtomicU64>,
}

impl Pacers {
    pub fn new(rate: u64) -> Pacers {
        Pacers { rate: AtomicU64::new(rate), pacers: Mutex::default(), paced_ms: Arc::default() }
    }

    /// The cap, in bytes a second (0: none).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// A new cap (a reload): fetches that start from now on keep to it; those reading already
    /// keep their pacer's.
    pub fn set_rate(&self, rate: u64) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            self.pacers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// `origin`'s pacer, or `None` without a cap.
    pub fn get(&self, origin: &str) -> Option<Arc<Pacer>> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let mut pacers = self.pacers.lock().unwrap_or_else(|e| e.into_inner());
        let pacer =
            pacers.entry(origin.to_string()).or_insert_with(|| Arc::new(Pacer::new(rate, self.paced_ms.clone())));
        Some(pacer.clone())
    }
}

impl Pacer {
    /// A cap of its own (a backfill job's): `rate` bytes a second, a tenth of a second of burst.
    pub fn new(rate: u64, paced_ms: Arc<AtomicU64>) -> Pacer {
        let rate = rate.max(1) as f64;
        Pacer { rate, burst: rate / 10.0, state: Mutex::new((rate / 10.0, Instant::now())), paced_ms }
    }

    /// Takes `bytes` just read; how long the reader must wait before reading more.
    pub fn take(&self, bytes: usize) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - bytes as f64;
        *state = (tokens, now);
        if tokens >= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-tokens / self.rate);
        self.paced_ms.fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
        wait
    }
}

/// The fetch slots of every origin (see the module doc).
#[derive(Debug)]
pub struct FetchSlots {
    /// Slots per origin; 0: no cap.
    per_origin: AtomicUsize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Fetches that had to wait for a slot.
    pub waited: AtomicU64,
}

impl FetchSlots {
    pub fn new(per_origin: usize) -> FetchSlots {
        FetchSlots { per_origin: AtomicUsize::new(per_origin), slots: Mutex::default(), waited: AtomicU64::new(0) }
    }

    /// A new cap (a reload): fetches that start from now on take slots of the new size; those
    /// in flight give theirs back to the old ones, so for a moment both may be in flight.
    pub fn set_per_origin(&self, per_origin: usize) {
        if self.per_origin.swap(per_origin, Ordering::Relaxed) != per_origin {
            self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Exchanges with `origin` in flight now, and the cap (`None`: no cap).
    pub fn in_flight(&self, origin: &str) -> Option<(usize, usize)> {
        let per_origin = self.per_origin.load(Ordering::Relaxed);
        if per_origin == 0 {
            return None;
        }
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let free = slots.get(origin).map_or(per_origin, |s| s.available_permits());
        Some((per_origin.saturating_sub(free), per_origin))
    }

    /// A slot for a fetch from `origin`, waiting up to `wait` for one; `None` when the wait ran
    /// out. With no cap, `Some(None)` at once.
    pub async fn acquire(&self, origin: &str, wait: Duration) -> Option<Option<OwnedSemaphorePermit>> {
        let per_origin = self.per_origin.load(Ordering::Relaxed);
        if per_origin == 0 {
            return Some(None);
        }
        let semaphore = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(origin.to_string()).or_insert_with(|| Arc::new(Semaphore::new(per_origin))).clone()
        };
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(Some(permit));
        }
        self.waited.fetch_add(1, Ordering::Relaxed);
        match monoio::time::timeout(wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Some(Some(permit)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(failures: u32, open_ms: u64) -> Breakers {
        Breakers::new(BreakerConfig { failures, window: Duration::from_secs(60), open: Duration::from_millis(open_ms) })
    }

    #[test]
    fn opens_after_n_failures_refuses_then_probes_once_and_closes() {
        let b = breakers(3, 50);
        let o = "http://origin:80";
        for _ in 0..2 {
            b.pass(o).expect("closed").record(false);
        }
        b.pass(o).expect("closed").record(true); // a success does not forgive failures within the window
        b.pass(o).expect("closed").record(false);
        assert!(b.pass(o).is_err(), "the third failure opened it");
        assert_eq!(b.open_count(), 1);
        assert!(b.pass("http://other:80").is_ok(), "breakers are per origin");
        std::thread::sleep(Duration::from_millis(60));
        let probe = b.pass(o).expect("after open_ms one probe goes");
        assert!(b.pass(o).is_err(), "and only one");
        probe.record(false);
        assert!(b.pass(o).is_err(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        b.pass(o).expect("the next probe").record(true);
        b.pass(o).expect("a good probe closes it").record(true);
        assert_eq!(b.open_count(), 0);
        assert_eq!(b.opened.load(Ordering::Relaxed), 2);
        assert!(b.rejected.load(Ordering::Relaxed) >= 3);
    }

    /// A probe that never reached the origin (its request waited for a fetch slot in vain, or
    /// was dropped) hands the probe back: the next request probes, instead of the breaker
    /// refusing every request for ever. A pass that was not the probe changes nothing.
    #[test]
    fn a_probe_dropped_unrecorded_lets_the_next_request_probe() {
        let b = breakers(1, 30);
        let o = "http://origin:80";
        let before_open = b.pass(o).expect("closed");
        b.pass(o).expect("closed").record(false);
        assert!(b.pass(o).is_err(), "one failure opened it");
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.pass(o).expect("the probe goes");
        assert!(b.pass(o).is_err(), "one probe at a time");
        drop(before_open);
        assert!(b.pass(o).is_err(), "a pass from before the opening does not hand the probe back");
        drop(probe);
        let probe = b.pass(o).expect("the dropped probe was handed back");
        assert!(b.pass(o).is_err());
        probe.record(true);
        assert_eq!(b.state(o), "closed");

        // While half-open only the probe's answer counts, and only its own hand-back.
        let late = b.pass(o).expect("closed");
        b.pass(o).expect("closed").record(false);
        std::thread::sleep(Duration::from_millis(40));
        let first = b.pass(o).expect("a probe");
        late.record(true);
        assert_eq!(b.state(o), "half-open", "a request from before the opening decided the breaker");
        drop(first);
        let second = b.pass(o).expect("the probe handed back");
        b.record(o, false);
        assert_eq!(b.state(o), "half-open", "an answer that is not the probe's decided the breaker");
        second.record(false);
        assert!(b.pass(o).is_err(), "the probe's failure opens it");

        // Turned off and on again (a reload), a breaker starts closed, whatever was out.
        std::thread::sleep(Duration::from_millis(40));
        let out = b.pass(o).expect("a probe");
        b.set_config(BreakerConfig { failures: 0, ..b.config() });
        out.record(true);
        b.set_config(BreakerConfig { failures: 1, ..b.config() });
        assert!(b.pass(o).is_ok(), "refused after breakers were turned off and on");
        assert_eq!(b.state(o), "closed");
    }

    #[test]
    fn failures_outside_the_window_do_not_count_and_zero_turns_it_off() {
        let b = Breakers::new(BreakerConfig {
            failures: 2,
            window: Duration::from_millis(30),
            open: Duration::from_secs(60),
        });
        b.record("o", false);
        std::thread::sleep(Duration::from_millis(40));
        b.record("o", false);
        assert_eq!(b.admit("o"), Admit::Go, "the first failure left the window");
        let off = breakers(0, 50);
        for _ in 0..10 {
            off.record("o", false);
        }
        assert_eq!(off.admit("o"), Admit::Go);
    }
}
