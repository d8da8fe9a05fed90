//! End-to-end suite: the real `edgemirror` binary against a real, scriptable origin.
//!
//! Compiled as the integration test `e2e` of the node package (see `node/Cargo.toml`), so
//! `CARGO_BIN_EXE_edgemirror` points at the binary built from this workspace.
//!
//! - `support`: the harness (origin server, raw client, node launcher, shared assertions).
//! - `harness`: the harness tested against itself (origin <-> client), no node involved; run
//!   these first when a node test fails in a way that smells like the harness.
//! - `mirror`: back-to-origin on a miss: what the origin sees, what the client gets, rules.
//! - `store`: what happens once an object is stored: hits, HEAD, keep-alive, pipelining,
//!   restarts and crashes.
//! - `deploy`: the systemd unit and production config under `deploy/` (systemd-analyze verify,
//!   `edgemirror --check`).
//! - `fleet`: three edges in front of one origin: one origin fetch per object across the fleet
//!   (concurrent misses on every edge included), a dead edge skipped, the peers' secret.
//! - `errors`: origin failures (404, 5xx, refused, slow, truncated), bad requests, bad configs.
//! - `purge`: the purge API: no tier serves a purged object, across restarts too; fills racing
//!   a purge are not stored; refetch serves the old copy until the new one commits.
//! - `s3`: the S3 API (PutObject, GetObject, HeadObject, DeleteObject, HeadBucket) signed with
//!   SigV4, by a Rust signer and by boto3; uploads checked before they are stored.
//! - `rules`: the backSource admin API (auth, validation naming fields, persistence) and every
//!   rule field against a recording origin (key rewrites, query, headers, redirects, pooling).
//! - `capacity`: store.max_bytes and bucket modes: a cache-mode bucket evicts to stay within it,
//!   a mirror-mode bucket keeps everything.
//! - `coalesce`: one origin fetch per object (200 concurrent misses, late joiners, leavers,
//!   mid-body failure), slow readers, ranges, conditionals, HEAD, Content-MD5, bounded memory.
//! - `full_disk`: a store that cannot take an object (a real full tmpfs, objects over
//!   `store.max_object_bytes`): misses are still answered whole (`origin-unstored`), coalesced,
//!   verified, not stored; committed objects survive; storing resumes when space returns.
//! - `hostile`: smuggling, limits, slowloris, idle timeout, pipelining, HTTP/1.0, methods.
//! - `internals`: defects and holes found by probing (path traversal, keep-alive 304, lingering
//!   close, idle floods and descriptors, one process per store directory).
//! - `operator`: the access log (JSON, combined, SIGUSR1 reopen, flushed at SIGTERM) and the
//!   Prometheus metrics (histograms by source, origin exchanges; `promtool check metrics`).
//! - `reload`: SIGHUP and `POST /v1/reload`: rules, buckets, keys and certificates for new
//!   requests, requests in flight finished, bad files refused by field, restart-only settings named.
//! - `shared`: edges over a shared store of record (`store.backend = "s3"`, a real 3-node Garage):
//!   one origin fetch and one shared write per object, a Garage node and an edge killed, writes
//!   through one edge served by all within the staleness bound, boto3 listing and multipart.
//! - `tls`: the HTTPS listener (SNI, ALPN, versions, plain HTTP on the TLS port), https origins
//!   (verification, insecure option), certificate config errors.
//!
//! Run: `cargo test -p edgemirror-node --test e2e` (`-- harness::` for the self-tests only).
//! Every test binds `127.0.0.1:0` and bounds every wait, so tests run in parallel and a broken
//! node fails them instead of hanging them.

mod support;

mod capacity;
mod coalesce;
mod deploy;
mod errors;
mod fleet;
mod full_disk;
mod harness;
mod hostile;
mod internals;
mod mirror;
mod operator;
mod purge;
mod reload;
mod rules;
mod s3;
mod shared;
mod store;
mod tls;
