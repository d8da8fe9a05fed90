//! ListBuckets (`GET /`), ListObjectsV2 (`GET /{bucket}?list-type=2`) and ListObjects v1
//! (`GET /{bucket}`): the keys of
//! a bucket in order, with `prefix`, `delimiter` (rolled up into CommonPrefixes), `max-keys`
//! (at most 1000), `start-after` / `marker`, `continuation-token`, `fetch-owner` and
//! `encoding-type=url`, answered with S3's XML (`proto::s3::xml`).
//!
//! A page holds up to `max-keys` entries, keys and common prefixes together, as S3 counts them.
//! The continuation token is the last entry of the page, base64-encoded: opaque to clients,
//! and stateless here (the next page starts after it, whatever changed meanwhile; keys under a
//! common prefix the previous page ended on are skipped, so a prefix is never listed twice).

use std::rc::Rc;

use base64::Engine as _;
use edgemirror_proto::s3::xml::{
    self, CommonPrefix, ListAllMyBucketsResult, ListObjectsV1Result, ListObjectsV2Result, ListedBucket, ListedObject,
    Owner,
};

use crate::error::S3Error;
use crate::reply::{self, Framing};
use crate::respond::{Conn, Disposition, Request};
use crate::worker::Worker;

/// S3's ceiling on `max-keys`.
const MAX_KEYS: u32 = 1000;

/// The query parameters of a listing.
#[derive(Debug, Default)]
struct ListQuery {
    v2: bool,
    prefix: String,
    delimiter: Option<String>,
    max_keys: u32,
    /// V2: `continuation-token` (decoded) else `start-after`; V1: `marker`.
    after: Option<String>,
    continuation_token: Option<String>,
    start_after: Option<String>,
    fetch_owner: bool,
    encode_url: bool,
}

fn parse_query(query: &[u8]) -> Result<ListQuery, S3Error> {
    let mut q = ListQuery { max_keys: MAX_KEYS, ..Default::default() };
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let mut it = pair.splitn(2, |&b| b == b'=');
        let name = it.next().unwrap_or_default();
        let value = it.next().unwrap_or_default();
        // Query values are form-decoded by clients' encoders: '+' is a literal plus in S3
        // signatures, so only %XX is decoded.
        let value = percent_encoding::percent_decode(value)
            .decode_utf8()
            .map_err(|_| S3Error::InvalidRequest("a listing parameter is not UTF-8"))?
            .into_owned();
        match name {
            b"list-type" if value == "2" => q.v2 = true,
            b"list-type" => return Err(S3Error::InvalidRequest("list-type must be 2")),
            b"prefix" => q.prefix = value,
            b"delimiter" => q.delimiter = (!value.is_empty()).then_some(value),
            b"max-keys" => {
                q.max_keys = value
                    .parse::<u32>()
                    .map_err(|_| S3Error::InvalidArgument("max-keys must be a non-negative integer"))?
                    .min(MAX_KEYS)
            }
            b"continuation-token" => q.continuation_token = Some(value),
            b"start-after" => q.start_after = Some(value),
            b"marker" | b"key-marker" => q.start_after = Some(value),
            b"fetch-owner" => q.fetch_owner = value == "true",
            b"encoding-type" if value == "url" => q.encode_url = true,
            b"encoding-type" => return Err(S3Error::InvalidRequest("encoding-type must be url")),
            _ => {}
        }
    }
    q.after = match &q.continuation_token {
        Some(token) if q.v2 => Some(decode_token(token)?),
        _ => q.start_after.clone(),
    };
    Ok(q)
}

fn encode_token(last: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_token(token: &str) -> Result<String, S3Error> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| S3Error::InvalidRequest("the continuation token is not one this node gave"))?;
    String::from_utf8(bytes).map_err(|_| S3Error::InvalidRequest("the continuation token is not one this node gave"))
}

/// One page of a listing: objects and rolled-up prefixes, in key order.
struct Page {
    contents: Vec<ListedObject>,
    common_prefixes: Vec<CommonPrefix>,
    /// The last entry (key or prefix) of a truncated page.
    next_after: Option<String>,
}

