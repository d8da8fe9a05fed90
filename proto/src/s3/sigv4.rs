//! AWS Signature Version 4 verification for the S3 API, server side, sans I/O.
//!
//! Owns: parsing the two places a SigV4 signature arrives (the `Authorization` header and the
//! `X-Amz-*` query parameters of a presigned URL), the S3 flavour of the canonical request, the
//! string to sign, the signing key, the constant-time signature check, the request-time rules
//! (15 minutes of clock skew, presigned expiry), and the chained signatures of `aws-chunked`
//! bodies (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`).
//!
//! Does not own: finding the secret of an access key (the node's credential store), the
//! `aws-chunked` framing (`aws_chunked.rs` finds chunk boundaries and their `chunk-signature`;
//! [`ChunkSigner`] checks them), reading the body (the node streams it through
//! [`PayloadHasher`] or [`ChunkSigner`]), and authorisation (what an authenticated key may do).
//! Signature Version 2, SigV4a (ECDSA) and browser POST policies are not supported.
//!
//! Request flow through this file:
//! 1. [`parse_auth`]`(authorization, query)` -> `None` (anonymous request), [`Auth::Header`],
//!    [`Auth::Presigned`], or a [`SigV4Error`] (malformed, or both forms at once).
//! 2. The node looks up the secret of `auth.credential().access_key()`; an unknown key is
//!    [`SigV4Error::InvalidAccessKeyId`].
//! 3. [`verify`]`(&auth, &request, secret, region, now)` checks scope, time and signature and
//!    returns [`Verified`]: what the `x-amz-content-sha256` promised about the body.
//! 4. The body: [`PayloadHash::Sha256`] -> [`Verified::payload_hasher`], checked at the end
//!    (`XAmzContentSHA256Mismatch`); signed streaming -> [`Verified::chunk_signer`], one
//!    `update`* + `finish_chunk` per chunk, then `verify_trailer` for the `-TRAILER` variant.
//!    Chunk data reaches the caller before its signature is checked (that happens at the
//!    chunk's end, and holding each chunk back until then would buffer 64 KiB or more per
//!    upload): the node must not commit an object until [`ChunkSigner::is_complete`].
//!
//! Canonical request, S3 flavour (<https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html>):
//! - path: the raw path as received, NOT normalised (no `.`/`..` removal, no slash merging) and
//!   NOT double-encoded; each byte put in canonical percent-encoding: escapes decoded, bytes
//!   outside `A-Za-z0-9-._~` (and literal '/') re-encoded as `%XX` upper-case. `%2F` stays `%2F`.
//!   An empty path is `/`.
//! - query: every `name=value` decoded and re-encoded the same way, '/' included (`%2F`);
//!   `acl` is `acl=`; sorted by encoded name, then encoded value; `X-Amz-Signature` left out for
//!   presigned requests. '+' is a literal plus (RFC 3986), never a space: the node's query
//!   decoding must agree, or `a+b` would be signed as one string and served as another.
//! - headers: lower-case names in `SignedHeaders` order (validated sorted), values trimmed with
//!   runs of SP/HTAB collapsed to one SP, several fields of one name joined with ',' in wire
//!   order; a signed header absent from the request gets an empty value (and the signature then
//!   fails). `SignedHeaders` must include `host`.
//! - payload: the `x-amz-content-sha256` value verbatim; for a presigned URL the
//!   `X-Amz-Content-Sha256` query parameter, else that header, else `UNSIGNED-PAYLOAD`.
//!
//! Every `x-amz-*` header present in the request must be signed (S3's `HeadersNotSigned`):
//! otherwise a captured request could be replayed within the skew window with an added
//! `x-amz-acl`, `x-amz-copy-source` or `x-amz-meta-*`.
//!
//! Errors map to S3 error codes in one place, [`SigV4Error::s3_code`] and
//! [`SigV4Error::http_status`]:
//!
//! | variant | S3 code | status |
//! | --- | --- | --- |
//! | `HeaderMalformed(_)` (incl. wrong region, scope date != x-amz-date) | `AuthorizationHeaderMalformed` | 400 |
//! | `QueryMalformed(_)` (incl. wrong region, bad X-Amz-Expires) | `AuthorizationQueryParametersError` | 400 |
//! | `UnsupportedAuthorizationType`, `MultipleAuthMechanisms`, `InvalidContentSha256` | `InvalidArgument` | 400 |
//! | `MissingContentSha256` | `InvalidRequest` (what S3 answers, not `MissingSecurityHeader`) | 400 |
//! | `InvalidUriEncoding` | `InvalidURI` | 400 |
//! | `ContentSha256Mismatch` | `XAmzContentSHA256Mismatch` | 400 |
//! | `MissingDate`, `RequestExpired`, `RequestNotYetValid`, `HeadersNotSigned` | `AccessDenied` | 403 |
//! | `RequestTimeTooSkewed` | `RequestTimeTooSkewed` | 403 |
//! | `SignatureDoesNotMatch`, `ChunkSignatureDoesNotMatch`, `ChunkOutOfSequence` | `SignatureDoesNotMatch` | 403 |
//! | `InvalidAccessKeyId` (made by the node) | `InvalidAccessKeyId` | 403 |
//!
//! For a wrong region S3 adds `<Region>expected</Region>` to the error body; the node knows the
//! region it passed to [`verify`] and adds it when the error is `Malformed::WrongRegion`.
//!
//! Allocation: the canonical request is streamed into SHA-256, never built as text
//! (`canonical_request` builds it, for tests and error bodies, with the same writer, so the
//! text shown and the hash signed cannot disagree). `verify` allocates the `AWS4`+secret HMAC
//! key and, when the request has a query, the encoded pairs it must sort; parsing a presigned
//! URL allocates only for parameters that had to be percent-decoded; a [`ChunkSigner`] owns a
//! copy of the scope. A few small allocations per signed request, next to five HMAC-SHA256
//! computations (four for the signing key, one for the signature).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The only signing algorithm accepted, in the `Authorization` header and `X-Amz-Algorithm`.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The service a credential scope must name.
pub const SERVICE: &str = "s3";
/// The last element of every credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";
/// How far the request time may be from the server's clock (S3: 15 minutes).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// Longest lifetime of a presigned URL (7 days, as S3).
pub const MAX_PRESIGNED_EXPIRES_S: u32 = 604_800;
/// SHA-256 of the empty string, hex: the payload hash of a bodiless request.
pub const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// `x-amz-content-sha256`: the body is not covered by the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// `x-amz-content-sha256`: `aws-chunked` body, every chunk signed.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// `x-amz-content-sha256`: `aws-chunked` body, every chunk and the trailer signed.
pub const STREAMING_PAYLOAD_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
/// `x-amz-content-sha256`: `aws-chunked` body with a trailer, nothing signed.
pub const STREAMING_UNSIGNED_PAYLOAD_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// First line of a chunk's string to sign.
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";
/// First line of the trailer's string to sign.
const TRAILER_ALGORITHM: &str = "AWS4-HMAC-SHA256-TRAILER";
/// The trailer field that carries the trailer signature; not part of what it signs.
const TRAILER_SIGNATURE_FIELD: &str = "x-amz-trailer-signature";
/// The query parameter left out of a presigned request's canonical query.
const SIGNATURE_PARAM: &str = "X-Amz-Signature";

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a SigV4-signed request (or a chunk of its body) was refused. Small and `Copy`, like
/// `ParseError`; `s3_code()` and `http_status()` are the one place it becomes a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// The `Authorization` header is not a well-formed SigV4 header, or its scope is wrong.
    #[error("the authorization header is malformed: {0}")]
    HeaderMalformed(Malformed),
    /// The presigned-URL query parameters are not well formed, or their scope is wrong.
    #[error("error parsing the X-Amz-* query parameters: {0}")]
    QueryMalformed(Malformed),
    /// `Authorization` names another scheme (SigV2 `AWS `, `Bearer`, SigV4a, ...).
    #[error("unsupported Authorization type: only AWS4-HMAC-SHA256 is accepted")]
    UnsupportedAuthorizationType,
    /// Both an `Authorization` header and `X-Amz-*` signature query parameters.
    #[error("only one auth mechanism allowed: the Authorization header or the X-Amz-* query parameters")]
    MultipleAuthMechanisms,
    /// Header-signed request without `x-amz-content-sha256` (S3 requires it).
    #[error("missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,
    /// `x-amz-content-sha256` is neither a known token nor 64 hex digits, or appears twice.
    #[error(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value this server supports, or a SHA-256 in hex"
    )]
    InvalidContentSha256,
    /// The path or query has a `%` not followed by two hex digits.
    #[error("the request path or query has invalid percent-encoding")]
    InvalidUriEncoding,
    /// Header form: no `x-amz-date`/`Date`, or not a valid date.
    #[error("AWS authentication requires a valid Date or x-amz-date header")]
    MissingDate,
    /// Header form: the request time is more than `MAX_CLOCK_SKEW` from the server's clock.
    #[error("the difference between the request time and the server's time is too large")]
    RequestTimeTooSkewed,
    /// Presigned: now is past `X-Amz-Date + X-Amz-Expires`.
    #[error("request has expired")]
    RequestExpired,
    /// Presigned: `X-Amz-Date` is more than `MAX_CLOCK_SKEW` in the future.
    #[error("request is not valid yet")]
    RequestNotYetValid,
    /// An `x-amz-*` header is present but not in `SignedHeaders`.
    #[error("there were headers present in the request which were not signed")]
    HeadersNotSigned,
    /// The signature computed with the secret differs from the one given.
    #[error("the request signature we calculated does not match the signature you provided")]
    SignatureDoesNotMatch,
    /// The access key is unknown. Never produced here: the node makes it when its lookup fails,
    /// so that every authentication failure is one type.
    #[error("the access key id you provided does not exist in our records")]
    InvalidAccessKeyId,
    /// The body does not hash to the hex `x-amz-content-sha256` ([`PayloadHasher::finish`]).
    #[error("the provided x-amz-content-sha256 header does not match what was computed")]
    ContentSha256Mismatch,
    /// A chunk or trailer signature of an `aws-chunked` body does not match (or is not hex).
    #[error("a chunk signature of the aws-chunked body does not match")]
    ChunkSignatureDoesNotMatch,
    /// A chunk after the final (empty) chunk, a trailer before it or twice, or any use of a
    /// [`ChunkSigner`] after it failed once.
    #[error("aws-chunked body signatures out of sequence")]
    ChunkOutOfSequence,
}

