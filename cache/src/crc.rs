//! CRC-32C (Castagnoli): the store's checksum of file and record headers, names and bodies, and
//! the S3 API's `x-amz-checksum-crc32c`. One implementation for the workspace.
//!
//! The crate is `crc-fast` (awesomized, the CRC engine of the AWS SDK for Rust's checksums): it
//! picks at run time a VPCLMULQDQ/AVX-512 kernel where the CPU has one, else PCLMULQDQ, else
//! a table. Here it took 38 µs per MiB against 75 for the `crc32c` crate's SSE 4.2 `crc32`
//! instructions, and a body's CRC was the largest user-space cost of a 1 MiB miss, ahead of
//! everything else of the worker's own code together (bench/RESULTS.md, "Issue 14, sixth pass").

use crc_fast::{CrcAlgorithm, Digest};

/// The CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// The CRC-32C of the bytes that gave `crc`, followed by `data`.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The register's state after the earlier bytes is the checksum before its final xor.
    let mut digest = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    digest.update(data);
    digest.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crc32c_check_value_and_appends_at_any_split() {
        // The catalogue's check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI), B.4: 32 bytes of zeros, and of 0xff.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let data: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let whole = crc32c(&data);
        for split in [0, 1, 7, 63, 64, 65, 255, 256, 1000, 4096, 4999, 5000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), whole, "split at {split}");
        }
        // In many pieces, from nothing.
        let pieces = data.chunks(333).fold(0, crc32c_append);
        assert_eq!(pieces, whole);
    }
}
