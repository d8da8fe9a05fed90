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

    /// The algorithm `x-amz-checksum-algorithm` names (`SHA256`, any case).
    pub fn from_name(name: &[u8]) -> Option<Algorithm> {
        let mut header = b"x-amz-checksum-".to_vec();
        header.extend_from_slice(name.trim_ascii());
        Algorithm::from_header(&header)
    }

    /// Its name in `x-amz-checksum-algorithm` and ListParts: `SHA256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Crc32 => "CRC32",
            Algorithm::Crc32c => "CRC32C",
            Algorithm::Crc64Nvme => "CRC64NVME",
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
        }
    }

    /// Whether a multipart upload may use it as a `FULL_OBJECT` checksum (the CRCs, which S3
    /// combines across parts), rather than only `COMPOSITE` (a checksum of the parts'
    /// checksums).
    pub fn can_be_full_object(self) -> bool {
        matches!(self, Algorithm::Crc32 | Algorithm::Crc32c | Algorithm::Crc64Nvme)
    }

    /// A part's value in a CompleteMultipartUpload `<Part>`.
    pub fn of_part(self, part: &edgemirror_proto::s3::xml::CompletedPart) -> Option<&str> {
        match self {
            Algorithm::Crc32 => part.checksum_crc32.as_deref(),
            Algorithm::Crc32c => part.checksum_crc32c.as_deref(),
            Algorithm::Crc64Nvme => part.checksum_crc64nvme.as_deref(),
            Algorithm::Sha1 => part.checksum_sha1.as_deref(),
            Algorithm::Sha256 => part.checksum_sha256.as_deref(),
        }
    }

    /// The one of five optional checksum fields (of a ListParts `<Part>`, a Complete result)
    /// this algorithm's value goes in.
    pub fn field(self, fields: [&mut Option<String>; 5]) -> &mut Option<String> {
        let [crc32, crc32c, crc64nvme, sha1, sha256] = fields;
        match self {
            Algorithm::Crc32 => crc32,
            Algorithm::Crc32c => crc32c,
            Algorithm::Crc64Nvme => crc64nvme,
            Algorithm::Sha1 => sha1,
            Algorithm::Sha256 => sha256,
        }
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

/// The `COMPOSITE` checksum of a multipart object: the checksum of its parts' checksums (their
/// raw bytes, in order), with `-{parts}`. `None` if a part's value is not base64.
pub fn composite(algorithm: Algorithm, parts: &[&str]) -> Option<String> {
    let mut sum = Checksum::new(algorithm);
    for part in parts {
        sum.update(&base64::engine::general_purpose::STANDARD.decode(part).ok()?);
    }
    Some(format!("{}-{}", sum.finish(), parts.len()))
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
            Checksum::Crc32c(c) => *c = edgemirror_cache::crc::crc32c_append(*c, data),
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