impl SigV4Error {
    /// The S3 error code for the XML error body (`<Code>`).
    pub fn s3_code(self) -> &'static str {
        match self {
            SigV4Error::HeaderMalformed(_) => "AuthorizationHeaderMalformed",
            SigV4Error::QueryMalformed(_) => "AuthorizationQueryParametersError",
            SigV4Error::UnsupportedAuthorizationType
            | SigV4Error::MultipleAuthMechanisms
            | SigV4Error::InvalidContentSha256 => "InvalidArgument",
            // S3 answers a missing x-amz-content-sha256 with InvalidRequest ("Missing required
            // header for this request: x-amz-content-sha256"), as SDK bug reports show.
            SigV4Error::MissingContentSha256 => "InvalidRequest",
            SigV4Error::InvalidUriEncoding => "InvalidURI",
            SigV4Error::MissingDate
            | SigV4Error::RequestExpired
            | SigV4Error::RequestNotYetValid
            | SigV4Error::HeadersNotSigned => "AccessDenied",
            SigV4Error::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            SigV4Error::SignatureDoesNotMatch
            | SigV4Error::ChunkSignatureDoesNotMatch
            | SigV4Error::ChunkOutOfSequence => "SignatureDoesNotMatch",
            SigV4Error::InvalidAccessKeyId => "InvalidAccessKeyId",
            SigV4Error::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status S3 sends with `s3_code()`.
    pub fn http_status(self) -> u16 {
        match self {
            SigV4Error::HeaderMalformed(_)
            | SigV4Error::QueryMalformed(_)
            | SigV4Error::UnsupportedAuthorizationType
            | SigV4Error::MultipleAuthMechanisms
            | SigV4Error::MissingContentSha256
            | SigV4Error::InvalidContentSha256
            | SigV4Error::InvalidUriEncoding
            | SigV4Error::ContentSha256Mismatch => 400,
            SigV4Error::MissingDate
            | SigV4Error::RequestTimeTooSkewed
            | SigV4Error::RequestExpired
            | SigV4Error::RequestNotYetValid
            | SigV4Error::HeadersNotSigned
            | SigV4Error::SignatureDoesNotMatch
            | SigV4Error::InvalidAccessKeyId
            | SigV4Error::ChunkSignatureDoesNotMatch
            | SigV4Error::ChunkOutOfSequence => 403,
        }
    }

    /// Stable label for logs and metrics (finer than `s3_code()`).
    pub fn as_str(self) -> &'static str {
        match self {
            SigV4Error::HeaderMalformed(_) => "header_malformed",
            SigV4Error::QueryMalformed(_) => "query_malformed",
            SigV4Error::UnsupportedAuthorizationType => "unsupported_authorization_type",
            SigV4Error::MultipleAuthMechanisms => "multiple_auth_mechanisms",
            SigV4Error::MissingContentSha256 => "missing_content_sha256",
            SigV4Error::InvalidContentSha256 => "invalid_content_sha256",
            SigV4Error::InvalidUriEncoding => "invalid_uri_encoding",
            SigV4Error::MissingDate => "missing_date",
            SigV4Error::RequestTimeTooSkewed => "request_time_too_skewed",
            SigV4Error::RequestExpired => "request_expired",
            SigV4Error::RequestNotYetValid => "request_not_yet_valid",
            SigV4Error::HeadersNotSigned => "headers_not_signed",
            SigV4Error::SignatureDoesNotMatch => "signature_does_not_match",
            SigV4Error::InvalidAccessKeyId => "invalid_access_key_id",
            SigV4Error::ContentSha256Mismatch => "content_sha256_mismatch",
            SigV4Error::ChunkSignatureDoesNotMatch => "chunk_signature_does_not_match",
            SigV4Error::ChunkOutOfSequence => "chunk_out_of_sequence",
        }
    }

    /// The precise reason when the auth data was malformed (either form).
    pub fn malformed(self) -> Option<Malformed> {
        match self {
            SigV4Error::HeaderMalformed(why) | SigV4Error::QueryMalformed(why) => Some(why),
            _ => None,
        }
    }
}

/// What exactly is wrong with the auth data. Wrapped in `SigV4Error::HeaderMalformed` or
/// `SigV4Error::QueryMalformed` by the form it came in, since S3 answers the two differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Query form: `X-Amz-Algorithm` is not `AWS4-HMAC-SHA256`.
    #[error("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")]
    UnsupportedAlgorithm,
    /// Header form: not `AWS4-HMAC-SHA256 Name=value, Name=value, ...` (an empty component,
    /// a component without '=', nothing after the algorithm).
    #[error("expected \"AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...\"")]
    BadSyntax,
    /// Header form: a component other than Credential, SignedHeaders, Signature.
    #[error("unknown component; only Credential, SignedHeaders and Signature are allowed")]
    UnknownComponent,
    /// A component (header) or an X-Amz-* auth parameter (query) given twice.
    #[error("a component or parameter is given more than once")]
    Duplicate,
    /// `Credential` / `X-Amz-Credential` missing.
    #[error("missing Credential")]
    MissingCredential,
    /// `SignedHeaders` / `X-Amz-SignedHeaders` missing.
    #[error("missing SignedHeaders")]
    MissingSignedHeaders,
    /// `Signature` / `X-Amz-Signature` missing.
    #[error("missing Signature")]
    MissingSignature,
    /// Query form: `X-Amz-Algorithm` missing (but other X-Amz-* auth parameters present).
    #[error("missing X-Amz-Algorithm")]
    MissingAlgorithm,
    /// Query form: `X-Amz-Date` missing.
    #[error("missing X-Amz-Date")]
    MissingDate,
    /// Query form: `X-Amz-Expires` missing.
    #[error("missing X-Amz-Expires")]
    MissingExpires,
    /// The credential is not `<key>/<YYYYMMDD>/<region>/s3/aws4_request` with non-empty,
    /// visible-ASCII parts.
    #[error("the Credential is mal-formed; expecting \"<access key>/YYYYMMDD/REGION/SERVICE/aws4_request\"")]
    BadCredential,
    /// The credential's date is not 8 digits.
    #[error("the Credential date is not YYYYMMDD")]
    BadCredentialDate,
    /// The credential's service is not `s3`.
    #[error("incorrect service; this endpoint belongs to \"s3\"")]
    WrongService,
    /// The credential does not end in `aws4_request`.
    #[error("incorrect terminal; this endpoint uses \"aws4_request\"")]
    WrongTerminator,
    /// The credential's region is not this server's (the node adds the expected region).
    #[error("the region is wrong")]
    WrongRegion,
    /// The credential's date is not the date of `x-amz-date` / `X-Amz-Date`.
    #[error("invalid credential date; date is not the same as X-Amz-Date")]
    DateMismatch,
    /// `SignedHeaders` empty, with an empty or non-lower-case name, or not sorted and unique.
    #[error("SignedHeaders must be lower-case header names, sorted, unique, separated by ';'")]
    BadSignedHeaders,
    /// `SignedHeaders` without `host`.
    #[error("SignedHeaders must include host")]
    SignedHeadersWithoutHost,
    /// The signature is not 64 hex digits.
    #[error("the Signature must be 64 hex digits")]
    BadSignature,
    /// Query form: `X-Amz-Date` is not `yyyyMMdd'T'HHmmss'Z'`.
    #[error("X-Amz-Date must be in the ISO8601 long format yyyyMMdd'T'HHmmss'Z'")]
    BadDate,
    /// Query form: `X-Amz-Expires` is not a decimal number of seconds of at least 1.
    #[error("X-Amz-Expires must be a number of seconds, at least 1")]
    BadExpires,
    /// Query form: `X-Amz-Expires` is more than `MAX_PRESIGNED_EXPIRES_S`.
    #[error("X-Amz-Expires must be less than a week (in seconds) that is 604800")]
    ExpiresTooLarge,
    /// Not UTF-8, or (query form) bad percent-encoding in an auth parameter.
    #[error("invalid encoding")]
    BadEncoding,
}

impl Malformed {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::UnsupportedAlgorithm => "unsupported_algorithm",
            Malformed::BadSyntax => "bad_syntax",
            Malformed::UnknownComponent => "unknown_component",
            Malformed::Duplicate => "duplicate",
            Malformed::MissingCredential => "missing_credential",
            Malformed::MissingSignedHeaders => "missing_signed_headers",
            Malformed::MissingSignature => "missing_signature",
            Malformed::MissingAlgorithm => "missing_algorithm",
            Malformed::MissingDate => "missing_date",
            Malformed::MissingExpires => "missing_expires",
            Malformed::BadCredential => "bad_credential",
            Malformed::BadCredentialDate => "bad_credential_date",
            Malformed::WrongService => "wrong_service",
            Malformed::WrongTerminator => "wrong_terminator",
            Malformed::WrongRegion => "wrong_region",
            Malformed::DateMismatch => "date_mismatch",
            Malformed::BadSignedHeaders => "bad_signed_headers",
            Malformed::SignedHeadersWithoutHost => "signed_headers_without_host",
            Malformed::BadSignature => "bad_signature",
            Malformed::BadDate => "bad_date",
            Malformed::BadExpires => "bad_expires",
            Malformed::ExpiresTooLarge => "expires_too_large",
            Malformed::BadEncoding => "bad_encoding",
        }
    }
}

/// Where the signature came from. The two forms differ in error codes, in the time rules, in
/// the payload-hash default and in the canonical query (`X-Amz-Signature` left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthForm {
    /// `Authorization: AWS4-HMAC-SHA256 ...`.
    Header,
    /// Presigned URL: `X-Amz-Algorithm=...&X-Amz-Signature=...` in the query.
    Query,
}

