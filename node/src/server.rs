//! Start-up and the per-core runtimes.
//!
//! [`start`] opens the store (rebuilding its index) and the hot cache, binds one listening socket
//! per worker on the same address with SO_REUSEPORT (the kernel spreads connections across
//! them), then starts one thread per worker, each pinned to a core and running its own monoio
//! runtime (io_uring, or epoll where io_uring is unavailable). Connections never move between
//! cores; per-core state ([`Worker`]) needs no locks. Shared state ([`Shared`]) is the validated
//! config, the store, the hot cache and the metrics.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use arc_swap::ArcSwap;
use edgemirror_cache::{HotCache, Store};

use crate::config::Config;
use crate::fill::FillTable;
use crate::hash::HashPool;
use crate::metrics::Metrics;
use crate::reply::{DateCache, RequestId};
use crate::rules::{self, RuleTable};
use crate::stream::ClientStream;
use crate::{admin, conn, origin};

/// State every worker shares.
pub struct Shared {
    pub config: Config,
    pub store: Arc<Store>,
    pub hot: HotCache,
    pub metrics: Metrics,
    /// Mirror rules of every bucket; replaced whole by the admin API.
    pub rules: ArcSwap<RuleTable>,
    /// Serialises rule updates (read-modify-write of the table and its file).
    pub rules_update: Mutex<()>,
    /// The node's own listening addresses: a rule may not point at them.
    pub self_addrs: Vec<SocketAddr>,
    /// Sent to origins in `Via`; a request that arrives carrying it came from ourselves, and
    /// mirroring it would loop.
    pub via_token: String,
    /// Origin fetches in flight, by object: concurrent misses share one.
    pub fills: Arc<FillTable>,
    /// MD5 of mirrored bodies, off the workers.
    pub hashes: HashPool,
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
    epoch: u32,
    seq: Cell<u64>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        Worker {
            id,
            shared,
            date: DateCache::default(),
            pool: origin::Pool::default(),
            open_connections: Cell::new(0),
            epoch,
            seq: Cell::new(0),
        }
    }

    pub fn next_request_id(&self) -> RequestId {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        RequestId { epoch: self.epoch, worker: self.id as u16, seq }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    pub data_addr: SocketAddr,
    /// The HTTPS listener, when `[tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Node {
    /// Blocks until every worker thread exits (they run until the process ends).
    pub fn wait(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// Makes everything committed durable (fdatasync of segments written since the last pass).
    /// Called on SIGTERM/SIGINT before the process exits; objects still being fetched are
    /// abandoned, which is safe: they were never visible.
    pub fn flush(&self) {
        self.shared.store.sync_pass();
    }
}

/// Which monoio driver the workers will run on.
pub fn driver_name() -> &'static str {
    if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_none() && monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "legacy (epoll)"
    }
}

pub fn start(config: Config) -> Result<Node> {
    // Every segment file stays open (large objects get one each) and every connection is a
    // descriptor: lift the soft limit to the hard one, as nginx's worker_rlimit_nofile does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(nofile = n, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let (store, recovered) = Store::open(config.store.clone())
        .with_context(|| format!("opening the store in {}", config.store.dir.display()))?;
    tracing::info!(
        dir = %config.store.dir.display(),
        objects = recovered.objects,
        bytes = recovered.bytes,
        segments = recovered.segments,
        skipped_records = recovered.torn_or_abandoned,
        removed_files = recovered.removed_files,
        "store recovered"
    );
    let hot = HotCache::open(&config.cache).context("opening the hot cache")?;
    tracing::info!(
        memory_bytes = config.cache.memory_bytes,
        disk_bytes = config.cache.disk_bytes,
        dir = %config.cache.dir.display(),
        "hot cache ready"
    );

    let workers = config.server.workers;
    let listeners = bind_reuseport(config.server.listen, workers)
        .with_context(|| format!("binding server.listen {}", config.server.listen))?;
    let data_addr = listeners[0].local_addr()?;
    let mut tls_listeners = match &config.tls {
        Some(t) => bind_reuseport(t.listen, workers).with_context(|| format!("binding tls.listen {}", t.listen))?,
        None => Vec::new(),
    };
    let tls_addr = match tls_listeners.first() {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let admin_listener = std::net::TcpListener::bind(config.admin.listen)
        .with_context(|| format!("binding admin.listen {}", config.admin.listen))?;
    admin_listener.set_nonblocking(true)?;
    let admin_addr = admin_listener.local_addr()?;

    let self_addrs: Vec<SocketAddr> = [Some(data_addr), Some(admin_addr), tls_addr].into_iter().flatten().collect();
    if config.origin.insecure_skip_verify {
        tracing::warn!(
            "origin.insecure_skip_verify is ON: https origin certificates are NOT verified; use only with test origins"
        );
    }
    let table = initial_rules(&config, &self_addrs)?;
    let via_token = format!("edgemirror-{:016x}", edgemirror_cache::random_u64());
    let hashes = HashPool::new(config.hash_threads).context("starting the MD5 threads")?;
    let shared = Arc::new(Shared {
        config,
        store,
        hot,
        metrics: Metrics::default(),
        rules: ArcSwap::from_pointee(table),
        rules_update: Mutex::new(()),
        self_addrs,
        via_token,
        fills: Arc::new(FillTable::default()),
        hashes,
    });
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    tracing::info!(driver = driver_name(), workers, cores, listen = %data_addr, admin = %admin_addr, "starting workers");

    let mut threads = Vec::with_capacity(workers + 1);
    for (id, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let tls_listener = if tls_listeners.is_empty() { None } else { Some(tls_listeners.remove(0)) };
        let t = std::thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
            if let Some(cpu) = pin_cpu(id, workers) {
                // One runtime per core: pinning keeps a worker's caches warm.
                core_affinity::set_for_current(cpu);
            }
            run_runtime(move || worker_main(id, listener, tls_listener, shared));
        })?;
        threads.push(t);
    }
    let admin_shared = shared.clone();
    threads.push(
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || run_runtime(move || admin::serve(admin_listener, admin_shared)))?,
    );
    Ok(Node { shared, data_addr, tls_addr, admin_addr, threads })
}

