//! Gives back to the kernel the heap memory glibc's allocator keeps after a burst.
//!
//! glibc keeps what each thread's arena once held. A burst of misses (bodies waiting for their
//! MD5: up to 64 MiB node-wide) grows the worker's arena to its peak. Freeing them leaves the
//! arena at that size: small long-lived allocations made meanwhile (index pages, keys) sit
//! between the freed bodies, so the arena's top cannot shrink.
//! Measured on the disk bench's node (`bench/RESULTS.md`): after mirroring 32,768 objects of
//! 64 KiB, 124 MB of anonymous memory, 7 MB of it in use; `malloc_trim(0)` gave back all but
//! 17 MB. Under a memory limit (a cgroup) every retained byte is page cache the node does not
//! have for its hits.
//!
//! A thread looks every [`INTERVAL`] at the slack: the process's resident anonymous memory
//! (`/proc/self/statm`) beyond what the allocator has in use ([`libc::mallinfo2`]). When it is at
//! least [`MIN_SLACK_BYTES`] more than a trim last left (some slack is not the allocator's to
//! give back: fragments smaller than a page, memory mapped by other means), it trims:
//! `malloc_trim(0)` walks every arena under its lock and returns free pages with
//! `MADV_DONTNEED`. An allocation on another thread waits meanwhile for the arena being walked
//! (measured: 20 ms once for 120 MB to give back, 1-2 ms when there is nothing), so it runs only
//! when there is something to give back.

use std::time::Duration;

/// How often the slack is looked at.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Trim only when at least this much resident anonymous memory is not in use.
pub const MIN_SLACK_BYTES: u64 = 32 << 20;

/// Starts the trimming thread (with glibc's allocator; a no-op elsewhere).
pub fn start() -> std::io::Result<()> {
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        std::thread::Builder::new().name("mem-trim".into()).spawn(|| {
            let mut left = 0;
            loop {
                std::thread::sleep(INTERVAL);
                trim_if_worth_it(&mut left);
            }
        })?;
    }
    Ok(())
}

/// Resident anonymous memory beyond what the allocator has in use, in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn slack() -> Option<u64> {
    // statm: size resident shared ... in pages; resident - shared is the anonymous part.
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_whitespace().skip(1).map(|f| f.parse::<u64>().ok());
    let (resident, shared) = (fields.next()??, fields.next()??);
    // SAFETY: sysconf and mallinfo2 take no pointers; mallinfo2 locks the arenas itself.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let info = unsafe { libc::mallinfo2() };
    let in_use = (info.uordblks + info.hblkhd) as u64;
    Some((resident.saturating_sub(shared) * page).saturating_sub(in_use))
}

/// Trims the arenas when the [`slack`] is at least [`MIN_SLACK_BYTES`] above `left`, what the
/// last trim left (updated here; it follows the slack down as memory is used again); returns the
/// slack seen.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_if_worth_it(left: &mut u64) -> u64 {
    let Some(slack) = slack() else { return 0 };
    if slack >= left.saturating_add(MIN_SLACK_BYTES) {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes no pointers and locks each arena itself.
        unsafe { libc::malloc_trim(0) };
        *left = self::slack().unwrap_or(0);
        tracing::debug!(
            slack_before = slack,
            slack_after = *left,
            took_us = started.elapsed().as_micros() as u64,
            "heap trimmed"
        );
    } else {
        *left = (*left).min(slack);
    }
    slack
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_if_worth_it(_left: &mut u64) -> u64 {
    0
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Runs [`given_back`] in a test process of its own: it measures the process's resident
    /// memory, which the other tests of this binary would move.
    #[test]
    fn memory_freed_between_live_allocations_is_given_back() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "memtrim::tests::given_back", "--ignored", "--test-threads=1", "--nocapture"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Memory freed in an arena's middle is given back: a thread allocates bodies with small
    /// long-lived allocations between them, frees the bodies, and the process's resident anonymous
    /// memory drops once the trim runs; the next look finds nothing worth a trim.
    #[test]
    #[ignore = "run in a process of its own by memory_freed_between_live_allocations_is_given_back"]
    fn given_back() {
        let rss_anon = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
        };
        // On its own thread, so the allocations land in an arena of their own, as a worker's do.
        let (kept, before) = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            let mut kept = Vec::new();
            for i in 0..2048 {
                // 64 KiB below glibc's mmap threshold: from the arena, touched.
                bodies.push(vec![i as u8; 64 << 10]);
                kept.push(vec![i as u8; 64]);
            }
            drop(bodies);
            (kept, rss_anon())
        })
        .join()
        .unwrap();
        let mut left = 0;
        let slack = trim_if_worth_it(&mut left);
        let after = rss_anon();
        assert!(slack >= MIN_SLACK_BYTES, "a slack of {slack} bytes");
        assert!(
            before.saturating_sub(after) >= 64 << 20,
            "RssAnon {before} -> {after}: the freed 128 MiB was not given back"
        );
        assert!(left < MIN_SLACK_BYTES, "a trim left a slack of {left}");
        // Nothing more to give back: the next look does not trim (it would keep `left`).
        let again = trim_if_worth_it(&mut left);
        assert!(again < left + MIN_SLACK_BYTES);
        drop(kept);
    }
}