impl AuthForm {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthForm::Header => "header",
            AuthForm::Query => "query",
        }
    }

    /// `why`, wrapped in the error variant of this form.
    pub fn malformed(self, why: Malformed) -> SigV4Error {
        match self {
            AuthForm::Header => SigV4Error::HeaderMalformed(why),
            AuthForm::Query => SigV4Error::QueryMalformed(why),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsed pieces: date, credential, signed headers
// ---------------------------------------------------------------------------------------------

/// A request timestamp in SigV4's ISO 8601 basic form, `YYYYMMDDTHHMMSSZ` (UTC), validated.
/// Kept as its 16 ASCII bytes (it goes into every string to sign) and as Unix seconds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AmzDate {
    text: [u8; 16],
    unix_s: u64,
}

impl AmzDate {
    /// Parses `YYYYMMDDTHHMMSSZ`. `None` for any other shape, an impossible date or time
    /// (month 13, 30 February, 24:00:00, leap second) or a year before 1970.
    pub fn parse(s: &str) -> Option<AmzDate> {
        let b = s.as_bytes();
        let text: [u8; 16] = b.try_into().ok()?;
        let digits_ok = text.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
        if !digits_ok {
            return None;
        }
        let num = |from: usize, to: usize| text[from..to].iter().fold(0u32, |n, &c| n * 10 + u32::from(c - b'0'));
        let (year, month, day) = (num(0, 4), num(4, 6), num(6, 8));
        let (hour, minute, second) = (num(9, 11), num(11, 13), num(13, 15));
        if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let days = u64::try_from(days_from_civil(i64::from(year), month, day)).ok()?;
        let unix_s = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
        Some(AmzDate { text, unix_s })
    }

    /// The timestamp of `t` (sub-second part dropped). `None` before 1970 or after year 9999.
    pub fn from_system_time(t: SystemTime) -> Option<AmzDate> {
        let unix_s = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let (year, month, day) = civil_from_days(i64::try_from(unix_s / 86_400).ok()?);
        if year > 9999 {
            return None;
        }
        let secs_of_day = unix_s % 86_400;
        let mut text = *b"00000000T000000Z";
        let mut put = |at: usize, width: usize, mut value: u64| {
            for slot in text[at..at + width].iter_mut().rev() {
                // `value % 10` < 10, so the cast cannot truncate.
                *slot = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, u64::try_from(year).ok()?);
        put(4, 2, u64::from(month));
        put(6, 2, u64::from(day));
        put(9, 2, secs_of_day / 3600);
        put(11, 2, secs_of_day / 60 % 60);
        put(13, 2, secs_of_day % 60);
        Some(AmzDate { text, unix_s })
    }

    /// From an HTTP `Date` header (IMF-fixdate, or the two obsolete forms RFC 9110 §5.6.7
    /// still requires recipients to accept). SigV4 allows `Date` instead of `x-amz-date`.
    pub fn from_http_date(s: &str) -> Option<AmzDate> {
        AmzDate::from_system_time(httpdate::parse_http_date(s).ok()?)
    }

    /// `YYYYMMDDTHHMMSSZ`.
    pub fn as_str(&self) -> &str {
        // Only ever ASCII digits, 'T' and 'Z' (checked in `parse`, written by
        // `from_system_time`), so this never falls back.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// `YYYYMMDD`: what the credential scope's date must equal.
    pub fn date(&self) -> &str {
        self.as_str().get(..8).unwrap_or_default()
    }

    /// As a `SystemTime`.
    pub fn to_system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix_s)
    }
}

impl fmt::Debug for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmzDate({})", self.as_str())
    }
}

impl fmt::Display for AmzDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[expect(clippy::manual_is_multiple_of, reason = "workspace rust-version is 1.85; is_multiple_of is stable from 1.87")]
fn is_leap_year(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of `days_from_civil`: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    // Both in range by construction (1..=31 and 1..=12), so the casts cannot truncate.
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `<access key>/<YYYYMMDD>/<region>/s3/aws4_request`, validated. Borrowed from the
/// `Authorization` header; owned when a presigned `X-Amz-Credential` had to be percent-decoded.
/// The parts are offsets into the one string, so the scope is a slice too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    raw: Cow<'a, str>,
    key_end: usize,
    region_end: usize,
    service_end: usize,
}

impl<'a> Credential<'a> {
    /// Validates the shape: five '/'-separated parts, visible ASCII, non-empty key and region,
    /// an 8-digit date, service `s3`, terminator `aws4_request`. The region is checked against
    /// the server's in `verify`, and the date against the request's.
    pub fn parse(raw: Cow<'a, str>) -> Result<Credential<'a>, Malformed> {
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Malformed::BadCredential);
        }
        let mut parts = raw.split('/');
        let (Some(key), Some(date), Some(region), Some(service), Some(terminator), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed::BadCredential);
        };
        if key.is_empty() || region.is_empty() {
            return Err(Malformed::BadCredential);
        }
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Malformed::BadCredentialDate);
        }
        if service != SERVICE {
            return Err(Malformed::WrongService);
        }
        if terminator != SCOPE_TERMINATOR {
            return Err(Malformed::WrongTerminator);
        }
        let key_end = key.len();
        let region_end = key_end + 1 + date.len() + 1 + region.len();
        let service_end = region_end + 1 + service.len();
        Ok(Credential { raw, key_end, region_end, service_end })
    }

    /// The access key id: what the node looks the secret up by.
    pub fn access_key(&self) -> &str {
        &self.raw[..self.key_end]
    }

    /// `YYYYMMDD`.
    pub fn date(&self) -> &str {
        &self.raw[self.key_end + 1..self.key_end + 9]
    }

    /// The region the client signed for.
    pub fn region(&self) -> &str {
        &self.raw[self.key_end + 10..self.region_end]
    }

    /// Always `s3` (checked in `parse`).
    pub fn service(&self) -> &str {
        &self.raw[self.region_end + 1..self.service_end]
    }

    /// `YYYYMMDD/region/s3/aws4_request`: the credential scope of the string to sign.
    pub fn scope(&self) -> &str {
        &self.raw[self.key_end + 1..]
    }

    /// The whole credential, as given (decoded).
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// The `SignedHeaders` list, validated: lower-case header names, sorted, unique, `;`-separated,
/// including `host`. Kept as the one string because that string is also the canonical
/// request's signed-headers line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders<'a> {
    raw: Cow<'a, str>,
}

impl<'a> SignedHeaders<'a> {
    /// Validates the list. Sorted-and-unique is required, not fixed up: the list is signed as
    /// written, every SDK sends it sorted, and a sorted list makes the canonical header block
    /// a single pass.
    pub fn parse(raw: Cow<'a, str>) -> Result<SignedHeaders<'a>, Malformed> {
        let mut previous: Option<&str> = None;
        let mut has_host = false;
        for name in raw.split(';') {
            if name.is_empty() || !name.bytes().all(is_lower_tchar) {
                return Err(Malformed::BadSignedHeaders);
            }
            if previous.is_some_and(|p| p >= name) {
                return Err(Malformed::BadSignedHeaders);
            }
            has_host |= name == "host";
            previous = Some(name);
        }
        if !has_host {
            return Err(Malformed::SignedHeadersWithoutHost);
        }
        Ok(SignedHeaders { raw })
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.raw.split(';')
    }

    /// True when `name` (any case) is in the list.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
    }

    /// `host;range;x-amz-date`.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// RFC 9110 §5.6.2 tchar, upper-case letters excluded.
fn is_lower_tchar(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------------
// Parsing the two auth forms
// ---------------------------------------------------------------------------------------------

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    pub credential: Credential<'a>,
    pub signed_headers: SignedHeaders<'a>,
    /// The signature, decoded from its 64 hex digits.
    pub signature: [u8; 32],
}

/// The parsed SigV4 parameters of a presigned URL's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presigned<'a> {
    pub credential: Credential<'a>,
    /// `X-Amz-Date`.
    pub amz_date: AmzDate,
    /// `X-Amz-Expires`, 1..=`MAX_PRESIGNED_EXPIRES_S`.
    pub expires_s: u32,
    pub signed_headers: SignedHeaders<'a>,
    /// `X-Amz-Signature`, decoded from hex.
    pub signature: [u8; 32],
    /// `X-Amz-Content-Sha256`, when the URL carries one (validated in `verify`).
    pub content_sha256: Option<Cow<'a, str>>,
}

/// The signature of a request, in whichever form it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth<'a> {
    Header(AuthHeader<'a>),
    Presigned(Presigned<'a>),
}

impl<'a> Auth<'a> {
    /// Which form.
    pub fn form(&self) -> AuthForm {
        match self {
            Auth::Header(_) => AuthForm::Header,
            Auth::Presigned(_) => AuthForm::Query,
        }
    }

    /// The credential (access key and scope).
    pub fn credential(&self) -> &Credential<'a> {
        match self {
            Auth::Header(h) => &h.credential,
            Auth::Presigned(p) => &p.credential,
        }
    }

    /// The signed header list.
    pub fn signed_headers(&self) -> &SignedHeaders<'a> {
        match self {
            Auth::Header(h) => &h.signed_headers,
            Auth::Presigned(p) => &p.signed_headers,
        }
    }

    /// The signature given by the client.
    pub fn signature(&self) -> &[u8; 32] {
        match self {
            Auth::Header(h) => &h.signature,
            Auth::Presigned(p) => &p.signature,
        }
    }
}

/// Finds and parses the signature of a request: the `Authorization` header value (if any) and
/// the raw query (without '?').
///
/// `Ok(None)`: neither form is present, the request is anonymous. A query counts as presigned
/// when it has an `X-Amz-Algorithm`, `X-Amz-Credential` or `X-Amz-Signature` parameter, so a
/// half-presigned URL is an error, not an anonymous request. Both forms at once is
/// `MultipleAuthMechanisms`, as S3.
pub fn parse_auth<'a>(authorization: Option<&'a [u8]>, query: &'a [u8]) -> Result<Option<Auth<'a>>, SigV4Error> {
    let presigned = query_params(query).any(|(name, _)| {
        decode_percent(name)
            .is_some_and(|n| matches!(&*n, b"X-Amz-Algorithm" | b"X-Amz-Credential" | b"X-Amz-Signature"))
    });
    match (authorization, presigned) {
        (Some(_), true) => Err(SigV4Error::MultipleAuthMechanisms),
        (Some(value), false) => parse_authorization(value).map(|h| Some(Auth::Header(h))),
        (None, true) => parse_presigned(query).map(|p| Some(Auth::Presigned(p))),
        (None, false) => Ok(None),
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/s3/aws4_request,
/// SignedHeaders=<a;b;c>, Signature=<64 hex>`. One or more spaces after the algorithm;
/// components in any order, separated by ',' with optional spaces around it; each exactly once.
///
/// Another scheme is `UnsupportedAuthorizationType`; anything else wrong is
/// `HeaderMalformed` with the precise [`Malformed`] reason.
pub fn parse_authorization(value: &[u8]) -> Result<AuthHeader<'_>, SigV4Error> {
    let bad = SigV4Error::HeaderMalformed;
    let Ok(value) = std::str::from_utf8(value) else {
        return Err(if value.starts_with(ALGORITHM.as_bytes()) {
            bad(Malformed::BadEncoding)
        } else {
            SigV4Error::UnsupportedAuthorizationType
        });
    };
    let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAuthorizationType);
    }
    let rest = rest.trim_matches(' ');
    if rest.is_empty() {
        return Err(bad(Malformed::MissingCredential));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for component in rest.split(',') {
        let (name, value) = component.trim_matches(' ').split_once('=').ok_or(bad(Malformed::BadSyntax))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            "" => return Err(bad(Malformed::BadSyntax)),
            _ => return Err(bad(Malformed::UnknownComponent)),
        };
        if slot.replace(value).is_some() {
            return Err(bad(Malformed::Duplicate));
        }
    }
    let credential = credential.ok_or(bad(Malformed::MissingCredential))?;
    let signed_headers = signed_headers.ok_or(bad(Malformed::MissingSignedHeaders))?;
    let signature = signature.ok_or(bad(Malformed::MissingSignature))?;
    Ok(AuthHeader {
        credential: Credential::parse(Cow::Borrowed(credential)).map_err(bad)?,
        signed_headers: SignedHeaders::parse(Cow::Borrowed(signed_headers)).map_err(bad)?,
        signature: decode_hex32(signature.as_bytes()).ok_or(bad(Malformed::BadSignature))?,
    })
}