/// One page of `bucket`: from the shared store of record when there is one (this node's
/// segments then hold only what it has cached), else from the store here.
async fn page(worker: &Worker, bucket: &str, q: &ListQuery) -> Result<Page, S3Error> {
    let Some(store) = &worker.shared.shared_store else { return Ok(local_page(worker, bucket, q)) };
    let owner = q.fetch_owner.then(|| Owner { id: "edgemirror".into(), display_name: Some("edgemirror".into()) });
    let listed = crate::backend::list_page(
        worker,
        store,
        bucket,
        &q.prefix,
        q.delimiter.as_deref(),
        q.after.as_deref(),
        q.max_keys as usize,
    )
    .await?;
    Ok(Page {
        contents: listed.objects.into_iter().map(|o| ListedObject { owner: owner.clone(), ..o }).collect(),
        common_prefixes: listed.prefixes.into_iter().map(|prefix| CommonPrefix { prefix }).collect(),
        next_after: listed.next_after,
    })
}

fn local_page(worker: &Worker, bucket: &str, q: &ListQuery) -> Page {
    let listing =
        worker.shared.store.list(bucket, &q.prefix, q.delimiter.as_deref(), q.after.as_deref(), q.max_keys as usize);
    let owner = q.fetch_owner.then(|| Owner { id: "edgemirror".into(), display_name: Some("edgemirror".into()) });
    Page {
        contents: listing
            .objects
            .iter()
            .map(|meta| ListedObject {
                key: meta.key.to_string(),
                last_modified: meta.record.last_modified,
                etag: meta.etag(),
                size: meta.size,
                storage_class: meta.record.storage_class.as_str().to_string(),
                owner: owner.clone(),
            })
            .collect(),
        common_prefixes: listing.prefixes.into_iter().map(|prefix| CommonPrefix { prefix }).collect(),
        next_after: listing.next_after,
    }
}

