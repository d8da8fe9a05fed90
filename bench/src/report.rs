//! Rendering results: a human report, one JSON object, or one `summary:` line of `key=value`
//! pairs (what `bench/peers.sh` reads with awk).
//!
//! Units: latencies in microseconds (`*_us`), rates per second, GB = 10^9 bytes. `body` counts
//! response body bytes; `wire` adds the response heads.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cold::ColdResult;
use crate::conn::Failure;
use crate::stats::{Quantiles, Stats};

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Readable report, then the `summary:` line.
    Human,
    /// One JSON object.
    Json,
    /// Only the `summary:` line.
    Line,
}

/// Describes the run for the report's first line and the JSON.
pub struct RunInfo {
    pub target: String,
    pub first_path: String,
    pub keys: usize,
    pub mix: String,
    pub connections: usize,
    pub threads: usize,
    pub driver: &'static str,
    pub warmup: Duration,
}

pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_bytes_per_s(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} GB/s", bps / 1e9)
    } else {
        format!("{:.1} MB/s", bps / 1e6)
    }
}

/// Common `key=value` pairs for status, failures and tags.
fn counts_kv(stats: &Stats, line: &mut String) {
    let _ = write!(line, " ok={} non2xx={} errors={}", stats.ok_2xx(), stats.non_2xx_total(), stats.failures_total());
    for (code, n) in &stats.non_2xx {
        let _ = write!(line, " status_{code}={n}");
    }
    for f in Failure::ALL {
        let n = stats.failures[f.index()];
        if n > 0 {
            let _ = write!(line, " errors_{}={n}", f.as_str());
        }
    }
    for (tag, n) in &stats.tags {
        let tag: String = tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let _ = write!(line, " tag_{tag}={n}");
    }
    if stats.untagged > 0 {
        let _ = write!(line, " untagged={}", stats.untagged);
    }
}

fn counts_json(stats: &Stats, obj: &mut Map<String, Value>) {
    obj.insert("ok".into(), json!(stats.ok_2xx()));
    obj.insert("non_2xx".into(), json!(stats.non_2xx_total()));
    let statuses: Map<String, Value> = stats.non_2xx.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    obj.insert("non_2xx_by_status".into(), Value::Object(statuses));
    obj.insert("errors".into(), json!(stats.failures_total()));
    let errors: Map<String, Value> =
        Failure::ALL.iter().map(|f| (f.as_str().to_string(), json!(stats.failures[f.index()]))).collect();
    obj.insert("errors_by_kind".into(), Value::Object(errors));
    let tags: Map<String, Value> = stats.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    obj.insert("header_values".into(), Value::Object(tags));
    obj.insert("header_missing".into(), json!(stats.untagged));
}

fn quantiles_json(q: &Quantiles) -> Value {
    json!({"min": q.min, "p50": q.p50, "p90": q.p90, "p99": q.p99, "p999": q.p999,
           "max": q.max, "mean": q.mean})
}

fn human_counts(stats: &Stats, out: &mut String) {
    let _ = write!(out, "  status    2xx {}  non-2xx {}", stats.ok_2xx(), stats.non_2xx_total());
    if !stats.non_2xx.is_empty() {
        let list: Vec<String> = stats.non_2xx.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(out, " ({})", list.join(", "));
    }
    let _ = write!(out, "\n  errors    {}", stats.failures_total());
    if stats.failures_total() > 0 {
        let list: Vec<String> = Failure::ALL
            .iter()
            .filter(|f| stats.failures[f.index()] > 0)
            .map(|f| format!("{} {}", f.as_str(), stats.failures[f.index()]))
            .collect();
        let _ = write!(out, " ({})", list.join(", "));
    }
    out.push('\n');
    if !stats.tags.is_empty() || stats.untagged > 0 {
        let mut list: Vec<String> = stats.tags.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if stats.untagged > 0 {
            list.push(format!("(absent) {}", stats.untagged));
        }
        let _ = writeln!(out, "  header    {}", list.join(", "));
    }
}

