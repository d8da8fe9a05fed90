//! `emload`: an HTTP/1.1 load generator for edgemirror and its peers (nginx, Varnish).
//!
//! Two modes:
//! - steady load ([`load`]): N keep-alive connections, each a closed loop of GETs (no
//!   pipelining), over a key set drawn uniform, Zipf(s) or in sequence ([`mix`]), for a warm-up
//!   and then a fixed measured window; reports req/s, body and wire bytes/s, latency percentiles
//!   (HDR histogram), non-2xx and error counts;
//! - `--cold` ([`cold`]): C concurrent GETs of one key sent at once, per round; reports the time
//!   to first byte of each and when the last one finished (the miss path and its coalescing).
//!
//! Either mode can upload instead: `--put-bytes N --s3-key ACCESS:SECRET` makes every request an
//! S3 PutObject of N bytes (signed with SigV4), for the store's write path.
//!
//! Efficiency, so the generator is not the bottleneck on one core: requests are rendered once
//! ([`target`]); each thread is one monoio runtime (epoll by default, `--driver io-uring`)
//! driving many connections; a response is parsed in place and its body is counted, not kept
//! ([`conn`]); per-thread statistics are merged only at the end ([`stats`]).
//!
//! Output ([`report`]): human, `--output json`, or `--output line` (one `summary:` line of
//! `key=value` pairs). Example:
//!
//! ```text
//! emload -c 64 -d 10 -w 2 --url-template 'http://127.0.0.1:8080/bucket/obj-{}' --keys 500 \
//!        --mix zipf:0.99 --count-header x-edgemirror-source
//! emload --cold -c 1000 --url http://127.0.0.1:8080/bucket/big-object
//! ```

mod cold;
mod conn;
mod load;
mod mix;
mod report;
mod stats;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use crate::mix::Mix;
use crate::report::{Output, RunInfo};
use crate::target::{TargetSpec, Targets};

#[derive(Parser, Debug)]
#[command(name = "emload", version, about = "HTTP/1.1 load generator (keep-alive, no pipelining)")]
struct Args {
    /// Connections (steady load), or concurrent requests per round (--cold).
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Runtime threads; connections are spread over them. One drove ~160k req/s of 1 KiB here.
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Measured window in seconds (with --requests: the upper bound of the run).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds before the window; its responses are not counted.
    #[arg(short = 'w', long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop after this many requests in total; every response counts (no warm-up).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// A URL to request (repeatable). http:// only; all URLs share one host:port.
    #[arg(long)]
    url: Vec<String>,
    /// A URL with `{}` for the key number: --keys URLs, numbered from --key-offset.
    #[arg(long)]
    url_template: Option<String>,
    /// Number of keys the template expands to.
    #[arg(long, default_value_t = 1)]
    keys: u64,
    /// First key number of the template.
    #[arg(long, default_value_t = 0)]
    key_offset: u64,
    /// A file of URLs, one per line; or of paths, with --host.
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// host:port for the paths of --url-file.
    #[arg(long)]
    host: Option<String>,
    /// Key mix: uniform, zipf:S (e.g. zipf:0.99), or seq.
    #[arg(long, default_value = "uniform")]
    mix: Mix,
    /// Seed of the key choice, for repeatable runs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// S3 PutObject load: PUT a body of this many bytes to each URL instead of a GET (signed
    /// with --s3-key; the URLs are /bucket/key paths).
    #[arg(long)]
    put_bytes: Option<usize>,
    /// ACCESS:SECRET of the S3 key that signs --put-bytes requests.
    #[arg(long)]
    s3_key: Option<String>,
    /// Region the --put-bytes requests are signed for.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Count the values of this response header (e.g. x-edgemirror-source, x-cache-status).
    #[arg(long)]
    count_header: Option<String>,
    /// Per-request timeout (and per connect), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Size of each socket read, in KiB.
    #[arg(long, default_value_t = 64)]
    read_kib: usize,
    /// Miss-path mode: C concurrent GETs of one key, sent at once; see --rounds.
    #[arg(long)]
    cold: bool,
    /// --cold: rounds; round r requests key r (use fresh keys for a cold miss each round).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// --cold: milliseconds to wait after each round, untimed, so that every GET finds the
    /// server idle, done with what the last one left it: the latency of a miss on its own.
    /// 0 = back to back, where at large sizes the rounds keep the server's core busy.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// --cold: write every request (round, status, ttfb, total, ..., when it was sent) to this
    /// CSV file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Open loop: start this many requests a second in all (spread over the threads), each on
    /// the next free connection; latency counts from when a request was due, so a server that
    /// falls behind is charged for the wait (no coordinated omission). 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Event driver of the load threads (epoll made the servers faster here; see load.rs).
    #[arg(long, value_enum, default_value_t = load::Driver::Epoll)]
    driver: load::Driver,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        bail!("--{what} {s}: expected seconds >= 0");
    }
    Ok(Duration::from_secs_f64(s))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let targets = Targets::build(&TargetSpec {
        urls: args.url.clone(),
        template: args.url_template.clone(),
        keys: args.keys,
        key_offset: args.key_offset,
        url_file: args.url_file.clone(),
        host: args.host.clone(),
        headers: args.headers.clone(),
        upload: match (args.put_bytes, &args.s3_key) {
            (None, _) => None,
            (Some(_), None) => bail!("--put-bytes needs --s3-key ACCESS:SECRET"),
            (Some(bytes), Some(key)) => {
                let Some((access_key, secret_key)) = key.split_once(':') else {
                    bail!("--s3-key {key:?}: expected ACCESS:SECRET");
                };
                Some(target::Upload {
                    bytes,
                    access_key: access_key.into(),
                    secret_key: secret_key.into(),
                    region: args.region.clone(),
                })
            }
        },
    })?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let read_bytes = args.read_kib.clamp(4, 16 * 1024) * 1024;
    let threads = if args.cold { 1 } else { args.threads.clamp(1, args.connections) };
    let info = RunInfo {
        target: targets.addr.to_string(),
        first_path: targets.first_path.clone(),
        keys: targets.requests.len(),
        mix: args.mix.to_string(),
        connections: args.connections,
        threads,
        driver: args.driver.as_str(),
        warmup: if args.requests.is_some() { Duration::ZERO } else { secs(args.warmup, "warmup")? },
    };

    let text = if args.cold {
        let result = cold::run(&cold::ColdConfig {
            addr: targets.addr,
            requests: targets.requests,
            concurrency: args.connections,
            rounds: args.rounds.max(1),
            pause: Duration::from_millis(args.pause_ms),
            timeout,
            read_bytes,
            count_header: args.count_header.clone(),
            driver: args.driver,
        })?;
        if let Some(path) = &args.csv {
            cold::write_csv(path, &result)?;
        }
        report::cold(&info, args.rounds.max(1), &result, args.output)
    } else {
        let result = load::run(&load::LoadConfig {
            addr: targets.addr,
            requests: targets.requests,
            connections: args.connections,
            threads,
            duration: secs(args.duration, "duration")?,
            warmup: info.warmup,
            max_requests: args.requests,
            mix: args.mix,
            seed: args.seed,
            count_header: args.count_header.clone(),
            timeout,
            read_bytes,
            driver: args.driver,
            rate: (args.rate > 0.0).then_some(args.rate),
        })?;
        report::load(&info, &result.stats, result.elapsed, result.cpu, args.output)
    };
    println!("{text}");
    Ok(())
}
