//! What the store keeps about an object besides its body.
//!
//! The seed feature saves exactly five origin headers with a mirrored object (Content-Type,
//! Content-Encoding, Content-Disposition, Cache-Control, Expires) and stores it as storage class
//! STANDARD; [`SavedHeader`] is that closed set. [`RecordMeta`] is what a record holds before its
//! body (known when the origin's headers arrive); [`ObjectMeta`] adds what is only known once the
//! body is complete (size, MD5) and is what readers see.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{Error, Result};

/// Origin response headers saved with a mirrored object and returned with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SavedHeader {
    ContentType = 1,
    ContentEncoding = 2,
    ContentDisposition = 3,
    CacheControl = 4,
    Expires = 5,
    /// Kept for uploads (S3 keeps it); mirror fills save the seed's five only.
    ContentLanguage = 6,
}

impl SavedHeader {
    /// The five headers the reference feature saves with a mirrored object.
    pub const ALL: [SavedHeader; 5] = [
        SavedHeader::ContentType,
        SavedHeader::ContentEncoding,
        SavedHeader::ContentDisposition,
        SavedHeader::CacheControl,
        SavedHeader::Expires,
    ];

    /// What an upload keeps: the five, and Content-Language.
    pub const UPLOADED: [SavedHeader; 6] = [
        SavedHeader::ContentType,
        SavedHeader::ContentEncoding,
        SavedHeader::ContentDisposition,
        SavedHeader::CacheControl,
        SavedHeader::Expires,
        SavedHeader::ContentLanguage,
    ];

