//! edgemirror: an edge node that serves bucket objects over HTTP from a local object store and
//! migrates an existing site into itself through mirror back-to-origin.
//!
//! # The path of a GET
//!
//! 1. [`server`]: each worker thread runs a monoio runtime pinned to its core and accepts on its
//!    own SO_REUSEPORT listener.
//! 2. [`conn`]: the connection loop reads into a reused buffer; `edgemirror_proto` parses the
//!    head in place (malformed -> 400 and close). Keep-alive and pipelining loop here.
//! 3. [`object`]: routes `/{bucket}/{key}` (unknown bucket -> 404 `NoSuchBucket`), then looks the
//!    object up: foyer memory -> foyer disk -> segment store (`edgemirror_cache`). A hit is
//!    answered from the cached `Bytes` or a slice of the mapped segment.
//! 4. [`mirror`]: on a miss, the bucket's first matching rule (none -> 404 `NoSuchKey`) names an
//!    origin. [`fill`]: concurrent misses of one key (any core) share one fetch; the first starts
//!    a fill task, which fetches `MirrorURL + key` through [`origin`] and appends each body piece
//!    to a store record; every client follows that record at its own pace (zero-copy slices of
//!    the segment mapping), Range applied. Commit (length and Content-MD5 verified) makes the
//!    object visible. Origin 404 -> 404, other failures -> 424 `MirrorFailed`, a body that breaks
//!    mid-way -> client connections are cut and nothing is stored.
//! 5. [`reply`] writes response heads (and S3 XML errors, [`error`]) into a reused buffer.
//!
//! [`config`] turns TOML into validated types; [`rules`] holds the mirror rule model and the
//! rule table; [`admin`] serves health, metrics and the rule API (`/v1/regions/{region}/buckets/
//! {bucket}/backSource`) on a separate listener; [`metrics`] holds the counters.

pub mod admin;
pub mod config;
pub mod conn;
pub mod error;
pub mod fill;
pub mod hash;
pub mod iovec;
pub mod metrics;
pub mod mirror;
pub mod object;
pub mod origin;
pub mod reply;
pub mod rules;
pub mod server;
pub mod stream;
pub mod tls;

pub use config::Config;
pub use server::{start, Node};
