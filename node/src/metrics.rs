//! Counters and histograms, shared by all workers and read by the admin API (`GET /metrics`,
//! Prometheus text). Relaxed atomics: each is an independent tally.
//!
//! Requests are observed per worker ([`RequestStats`], one per core, so the hit path never
//! writes a cache line another core writes): duration and time to first byte as histograms,
//! and bytes sent, by method, status class and the tier the bytes came from ([`Source`]). Origin
//! exchanges are observed per origin ([`OriginStats`]). Every label set is bounded: a label is
//! one of a fixed list, or an origin named in the rules (at most [`MAX_ORIGIN_LABELS`]; any
//! beyond share the label `other`). No key or URL is ever a label.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One unlabelled sample: name, help text, value.
pub type Sample<'a> = (&'a str, &'a str, f64);

#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests by worker (index = worker id).
    pub workers: Vec<RequestStats>,
    pub origins: OriginStats,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    /// Tasks (a connection, a fill, an admin job, an upload) ended by a panic in their code, each alone
    /// (`task.rs`): a bug to report, which the worker survived.
    pub task_panics: Counter,
    pub requests: Counter,
    pub bad_requests: Counter,
    pub hits_memory: Counter,
    pub hits_disk_cache: Counter,
    pub hits_store: Counter,
    /// io_uring reads of stored bytes that were not in memory (a record's head and body, or a
    /// 1 MiB window of a big body), and the bytes read (`store.cold_reads = "async"`).
    pub cold_reads: Counter,
    pub cold_read_bytes: Counter,
    /// Body bytes of store hits sent with `sendfile` (`stored::SENDFILE_BYTES`, plain HTTP),
    /// counting the few before the first page boundary that go out with the head.
    pub sendfile_bytes: Counter,
    pub misses_no_rule: Counter,
    pub origin_fetches: Counter,
    /// HEADs of objects not stored, answered from the origin's HEAD.
    pub origin_heads: Counter,
    pub coalesced_misses: Counter,
    pub origin_not_found: Counter,
    pub origin_failures: Counter,
    pub origin_body_failures: Counter,
    /// Fills cut short because the store failed (not for lack of space: those are served
    /// unstored, `fills_unstored`): the record could not be begun, written or committed. The
    /// store's own count of failed writes and syncs is `edgemirror_store_write_failures_total`.
    pub fill_store_failures: Counter,
    /// Fills the store could not take (disk or store full, object over
    /// `store.max_object_bytes`): their clients were served from the origin and nothing was
    /// stored. Counted when the store refuses, at `begin` or mid-body.
    pub fills_unstored: Counter,
    /// Fills whose copy was not stored because the key changed meanwhile (a PUT, a purge).
    pub fills_superseded: Counter,
    /// Objects removed by the purge API.
    pub objects_purged: Counter,
    /// Objects stored by PutObject, and their bytes.
    pub objects_uploaded: Counter,
    pub bytes_uploaded: Counter,
    /// Objects removed by DeleteObject.
    pub objects_deleted: Counter,
    pub objects_mirrored: Counter,
    pub bytes_from_origin: Counter,
    /// Fills answered by the fleet peer that owns the key (any status) instead of the origin.
    pub fleet_peer_fetches: Counter,
    /// Fills for which no fleet peer answered: this node asked the origin itself.
    pub fleet_peer_failures: Counter,
    /// Shared store of record (`store.backend = "s3"`): requests sent to it, fills answered from it, objects written
    /// to it (client writes and fills behind), writes and deletes it did not take, hits that
    /// asked it whether the local copy was current, local copies it said were not, and
    /// requests it did not answer (served from what was here, or from the origin).
    pub shared_requests: Counter,
    pub shared_reads: Counter,
    /// Ranges of objects the edge lacked, passed through from the shared store.
    pub shared_ranges: Counter,
    /// Body bytes fills read from the shared store.
    pub shared_read_bytes: Counter,
    pub shared_writes: Counter,
    pub shared_write_failures: Counter,
    pub shared_revalidations: Counter,
    pub shared_stale: Counter,
    pub shared_unreachable: Counter,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics { workers: (0..workers).map(|_| RequestStats::default()).collect(), ..Metrics::default() }
    }

    /// The request stats of worker `id` (a worker beyond the list, which only tests create,
    /// shares the last one).
    pub fn worker(&self, id: usize) -> Option<&RequestStats> {
        self.workers.get(id).or(self.workers.last())
    }

    /// Renders the counters, plus the counters and gauges kept elsewhere (the store's), in
    /// Prometheus text format. Every family has its `# HELP` (promtool insists, and so do the
    /// people reading a dashboard).
    pub fn render(&self, counters_elsewhere: &[Sample<'_>], gauges: &[Sample<'_>]) -> String {
        let get = |c: &Counter| c.get() as f64;
        let counters: [Sample<'_>; 38] = [
            ("edgemirror_connections_accepted_total", "Client connections accepted.", get(&self.connections_accepted)),
            (
                "edgemirror_connections_refused_total",
                "Client connections shed at accept (over the per-worker cap).",
                get(&self.connections_refused),
            ),
            ("edgemirror_requests_total", "Requests parsed and answered on the data plane.", get(&self.requests)),
            (
                "edgemirror_task_panics_total",
                "Tasks (connections, fills, admin jobs, shared-store uploads) ended by a panic, each alone; the worker went on. A bug: please report it.",
                get(&self.task_panics),
            ),
            (
                "edgemirror_bad_requests_total",
                "Malformed requests (answered 400/414/431 and closed).",
                get(&self.bad_requests),
            ),
            ("edgemirror_hits_memory_total", "Object reads answered from the RAM tier.", get(&self.hits_memory)),
            (
                "edgemirror_hits_disk_cache_total",
                "Object reads answered from the foyer disk tier.",
                get(&self.hits_disk_cache),
            ),
            ("edgemirror_hits_store_total", "Object reads answered from the segment store.", get(&self.hits_store)),
            (
                "edgemirror_store_cold_reads_total",
                "io_uring reads of stored bytes not in memory.",
                get(&self.cold_reads),
            ),
            ("edgemirror_store_cold_read_bytes_total", "Bytes read by cold reads.", get(&self.cold_read_bytes)),
            (
                "edgemirror_sendfile_bytes_total",
                "Body bytes of store hits sent with sendfile, from the page cache without a copy (but for the bytes before the first page boundary, sent with the head).",
                get(&self.sendfile_bytes),
            ),
            (
                "edgemirror_misses_no_rule_total",
                "Reads of absent keys no mirror rule matched (404).",
                get(&self.misses_no_rule),
            ),
            (
                "edgemirror_origin_fetches_total",
                "Fills started (one origin fetch each, coalesced misses share one).",
                get(&self.origin_fetches),
            ),
            ("edgemirror_origin_heads_total", "HEADs of absent objects asked of the origin.", get(&self.origin_heads)),
            (
                "edgemirror_coalesced_misses_total",
                "Misses that joined a fill already in flight.",
                get(&self.coalesced_misses),
            ),
            ("edgemirror_origin_not_found_total", "Fills the origin answered 404.", get(&self.origin_not_found)),
            (
                "edgemirror_origin_failures_total",
                "Fills refused for an origin failure (424).",
                get(&self.origin_failures),
            ),
            (
                "edgemirror_origin_body_failures_total",
                "Fills whose origin body broke off mid-way.",
                get(&self.origin_body_failures),
            ),
            (
                "edgemirror_fill_store_failures_total",
                "Fills cut short because the store failed.",
                get(&self.fill_store_failures),
            ),
            (
                "edgemirror_fills_unstored_total",
                "Fills served from the origin that the store could not take.",
                get(&self.fills_unstored),
            ),
            (
                "edgemirror_fills_superseded_total",
                "Fills not stored because the key changed meanwhile.",
                get(&self.fills_superseded),
            ),
            ("edgemirror_objects_purged_total", "Objects removed by the purge API.", get(&self.objects_purged)),
            ("edgemirror_objects_uploaded_total", "Objects stored by S3 writes.", get(&self.objects_uploaded)),
            ("edgemirror_bytes_uploaded_total", "Bytes stored by S3 writes.", get(&self.bytes_uploaded)),
            ("edgemirror_objects_deleted_total", "Objects removed by S3 deletes.", get(&self.objects_deleted)),
            ("edgemirror_objects_mirrored_total", "Objects stored by fills.", get(&self.objects_mirrored)),
            (
                "edgemirror_origin_bytes_total",
                "Body bytes fills read from origins (and fleet peers standing in for them).",
                get(&self.bytes_from_origin),
            ),
            (
                "edgemirror_fleet_peer_fetches_total",
                "Fills answered by the fleet peer owning the key.",
                get(&self.fleet_peer_fetches),
            ),
            (
                "edgemirror_fleet_peer_failures_total",
                "Fills no fleet peer answered (the origin was asked).",
                get(&self.fleet_peer_failures),
            ),
            (
                "edgemirror_shared_requests_total",
                "Requests sent to the shared store (reads, writes, deletes, revalidations, listings).",
                get(&self.shared_requests),
            ),
            ("edgemirror_shared_reads_total", "Fills answered from the shared store.", get(&self.shared_reads)),
            (
                "edgemirror_shared_read_bytes_total",
                "Body bytes fills read from the shared store.",
                get(&self.shared_read_bytes),
            ),
            (
                "edgemirror_shared_ranges_total",
                "Ranges of objects the edge lacked, passed through from the shared store.",
                get(&self.shared_ranges),
            ),
            ("edgemirror_shared_writes_total", "Objects written to the shared store.", get(&self.shared_writes)),
            (
                "edgemirror_shared_write_failures_total",
                "Writes and deletes the shared store did not take.",
                get(&self.shared_write_failures),
            ),
            (
                "edgemirror_shared_revalidations_total",
                "Hits that asked the shared store whether the local copy was current.",
                get(&self.shared_revalidations),
            ),
            (
                "edgemirror_shared_stale_total",
                "Local copies the shared store no longer held as current (dropped).",
                get(&self.shared_stale),
            ),
            (
                "edgemirror_shared_unreachable_total",
                "Revalidations and reads the shared store did not answer.",
                get(&self.shared_unreachable),
            ),
        ];
        let mut s = String::with_capacity(16 * 1024);
        for (kind, samples) in [("counter", counters.as_slice()), ("counter", counters_elsewhere), ("gauge", gauges)] {
            for (name, help, v) in samples {
                self::samples(&mut s, name, kind, help, [("", v)]);
            }
        }
        self.render_requests(&mut s);
        self.origins.render(&mut s);
        s
    }

    /// The per-worker request stats, summed over workers: histograms of duration and time to
    /// first byte, and bytes sent, for every label set that has seen a request.
    fn render_requests(&self, s: &mut String) {
        let mut duration = vec![HistogramSnapshot::default(); LABEL_SETS];
        let mut ttfb = vec![HistogramSnapshot::default(); LABEL_SETS];
        let mut bytes = [0u64; Source::ALL.len()];
        for w in &self.workers {
            for i in 0..LABEL_SETS {
                duration[i].add(&w.duration[i]);
                ttfb[i].add(&w.ttfb[i]);
            }
            for (b, c) in bytes.iter_mut().zip(&w.bytes) {
                *b += c.get();
            }
        }
        for (name, help, hists) in [
            (
                "edgemirror_request_duration_seconds",
                "From the first byte of the request head to the last byte of the response.",
                &duration,
            ),
            (
                "edgemirror_request_ttfb_seconds",
                "From the first byte of the request head to the first byte of the response.",
                &ttfb,
            ),
        ] {
            family(s, name, "histogram", help);
            for (i, h) in hists.iter().enumerate().filter(|(_, h)| h.count > 0) {
                let (method, class, source) = labels_of(i);
                let labels = format!("method=\"{method}\",status=\"{class}\",source=\"{source}\"");
                h.render(s, name, &labels);
            }
        }
        let help = "Response bytes sent (heads and bodies), by where the body came from.";
        let by_source = Source::ALL.iter().zip(bytes).map(|(source, b)| (format!("source=\"{}\"", source.as_str()), b));
        samples(s, "edgemirror_response_bytes_total", "counter", help, by_source);
    }
}

