//! MD5 of mirrored bodies, many bodies at once: on the worker while it has enough of them, off
//! the serving cores otherwise. The record's CRC-32C of each body is taken in the same pass,
//! right after the MD5 read the bytes ([`Digests`]).
//!
//! The ETag of an object is the MD5 of its body, so a fill must hash every byte. One MD5 stream
//! is serial (each 64-byte block depends on the one before): about 600-800 MB/s on this CPU,
//! which made the digest the largest cost of a miss. Independent bodies are not: the hasher
//! threads keep the MD5 state of every fill in flight and, each round, advance up to [`LANES`]
//! of them together in the lanes of AVX-512 (or AVX2) registers (`md5-many`'s multi-buffer
//! kernels: 16 bodies of 1 MiB hashed at 6.2 GB/s on one core here, against 0.6 GB/s for
//! md-5 one body at a time). Sustained misses over many connections are exactly that case; a
//! lone fill gets the fast single-stream path.
//!
//! Each fill hands its pieces (refcounted `Bytes`, no copy) to one hasher thread, in order,
//! through a FIFO channel, and awaits the digest at the end; the hashing overlaps the transfer,
//! and clients do not wait for it (`fill.rs` releases the last byte first). A mirror fill
//! hands them to its worker's own lanes first ([`LocalLanes`]): while at least
//! [`LOCAL_MIN_LANES`] of that worker's bodies have bytes to hash, the worker hashes them
//! together right after they arrive, and the rest go on to a thread as they stand. Under
//! sustained misses that took a 64 KiB miss from 157 to 127 µs of core, and a 1 MiB one from
//! 1,380 to 1,150 (`bench/RESULTS.md`, "Issue 14, sixteenth pass").
//!
//! Memory: a fill whose hasher falls behind by more than [`MAX_BACKLOG_BYTES`], or that finds
//! more than [`MAX_POOL_BACKLOG_BYTES`] queued across all fills, waits ([`HashJob::backlog`])
//! before reading more from its origin. Those waits are counted ([`HashPool::waits`]): a node
//! whose fills wait often is short of CPU for its misses' MD5, and its clients see it as stalls
//! mid-body (back-to-back cold 1 MiB GETs on one core reach the bound after ~120 GETs:
//! `bench/RESULTS.md`, "Issue 14, sixteenth pass"). The node-wide bound matters because clients
//! do not wait for the digest: without it, fills whose clients are served could queue whole bodies
//! for hashing faster than a busy core hashes them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::HashMap;
use bytes::{Buf, Bytes};
use md5_many::{Md5Many, Md5State};
use tokio::sync::{oneshot, Notify};

/// Bytes a fill may have queued for hashing before it stops reading its origin.
pub const MAX_BACKLOG_BYTES: u64 = 4 << 20;

/// Bytes queued for hashing across all fills past which every fill stops reading its origin.
pub const MAX_POOL_BACKLOG_BYTES: u64 = 64 << 20;

/// Bodies advanced together in one round: the 16 32-bit lanes of an AVX-512 register.
pub const LANES: usize = 16;

/// Bodies up to this size (by their Content-Length) are not handed to a hasher thread: their
/// MD5 takes a few microseconds on the worker, less than the hand-over (a channel send, a
/// wake-up, a stream in the hasher's table). Sustained 1 KiB misses at ~10,000 a second had
/// left 54,593 digests queued on the hasher (the fills uncommitted, their clients long served),
/// and 64 KiB misses after them ran at 41-527 GET/s instead of ~4,000 (bench/RESULTS.md,
/// "Issue 14, fifth pass").
pub const INLINE_MAX_BYTES: u64 = 16 << 10;

/// What a hasher computes of a body: its MD5 (the ETag) and its CRC-32C (the store record's
/// `body_crc`), both in one pass over the bytes, the CRC right after the MD5 read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    /// The body's MD5: a single-part object's ETag.
    pub md5: [u8; 16],
    /// The body's CRC-32C, as `edgemirror_cache::crc::crc32c` computes it.
    pub crc32c: u32,
}

enum Job {
    Update(Arc<State>, Bytes),
    Finish(Arc<State>, oneshot::Sender<Digests>),
    /// The fill ended without asking for its digest (its body broke off): drop its stream.
    Forget(Arc<State>),
    /// A body a worker began to hash itself ([`LocalLanes`]), handed over as it stands: its
    /// stream (MD5 and CRC so far, the pieces not yet hashed, who waits for the digests).
    Adopt(Stream),
}

/// What a fill and its hasher thread share: the bytes queued and not yet hashed.
struct State {
    /// Of this fill.
    queued: AtomicU64,
    /// The hasher thread this fill's body goes to (`HashPool::lanes`).
    lane: usize,
    /// Begun on its worker ([`LocalLanes`]) and since handed to the hasher thread: the fill's
    /// next jobs go there. Only its worker's thread reads or writes it.
    adopted: AtomicBool,
    /// Of every fill of the pool.
    pool_queued: Arc<AtomicU64>,
}