/// ListObjectVersions (`GET /{bucket}?versions`). The node keeps no versions, so this is the
/// listing with every object as its key's one version, `null` and latest: what tools that
/// empty a bucket through versions (ceph's s3-tests, `aws s3api list-object-versions`) need.
/// `key-marker` pages as `marker` does; `version-id-marker` has nothing to select.
pub async fn list_versions(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
) -> Result<Disposition, S3Error> {
    let mut q = parse_query(req.query().unwrap_or_default())?;
    q.fetch_owner = true;
    let page = page(worker, bucket, &q).await?;
    let mut result = xml::ListVersionsResult {
        name: bucket.to_string(),
        prefix: q.prefix.clone(),
        key_marker: q.start_after.clone().unwrap_or_default(),
        version_id_marker: String::new(),
        next_version_id_marker: page.next_after.as_ref().map(|_| "null".to_string()),
        next_key_marker: page.next_after,
        max_keys: q.max_keys,
        delimiter: q.delimiter.clone(),
        encoding_type: None,
        is_truncated: false,
        versions: page
            .contents
            .into_iter()
            .map(|o| xml::ListedVersion {
                key: o.key,
                version_id: "null".into(),
                is_latest: true,
                last_modified: o.last_modified,
                etag: o.etag,
                size: o.size,
                storage_class: o.storage_class,
                owner: o.owner,
            })
            .collect(),
        common_prefixes: page.common_prefixes,
    };
    result.is_truncated = result.next_key_marker.is_some();
    if q.encode_url {
        result.encode_url();
    }
    send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// Answers a listing of `bucket`.
pub async fn list_objects(
    worker: &Rc<Worker>,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
) -> Result<Disposition, S3Error> {
    let q = parse_query(req.query().unwrap_or_default())?;
    let page = page(worker, bucket, &q).await?;
    let body = if q.v2 {
        let mut result = ListObjectsV2Result {
            name: bucket.to_string(),
            prefix: q.prefix.clone(),
            start_after: q.start_after.clone(),
            continuation_token: q.continuation_token.clone(),
            next_continuation_token: page.next_after.as_deref().map(encode_token),
            key_count: (page.contents.len() + page.common_prefixes.len()) as u32,
            max_keys: q.max_keys,
            delimiter: q.delimiter.clone(),
            encoding_type: None,
            is_truncated: page.next_after.is_some(),
            contents: page.contents,
            common_prefixes: page.common_prefixes,
        };
        if q.encode_url {
            result.encode_url();
        }
        xml::to_xml(&result)
    } else {
        let mut result = ListObjectsV1Result {
            name: bucket.to_string(),
            prefix: q.prefix.clone(),
            marker: q.start_after.clone().unwrap_or_default(),
            next_marker: page.next_after.clone().filter(|_| q.delimiter.is_some()),
            max_keys: q.max_keys,
            delimiter: q.delimiter.clone(),
            encoding_type: None,
            is_truncated: page.next_after.is_some(),
            contents: page.contents,
            common_prefixes: page.common_prefixes,
        };
        if q.encode_url {
            result.encode_url();
        }
        xml::to_xml(&result)
    };
    send_xml(worker, conn, req, body).await
}

/// ListBuckets: every bucket (declared or created; any valid key may list them), with its
/// creation date.
pub async fn list_buckets(worker: &Rc<Worker>, conn: &mut Conn, req: &Request<'_>) -> Result<Disposition, S3Error> {
    // Paginated when asked: `max-buckets` (1-10000), `continuation-token` (the last name of the
    // previous page, base64 like listing tokens), `prefix`.
    let query = req.query().unwrap_or_default();
    let max = match edgemirror_proto::query_param(query, "max-buckets") {
        None => usize::MAX,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or(S3Error::InvalidArgument("max-buckets must be an integer from 1 to 10000"))?,
    };
    let after = edgemirror_proto::query_param(query, "continuation-token").map(|t| decode_token(&t)).transpose()?;
    let prefix = edgemirror_proto::query_param(query, "prefix").unwrap_or_default();
    let table = worker.shared.buckets.load();
    let mut names = table
        .iter()
        .filter(|b| b.config.name.starts_with(&prefix) && after.as_ref().is_none_or(|a| b.config.name > *a));
    let buckets: Vec<ListedBucket> = names
        .by_ref()
        .take(max)
        .map(|b| ListedBucket { name: b.config.name.clone(), creation_date: b.created })
        .collect();
    let more = names.next().is_some();
    let result = ListAllMyBucketsResult {
        owner: Owner { id: "edgemirror".into(), display_name: Some("edgemirror".into()) },
        continuation_token: buckets.last().filter(|_| more).map(|b| encode_token(&b.name)),
        buckets,
    };
    send_xml(worker, conn, req, xml::to_xml(&result)).await
}

/// A 204 No Content (a delete or an abort done).
pub async fn send_no_content(worker: &Worker, conn: &mut Conn, req: &Request<'_>) -> Result<Disposition, S3Error> {
    let keep_alive = req.keep_alive();
    reply::start(&mut conn.out, 204, &worker.date, req.id);
    reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
    reply::finish(&mut conn.out, Framing::NoBody, keep_alive);
    Ok(Disposition::after(conn.flush().await, keep_alive))
}

/// A 200 with an XML body.
pub async fn send_xml(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    body: String,
) -> Result<Disposition, S3Error> {
    send_xml_with(worker, conn, req, &[], body).await
}

/// A 200 with an XML body and `headers` besides the usual ones.
pub async fn send_xml_with(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    headers: &[(&str, &[u8])],
    body: String,
) -> Result<Disposition, S3Error> {
    let keep_alive = req.keep_alive();
    reply::start(&mut conn.out, 200, &worker.date, req.id);
    for (name, value) in headers {
        reply::header(&mut conn.out, name, value);
    }
    reply::header(&mut conn.out, "Content-Type", b"application/xml");
    reply::header(&mut conn.out, reply::SOURCE_HEADER, b"edge");
    reply::finish(&mut conn.out, Framing::Length(body.len() as u64), keep_alive);
    let sent = if req.is_head() { conn.flush().await } else { conn.send_with_body(body.into()).await };
    Ok(Disposition::after(sent, keep_alive))
}