/// Upper bounds of the latency histograms' buckets, in microseconds (100 µs to 10 s; a hit is
/// well under a millisecond, a 1 MiB miss a few, a slow origin seconds).
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// A Prometheus histogram over [`LATENCY_BOUNDS_US`]: a count per bucket (not cumulative; the
/// render sums), the count and the sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// A histogram's values read at one time (summed over workers).
#[derive(Clone, Debug, Default)]
struct HistogramSnapshot {
    buckets: [u64; LATENCY_BOUNDS_US.len()],
    count: u64,
    sum_us: u64,
}

impl HistogramSnapshot {
    fn add(&mut self, h: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&h.buckets) {
            *mine += theirs.load(Ordering::Relaxed);
        }
        self.count += h.count.load(Ordering::Relaxed);
        self.sum_us += h.sum_us.load(Ordering::Relaxed);
    }

    fn render(&self, s: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BOUNDS_US.iter().zip(self.buckets) {
            cumulative += n;
            let le = *bound as f64 / 1e6;
            let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        // The count includes observations over the last bound: `+Inf` is the count. It is read
        // apart from the buckets, so a scrape racing an observation could see it behind them.
        let count = self.count.max(cumulative);
        let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(s, "{name}_sum{{{labels}}} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(s, "{name}_count{{{labels}}} {count}");
    }
}

/// Where a response's body came from: the value of its `x-edgemirror-source` header, the
/// access log's `source`, and a metric label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    Memory,
    DiskCache,
    Store,
    /// Streamed from the origin and stored meanwhile.
    Origin,
    /// Streamed from the origin; the store could not take it.
    OriginUnstored,
    /// Streamed from the shared store of record (`store.backend = "s3"`) and stored meanwhile.
    Shared,
    /// Answered by the node itself: errors, S3 writes and listings, redirects passed on.
    #[default]
    Edge,
}