impl State {
    fn new(lane: usize, pool_queued: &Arc<AtomicU64>) -> State {
        State { queued: AtomicU64::new(0), lane, adopted: false.into(), pool_queued: pool_queued.clone() }
    }

    fn hashed(&self, len: u64) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
        self.pool_queued.fetch_sub(len, Ordering::AcqRel);
    }
}

/// The hasher threads.
pub struct HashPool {
    lanes: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
    queued: Arc<AtomicU64>,
    waits: Arc<Waits>,
}

/// How often, and how long in all, fills waited for the hasher threads ([`HashJob::backlog`]).
#[derive(Debug, Default)]
struct Waits {
    count: AtomicU64,
    micros: AtomicU64,
}

impl HashPool {
    /// Starts `threads` hasher threads (0: fills hash inline on their worker).
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let mut lanes = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new().name(format!("md5-{i}")).spawn(move || {
                lower_priority();
                Hasher::default().run(rx);
            })?;
            lanes.push(tx);
        }
        Ok(HashPool { lanes, next: AtomicUsize::new(0), queued: Arc::new(AtomicU64::new(0)), waits: Arc::default() })
    }

    /// A hashing job for a body of `len` bytes (`None`: not known yet), or `None` when the
    /// caller hashes it inline: no hasher threads, or a body of at most [`INLINE_MAX_BYTES`].
    pub fn start(&self, len: Option<u64>) -> Option<HashJob> {
        if self.lanes.is_empty() || len.is_some_and(|len| len <= INLINE_MAX_BYTES) {
            return None;
        }
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let state = Arc::new(State::new(lane, &self.queued));
        Some(HashJob {
            lane: self.lanes[lane].clone(),
            state,
            waits: self.waits.clone(),
            local: None,
            broken: false,
            finished: false,
        })
    }

    /// As [`HashPool::start`], but the body is hashed on the calling worker, together with
    /// the other bodies in flight there, while at least [`LOCAL_MIN_LANES`] have bytes to hash
    /// ([`LocalLanes`]); otherwise by a hasher thread, as `start`'s are.
    pub fn start_local(&self, len: Option<u64>, local: &Rc<LocalLanes>) -> Option<HashJob> {
        let mut job = self.start(len)?;
        job.local = Some(local.clone());
        Some(job)
    }

    /// Bytes queued for hashing across all fills (for tests and metrics).
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// Times a fill stopped reading its origin until the hasher caught up, and the time those
    /// waits took in all.
    pub fn waits(&self) -> (u64, Duration) {
        let micros = self.waits.micros.load(Ordering::Relaxed);
        (self.waits.count.load(Ordering::Relaxed), Duration::from_micros(micros))
    }
}

/// One body on a hasher thread: its MD5 and CRC-32C so far, the pieces not yet hashed, and who
/// waits for the digests once they are.
struct Stream {
    state: Arc<State>,
    md5: Md5State,
    crc: u32,
    pieces: VecDeque<Bytes>,
    finish: Option<oneshot::Sender<Digests>>,
}

impl Stream {
    /// Hashes the first `len` bytes of the front piece with `hash` (given the state and those
    /// bytes) and takes their CRC-32C, then drops them from the piece, and the piece once it is
    /// empty.
    ///
    /// The CRC comes right after the MD5 has read the bytes. On a worker's lanes a round is at
    /// most 16 lanes of 64 KiB, so the bytes are still in the core's 2 MiB L2: the CRC there took
    /// 27 µs per MiB, against ~100 when the fill took it as they arrived or just before their
    /// file write, from memory (`bench/RESULTS.md`, "Issue 14, fifteenth pass" and "seventeenth
    /// pass"). A thread's round has no such cap (up to 16 whole pieces), so there the CRC may
    /// read part of them from the next level; the thread runs in idle time.
    fn hash_front(&mut self, len: usize, hash: impl FnOnce(&mut Md5State, &[u8])) {
        let Some(piece) = self.pieces.front_mut() else { return };
        hash(&mut self.md5, &piece[..len]);
        self.crc = edgemirror_cache::crc::crc32c_append(self.crc, &piece[..len]);
        piece.advance(len);
        if piece.is_empty() {
            self.pieces.pop_front();
        }
        self.state.hashed(len as u64);
    }
}

/// A stream's key in the hasher's table and line: its shared state's address (unique while held).
fn stream_id(state: &Arc<State>) -> usize {
    Arc::as_ptr(state) as usize
}