pub fn load(info: &RunInfo, stats: &Stats, elapsed: Duration, cpu: Option<Duration>, output: Output) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rps = stats.responses as f64 / secs;
    let body_bps = stats.body_bytes as f64 / secs;
    let wire_bps = (stats.body_bytes + stats.head_bytes) as f64 / secs;
    let q = Quantiles::of(&stats.latency);

    let mut line = format!(
        "summary: mode=load target={} conns={} threads={} driver={} mix={} keys={} secs={:.3} \
         requests={} rps={:.1} body_bps={:.0} wire_bps={:.0} gbps={:.4} p50_us={:.1} \
         p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1}",
        info.target,
        info.connections,
        info.threads,
        info.driver,
        info.mix,
        info.keys,
        secs,
        stats.responses,
        rps,
        body_bps,
        wire_bps,
        body_bps / 1e9,
        q.p50,
        q.p90,
        q.p99,
        q.p999,
        q.max,
        q.mean
    );
    // emload's own CPU use in the window, as a share of one core.
    let cpu_pct = cpu.map(|c| 100.0 * c.as_secs_f64() / secs);
    if let Some(p) = cpu_pct {
        let _ = write!(line, " cpu_pct={p:.0}");
    }
    counts_kv(stats, &mut line);

    match output {
        Output::Line => line,
        Output::Json => {
            let mut obj = Map::new();
            obj.insert("mode".into(), json!("load"));
            obj.insert("emload_cpu_pct".into(), json!(cpu_pct));
            obj.insert("target".into(), json!(info.target));
            obj.insert("first_path".into(), json!(info.first_path));
            obj.insert("keys".into(), json!(info.keys));
            obj.insert("mix".into(), json!(info.mix));
            obj.insert("connections".into(), json!(info.connections));
            obj.insert("threads".into(), json!(info.threads));
            obj.insert("driver".into(), json!(info.driver));
            obj.insert("warmup_s".into(), json!(info.warmup.as_secs_f64()));
            obj.insert("duration_s".into(), json!(secs));
            obj.insert("requests".into(), json!(stats.responses));
            obj.insert("requests_per_s".into(), json!(rps));
            obj.insert("body_bytes".into(), json!(stats.body_bytes));
            obj.insert("body_bytes_per_s".into(), json!(body_bps));
            obj.insert("wire_bytes_per_s".into(), json!(wire_bps));
            obj.insert("latency_us".into(), quantiles_json(&q));
            counts_json(stats, &mut obj);
            Value::Object(obj).to_string()
        }
        Output::Human => {
            let mut out = String::new();
            let more = match info.keys {
                1 => String::new(),
                n => format!(" (+{} more keys)", n - 1),
            };
            let _ = writeln!(
                out,
                "emload {}{}{more}, mix {}, {} connections on {} thread(s) ({}), {:.2} s after {:.2} s warm-up",
                info.target,
                info.first_path,
                info.mix,
                info.connections,
                info.threads,
                info.driver,
                secs,
                info.warmup.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "  requests  {} = {rps:.1} req/s\n  bytes     body {} ({} bytes), wire {}",
                stats.responses,
                fmt_bytes_per_s(body_bps),
                stats.body_bytes,
                fmt_bytes_per_s(wire_bps)
            );
            let _ = writeln!(
                out,
                "  latency   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
                fmt_us(q.p50),
                fmt_us(q.p90),
                fmt_us(q.p99),
                fmt_us(q.p999),
                fmt_us(q.max),
                fmt_us(q.mean)
            );
            if let Some(p) = cpu_pct {
                let _ = writeln!(out, "  cpu       emload used {p:.0}% of one core");
            }
            human_counts(stats, &mut out);
            out.push_str(&line);
            out
        }
    }
}

