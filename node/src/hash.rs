//! MD5 of mirrored bodies, off the serving cores, many bodies at once.
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
//! and clients do not wait for it (`fill.rs` releases the last byte first).
//!
//! Memory: a fill whose hasher falls behind by more than [`MAX_BACKLOG_BYTES`], or that finds
//! more than [`MAX_POOL_BACKLOG_BYTES`] queued across all fills, waits ([`HashJob::backlog`])
//! before reading more from its origin. The node-wide bound matters because clients do not
//! wait for the digest: without it, fills whose clients are served could queue whole bodies
//! for hashing faster than a busy core hashes them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ahash::HashMap;
use bytes::Bytes;
use md5_many::{Md5Many, Md5State};
use tokio::sync::oneshot;

/// Bytes a fill may have queued for hashing before it stops reading its origin.
pub const MAX_BACKLOG_BYTES: u64 = 4 << 20;

/// Bytes queued for hashing across all fills past which every fill stops reading its origin.
pub const MAX_POOL_BACKLOG_BYTES: u64 = 64 << 20;

/// Bodies advanced together in one round: the 16 32-bit lanes of an AVX-512 register.
pub const LANES: usize = 16;

enum Job {
    Update(Arc<State>, Bytes),
    Finish(Arc<State>, oneshot::Sender<[u8; 16]>),
    /// The fill ended without asking for its digest (its body broke off): drop its stream.
    Forget(Arc<State>),
}

/// What a fill and its hasher thread share: the bytes queued and not yet hashed.
struct State {
    /// Of this fill.
    queued: AtomicU64,
    /// Of every fill of the pool.
    pool_queued: Arc<AtomicU64>,
}

impl State {
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
        Ok(HashPool { lanes, next: AtomicUsize::new(0), queued: Arc::new(AtomicU64::new(0)) })
    }

    /// A hashing job for one fill, or `None` when hashing is inline.
    pub fn start(&self) -> Option<HashJob> {
        if self.lanes.is_empty() {
            return None;
        }
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let state = Arc::new(State { queued: AtomicU64::new(0), pool_queued: self.queued.clone() });
        Some(HashJob { lane: self.lanes[lane].clone(), state, broken: false, finished: false })
    }

    /// Bytes queued for hashing across all fills (for tests and metrics).
    pub fn queued_bytes(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}

/// One body on a hasher thread: its MD5 so far, the pieces not yet hashed, and who waits for
/// the digest once they are.
struct Stream {
    state: Arc<State>,
    md5: Md5State,
    pieces: VecDeque<Bytes>,
    finish: Option<oneshot::Sender<[u8; 16]>>,
}

/// A hasher thread's streams, keyed by their shared state's address (unique while held).
#[derive(Default)]
struct Hasher {
    streams: HashMap<usize, Stream>,
    /// Rotates which streams get the lanes when more than [`LANES`] have pieces.
    round: usize,
}

impl Hasher {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let engine = Md5Many::new();
        loop {
            self.settle();
            if !self.streams.values().any(|s| !s.pieces.is_empty()) {
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
            Job::Update(state, piece) => self.stream(state).pieces.push_back(piece),
            Job::Finish(state, reply) => self.stream(state).finish = Some(reply),
            Job::Forget(state) => {
                if let Some(stream) = self.streams.remove(&(Arc::as_ptr(&state) as usize)) {
                    for piece in stream.pieces {
                        stream.state.hashed(piece.len() as u64);
                    }
                }
            }
        }
    }

    /// The stream of `state`, begun if this is its first job.
    fn stream(&mut self, state: Arc<State>) -> &mut Stream {
        self.streams.entry(Arc::as_ptr(&state) as usize).or_insert_with(|| Stream {
            state,
            md5: Md5State::new(),
            pieces: VecDeque::new(),
            finish: None,
        })
    }

    /// Hashes the next piece of up to [`LANES`] streams, together.
    fn hash_round(&mut self, engine: Md5Many) {
        let mut ready: Vec<usize> =
            self.streams.iter().filter(|(_, s)| !s.pieces.is_empty()).map(|(id, _)| *id).collect();
        if ready.is_empty() {
            return;
        }
        if ready.len() > LANES {
            ready.sort_unstable();
            let start = self.round % ready.len();
            ready.rotate_left(start);
            ready.truncate(LANES);
            self.round = self.round.wrapping_add(LANES);
        }
        let pieces: Vec<Bytes> = ready
            .iter()
            .map(|id| self.streams.get_mut(id).and_then(|s| s.pieces.pop_front()).unwrap_or_default())
            .collect();
        let mut states: Vec<Md5State> = ready.iter().map(|id| self.streams[id].md5).collect();
        if let [state] = states.as_mut_slice() {
            state.update(&pieces[0]);
        } else {
            let inputs: Vec<&[u8]> = pieces.iter().map(|p| p.as_ref()).collect();
            engine.update_many(&mut states, &inputs);
        }
        for ((id, md5), piece) in ready.iter().zip(states).zip(&pieces) {
            if let Some(stream) = self.streams.get_mut(id) {
                stream.md5 = md5;
                stream.state.hashed(piece.len() as u64);
            }
        }
    }