/// A hasher thread's streams, keyed by their shared state's address (unique while held).
///
/// Each round touches only the streams it hashes: thousands of bodies can be queued behind a
/// busy core (sustained misses release their clients before the digest), and a round that
/// walked, collected and sorted every stream to pick its 16 made the hasher's work grow with
/// its backlog: 1 KiB misses at ~10,000 a second left 54,593 digests queued, and 64 KiB misses
/// after them ran at a tenth of their speed (bench/RESULTS.md, "Issue 14, fifth pass").
#[derive(Default)]
struct Hasher {
    streams: HashMap<usize, Stream>,
    /// The streams with pieces to hash, each once, in turn: a round takes up to [`LANES`] from
    /// the front and puts back at the end those it did not finish.
    ready: VecDeque<usize>,
    /// Streams with nothing left to hash whose digest is asked for.
    done: Vec<usize>,
}

impl Hasher {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let engine = Md5Many::new();
        loop {
            self.settle();
            if self.ready.is_empty() {
                // Nothing to hash: wait for work.
                match rx.recv() {
                    Ok(job) => self.take(job),
                    Err(_) => return,
                }
            }
            // Everything queued meanwhile joins this round: more bodies, more lanes filled.
            while let Ok(job) = rx.try_recv() {
                self.take(job);
            }
            self.hash_round(engine);
        }
    }

    fn take(&mut self, job: Job) {
        match job {
            Job::Update(state, piece) => {
                if piece.is_empty() {
                    return;
                }
                let id = stream_id(&state);
                let stream = self.stream(state);
                let was_idle = stream.pieces.is_empty();
                stream.pieces.push_back(piece);
                if was_idle {
                    self.ready.push_back(id);
                }
            }
            Job::Finish(state, reply) => {
                let id = stream_id(&state);
                let stream = self.stream(state);
                stream.finish = Some(reply);
                if stream.pieces.is_empty() {
                    self.done.push(id);
                }
            }
            Job::Forget(state) => {
                let id = stream_id(&state);
                // Out of the turn too: once the state is freed, a new body may get its address.
                self.ready.retain(|&r| r != id);
                if let Some(stream) = self.streams.remove(&id) {
                    for piece in stream.pieces {
                        stream.state.hashed(piece.len() as u64);
                    }
                }
            }
            Job::Adopt(stream) => {
                let id = stream_id(&stream.state);
                if !stream.pieces.is_empty() {
                    self.ready.push_back(id);
                } else if stream.finish.is_some() {
                    self.done.push(id);
                }
                self.streams.insert(id, stream);
            }
        }
    }

    /// Takes `id`'s stream out of this table and its line, as it stands.
    fn remove(&mut self, id: usize) -> Option<Stream> {
        self.ready.retain(|&r| r != id);
        self.streams.remove(&id)
    }

    /// The stream of `state`, begun if this is its first job.
    fn stream(&mut self, state: Arc<State>) -> &mut Stream {
        self.streams.entry(stream_id(&state)).or_insert_with(|| Stream {
            state,
            md5: Md5State::new(),
            crc: 0,
            pieces: VecDeque::new(),
            finish: None,
        })
    }

    /// One round: the next up to [`LANES`] streams in line ([`Hasher::hash_streams`]), then
    /// back in line if they have more, or answered if they are through.
    fn hash_round(&mut self, engine: Md5Many) {
        self.hash_round_of(engine, usize::MAX);
    }

    /// A round of at most `max_len` bytes a lane.
    fn hash_round_of(&mut self, engine: Md5Many, max_len: usize) {
        let turn = self.ready.len().min(LANES);
        let taken: Vec<usize> = self.ready.drain(..turn).collect();
        self.hash_streams(engine, &taken, max_len);
        for id in taken {
            let Some(stream) = self.streams.get(&id) else { continue };
            if !stream.pieces.is_empty() {
                self.ready.push_back(id);
            } else if stream.finish.is_some() {
                self.done.push(id);
            }
        }
    }

    /// Hashes the next part of `ids`' front pieces (up to [`LANES`] streams with pieces),
    /// together.
    ///
    /// `md5-many` is fast only at the lane counts it has whole-register kernels for: on this
    /// CPU 16 lanes of 64 KiB hash at 7.4 GB/s and 8 at 4.9 GB/s, but 5-7 lanes take a path that
    /// calls one function per vector operation (0.18-0.25 GB/s, a quarter of one stream's
    /// speed), 9-15 lanes 2-3 GB/s, and lanes of unequal length step down through those counts
    /// as the shorter ones run out (16 unequal pieces: 1.0 GB/s). So a round feeds it only what
    /// those kernels take: every lane's state on a block boundary, the same block-aligned length
    /// for every lane (the shortest front piece's; the rest of a longer piece waits for the next
    /// round), and 8 or 16 lanes, the empty ones filled with copies of the first (their result
    /// is thrown away). A lone stream takes the single-stream path. The bytes that realign a
    /// state, and a piece's last bytes short of a block, go one stream at a time (under 64 each).
    fn hash_streams(&mut self, engine: Md5Many, ids: &[usize], max_len: usize) {
        // Realign, and set aside the lanes with a whole block or more to hash.
        let mut lanes: Vec<usize> = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(stream) = self.streams.get_mut(&id) else { continue };
            let used = (stream.md5.bytes_hashed() % 64) as usize;
            if used != 0 {
                let take = (64 - used).min(stream.pieces[0].len());
                stream.hash_front(take, |md5, data| md5.update(data));
            }
            match stream.pieces.front().map(|p| p.len()) {
                Some(len) if len >= 64 => lanes.push(id),
                Some(len) => stream.hash_front(len, |md5, data| md5.update(data)),
                None => {}
            }
        }
        if let [id] = lanes.as_slice() {
            // Alone: its whole front piece, in one call (the state buffers a partial block).
            if let Some(stream) = self.streams.get_mut(id) {
                stream.hash_front(stream.pieces[0].len().min(max_len), |md5, data| md5.update(data));
            }
            return;
        }
        let Some(len) = lanes.iter().map(|id| self.streams[id].pieces[0].len().min(max_len) & !63).min() else {
            return;
        };
        let width = if lanes.len() <= 8 { 8 } else { LANES };
        let mut states: Vec<Md5State> = lanes.iter().map(|id| self.streams[id].md5).collect();
        let mut inputs: Vec<&[u8]> = lanes.iter().map(|id| &self.streams[id].pieces[0][..len]).collect();
        states.resize(width, states[0]);
        inputs.resize(width, inputs[0]);
        engine.update_many(&mut states, &inputs);
        for (id, md5) in lanes.iter().zip(states) {
            if let Some(stream) = self.streams.get_mut(id) {
                stream.hash_front(len, |state, _| *state = md5);
            }
        }
    }

    /// Answers the streams whose every piece is hashed and whose digest is asked for.
    fn settle(&mut self) {
        for id in std::mem::take(&mut self.done) {
            let Some(stream) = self.streams.get_mut(&id) else { continue };
            if !stream.pieces.is_empty() {
                continue;
            }
            if let Some(reply) = stream.finish.take() {
                let _ = reply.send(Digests { md5: stream.md5.finalize(), crc32c: stream.crc });
                self.streams.remove(&id);
            }
        }
    }
}