pub fn cold(info: &RunInfo, rounds: usize, result: &ColdResult, output: Output) -> String {
    let stats = &result.stats;
    let ttfb = Quantiles::of(&stats.ttfb);
    let total = Quantiles::of(&stats.latency);
    let last = Quantiles::of(&result.last_finish);

    let mut line = format!(
        "summary: mode=cold target={} conns={} rounds={} driver={} responses={} \
         ttfb_min_us={:.1} ttfb_p50_us={:.1} ttfb_p90_us={:.1} ttfb_p99_us={:.1} ttfb_max_us={:.1} \
         total_p50_us={:.1} total_p99_us={:.1} total_max_us={:.1} last_p50_us={:.1} last_max_us={:.1} \
         body_bytes={}",
        info.target,
        info.connections,
        rounds,
        info.driver,
        stats.responses,
        ttfb.min,
        ttfb.p50,
        ttfb.p90,
        ttfb.p99,
        ttfb.max,
        total.p50,
        total.p99,
        total.max,
        last.p50,
        last.max,
        stats.body_bytes
    );
    counts_kv(stats, &mut line);

    match output {
        Output::Line => line,
        Output::Json => {
            let mut obj = Map::new();
            obj.insert("mode".into(), json!("cold"));
            obj.insert("target".into(), json!(info.target));
            obj.insert("first_path".into(), json!(info.first_path));
            obj.insert("concurrency".into(), json!(info.connections));
            obj.insert("rounds".into(), json!(rounds));
            obj.insert("driver".into(), json!(info.driver));
            obj.insert("responses".into(), json!(stats.responses));
            obj.insert("body_bytes".into(), json!(stats.body_bytes));
            obj.insert("ttfb_us".into(), quantiles_json(&ttfb));
            obj.insert("complete_us".into(), quantiles_json(&total));
            obj.insert("round_last_finish_us".into(), quantiles_json(&last));
            counts_json(stats, &mut obj);
            let each: Vec<Value> = result
                .requests
                .iter()
                .map(|r| {
                    json!({"round": r.round, "status": r.status,
                           "error": r.failure.map(Failure::as_str),
                           "ttfb_us": r.ttfb.map(|t| t.as_secs_f64() * 1e6),
                           "total_us": r.total.as_secs_f64() * 1e6,
                           "body_bytes": r.body_bytes, "header": r.tag})
                })
                .collect();
            obj.insert("requests".into(), Value::Array(each));
            Value::Object(obj).to_string()
        }
        Output::Human => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "emload --cold {}{}: {} concurrent GET(s) x {} round(s) ({})",
                info.target, info.first_path, info.connections, rounds, info.driver
            );
            let _ = writeln!(
                out,
                "  ttfb      min {}  p50 {}  p90 {}  p99 {}  max {}",
                fmt_us(ttfb.min),
                fmt_us(ttfb.p50),
                fmt_us(ttfb.p90),
                fmt_us(ttfb.p99),
                fmt_us(ttfb.max)
            );
            let _ = writeln!(
                out,
                "  complete  min {}  p50 {}  p90 {}  p99 {}  max {}",
                fmt_us(total.min),
                fmt_us(total.p50),
                fmt_us(total.p90),
                fmt_us(total.p99),
                fmt_us(total.max)
            );
            let _ = writeln!(
                out,
                "  last done per round: p50 {}  max {}; body {} bytes",
                fmt_us(last.p50),
                fmt_us(last.max),
                stats.body_bytes
            );
            human_counts(stats, &mut out);
            if info.connections <= 16 && result.requests.len() <= 64 {
                for r in &result.requests {
                    let _ = writeln!(
                        out,
                        "    round {:>3}: {} ttfb {} total {}{}",
                        r.round,
                        r.status.map(|s| s.to_string()).unwrap_or_else(|| r
                            .failure
                            .map(Failure::as_str)
                            .unwrap_or("?")
                            .into()),
                        r.ttfb.map(|t| fmt_us(t.as_secs_f64() * 1e6)).unwrap_or("-".into()),
                        fmt_us(r.total.as_secs_f64() * 1e6),
                        r.tag.as_deref().map(|t| format!(" [{t}]")).unwrap_or_default()
                    );
                }
            }
            out.push_str(&line);
            out
        }
    }
}
