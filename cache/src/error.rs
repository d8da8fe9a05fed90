//! Errors of the object store and hot cache. Each kind says what went wrong and where, so an
//! operator reading a log line can find the segment and offset without a debugger.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A conditional commit lost: the key got a newer version (a PUT, a delete) after the
    /// writer's pin. Not a failure of the store; the record is simply not kept.
    #[error("superseded: the key changed after this write began")]
    Superseded,
    /// The commit was called off from outside ([`crate::RecordWriter::cancel_when`]): its bucket
    /// is being deleted. Nothing is kept.
    #[error("cancelled: the object's bucket is being deleted")]
    Cancelled,
    /// A conditional write ([`crate::RecordWriter::require`]) whose condition did not hold;
    /// `exists` says whether the key had an object. Nothing is kept.
    #[error("the write's precondition did not hold")]
    ConditionNotMet { exists: bool },
    /// Bytes on disk failed a magic/length/checksum check.
    #[error("corrupt record in segment {segment} at offset {offset}: {what}")]
    Corrupt { segment: u64, offset: u64, what: &'static str },
    /// A real space limit: an object larger than `store.max_object_bytes`, or the file system
    /// refused a write or sync (ENOSPC, EDQUOT).
    #[error("no space: {0}")]
    NoSpace(String),
    /// The store's own bookkeeping is inconsistent: a bug in this crate, not a full disk and not
    /// bad input. Reported instead of a panic so one request fails, not the node.
    #[error("internal invariant broken (a bug, not a full disk): {0}")]
    Invariant(&'static str),
    /// Another open [`crate::Store`] (in this process or another) holds `dir/LOCK`. Opening it
    /// anyway would let two stores delete each other's unfinished segments and reuse segment ids.
    #[error("store directory {dir} is in use by another edgemirror process ({})", holder(.pid))]
    Locked {
        dir: PathBuf,
        /// The holder's pid as written in the LOCK file; `None` if it could not be read.
        pid: Option<u32>,
    },
    /// The body written does not match what was announced (length or checksum).
    #[error("body mismatch: {0}")]
    BodyMismatch(String),
    /// An object key or bucket name the record format cannot hold.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("hot cache: {0}")]
    Hot(String),
}

fn holder(pid: &Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Like [`Error::io`] for a failed write or sync: a full file system or an exhausted quota
    /// becomes [`Error::NoSpace`], so callers can tell "disk full" from "disk broken".
    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let full = matches!(source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
            || matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        let path = path.into();
        if full {
            return Error::NoSpace(format!("writing {}: {source}", path.display()));
        }
        Error::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn full_disk_errors_are_no_space_and_others_stay_io() {
        for e in [
            io::Error::from_raw_os_error(libc::ENOSPC),
            io::Error::from_raw_os_error(libc::EDQUOT),
            io::Error::from(io::ErrorKind::StorageFull),
        ] {
            assert!(matches!(Error::write("/s/1.seg", e), Error::NoSpace(_)));
        }
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert!(matches!(Error::write("/s/1.seg", eio), Error::Io { .. }));
    }

    #[test]
    fn locked_names_the_directory_and_the_holder() {
        let e = Error::Locked { dir: "/srv/store".into(), pid: Some(42) };
        assert_eq!(e.to_string(), "store directory /srv/store is in use by another edgemirror process (pid 42)");
        let e = Error::Locked { dir: "/srv/store".into(), pid: None };
        assert!(e.to_string().ends_with("(pid unknown)"));
    }
}