/// Puts the calling hasher thread at the lowest CPU priority: `SCHED_IDLE`, or nice 19 where
/// that is refused. No client waits for a digest unless the origin sent a Content-MD5 (`fill.rs`
/// releases the last byte before the ETag is known), so on a core shared with a worker the
/// worker always goes first: in back-to-back cold 1 MiB GETs the previous object's MD5 otherwise
/// took half the core from the next request.
///
/// Why `SCHED_IDLE` rather than nice 19: the scheduler preempts a `SCHED_IDLE` thread as soon as
/// a normal one wakes, while a nice-19 thread may finish its slice first. With nice 19, single
/// cold 1 MiB GETs had 59 first bytes of 2,392 later than 1.5 ms and a p99 of 3.69 ms; with
/// `SCHED_IDLE`, the only change, 18 and 2.49 ms (bench/RESULTS.md, "Issue 14, seventh pass").
/// Either still gets a share of a busy core (a weight of 3 or 15 against a worker's 1,024), so
/// a digest is never starved outright, and fills stop reading their origins when the queue
/// grows ([`HashJob::backlog`]), which leaves the core to the hasher.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on this thread's own id; `param` outlives the call.
    let idle = unsafe { libc::sched_setscheduler(libc::gettid(), libc::SCHED_IDLE, &param) };
    if idle == 0 {
        return;
    }
    // SAFETY: as above.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the MD5 thread's priority");
    }
}

/// The MD5 and CRC-32C of one body being computed on a hasher thread (or first on its worker's
/// lanes).
pub struct HashJob {
    lane: mpsc::Sender<Job>,
    state: Arc<State>,
    /// The pool's tally of [`HashJob::backlog`]'s waits.
    waits: Arc<Waits>,
    /// The worker's lanes, when the body is hashed there until handed over ([`LocalLanes`]).
    local: Option<Rc<LocalLanes>>,
    /// The hasher thread is gone; the digest cannot be had.
    broken: bool,
    /// The digest was asked for: nothing to forget on drop.
    finished: bool,
}

impl HashJob {
    /// Queues the next piece of the body.
    pub fn update(&mut self, data: Bytes) {
        let len = data.len() as u64;
        self.state.queued.fetch_add(len, Ordering::AcqRel);
        self.state.pool_queued.fetch_add(len, Ordering::AcqRel);
        if let Some(local) = self.on_worker() {
            local.take(Job::Update(self.state.clone(), data));
            return;
        }
        if self.lane.send(Job::Update(self.state.clone(), data)).is_err() {
            // Never hashed: take it off the counts, or every other fill would wait for it.
            self.state.hashed(len);
            self.broken = true;
        }
    }

