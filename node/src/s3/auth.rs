//! Who may do what: AWS Signature Version 4 on the data plane.
//!
//! Writes, deletes and bucket operations need a valid signature from a key in `[[s3.keys]]`;
//! reads of objects are anonymous unless the bucket sets `public_read = false`. The header form
//! and the presigned (query) form are both accepted; the checks themselves (canonical request,
//! clock skew, expiry, the signature compared in constant time) are `proto::s3::sigv4`'s. What
//! the body still owes (a SHA-256, chunk signatures) travels with [`Signed`] to the handler that
//! reads it.

use std::time::SystemTime;

use edgemirror_proto::s3::sigv4::{self, Verified};

use crate::error::S3Error;
use crate::respond::Request;

/// A request whose signature checked out.
#[derive(Debug)]
pub struct Signed {
    pub access_key: String,
    pub verified: Verified,
}

/// Checks `req`'s signature; an unsigned request is `AccessDenied`.
pub fn authorize(req: &Request<'_>) -> Result<Signed, S3Error> {
    let s3 = &req.config.s3;
    let query = req.query().unwrap_or_default();
    let Some(auth) = sigv4::parse_auth(req.header("authorization"), query).map_err(S3Error::Auth)? else {
        return Err(S3Error::AccessDenied("this operation needs a signed request (AWS Signature Version 4)"));
    };
    let access_key = auth.credential().access_key().to_string();
    let Some(secret) = s3.keys.get(&access_key) else {
        return Err(S3Error::InvalidAccessKeyId);
    };
    let headers: Vec<(&[u8], &[u8])> =
        req.head.headers.iter().map(|h| (h.name.get(req.buf), h.value.get(req.buf))).collect();
    let request =
        sigv4::Request { method: req.head.method.as_str(), path: req.head.path.get(req.buf), query, headers: &headers };
    let verified = sigv4::verify(&auth, &request, secret, &s3.region, SystemTime::now()).map_err(S3Error::Auth)?;
    Ok(Signed { access_key, verified })
}
