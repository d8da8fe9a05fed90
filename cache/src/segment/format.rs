//! The on-disk format of segment files, byte by byte. All integers are little endian; all
//! checksums are CRC-32C (Castagnoli).
//!
//! ```text
//! segment file
//! +--------------------------------------------------------------+
//! | file header (64 B)                                           |
//! |   0  8  magic  b"EMSEGv1\0"                                  |
//! |   8  4  format version (2; version 1 files are still read)   |
//! |  12  4  flags (bit 0: SOLO, the segment holds one big object) |
//! |  16  8  segment id                                           |
//! |  24  8  nonce: random, repeated in every record header       |
//! |  32  8  capacity in bytes (the mapping length)               |
//! |  40  8  created, unix ms                                     |
//! |  48 12  zero                                                 |
//! |  60  4  crc32c(bytes 0..60)                                  |
//! +--------------------------------------------------------------+
//! | record | record | ... (each starts 8-byte aligned)           |
//! +--------------------------------------------------------------+
//!
//! record
//! +--------------------------------------------------------------+
//! | record header (48 B)                                         |
//! |   0  4  magic "EMR1"                                         |
//! |   4  2  bucket length          6  2  key length              |
//! |   8  4  meta length           12  4  flags (bit 0: LEN_PENDING,|
//! |                                         bit 1: TOMBSTONE)     |
//! |  16  8  body length                                          |
//! |  24  8  segment nonce                                        |
//! |  32  8  created, unix ms                                     |
//! |  40  4  crc32c(bucket ++ key ++ meta)                        |
//! |  44  4  crc32c(header bytes 0..44)                           |
//! | bucket | key | meta (RecordMeta::encode) | zero pad to 8     |
//! | body (body length bytes)               | zero pad to 8      |
//! | trailer (40 B; 32 B in version 1 files, without the sequence) |
//! |   0  4  commit magic "EMOK"                                  |
//! |   4  4  crc32c(body)                                         |
//! |   8 16  md5(body)                                            |
//! |  24  8  commit sequence number                               |
//! |  32  4  the header's crc, binding this trailer to its header |
//! |  36  4  crc32c(trailer bytes 0..36)                          |
//! +--------------------------------------------------------------+
//! ```
//!
//! Versions of a key: every commit (an object, or a TOMBSTONE record: a deletion, with an empty
//! body and no meta) takes the next number of one store-wide sequence, written in its trailer.
//! The version of a key is its committed record with the highest sequence; a tombstone there
//! means the key is absent. Recovery therefore does not depend on the order of files or lanes.
//! Records of version 1 files carry no sequence and count as sequence 0 (older than any version
//! 2 record; among themselves the first found wins, as version 1 did).
//!
//! A record exists only when its header and trailer both check out; until the trailer is written
//! it is invisible. The nonce keeps bytes of an object body (which a hostile origin controls) from
//! being mistaken for a record when recovery resynchronises after damage: an origin cannot know
//! it. A record whose body length is not known when it starts (a chunked origin body too big to
//! buffer) is written with LEN_PENDING set into a SOLO segment; commit writes the trailer, then
//! rewrites the header with the real length and the flag cleared.

use crate::crc::crc32c;
use crate::meta::RecordMeta;

pub const FILE_MAGIC: [u8; 8] = *b"EMSEGv1\0";
/// The version new segment files are written in.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version still read.
pub const OLDEST_READ_VERSION: u32 = 1;
pub const FILE_HEADER_LEN: u64 = 64;
pub const FLAG_SOLO: u32 = 1;

pub const RECORD_MAGIC: [u8; 4] = *b"EMR1";
pub const RECORD_HEADER_LEN: u64 = 48;
pub const FLAG_LEN_PENDING: u32 = 1;
/// The record deletes its key (no body, no meta).
pub const FLAG_TOMBSTONE: u32 = 2;

pub const COMMIT_MAGIC: [u8; 4] = *b"EMOK";

/// Length of a record trailer in a file of `version`.
pub fn trailer_len(version: u32) -> u64 {
    if version >= 2 {
        40
    } else {
        32
    }
}

/// Records start on 8-byte boundaries so recovery can resynchronise in 8-byte steps.
pub const ALIGN: u64 = 8;

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

/// Bytes from a record's start to its trailer, for a head (header, names, metadata) of
/// `body_start` bytes and a body of `body_len`: the body is padded to [`ALIGN`].
pub fn trailer_offset(body_start: u64, body_len: u64) -> u64 {
    body_start + align_up(body_len)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub version: u32,
    pub flags: u32,
    pub segment_id: u64,
    pub nonce: u64,
    pub capacity: u64,
    pub created_ms: u64,
}

