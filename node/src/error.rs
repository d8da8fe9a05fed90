//! Errors of the data plane, each recording whose fault it is, and the one place
//! ([`S3Error::status`]) that maps an error to an HTTP status and S3 error code.
//!
//! - downstream (the client): 4xx;
//! - upstream (the origin): 404 when the origin said 404, else 424 `MirrorFailed`;
//! - internal (us): 500.

use crate::metrics::Source;
use std::borrow::Cow;

use edgemirror_proto::ParseError;

#[derive(Debug)]
pub enum S3Error {
    /// Downstream: the request could not be parsed or broke a limit.
    BadRequest(ParseError),
    /// Downstream: well-formed but not something we serve.
    InvalidRequest(&'static str),
    /// Downstream: a parameter or header with a value S3 does not accept.
    InvalidArgument(&'static str),
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    /// Upstream: the origin answered 404 (the client sees `NoSuchKey`).
    NoSuchKeyAtOrigin,
    /// Downstream: If-Match / If-Unmodified-Since did not hold.
    PreconditionFailed,
    /// Downstream: no requested range overlaps an object of `size` bytes.
    InvalidRange {
        size: u64,
    },
    /// Upstream: the origin failed (status other than 200/404, network, timeout, bad framing).
    MirrorFailed(String),
    /// Ours: a bug or an I/O error on our side.
    Internal(String),
    /// Downstream: the request's signature (or its absence) does not allow it.
    Auth(edgemirror_proto::s3::sigv4::SigV4Error),
    /// Downstream: a write, delete or bucket operation without any signature.
    AccessDenied(&'static str),
    /// Downstream: an access key not in `[[s3.keys]]`.
    InvalidAccessKeyId,
    /// Downstream: an S3 operation this node does not offer (yet).
    NotImplemented(&'static str),
    /// Downstream: an upload without Content-Length (and not aws-chunked).
    MissingContentLength,
    /// Downstream: an upload larger than `store.max_object_bytes`.
    EntityTooLarge,
    /// Downstream: Content-MD5 is not a base64 MD5.
    InvalidDigest,
    /// Downstream: the body's MD5 differs from Content-MD5.
    BadDigest,
    /// Downstream: the body's SHA-256 differs from x-amz-content-sha256.
    ContentSha256Mismatch,
    /// Downstream: the body stopped short of its announced length, or stalled.
    IncompleteBody(String),
    /// Downstream: `x-amz-meta-*` over 2 KiB.
    MetadataTooLarge,
    /// Downstream: no multipart upload with that id (for that key).
    NoSuchUpload,
    /// Downstream: a `versionId` other than `null` (the node keeps one version per key).
    NoSuchVersion,
    /// Downstream: a part listed in CompleteMultipartUpload is missing or its ETag differs.
    InvalidPart,
    /// Downstream: the parts of CompleteMultipartUpload are not in ascending order.
    InvalidPartOrder,
    /// Downstream: a part other than the last is under 5 MiB.
    EntityTooSmall,
    /// Downstream: an XML body that does not parse (the reason for the message).
    MalformedXml(&'static str),
    /// Downstream: CreateBucket of a bucket that exists (every key owns every bucket here).
    BucketAlreadyOwnedByYou,
    /// Downstream: DeleteBucket of a bucket that still holds objects.
    BucketNotEmpty,
    /// Downstream: CreateBucket with a name S3 does not allow (the reason).
    InvalidBucketName(String),
    /// Downstream: CreateBucket asking for a region other than `s3.region`.
    InvalidLocationConstraint,
    /// Ours: the store cannot take the object now (full: `store.max_bytes`, the free-space
    /// watermark, or the disk).
    StoreFull(String),
    /// Ours: the shared store of record (`store.backend = "s3"`) could not take a write or a
    /// delete; nothing changed. Retryable (SDKs retry 503). The reason is for the log.
    SharedStoreUnavailable(String),
}

/// A store failure as S3 sees it: a full store is 507, a body that is not what was announced
/// (short, or its MD5 differs from Content-MD5) is the client's, anything else is ours.
impl From<edgemirror_cache::Error> for S3Error {
    fn from(e: edgemirror_cache::Error) -> S3Error {
        match e {
            edgemirror_cache::Error::NoSpace(why) => S3Error::StoreFull(why),
            edgemirror_cache::Error::Cancelled => S3Error::NoSuchBucket,
            // A conditional write: If-Match with no object is S3's NoSuchKey, anything else 412.
            edgemirror_cache::Error::ConditionNotMet { exists: false } => S3Error::NoSuchKey,
            edgemirror_cache::Error::ConditionNotMet { exists: true } => S3Error::PreconditionFailed,
            edgemirror_cache::Error::BodyMismatch(why) if why.contains("MD5") => S3Error::BadDigest,
            edgemirror_cache::Error::BodyMismatch(why) => S3Error::IncompleteBody(why),
            e => S3Error::Internal(e.to_string()),
        }
    }
}

impl S3Error {
    pub fn status(&self) -> u16 {
        match self {
            S3Error::BadRequest(e) => e.status(),
            S3Error::InvalidRequest(_) | S3Error::InvalidArgument(_) => 400,
            S3Error::MethodNotAllowed => 405,
            S3Error::NoSuchBucket
            | S3Error::NoSuchKey
            | S3Error::NoSuchKeyAtOrigin
            | S3Error::NoSuchUpload
            | S3Error::NoSuchVersion => 404,
            S3Error::InvalidPart | S3Error::InvalidPartOrder | S3Error::EntityTooSmall => 400,
            S3Error::PreconditionFailed => 412,
            S3Error::InvalidRange { .. } => 416,
            S3Error::MirrorFailed(_) => 424,
            S3Error::Internal(_) => 500,
            S3Error::Auth(e) => e.http_status(),
            S3Error::AccessDenied(_) | S3Error::InvalidAccessKeyId => 403,
            S3Error::NotImplemented(_) => 501,
            S3Error::MissingContentLength => 411,
            S3Error::EntityTooLarge
            | S3Error::InvalidDigest
            | S3Error::BadDigest
            | S3Error::ContentSha256Mismatch
            | S3Error::IncompleteBody(_)
            | S3Error::MalformedXml(_)
            | S3Error::MetadataTooLarge => 400,
            S3Error::StoreFull(_) => 507,
            S3Error::SharedStoreUnavailable(_) => 503,
            S3Error::BucketAlreadyOwnedByYou | S3Error::BucketNotEmpty => 409,
            S3Error::InvalidBucketName(_) | S3Error::InvalidLocationConstraint => 400,
        }
    }

    /// The S3 error code in the XML body.
    pub fn code(&self) -> &'static str {
        match self {
            S3Error::BadRequest(e) => match e.status() {
                431 => "RequestHeaderSectionTooLarge",
                414 => "RequestURITooLong",
                _ => "BadRequest",
            },
            S3Error::InvalidRequest(_) => "InvalidRequest",
            S3Error::InvalidArgument(_) => "InvalidArgument",
            S3Error::MethodNotAllowed => "MethodNotAllowed",
            S3Error::NoSuchBucket => "NoSuchBucket",
            S3Error::NoSuchKey | S3Error::NoSuchKeyAtOrigin => "NoSuchKey",
            S3Error::PreconditionFailed => "PreconditionFailed",
            S3Error::InvalidRange { .. } => "InvalidRange",
            S3Error::MirrorFailed(_) => "MirrorFailed",
            S3Error::Internal(_) => "InternalError",
            S3Error::Auth(e) => e.s3_code(),
            S3Error::AccessDenied(_) => "AccessDenied",
            S3Error::InvalidAccessKeyId => "InvalidAccessKeyId",
            S3Error::NotImplemented(_) => "NotImplemented",
            S3Error::MissingContentLength => "MissingContentLength",
            S3Error::EntityTooLarge => "EntityTooLarge",
            S3Error::InvalidDigest => "InvalidDigest",
            S3Error::BadDigest => "BadDigest",
            S3Error::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
            S3Error::IncompleteBody(_) => "IncompleteBody",
            S3Error::MalformedXml(_) => "MalformedXML",
            S3Error::MetadataTooLarge => "MetadataTooLarge",
            S3Error::NoSuchUpload => "NoSuchUpload",
            S3Error::NoSuchVersion => "NoSuchVersion",
            S3Error::InvalidPart => "InvalidPart",
            S3Error::InvalidPartOrder => "InvalidPartOrder",
            S3Error::EntityTooSmall => "EntityTooSmall",
            S3Error::StoreFull(_) => "InsufficientStorage",
            S3Error::SharedStoreUnavailable(_) => "ServiceUnavailable",
            S3Error::BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            S3Error::BucketNotEmpty => "BucketNotEmpty",
            S3Error::InvalidBucketName(_) => "InvalidBucketName",
            S3Error::InvalidLocationConstraint => "InvalidLocationConstraint",
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        match self {
            S3Error::BadRequest(e) => format!("malformed request: {}", e.as_str()).into(),
            S3Error::InvalidRequest(m) | S3Error::InvalidArgument(m) => (*m).into(),
            S3Error::MethodNotAllowed => "the method is not allowed against this resource".into(),
            S3Error::NoSuchBucket => "the specified bucket does not exist".into(),
            S3Error::NoSuchKey | S3Error::NoSuchKeyAtOrigin => "the specified key does not exist".into(),
            S3Error::PreconditionFailed => "at least one of the preconditions you specified did not hold".into(),
            S3Error::InvalidRange { .. } => "the requested range is not satisfiable".into(),
            // The origin's failure reason goes to the log, not to the client.
            S3Error::MirrorFailed(_) => "the object could not be fetched from the mirror origin".into(),
            S3Error::Internal(_) => "we encountered an internal error; please try again".into(),
            S3Error::Auth(e) => e.as_str().into(),
            S3Error::AccessDenied(why) => (*why).into(),
            S3Error::InvalidAccessKeyId => "the access key id you provided does not exist in our records".into(),
            S3Error::NotImplemented(what) => format!("{what} is not implemented").into(),
            S3Error::MissingContentLength => "you must provide the Content-Length HTTP header".into(),
            S3Error::EntityTooLarge => "your proposed upload exceeds the maximum allowed object size".into(),
            S3Error::InvalidDigest => "the Content-MD5 you specified is not valid".into(),
            S3Error::BadDigest => "the Content-MD5 or checksum you specified did not match what we received".into(),
            S3Error::ContentSha256Mismatch => {
                "the provided x-amz-content-sha256 does not match what was computed".into()
            }
            S3Error::IncompleteBody(why) => format!("you did not provide the number of bytes specified: {why}").into(),
            S3Error::StoreFull(why) => format!("the store cannot take the object now: {why}").into(),
            // The shared store's failure goes to the log, not to the client.
            S3Error::SharedStoreUnavailable(_) => "the store of record is unavailable; please try again".into(),
            S3Error::MalformedXml(why) => format!("the XML you provided was not well-formed: {why}").into(),
            S3Error::MetadataTooLarge => {
                "your metadata headers exceed the maximum allowed metadata size (2 KiB)".into()
            }
            S3Error::NoSuchUpload => "the specified multipart upload does not exist".into(),
            S3Error::NoSuchVersion => {
                "the specified version does not exist: the node keeps only the null version".into()
            }
            S3Error::InvalidPart => "one or more of the specified parts could not be found or its ETag differs".into(),
            S3Error::InvalidPartOrder => "the list of parts was not in ascending order".into(),
            S3Error::EntityTooSmall => "a part other than the last is smaller than 5 MiB".into(),
            S3Error::BucketAlreadyOwnedByYou => "the bucket you tried to create already exists, and you own it".into(),
            S3Error::BucketNotEmpty => "the bucket you tried to delete is not empty".into(),
            S3Error::InvalidBucketName(why) => format!("the specified bucket is not valid: {why}").into(),
            S3Error::InvalidLocationConstraint => {
                "the specified location constraint is not this node's region (s3.region)".into()
            }
        }
    }

    /// The `x-edgemirror-source` of the error response: `origin` when the origin's answer
    /// decided it (its 404, or its failure), `edge` when the node decided it alone.
    pub fn source(&self) -> Source {
        match self {
            S3Error::NoSuchKeyAtOrigin | S3Error::MirrorFailed(_) => Source::Origin,
            _ => Source::Edge,
        }
    }

    /// Whether the connection must close after this error (the request stream is untrustworthy).
    pub fn closes_connection(&self) -> bool {
        matches!(self, S3Error::BadRequest(_))
    }
}