    /// The canonical header name, as written in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            SavedHeader::ContentType => "Content-Type",
            SavedHeader::ContentEncoding => "Content-Encoding",
            SavedHeader::ContentDisposition => "Content-Disposition",
            SavedHeader::CacheControl => "Cache-Control",
            SavedHeader::Expires => "Expires",
            SavedHeader::ContentLanguage => "Content-Language",
        }
    }

    /// Matches a header name case-insensitively.
    pub fn from_name(name: &[u8]) -> Option<SavedHeader> {
        SavedHeader::ALL.into_iter().find(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Like [`SavedHeader::from_name`], for what an upload keeps (Content-Language too): what
    /// an object read back from an S3 store of record carries.
    pub fn uploaded_from_name(name: &[u8]) -> Option<SavedHeader> {
        SavedHeader::UPLOADED.into_iter().find(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    fn from_u8(v: u8) -> Option<SavedHeader> {
        SavedHeader::UPLOADED.into_iter().find(|h| *h as u8 == v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StorageClass {
    Standard = 1,
}

impl StorageClass {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
        }
    }
}

/// Extension tags of [`RecordMeta::encode`].
const EXT_USER_META: u8 = 1;
const EXT_CHECKSUM: u8 = 2;
const EXT_PARTS: u8 = 3;
const EXT_PART_SIZES: u8 = 4;
const EXT_PART_CHECKSUMS: u8 = 5;
const EXT_ORIGIN_ETAG: u8 = 6;
/// (size u64, count u32) pairs per `EXT_PART_SIZES` entry: what fits its u16 length.
const PART_RUNS_PER_ENTRY: usize = 5000;

/// Metadata known before the body: written in the record ahead of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// When the object was written to this store (what `Last-Modified` reports), whole seconds.
    pub last_modified: SystemTime,
    pub storage_class: StorageClass,
    pub headers: Vec<(SavedHeader, Bytes)>,
    /// User metadata of an upload (`x-amz-meta-{name}`: name lower-cased, without the prefix).
    pub user: Vec<(Box<str>, Bytes)>,
    /// The flexible checksum an upload was verified against: the header name
    /// (`x-amz-checksum-crc32`) and its base64 value, returned with `x-amz-checksum-mode`.
    pub checksum: Option<(Box<str>, Bytes)>,
    /// Parts of a multipart upload (0: a single-part object). The object's MD5 is then the MD5
    /// of the parts' MD5s, and its ETag ends in `-{parts}` as S3's.
    pub parts: u32,
    /// The sizes of a multipart upload's parts, in order, as runs of equal sizes
    /// `(size, count)` (clients upload equal parts and a shorter last one): what
    /// `GET ?partNumber=N` serves. Empty for single-part objects and for multipart objects
    /// written before part sizes were kept.
    pub part_sizes: Vec<(u64, u32)>,
    /// The checksums a multipart upload's parts were uploaded with, in order (base64, of the
    /// algorithm of `checksum`): what `GET ?partNumber=N` and GetObjectAttributes return.
    pub part_checksums: Vec<Box<str>>,
    /// A mirrored object's ETag at its origin, as the origin sent it: provenance (the object's
    /// own ETag is the MD5 of its bytes).
    pub origin_etag: Option<Box<str>>,
}

impl RecordMeta {
    /// The bytes of part `n` (1-based) of a multipart object, if it has that part.
    pub fn part_range(&self, n: u32) -> Option<std::ops::Range<u64>> {
        if n == 0 {
            return None;
        }
        let (mut start, mut first) = (0u64, 1u32);
        for &(size, count) in &self.part_sizes {
            if n < first + count {
                let from = start + size * u64::from(n - first);
                return Some(from..from + size);
            }
            start += size * u64::from(count);
            first += count;
        }
        None
    }

    /// Records the part sizes, in order (see `part_sizes`).
    pub fn set_part_sizes(&mut self, sizes: impl IntoIterator<Item = u64>) {
        self.part_sizes.clear();
        for size in sizes {
            match self.part_sizes.last_mut() {
                Some((last, count)) if *last == size => *count += 1,
                _ => self.part_sizes.push((size, 1)),
            }
        }
    }
    pub fn new(last_modified: SystemTime) -> Self {
        // HTTP dates have one-second resolution; truncate now so every response agrees.
        let secs = last_modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        RecordMeta {
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            storage_class: StorageClass::Standard,
            headers: Vec::new(),
            user: Vec::new(),
            checksum: None,
            parts: 0,
            part_sizes: Vec::new(),
            part_checksums: Vec::new(),
            origin_etag: None,
        }
    }

    pub fn header(&self, h: SavedHeader) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| *n == h).map(|(_, v)| v)
    }

    /// Layout: `last_modified_secs u64 | storage_class u8 | count u8 | (id u8, len u16, bytes)*`,
    /// then extensions `(tag u8, len u16, bytes)*` to the end (1: a user metadata entry
    /// `name\0value`; 2: the checksum `header-name\0value`), little endian. Records written
    /// before extensions existed simply end after the headers; a decoder skips tags it does not
    /// know.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let secs = self.last_modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        out.extend_from_slice(&secs.to_le_bytes());
        out.push(self.storage_class as u8);
        out.push(self.headers.len() as u8);
        for (name, value) in &self.headers {
            let len = value.len().min(u16::MAX as usize);
            out.push(*name as u8);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            out.extend_from_slice(&value[..len]);
        }
        let mut extension = |tag: u8, name: &str, value: &[u8]| {
            let len = (name.len() + 1 + value.len()).min(u16::MAX as usize);
            out.push(tag);
            out.extend_from_slice(&(len as u16).to_le_bytes());
            let mut entry = Vec::with_capacity(len);
            entry.extend_from_slice(name.as_bytes());
            entry.push(0);
            entry.extend_from_slice(value);
            out.extend_from_slice(&entry[..len]);
        };
        for (name, value) in &self.user {
            extension(EXT_USER_META, name, value);
        }
        if let Some((name, value)) = &self.checksum {
            extension(EXT_CHECKSUM, name, value);
        }
        if self.parts > 0 {
            extension(EXT_PARTS, "parts", self.parts.to_string().as_bytes());
        }
        if let Some(etag) = &self.origin_etag {
            extension(EXT_ORIGIN_ETAG, "origin-etag", etag.as_bytes());
        }
        // Comma-separated base64 values, cut into entries that fit a u16 length.
        let mut entry = String::new();
        for (i, value) in self.part_checksums.iter().enumerate() {
            if !entry.is_empty() {
                entry.push(',');
            }
            entry.push_str(value);
            let last = i + 1 == self.part_checksums.len();
            if last || entry.len() > 60_000 {
                extension(EXT_PART_CHECKSUMS, "part-checksums", std::mem::take(&mut entry).as_bytes());
            }
        }
        for runs in self.part_sizes.chunks(PART_RUNS_PER_ENTRY) {
            let bytes: Vec<u8> = runs
                .iter()
                .flat_map(|(size, count)| size.to_le_bytes().into_iter().chain(count.to_le_bytes()))
                .collect();
            extension(EXT_PART_SIZES, "part-sizes", &bytes);
        }
    }

    pub fn decode(mut b: &[u8]) -> Result<RecordMeta> {
        let bad = |what| Error::Corrupt { segment: 0, offset: 0, what };
        let secs = take(&mut b, 8).ok_or(bad("meta: short"))?;
        let secs = u64::from_le_bytes(secs.try_into().unwrap_or_default());
        let class = take(&mut b, 1).ok_or(bad("meta: short"))?[0];
        if class != StorageClass::Standard as u8 {
            return Err(bad("meta: unknown storage class"));
        }
        let count = take(&mut b, 1).ok_or(bad("meta: short"))?[0];
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = take(&mut b, 1).ok_or(bad("meta: short"))?[0];
            let name = SavedHeader::from_u8(id).ok_or(bad("meta: unknown header id"))?;
            let len = take(&mut b, 2).ok_or(bad("meta: short"))?;
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            let value = take(&mut b, len).ok_or(bad("meta: short"))?;
            headers.push((name, Bytes::copy_from_slice(value)));
        }
        let (mut user, mut checksum, mut parts, mut part_sizes) = (Vec::new(), None, 0, Vec::new());
        let mut part_checksums = Vec::new();
        let mut origin_etag = None;
        while !b.is_empty() {
            let tag = take(&mut b, 1).ok_or(bad("meta: short"))?[0];
            let len = take(&mut b, 2).ok_or(bad("meta: short"))?;
            let entry = take(&mut b, u16::from_le_bytes([len[0], len[1]]) as usize).ok_or(bad("meta: short"))?;
            let split = entry.iter().position(|&c| c == 0).ok_or(bad("meta: extension without a name"))?;
            let name = std::str::from_utf8(&entry[..split]).map_err(|_| bad("meta: extension name"))?;
            let value = Bytes::copy_from_slice(&entry[split + 1..]);
            match tag {
                EXT_USER_META => user.push((name.into(), value)),
                EXT_CHECKSUM => checksum = Some((name.into(), value)),
                EXT_PARTS => {
                    parts = std::str::from_utf8(&value).ok().and_then(|v| v.parse().ok()).ok_or(bad("meta: parts"))?
                }
                EXT_ORIGIN_ETAG => origin_etag = Some(String::from_utf8_lossy(&value).into()),
                EXT_PART_CHECKSUMS => {
                    let values = std::str::from_utf8(&value).map_err(|_| bad("meta: part checksums"))?;
                    part_checksums.extend(values.split(',').map(Box::from));
                }
                EXT_PART_SIZES => {
                    for run in value.chunks_exact(12) {
                        let size = u64::from_le_bytes(run[..8].try_into().unwrap_or_default());
                        let count = u32::from_le_bytes(run[8..].try_into().unwrap_or_default());
                        part_sizes.push((size, count));
                    }
                }
                _ => {}
            }
        }
        Ok(RecordMeta {
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            storage_class: StorageClass::Standard,
            headers,
            user,
            checksum,
            parts,
            part_sizes,
            part_checksums,
            origin_etag,
        })
    }
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// Everything a reader needs to answer for a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub bucket: Box<str>,
    pub key: Box<str>,
    pub size: u64,
    pub md5: [u8; 16],
    pub record: RecordMeta,
    /// The commit's sequence number: this version of the key. A cached copy whose `seq` is not
    /// the store's current one for the key is stale (the key was deleted or overwritten).
    pub seq: u64,
}

