//! Checking a body against its CRC on its first read in this process, off the caller's thread.
//!
//! Recovery checks record headers and trailers only, so start-up does not read the whole store;
//! a body is checked the first time it is read. That check reads every byte of the body (a
//! 512 MiB object means 512 MiB of page faults), and the caller is a single-threaded runtime
//! serving every connection of its core, so [`super::Store::lookup`] hands the check to a small
//! pool of `store-verify` threads ([`Verifier`]) and awaits the answer on a
//! `tokio::sync::oneshot` (runtime-agnostic; monoio's `sync` feature lets another thread wake it).
//!
//! Each index entry carries a [`BodyCheck`]: unverified -> verifying -> verified | corrupt.
//! Concurrent first reads of one entry share one check: the first claims it, later ones add a
//! waiter. A verified entry answers with one atomic load: no thread hop, no allocation. The
//! state is per process and per entry: a re-fill of a corrupt object is a new entry.
//!
//! This file knows nothing of the index or the store; the store decides what a failed check does
//! (`super::settle`: drop the entry from the index, count it).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Mutex};

use tokio::sync::oneshot;

/// Threads of the verifier pool. Two, so one large first read does not hold up every other
/// first read behind it, and no more: each check is a sequential read of the device.
pub(crate) const VERIFIER_THREADS: usize = 2;

/// The name of the verifier threads (visible in `top -H` and in test assertions).
pub(crate) const VERIFIER_THREAD_NAME: &str = "store-verify";

const UNVERIFIED: u8 = 0;
const VERIFYING: u8 = 1;
const VERIFIED: u8 = 2;
const CORRUPT: u8 = 3;

/// What a caller should do about an entry's body check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The check has an outcome: `true` when the body matched.
    Done(bool),
    /// The caller claimed the check: it must run it and call [`BodyCheck::finish`].
    Run,
    /// Another caller is running it; the outcome goes to the waiter, if one was given.
    Wait,
}

/// The first-read check of one entry's body.
#[derive(Debug)]
pub(crate) struct BodyCheck {
    state: AtomicU8,
    /// Callers awaiting the running check. Transitions out of VERIFYING happen under this lock,
    /// so a waiter added while VERIFYING is always answered.
    waiters: Mutex<Vec<oneshot::Sender<bool>>>,
    /// Names of the threads that computed this body's CRC, so tests can see where it ran.
    #[cfg(test)]
    pub(crate) checked_on: Mutex<Vec<String>>,
}

impl BodyCheck {
    fn with_state(state: u8) -> Self {
        BodyCheck {
            state: AtomicU8::new(state),
            waiters: Mutex::new(Vec::new()),
            #[cfg(test)]
            checked_on: Mutex::new(Vec::new()),
        }
    }

    /// For a body this process wrote and checksummed as it arrived.
    pub(crate) fn verified() -> Self {
        Self::with_state(VERIFIED)
    }

    /// For a body found on disk at start.
    pub(crate) fn unverified() -> Self {
        Self::with_state(UNVERIFIED)
    }

    /// The hot path: one load.
    pub(crate) fn is_verified(&self) -> bool {
        self.state.load(Ordering::Acquire) == VERIFIED
    }

    /// Claims the check, joins the one in flight, or reports its outcome. `waiter`, when given,
    /// is answered by [`BodyCheck::finish`] for `Run` and `Wait` (and dropped for `Done`).
    pub(crate) fn claim(&self, waiter: Option<oneshot::Sender<bool>>) -> Claim {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let claim = match self.state.load(Ordering::Acquire) {
            VERIFIED => return Claim::Done(true),
            CORRUPT => return Claim::Done(false),
            UNVERIFIED => {
                self.state.store(VERIFYING, Ordering::Release);
                Claim::Run
            }
            _ => Claim::Wait,
        };
        waiters.extend(waiter);
        claim
    }

    /// Records the outcome and answers every waiter. Returns `true` for the call that moved the
    /// entry out of unverified/verifying; later calls (a synchronous reader that checked the
    /// same bytes meanwhile) change nothing.
    pub(crate) fn finish(&self, matched: bool) -> bool {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(self.state.load(Ordering::Acquire), VERIFIED | CORRUPT) {
            return false;
        }
        self.state.store(if matched { VERIFIED } else { CORRUPT }, Ordering::Release);
        for w in waiters.drain(..) {
            // A waiter that went away (its request was cancelled) needs no answer.
            let _ = w.send(matched);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.lock().unwrap().len()
    }
}

/// Computes the body's CRC-32C and compares it with the one its trailer recorded.
pub(crate) fn body_matches(body: &[u8], crc: u32, check: &BodyCheck) -> bool {
    #[cfg(test)]
    check.checked_on.lock().unwrap().push(std::thread::current().name().unwrap_or("<unnamed>").to_string());
    #[cfg(not(test))]
    let _ = check;
    crc32c::crc32c(body) == crc
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The `store-verify` thread pool. Its threads end when the `Verifier` (owned by the store) is
/// dropped: the channel closes and `recv` fails.
pub(crate) struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    pub(crate) fn start(threads: usize) -> std::io::Result<Verifier> {
        let (jobs, rx) = mpsc::channel::<Job>();
        // One queue for all threads: whichever is free takes the next check.
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(VERIFIER_THREAD_NAME.into()).spawn(move || loop {
                // The guard is a temporary of this statement: released before the job runs.
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(mpsc::RecvError) => return,
                }
            })?;
        }
        Ok(Verifier { jobs })
    }

    /// Queues `job`. Should the pool be gone, the job runs here rather than leave its waiters
    /// waiting forever.
    pub(crate) fn submit(&self, job: Job) {
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            job();
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_check_per_entry_and_every_waiter_answered() {
        let check = BodyCheck::unverified();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        assert_eq!(check.claim(Some(tx1)), Claim::Run, "the first reader runs the check");
        assert_eq!(check.claim(Some(tx2)), Claim::Wait, "the second waits for it");
        assert_eq!(check.claim(None), Claim::Wait);
        assert!(!check.is_verified());
        assert!(check.finish(true));
        assert!(!check.finish(false), "a late second outcome changes nothing");
        assert!(check.is_verified());
        assert_eq!(rx1.try_recv(), Ok(true));
        assert_eq!(rx2.try_recv(), Ok(true));
        assert_eq!(check.claim(None), Claim::Done(true));
    }

    #[test]
    fn corrupt_is_final() {
        let check = BodyCheck::unverified();
        assert_eq!(check.claim(None), Claim::Run);
        assert!(check.finish(false));
        assert_eq!(check.claim(None), Claim::Done(false));
        assert!(!check.is_verified());
    }
}
