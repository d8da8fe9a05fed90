//! The only `unsafe` in the store: the system calls std does not wrap for us.
//!
//! - `mmap` of segment files ([`map_file`]). A mapping turns into refcounted [`Bytes`]
//!   (`Bytes::from_owner`), so a hit hands the socket a slice of the page cache without copying,
//!   and the mapping lives as long as any slice of it. `madvise` sets how faults on it read the
//!   disk ([`map_file`], [`will_need`]); `mincore` tells whether reading a range would wait on
//!   the disk ([`resident`]).
//! - `statvfs` of the store's filesystem ([`free_bytes`]), for the free-space watermark.
//! - `flock` of the store directory's LOCK file ([`try_lock_exclusive`]), so one store directory
//!   has one owner ([`super::lock`]).
//! - `pwritev` ([`write_all_vectored_at`]), `fallocate` ([`preallocate`]) and `statfs`
//!   ([`preallocation_helps`]) for the segment writes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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
    // SAFETY: segment files are private to this process's store directory (held by an exclusive
    // flock, see `super::lock`), opened append-only by the store, and never truncated or
    // rewritten in place while mapped (recovery seals old segments instead of truncating them; an
    // abandoned solo segment is unlinked, which keeps its pages valid). Mapped bytes are treated as
    // untrusted input: every header, trailer and body is checked against its CRC before it is
    // believed.
    let map: Mmap = unsafe { MmapOptions::new().len(len).map(file)? };
    // No read-around on faults: a fault in a file mapping otherwise reads the whole readahead
    // window around the page (`read_ahead_kb`, 8 MiB on this VM's disk), the neighbouring
    // objects of a segment that nobody asked for. Under a memory limit that evicted what it
    // pushed out: 32 GiB read from disk for 25,000 hits of 64 KiB (bench/RESULTS.md). Reads of
    // a body ask for exactly its range instead ([`will_need`]).
    map.advise(memmap2::Advice::Random)?;
    Ok(Bytes::from_owner(map))
}

/// Reads of `file` (`pread`, an io_uring read: the node's cold reads, `Store::cold_spans`) read
/// what they ask for and no more (`POSIX_FADV_RANDOM`): without it a read of one object pulls
/// in up to `read_ahead_kb` (8 MiB on this VM's disk) of its neighbours. Mappings have their
/// own advice ([`map_file`]). Best effort: an error only leaves the kernel's default.
pub(crate) fn no_read_ahead(file: &File) {
    // SAFETY: fadvise takes a descriptor `file` keeps open for the call, and changes no memory.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
    }
}

/// Bodies from this size on are read ahead as a whole ([`will_need`]); a smaller one is a page
/// or a few, read by its faults.
pub(crate) const WILL_NEED_MIN_BYTES: usize = 16 << 10;

/// Starts reading `body` (a slice of a segment mapping) from disk where it is not in the page
/// cache: one read of the whole range, rather than a fault and a disk read per page as the
/// socket copies it (mappings are `Random`, [`map_file`]). Pages already cached cost a walk of
/// the page cache and nothing else. Best effort: an error is ignored, the faults still read.
pub(crate) fn will_need(body: &[u8]) {
    if body.len() < WILL_NEED_MIN_BYTES {
        return;
    }
    let page = 4096usize;
    let start = body.as_ptr() as usize;
    let aligned = start & !(page - 1);
    let len = body.len() + (start - aligned);
    // SAFETY: the range lies within a live mapping (`body` borrows a slice of it), rounded down
    // to its page; MADV_WILLNEED only schedules reads into the page cache and changes no memory.
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_WILLNEED);
    }
}

/// Whether every page under `range` (a slice of a mapping) is in memory (`mincore`), so that
/// reading it will not wait on the disk. An error counts as resident: the caller then reads
/// through the mapping as it would have anyway.
pub(crate) fn resident(range: &[u8]) -> bool {
    const PAGE: usize = 4096;
    const PAGES_PER_CALL: usize = 256;
    let end = range.as_ptr() as usize + range.len();
    let mut at = range.as_ptr() as usize & !(PAGE - 1);
    let mut pages = [0u8; PAGES_PER_CALL];
    while at < end {
        let len = (end - at).min(PAGES_PER_CALL * PAGE);
        // SAFETY: [at, at + len) lies within a live mapping (`range` borrows a slice of it),
        // rounded down to its page; `pages` has room for one byte per page of it
        // (len / PAGE rounded up is at most PAGES_PER_CALL). mincore reads no memory of ours.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, len, pages.as_mut_ptr()) };
        if rc != 0 {
            return true;
        }
        if pages[..len.div_ceil(PAGE)].iter().any(|p| p & 1 == 0) {
            return false;
        }
        at += len;
    }
    true
}

