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
}

impl SavedHeader {
    pub const ALL: [SavedHeader; 5] = [
        SavedHeader::ContentType,
        SavedHeader::ContentEncoding,
        SavedHeader::ContentDisposition,
        SavedHeader::CacheControl,
        SavedHeader::Expires,
    ];

    /// The canonical header name, as written in responses.
    pub fn as_str(self) -> &'static str {
        match self {
            SavedHeader::ContentType => "Content-Type",
            SavedHeader::ContentEncoding => "Content-Encoding",
            SavedHeader::ContentDisposition => "Content-Disposition",
            SavedHeader::CacheControl => "Cache-Control",
            SavedHeader::Expires => "Expires",
        }
    }

    /// Matches a header name case-insensitively.
    pub fn from_name(name: &[u8]) -> Option<SavedHeader> {
        SavedHeader::ALL.into_iter().find(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
    }

    fn from_u8(v: u8) -> Option<SavedHeader> {
        SavedHeader::ALL.into_iter().find(|h| *h as u8 == v)
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

/// Metadata known before the body: written in the record ahead of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    /// When the object was written to this store (what `Last-Modified` reports), whole seconds.
    pub last_modified: SystemTime,
    pub storage_class: StorageClass,
    pub headers: Vec<(SavedHeader, Bytes)>,
}

impl RecordMeta {
    pub fn new(last_modified: SystemTime) -> Self {
        // HTTP dates have one-second resolution; truncate now so every response agrees.
        let secs = last_modified.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        RecordMeta {
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            storage_class: StorageClass::Standard,
            headers: Vec::new(),
        }
    }

    pub fn header(&self, h: SavedHeader) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| *n == h).map(|(_, v)| v)
    }

    /// Layout: `last_modified_secs u64 | storage_class u8 | count u8 | (id u8, len u16, bytes)*`,
    /// little endian.
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
        if !b.is_empty() {
            return Err(bad("meta: trailing bytes"));
        }
        Ok(RecordMeta {
            last_modified: UNIX_EPOCH + Duration::from_secs(secs),
            storage_class: StorageClass::Standard,
            headers,
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
    /// The S3 ETag of a single-part object: the quoted hex MD5 of the body.
    pub fn etag(&self) -> String {
        String::from_utf8_lossy(&self.etag_bytes()).into_owned()
    }

    /// The ETag rendered on the stack (the request path writes it without allocating).
    pub fn etag_bytes(&self) -> [u8; 34] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'"'; 34];
        for (i, b) in self.md5.iter().enumerate() {
            out[1 + 2 * i] = HEX[(b >> 4) as usize];
            out[2 + 2 * i] = HEX[(b & 0xf) as usize];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_meta_round_trips() {
        let mut m = RecordMeta::new(SystemTime::now());
        m.headers.push((SavedHeader::ContentType, Bytes::from_static(b"image/jpeg")));
        m.headers.push((SavedHeader::Expires, Bytes::from_static(b"Thu, 01 Dec 1994 16:00:00 GMT")));
        let mut buf = Vec::new();
        m.encode(&mut buf);
        assert_eq!(RecordMeta::decode(&buf).unwrap(), m);
        for cut in 0..buf.len() {
            assert!(RecordMeta::decode(&buf[..cut]).is_err(), "prefix {cut} must not decode");
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
