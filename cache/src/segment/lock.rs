//! One store directory, one owner: `store.dir/LOCK`.
//!
//! [`DirLock::acquire`] runs before [`super::Store::open`] touches anything else in the
//! directory. Two stores on one directory would each run start-up recovery, which deletes segment
//! files holding nothing committed, i.e. the other's in-progress solo segment; and both would hand
//! out the same segment ids. The lock is a `flock(LOCK_EX | LOCK_NB)` on the LOCK file, held for the
//! store's lifetime and released by `Drop` (closing the file), or by the kernel when the process
//! dies, so a crash never leaves a stale lock. flock is per open file description: a second
//! `Store::open` in the same process is refused too.
//!
//! The holder writes its pid into the file, only so that the refusal can name it. The file is
//! never removed: unlinking a lock file lets a third process lock a fresh inode while a second
//! still holds the old one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::sys;
use crate::{Error, Result};

pub(crate) const LOCK_FILE_NAME: &str = "LOCK";

/// The held lock. Dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist) or fails with [`Error::Locked`].
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE_NAME);
        // Not truncated on open: until we hold the lock, its content is the holder's pid.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !sys::try_lock_exclusive(&file).map_err(|e| Error::io(&path, e))? {
            return Err(Error::Locked { dir: dir.to_path_buf(), pid: holder_pid(&path) });
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0).map_err(|e| Error::write(&path, e))?;
        file.write_all_at(pid.as_bytes(), 0).map_err(|e| Error::write(&path, e))?;
        Ok(DirLock { _file: file })
    }
}

/// The pid the holder wrote; `None` if the file is empty (the holder is between truncate and
/// write) or unreadable.
fn holder_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