/// Parses the SigV4 parameters of a presigned URL from the raw query (without '?'):
/// `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
/// `X-Amz-SignedHeaders`, `X-Amz-Signature` (all required, each once, names case-sensitive as
/// S3), and `X-Amz-Content-Sha256` (optional). Values are percent-decoded ('+' stays '+').
/// Other parameters are ignored here (they are signed as part of the canonical query).
pub fn parse_presigned<'a>(query: &'a [u8]) -> Result<Presigned<'a>, SigV4Error> {
    let bad = SigV4Error::QueryMalformed;
    let mut slots: [Option<&'a [u8]>; 7] = [None; 7];
    const NAMES: [&[u8]; 7] = [
        b"X-Amz-Algorithm",
        b"X-Amz-Credential",
        b"X-Amz-Date",
        b"X-Amz-Expires",
        b"X-Amz-SignedHeaders",
        b"X-Amz-Signature",
        b"X-Amz-Content-Sha256",
    ];
    for (name, value) in query_params(query) {
        // A name with bad percent-encoding is not an auth parameter; the canonical query
        // refuses it later (InvalidUriEncoding).
        let Some(name) = decode_percent(name) else { continue };
        if let Some(i) = NAMES.iter().position(|n| *n == &*name) {
            if slots[i].replace(value).is_some() {
                return Err(bad(Malformed::Duplicate));
            }
        }
    }
    let [algorithm, credential, date, expires, signed_headers, signature, content_sha256] = slots;
    let required = |slot: Option<&'a [u8]>, missing: Malformed| -> Result<Cow<'a, str>, SigV4Error> {
        decode_percent_str(slot.ok_or(bad(missing))?).ok_or(bad(Malformed::BadEncoding))
    };
    // Algorithm first: a URL signed some other way is told so, not that a parameter is missing.
    if required(algorithm, Malformed::MissingAlgorithm)? != ALGORITHM {
        return Err(bad(Malformed::UnsupportedAlgorithm));
    }
    let credential = required(credential, Malformed::MissingCredential)?;
    let signature = required(signature, Malformed::MissingSignature)?;
    let date = required(date, Malformed::MissingDate)?;
    let signed_headers = required(signed_headers, Malformed::MissingSignedHeaders)?;
    let expires = required(expires, Malformed::MissingExpires)?;
    let content_sha256 = match content_sha256 {
        Some(raw) => Some(decode_percent_str(raw).ok_or(bad(Malformed::BadEncoding))?),
        None => None,
    };
    Ok(Presigned {
        credential: Credential::parse(credential).map_err(bad)?,
        amz_date: AmzDate::parse(&date).ok_or(bad(Malformed::BadDate))?,
        expires_s: parse_expires(&expires).map_err(bad)?,
        signed_headers: SignedHeaders::parse(signed_headers).map_err(bad)?,
        signature: decode_hex32(signature.as_bytes()).ok_or(bad(Malformed::BadSignature))?,
        content_sha256,
    })
}

/// `X-Amz-Expires`: plain decimal digits, 1..=`MAX_PRESIGNED_EXPIRES_S`.
fn parse_expires(s: &str) -> Result<u32, Malformed> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed::BadExpires);
    }
    // All digits, so a parse failure can only be overflow: certainly more than a week.
    let seconds = s.parse::<u32>().map_err(|_| Malformed::ExpiresTooLarge)?;
    match seconds {
        0 => Err(Malformed::BadExpires),
        s if s > MAX_PRESIGNED_EXPIRES_S => Err(Malformed::ExpiresTooLarge),
        s => Ok(s),
    }
}

/// The `name=value` pieces of a raw query, still encoded; a piece without '=' has an empty
/// value (`acl` -> `("acl", "")`); empty pieces (`a&&b`) are skipped.
fn query_params(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.split(|&b| b == b'&').filter(|piece| !piece.is_empty()).map(|piece| {
        match piece.iter().position(|&b| b == b'=') {
            Some(eq) => (&piece[..eq], &piece[eq + 1..]),
            None => (piece, &b""[..]),
        }
    })
}

/// Strict percent-decoding: `None` when a '%' is not followed by two hex digits. '+' is kept.
fn decode_percent(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'%') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            out.push(decode_hex_pair(raw.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

/// `decode_percent`, then UTF-8.
fn decode_percent_str(raw: &[u8]) -> Option<Cow<'_, str>> {
    match decode_percent(raw)? {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
    }
}

// ---------------------------------------------------------------------------------------------
// Canonical request, string to sign, keys
// ---------------------------------------------------------------------------------------------

/// The plain request parts `verify` needs, as the node's parser delivers them.
///
/// `H` is the header name/value type: `&[u8]` from the node's read buffer, `&str` in tests.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a, H = &'a [u8]> {
    /// `GET`, `PUT`, ... as on the wire.
    pub method: &'a str,
    /// The request-target's path, raw (still percent-encoded), without the query.
    pub path: &'a [u8],
    /// The raw query, without '?'; empty when there is none.
    pub query: &'a [u8],
    /// Every header field in wire order, names in any case, values with surrounding
    /// whitespace removed or not (it is trimmed here anyway).
    pub headers: &'a [(H, H)],
}

/// Everything that goes into a canonical request.
#[derive(Clone, Copy, Debug)]
pub struct CanonicalRequest<'a, H = &'a [u8]> {
    pub method: &'a str,
    /// Raw path, as received.
    pub path: &'a [u8],
    /// Raw query, as received (without '?').
    pub query: &'a [u8],
    pub headers: &'a [(H, H)],
    pub signed_headers: &'a SignedHeaders<'a>,
    /// The payload line, verbatim (`UNSIGNED-PAYLOAD`, `STREAMING-...`, or 64 hex digits).
    pub payload_hash: &'a str,
    /// `Query` leaves the `X-Amz-Signature` parameter out of the canonical query.
    pub form: AuthForm,
}

/// The canonical request text, per the rules in the module doc. Bytes rather than a `String`:
/// header values may carry obs-text (non-UTF-8 bytes), and they are signed as they are.
/// `verify` streams the same text into SHA-256 instead of building it.
pub fn canonical_request<H: AsRef<[u8]>>(request: &CanonicalRequest<'_, H>) -> Result<Vec<u8>, SigV4Error> {
    let mut out = Vec::with_capacity(256);
    write_canonical_request(&mut out, request)?;
    Ok(out)
}

/// `AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex(sha256(canonical_request))>`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    let hash = hex32(&Sha256::digest(canonical_request).into());
    let mut out = Vec::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    write_string_to_sign(&mut out, amz_date, scope, &hash);
    // Built from `&str`s and ASCII hex only.
    String::from_utf8(out).unwrap_or_default()
}

/// The signing key: HMAC chain `"AWS4"+secret` -> date -> region -> service -> `aws4_request`.
/// It depends only on the secret and the scope, so a caller may cache it per key and day.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac_sha256(&k_secret, date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes())
}

/// HMAC-SHA256 of the string to sign with the signing key: the signature, as bytes
/// ([`to_hex`] gives the 64 lower-case hex digits clients send).
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> [u8; 32] {
    hmac_sha256(key, string_to_sign.as_bytes())
}

/// SHA-256 of `data` as 64 lower-case hex digits (an `x-amz-content-sha256` value).
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Lower-case hex of any bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX_LOWER[usize::from(b >> 4)]));
        out.push(char::from(HEX_LOWER[usize::from(b & 0xf)]));
    }
    out
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (RFC 2104 §2: longer keys are hashed); `new_from_slice`
    // only fails for MACs with a fixed key size.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Where canonical text goes: a buffer (to show it) or a hash or MAC (to sign it). One writer
/// for all three, so the text a test prints and the hash `verify` signs cannot disagree.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for HmacSha256 {
    fn put(&mut self, bytes: &[u8]) {
        Mac::update(self, bytes);
    }
}

fn write_canonical_request<H: AsRef<[u8]>>(out: &mut impl Sink, r: &CanonicalRequest<'_, H>) -> Result<(), SigV4Error> {
    out.put(r.method.as_bytes());
    out.put(b"\n");
    if r.path.is_empty() {
        out.put(b"/");
    } else {
        write_uri_encoded(out, r.path, true)?;
    }
    out.put(b"\n");
    write_canonical_query(out, r.query, r.form)?;
    out.put(b"\n");
    for name in r.signed_headers.iter() {
        out.put(name.as_bytes());
        out.put(b":");
        let values = r.headers.iter().filter(|(n, _)| n.as_ref().eq_ignore_ascii_case(name.as_bytes()));
        for (i, (_, value)) in values.enumerate() {
            if i > 0 {
                out.put(b",");
            }
            write_trimmed(out, value.as_ref());
        }
        out.put(b"\n");
    }
    out.put(b"\n");
    out.put(r.signed_headers.as_str().as_bytes());
    out.put(b"\n");
    out.put(r.payload_hash.as_bytes());
    Ok(())
}

/// Canonical query: pairs encoded, sorted by name then value, joined with '&'.
fn write_canonical_query(out: &mut impl Sink, query: &[u8], form: AuthForm) -> Result<(), SigV4Error> {
    if query.is_empty() {
        return Ok(());
    }
    // The sort is on the encoded forms, so they are built first: one small Vec per signed
    // request with a query (a listing's `list-type=2&prefix=..`: a handful of pairs).
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (name, value) in query_params(query) {
        let mut encoded_name = Vec::with_capacity(name.len());
        write_uri_encoded(&mut encoded_name, name, false)?;
        // Compared in canonical form, so `X%2DAmz-Signature` is recognised too.
        if form == AuthForm::Query && encoded_name == SIGNATURE_PARAM.as_bytes() {
            continue;
        }
        let mut encoded_value = Vec::with_capacity(value.len());
        write_uri_encoded(&mut encoded_value, value, false)?;
        pairs.push((encoded_name, encoded_value));
    }
    pairs.sort_unstable();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(name);
        out.put(b"=");
        out.put(value);
    }
    Ok(())
}

