//! Addressing: which bucket and key a request names.
//!
//! - Path style, always: `/{bucket}/{key}`.
//! - Virtual-host style when `s3.domain` is set: `Host: {bucket}.{domain}` and the whole path is
//!   the key (`/{key}`), as S3 SDKs and the reference feature's own example
//!   (`host: bucket.s3.cn-north-1.jcloudcs.com`) address buckets. A Host equal to the domain
//!   itself, or not under it (an IP, another name), is path style. The port is ignored; names
//!   compare case-insensitively (bucket names are lower case).
//!
//! The key is percent-decoded once, borrowing from the request buffer when nothing needed
//! decoding (the usual case: no allocation before the cache lookup).

use std::borrow::Cow;

use edgemirror_proto::{self as proto, has_query_param, Method};

use crate::error::S3Error;
use crate::respond::Request;

/// The bucket and key a request names, and the S3 operation it is.
pub struct Target<'a> {
    pub bucket: Cow<'a, str>,
    /// Empty for a bucket operation.
    pub key: Cow<'a, str>,
    pub op: Op,
}

/// The S3 operations the data plane serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    GetObject,
    HeadObject,
    PutObject,
    DeleteObject,
    HeadBucket,
    /// ListObjectsV2 (`list-type=2`) or ListObjects v1.
    ListObjects,
    /// `POST /{bucket}?delete`: the batch delete.
    DeleteObjects,
    /// `GET /`: the buckets this node serves.
    ListBuckets,
    /// `PUT /{bucket}`.
    CreateBucket,
    /// `DELETE /{bucket}`.
    DeleteBucket,
    /// `GET /{bucket}?location`.
    GetBucketLocation,
    /// `GET /{bucket}?versions`: the node keeps one version per key, `null`.
    ListObjectVersions,
    /// A PUT with `x-amz-copy-source`: a copy within the node.
    CopyObject,
    CreateMultipartUpload,
    UploadPart,
    /// An UploadPart with `x-amz-copy-source`.
    UploadPartCopy,
    /// A GET or HEAD of an object with `?partNumber=N`: one part of a multipart object.
    GetObjectPart,
    /// `GET /{bucket}/{key}?attributes`.
    GetObjectAttributes,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
}

impl Op {
    /// The S3 operation's name, as the access log shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::GetObject => "GetObject",
            Op::HeadObject => "HeadObject",
            Op::PutObject => "PutObject",
            Op::DeleteObject => "DeleteObject",
            Op::HeadBucket => "HeadBucket",
            Op::ListObjects => "ListObjects",
            Op::DeleteObjects => "DeleteObjects",
            Op::ListBuckets => "ListBuckets",
            Op::CreateBucket => "CreateBucket",
            Op::DeleteBucket => "DeleteBucket",
            Op::GetBucketLocation => "GetBucketLocation",
            Op::ListObjectVersions => "ListObjectVersions",
            Op::CopyObject => "CopyObject",
            Op::CreateMultipartUpload => "CreateMultipartUpload",
            Op::UploadPart => "UploadPart",
            Op::UploadPartCopy => "UploadPartCopy",
            Op::GetObjectPart => "GetObjectPart",
            Op::GetObjectAttributes => "GetObjectAttributes",
            Op::CompleteMultipartUpload => "CompleteMultipartUpload",
            Op::AbortMultipartUpload => "AbortMultipartUpload",
            Op::ListParts => "ListParts",
            Op::ListMultipartUploads => "ListMultipartUploads",
        }
    }

    /// Whether the operation changes or reveals the store beyond a public read: it needs a
    /// valid signature whatever the bucket's `public_read`.
    pub fn needs_signature(self) -> bool {
        !matches!(self, Op::GetObject | Op::HeadObject | Op::GetObjectPart)
    }
}

/// Query parameters that name a sub-resource this node does not serve yet: answered 501
/// rather than taken for the plain object operation.
const SUBRESOURCES: [&str; 10] =
    ["acl", "tagging", "uploads", "uploadId", "partNumber", "versions", "legal-hold", "retention", "restore", "select"];

/// Routes a request to its bucket, key and operation.
pub fn route<'a>(req: &Request<'a>, domain: &str) -> Result<Target<'a>, S3Error> {
    let raw = req.head.path.get(req.buf);
    let Some(rest) = raw.strip_prefix(b"/") else {
        return Err(S3Error::InvalidRequest("the request target must be an absolute path"));
    };
    // No Host scan at all when virtual hosts are off (the usual case).
    let host_bucket =
        if domain.is_empty() { None } else { req.header("host").and_then(|h| virtual_host_bucket(h, domain)) };
    let (bucket, key): (Cow<'a, str>, &[u8]) = match host_bucket {
        Some(bucket) => (bucket, rest),
        None => {
            let (bucket, key) = match rest.iter().position(|&c| c == b'/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            (proto::decode_path(bucket).map_err(S3Error::BadRequest)?, key)
        }
    };
    let key = proto::decode_path(key).map_err(S3Error::BadRequest)?;
    if key.len() > edgemirror_cache::key::MAX_KEY_BYTES {
        return Err(S3Error::InvalidRequest("the object key is longer than 1024 bytes"));
    }
    let op = operation(req, bucket.is_empty(), key.is_empty())?;
    Ok(Target { bucket, key, op })
}

