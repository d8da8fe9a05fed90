//! The ballast: a file of real blocks (`store.dir/BALLAST`, [`BALLAST_BYTES`]) kept so that a
//! filesystem other writers filled to its last byte can still take deletes.
//!
//! Tombstones already pass `max_bytes` and the free-space watermark, but when the disk itself
//! has no free block (ENOSPC), nothing can be written, so nothing can be deleted, and room
//! could never be made from inside the node. On that ENOSPC, a delete removes the ballast and
//! tries once more; the freed blocks hold many tombstones and let compaction copy the little
//! that lives in mostly-dead segments. The ballast is written again (by compaction, or at open)
//! once the filesystem has room for it twice over. CockroachDB's emergency ballast works the
//! same way.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::sys;

/// Size of the ballast: room for thousands of tombstones and some compaction copies.
pub const BALLAST_BYTES: u64 = 4 << 20;

pub(crate) struct Ballast {
    path: PathBuf,
    present: AtomicBool,
}

impl Ballast {
    /// The ballast of the store in `dir`, written now when missing and the filesystem has room.
    pub(crate) fn open(dir: &Path, min_free_bytes: u64) -> Ballast {
        let path = dir.join("BALLAST");
        let present = fs::metadata(&path).is_ok_and(|m| m.len() == BALLAST_BYTES);
        let ballast = Ballast { path, present: AtomicBool::new(present) };
        ballast.restore(min_free_bytes);
        ballast
    }

    /// Whether the ballast file is in place.
    pub(crate) fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Removes the ballast; `true` when it was there (so a retry may now find room).
    pub(crate) fn release(&self) -> bool {
        if !self.present.swap(false, Ordering::AcqRel) {
            return false;
        }
        match fs::remove_file(&self.path) {
            Ok(()) => {
                tracing::warn!(path = %self.path.display(), bytes = BALLAST_BYTES, "the disk is full: ballast released so that deletes can make room");
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot remove the ballast");
                false
            }
        }
    }

    /// Writes the ballast again if it is missing and the filesystem has room for it twice over
    /// (beyond `min_free_bytes`). A failure leaves no partial file.
    pub(crate) fn restore(&self, min_free_bytes: u64) {
        if self.is_present() {
            return;
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let free = sys::free_bytes(dir).unwrap_or(0);
        if free < BALLAST_BYTES.saturating_mul(2).saturating_add(min_free_bytes) {
            return;
        }
        match self.write() {
            Ok(()) => self.present.store(true, Ordering::Release),
            Err(e) => {
                let _ = fs::remove_file(self.path.with_extension("tmp"));
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the ballast; retried later");
            }
        }
    }

    fn write(&self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        // Real blocks, not a sparse file: zeros written take space on every filesystem we run on.
        let block = vec![0u8; 1 << 20];
        for _ in 0..BALLAST_BYTES / block.len() as u64 {
            f.write_all(&block)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_once_and_written_again_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let ballast = Ballast::open(dir.path(), 0);
        assert!(ballast.is_present());
        assert_eq!(fs::metadata(dir.path().join("BALLAST")).unwrap().len(), BALLAST_BYTES);
        assert!(ballast.release());
        assert!(!dir.path().join("BALLAST").exists());
        assert!(!ballast.release(), "released twice");
        ballast.restore(0);
        assert!(ballast.is_present());
        // An impossible watermark: not written.
        assert!(ballast.release());
        ballast.restore(u64::MAX / 4);
        assert!(!ballast.is_present());
        // A reopened store finds it in place.
        ballast.restore(0);
        assert!(Ballast::open(dir.path(), 0).is_present());
    }
}