/// AWS "URI-encode": unreserved bytes `A-Za-z0-9-._~` as they are, every other byte `%XX`
/// (upper-case hex). Escapes in `raw` are decoded first, so `%7e` becomes `~` and `$` becomes
/// `%24`: any spelling of a path or query gives one canonical form. With `keep_slash`, a
/// literal '/' (a path separator) stays; an escaped one (`%2F`, part of a segment) stays
/// escaped.
fn write_uri_encoded(out: &mut impl Sink, raw: &[u8], keep_slash: bool) -> Result<(), SigV4Error> {
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let (byte, literal) = if b == b'%' {
            let byte = raw.get(i + 1..i + 3).and_then(decode_hex_pair).ok_or(SigV4Error::InvalidUriEncoding)?;
            i += 3;
            (byte, false)
        } else {
            i += 1;
            (b, true)
        };
        if is_unreserved(byte) || (keep_slash && literal && byte == b'/') {
            out.put(&[byte]);
        } else {
            out.put(&[b'%', HEX_UPPER[usize::from(byte >> 4)], HEX_UPPER[usize::from(byte & 0xf)]]);
        }
    }
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// A header value with leading and trailing SP/HTAB removed and inner runs collapsed to one SP
/// (AWS "Trimall"; botocore and the Java SDK collapse tabs too).
fn write_trimmed(out: &mut impl Sink, value: &[u8]) {
    let words = value.split(|&b| b == b' ' || b == b'\t').filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        if i > 0 {
            out.put(b" ");
        }
        out.put(word);
    }
}

