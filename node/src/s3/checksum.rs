//! The flexible checksums S3 clients send with uploads (`x-amz-checksum-{crc32, crc32c,
//! crc64nvme, sha1, sha256}`, as a header or as an `aws-chunked` trailer): computed over the body
//! as it streams and compared before the commit. Values are base64 of the big-endian CRC, or of
//! the digest.

use base64::Engine as _;
use sha1::Digest as _;

/// A checksum algorithm S3 defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    /// The algorithm of a header or trailer name (`x-amz-checksum-crc32`, any case).
    pub fn from_header(name: &[u8]) -> Option<Algorithm> {
        let lower = name.to_ascii_lowercase();
        Some(match lower.strip_prefix(b"x-amz-checksum-")? {
            b"crc32" => Algorithm::Crc32,
            b"crc32c" => Algorithm::Crc32c,
            b"crc64nvme" => Algorithm::Crc64Nvme,
            b"sha1" => Algorithm::Sha1,
            b"sha256" => Algorithm::Sha256,
            _ => return None,
        })
    }

    pub fn header_name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "x-amz-checksum-crc32",
            Algorithm::Crc32c => "x-amz-checksum-crc32c",
            Algorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            Algorithm::Sha1 => "x-amz-checksum-sha1",
            Algorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }
}

/// A running checksum.
pub enum Checksum {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64Nvme(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksum {
    pub fn new(algorithm: Algorithm) -> Checksum {
        match algorithm {
            Algorithm::Crc32 => Checksum::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Checksum::Crc32c(0),
            Algorithm::Crc64Nvme => Checksum::Crc64Nvme(crc64fast_nvme::Digest::new()),
            Algorithm::Sha1 => Checksum::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Checksum::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Crc32(h) => h.update(data),
            Checksum::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Checksum::Crc64Nvme(d) => d.write(data),
            Checksum::Sha1(h) => h.update(data),
            Checksum::Sha256(h) => h.update(data),
        }
    }

    /// The value as S3 writes it: base64.
    pub fn finish(self) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        match self {
            Checksum::Crc32(h) => b64(&h.finalize().to_be_bytes()),
            Checksum::Crc32c(c) => b64(&c.to_be_bytes()),
            Checksum::Crc64Nvme(d) => b64(&d.sum64().to_be_bytes()),
            Checksum::Sha1(h) => b64(&h.finalize()),
            Checksum::Sha256(h) => b64(&h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(algorithm: Algorithm, data: &[u8]) -> String {
        let mut c = Checksum::new(algorithm);
        for piece in data.chunks(3) {
            c.update(piece);
        }
        c.finish()
    }

    #[test]
    fn values_match_what_aws_sdks_send() {
        // "Hello world" as the AWS SDKs' checksum tests have it.
        let data = b"Hello world";
        assert_eq!(of(Algorithm::Crc32, data), "i9aeUg==");
        assert_eq!(of(Algorithm::Crc32c, data), "crUfeA==");
        assert_eq!(of(Algorithm::Sha1, data), "e1AsOh9IyGCa4hLN+2Od7jlnP14=");
        assert_eq!(of(Algorithm::Sha256, data), "ZOyIygCyaOW6GjVnihtTFtIS9PNmskdyMlNKiuyjfzw=");
        // The empty body's CRC64/NVME is 0.
        assert_eq!(of(Algorithm::Crc64Nvme, b""), "AAAAAAAAAAA=");
        assert_eq!(Algorithm::from_header(b"X-Amz-Checksum-CRC32C"), Some(Algorithm::Crc32c));
        assert_eq!(Algorithm::from_header(b"x-amz-checksum-md5"), None);
    }
}
