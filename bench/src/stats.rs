//! Counters and latency histograms: one [`Stats`] per runtime thread, merged at the end.
//!
//! Latencies are recorded in nanoseconds into an HDR histogram (3 significant digits, up to
//! [`MAX_LATENCY_NS`]); a sample above the bound is clamped, not lost. Tag counts (values of
//! `--count-header`) are kept by value so threads with different interning orders merge.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::conn::{Failure, Response};

/// Largest latency the histograms represent exactly: 100 s.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

pub struct Stats {
    /// Completed responses, any status.
    pub responses: u64,
    /// By status class: index 1..=5 for 1xx..5xx, 0 for anything else.
    pub by_class: [u64; 6],
    /// Every status that is not 2xx, exactly.
    pub non_2xx: BTreeMap<u16, u64>,
    pub failures: [u64; Failure::ALL.len()],
    pub body_bytes: u64,
    pub head_bytes: u64,
    pub latency: Histogram<u64>,
    /// Time to first byte, used by the cold mode.
    pub ttfb: Histogram<u64>,
    pub tags: BTreeMap<String, u64>,
    /// Responses that lacked the counted header.
    pub untagged: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            responses: 0,
            by_class: [0; 6],
            non_2xx: BTreeMap::new(),
            failures: [0; Failure::ALL.len()],
            body_bytes: 0,
            head_bytes: 0,
            latency: new_histogram(),
            ttfb: new_histogram(),
            tags: BTreeMap::new(),
            untagged: 0,
        }
    }
}

impl Stats {
    /// Records a completed response (tag counts are added separately, by index, see
    /// [`crate::load`]).
    pub fn record(&mut self, resp: &Response, latency_ns: u64) {
        self.responses += 1;
        let class = (resp.status / 100) as usize;
        self.by_class[if (1..=5).contains(&class) { class } else { 0 }] += 1;
        if class != 2 {
            *self.non_2xx.entry(resp.status).or_default() += 1;
        }
        self.body_bytes += resp.body_bytes;
        self.head_bytes += resp.head_bytes as u64;
        self.latency.saturating_record(latency_ns.max(1));
    }

    pub fn fail(&mut self, f: Failure) {
        self.failures[f.index()] += 1;
    }

    pub fn ok_2xx(&self) -> u64 {
        self.by_class[2]
    }

    pub fn non_2xx_total(&self) -> u64 {
        self.responses - self.by_class[2]
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.iter().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.responses += other.responses;
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for (k, v) in &other.non_2xx {
            *self.non_2xx.entry(*k).or_default() += v;
        }
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        self.body_bytes += other.body_bytes;
        self.head_bytes += other.head_bytes;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.ttfb.add(&other.ttfb);
        for (k, v) in &other.tags {
            *self.tags.entry(k.clone()).or_default() += v;
        }
        self.untagged += other.untagged;
    }
}

/// Quantiles of a histogram in microseconds (0 for an empty one).
#[derive(Clone, Copy, Debug, Default)]
pub struct Quantiles {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Quantiles {
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Quantiles {
            min: us(h.min()),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn resp(status: u16, body: u64) -> Response {
        Response { status, head_bytes: 100, body_bytes: body, keep_alive: true, first_byte: Instant::now(), tag: None }
    }

    #[test]
    fn records_and_merges() {
        let mut a = Stats::default();
        a.record(&resp(200, 10), 1_000);
        a.record(&resp(404, 5), 2_000);
        a.tags.insert("memory".into(), 2);
        let mut b = Stats::default();
        b.record(&resp(200, 10), 3_000_000);
        b.fail(Failure::Timeout);
        b.tags.insert("memory".into(), 1);
        a.merge(&b);
        assert_eq!((a.responses, a.ok_2xx(), a.non_2xx_total()), (3, 2, 1));
        assert_eq!(a.non_2xx[&404], 1);
        assert_eq!(a.failures_total(), 1);
        assert_eq!((a.body_bytes, a.head_bytes), (25, 300));
        assert_eq!(a.tags["memory"], 3);
        let q = Quantiles::of(&a.latency);
        assert!((q.p50 - 2.0).abs() < 0.01 && (q.max - 3000.0).abs() < 3.0, "{q:?}");
    }
}
