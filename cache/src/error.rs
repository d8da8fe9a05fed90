//! Errors of the object store and hot cache. Each kind says what went wrong and where, so an
//! operator reading a log line can find the segment and offset without a debugger.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bytes on disk failed a magic/length/checksum check.
    #[error("corrupt record in segment {segment} at offset {offset}: {what}")]
    Corrupt { segment: u64, offset: u64, what: &'static str },
    /// A write would exceed a configured limit (object larger than allowed, store full).
    #[error("no space: {0}")]
    NoSpace(String),
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

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