impl ObjectMeta {
    /// The S3 ETag: the quoted hex MD5 of the body, or for a multipart upload the MD5 of the
    /// parts' MD5s with `-{parts}`.
    pub fn etag(&self) -> String {
        self.etag_bytes().as_str().to_string()
    }

    /// The ETag rendered on the stack (the request path writes it without allocating).
    pub fn etag_bytes(&self) -> Etag {
        Etag::new(&self.md5, self.record.parts)
    }
}

impl Etag {
    /// The quoted hex `md5`, with `-{parts}` for a multipart upload's.
    pub fn new(md5: &[u8; 16], parts: u32) -> Etag {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = Etag { bytes: [b'"'; 48], len: 34 };
        for (i, b) in md5.iter().enumerate() {
            out.bytes[1 + 2 * i] = HEX[(b >> 4) as usize];
            out.bytes[2 + 2 * i] = HEX[(b & 0xf) as usize];
        }
        if parts > 0 {
            let suffix = format!("-{parts}\"");
            out.bytes[33..33 + suffix.len()].copy_from_slice(suffix.as_bytes());
            out.len = 33 + suffix.len();
        }
        out
    }
}

/// The 16 bytes of an MD5 written as 32 hex digits (either case); `None` for anything else.
pub fn md5_from_hex(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut md5 = [0u8; 16];
    for (i, byte) in md5.iter_mut().enumerate() {
        *byte = (digit(hex[2 * i])? << 4) | digit(hex[2 * i + 1])?;
    }
    Some(md5)
}

/// An ETag on the stack: `"` + 32 hex digits (+ `-N`) + `"`.
#[derive(Clone, Copy, Debug)]
pub struct Etag {
    bytes: [u8; 48],
    len: usize,
}