impl Source {
    /// Every source, in declaration order: `source as usize` is its index here.
    pub const ALL: [Source; 7] = [
        Source::Memory,
        Source::DiskCache,
        Source::Store,
        Source::Origin,
        Source::OriginUnstored,
        Source::Shared,
        Source::Edge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::DiskCache => "disk-cache",
            Source::Store => "store",
            Source::Origin => "origin",
            Source::OriginUnstored => "origin-unstored",
            Source::Shared => "shared",
            Source::Edge => "edge",
        }
    }
}

impl From<edgemirror_cache::HotTier> for Source {
    fn from(tier: edgemirror_cache::HotTier) -> Source {
        match tier {
            edgemirror_cache::HotTier::Memory => Source::Memory,
            edgemirror_cache::HotTier::Disk => Source::DiskCache,
        }
    }
}

/// The method label: the methods the data plane serves, and the rest as `other`.
pub const METHODS: [&str; 6] = ["GET", "HEAD", "PUT", "POST", "DELETE", "other"];
/// The status label: its class.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const LABEL_SETS: usize = METHODS.len() * STATUS_CLASSES.len() * Source::ALL.len();

fn label_index(method: &str, status: u16, source: Source) -> usize {
    let m = METHODS.iter().position(|m| *m == method).unwrap_or(METHODS.len() - 1);
    let c = (usize::from(status / 100).clamp(1, 5)) - 1;
    let s = source as usize;
    (m * STATUS_CLASSES.len() + c) * Source::ALL.len() + s
}

