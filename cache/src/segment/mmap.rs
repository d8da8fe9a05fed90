//! The only `unsafe` in the store: mapping segment files read-only.
//!
//! A mapping turns into refcounted [`Bytes`] (`Bytes::from_owner`), so a hit hands the socket a
//! slice of the page cache without copying, and the mapping lives as long as any slice of it.

use std::fs::File;
use std::io;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

/// Maps `len` bytes of `file`, which may be more than the file holds today.
///
/// Regular segments are mapped once at their full capacity while they are still being appended
/// to, so readers never need a remap as records land. Touching a page wholly past the end of
/// the file would raise SIGBUS; readers only ever slice committed records, which lie below the
/// file's end by construction (the trailer is written after the body).
pub(crate) fn map_file(file: &File, len: u64) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let len = usize::try_from(len).map_err(|_| io::Error::other("segment too large to map"))?;
    // SAFETY: segment files are private to this process's store directory, opened append-only by
    // the store, and never truncated or rewritten in place while mapped (recovery seals old
    // segments instead of truncating them). Mapped bytes are treated as untrusted input: every
    // header, trailer and body is checked against its CRC before it is believed.
    let map: Mmap = unsafe { MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn mapping_past_eof_sees_later_appends() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"head").unwrap();
        let map = map_file(&f, 1 << 20).unwrap();
        assert_eq!(&map[..4], b"head");
        f.write_all_at(b"tail", 4096).unwrap();
        assert_eq!(&map.slice(4096..4100)[..], b"tail");
    }
}