impl Etag {
    /// The inverse of [`Etag::new`]: the MD5 and part count of a quoted ETag, `"{32 hex}"`
    /// (parts 0) or `"{32 hex}-{parts}"` (parts over 0); `None` for anything else (unquoted,
    /// weak, other lengths).
    pub fn parse(tag: &str) -> Option<([u8; 16], u32)> {
        let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
        let (hex, parts) = match inner.split_once('-') {
            Some((hex, n)) => (hex, n.parse::<u32>().ok().filter(|n| *n > 0)?),
            None => (inner, 0),
        };
        Some((md5_from_hex(hex.as_bytes())?, parts))
    }

    pub fn as_str(&self) -> &str {
        // Quotes, hex digits, '-' and decimal digits only.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_round_trip_and_locate_parts() {
        let mut m = RecordMeta::new(SystemTime::now());
        m.parts = 4;
        m.set_part_sizes([10, 10, 10, 3]);
        assert_eq!(m.part_sizes, [(10, 3), (3, 1)]);
        assert_eq!(m.part_range(1), Some(0..10));
        assert_eq!(m.part_range(3), Some(20..30));
        assert_eq!(m.part_range(4), Some(30..33));
        assert_eq!(m.part_range(5), None);
        assert_eq!(m.part_range(0), None);
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(RecordMeta::decode(&buf).unwrap(), m);
        // 10,000 parts of different sizes span several extension entries.
        m.parts = 10_000;
        m.set_part_sizes((0..10_000u64).map(|i| 5 << 20 | i));
        let mut buf = Vec::new();
        m.encode(&mut buf);
        m.part_checksums = (0..10_000).map(|i| format!("{i:08}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").into()).collect();
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let back = RecordMeta::decode(&buf).unwrap();
        assert_eq!(back.part_sizes.len(), 10_000);
        assert_eq!(back.part_checksums, m.part_checksums, "440 KB of checksums span several entries");
        assert_eq!(back.part_range(10_000), m.part_range(10_000));
    }

    #[test]
    fn record_meta_round_trips() {
        let mut m = RecordMeta::new(SystemTime::now());
        m.headers.push((SavedHeader::ContentType, Bytes::from_static(b"image/jpeg")));
        m.headers.push((SavedHeader::Expires, Bytes::from_static(b"Thu, 01 Dec 1994 16:00:00 GMT")));
        m.headers.push((SavedHeader::ContentLanguage, Bytes::from_static(b"en")));
        m.user.push(("purpose".into(), Bytes::from_static(b"a test")));
        m.checksum = Some(("x-amz-checksum-crc32".into(), Bytes::from_static(b"i9aeUg==")));
        m.origin_etag = Some("\"d41d8cd98f00b204e9800998ecf8427e-2\"".into());
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(RecordMeta::decode(&buf).unwrap(), m);
        // A prefix never decodes to something else: it fails, or (cut exactly between
        // extensions, as a record written before them ends) it is the same headers with fewer
        // extensions. The record's names CRC is what catches a cut record.
        for cut in 0..buf.len() {
            if let Ok(d) = RecordMeta::decode(&buf[..cut]) {
                assert_eq!(d.headers, m.headers, "prefix {cut}");
                assert!(d.user.len() <= m.user.len(), "prefix {cut}");
                assert!(d.checksum.is_none() || d.checksum == m.checksum, "prefix {cut}");
                assert!(d.origin_etag.is_none(), "prefix {cut}: the last extension cannot be whole");
            }
        }
    }

    #[test]
    fn etags_parse_with_and_without_parts() {
        let (md5, parts) = Etag::parse("\"0123456789abcdef0123456789abcdef\"").unwrap();
        assert_eq!((md5[0], md5[15], parts), (0x01, 0xef, 0));
        assert_eq!(Etag::parse("\"0123456789abcdef0123456789abcdef-12\"").unwrap().1, 12);
        for bad in [
            "0123456789abcdef0123456789abcdef",
            "\"0123\"",
            "\"0123456789abcdef0123456789abcdef-0\"",
            "\"zz23456789abcdef0123456789abcdef\"",
        ] {
            assert_eq!(Etag::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn etag_is_quoted_hex_md5() {
        use md5::{Digest, Md5};
        let meta = ObjectMeta {
            bucket: "b".into(),
            key: "k".into(),
            size: 5,
            md5: Md5::digest(b"hello").into(),
            record: RecordMeta::new(UNIX_EPOCH),
            seq: 1,
        };
        assert_eq!(meta.etag(), "\"5d41402abc4b2a76b9719d911017c592\"");
    }

    #[test]
    fn saved_header_names_match_case_insensitively() {
        assert_eq!(SavedHeader::from_name(b"content-TYPE"), Some(SavedHeader::ContentType));
        assert_eq!(SavedHeader::from_name(b"x-other"), None);
    }
}
