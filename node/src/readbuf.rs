//! The buffer a body reader reads into next: the origin's response body (`origin`) and
//! a client's request body (`body`).
//!
//! Both readers hand out each piece they read as a `Bytes` split off their buffer, so the piece
//! and whatever the buffer has left share one allocation. The next read goes into what is left
//! while that is worth a read ([`for_read`]); only then is a fresh buffer taken. A body that
//! arrives in small reads (a slow client's 1,460-byte segments, a trickling origin) thus fills
//! one allocation after another, and the pieces held downstream (by the store's writer until a
//! write boundary, by its readers' window) pin about as many bytes as they hold. A fresh buffer
//! per read would pin a whole [`READ_BYTES`] allocation per piece.
//!
//! Reads are [`READ_BYTES`] at most, 256 KiB rather than 64: fewer reads, writes and sends per
//! body. Measured on the 2-core bench machine (`bench/RESULTS.md`, "Issue 14, seventh pass"):
//! a sustained 1 MiB miss took 1,410 against 1,610 µs of the node's CPU, a single cold one
//! 1,600 against 1,930 (alternating rounds, `bench/ab_cold.sh`); 64 KiB misses are unchanged.

use bytes::BytesMut;

/// The largest read of a body, and the size of a fresh buffer for a body at least that long.
pub const READ_BYTES: usize = 256 * 1024;

/// The smallest spare capacity worth reading into: less, and a fresh buffer is taken.
const MIN_READ_BYTES: usize = 4096;

/// The buffer to read up to `want` more bytes into (a body's bytes still to come, `u64::MAX`
/// when its length is unknown), `want` taken between [`MIN_READ_BYTES`] and [`READ_BYTES`]:
/// `buf` itself while its spare capacity takes `want` bytes or a quarter of a full read;
/// otherwise a fresh buffer of `want` bytes when `buf` holds nothing, or `buf` grown when it
/// holds the start of something not yet handed out (a chunk's size line).
pub fn for_read(mut buf: BytesMut, want: u64) -> BytesMut {
    let want = want.clamp(MIN_READ_BYTES as u64, READ_BYTES as u64) as usize;
    let spare = buf.capacity() - buf.len();
    if spare >= want.min(READ_BYTES / 4) {
        return buf;
    }
    if buf.is_empty() {
        return BytesMut::with_capacity(want);
    }
    buf.reserve(want);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces read into one buffer share its allocation until it runs short; then a fresh one.
    #[test]
    fn small_reads_fill_one_allocation_before_the_next() {
        let mut buf = for_read(BytesMut::new(), u64::MAX);
        assert_eq!(buf.capacity(), READ_BYTES);
        let first = buf.as_ptr() as usize;
        let mut pieces = Vec::new();
        let mut fresh = 0;
        for _ in 0..400 {
            let before = buf.as_ptr() as usize;
            buf = for_read(buf, u64::MAX);
            if buf.as_ptr() as usize != before {
                fresh += 1;
            }
            buf.extend_from_slice(&[7u8; 1460]);
            pieces.push(buf.split().freeze());
        }
        // A fresh buffer once less than a quarter of READ_BYTES is left: 135 reads of 1,460
        // bytes per allocation, so 400 reads take two more after the first.
        let per_allocation = (READ_BYTES - READ_BYTES / 4) / 1460 + 1;
        assert_eq!(per_allocation, 135);
        assert_eq!(fresh, 399 / per_allocation, "{fresh} fresh buffers after the one at {first:#x}");
        assert!(pieces.iter().all(|p| p.len() == 1460 && p.iter().all(|&b| b == 7)));
    }

    #[test]
    fn a_short_body_gets_a_buffer_its_size() {
        assert_eq!(for_read(BytesMut::new(), 1000).capacity(), MIN_READ_BYTES);
        assert_eq!(for_read(BytesMut::new(), 100_000).capacity(), 100_000);
        assert_eq!(for_read(BytesMut::new(), u64::MAX).capacity(), READ_BYTES);
    }

    /// Bytes not handed out yet stay in front of the next read, even when the buffer grows.
    #[test]
    fn bytes_not_handed_out_stay() {
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(b"4\r\nab");
        let buf = for_read(buf, u64::MAX);
        assert_eq!(&buf[..], b"4\r\nab");
        assert!(buf.capacity() - buf.len() >= READ_BYTES);
    }
}
