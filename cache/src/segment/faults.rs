//! A fault-injecting storage layer for tests (feature `faults`): writes that fail after N, a
//! full disk, an I/O error, a short write, and a crash that loses every byte not yet synced.
//!
//! Every segment write and sync of a store goes through [`before_write`] / [`after_sync`] with the
//! store's directory; a test [`install`]s a [`Faults`] plan for its own directory, so tests run
//! in parallel without seeing each other's faults. Without the feature the hooks do not exist
//! and cost nothing.
//!
//! The crash model ([`Faults::crash`]): the page cache keeps completed writes across a killed
//! process, but a power loss keeps only what was synced. The plan records, for every write since
//! its file's last `fdatasync`, what the bytes were before; `crash` puts them back (newest
//! first), so the files hold exactly what a machine that lost power would find. The test then
//! reopens the store and checks its promises.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// What to break.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Writes still allowed before `fail_with` starts failing them (`None`: never fail).
    writes_left: Option<u64>,
    /// The error the failing writes get (raw OS error: ENOSPC, EIO).
    fail_with: i32,
    /// The next failing write lands this many of its bytes first (a short write), then fails.
    short_by: Option<usize>,
    /// Writes not yet synced, per file: (offset, the bytes there before, the file length before).
    unsynced: HashMap<PathBuf, Vec<(u64, Vec<u8>, u64)>>,
    /// Writes seen so far (failed or not).
    writes: u64,
}

impl Faults {
    /// Lets `n` more writes through, then fails every write with the raw OS error `errno`
    /// (`libc::ENOSPC`, `libc::EIO`).
    pub fn fail_writes_after(&self, n: u64, errno: i32) {
        let mut s = self.lock();
        s.writes_left = Some(n);
        s.fail_with = errno;
    }

    /// Like [`Faults::fail_writes_after`], and the first failing write lands `landed` of its
    /// bytes before it fails (a short write).
    pub fn short_write_after(&self, n: u64, landed: usize, errno: i32) {
        self.fail_writes_after(n, errno);
        self.lock().short_by = Some(landed);
    }

    /// The disk works again.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.writes_left = None;
        s.short_by = None;
    }

    /// Writes seen so far, failed or not.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// A power loss: every write not followed by its file's sync is undone, newest first.
    /// Call it with the store dropped (as after a crash), then reopen.
    pub fn crash(&self) -> io::Result<()> {
        let unsynced = std::mem::take(&mut self.lock().unsynced);
        for (path, writes) in unsynced {
            let Ok(file) = OpenOptions::new().write(true).open(&path) else { continue };
            for (offset, before, len_before) in writes.into_iter().rev() {
                file.write_all_at(&before, offset)?;
                file.set_len(len_before)?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type Plans = Mutex<Vec<(PathBuf, Arc<Faults>)>>;

fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(Default::default)
}

/// Applies `faults` to the store whose directory is `dir` (and everything under it).
pub fn install(dir: &Path, faults: Arc<Faults>) {
    plans().lock().unwrap_or_else(|e| e.into_inner()).push((dir.to_path_buf(), faults));
}

fn plan_for(path: &Path) -> Option<Arc<Faults>> {
    let plans = plans().lock().unwrap_or_else(|e| e.into_inner());
    plans.iter().find(|(dir, _)| path.starts_with(dir)).map(|(_, f)| f.clone())
}

/// Called before a positional write of `len` bytes at `offset` to `path`. `Err` fails it;
/// `Ok(Some(k))` lets only `k` bytes land before it fails (the caller writes them, then errs).
pub(crate) fn before_write(path: &Path, file: &std::fs::File, offset: u64, len: usize) -> io::Result<Option<usize>> {
    let Some(faults) = plan_for(path) else { return Ok(None) };
    let mut s = faults.lock();
    s.writes += 1;
    // Remember what is there now, for a simulated power loss.
    let file_len = file.metadata()?.len();
    let mut before = vec![0u8; len];
    let existing = file_len.saturating_sub(offset).min(len as u64) as usize;
    if existing > 0 {
        file.read_exact_at(&mut before[..existing], offset)?;
    }
    before.truncate(existing);
    s.unsynced.entry(path.to_path_buf()).or_default().push((offset, before, file_len));
    match s.writes_left {
        None => Ok(None),
        Some(0) => match s.short_by.take() {
            Some(landed) => Ok(Some(landed.min(len))),
            None => Err(io::Error::from_raw_os_error(s.fail_with)),
        },
        Some(n) => {
            s.writes_left = Some(n - 1);
            Ok(None)
        }
    }
}

/// The raw OS error the failing writes get, after a short write.
pub(crate) fn short_write_error(path: &Path) -> io::Error {
    let errno = plan_for(path).map(|f| f.lock().fail_with).unwrap_or(libc::EIO);
    io::Error::from_raw_os_error(errno)
}

/// Called after `path` was synced: its writes are safe from a simulated power loss.
pub(crate) fn after_sync(path: &Path) {
    if let Some(faults) = plan_for(path) {
        faults.lock().unsynced.remove(path);
    }
}