/// The operation of a request, from its method, whether it names a bucket and a key, and its
/// query. What this node does not offer yet is a 501 `NotImplemented` naming it.
fn operation(req: &Request<'_>, no_bucket: bool, no_key: bool) -> Result<Op, S3Error> {
    let method = req.head.method;
    if no_bucket {
        return match method {
            Method::Get => Ok(Op::ListBuckets),
            _ => Err(S3Error::MethodNotAllowed),
        };
    }
    let query = req.query().unwrap_or_default();
    // Multipart uploads first: their parameters (uploadId, partNumber) are sub-resources
    // otherwise.
    if has_query_param(query, "uploadId") && !no_key {
        return match method {
            Method::Put if req.header("x-amz-copy-source").is_some() => Ok(Op::UploadPartCopy),
            Method::Put => Ok(Op::UploadPart),
            Method::Post => Ok(Op::CompleteMultipartUpload),
            Method::Delete => Ok(Op::AbortMultipartUpload),
            Method::Get => Ok(Op::ListParts),
            _ => Err(S3Error::MethodNotAllowed),
        };
    }
    if has_query_param(query, "uploads") {
        return match (method, no_key) {
            (Method::Post, false) => Ok(Op::CreateMultipartUpload),
            (Method::Get, true) => Ok(Op::ListMultipartUploads),
            _ => Err(S3Error::MethodNotAllowed),
        };
    }
    // One version per key, `null`: naming it is naming the object; any other version is absent.
    if edgemirror_proto::query_param(query, "versionId").is_some_and(|v| v != "null") {
        return Err(S3Error::NoSuchVersion);
    }
    if has_query_param(query, "partNumber") && !no_key && matches!(method, Method::Get | Method::Head) {
        return Ok(Op::GetObjectPart);
    }
    if has_query_param(query, "attributes") && !no_key && method == Method::Get {
        return Ok(Op::GetObjectAttributes);
    }
    if has_query_param(query, "versions") && no_key && method == Method::Get {
        return Ok(Op::ListObjectVersions);
    }
    if let Some(sub) = subresource(query) {
        return Err(S3Error::NotImplemented(sub));
    }
    if no_key {
        return match method {
            Method::Get if has_query_param(req.query().unwrap_or_default(), "location") => Ok(Op::GetBucketLocation),
            Method::Head => Ok(Op::HeadBucket),
            Method::Get => Ok(Op::ListObjects),
            Method::Put => Ok(Op::CreateBucket),
            Method::Delete => Ok(Op::DeleteBucket),
            Method::Post if has_query_param(req.query().unwrap_or_default(), "delete") => Ok(Op::DeleteObjects),
            Method::Post => Err(S3Error::NotImplemented("POST to a bucket")),
            _ => Err(S3Error::MethodNotAllowed),
        };
    }
    match method {
        Method::Get => Ok(Op::GetObject),
        Method::Head => Ok(Op::HeadObject),
        Method::Put if req.header("x-amz-copy-source").is_some() => Ok(Op::CopyObject),
        Method::Put => Ok(Op::PutObject),
        Method::Delete => Ok(Op::DeleteObject),
        Method::Post => Err(S3Error::NotImplemented("this POST to an object")),
        _ => Err(S3Error::MethodNotAllowed),
    }
}

/// The first sub-resource parameter of a query, if any.
fn subresource(query: &[u8]) -> Option<&'static str> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        SUBRESOURCES.iter().copied().find(|s| s.as_bytes() == name)
    })
}

/// The bucket of a virtual-host `Host` (`{bucket}.{domain}[:port]`), if it is one. `domain` is
/// lower case (the config made it so); the bucket borrows from the Host unless it needs
/// lower-casing.
fn virtual_host_bucket<'a>(host: &'a [u8], domain: &str) -> Option<Cow<'a, str>> {
    if domain.is_empty() {
        return None;
    }
    let host = std::str::from_utf8(host).ok()?.trim();
    // Strip a port; an IPv6 literal is never a virtual host.
    if host.starts_with('[') {
        return None;
    }
    let name =
        host.rsplit_once(':').map_or(host, |(n, port)| if port.bytes().all(|b| b.is_ascii_digit()) { n } else { host });
    let name = name.strip_suffix('.').unwrap_or(name);
    let cut = name.len().checked_sub(domain.len())?;
    if !name.is_char_boundary(cut) || !name[cut..].eq_ignore_ascii_case(domain) {
        return None;
    }
    let bucket = name[..cut].strip_suffix('.').filter(|b| !b.is_empty())?;
    Some(if bucket.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(bucket.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bucket)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_name_their_bucket() {
        fn b(h: &str) -> Option<Cow<'_, str>> {
            virtual_host_bucket(h.as_bytes(), "s3.local")
        }
        assert_eq!(b("photos.s3.local").as_deref(), Some("photos"));
        assert_eq!(b("photos.s3.local:8080").as_deref(), Some("photos"));
        assert_eq!(b("Photos.S3.Local.").as_deref(), Some("photos"));
        assert_eq!(b("my.dotted.bucket.s3.local").as_deref(), Some("my.dotted.bucket"));
        assert_eq!(b("s3.local"), None, "the domain itself is path style");
        assert_eq!(b("evils3.local"), None, "a suffix without the dot is another name");
        assert_eq!(b("127.0.0.1:8080"), None);
        assert_eq!(b("[::1]:8080"), None);
        assert_eq!(virtual_host_bucket(b"photos.s3.local", ""), None, "no domain: path style only");
    }
}