    /// Waits while more than [`MAX_BACKLOG_BYTES`] of this fill, or [`MAX_POOL_BACKLOG_BYTES`]
    /// of all fills, are queued: the origins are read no faster than the bodies can be hashed.
    pub async fn backlog(&self) {
        if !self.behind() {
            return;
        }
        let started = Instant::now();
        while self.behind() {
            monoio::time::sleep(Duration::from_micros(200)).await;
        }
        self.waits.count.fetch_add(1, Ordering::Relaxed);
        self.waits.micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// More is queued than [`HashJob::backlog`] lets a fill go on with.
    fn behind(&self) -> bool {
        !self.broken
            && (self.state.queued.load(Ordering::Acquire) > MAX_BACKLOG_BYTES
                || self.state.pool_queued.load(Ordering::Acquire) > MAX_POOL_BACKLOG_BYTES)
    }

    /// The digests of everything queued, once the hasher has caught up. `None` if the hasher
    /// thread died (the fill must then fail rather than store an object without its ETag).
    pub async fn finish(mut self) -> Option<Digests> {
        self.finished = true;
        if self.broken {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        match self.on_worker() {
            Some(local) => local.take(Job::Finish(self.state.clone(), tx)),
            None => self.lane.send(Job::Finish(self.state.clone(), tx)).ok()?,
        }
        rx.await.ok()
    }

    /// The worker's lanes, while the body is hashed there.
    fn on_worker(&self) -> Option<&Rc<LocalLanes>> {
        self.local.as_ref().filter(|_| !self.state.adopted.load(Ordering::Relaxed))
    }
}

impl Drop for HashJob {
    fn drop(&mut self) {
        if !self.finished && !self.broken {
            match self.on_worker() {
                Some(local) => local.table.borrow_mut().take(Job::Forget(self.state.clone())),
                None => {
                    let _ = self.lane.send(Job::Forget(self.state.clone()));
                }
            }
        }
    }
}

/// Fewest bodies a worker hashes together itself ([`LocalLanes`]).
pub const LOCAL_MIN_LANES: usize = 8;

/// Bytes of one body a worker holds for want of other bodies to hash them with; past that, the
/// body goes to a hasher thread.
const LOCAL_MAX_PENDING_BYTES: u64 = 1 << 20;

/// Bytes a lane takes in one of a worker's rounds: a round of 16 lanes is then ~140 µs of the
/// core, not the milliseconds whole pieces of 256 KiB would take, which its clients would wait.
const LOCAL_ROUND_BYTES: usize = 64 << 10;

/// A worker's own MD5 lanes: the bodies of the fills in flight on that worker, hashed together
/// on it, right after their bytes arrived.
///
/// A hasher thread runs only when its core would otherwise idle (`SCHED_IDLE`). Under sustained
/// misses that is when the fills stop for it, so the bodies wait for their MD5 in memory, up to
/// [`MAX_POOL_BACKLOG_BYTES`]. Each receive then lands in a buffer no core touched lately, the
/// heap keeps growing and shrinking, and the MD5 reads every body back from memory: ~25 µs of
/// core per 64 KiB miss beyond the MD5 itself (`bench/RESULTS.md`, "Issue 14, sixteenth
/// pass"). Here the worker hashes the pieces its fills received in one turn of its event loop
/// together, in SIMD lanes, while they are still in its cache, and lets them go at once.
///
/// One body alone would take one stream's speed (~100 µs per 64 KiB, 1.5 ms per MiB) on the core
/// its clients wait for. So the worker hashes only while at least [`LOCAL_MIN_LANES`] bodies have
/// bytes to hash; a body that waits for company and is through, or holds more than
/// [`LOCAL_MAX_PENDING_BYTES`], goes to a hasher thread as it stands ([`Job::Adopt`]), and its
/// fill's next jobs go there too. A lone cold GET is thus hashed as before.
pub struct LocalLanes {
    table: RefCell<Hasher>,
    wake: Notify,
    /// The hasher threads' lanes, for the bodies handed over.
    lanes: Vec<mpsc::Sender<Job>>,
    /// The task running [`LocalLanes::run`] was spawned ([`LocalLanes::started`]).
    running: Cell<bool>,
}

impl LocalLanes {
    pub fn new(pool: &HashPool) -> Rc<LocalLanes> {
        Rc::new(LocalLanes {
            table: RefCell::default(),
            wake: Notify::new(),
            lanes: pool.lanes.clone(),
            running: Cell::new(false),
        })
    }

    /// These lanes, their task spawned on the calling worker's runtime the first time.
    pub fn started(self: &Rc<Self>) -> &Rc<Self> {
        if !self.running.replace(true) {
            monoio::spawn(self.clone().run());
        }
        self
    }

    fn take(&self, job: Job) {
        self.table.borrow_mut().take(job);
        self.wake.notify_one();
    }

    /// The worker's hashing task: after each turn that queued work, rounds of up to 16 bodies
    /// while at least [`LOCAL_MIN_LANES`] have bytes to hash, then the bodies that cannot wait
    /// for more company go to a hasher thread. Runs for the worker's life.
    async fn run(self: Rc<Self>) {
        let engine = Md5Many::new();
        loop {
            self.wake.notified().await;
            // Behind the tasks already woken in this turn: their pieces join the round.
            YieldNow(false).await;
            while self.table.borrow().ready.len() >= LOCAL_MIN_LANES {
                {
                    let mut table = self.table.borrow_mut();
                    table.hash_round_of(engine, LOCAL_ROUND_BYTES);
                    table.settle();
                }
                YieldNow(false).await;
            }
            self.hand_over_stragglers();
            self.table.borrow_mut().settle();
        }
    }

    /// Sends to a hasher thread every body with bytes to hash that is through (its digest asked
    /// for) or holds too much.
    fn hand_over_stragglers(&self) {
        let mut table = self.table.borrow_mut();
        let leaving: Vec<usize> = table
            .ready
            .iter()
            .copied()
            .filter(|id| {
                let stream = &table.streams[id];
                stream.finish.is_some() || stream.state.queued.load(Ordering::Acquire) > LOCAL_MAX_PENDING_BYTES
            })
            .collect();
        for id in leaving {
            let Some(stream) = table.remove(id) else { continue };
            stream.state.adopted.store(true, Ordering::Relaxed);
            // A body is on a worker's lanes only if `HashPool::start` found threads to pick from.
            let lane = &self.lanes[stream.state.lane];
            if let Err(mpsc::SendError(Job::Adopt(stream))) = lane.send(Job::Adopt(stream)) {
                // The thread is gone: a waiting fill's reply sender went with the job, so it
                // gets no digest (and stores nothing); the pieces come off the counts.
                for piece in stream.pieces {
                    stream.state.hashed(piece.len() as u64);
                }
            }
        }
    }
}

/// Returns `Pending` once (waking itself), so the tasks queued behind the caller run first.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(f)
    }

