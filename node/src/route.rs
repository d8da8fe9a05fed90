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

use edgemirror_proto::{self as proto, Method};

use crate::error::S3Error;
use crate::respond::Request;

/// The bucket and key a request names.
pub struct Target<'a> {
    pub bucket: Cow<'a, str>,
    pub key: Cow<'a, str>,
}

/// Routes a GET or HEAD of an object.
pub fn route<'a>(req: &Request<'a>, domain: &str) -> Result<Target<'a>, S3Error> {
    match req.head.method {
        Method::Get | Method::Head => {}
        _ => return Err(S3Error::MethodNotAllowed),
    }
    let raw = req.head.path.get(req.buf);
    let Some(rest) = raw.strip_prefix(b"/") else {
        return Err(S3Error::InvalidRequest("the request target must be an absolute path"));
    };
    let host_bucket = req.header("host").and_then(|h| virtual_host_bucket(h, domain));
    let (bucket, key): (Cow<'a, str>, &[u8]) = match host_bucket {
        Some(bucket) => (Cow::Owned(bucket), rest),
        None => {
            let (bucket, key) = match rest.iter().position(|&c| c == b'/') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            (proto::decode_path(bucket).map_err(S3Error::BadRequest)?, key)
        }
    };
    let key = proto::decode_path(key).map_err(S3Error::BadRequest)?;
    if bucket.is_empty() {
        return Err(S3Error::InvalidRequest("listing buckets is not supported"));
    }
    if key.is_empty() {
        return Err(S3Error::InvalidRequest("listing objects is not supported; name a key"));
    }
    if key.len() > edgemirror_cache::key::MAX_KEY_BYTES {
        return Err(S3Error::InvalidRequest("the object key is longer than 1024 bytes"));
    }
    Ok(Target { bucket, key })
}

/// The bucket of a virtual-host `Host` (`{bucket}.{domain}[:port]`), if it is one.
fn virtual_host_bucket(host: &[u8], domain: &str) -> Option<String> {
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
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let bucket = name.strip_suffix(&domain.to_ascii_lowercase())?.strip_suffix('.')?;
    (!bucket.is_empty()).then(|| bucket.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_name_their_bucket() {
        let b = |h: &str| virtual_host_bucket(h.as_bytes(), "s3.local");
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