impl FileHeader {
    pub fn encode(&self) -> [u8; FILE_HEADER_LEN as usize] {
        let mut b = [0u8; FILE_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&FILE_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.nonce.to_le_bytes());
        b[32..40].copy_from_slice(&self.capacity.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<FileHeader> {
        if b.len() < FILE_HEADER_LEN as usize || b[0..8] != FILE_MAGIC {
            return None;
        }
        let version = le32(&b[8..12]);
        if crc32c(&b[0..60]) != le32(&b[60..64]) || !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
            return None;
        }
        Some(FileHeader {
            version,
            flags: le32(&b[12..16]),
            segment_id: le64(&b[16..24]),
            nonce: le64(&b[24..32]),
            capacity: le64(&b[32..40]),
            created_ms: le64(&b[40..48]),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The format version of the file holding the record (not stored in the header: the file
    /// header says it); it decides the trailer's layout.
    pub version: u32,
    pub bucket_len: u16,
    pub key_len: u16,
    pub meta_len: u32,
    pub flags: u32,
    pub body_len: u64,
    pub nonce: u64,
    pub created_ms: u64,
    pub names_crc: u32,
}

impl RecordHeader {
    /// Bytes from the record start to the body.
    pub fn body_start(&self) -> u64 {
        align_up(RECORD_HEADER_LEN + self.bucket_len as u64 + self.key_len as u64 + self.meta_len as u64)
    }

    /// Bytes from the record start to the trailer.
    pub fn trailer_start(&self) -> u64 {
        trailer_offset(self.body_start(), self.body_len)
    }

    /// Whole record length, including padding and trailer.
    pub fn total_len(&self) -> u64 {
        self.trailer_start() + trailer_len(self.version)
    }

    pub fn is_len_pending(&self) -> bool {
        self.flags & FLAG_LEN_PENDING != 0
    }

    pub fn is_tombstone(&self) -> bool {
        self.flags & FLAG_TOMBSTONE != 0
    }

    pub fn encode(&self) -> ([u8; RECORD_HEADER_LEN as usize], u32) {
        let mut b = [0u8; RECORD_HEADER_LEN as usize];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4..6].copy_from_slice(&self.bucket_len.to_le_bytes());
        b[6..8].copy_from_slice(&self.key_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.meta_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.nonce.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        b[40..44].copy_from_slice(&self.names_crc.to_le_bytes());
        let crc = crc32c(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        (b, crc)
    }

    /// Decodes and checks a header of a file of `version`; returns it with its crc. `None` when
    /// the bytes are not a header of a segment with this nonce.
    pub fn decode(b: &[u8], nonce: u64, version: u32) -> Option<(RecordHeader, u32)> {
        if b.len() < RECORD_HEADER_LEN as usize || b[0..4] != RECORD_MAGIC {
            return None;
        }
        let crc = le32(&b[44..48]);
        if crc32c(&b[0..44]) != crc {
            return None;
        }
        let h = RecordHeader {
            version,
            bucket_len: u16::from_le_bytes([b[4], b[5]]),
            key_len: u16::from_le_bytes([b[6], b[7]]),
            meta_len: le32(&b[8..12]),
            flags: le32(&b[12..16]),
            body_len: le64(&b[16..24]),
            nonce: le64(&b[24..32]),
            created_ms: le64(&b[32..40]),
            names_crc: le32(&b[40..44]),
        };
        (h.nonce == nonce).then_some((h, crc))
    }
}

/// Serialises the header plus bucket, key and meta, padded to the body start, for a record in a
/// file of the current [`FORMAT_VERSION`].
pub fn encode_record_head(
    bucket: &str,
    key: &str,
    meta: &RecordMeta,
    body_len: u64,
    flags: u32,
    nonce: u64,
    created_ms: u64,
) -> (Vec<u8>, RecordHeader, u32) {
    let mut names = Vec::with_capacity(bucket.len() + key.len() + 64);
    names.extend_from_slice(bucket.as_bytes());
    names.extend_from_slice(key.as_bytes());
    let meta_start = names.len();
    meta.encode(&mut names);
    let header = RecordHeader {
        version: FORMAT_VERSION,
        bucket_len: bucket.len() as u16,
        key_len: key.len() as u16,
        meta_len: (names.len() - meta_start) as u32,
        flags,
        body_len,
        nonce,
        created_ms,
        names_crc: crc32c(&names),
    };
    let (hb, crc) = header.encode();
    let mut out = Vec::with_capacity(header.body_start() as usize);
    out.extend_from_slice(&hb);
    out.extend_from_slice(&names);
    out.resize(header.body_start() as usize, 0);
    (out, header, crc)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    pub body_crc: u32,
    pub md5: [u8; 16],
    /// The commit's place in the store-wide sequence (0 in version 1 files).
    pub seq: u64,
    pub header_crc: u32,
}

impl Trailer {
    /// Encodes a trailer of the current [`FORMAT_VERSION`].
    pub fn encode(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&COMMIT_MAGIC);
        b[4..8].copy_from_slice(&self.body_crc.to_le_bytes());
        b[8..24].copy_from_slice(&self.md5);
        b[24..32].copy_from_slice(&self.seq.to_le_bytes());
        b[32..36].copy_from_slice(&self.header_crc.to_le_bytes());
        let crc = crc32c(&b[0..36]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the trailer of a record in a file of `version`, bound to the header whose crc is
    /// `header_crc`.
    pub fn decode(b: &[u8], header_crc: u32, version: u32) -> Option<Trailer> {
        let len = trailer_len(version) as usize;
        if b.len() < len || b[0..4] != COMMIT_MAGIC {
            return None;
        }
        let (seq, tail) = if version >= 2 { (le64(&b[24..32]), 32) } else { (0, 24) };
        if crc32c(&b[0..tail + 4]) != le32(&b[tail + 4..tail + 8]) || le32(&b[tail..tail + 4]) != header_crc {
            return None;
        }
        let mut md5 = [0u8; 16];
        md5.copy_from_slice(&b[8..24]);
        Some(Trailer { body_crc: le32(&b[4..8]), md5, seq, header_crc })
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let fh = FileHeader {
            version: FORMAT_VERSION,
            flags: FLAG_SOLO,
            segment_id: 7,
            nonce: 99,
            capacity: 1 << 20,
            created_ms: 5,
        };
        let b = fh.encode();
        assert_eq!(FileHeader::decode(&b), Some(fh));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x40;
            assert_eq!(FileHeader::decode(&d), None, "flip at {i} must be caught");
        }

        let meta = RecordMeta::new(SystemTime::now());
        let (bytes, h, crc) = encode_record_head("bkt", "a/b.jpg", &meta, 12345, 0, 99, 1);
        assert_eq!(bytes.len() as u64, h.body_start());
        assert_eq!(h.body_start() % ALIGN, 0);
        assert_eq!(RecordHeader::decode(&bytes, 99, FORMAT_VERSION), Some((h, crc)));
        assert_eq!(RecordHeader::decode(&bytes, 98, FORMAT_VERSION), None, "another segment's nonce");
        for i in 0..RECORD_HEADER_LEN as usize {
            let mut d = bytes.clone();
            d[i] ^= 1;
            assert_eq!(RecordHeader::decode(&d, 99, FORMAT_VERSION), None, "flip at {i} must be caught");
        }

        let t = Trailer { body_crc: 1, md5: [3; 16], seq: 1 << 40, header_crc: crc };
        let tb = t.encode();
        assert_eq!(tb.len() as u64, trailer_len(FORMAT_VERSION));
        assert_eq!(Trailer::decode(&tb, crc, FORMAT_VERSION), Some(t));
        assert_eq!(Trailer::decode(&tb, crc ^ 1, FORMAT_VERSION), None, "trailer of another header");
        for i in 0..tb.len() {
            let mut d = tb;
            d[i] ^= 1;
            assert_eq!(Trailer::decode(&d, crc, FORMAT_VERSION), None, "flip at {i} must be caught");
        }
    }

    /// A version 1 trailer (32 bytes, no sequence) as version 1 wrote it still decodes.
    #[test]
    fn version_1_trailers_still_decode() {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&COMMIT_MAGIC);
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        b[8..24].copy_from_slice(&[9; 16]);
        b[24..28].copy_from_slice(&55u32.to_le_bytes());
        let crc = crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Trailer::decode(&b, 55, 1), Some(Trailer { body_crc: 7, md5: [9; 16], seq: 0, header_crc: 55 }));
        assert_eq!(Trailer::decode(&b, 55, 2), None, "a version 1 trailer is not a version 2 one");
    }
}
