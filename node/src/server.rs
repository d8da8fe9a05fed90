//! Start-up: open the store, bind the listeners, start one runtime per core and the admin thread.
//!
//! [`start`] opens the store (rebuilding its index) and the hot cache, binds one listening socket
//! per worker on the same address with SO_REUSEPORT (the kernel spreads connections across
//! them), then starts one thread per worker, each pinned to a core and running its own monoio
//! runtime (io_uring, or epoll where io_uring is unavailable). Connections never move between
//! cores; the state they see is in [`crate::worker`].
//!
//! File descriptors: every client connection is one, a miss adds an origin socket, and the store
//! keeps its segment files open. The per-worker connection cap is lowered at start so that the
//! connections allowed, each with an origin socket, plus the store's files and a reserve, fit
//! the process's descriptor limit: a flood of idle connections is shed at accept instead of
//! starving every request of descriptors (accept and origin connects failing with EMFILE).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use edgemirror_cache::{HotCache, Store};

use crate::accesslog::AccessLog;
use crate::buckets::BucketTable;
use crate::config::Config;
use crate::dns::{Resolver, ResolverConfig};
use crate::hash::HashPool;
use crate::inflight::FillTable;
use crate::metrics::Metrics;
use crate::stream::ClientStream;
use crate::worker::{ConnSlot, LiveConfig, Shared, Worker};
use crate::{admin, conn, origin};

/// Descriptors kept out of the connection budget: the store's files opened after start, foyer's,
/// the admin listener and its connections, the resolver, logs. Measured need at idle is ~40.
const RESERVED_FDS: u64 = 256;
/// Descriptors one client connection may need: its socket and, on a miss, an origin socket.
const FDS_PER_CONNECTION: u64 = 2;

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
        if let Some(log) = self.shared.access_log.clone() {
            // The writer may be stuck (a stdout nobody reads, a hung mount): the exit must not be.
            let (done, finished) = std::sync::mpsc::channel();
            let _ = std::thread::Builder::new().name("accesslog-flush".into()).spawn(move || {
                log.flush();
                let _ = done.send(());
            });
            if finished.recv_timeout(Duration::from_secs(5)).is_err() {
                tracing::warn!("the access log could not be written within 5 s; exiting without its last lines");
            }
        }
    }

    /// Reads the config file again and applies it (SIGHUP); see [`crate::reload`]. A refused
    /// file leaves the running config as it is; either way the outcome is logged.
    pub fn reload(&self) {
        crate::reload::log(&crate::reload::reload(&self.shared));
    }

    /// Reopens the access log file by its path (SIGUSR1, after logrotate moved it).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.shared.access_log {
            log.reopen();
        }
    }
}

/// Which monoio driver the workers will run on (monoio's probe, which also honours
/// `MONOIO_FORCE_LEGACY_DRIVER=1`), and whether its rings defer their task work.
pub fn driver_name() -> &'static str {
    if !monoio::utils::detect_uring() {
        "legacy (epoll)"
    } else if defer_taskrun() {
        "io_uring+defer_taskrun"
    } else {
        "io_uring"
    }
}

/// Whether the workers' io_uring rings are made with `IORING_SETUP_DEFER_TASKRUN` (and
/// `IORING_SETUP_SINGLE_ISSUER`, which it requires): when io_uring is in use and the kernel
/// takes them (Linux 6.1 and later; probed once with a small ring).
///
/// Why: without `DEFER_TASKRUN` the kernel runs a ring's completion work (a socket's receive once
/// it is readable, for one) on the worker's next return to user space, at the end of whatever
/// system call it is in: a `sendfile`, a `mincore`. That receive takes the socket's lock, which
/// the client's CPU, delivering the bytes that made it readable, may still hold; the worker
/// spun there for 8% of its core in the disk bench (`__pv_queued_spin_lock_slowpath` under
/// `tcp_recvmsg`; none in nginx's profile). With it, that work runs only when the worker waits
/// for completions: monoio's park, once no task is ready. A park that finds a task woken from
/// another thread (a digest, a fill on another core) does not wait and leaves that work for the
/// next one. 64 KiB store hits did 1.18-1.22x the req/s with it (bench/RESULTS.md, "Issue 14,
/// eleventh pass"). Each monoio ring is used only by the thread that made it, as
/// `SINGLE_ISSUER` requires.
fn defer_taskrun() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| monoio::utils::detect_uring() && ring_builder(true).build(2).is_ok())
}

/// The io_uring setup for a runtime's ring, with the flags of [`defer_taskrun`] or without.
fn ring_builder(defer: bool) -> io_uring::Builder {
    let mut ring = io_uring::IoUring::builder();
    if defer {
        ring.setup_single_issuer().setup_defer_taskrun();
    }
    ring
}