    /// Rounds of every width (1 to 20 streams with pieces ready), driven directly: pieces of
    /// unequal lengths, short of a block and not block-aligned, so states must be realigned and
    /// empty lanes padded; every digest is md-5's and every CRC-32C the store's.
    #[test]
    fn a_round_of_any_width_hashes_each_lane_as_md5_does() {
        for streams in 1..=20usize {
            let mut hasher = Hasher::default();
            let pool_queued = Arc::new(AtomicU64::new(0));
            let mut bodies = Vec::new();
            for s in 0..streams {
                let state = Arc::new(State::new(0, &pool_queued));
                let mut body = Vec::new();
                for (p, len) in
                    [1 + s * 37 % 200, 64, 4096 + 13 * s, 65_536, 63, 1 + s, 128 * (s + 1)].into_iter().enumerate()
                {
                    let piece: Vec<u8> = (0..len).map(|i| (i * 7 + p * 13 + s * 101) as u8).collect();
                    body.extend_from_slice(&piece);
                    state.queued.fetch_add(len as u64, Ordering::AcqRel);
                    pool_queued.fetch_add(len as u64, Ordering::AcqRel);
                    hasher.take(Job::Update(state.clone(), Bytes::from(piece)));
                }
                bodies.push((state, body));
            }
            while hasher.streams.values().any(|s| !s.pieces.is_empty()) {
                hasher.hash_round(Md5Many::new());
            }
            for (state, body) in &bodies {
                let stream = &hasher.streams[&stream_id(state)];
                let want = digests_of(body);
                let got = Digests { md5: stream.md5.finalize(), crc32c: stream.crc };
                assert_eq!(got, want, "{streams} streams, body of {} bytes", body.len());
                assert_eq!(state.queued.load(Ordering::Acquire), 0);
            }
            assert_eq!(pool_queued.load(Ordering::Acquire), 0, "{streams} streams");
        }
    }

