//! GetObjectAttributes (`GET /{bucket}/{key}?attributes`): what `x-amz-object-attributes` asks
//! for of a stored object, without its body: `ETag` (unquoted), `Checksum` (with its type),
//! `ObjectParts` (a multipart object's parts, paged by `x-amz-max-parts` and
//! `x-amz-part-number-marker`, each with its size and checksum), `StorageClass`, `ObjectSize`.
//! Served from the store only: attributes never mirror.

use std::rc::Rc;

use edgemirror_cache::ObjectKeyRef;
use edgemirror_proto::s3::xml::{self, AttributesChecksum, AttributesPart, AttributesParts, ChecksumFields};

use crate::error::S3Error;
use crate::reply;
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

use super::checksum::Algorithm;

/// S3's default and largest page of parts.
const MAX_PARTS: u32 = 1000;

pub async fn get_object_attributes(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let asked = req.header("x-amz-object-attributes").unwrap_or_default();
    let asked: Vec<String> = String::from_utf8_lossy(asked).split(',').map(|a| a.trim().to_ascii_lowercase()).collect();
    if asked.iter().all(|a| a.is_empty()) {
        return Err(S3Error::InvalidArgument("x-amz-object-attributes names no attribute"));
    }
    let wants = |name: &str| asked.iter().any(|a| a == name);
    let number = |header: &str, default: u32| -> Result<u32, S3Error> {
        match req.header(header) {
            None => Ok(default),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(S3Error::InvalidArgument("x-amz-max-parts and x-amz-part-number-marker are integers")),
        }
    };
    let max_parts = number("x-amz-max-parts", MAX_PARTS)?.min(MAX_PARTS);
    let marker = number("x-amz-part-number-marker", 0)?;

    let object = worker.shared.store.lookup(ObjectKeyRef::new(bucket, key)).await?.ok_or(S3Error::NoSuchKey)?;
    let record = &object.meta.record;
    let algorithm =
        record.checksum.as_ref().and_then(|(name, value)| Some((Algorithm::from_header(name.as_bytes())?, value)));
    let mut result = xml::GetObjectAttributesResponse::default();
    if wants("etag") {
        result.etag = Some(object.meta.etag().trim_matches('"').to_string());
    }
    if let (true, Some((alg, value))) = (wants("checksum"), algorithm) {
        let mut checksum =
            AttributesChecksum { checksum_type: Some(reply::checksum_type(value).to_string()), ..Default::default() };
        *alg.field(checksum.checksum_fields()) = Some(String::from_utf8_lossy(value).into_owned());
        result.checksum = Some(checksum);
    }
    if wants("objectparts") && record.parts > 0 {
        let mut parts =
            AttributesParts { parts_count: record.parts, part_number_marker: marker, max_parts, ..Default::default() };
        for number in (marker + 1..=record.parts).take(max_parts as usize) {
            let Some(range) = record.part_range(number) else { break };
            let mut part = AttributesPart { part_number: number, size: range.end - range.start, ..Default::default() };
            if let (Some((alg, _)), Some(value)) = (algorithm, record.part_checksums.get(number as usize - 1)) {
                *alg.field(part.checksum_fields()) = Some(value.to_string());
            }
            parts.next_part_number_marker = number;
            parts.parts.push(part);
        }
        parts.is_truncated = parts.next_part_number_marker < record.parts;
        result.object_parts = Some(parts);
    }
    if wants("storageclass") {
        result.storage_class = Some(record.storage_class.as_str().to_string());
    }
    if wants("objectsize") {
        result.object_size = Some(object.meta.size);
    }
    let last_modified = httpdate::fmt_http_date(record.last_modified);
    let headers: [(&str, &[u8]); 1] = [("Last-Modified", last_modified.as_bytes())];
    super::list::send_xml_with(worker, conn, req, &headers, xml::to_xml(&result)).await
}