    /// Answers the streams whose every piece is hashed and whose digest is asked for.
    fn settle(&mut self) {
        self.streams.retain(|_, stream| {
            if !stream.pieces.is_empty() {
                return true;
            }
            match stream.finish.take() {
                Some(reply) => {
                    let _ = reply.send(stream.md5.finalize());
                    false
                }
                None => true,
            }
        });
    }
}

/// Puts the calling hasher thread at the lowest CPU priority (nice 19). No client waits for a
/// digest unless the origin sent a Content-MD5 (`fill.rs` releases the last byte before the ETag
/// is known), so on a core shared with a worker the worker always goes first: in back-to-back
/// cold 1 MiB GETs the previous object's MD5 otherwise took half the core from the next
/// request. Nice 19 still gets a share of a busy core (1.5% against one worker at nice 0), so
/// a digest is never starved outright, and fills stop reading their origins when the queue
/// grows ([`HashJob::backlog`]), which leaves the core to the hasher.
fn lower_priority() {
    // SAFETY: plain syscalls on this thread's own id; no memory is shared with the kernel.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the MD5 thread's priority");
    }
}

/// The MD5 of one body being computed on a hasher thread.
pub struct HashJob {
    lane: mpsc::Sender<Job>,
    state: Arc<State>,
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
        if self.lane.send(Job::Update(self.state.clone(), data)).is_err() {
            // Never hashed: take it off the counts, or every other fill would wait for it.
            self.state.hashed(len);
            self.broken = true;
        }
    }

    /// Waits while more than [`MAX_BACKLOG_BYTES`] of this fill, or [`MAX_POOL_BACKLOG_BYTES`]
    /// of all fills, are queued: the origins are read no faster than the bodies can be hashed.
    pub async fn backlog(&self) {
        while !self.broken
            && (self.state.queued.load(Ordering::Acquire) > MAX_BACKLOG_BYTES
                || self.state.pool_queued.load(Ordering::Acquire) > MAX_POOL_BACKLOG_BYTES)
        {
            monoio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// The digest of everything queued, once the hasher has caught up. `None` if the hasher
    /// thread died (the fill must then fail rather than store an object without its ETag).
    pub async fn finish(mut self) -> Option<[u8; 16]> {
        self.finished = true;
        if self.broken {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.lane.send(Job::Finish(self.state.clone(), tx)).ok()?;
        rx.await.ok()
    }
}

impl Drop for HashJob {
    fn drop(&mut self) {
        if !self.finished && !self.broken {
            let _ = self.lane.send(Job::Forget(self.state.clone()));
        }
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

    /// Bodies of many lengths, cut into pieces of many lengths, hashed side by side (so rounds
    /// mix lanes of different lengths, and more bodies than lanes): every digest is md-5's.
    #[test]
    fn many_bodies_at_once_match_md5_one_at_a_time() {
        let pool = HashPool::new(1).unwrap();
        let bodies: Vec<Vec<u8>> = (0..40u32)
            .map(|b| {
                (0..(b * 7919 % 300_000 + b)).map(|i| (i.wrapping_mul(31).wrapping_add(b * 17) % 251) as u8).collect()
            })
            .collect();
        let mut jobs: Vec<HashJob> = bodies.iter().map(|_| pool.start().unwrap()).collect();
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
            assert_eq!(digest, Some(Md5::digest(body).into()), "body of {} bytes", body.len());
        }
        assert_eq!(pool.queued_bytes(), 0, "everything queued was hashed");
        assert!(HashPool::new(0).unwrap().start().is_none());
    }

    #[test]
    fn a_job_dropped_unfinished_is_forgotten_and_leaves_no_backlog() {
        let pool = HashPool::new(1).unwrap();
        let mut dropped = pool.start().unwrap();
        dropped.update(Bytes::from(vec![7u8; 1 << 20]));
        drop(dropped);
        let mut kept = pool.start().unwrap();
        kept.update(Bytes::from_static(b"abc"));
        assert_eq!(block_on(kept.finish()), Some(Md5::digest(b"abc").into()));
        // The dropped job's piece was hashed or forgotten: nothing stays counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.queued_bytes() != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(pool.queued_bytes(), 0);
        // The empty body.
        assert_eq!(block_on(pool.start().unwrap().finish()), Some(Md5::digest(b"").into()));
    }
}
