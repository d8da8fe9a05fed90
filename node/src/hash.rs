//! MD5 of mirrored bodies, off the serving cores.
//!
//! The ETag of an object is the MD5 of its body, so a fill must hash every byte. MD5 runs at
//! about 700 MB/s even with md-5's assembly backend: on the worker it was the largest cost of a
//! miss (40% of the worker's samples on cold 1 MiB GETs in bench/RESULTS.md), CPU taken from
//! every other connection of that core. Here each fill hands its pieces (refcounted `Bytes`, no
//! copy) to a hasher thread in order, and awaits the digest at the end; the hashing overlaps the
//! transfer instead of following it.
//!
//! Order: all pieces of one fill go to the same thread through one FIFO channel. Memory: a fill
//! whose hasher falls behind by more than [`MAX_BACKLOG_BYTES`] waits ([`HashJob::backlog`])
//! before reading more from its origin, so the queue stays bounded.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::oneshot;

/// Bytes a fill may have queued for hashing before it stops reading its origin.
pub const MAX_BACKLOG_BYTES: u64 = 4 << 20;

enum Job {
    Update(Arc<State>, Bytes),
    Finish(Arc<State>, oneshot::Sender<[u8; 16]>),
}

struct State {
    md5: Mutex<Md5>,
    queued: AtomicU64,
}

/// The hasher threads.
pub struct HashPool {
    lanes: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

impl HashPool {
    /// Starts `threads` hasher threads (0: fills hash inline on their worker).
    pub fn new(threads: usize) -> std::io::Result<HashPool> {
        let mut lanes = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new().name(format!("md5-{i}")).spawn(move || {
                lower_priority();
                for job in rx {
                    match job {
                        Job::Update(state, data) => {
                            state.md5.lock().unwrap_or_else(|e| e.into_inner()).update(&data);
                            state.queued.fetch_sub(data.len() as u64, Ordering::Release);
                        }
                        Job::Finish(state, reply) => {
                            let md5 = std::mem::take(&mut *state.md5.lock().unwrap_or_else(|e| e.into_inner()));
                            let _ = reply.send(md5.finalize().into());
                        }
                    }
                }
            })?;
            lanes.push(tx);
        }
        Ok(HashPool { lanes, next: AtomicUsize::new(0) })
    }

    /// A hashing job for one fill, or `None` when hashing is inline.
    pub fn start(&self) -> Option<HashJob> {
        if self.lanes.is_empty() {
            return None;
        }
        let lane = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let state = Arc::new(State { md5: Mutex::new(Md5::new()), queued: AtomicU64::new(0) });
        Some(HashJob { lane: self.lanes[lane].clone(), state, broken: false })
    }
}

/// Puts the calling hasher thread at the lowest CPU priority (nice 19). No client waits for a
/// digest unless the origin sent a Content-MD5 (`fill.rs` releases the last byte before the ETag
/// is known), so on a core shared with a worker the worker always goes first: in back-to-back
/// cold 1 MiB GETs the previous object's MD5 otherwise took half the core from the next
/// request. Nice 19 still gets a share of a busy core (1.5% against one worker at nice 0), so
/// a digest is never starved outright, and a fill whose hasher falls behind stops reading its
/// origin ([`HashJob::backlog`]).
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
}

impl HashJob {
    /// Queues the next piece of the body.
    pub fn update(&mut self, data: Bytes) {
        self.state.queued.fetch_add(data.len() as u64, Ordering::AcqRel);
        if self.lane.send(Job::Update(self.state.clone(), data)).is_err() {
            self.broken = true;
        }
    }

    /// Waits while more than [`MAX_BACKLOG_BYTES`] are queued: the origin is read no faster than
    /// the body can be hashed.
    pub async fn backlog(&self) {
        while !self.broken && self.state.queued.load(Ordering::Acquire) > MAX_BACKLOG_BYTES {
            monoio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// The digest of everything queued, once the hasher has caught up. `None` if the hasher
    /// thread died (the fill must then fail rather than store an object without its ETag).
    pub async fn finish(self) -> Option<[u8; 16]> {
        if self.broken {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.lane.send(Job::Finish(self.state, tx)).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_inline_md5_in_order() {
        let pool = HashPool::new(2).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut job = pool.start().unwrap();
        for piece in data.chunks(65_536) {
            job.update(Bytes::copy_from_slice(piece));
        }
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        let mut rt = rt;
        let digest = rt.block_on(async move {
            job.backlog().await;
            job.finish().await
        });
        assert_eq!(digest, Some(Md5::digest(&data).into()));
        assert!(HashPool::new(0).unwrap().start().is_none());
    }
}