/// Builds the rule table: rules persisted through the admin API win; buckets without persisted
/// rules take their TOML `[[buckets.mirror]]` seeds. Every rule is validated again now that the
/// node's own addresses are known.
fn initial_rules(config: &Config, self_addrs: &[SocketAddr]) -> Result<RuleTable> {
    let persisted = rules::load_persisted(&config.store.dir)?;
    let mut table = RuleTable::default();
    for bucket in &config.buckets {
        let (spec, origin) = match persisted.buckets.get(&bucket.name) {
            Some(body) => (body.back_source_rules.clone(), "rules.json"),
            None => (bucket.mirror_seed.clone(), "config"),
        };
        let validated =
            rules::validate_list(&spec, self_addrs).map_err(|e| anyhow!("bucket {} ({origin}): {e}", bucket.name))?;
        tracing::info!(bucket = %bucket.name, rules = validated.len(), from = origin, "bucket");
        table = table.with_bucket(&bucket.name, spec, validated);
    }
    for name in persisted.buckets.keys() {
        if config.bucket(name).is_none() {
            tracing::warn!(bucket = %name, "rules.json names a bucket that is not configured; ignored");
        }
    }
    Ok(table)
}

/// The CPU worker `id` is pinned to: the id-th of the CPUs this process may run on (so
/// `taskset -c 2,3 edgemirror` pins workers to 2 and 3, not 0 and 1). No pinning when there are
/// more workers than allowed CPUs.
fn pin_cpu(id: usize, workers: usize) -> Option<core_affinity::CoreId> {
    let allowed = core_affinity::get_core_ids()?;
    (workers <= allowed.len()).then(|| allowed[id])
}

/// Runs `main`'s future on a fresh monoio runtime (io_uring with epoll fallback, timers on).
fn run_runtime<F, Fut>(main: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().with_entries(1024).build();
    match rt {
        Ok(mut rt) => rt.block_on(main()),
        Err(e) => tracing::error!(error = %e, "cannot build a monoio runtime"),
    }
}

async fn worker_main(
    id: usize,
    listener: std::net::TcpListener,
    tls_listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
) {
    let worker = Rc::new(Worker::new(id, shared));
    if let Some(tls_listener) = tls_listener {
        if let Some(tls) = &worker.shared.config.tls {
            let acceptor = monoio_rustls::TlsAcceptor::from(tls.server.clone());
            monoio::spawn(accept_loop(tls_listener, worker.clone(), Some(acceptor)));
        }
    }
    accept_loop(listener, worker, None).await;
}

/// Accepts connections until the process ends; with an acceptor, each one starts with a TLS
/// handshake.
async fn accept_loop(listener: std::net::TcpListener, worker: Rc<Worker>, tls: Option<monoio_rustls::TlsAcceptor>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = worker.id, error = %e, "cannot adopt the listening socket");
            return;
        }
    };
    let max_connections = worker.shared.config.server.max_connections_per_worker;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                worker.metrics().connections_accepted.inc();
                if worker.open_connections.get() >= max_connections {
                    // Over the cap: shed this connection rather than let it queue behind the rest.
                    worker.metrics().connections_refused.inc();
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                worker.open_connections.set(worker.open_connections.get() + 1);
                let w = worker.clone();
                let tls = tls.clone();
                monoio::spawn(async move {
                    let stream = match tls {
                        None => Some(ClientStream::Plain(stream)),
                        Some(acceptor) => conn::tls_handshake(stream, &acceptor, &w).await,
                    };
                    if let Some(stream) = stream {
                        conn::serve(stream, w.clone()).await;
                    }
                    w.open_connections.set(w.open_connections.get() - 1);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(worker = worker.id, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Binds `n` sockets to `addr` with SO_REUSEPORT. With port 0 the first picks the port and the
/// rest join it.
fn bind_reuseport(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Socket, Type};
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