fn write_string_to_sign(out: &mut impl Sink, amz_date: &str, scope: &str, canonical_hash_hex: &[u8; 64]) {
    write_lines(out, &[ALGORITHM.as_bytes(), amz_date.as_bytes(), scope.as_bytes(), canonical_hash_hex]);
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex32(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_LOWER[usize::from(b >> 4)];
        pair[1] = HEX_LOWER[usize::from(b & 0xf)];
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_hex_pair(pair: &[u8]) -> Option<u8> {
    match pair {
        &[hi, lo] => Some(hex_digit(hi)? << 4 | hex_digit(lo)?),
        _ => None,
    }
}

/// 64 hex digits (either case) -> 32 bytes.
fn decode_hex32(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = decode_hex_pair(pair)?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Payload hash
// ---------------------------------------------------------------------------------------------

/// What `x-amz-content-sha256` (or a presigned URL's default) says about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadHash {
    /// `UNSIGNED-PAYLOAD`: nothing to check.
    Unsigned,
    /// 64 hex digits: the body must hash to this ([`PayloadHasher`]).
    Sha256([u8; 32]),
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: `aws-chunked`, every chunk signed.
    StreamingSigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: as above, plus a signed trailer.
    StreamingSignedTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: `aws-chunked` with a trailer, no signatures (the
    /// trailer's checksum is the integrity check).
    StreamingUnsignedTrailer,
}

impl PayloadHash {
    /// Parses an `x-amz-content-sha256` value. SigV4a's `STREAMING-AWS4-ECDSA-P256-SHA256-*`
    /// and anything else unknown is `InvalidContentSha256`.
    pub fn parse(value: &str) -> Result<PayloadHash, SigV4Error> {
        Ok(match value {
            UNSIGNED_PAYLOAD => PayloadHash::Unsigned,
            STREAMING_PAYLOAD => PayloadHash::StreamingSigned,
            STREAMING_PAYLOAD_TRAILER => PayloadHash::StreamingSignedTrailer,
            STREAMING_UNSIGNED_PAYLOAD_TRAILER => PayloadHash::StreamingUnsignedTrailer,
            hex => PayloadHash::Sha256(decode_hex32(hex.as_bytes()).ok_or(SigV4Error::InvalidContentSha256)?),
        })
    }

    /// True for the `aws-chunked` bodies (the `STREAMING-*` values).
    pub fn is_streaming(self) -> bool {
        matches!(
            self,
            PayloadHash::StreamingSigned | PayloadHash::StreamingSignedTrailer | PayloadHash::StreamingUnsignedTrailer
        )
    }

    /// True when every chunk carries a signature ([`ChunkSigner`]).
    pub fn has_signed_chunks(self) -> bool {
        matches!(self, PayloadHash::StreamingSigned | PayloadHash::StreamingSignedTrailer)
    }

    /// True when the `aws-chunked` body ends in a trailer.
    pub fn has_trailer(self) -> bool {
        matches!(self, PayloadHash::StreamingSignedTrailer | PayloadHash::StreamingUnsignedTrailer)
    }
}

/// Hashes a body as it streams past and checks it against a hex `x-amz-content-sha256` at the
/// end. The body is not authentic until `finish` says so: the node must not commit it before.
#[derive(Clone, Debug)]
pub struct PayloadHasher {
    hasher: Sha256,
    expected: [u8; 32],
}

impl PayloadHasher {
    /// A hasher expecting `expected` (the decoded `x-amz-content-sha256`).
    pub fn new(expected: [u8; 32]) -> PayloadHasher {
        PayloadHasher { hasher: Sha256::new(), expected }
    }

    /// Feeds the next bytes of the body.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
    }

    /// `Ok` when the body hashed to the expected value; `ContentSha256Mismatch` otherwise.
    /// (A plain compare: the expected hash is public, sent by the client.)
    pub fn finish(self) -> Result<(), SigV4Error> {
        let actual: [u8; 32] = self.hasher.finalize().into();
        if actual == self.expected {
            Ok(())
        } else {
            Err(SigV4Error::ContentSha256Mismatch)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// A request whose signature checked out, and what its body still owes.
#[derive(Debug)]
pub struct Verified {
    /// What `x-amz-content-sha256` promised; the node must enforce it on the body.
    pub payload: PayloadHash,
    /// For `STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`: the chain of chunk signatures,
    /// seeded with the request's signature. `None` for every other payload.
    pub chunk_signer: Option<ChunkSigner>,
}

impl Verified {
    /// A hasher for the body when `payload` is a hex SHA-256; `None` otherwise.
    pub fn payload_hasher(&self) -> Option<PayloadHasher> {
        match self.payload {
            PayloadHash::Sha256(expected) => Some(PayloadHasher::new(expected)),
            _ => None,
        }
    }
}

/// Checks a request's SigV4 signature.
///
/// `secret` is the secret key of `auth.credential().access_key()`; `expected_region` the
/// region this server answers for; `now` the server's clock. Checks, in order (so the error
/// names the first problem a client should fix):
/// 1. the scope's region is `expected_region` (`Malformed::WrongRegion`);
/// 2. header form: the request time from `x-amz-date`, else `Date` (`MissingDate`); the scope
///    date is its date (`Malformed::DateMismatch`); within `MAX_CLOCK_SKEW` of `now`
///    (`RequestTimeTooSkewed`); `x-amz-content-sha256` present (`MissingContentSha256`);
///    query form: the scope date is `X-Amz-Date`'s; `X-Amz-Date` is not more than
///    `MAX_CLOCK_SKEW` ahead (`RequestNotYetValid`); `now <= X-Amz-Date + X-Amz-Expires`
///    (`RequestExpired`);
/// 3. the payload hash is a known value (`InvalidContentSha256`);
/// 4. every `x-amz-*` header is signed (`HeadersNotSigned`);
/// 5. the signature, compared in constant time (`SignatureDoesNotMatch`).
pub fn verify<H: AsRef<[u8]>>(
    auth: &Auth<'_>,
    request: &Request<'_, H>,
    secret: &str,
    expected_region: &str,
    now: SystemTime,
) -> Result<Verified, SigV4Error> {
    let form = auth.form();
    let credential = auth.credential();
    let signed_headers = auth.signed_headers();
    if credential.region() != expected_region {
        return Err(form.malformed(Malformed::WrongRegion));
    }

    let (amz_date, payload_text): (AmzDate, Cow<'_, str>) = match auth {
        Auth::Header(_) => {
            let amz_date = request_time(request.headers)?;
            if credential.date() != amz_date.date() {
                return Err(form.malformed(Malformed::DateMismatch));
            }
            if distance(now, amz_date.to_system_time()) > MAX_CLOCK_SKEW {
                return Err(SigV4Error::RequestTimeTooSkewed);
            }
            let payload = match single_header(request.headers, b"x-amz-content-sha256") {
                Single::None => return Err(SigV4Error::MissingContentSha256),
                Single::Many => return Err(SigV4Error::InvalidContentSha256),
                Single::One(value) => value,
            };
            (amz_date, Cow::Borrowed(std::str::from_utf8(payload).map_err(|_| SigV4Error::InvalidContentSha256)?))
        }
        Auth::Presigned(p) => {
            if credential.date() != p.amz_date.date() {
                return Err(form.malformed(Malformed::DateMismatch));
            }
            let signed_at = p.amz_date.to_system_time();
            if signed_at > now + MAX_CLOCK_SKEW {
                return Err(SigV4Error::RequestNotYetValid);
            }
            if now > signed_at + Duration::from_secs(u64::from(p.expires_s)) {
                return Err(SigV4Error::RequestExpired);
            }
            // The URL's own X-Amz-Content-Sha256, else a (then necessarily signed, see step 4)
            // header, else UNSIGNED-PAYLOAD: as botocore presigns and MinIO verifies.
            let payload = match (&p.content_sha256, single_header(request.headers, b"x-amz-content-sha256")) {
                (Some(value), _) => Cow::Borrowed(&**value),
                (None, Single::None) => Cow::Borrowed(UNSIGNED_PAYLOAD),
                (None, Single::Many) => return Err(SigV4Error::InvalidContentSha256),
                (None, Single::One(value)) => {
                    Cow::Borrowed(std::str::from_utf8(value).map_err(|_| SigV4Error::InvalidContentSha256)?)
                }
            };
            (p.amz_date, payload)
        }
    };
    let payload = PayloadHash::parse(&payload_text)?;

    let has_unsigned_amz_header = request.headers.iter().any(|(name, _)| {
        let name = name.as_ref();
        name.get(..6).is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"x-amz-")) && !signed_headers.contains(name)
    });
    if has_unsigned_amz_header {
        return Err(SigV4Error::HeadersNotSigned);
    }

    let key = signing_key(secret, credential.date(), credential.region(), credential.service());
    let mut canonical = Sha256::new();
    write_canonical_request(
        &mut canonical,
        &CanonicalRequest {
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            signed_headers,
            payload_hash: &payload_text,
            form,
        },
    )?;
    let mut mac = new_mac(&key);
    write_string_to_sign(&mut mac, amz_date.as_str(), credential.scope(), &hex32(&canonical.finalize().into()));
    // `verify_slice` compares in constant time (the `subtle` crate, inside `digest`).
    mac.verify_slice(auth.signature()).map_err(|_| SigV4Error::SignatureDoesNotMatch)?;

    let chunk_signer = payload
        .has_signed_chunks()
        .then(|| ChunkSigner::new(key, credential.scope(), amz_date, *auth.signature(), payload.has_trailer()));
    Ok(Verified { payload, chunk_signer })
}

/// Header form: the request time, from `x-amz-date` (which wins) or `Date`. Missing, repeated
/// or invalid is `MissingDate`, S3's "requires a valid Date or x-amz-date header".
fn request_time<H: AsRef<[u8]>>(headers: &[(H, H)]) -> Result<AmzDate, SigV4Error> {
    let as_str = |v: &[u8]| std::str::from_utf8(v).ok().map(|s| s.trim_matches([' ', '\t']).to_owned());
    let parsed = match single_header(headers, b"x-amz-date") {
        Single::One(v) => as_str(v).and_then(|s| AmzDate::parse(&s)),
        Single::Many => None,
        Single::None => match single_header(headers, b"date") {
            Single::One(v) => as_str(v).and_then(|s| AmzDate::from_http_date(&s)),
            _ => None,
        },
    };
    parsed.ok_or(SigV4Error::MissingDate)
}

enum Single<'a> {
    None,
    One(&'a [u8]),
    Many,
}

/// The value of the one header named `name` (lower-case), trimmed of SP/HTAB.
fn single_header<'h, H: AsRef<[u8]>>(headers: &'h [(H, H)], name: &[u8]) -> Single<'h> {
    let mut found = Single::None;
    for (n, v) in headers {
        if n.as_ref().eq_ignore_ascii_case(name) {
            if !matches!(found, Single::None) {
                return Single::Many;
            }
            found = Single::One(trim_ows(v.as_ref()));
        }
    }
    found
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// |a - b|.
fn distance(a: SystemTime, b: SystemTime) -> Duration {
    a.duration_since(b).unwrap_or_else(|e| e.duration())
}

// ---------------------------------------------------------------------------------------------
// aws-chunked chunk signatures
// ---------------------------------------------------------------------------------------------

/// The chain of signatures of an `aws-chunked` body
/// (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html>).
///
/// Each chunk's signature is HMAC(signing key, string to sign) with the string to sign
/// `AWS4-HMAC-SHA256-PAYLOAD\n<amz date>\n<scope>\n<previous signature>\n<sha256("")>\n
/// <sha256(chunk data)>`; the first "previous" is the request's (seed) signature. The body ends
/// with an empty chunk, which is signed too; for `-TRAILER` bodies a trailer follows, signed
/// with `AWS4-HMAC-SHA256-TRAILER\n<amz date>\n<scope>\n<previous>\n<sha256(trailer)>`.
///
/// Streaming use: per chunk, `update` with each piece of its data as it arrives, then
/// `finish_chunk` with the signature from its `size;chunk-signature=...` line (nothing is
/// buffered here: the data only passes through SHA-256). `verify_chunk` is both in one call.
/// After a failure every call fails (`ChunkOutOfSequence`): the upload must be abandoned.
pub struct ChunkSigner {
    key: [u8; 32],
    scope: String,
    amz_date: AmzDate,
    previous: [u8; 32],
    chunk: Sha256,
    chunk_bytes: u64,
    expects_trailer: bool,
    state: ChunkState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Expecting data chunks (the final empty one not seen yet).
    Data,
    /// The final chunk was verified; a trailer is expected.
    AwaitingTrailer,
    /// Every signature of the body verified.
    Complete,
    /// A check failed, or a call came out of order; nothing more is accepted.
    Failed,
}

impl ChunkSigner {
    /// A chain starting from `seed_signature` (the request's). `scope` is
    /// `YYYYMMDD/region/s3/aws4_request`; `expects_trailer` for the `-TRAILER` payload.
    /// [`verify`] builds this for the node; tests and other callers can build it directly.
    pub fn new(
        key: [u8; 32],
        scope: &str,
        amz_date: AmzDate,
        seed_signature: [u8; 32],
        expects_trailer: bool,
    ) -> ChunkSigner {
        ChunkSigner {
            key,
            scope: scope.to_owned(),
            amz_date,
            previous: seed_signature,
            chunk: Sha256::new(),
            chunk_bytes: 0,
            expects_trailer,
            state: ChunkState::Data,
        }
    }

    /// Feeds the next piece of the current chunk's data (any split gives the same result).
    pub fn update(&mut self, data: &[u8]) {
        if self.state == ChunkState::Data {
            self.chunk.update(data);
            self.chunk_bytes = self.chunk_bytes.saturating_add(data.len() as u64);
        }
    }

    /// Ends the current chunk: checks `given_signature_hex` (its 64 hex digits) against the
    /// data fed since the last chunk ended. A chunk of no data is the final one.
    pub fn finish_chunk(&mut self, given_signature_hex: &[u8]) -> Result<(), SigV4Error> {
        if self.state != ChunkState::Data {
            return self.fail(SigV4Error::ChunkOutOfSequence);
        }
        let data_hash = hex32(&std::mem::take(&mut self.chunk).finalize().into());
        let is_final = std::mem::take(&mut self.chunk_bytes) == 0;
        let Some(given) = decode_hex32(given_signature_hex) else {
            return self.fail(SigV4Error::ChunkSignatureDoesNotMatch);
        };
        let mut mac = new_mac(&self.key);
        let previous = hex32(&self.previous);
        let lines: [&[u8]; 6] = [
            CHUNK_ALGORITHM.as_bytes(),
            self.amz_date.as_str().as_bytes(),
            self.scope.as_bytes(),
            &previous,
            EMPTY_SHA256_HEX.as_bytes(),
            &data_hash,
        ];
        write_lines(&mut mac, &lines);
        if mac.verify_slice(&given).is_err() {
            return self.fail(SigV4Error::ChunkSignatureDoesNotMatch);
        }
        // Equal to the computed one (just checked), so the chain continues from it.
        self.previous = given;
        if is_final {
            self.state = if self.expects_trailer { ChunkState::AwaitingTrailer } else { ChunkState::Complete };
        }
        Ok(())
    }

    /// `update(data)` then `finish_chunk(given_signature_hex)`.
    pub fn verify_chunk(&mut self, data: &[u8], given_signature_hex: &[u8]) -> Result<(), SigV4Error> {
        self.update(data);
        self.finish_chunk(given_signature_hex)
    }

    /// Checks the trailer signature (`x-amz-trailer-signature`) of a `-TRAILER` body, after the
    /// final chunk. `trailers` are the trailer fields as received; an
    /// `x-amz-trailer-signature` among them is skipped. What is signed is each field as
    /// `lower-case name:trimmed value\n`, sorted by name (SDKs send them sorted, so this is
    /// also their wire order).
    pub fn verify_trailer<H: AsRef<[u8]>>(
        &mut self,
        trailers: &[(H, H)],
        given_signature_hex: &[u8],
    ) -> Result<(), SigV4Error> {
        if self.state != ChunkState::AwaitingTrailer {
            return self.fail(SigV4Error::ChunkOutOfSequence);
        }
        let Some(given) = decode_hex32(given_signature_hex) else {
            return self.fail(SigV4Error::ChunkSignatureDoesNotMatch);
        };
        let mut fields: Vec<(&[u8], &[u8])> = trailers
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .filter(|(n, _)| !n.eq_ignore_ascii_case(TRAILER_SIGNATURE_FIELD.as_bytes()))
            .collect();
        fields.sort_by(|a, b| a.0.iter().map(u8::to_ascii_lowercase).cmp(b.0.iter().map(u8::to_ascii_lowercase)));
        let mut canonical = Sha256::new();
        for (name, value) in fields {
            canonical.put(&name.to_ascii_lowercase());
            canonical.put(b":");
            write_trimmed(&mut canonical, value);
            canonical.put(b"\n");
        }
        let trailer_hash = hex32(&canonical.finalize().into());
        let previous = hex32(&self.previous);
        let mut mac = new_mac(&self.key);
        let lines: [&[u8]; 5] = [
            TRAILER_ALGORITHM.as_bytes(),
            self.amz_date.as_str().as_bytes(),
            self.scope.as_bytes(),
            &previous,
            &trailer_hash,
        ];
        write_lines(&mut mac, &lines);
        if mac.verify_slice(&given).is_err() {
            return self.fail(SigV4Error::ChunkSignatureDoesNotMatch);
        }
        self.previous = given;
        self.state = ChunkState::Complete;
        Ok(())
    }

    /// True once every signature of the body verified: the final chunk, and the trailer when
    /// one is expected. Until then the body is not authentic.
    pub fn is_complete(&self) -> bool {
        self.state == ChunkState::Complete
    }

    /// True when the final (empty) chunk has been verified.
    pub fn is_final_chunk_seen(&self) -> bool {
        matches!(self.state, ChunkState::AwaitingTrailer | ChunkState::Complete)
    }

    /// The last verified signature (the seed before any chunk).
    pub fn previous_signature(&self) -> [u8; 32] {
        self.previous
    }

    fn fail(&mut self, error: SigV4Error) -> Result<(), SigV4Error> {
        self.state = ChunkState::Failed;
        Err(error)
    }
}

impl fmt::Debug for ChunkSigner {
    // The signing key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSigner")
            .field("scope", &self.scope)
            .field("amz_date", &self.amz_date)
            .field("previous", &to_hex(&self.previous))
            .field("chunk_bytes", &self.chunk_bytes)
            .field("expects_trailer", &self.expects_trailer)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn write_lines(out: &mut impl Sink, lines: &[&[u8]]) {
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.put(b"\n");
        }
        out.put(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_query(query: &str, form: AuthForm) -> Result<String, SigV4Error> {
        let mut out = Vec::new();
        write_canonical_query(&mut out, query.as_bytes(), form)?;
        Ok(String::from_utf8(out).expect("ASCII"))
    }

    fn canonical_path(path: &str) -> Result<String, SigV4Error> {
        let mut out = Vec::new();
        write_uri_encoded(&mut out, path.as_bytes(), true)?;
        Ok(String::from_utf8(out).expect("ASCII"))
    }

    #[test]
    fn query_empty_values_and_order() {
        let q = |s| canonical_query(s, AuthForm::Header).expect(s);
        assert_eq!(q("acl"), "acl=");
        assert_eq!(q("acl="), "acl=");
        assert_eq!(q(""), "");
        assert_eq!(q("b=2&a=1"), "a=1&b=2");
        // Repeated names sorted by value.
        assert_eq!(q("k=b&k=a&k=c&j=z"), "j=z&k=a&k=b&k=c");
        assert_eq!(q("k=&k"), "k=&k=");
        // Empty pieces are dropped.
        assert_eq!(q("a=1&&b=2&"), "a=1&b=2");
        // Only the first '=' splits.
        assert_eq!(q("a=b=c"), "a=b%3Dc");
        // Sorted by the encoded name, byte order: upper case before lower case, '%' before letters.
        assert_eq!(q("b=1&B=1&a%20b=1&a-b=1"), "B=1&a%20b=1&a-b=1&b=1");
    }

    #[test]
    fn query_encoding() {
        let q = |s| canonical_query(s, AuthForm::Header).expect(s);
        // Space is %20 whatever the client sent; '+' is a literal plus, never a space.
        assert_eq!(q("prefix=a%20b"), "prefix=a%20b");
        assert_eq!(q("prefix=a+b"), "prefix=a%2Bb");
        assert_eq!(q("prefix=a%2Bb"), "prefix=a%2Bb");
        // '*' encoded, '~' not (even when sent encoded), '/' encoded in the query.
        assert_eq!(q("p=a*b~c"), "p=a%2Ab~c");
        assert_eq!(q("p=%7e%2a"), "p=~%2A");
        assert_eq!(q("p=a/b"), "p=a%2Fb");
        // Lower-case escapes become upper-case; unreserved escapes are decoded.
        assert_eq!(q("p=%2f%41"), "p=%2FA");
        // UTF-8 and raw non-ASCII bytes.
        assert_eq!(q("p=caf%C3%A9"), "p=caf%C3%A9");
        assert_eq!(q("p=caf\u{e9}"), "p=caf%C3%A9");
        // Names are encoded the same way.
        assert_eq!(q("a b=1&x*=2"), "a%20b=1&x%2A=2");
        for bad in ["p=%", "p=%2", "p=%zz", "p%=1", "p=%%20"] {
            assert_eq!(canonical_query(bad, AuthForm::Header), Err(SigV4Error::InvalidUriEncoding), "{bad}");
        }
    }

    #[test]
    fn query_signature_parameter_only_left_out_for_presigned() {
        let query = "X-Amz-Signature=abc&a=1&X-Amz-Date=20130524T000000Z";
        assert_eq!(canonical_query(query, AuthForm::Query).unwrap(), "X-Amz-Date=20130524T000000Z&a=1");
        assert_eq!(
            canonical_query(query, AuthForm::Header).unwrap(),
            "X-Amz-Date=20130524T000000Z&X-Amz-Signature=abc&a=1"
        );
        // Recognised in any spelling, but only with its exact case.
        assert_eq!(canonical_query("X%2DAmz-Signature=abc&a=1", AuthForm::Query).unwrap(), "a=1");
        assert_eq!(canonical_query("x-amz-signature=abc", AuthForm::Query).unwrap(), "x-amz-signature=abc");
    }

    #[test]
    fn path_is_canonically_encoded_not_normalised() {
        let p = |s| canonical_path(s).expect(s);
        assert_eq!(p("/test.txt"), "/test.txt");
        assert_eq!(p("/test$file.text"), "/test%24file.text");
        assert_eq!(p("/test%24file.text"), "/test%24file.text");
        // Not double-encoded, and escapes of unreserved bytes decoded.
        assert_eq!(p("/a%20b"), "/a%20b");
        assert_eq!(p("/%7Ea%2e"), "/~a.");
        // Not normalised: dot segments and empty segments stay.
        assert_eq!(p("/a/../b/./c//d/"), "/a/../b/./c//d/");
        // A literal '/' separates; an escaped one is part of a segment and stays escaped.
        assert_eq!(p("/a%2Fb/c"), "/a%2Fb/c");
        assert_eq!(p("/a%2fb"), "/a%2Fb");
        assert_eq!(p("/a b+c*d"), "/a%20b%2Bc%2Ad");
        assert_eq!(p("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(canonical_path("/a%2"), Err(SigV4Error::InvalidUriEncoding));
    }

    #[test]
    fn canonical_headers_trim_collapse_and_join() {
        let signed = SignedHeaders::parse("host;x-amz-meta-a;x-amz-meta-b".into()).unwrap();
        let headers = [
            ("Host", " example.com\t"),
            ("X-Amz-Meta-A", "  one   two\t\tthree  "),
            ("x-amz-meta-b", "first"),
            ("User-Agent", "ignored"),
            ("X-AMZ-META-B", " second "),
        ];
        let text = canonical_request(&CanonicalRequest {
            method: "GET",
            path: b"",
            query: b"",
            headers: &headers,
            signed_headers: &signed,
            payload_hash: UNSIGNED_PAYLOAD,
            form: AuthForm::Header,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "GET\n/\n\nhost:example.com\nx-amz-meta-a:one two three\nx-amz-meta-b:first,second\n\n\
             host;x-amz-meta-a;x-amz-meta-b\nUNSIGNED-PAYLOAD"
        );
    }

    #[test]
    fn signed_headers_rules() {
        let parse = |s: &'static str| SignedHeaders::parse(s.into());
        assert!(parse("host").is_ok());
        assert!(parse("content-md5;host;x-amz-date").is_ok());
        assert_eq!(parse("range;x-amz-date"), Err(Malformed::SignedHeadersWithoutHost));
        for bad in ["", ";", "host;", ";host", "Host", "host;host", "x-amz-date;host", "host;a b", "host;a:b"] {
            assert_eq!(parse(bad), Err(Malformed::BadSignedHeaders), "{bad:?}");
        }
        let signed = parse("host;x-amz-date").unwrap();
        assert!(signed.contains(b"X-Amz-Date"));
        assert!(!signed.contains(b"x-amz-dat"));
        assert_eq!(signed.iter().collect::<Vec<_>>(), ["host", "x-amz-date"]);
    }

    #[test]
    fn credential_parts() {
        let c = Credential::parse("AKID/20130524/eu-west-1/s3/aws4_request".into()).unwrap();
        assert_eq!(
            (c.access_key(), c.date(), c.region(), c.service(), c.scope()),
            ("AKID", "20130524", "eu-west-1", "s3", "20130524/eu-west-1/s3/aws4_request")
        );
        let parse = |s: &'static str| Credential::parse(s.into());
        assert_eq!(parse("AKID/20130524/us-east-1/s3"), Err(Malformed::BadCredential));
        assert_eq!(parse("AKID/20130524/us-east-1/s3/aws4_request/"), Err(Malformed::BadCredential));
        assert_eq!(parse("AK ID/20130524/us-east-1/s3/aws4_request"), Err(Malformed::BadCredential));
        assert_eq!(parse("AKID/2013-05-24/us-east-1/s3/aws4_request"), Err(Malformed::BadCredentialDate));
        assert_eq!(parse("AKID/20130524/us-east-1/S3/aws4_request"), Err(Malformed::WrongService));
        assert_eq!(parse("AKID/20130524/us-east-1/s3/aws4_Request"), Err(Malformed::WrongTerminator));
    }

    #[test]
    fn amz_dates() {
        let d = AmzDate::parse("20130524T000000Z").unwrap();
        assert_eq!(d.to_system_time(), UNIX_EPOCH + Duration::from_secs(1_369_353_600));
        assert_eq!(d.date(), "20130524");
        assert_eq!(AmzDate::from_system_time(d.to_system_time()), Some(d));
        assert_eq!(AmzDate::from_http_date("Fri, 24 May 2013 00:00:00 GMT"), Some(d));
        let leap = AmzDate::parse("20240229T235959Z").unwrap();
        assert_eq!(AmzDate::from_system_time(leap.to_system_time() + Duration::from_millis(999)), Some(leap));
        assert_eq!(AmzDate::parse("19700101T000000Z").unwrap().to_system_time(), UNIX_EPOCH);
        // Every day of a few years round-trips (month lengths, leap years, century rules).
        for day in 0..(365 * 4 + 1) {
            for base in [0u64, 946_684_800 - 86_400 * 365, 4_102_444_800 - 86_400 * 365] {
                let t = UNIX_EPOCH + Duration::from_secs(base + day * 86_400 + 3_723);
                let d = AmzDate::from_system_time(t).unwrap();
                assert_eq!(AmzDate::parse(d.as_str()), Some(d));
                assert_eq!(d.to_system_time(), t);
            }
        }
        for bad in [
            "20130524T000000",
            "20130524t000000Z",
            "20130524 000000Z",
            "2013-05-24T00:00:00Z",
            "20131324T000000Z",
            "20130024T000000Z",
            "20130230T000000Z",
            "20230229T000000Z",
            "21000229T000000Z",
            "20130524T240000Z",
            "20130524T006000Z",
            "20130524T000060Z",
            "19691231T235959Z",
            "+0130524T000000Z",
            "",
        ] {
            assert_eq!(AmzDate::parse(bad), None, "{bad}");
        }
        assert!(AmzDate::parse("20000229T000000Z").is_some());
    }

    #[test]
    fn presigned_parameters() {
        let good = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
                    &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host%3Bx-amz-acl\
                    &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404&x-id=GetObject";
        let p = parse_presigned(good.as_bytes()).unwrap();
        assert_eq!(p.credential.access_key(), "AKID");
        assert_eq!(p.credential.scope(), "20130524/us-east-1/s3/aws4_request");
        assert_eq!(p.signed_headers.as_str(), "host;x-amz-acl");
        assert_eq!((p.amz_date.as_str(), p.expires_s), ("20130524T000000Z", 86_400));
        assert_eq!(p.content_sha256, None);
        // Unencoded '/' and ';' are accepted too.
        let raw = good.replace("%2F", "/").replace("%3B", ";");
        assert_eq!(parse_presigned(raw.as_bytes()).unwrap().credential.scope(), "20130524/us-east-1/s3/aws4_request");

        let bad = SigV4Error::QueryMalformed;
        let without = |name: &str| good.split('&').filter(|p| !p.starts_with(name)).collect::<Vec<_>>().join("&");
        let cases: Vec<(String, SigV4Error)> = vec![
            (without("X-Amz-Algorithm"), bad(Malformed::MissingAlgorithm)),
            (without("X-Amz-Credential"), bad(Malformed::MissingCredential)),
            (without("X-Amz-Date"), bad(Malformed::MissingDate)),
            (without("X-Amz-Expires"), bad(Malformed::MissingExpires)),
            (without("X-Amz-SignedHeaders"), bad(Malformed::MissingSignedHeaders)),
            (without("X-Amz-Signature"), bad(Malformed::MissingSignature)),
            (format!("{good}&X-Amz-Date=20130524T000000Z"), bad(Malformed::Duplicate)),
            (format!("{good}&X-Amz-Signature=00"), bad(Malformed::Duplicate)),
            (good.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"), bad(Malformed::UnsupportedAlgorithm)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires=0"), bad(Malformed::BadExpires)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires=-1"), bad(Malformed::BadExpires)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires=%2B1"), bad(Malformed::BadExpires)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires="), bad(Malformed::BadExpires)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires=604801"), bad(Malformed::ExpiresTooLarge)),
            (good.replace("X-Amz-Expires=86400", "X-Amz-Expires=99999999999"), bad(Malformed::ExpiresTooLarge)),
            (good.replace("X-Amz-Date=20130524T000000Z", "X-Amz-Date=2013-05-24"), bad(Malformed::BadDate)),
            (good.replace("%2Fs3%2F", "%2Fs4%2F"), bad(Malformed::WrongService)),
            (good.replace("%2Fus-east-1", "%zz"), bad(Malformed::BadEncoding)),
            (good.replace("host%3Bx-amz-acl", "x-amz-acl"), bad(Malformed::SignedHeadersWithoutHost)),
            (good.replace("aeeed9bb", "aeeed9b"), bad(Malformed::BadSignature)),
        ];
        for (query, expected) in cases {
            assert_eq!(parse_presigned(query.as_bytes()).unwrap_err(), expected, "{query}");
        }
        let max = good.replace("X-Amz-Expires=86400", "X-Amz-Expires=604800");
        assert_eq!(parse_presigned(max.as_bytes()).unwrap().expires_s, MAX_PRESIGNED_EXPIRES_S);
        let with_hash = format!("{good}&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD");
        assert_eq!(parse_presigned(with_hash.as_bytes()).unwrap().content_sha256.as_deref(), Some(UNSIGNED_PAYLOAD));
    }

    #[test]
    fn auth_detection() {
        assert!(matches!(parse_auth(None, b""), Ok(None)));
        assert!(matches!(parse_auth(None, b"acl&versionId=3"), Ok(None)));
        // A half-presigned URL is an error, not an anonymous request.
        assert_eq!(
            parse_auth(None, b"X-Amz-Signature=00").unwrap_err(),
            SigV4Error::QueryMalformed(Malformed::MissingAlgorithm)
        );
        assert_eq!(
            parse_auth(None, b"X-Amz-Credential=a").unwrap_err(),
            SigV4Error::QueryMalformed(Malformed::MissingAlgorithm)
        );
        assert_eq!(
            parse_auth(Some(b"AWS4-HMAC-SHA256 x"), b"X-Amz-Algorithm=AWS4-HMAC-SHA256").unwrap_err(),
            SigV4Error::MultipleAuthMechanisms
        );
        assert_eq!(
            parse_authorization(b"AWS4-HMAC-SHA256 Credential=\xff").unwrap_err(),
            SigV4Error::HeaderMalformed(Malformed::BadEncoding)
        );
        assert_eq!(parse_authorization(b"\xff").unwrap_err(), SigV4Error::UnsupportedAuthorizationType);
    }

    #[test]
    fn payload_hash_values() {
        assert_eq!(PayloadHash::parse(UNSIGNED_PAYLOAD), Ok(PayloadHash::Unsigned));
        assert_eq!(PayloadHash::parse(STREAMING_PAYLOAD), Ok(PayloadHash::StreamingSigned));
        assert_eq!(PayloadHash::parse(STREAMING_PAYLOAD_TRAILER), Ok(PayloadHash::StreamingSignedTrailer));
        assert_eq!(PayloadHash::parse(STREAMING_UNSIGNED_PAYLOAD_TRAILER), Ok(PayloadHash::StreamingUnsignedTrailer));
        assert_eq!(PayloadHash::parse(EMPTY_SHA256_HEX), Ok(PayloadHash::Sha256(Sha256::digest(b"").into())));
        for bad in ["", "unsigned-payload", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD", &EMPTY_SHA256_HEX[1..]] {
            assert_eq!(PayloadHash::parse(bad), Err(SigV4Error::InvalidContentSha256), "{bad}");
        }
        assert!(PayloadHash::StreamingUnsignedTrailer.is_streaming());
        assert!(!PayloadHash::StreamingUnsignedTrailer.has_signed_chunks());
        assert!(
            PayloadHash::StreamingSignedTrailer.has_signed_chunks()
                && PayloadHash::StreamingSignedTrailer.has_trailer()
        );
        assert!(!PayloadHash::Unsigned.is_streaming());
    }

    #[test]
    fn presigned_payload_hash_sources() {
        // A self-signed presigned PUT; the payload line comes from the URL, else a signed
        // header, else UNSIGNED-PAYLOAD.
        let key = signing_key("secret", "20240101", "r", "s3");
        let now = AmzDate::parse("20240101T000000Z").unwrap().to_system_time();
        let sign = |query: &str, headers: &[(&str, &str)], signed: &str, payload: &str| {
            let signed = SignedHeaders::parse(signed.into()).unwrap();
            let text = canonical_request(&CanonicalRequest {
                method: "PUT",
                path: b"/k",
                query: query.as_bytes(),
                headers,
                signed_headers: &signed,
                payload_hash: payload,
                form: AuthForm::Query,
            })
            .unwrap();
            let sig =
                to_hex(&signature(&key, &string_to_sign("20240101T000000Z", "20240101/r/s3/aws4_request", &text)));
            format!("{query}&X-Amz-Signature={sig}")
        };
        let base = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=K%2F20240101%2Fr%2Fs3%2Faws4_request\
                    &X-Amz-Date=20240101T000000Z&X-Amz-Expires=60";
        let check = |query: &str, headers: &[(&str, &str)]| {
            let auth = parse_auth(None, query.as_bytes())?.unwrap();
            verify(&auth, &Request { method: "PUT", path: b"/k", query: query.as_bytes(), headers }, "secret", "r", now)
        };
        let host = [("host", "h")];
        let q = format!("{base}&X-Amz-SignedHeaders=host");
        assert_eq!(check(&sign(&q, &host, "host", UNSIGNED_PAYLOAD), &host).unwrap().payload, PayloadHash::Unsigned);
        // Signed for UNSIGNED-PAYLOAD, sent claiming a hash: the signature no longer matches.
        let q_signed = sign(&q, &host, "host", UNSIGNED_PAYLOAD);
        let with_hash = [("host", "h"), ("x-amz-content-sha256", EMPTY_SHA256_HEX)];
        assert_eq!(check(&q_signed, &with_hash).unwrap_err(), SigV4Error::HeadersNotSigned);
        let q2 = format!("{base}&X-Amz-SignedHeaders=host%3Bx-amz-content-sha256");
        let q2_signed = sign(&q2, &with_hash, "host;x-amz-content-sha256", EMPTY_SHA256_HEX);
        assert!(matches!(check(&q2_signed, &with_hash).unwrap().payload, PayloadHash::Sha256(_)));
        let q3 = format!("{base}&X-Amz-SignedHeaders=host&X-Amz-Content-Sha256={EMPTY_SHA256_HEX}");
        let q3_signed = sign(&q3, &host, "host", EMPTY_SHA256_HEX);
        assert!(matches!(check(&q3_signed, &host).unwrap().payload, PayloadHash::Sha256(_)));
        let q4 = format!("{base}&X-Amz-SignedHeaders=host&X-Amz-Content-Sha256=nope");
        assert_eq!(check(&sign(&q4, &host, "host", "nope"), &host).unwrap_err(), SigV4Error::InvalidContentSha256);
    }

    #[test]
    fn chunk_signer_shotgun_split() {
        // The 1 KiB chunk of the AWS example split into two pieces at every offset.
        let key = signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3");
        let date = AmzDate::parse("20130524T000000Z").unwrap();
        let scope = "20130524/us-east-1/s3/aws4_request";
        let previous = decode_hex32(b"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648").unwrap();
        let data = [b'a'; 1024];
        let sig = b"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
        for split in 0..=data.len() {
            let mut signer = ChunkSigner::new(key, scope, date, previous, false);
            signer.update(&data[..split]);
            signer.update(&data[split..]);
            assert_eq!(signer.finish_chunk(sig), Ok(()), "split at {split}");
            assert!(!signer.is_final_chunk_seen());
        }
    }

    #[test]
    fn chunk_signer_debug_hides_the_key() {
        let key = [0xab; 32];
        let signer = ChunkSigner::new(key, "s", AmzDate::parse("20130524T000000Z").unwrap(), [0; 32], false);
        let shown = format!("{signer:?}");
        assert!(!shown.contains("abab") && !shown.contains("171"), "{shown}");
    }

    #[test]
    fn error_mapping_is_total() {
        let all = [
            SigV4Error::HeaderMalformed(Malformed::WrongRegion),
            SigV4Error::QueryMalformed(Malformed::WrongRegion),
            SigV4Error::UnsupportedAuthorizationType,
            SigV4Error::MultipleAuthMechanisms,
            SigV4Error::MissingContentSha256,
            SigV4Error::InvalidContentSha256,
            SigV4Error::InvalidUriEncoding,
            SigV4Error::MissingDate,
            SigV4Error::RequestTimeTooSkewed,
            SigV4Error::RequestExpired,
            SigV4Error::RequestNotYetValid,
            SigV4Error::HeadersNotSigned,
            SigV4Error::SignatureDoesNotMatch,
            SigV4Error::InvalidAccessKeyId,
            SigV4Error::ContentSha256Mismatch,
            SigV4Error::ChunkSignatureDoesNotMatch,
            SigV4Error::ChunkOutOfSequence,
        ];
        for e in all {
            assert!(matches!(e.http_status(), 400 | 403), "{e:?}");
            assert!(!e.s3_code().is_empty() && !e.as_str().is_empty() && !e.to_string().is_empty());
        }
        assert_eq!(SigV4Error::HeaderMalformed(Malformed::WrongRegion).malformed(), Some(Malformed::WrongRegion));
        assert_eq!(SigV4Error::MissingContentSha256.s3_code(), "InvalidRequest");
    }
}
