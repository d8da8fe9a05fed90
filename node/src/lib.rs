//! edgemirror: an edge node that serves bucket objects over HTTP from a local object store and
//! migrates an existing site into itself through mirror back-to-origin.
//!
//! Modules are listed top-down: each one calls only modules below it (a test,
//! `tests/layering.rs`, fails on an import cycle).
//!
//! # The path of a GET
//!
//! 1. [`server`] (start-up): each worker thread runs a monoio runtime pinned to its core and
//!    accepts on its own SO_REUSEPORT listener; the state a worker sees is in [`worker`].
//! 2. [`conn`]: the connection loop reads into a reused buffer; `edgemirror_proto` parses the
//!    head in place (malformed -> 400 and close). Keep-alive and pipelining loop here. On the
//!    HTTPS listener the bytes pass through [`stream::TlsStream`] (rustls, certificates from
//!    [`tls`]), which seals each write into records sent with one `send`.
//! 3. [`object`]: [`route`] finds the bucket and key (path style `/{bucket}/{key}`, or
//!    virtual-host `{bucket}.{s3.domain}`; unknown bucket -> 404 `NoSuchBucket`), then looks the
//!    object up: foyer memory -> foyer disk -> segment store (`edgemirror_cache`). A hit is
//!    answered by [`stored`] (conditionals, ranges, 304) from the cached `Bytes` or a slice of
//!    the mapped segment, or, for a body of 32-128 KiB over plain HTTP, with `sendfile` from
//!    the segment file ([`stored::SENDFILE_BYTES`]); a store hit whose bytes are not in memory is
//!    read with io_uring first ([`stored::read_cold`]), so the core does not stall in a page
//!    fault.
//!
//! # The path of a miss
//!
//! 4. [`object::serve`] finds the bucket's first matching rule (none -> 404 `NoSuchKey`);
//!    [`mirror`] turns it into the origin request (refusing keys that would leave the
//!    MirrorURL's directory). Concurrent misses of one key (any core) share one fetch through
//!    the table in [`inflight`]: the first starts the producer, [`fill`], which fetches
//!    `MirrorURL + key` through [`origin`] and appends each body piece to a store record; every
//!    client follows that record at its own pace ([`follow`]), Range applied. Commit (length and
//!    Content-MD5 verified) makes the object visible. Origin 404 -> 404, other failures -> 424
//!    `MirrorFailed` (the reason is logged), a body that breaks mid-way -> client connections
//!    are cut and nothing is stored. When the store cannot take the object (full, too large),
//!    the fill keeps the body in memory for its followers instead (bounded, `inflight`) and
//!    answers `x-edgemirror-source: origin-unstored`. In a fleet ([`fleet`]), a key another node
//!    owns (rendezvous hashing) is asked of that node first: the fill's origin is its owner.
//!
//! # Over a shared store of record (`store.backend = "s3"`)
//!
//! The local tiers are then a cache: a hit older than `store.s3.staleness_ms` is checked with
//! the shared store first (`object::is_current`), a miss reads it before the rules
//! ([`mirror::shared_plans`], [`upstream::shared_answer`], the fill), and a PUT, copy or
//! multipart complete is written there before the client is answered ([`backend::publish`]); a
//! fill from the origin is written there behind its clients ([`backend::upload_behind`]).
//! [`sharedstore`] holds the configuration, the names and own metadata of objects there, and
//! when each local copy was last found current; [`backend`] makes the requests.
//!
//! # Writing a response
//!
//! Handlers answer through [`respond`] (`Conn`, `Request`, `Disposition`, timed writes); heads
//! are built by [`reply`] (one builder for every response about an object), errors come from
//! [`error`] (one place maps an error to its status and S3 code).
//!
//! # Around the data plane
//!
//! [`admin`] serves health, metrics, the rule API (`/v1/regions/{region}/buckets/{bucket}/
//! backSource`) and the web console on a separate listener; [`reload`] reads the config file
//! again on SIGHUP or `POST /v1/reload` (workers take the config per request: [`worker::Worker::config`]); [`config`] turns TOML into validated types; [`rules`]
//! holds the mirror rule model and the rule table; [`buckets`] the bucket table (declared in the
//! config, or created through S3); [`metrics`] holds the counters and the per-core request
//! histograms. Every answered request is recorded once, by [`s3::record`]: the connection's
//! tally ([`respond::Tally`]: status, bytes and first-byte time taken as it writes, the source
//! and origin exchange set by the handler) goes to the metrics and, when it is on, to the
//! [`accesslog`] (formatted on the core, written by a background thread). Connections, fills,
//! admin jobs and shared-store uploads are spawned through [`task`]: a panic in one ends that
//! task alone, counted and logged, and its worker serves on. A panic anywhere else on a worker
//! (an accept loop) stops the node, flushed, for its supervisor to restart ([`server`]).

pub mod accesslog;
pub mod admin;
pub mod backend;
pub mod body;
pub mod buckets;
pub mod config;
pub mod conn;
pub mod dns;
pub mod error;
pub mod fill;
pub mod fleet;
pub mod follow;
pub mod hash;
pub mod inflight;
pub mod iovec;
pub mod memtrim;
pub mod metrics;
pub mod mirror;
pub mod negative;
pub mod netguard;
pub mod object;
pub mod origin;
pub mod protect;
pub mod readbuf;
pub mod reload;
pub mod reply;
pub mod respond;
pub mod route;
pub mod rules;
pub mod s3;
pub mod server;
pub mod sharedstore;
pub mod stored;
pub mod stream;
pub mod task;
pub mod tls;
pub mod upstream;
pub mod worker;

pub use config::Config;
pub use server::{start, Node};