    /// Thousands of bodies queued at once (a backlog behind a busy core): each round takes the
    /// next 16 in turn and puts back the ones with more to hash; a forgotten body leaves the
    /// turn; every digest is md-5's (and CRC-32C the store's) and nothing stays behind.
    #[test]
    fn a_backlog_of_thousands_is_hashed_sixteen_at_a_time_in_turn() {
        let mut hasher = Hasher::default();
        let pool_queued = Arc::new(AtomicU64::new(0));
        let mut bodies = Vec::new();
        for b in 0..5000usize {
            let state = Arc::new(State::new(0, &pool_queued));
            let body: Vec<u8> = (0..(b % 700) * 3 + 200).map(|i| (i * 13 + b) as u8).collect();
            for piece in body.chunks(150 + b % 50) {
                state.queued.fetch_add(piece.len() as u64, Ordering::AcqRel);
                pool_queued.fetch_add(piece.len() as u64, Ordering::AcqRel);
                hasher.take(Job::Update(state.clone(), Bytes::copy_from_slice(piece)));
            }
            bodies.push((state, body));
        }
        assert_eq!(hasher.ready.len(), 5000, "each body is in line once");
        let first: Vec<usize> = hasher.ready.iter().take(LANES).copied().collect();
        hasher.hash_round(Md5Many::new());
        let back: Vec<usize> = hasher.ready.iter().rev().take(LANES).rev().copied().collect();
        assert_eq!(back, first, "the round took the first 16 and put them back at the end");

        // One body is forgotten (its fill broke off): out of the line and the table.
        let (gone, _) = bodies.pop().unwrap();
        hasher.take(Job::Forget(gone.clone()));
        assert!(!hasher.ready.contains(&stream_id(&gone)));

        let mut answers = Vec::new();
        for (state, _) in &bodies {
            let (tx, rx) = oneshot::channel();
            hasher.take(Job::Finish(state.clone(), tx));
            answers.push(rx);
        }
        let mut rounds = 0;
        while !hasher.ready.is_empty() {
            hasher.hash_round(Md5Many::new());
            hasher.settle();
            rounds += 1;
        }
        hasher.settle();
        assert!(rounds > 5000 / LANES, "{rounds} rounds");
        for ((_, body), mut rx) in bodies.iter().zip(answers) {
            assert_eq!(rx.try_recv().ok(), Some(digests_of(body)), "body of {} bytes", body.len());
        }
        assert!(hasher.streams.is_empty() && hasher.done.is_empty(), "streams left behind");
        assert_eq!(pool_queued.load(Ordering::Acquire), 0);
    }

