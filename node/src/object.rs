//! The object handlers: `GET` and `HEAD /{bucket}/{key}` (S3 path-style addressing).
//!
//! Lookup order, fastest tier first: foyer memory -> foyer disk -> segment store. A store hit is
//! copied into foyer for next time. A GET that misses everywhere goes to the bucket's first
//! matching mirror rule ([`crate::mirror`]); with no rule it is a 404 `NoSuchKey`. A HEAD never
//! contacts the origin: SDK existence checks must not trigger downloads.

use bytes::Bytes;
use edgemirror_cache::ObjectKeyRef;
use edgemirror_proto::{self as proto, Method};

use crate::conn::{Conn, Disposition, Request};
use crate::error::S3Error;
use crate::mirror;
use crate::reply::{self, Framing, SOURCE_HEADER};
use crate::rules;
use crate::server::Worker;

/// Answers one request; returns whether the connection may continue.
pub async fn handle(worker: &Worker, conn: &mut Conn, req: &Request<'_>) -> Disposition {
    worker.metrics().requests.inc();
    let keep_alive = req.head.keep_alive;
    let (key_for_error, result) = match route(req) {
        Ok((bucket, key)) => {
            let r = serve_object(worker, conn, req, &bucket, &key).await;
            (Some(key), r)
        }
        Err(e) => (None, Err(e)),
    };
    match result {
        Ok(d) => d,
        Err(err) => {
            if err.status() >= 500 {
                tracing::error!(request_id = %req.id, error = ?err, "internal error");
            }
            reply::error(
                &mut conn.out,
                &err,
                key_for_error.as_deref(),
                &worker.date,
                req.id,
                keep_alive,
                req.is_head(),
            );
            match conn.flush().await {
                Ok(()) if keep_alive && !err.closes_connection() => Disposition::KeepAlive,
                _ => Disposition::Close,
            }
        }
    }
}

/// Splits `/{bucket}/{key}` and percent-decodes the key.
fn route(req: &Request<'_>) -> Result<(String, String), S3Error> {
    match req.head.method {
        Method::Get | Method::Head => {}
        _ => return Err(S3Error::MethodNotAllowed),
    }
    let raw = req.head.path.get(req.buf);
    let Some(rest) = raw.strip_prefix(b"/") else {
        return Err(S3Error::InvalidRequest("the request target must be an absolute path"));
    };
    let (bucket, key) = match rest.iter().position(|&c| c == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let bucket = proto::decode_path(bucket).map_err(S3Error::BadRequest)?;
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
    Ok((bucket.into_owned(), key.into_owned()))
}

async fn serve_object(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    bucket: &str,
    key: &str,
) -> Result<Disposition, S3Error> {
    let shared = &worker.shared;
    if shared.config.bucket(bucket).is_none() {
        return Err(S3Error::NoSuchBucket);
    }
    let okey = ObjectKeyRef::new(bucket, key);

    if let Some((obj, tier)) = shared.hot.get(okey).await {
        match tier {
            edgemirror_cache::HotTier::Memory => worker.metrics().hits_memory.inc(),
            edgemirror_cache::HotTier::Disk => worker.metrics().hits_disk_cache.inc(),
        }
        return send_stored(worker, conn, req, &obj.meta, obj.body, tier.as_str()).await;
    }
    match shared.store.get(okey) {
        Ok(Some(obj)) => {
            worker.metrics().hits_store.inc();
            shared.hot.insert(&obj);
            return send_stored(worker, conn, req, &obj.meta, obj.body, "store").await;
        }
        Ok(None) => {}
        // A damaged record was dropped from the index: fetch the object again if a rule allows.
        Err(e) => {
            tracing::error!(request_id = %req.id, bucket, key, error = %e, "stored object failed its check")
        }
    }

    if req.is_head() {
        return Err(S3Error::NoSuchKey);
    }
    // The table is loaded once per miss; an admin update swaps in a new one for later requests.
    let table = shared.rules.load_full();
    let rule = table.rules(bucket).and_then(|b| rules::match_rule(&b.rules, key));
    let Some(rule) = rule else {
        worker.metrics().misses_no_rule.inc();
        return Err(S3Error::NoSuchKey);
    };
    mirror::fill(worker, conn, req, okey, rule).await
}

/// 200 with a stored object's headers and body (no body for HEAD).
async fn send_stored(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    meta: &edgemirror_cache::ObjectMeta,
    body: Bytes,
    source: &str,
) -> Result<Disposition, S3Error> {
    let keep_alive = req.head.keep_alive;
    reply::start(&mut conn.out, 200, &worker.date, req.id);
    reply::object_headers(&mut conn.out, meta, true);
    reply::header(&mut conn.out, SOURCE_HEADER, source.as_bytes());
    reply::finish(&mut conn.out, Framing::Length(meta.size), keep_alive);
    let sent = if req.is_head() { conn.flush().await } else { conn.send_with_body(body).await };
    Ok(match sent {
        Ok(()) if keep_alive => Disposition::KeepAlive,
        _ => Disposition::Close,
    })
}