/// Starts a node on `config`, read from `config_path` (`None`: the embedded default), which a
/// reload reads again.
pub fn start(config: Config, config_path: Option<std::path::PathBuf>) -> Result<Node> {
    // Every segment file stays open (large objects get one each) and every connection is a
    // descriptor: lift the soft limit to the hard one, as nginx's worker_rlimit_nofile does.
    let nofile = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    };
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
        disk_bytes = hot.disk_bytes(),
        dir = %config.cache.dir.display(),
        "hot cache ready"
    );

    let workers = config.server.workers;
    let configured = config.server.max_connections_per_worker;
    let budget = connection_budget(nofile, recovered.segments as u64, workers as u64, u64::MAX) as usize;
    let per_worker = configured.min(budget);
    tracing::info!(nofile, per_worker, configured, "connection cap per worker");
    if per_worker < configured {
        tracing::warn!(
            nofile,
            per_worker,
            configured,
            "server.max_connections_per_worker lowered to fit the file descriptor limit (raise the hard limit: ulimit -Hn, LimitNOFILE=)"
        );
    }
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
    let policy = config.origin.address_policy(&self_addrs);
    tracing::info!(
        allow_private = config.origin.allow_private,
        allow_link_local = ?config.origin.allow_link_local,
        interfaces = policy.interface_count(),
        "origin address policy"
    );
    let buckets = BucketTable::load(&config)?;
    let table = crate::reload::rule_table(&config, &buckets, &policy)?;
    let resolver = Resolver::new(ResolverConfig::default()).context("starting the DNS resolver threads")?;
    let via_token = format!("edgemirror-{:016x}", edgemirror_cache::random_u64());
    let hashes = HashPool::new(config.hash_threads).context("starting the MD5 threads")?;
    let breaker = config.origin.breaker;
    let fetch_slots = config.origin.max_fetches_per_origin;
    let pace = config.origin.max_bytes_per_sec_per_origin;
    let negative = crate::negative::NegativeCache::new(config.origin.negative_ttl, config.origin.negative_entries);
    let access_log = AccessLog::start(&config.access_log, workers).context("opening access_log.path")?;
    if let Some(log) = &access_log {
        tracing::info!(target = ?config.access_log.target, format = log.format().as_str(), "access log on");
    }
    let fleet = Arc::new(crate::fleet::Fleet::new(config.fleet.as_ref()));
    if let Some(f) = &config.fleet {
        tracing::info!(peers = f.peers.len(), me = %f.self_url, "fleet");
    }
    let prober = fleet.clone();
    std::thread::Builder::new().name("fleet-probe".into()).spawn(move || prober.probe_forever())?;
    crate::memtrim::start()?;
    let shared_store = config.shared_store.clone();
    if let Some(s) = &shared_store {
        let endpoints: Vec<String> =
            s.endpoints.iter().map(|e| format!("{}://{}", e.addr.scheme(), e.addr.host_header)).collect();
        tracing::info!(
            ?endpoints,
            staleness_ms = s.staleness.as_millis() as u64,
            "shared store of record (store.backend = s3)"
        );
    }
    let shared = Arc::new(Shared {
        shared_store,
        freshness: crate::sharedstore::Freshness::new(1 << 20),
        fleet,
        config: LiveConfig::new(config, workers),
        config_path,
        reload_lock: Mutex::new(()),
        connection_budget: budget,
        store,
        hot,
        metrics: Metrics::new(workers),
        access_log,
        buckets: ArcSwap::from_pointee(buckets),
        buckets_update: Mutex::new(()),
        rules: ArcSwap::from_pointee(table),
        rules_update: Mutex::new(()),
        network: origin::Network { resolver, policy },
        via_token,
        fills: Arc::new(FillTable::default()),
        hashes,
        breakers: crate::protect::Breakers::new(breaker),
        fetch_slots: crate::protect::FetchSlots::new(fetch_slots),
        pacers: crate::protect::Pacers::new(pace),
        negative,
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
            run_runtime(true, move || worker_main(id, listener, tls_listener, shared));
        })?;
        threads.push(t);
    }
    let admin_shared = shared.clone();
    threads.push(
        std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || run_runtime(false, move || admin::serve(admin_listener, admin_shared)))?,
    );
    Ok(Node { shared, data_addr, tls_addr, admin_addr, threads })
}

/// Connections one worker may hold so that all of them, each with an origin socket, plus the
/// store's segment files and a reserve, stay within `nofile` descriptors. Never more than
/// `configured`, never less than 1.
fn connection_budget(nofile: u64, segments: u64, workers: u64, configured: u64) -> u64 {
    let available = nofile.saturating_sub(RESERVED_FDS + segments);
    (available / FDS_PER_CONNECTION / workers.max(1)).clamp(1, configured.max(1))
}