/// Takes `flock(LOCK_EX | LOCK_NB)` on `file`. `Ok(false)` when another open file description
/// (another process, or another `open` of the same path in this one) holds it. The lock lasts
/// until every descriptor of this open file description is closed.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock reads no memory of ours; it takes a descriptor that `file` keeps open for
        // the whole call, and constant flags.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Writes `pieces` back to back at `offset` of `file` (`pwritev`, repeated until every byte is
/// written): one system call for a stretch of a body that arrived in several pieces, or for a
/// record's last body bytes with its trailer. std's `write_vectored_at` is not stable yet.
pub(crate) fn write_all_vectored_at(file: &File, pieces: &[&[u8]], mut offset: u64) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> =
        pieces.iter().filter(|p| !p.is_empty()).map(|p| io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let Ok(at) = i64::try_from(offset) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let count = rest.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` (std guarantees it on Unix); the
        // `count` slices borrow buffers that outlive the call, which only reads them.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), rest.as_ptr().cast::<libc::iovec>(), count, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        offset += n as u64;
        io::IoSlice::advance_slices(&mut rest, n as usize);
    }
    Ok(())
}

/// Allocates the blocks of `len` bytes of `file` from `offset` without changing its length
/// (`fallocate` with `FALLOC_FL_KEEP_SIZE`): the writes that fill them later skip ext4's
/// delayed-allocation reservation of each block ([`preallocation_helps`]).
pub(crate) fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate takes a descriptor `file` keeps open for the call, and changes no memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, offset, len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether segment files in `dir` are preallocated ahead of their writes. ext4 only, where it was
/// measured: a buffered write into preallocated blocks took 20% less CPU than one that reserves
/// its blocks as it goes (delayed allocation: `ext4_da_get_block_prep` per block), 1 MiB sustained
/// misses 1.09x the GETs per second (bench/RESULTS.md, "Issue 14, fifth pass"). Not on tmpfs,
/// where preallocating is allocating (and zeroing) the memory itself, nor on file systems that
/// were not measured.
pub(crate) fn preallocation_helps(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `st` is a properly
    // sized, writable statfs the call fills in; it is read only after the call succeeded.
    if unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    st.f_type == libc::EXT4_SUPER_MAGIC
}

/// Gives back blocks allocated past the end of `file` ([`preallocate`]), given its metadata `m`:
/// `ftruncate` to its own length frees them on ext4 and changes nothing else. Only for a file no
/// one is extending (a concurrent write past the length in `m` would be cut off). Best effort.
pub(crate) fn release_past_end(file: &File, m: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    // st_blocks counts 512-byte units; anything past the length rounded up to a block is
    // preallocated.
    let block = m.blksize().max(512);
    if m.blocks() * 512 > m.len().div_ceil(block) * block {
        let _ = file.set_len(m.len());
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path` (`statvfs`: `f_bavail`
/// blocks of `f_frsize`).
pub(crate) fn free_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `st` is a properly
    // sized, writable statvfs the call fills in; it is read only after the call succeeded.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    // Both are c_ulong: u64 on the 64-bit Linux this runs on.
    #[allow(clippy::unnecessary_cast, reason = "c_ulong is u32 on 32-bit targets")]
    let (blocks, size) = (st.f_bavail as u64, st.f_frsize as u64);
    Ok(blocks.saturating_mul(size))
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

    #[test]
    fn resident_tells_pages_in_memory_from_pages_on_disk() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 3 << 20]).unwrap();
        let map = map_file(&f, 3 << 20).unwrap();
        assert!(resident(&map[..]), "just written: in the page cache");
        // Evicted from the page cache (clean pages of an unmapped-by-no-one range: DONTNEED on
        // the file itself), the same range is not.
        f.sync_all().unwrap();
        // SAFETY: a valid descriptor and range; fadvise changes no memory of ours.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 3 << 20, libc::POSIX_FADV_DONTNEED) };
        assert!(!resident(&map[(2 << 20) + 100..(2 << 20) + 200]), "dropped from the page cache");
        assert!(resident(&map[..0]), "an empty range waits for nothing");
    }

    #[test]
    fn flock_is_per_open_file_description() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let first = File::create(&path).unwrap();
        let second = File::open(&path).unwrap();
        assert!(try_lock_exclusive(&first).unwrap());
        assert!(!try_lock_exclusive(&second).unwrap(), "a second open in the same process is refused");
        drop(first);
        assert!(try_lock_exclusive(&second).unwrap(), "closing the holder releases the lock");
    }
}
