//! The state a request handler sees: per-core ([`Worker`]) and process-wide ([`Shared`]).
//!
//! Connections never move between cores, so a worker's state (date cache, request ids, origin
//! connection pool, open-connection count) lives in plain `Cell`s and `RefCell`s on its thread.
//! What every core shares is kept small and explicit in [`Shared`]: the validated config, the
//! store and hot cache (thread-safe themselves), the rule table (swapped atomically), the table
//! of fills in flight (sharded), the hasher threads and the counters.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use edgemirror_cache::{CommitRule, HotCache, ObjectKeyRef, RecordMeta, RecordWriter, Store};

use crate::buckets::{Bucket, BucketTable};
use crate::config::Config;
use crate::hash::HashPool;
use crate::inflight::FillTable;
use crate::metrics::Metrics;
use crate::origin;
use crate::protect::Breakers;
use crate::reply::{DateCache, RequestId};
use crate::rules::RuleTable;

/// The running config, one copy per worker plus one for every other thread: a reload
/// (`reload.rs`) stores a fresh copy in each, so a worker taking the config per request
/// touches no reference count another core touches. Settings that need a restart are the same
/// in every copy a reload makes (it keeps the running values).
pub struct LiveConfig {
    slots: Box<[ArcSwap<Config>]>,
}

impl LiveConfig {
    pub fn new(config: Config, workers: usize) -> LiveConfig {
        LiveConfig { slots: (0..=workers).map(|_| ArcSwap::from_pointee(config.clone())).collect() }
    }

    /// Worker `id`'s copy (any other id: the copy for other threads).
    pub fn for_worker(&self, id: usize) -> Arc<Config> {
        self.slots[id.min(self.slots.len() - 1)].load_full()
    }

    /// The copy for threads that are not workers (admin, jobs, signals).
    pub fn get(&self) -> Arc<Config> {
        self.slots[self.slots.len() - 1].load_full()
    }

    /// Makes `config` the running config for every request that starts from now on.
    pub fn store(&self, config: Config) {
        for slot in self.slots.iter() {
            slot.store(Arc::new(config.clone()));
        }
    }
}

/// State every worker shares.
pub struct Shared {
    /// The running config (reloadable: take it per request, keep it no longer).
    pub config: LiveConfig,
    /// The config file the node was started with (`None`: the embedded default), for reloads.
    pub config_path: Option<std::path::PathBuf>,
    /// Serialises reloads.
    pub reload_lock: Mutex<()>,
    /// The connection cap per worker the descriptor limit allows (see `server.rs`); a reloaded
    /// `server.max_connections_per_worker` applies up to it.
    pub connection_budget: usize,
    pub store: Arc<Store>,
    pub hot: HotCache,
    pub metrics: Metrics,
    /// The buckets: declared in the config, or created through S3 (replaced whole on a change).
    pub buckets: ArcSwap<BucketTable>,
    /// Serialises bucket creation and deletion (read-modify-write of the table and its file).
    pub buckets_update: Mutex<()>,
    /// Mirror rules of every bucket; replaced whole by the admin API.
    pub rules: ArcSwap<RuleTable>,
    /// Serialises rule updates (read-modify-write of the table and its file).
    pub rules_update: Mutex<()>,
    /// Origin name resolution and the policy of which addresses the node may connect to.
    pub network: origin::Network,
    /// Sent to origins in `Via`; a request that arrives carrying it came from ourselves, and
    /// mirroring it would loop.
    pub via_token: String,
    /// Origin fetches in flight, by object: concurrent misses share one.
    pub fills: Arc<FillTable>,
    /// MD5 of mirrored bodies, off the workers.
    pub hashes: HashPool,
    /// A circuit breaker per origin.
    pub breakers: Breakers,
    /// A cap on the exchanges in flight per origin.
    pub fetch_slots: crate::protect::FetchSlots,
    /// A cap on the bytes a second read from each origin.
    pub pacers: crate::protect::Pacers,
    /// Origin 404s, remembered for `origin.negative_ttl_ms`.
    pub negative: crate::negative::NegativeCache,
    /// The edges this node shares the origin's work with (`[fleet]`; empty when alone).
    pub fleet: Arc<crate::fleet::Fleet>,
    /// One line per request, when `[access_log]` is on.
    pub access_log: Option<Arc<crate::accesslog::AccessLog>>,
    /// The shared store of record (`store.backend = "s3"`; a restart-only setting), and when
    /// each local copy was last found current there.
    pub shared_store: Option<crate::sharedstore::SharedStoreConfig>,
    pub freshness: crate::sharedstore::Freshness,
}

impl Shared {
    /// The running config, for threads that are not workers (a worker uses [`Worker::config`]).
    pub fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    /// The bucket named `name`, if this node serves it.
    pub fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.load().get(name).cloned()
    }

    /// Starts writing `key` for bucket `owner` (the key's own bucket, or for a multipart part
    /// the upload's). The write is tied to that bucket as it is now: if the bucket is deleted
    /// before the commit, the commit is refused ([`edgemirror_cache::Error::Cancelled`]), and a
    /// bucket already gone refuses it at once.
    pub fn begin(
        &self,
        lane: usize,
        owner: &str,
        key: ObjectKeyRef<'_>,
        meta: RecordMeta,
        length: Option<u64>,
        rule: CommitRule,
    ) -> edgemirror_cache::Result<RecordWriter> {
        let bucket = self.bucket(owner).ok_or(edgemirror_cache::Error::Cancelled)?;
        let mut writer = self.store.begin(lane, key, meta, length, rule)?;
        writer.cancel_when(bucket.deleting.clone());
        Ok(writer)
    }
}

/// One core's state. Lives on its thread, shared by that core's tasks through `Rc`.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub date: DateCache,
    /// Idle keep-alive connections to origins, per core.
    pub pool: origin::Pool,
    /// Client connections this worker is serving.
    pub open_connections: Cell<usize>,
    /// This core's MD5 lanes: the bodies of its fills hashed together on it while there are
    /// enough of them (`hash::LocalLanes`; see [`Worker::md5_lanes`]).
    md5_lanes: Rc<crate::hash::LocalLanes>,
    epoch: u32,
    seq: Cell<u64>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        let md5_lanes = crate::hash::LocalLanes::new(&shared.hashes);
        Worker {
            id,
            md5_lanes,
            shared,
            date: DateCache::default(),
            pool: origin::Pool::default(),
            open_connections: Cell::new(0),
            epoch,
            seq: Cell::new(0),
        }
    }

    /// This core's MD5 lanes, their task started on first use (on this worker's runtime).
    pub fn md5_lanes(&self) -> &Rc<crate::hash::LocalLanes> {
        self.md5_lanes.started()
    }

    pub fn next_request_id(&self) -> RequestId {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        RequestId { epoch: self.epoch, worker: self.id as u16, seq }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The running config: taken once per request (a reload applies to the next one).
    pub fn config(&self) -> Arc<Config> {
        self.shared.config.for_worker(self.id)
    }
}

/// A client connection's claim on its worker's connection budget, given back by `Drop` on
/// every way out of the connection task.
pub struct ConnSlot {
    worker: Rc<Worker>,
}

impl ConnSlot {
    /// Takes a slot, unless the worker already serves `max` connections.
    pub fn take(worker: &Rc<Worker>, max: usize) -> Option<ConnSlot> {
        let open = worker.open_connections.get();
        if open >= max {
            return None;
        }
        worker.open_connections.set(open + 1);
        Some(ConnSlot { worker: worker.clone() })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.worker.open_connections.set(self.worker.open_connections.get() - 1);
    }
}
