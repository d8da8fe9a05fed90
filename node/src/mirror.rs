//! Mirror back-to-origin ("image back-to-origin"): a GET for an object the store lacks is fetched
//! from the first matching rule's origin, streamed to the client and written to the store from
//! the same buffers.
//!
//! Semantics (the reference feature, `shared/seed/`):
//! - rules are matched in order by key prefix; the origin URL is MirrorURL + key, and the object
//!   is stored under the same key;
//! - no client header is sent to the origin; `Host` is the origin's host;
//! - origin 404 -> 404 `NoSuchKey`; any other non-200, a network error or a timeout -> 424
//!   `MirrorFailed` (while no response head has been sent);
//! - Content-Type, Content-Encoding, Content-Disposition, Cache-Control and Expires are returned
//!   and saved; the object is stored as STANDARD;
//! - a chunked (or close-delimited) origin body is passed on chunked;
//! - once stored, the object is never refreshed from the origin.
//!
//! The fill, step by step: origin head -> store record begun -> client head sent -> for each body
//! piece: append to the record, write to the client -> commit. If the origin breaks mid-body the
//! record is abandoned (never visible) and the client connection is cut, so a client never takes
//! a short body for a whole one. If the client goes away, the fill carries on and stores the
//! object: the next client gets it locally.
//!
//! The streamed response carries no ETag: it is the MD5 of bytes that have not arrived yet.
//! Every later response for the object has it.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use edgemirror_cache::{ObjectKeyRef, RecordMeta, RecordWriter};
use edgemirror_proto::{self as proto, Version};

use crate::config::MirrorRule;
use crate::conn::{Conn, Disposition, Request};
use crate::error::S3Error;
use crate::origin::{self, OriginResponse};
use crate::reply::{self, Framing, SOURCE_HEADER};
use crate::server::Worker;

/// The first rule whose key prefix matches `key`.
pub fn match_rule<'a>(rules: &'a [MirrorRule], key: &str) -> Option<&'a MirrorRule> {
    rules
        .iter()
        .find(|r| key.starts_with(r.key_prefix.as_str()))
}

/// The origin request path for `key` under `rule`: MirrorURL's path + the percent-encoded key.
pub fn origin_path(rule: &MirrorRule, key: &str) -> String {
    let mut path = String::with_capacity(rule.origin.path.len() + key.len() + 16);
    path.push_str(&rule.origin.path);
    proto::encode_key(key, &mut path);
    path
}

/// Fetches `key` from `rule`'s origin, answering the client and storing the object.
pub async fn fill(
    worker: &Worker,
    conn: &mut Conn,
    req: &Request<'_>,
    key: ObjectKeyRef<'_>,
    rule: &MirrorRule,
) -> Result<Disposition, S3Error> {
    let metrics = worker.metrics();
    metrics.origin_fetches.inc();
    let path = origin_path(rule, key.key);
    let request = origin::build_request(&rule.origin, &path, &[]);
    let origin_url = format!("http://{}{path}", rule.origin.host_header);
    let mut resp = match origin::fetch(&rule.origin, request, &worker.shared.config.origin).await {
        Ok(r) => r,
        Err(e) => {
            metrics.origin_failures.inc();
            tracing::warn!(request_id = %req.id, origin = %origin_url, error = %e, "mirror fetch failed");
            return Err(S3Error::MirrorFailed(e.to_string()));
        }
    };
    match resp.status {
        200 => {}
        404 => {
            metrics.origin_not_found.inc();
            return Err(S3Error::NoSuchKey);
        }
        status => {
            metrics.origin_failures.inc();
            tracing::warn!(request_id = %req.id, origin = %origin_url, status, "origin answered with a non-200 status");
            return Err(S3Error::MirrorFailed(format!("origin status {status}")));
        }
    }
    if let Some(te) = resp.header("transfer-encoding") {
        // After de-chunking, any other coding would leave the stored bytes still encoded with
        // nothing saying so.
        if !te.eq_ignore_ascii_case(b"chunked") {
            metrics.origin_failures.inc();
            return Err(S3Error::MirrorFailed(
                "origin used a transfer coding other than chunked".into(),
            ));
        }
    }

    let meta = saved_meta(&resp);
    let length = resp.body.content_length();
    let mut writer = match worker
        .shared
        .store
        .begin(worker.id, key, meta.clone(), length)
    {
        Ok(w) => Some(w),
        Err(e) => {
            // Serve the client anyway; the object is just not kept.
            tracing::error!(request_id = %req.id, error = %e, "cannot store mirrored object; passing it through");
            None
        }
    };

    // The response head goes out now: the client sees the first bytes before the origin is done.
    let http10 = req.head.version == Version::Http10;
    let framing = match length {
        Some(n) => Framing::Length(n),
        None if http10 => Framing::Close,
        None => Framing::Chunked,
    };
    let keep_alive = req.head.keep_alive && framing != Framing::Close;
    let out = &mut conn.out;
    reply::start(out, 200, &worker.date, req.id);
    for (name, value) in &meta.headers {
        reply::header(out, name.as_str(), value);
    }
    out.extend_from_slice(b"Last-Modified: ");
    out.extend_from_slice(httpdate::fmt_http_date(meta.last_modified).as_bytes());
    out.extend_from_slice(b"\r\n");
    reply::header(
        out,
        "x-amz-storage-class",
        meta.storage_class.as_str().as_bytes(),
    );
    reply::header(out, SOURCE_HEADER, b"origin");
    reply::finish(out, framing, keep_alive);
    let mut client_ok = conn.flush().await.is_ok();

    let mut chunk_head = BytesMut::with_capacity(16);
    loop {
        let piece = match resp.body.next().await {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                metrics.origin_body_failures.inc();
                tracing::warn!(request_id = %req.id, origin = %origin_url, error = %e, "origin body failed; object not stored");
                // Dropping the writer abandons the record; returning Close cuts the client off
                // before the announced length (or the last chunk), so it cannot mistake the
                // bytes it got for the whole object.
                return Ok(Disposition::Close);
            }
        };
        metrics.bytes_from_origin.add(piece.len() as u64);
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.append(&piece) {
                tracing::error!(request_id = %req.id, error = %e, "store write failed; passing the rest through");
                writer = None;
            }
        }
        if client_ok {
            client_ok = send_piece(conn, framing, piece, &mut chunk_head)
                .await
                .is_ok();
        }
        if !client_ok && writer.is_none() {
            // Nobody left to serve and nothing to store.
            return Ok(Disposition::Close);
        }
    }

    if let Some(w) = writer {
        commit(worker, req, w);
    }
    if client_ok && framing == Framing::Chunked {
        conn.out.extend_from_slice(proto::LAST_CHUNK);
        client_ok = conn.flush().await.is_ok();
    }
    Ok(if client_ok && keep_alive {
        Disposition::KeepAlive
    } else {
        Disposition::Close
    })
}

