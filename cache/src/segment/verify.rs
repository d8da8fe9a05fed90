//! Checking a body against its CRC on its first read in this process, off the caller's thread.
//!
//! Recovery checks record headers and trailers only, so start-up does not read the whole store;
//! a body is checked the first time it is read. That check reads every byte of the body (a
//! 512 MiB object means 512 MiB of page faults), and the caller is a single-threaded runtime
//! serving every connection of its core, so [`super::Store::lookup`] hands the check to a small
//! pool of `store-verify` threads ([`Verifier`]) and awaits the answer on a
//! `tokio::sync::oneshot` (runtime-agnostic; monoio's `sync` feature lets another thread wake it).
//!
//! The index keeps one bit per object: its body was checked in this process. Concurrent first
//! reads of one record share one check ([`Checks`]): the first claims it, later ones add a
//! waiter. A checked body answers with one atomic load in the index: no thread hop, no
//! allocation.
//!
//! This file knows nothing of the index or the store; the store decides what a check's outcome
//! does (`super::settle`: mark the object checked, or drop it from the index and count it).

use std::collections::HashMap;
use std::sync::{mpsc, Mutex};

use tokio::sync::oneshot;

/// Threads of the verifier pool. Two, so one large first read does not hold up every other
/// first read behind it, and no more: each check is a sequential read of the device.
pub(crate) const VERIFIER_THREADS: usize = 2;

/// The name of the verifier threads (visible in `top -H` and in test assertions).
pub(crate) const VERIFIER_THREAD_NAME: &str = "store-verify";

/// A record: its segment id and offset.
pub(crate) type RecordId = (u64, u64);

/// What a caller should do about a body's check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The body was checked and matched.
    Verified,
    /// The caller claimed the check: it must run it and then call [`Checks::finish`].
    Run,
    /// Another caller is running it; the outcome goes to the waiter, if one was given.
    Wait,
}

/// The body checks in flight, by record, with the callers awaiting each.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    in_flight: Mutex<HashMap<RecordId, Vec<oneshot::Sender<bool>>>>,
    /// Which threads computed which record's CRC, so tests can see where checks ran.
    #[cfg(test)]
    pub(crate) checked_on: Mutex<Vec<(RecordId, String)>>,
}

impl Checks {
    /// Claims the check of `record`, or joins the one in flight. `verified` is asked under the
    /// lock that [`Checks::finish`] takes, so a check that finished meanwhile is not run again.
    /// `waiter`, when given, is answered by `finish` for `Run` and `Wait`.
    pub(crate) fn claim(
        &self,
        record: RecordId,
        waiter: Option<oneshot::Sender<bool>>,
        verified: impl FnOnce() -> bool,
    ) -> Claim {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if verified() {
            return Claim::Verified;
        }
        match in_flight.entry(record) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.get_mut().extend(waiter);
                Claim::Wait
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(waiter.into_iter().collect());
                Claim::Run
            }
        }
    }

    /// Ends `record`'s check (the caller has recorded its outcome in the index) and answers
    /// every waiter.
    pub(crate) fn finish(&self, record: RecordId, matched: bool) {
        let waiters = self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&record);
        for w in waiters.into_iter().flatten() {
            // A waiter that went away (its request was cancelled) needs no answer.
            let _ = w.send(matched);
        }
    }

    /// Computes the body's CRC-32C and compares it with the one its trailer recorded.
    pub(crate) fn body_matches(&self, record: RecordId, body: &[u8], crc: u32) -> bool {
        #[cfg(test)]
        self.checked_on
            .lock()
            .unwrap()
            .push((record, std::thread::current().name().unwrap_or("<unnamed>").to_string()));
        #[cfg(not(test))]
        let _ = record;
        crate::crc::crc32c(body) == crc
    }

    #[cfg(test)]
    pub(crate) fn waiter_count(&self, record: RecordId) -> usize {
        self.in_flight.lock().unwrap().get(&record).map_or(0, Vec::len)
    }
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
    fn one_check_per_record_and_every_waiter_answered() {
        let checks = Checks::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        assert_eq!(checks.claim((1, 64), Some(tx1), || false), Claim::Run, "the first reader runs the check");
        assert_eq!(checks.claim((1, 64), Some(tx2), || false), Claim::Wait, "the second waits for it");
        assert_eq!(checks.claim((1, 64), None, || false), Claim::Wait);
        assert_eq!(checks.claim((1, 128), None, || false), Claim::Run, "another record is another check");
        assert_eq!(checks.waiter_count((1, 64)), 2);
        checks.finish((1, 64), true);
        assert_eq!(rx1.try_recv(), Ok(true));
        assert_eq!(rx2.try_recv(), Ok(true));
        assert_eq!(checks.claim((1, 64), None, || true), Claim::Verified, "once recorded, no check");
    }
}
