//! Counters, shared by all workers and read by the admin API (`GET /metrics`, Prometheus text).
//! Relaxed atomics: each is an independent tally.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub requests: Counter,
    pub bad_requests: Counter,
    pub hits_memory: Counter,
    pub hits_disk_cache: Counter,
    pub hits_store: Counter,
    /// io_uring reads of stored bytes that were not in memory (a record's head and body, or a
    /// 1 MiB window of a big body), and the bytes read (`store.cold_reads = "async"`).
    pub cold_reads: Counter,
    pub cold_read_bytes: Counter,
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
}

impl Metrics {
    /// Renders the counters, plus the counters and gauges kept elsewhere (the store's), in
    /// Prometheus text format.
    pub fn render(&self, counters_elsewhere: &[(&str, u64)], gauges: &[(&str, u64)]) -> String {
        let counters: [(&str, &Counter); 25] = [
            ("edgemirror_connections_accepted_total", &self.connections_accepted),
            ("edgemirror_connections_refused_total", &self.connections_refused),
            ("edgemirror_requests_total", &self.requests),
            ("edgemirror_bad_requests_total", &self.bad_requests),
            ("edgemirror_hits_memory_total", &self.hits_memory),
            ("edgemirror_hits_disk_cache_total", &self.hits_disk_cache),
            ("edgemirror_hits_store_total", &self.hits_store),
            ("edgemirror_store_cold_reads_total", &self.cold_reads),
            ("edgemirror_store_cold_read_bytes_total", &self.cold_read_bytes),
            ("edgemirror_misses_no_rule_total", &self.misses_no_rule),
            ("edgemirror_origin_fetches_total", &self.origin_fetches),
            ("edgemirror_origin_heads_total", &self.origin_heads),
            ("edgemirror_coalesced_misses_total", &self.coalesced_misses),
            ("edgemirror_origin_not_found_total", &self.origin_not_found),
            ("edgemirror_origin_failures_total", &self.origin_failures),
            ("edgemirror_origin_body_failures_total", &self.origin_body_failures),
            ("edgemirror_fill_store_failures_total", &self.fill_store_failures),
            ("edgemirror_fills_unstored_total", &self.fills_unstored),
            ("edgemirror_fills_superseded_total", &self.fills_superseded),
            ("edgemirror_objects_purged_total", &self.objects_purged),
            ("edgemirror_objects_uploaded_total", &self.objects_uploaded),
            ("edgemirror_bytes_uploaded_total", &self.bytes_uploaded),
            ("edgemirror_objects_deleted_total", &self.objects_deleted),
            ("edgemirror_objects_mirrored_total", &self.objects_mirrored),
            ("edgemirror_origin_bytes_total", &self.bytes_from_origin),
        ];
        let mut s = String::with_capacity(2048);
        for (name, c) in counters {
            let _ = writeln!(s, "# TYPE {name} counter\n{name} {}", c.get());
        }
        for (name, v) in counters_elsewhere {
            let _ = writeln!(s, "# TYPE {name} counter\n{name} {v}");
        }
        for (name, v) in gauges {
            let _ = writeln!(s, "# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}