fn commit(worker: &Worker, req: &Request<'_>, writer: RecordWriter) {
    match writer.commit() {
        Ok(obj) => {
            worker.metrics().objects_mirrored.inc();
            worker.shared.hot.insert(&obj);
        }
        Err(e) => {
            tracing::error!(request_id = %req.id, error = %e, "mirrored object not committed")
        }
    }
}

/// The seed's saved headers, in the order the origin sent them.
fn saved_meta(resp: &OriginResponse) -> RecordMeta {
    let mut meta = RecordMeta::new(SystemTime::now());
    for (name, value) in resp.headers() {
        if let Some(h) = reply::saved_header(name) {
            if meta.header(h).is_none() {
                meta.headers.push((h, Bytes::copy_from_slice(value)));
            }
        }
    }
    meta
}

async fn send_piece(
    conn: &mut Conn,
    framing: Framing,
    piece: Bytes,
    chunk_head: &mut BytesMut,
) -> std::io::Result<()> {
    if framing != Framing::Chunked {
        return conn.write_bytes(piece).await;
    }
    chunk_head.clear();
    proto::encode_chunk_header(piece.len(), chunk_head);
    conn.out.extend_from_slice(chunk_head);
    conn.send_with_body(piece).await?;
    conn.out.extend_from_slice(proto::CHUNK_END);
    // The CRLF rides with the next chunk's header or the last chunk.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_mirror_url;

    fn rule(prefix: &str, url: &str) -> MirrorRule {
        MirrorRule {
            key_prefix: prefix.into(),
            origin: parse_mirror_url(url).unwrap(),
        }
    }

    #[test]
    fn rules_match_in_order_by_prefix() {
        let rules = [
            rule("img/", "http://a/"),
            rule("", "http://b/"),
            rule("img/x", "http://c/"),
        ];
        assert_eq!(match_rule(&rules, "img/x.jpg").unwrap().origin.host, "a");
        assert_eq!(match_rule(&rules, "doc/y").unwrap().origin.host, "b");
        assert!(match_rule(&rules[..1], "doc/y").is_none());
    }

    #[test]
    fn origin_path_is_mirror_url_path_plus_encoded_key() {
        let r = rule("", "http://www.example-domain.com/dir1/");
        assert_eq!(
            origin_path(&r, "image/example_object.jpg"),
            "/dir1/image/example_object.jpg"
        );
        assert_eq!(origin_path(&r, "a b/ü?.jpg"), "/dir1/a%20b/%C3%BC%3F.jpg");
    }
}