/// The CPU worker `id` is pinned to: the id-th of the CPUs this process may run on (so
/// `taskset -c 2,3 edgemirror` pins workers to 2 and 3, not 0 and 1). No pinning when there are
/// more workers than allowed CPUs.
fn pin_cpu(id: usize, workers: usize) -> Option<core_affinity::CoreId> {
    let allowed = core_affinity::get_core_ids()?;
    (workers <= allowed.len()).then(|| allowed[id])
}

/// Set when a worker's runtime panicked outside any contained task: the node is stopping for
/// its supervisor to restart it, and exits with status 70 once flushed (`main.rs`).
pub static STOPPED_BY_PANIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `main`'s future on a fresh monoio runtime (io_uring with epoll fallback, timers on).
fn run_runtime<F, Fut>(fatal_panic: bool, main: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // The probe in `defer_taskrun` decides the flags once, so every ring is made alike and the
    // start-up log's driver says what runs.
    let rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .uring_builder(ring_builder(defer_taskrun()))
        .build();
    match rt {
        Ok(mut rt) => {
            // A panic that no task contained (`task::spawn` contains those of connections and
            // fills) ends the runtime: one in an accept loop, or in a task whose end would leave
            // the node half-working (the HTTPS accept loop). On a worker (`fatal_panic`) the node
            // then stops, as on SIGTERM (the store and the access log flushed), and exits with
            // status 70 for its supervisor to restart it (the systemd unit restarts on failure),
            // rather than serve on without a worker or a listener. The admin thread's end is left
            // to show as it always did: its health endpoint stops answering.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(main())));
            if let Err(payload) = ran {
                let message = crate::task::panic_message(&*payload);
                if fatal_panic {
                    tracing::error!(panic = %message, "a worker's runtime panicked outside any task that contains it; the node stops");
                    STOPPED_BY_PANIC.store(true, std::sync::atomic::Ordering::SeqCst);
                    // main's signal loop flushes and exits.
                    let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
                } else {
                    tracing::error!(panic = %message, "the admin thread's runtime panicked; the admin listener is gone");
                }
            }
        }
        Err(e) => {
            // A worker without a runtime would leave its listener taking connections nobody
            // accepts: the node stops instead.
            tracing::error!(error = %e, "cannot build a monoio runtime");
            std::process::exit(1);
        }
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
        // Not contained: a panic here stops the node (`run_runtime`), not the HTTPS listener alone.
        monoio::spawn(accept_loop(tls_listener, worker.clone(), true));
    }
    accept_loop(listener, worker, false).await;
}

/// Accepts connections until the process ends; with `tls`, each one starts with a TLS handshake
/// on the running config's certificates (a reload's new certificates apply to new connections).
async fn accept_loop(listener: std::net::TcpListener, worker: Rc<Worker>, tls: bool) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = worker.id, error = %e, "cannot adopt the listening socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let accepted = Instant::now();
                worker.metrics().connections_accepted.inc();
                let config = worker.config();
                let max_connections = config.server.max_connections_per_worker.min(worker.shared.connection_budget);
                let Some(slot) = ConnSlot::take(&worker, max_connections) else {
                    // Over the cap: shed this connection rather than let it queue behind the rest.
                    worker.metrics().connections_refused.inc();
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let w = worker.clone();
                // The certificates of the config running now (a reload may have changed them).
                let server_tls = config.tls.as_ref().filter(|_| tls).map(|t| t.server.clone());
                drop(config);
                crate::task::spawn(&worker, "connection", async move {
                    let stream = match server_tls {
                        None => Some(ClientStream::Plain(stream)),
                        Some(server_tls) => conn::tls_handshake(stream, server_tls, &w).await,
                    };
                    if let Some(stream) = stream {
                        conn::serve(stream, w, accepted, Some(peer)).await;
                    }
                    drop(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_budget_fits_the_descriptor_limit() {
        // The flood seen in review: 20,000 descriptors, cap 2 x 10,000. Now every connection
        // can also open an origin socket, and the store's files and the reserve still fit.
        let per_worker = connection_budget(20_000, 100, 2, 10_000);
        assert!(2 * per_worker * FDS_PER_CONNECTION + 100 + RESERVED_FDS <= 20_000, "{per_worker}");
        assert_eq!(connection_budget(1 << 20, 100, 2, 10_000), 10_000, "a large limit keeps the configured cap");
        assert_eq!(connection_budget(100, 10, 2, 10_000), 1, "never zero");
    }
}