    /// Bodies of many lengths, cut into pieces of many lengths, hashed side by side (so rounds
    /// mix lanes of different lengths, and more bodies than lanes): every digest is md-5's, and
    /// every CRC-32C the store's.
    #[test]
    fn many_bodies_at_once_match_md5_one_at_a_time() {
        let pool = HashPool::new(1).unwrap();
        let bodies: Vec<Vec<u8>> = (0..40u32)
            .map(|b| {
                (0..(b * 7919 % 300_000 + b)).map(|i| (i.wrapping_mul(31).wrapping_add(b * 17) % 251) as u8).collect()
            })
            .collect();
        let mut jobs: Vec<HashJob> = bodies.iter().map(|_| pool.start(None).unwrap()).collect();
        // Interleave the bodies' pieces, each body cut at its own piece length.
        let mut offsets = vec![0usize; bodies.len()];
        loop {
            let mut any = false;
            for (b, body) in bodies.iter().enumerate() {
                let step = 1 + (b * 4099) % 70_000;
                let at = offsets[b];
                if at < body.len() {
                    let end = (at + step).min(body.len());
                    jobs[b].update(Bytes::copy_from_slice(&body[at..end]));
                    offsets[b] = end;
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
        let digests = block_on(async move {
            let mut out = Vec::new();
            for job in jobs {
                out.push(job.finish().await);
            }
            out
        });
        for (body, digest) in bodies.iter().zip(digests) {
            assert_eq!(digest, Some(digests_of(body)), "body of {} bytes", body.len());
        }
        assert_eq!(pool.queued_bytes(), 0, "everything queued was hashed");
        assert!(HashPool::new(0).unwrap().start(None).is_none());
    }

    /// A body known to be small is hashed by its caller; one of unknown or larger size goes to
    /// the hasher threads, when there are any.
    #[test]
    fn small_bodies_are_hashed_inline() {
        let pool = HashPool::new(1).unwrap();
        assert!(pool.start(Some(1024)).is_none());
        assert!(pool.start(Some(INLINE_MAX_BYTES)).is_none());
        assert!(pool.start(Some(INLINE_MAX_BYTES + 1)).is_some());
        assert!(pool.start(None).is_some());
        assert!(HashPool::new(0).unwrap().start(Some(1 << 20)).is_none());
    }

    #[test]
    fn a_job_dropped_unfinished_is_forgotten_and_leaves_no_backlog() {
        let pool = HashPool::new(1).unwrap();
        let mut dropped = pool.start(None).unwrap();
        dropped.update(Bytes::from(vec![7u8; 1 << 20]));
        drop(dropped);
        let mut kept = pool.start(None).unwrap();
        kept.update(Bytes::from_static(b"abc"));
        assert_eq!(block_on(kept.finish()), Some(digests_of(b"abc")));
        // The dropped job's piece was hashed or forgotten: nothing stays counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.queued_bytes() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.queued_bytes(), 0);
        // The empty body.
        assert_eq!(block_on(pool.start(None).unwrap().finish()), Some(digests_of(b"")));
    }

    /// A fill waits while its hasher is behind, and the wait is counted. No thread hashes here:
    /// the test plays the hasher and takes the queued pieces 5 ms after the fill began to wait.
    #[test]
    fn a_fill_waits_while_its_hasher_is_behind_and_the_wait_is_counted() {
        let (tx, rx) = mpsc::channel();
        let pool =
            HashPool { lanes: vec![tx], next: AtomicUsize::new(0), queued: Arc::default(), waits: Arc::default() };
        let mut job = pool.start(None).unwrap();
        job.update(Bytes::from(vec![1u8; 4 << 10]));
        block_on(job.backlog());
        assert_eq!(pool.waits(), (0, Duration::ZERO), "under the bound: no wait");

        job.update(Bytes::from(vec![2u8; MAX_BACKLOG_BYTES as usize]));
        let hasher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            for _ in 0..2 {
                if let Ok(Job::Update(state, piece)) = rx.recv() {
                    state.hashed(piece.len() as u64);
                }
            }
        });
        block_on(job.backlog());
        hasher.join().unwrap();
        let (count, waited) = pool.waits();
        assert_eq!(count, 1);
        assert!(waited >= Duration::from_millis(4), "waited {waited:?}");
        assert_eq!(pool.queued_bytes(), 0);
    }

    /// Bodies of unequal lengths arriving piece by piece, interleaved, on one worker: hashed
    /// there in rounds while at least 8 have bytes to hash, the rest handed to the thread; every
    /// digest is md-5's (and CRC the store's) and nothing stays counted.
    #[test]
    fn a_workers_lanes_hash_many_bodies_there_and_hand_the_rest_to_a_thread() {
        let pool = HashPool::new(1).unwrap();
        let local = LocalLanes::new(&pool);
        let (handed_over, digests) = block_on(async {
            local.started();
            let bodies: Vec<Vec<u8>> = (0..24usize)
                .map(|b| (0..(150_000 + b * 7_919)).map(|i| (i * 31 + b * 17 + i / 4099) as u8).collect())
                .collect();
            let mut jobs: Vec<HashJob> = bodies.iter().map(|_| pool.start_local(None, &local).unwrap()).collect();
            let mut at = vec![0usize; bodies.len()];
            // Every body a piece at a time, in turn; the worker's task runs between turns.
            while at.iter().zip(&bodies).any(|(a, b)| a < &b.len()) {
                for (i, body) in bodies.iter().enumerate() {
                    let len = (10_000 + i * 1_301).min(body.len() - at[i]);
                    if len > 0 {
                        jobs[i].update(Bytes::copy_from_slice(&body[at[i]..at[i] + len]));
                        at[i] += len;
                    }
                }
                YieldNow(false).await;
            }
            let states: Vec<Arc<State>> = jobs.iter().map(|job| job.state.clone()).collect();
            let mut digests = Vec::new();
            for (job, body) in jobs.into_iter().zip(&bodies) {
                digests.push((job.finish().await, digests_of(body)));
            }
            (handed_over(&states), digests)
        });
        for (i, (got, want)) in digests.iter().enumerate() {
            assert_eq!(*got, Some(*want), "body {i}");
        }
        assert!(handed_over < 24, "{handed_over} of 24 bodies went to the thread: none was hashed on the worker");
        // And some went over part-hashed: their MD5 and CRC state travelled with them.
        assert!(handed_over > 0, "no body was handed over: the hand-over went untested");
        assert_eq!(pool.queued_bytes(), 0);
    }

    /// A body alone (a single cold GET) is not hashed on the worker: it goes to the thread as
    /// it stands, once through or past the bytes a worker holds, and its digests are md-5's and
    /// the store's CRC-32C. A body whose fill broke off is forgotten there and leaves nothing
    /// counted.
    #[test]
    fn a_lone_body_goes_to_the_thread_and_a_dropped_one_leaves_nothing() {
        let pool = HashPool::new(1).unwrap();
        let local = LocalLanes::new(&pool);
        let (handed_over, got, body) = block_on(async {
            local.started();
            let body: Vec<u8> = (0..(3 << 20) + 555).map(|i: usize| (i % 251) as u8).collect();
            let mut job = pool.start_local(Some(body.len() as u64), &local).unwrap();
            for piece in body.chunks(256 << 10) {
                job.update(Bytes::copy_from_slice(piece));
                YieldNow(false).await;
            }
            let mut dropped = pool.start_local(None, &local).unwrap();
            dropped.update(Bytes::from(vec![5u8; 100_000]));
            YieldNow(false).await;
            let states = [job.state.clone(), dropped.state.clone()];
            drop(dropped);
            let got = job.finish().await;
            (handed_over(&states), got, body)
        });
        assert_eq!(got, Some(digests_of(&body)));
        assert_eq!(handed_over, 1, "handed over past 1 MiB held; its later pieces went straight there");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.queued_bytes() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.queued_bytes(), 0);
    }

    /// What md-5 and the store's CRC-32C give for `body` in one call each.
    fn digests_of(body: &[u8]) -> Digests {
        Digests { md5: Md5::digest(body).into(), crc32c: edgemirror_cache::crc::crc32c(body) }
    }

    /// How many of these bodies a worker handed to a hasher thread.
    fn handed_over(states: &[Arc<State>]) -> u64 {
        states.iter().filter(|state| state.adopted.load(Ordering::Relaxed)).count() as u64
    }
}