fn labels_of(i: usize) -> (&'static str, &'static str, &'static str) {
    let s = i % Source::ALL.len();
    let c = (i / Source::ALL.len()) % STATUS_CLASSES.len();
    let m = i / (Source::ALL.len() * STATUS_CLASSES.len());
    (METHODS[m], STATUS_CLASSES[c], Source::ALL[s].as_str())
}

/// One worker's requests (written by that worker only).
#[derive(Debug)]
pub struct RequestStats {
    duration: Box<[Histogram]>,
    ttfb: Box<[Histogram]>,
    bytes: [Counter; Source::ALL.len()],
}

impl Default for RequestStats {
    fn default() -> Self {
        let hists = || (0..LABEL_SETS).map(|_| Histogram::default()).collect::<Box<[Histogram]>>();
        RequestStats { duration: hists(), ttfb: hists(), bytes: Default::default() }
    }
}

impl RequestStats {
    /// Records one answered request. `ttfb` is `None` when nothing was sent (the client left).
    pub fn observe(
        &self,
        method: &str,
        status: u16,
        source: Source,
        duration: Duration,
        ttfb: Option<Duration>,
        bytes: u64,
    ) {
        let i = label_index(method, status, source);
        self.duration[i].observe(duration);
        if let Some(t) = ttfb {
            self.ttfb[i].observe(t);
        }
        self.bytes[source as usize].add(bytes);
    }
}

/// Origins named in metrics; exchanges with any further origin (a rule set with more, or
/// redirects to many hosts) are counted under `other`, so the label set stays bounded.
pub const MAX_ORIGIN_LABELS: usize = 64;

/// The outcome classes of an exchange with an origin.
const ORIGIN_OUTCOMES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// What one exchange with an origin came to: which origin (`scheme://host[:port]`), its status
/// (`None`: no answer), and the time to its response head. Kept with the fill for the access
/// log of every client that followed it.
#[derive(Clone, Debug)]
pub struct OriginFetch {
    pub url: String,
    pub status: Option<u16>,
    pub elapsed: Duration,
}

impl OriginFetch {
    /// The origin part of the URL: `scheme://authority`.
    pub fn origin(&self) -> &str {
        let start = self.url.find("://").map_or(0, |i| i + 3);
        let end = self.url[start..].find(['/', '?']).map_or(self.url.len(), |i| start + i);
        &self.url[..end]
    }
}

