//! The wire format of the S3 API, sans I/O: what the node's S3 handlers parse and write.
//!
//! - [`sigv4`]: AWS Signature Version 4 verification (header and presigned forms, the chunk
//!   signatures of `aws-chunked` bodies). Pure functions over the request's parts and a secret.
//! - [`aws_chunked`]: decoding the `aws-chunked` body framing (chunk signatures, trailers).
//! - [`xml`]: the XML request and response bodies (listings, batch delete, multipart, errors).
//!
//! Nothing here reads a socket or knows the store: the node feeds bytes and gets decisions.

pub mod aws_chunked;
pub mod sigv4;
pub mod xml;