#[derive(Debug, Default)]
struct OriginEntry {
    /// Time to the response head (or to the failure).
    duration: Histogram,
    outcomes: [Counter; ORIGIN_OUTCOMES.len()],
}

/// Exchanges with origins, by origin.
#[derive(Debug, Default)]
pub struct OriginStats {
    entries: Mutex<Vec<(String, OriginEntry)>>,
}

impl OriginStats {
    /// Records one exchange (a handful per miss: a mutex is cheap next to the exchange).
    pub fn observe(&self, fetch: &OriginFetch) {
        let origin = fetch.origin();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = match entries.iter().position(|(o, _)| o == origin) {
            Some(i) => i,
            None if entries.len() < MAX_ORIGIN_LABELS => {
                entries.push((origin.to_string(), OriginEntry::default()));
                entries.len() - 1
            }
            None => match entries.iter().position(|(o, _)| o == "other") {
                Some(i) => i,
                None => {
                    entries.push(("other".to_string(), OriginEntry::default()));
                    entries.len() - 1
                }
            },
        };
        let entry = &entries[i].1;
        entry.duration.observe(fetch.elapsed);
        let outcome = match fetch.status {
            Some(status) => usize::from(status / 100).clamp(2, 5) - 2,
            None => ORIGIN_OUTCOMES.len() - 1,
        };
        entry.outcomes[outcome].inc();
    }

    fn render(&self, s: &mut String) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let name = "edgemirror_origin_fetch_duration_seconds";
        family(s, name, "histogram", "Time to an origin's response head (or to the failure), by origin.");
        for (origin, entry) in entries.iter() {
            let mut snap = HistogramSnapshot::default();
            snap.add(&entry.duration);
            snap.render(s, name, &format!("origin=\"{}\"", escape_label(origin)));
        }
        let help = "Exchanges with origins, by origin and status class (error: no answer).";
        let by_outcome = entries.iter().flat_map(|(origin, entry)| {
            let origin = escape_label(origin);
            ORIGIN_OUTCOMES
                .iter()
                .zip(&entry.outcomes)
                .map(move |(o, c)| (format!("origin=\"{origin}\",status=\"{o}\""), c.get()))
        });
        samples(s, "edgemirror_origin_responses_total", "counter", help, by_outcome);
    }
}

/// Starts a metric family: its `# HELP` and `# TYPE` lines (`kind`: counter, gauge, histogram).
pub fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A whole counter or gauge family: its head, then one sample per `(labels, value)`, all
/// together as the text format requires. `labels` is `a="x",b="y"` with the values escaped
/// ([`escape_label`]), or empty for the family's one unlabelled sample.
pub fn samples<L: std::fmt::Display, V: std::fmt::Display>(
    s: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) {
    family(s, name, kind, help);
    for (labels, value) in samples {
        let labels = labels.to_string();
        if labels.is_empty() {
            let _ = writeln!(s, "{name} {value}");
        } else {
            let _ = writeln!(s, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indexes_round_trip() {
        for (m, method) in METHODS.iter().enumerate() {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                for source in Source::ALL {
                    let status = (c as u16 + 1) * 100 + 4;
                    let i = label_index(method, status, source);
                    assert_eq!(labels_of(i), (METHODS[m], *class, source.as_str()));
                }
            }
        }
        assert_eq!(labels_of(label_index("PATCH", 999, Source::Edge)), ("other", "5xx", "edge"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::default();
        for us in [50, 100, 101, 3_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut snap = HistogramSnapshot::default();
        snap.add(&h);
        let mut s = String::new();
        snap.render(&mut s, "x", "a=\"b\"");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.0001\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.00025\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"0.005\"} 4\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"10\"} 4\n"), "{s}");
        assert!(s.contains("x_bucket{a=\"b\",le=\"+Inf\"} 5\n"), "{s}");
        assert!(s.contains("x_count{a=\"b\"} 5\n"), "{s}");
    }

    #[test]
    fn origin_labels_are_bounded() {
        let stats = OriginStats::default();
        for i in 0..(MAX_ORIGIN_LABELS + 10) {
            let url = format!("http://host{i}.example:80/key?x=1");
            stats.observe(&OriginFetch { url, status: Some(200), elapsed: Duration::from_millis(1) });
        }
        let entries = stats.entries.lock().unwrap();
        assert_eq!(entries.len(), MAX_ORIGIN_LABELS + 1);
        assert_eq!(entries[0].0, "http://host0.example:80");
        assert_eq!(entries.last().unwrap().0, "other");
    }
}
