//! The admin listener: operational endpoints, apart from the data plane.
//!
//! - `GET /health` -> 200 `ok` (no auth: for load balancers and probes).
//! - `GET /metrics` -> Prometheus text; needs `Authorization: Bearer <admin.token>` when a token
//!   is configured.
//!
//! Served by one thread with its own monoio runtime; admin traffic never competes with data-plane
//! workers for their cores' run queues.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use edgemirror_proto::{self as proto, Status};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::reply;
use crate::server::Shared;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot adopt the admin socket");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(serve_conn(stream, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let head = loop {
            match proto::parse_request(&buf) {
                Ok(Status::Complete(h)) => break h,
                Ok(Status::Partial) => {}
                Err(e) => {
                    let _ = respond(
                        &mut stream,
                        e.status(),
                        "text/plain",
                        e.as_str().to_string(),
                        false,
                    )
                    .await;
                    return;
                }
            }
            buf.reserve(4096);
            let (len, cap) = (buf.len(), buf.capacity());
            match monoio::time::timeout(ADMIN_TIMEOUT, stream.read(buf.slice_mut(len..cap))).await {
                Ok((Ok(n), slice)) if n > 0 => buf = slice.into_inner(),
                _ => {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        };
        let path = head.path.get(&buf);
        let authorized = authorized(
            &shared.config.admin.token,
            head.headers.get(&buf, "authorization"),
        );
        let (status, body) = match (head.method, path) {
            (proto::Method::Get, b"/health") => (200, "ok\n".to_string()),
            (proto::Method::Get, b"/metrics") if authorized => (200, metrics(&shared)),
            (proto::Method::Get, b"/metrics") => (401, "unauthorized\n".to_string()),
            _ => (404, "not found\n".to_string()),
        };
        let keep_alive = head.keep_alive && matches!(head.body, proto::BodyFraming::None);
        if respond(
            &mut stream,
            status,
            "text/plain; charset=utf-8",
            body,
            keep_alive,
        )
        .await
        .is_err()
            || !keep_alive
        {
            let _ = stream.shutdown().await;
            return;
        }
        buf.advance(head.head_len);
    }
}

/// True when no token is configured or the request carries `Bearer <token>`.
pub fn authorized(token: &str, header: Option<&[u8]>) -> bool {
    if token.is_empty() {
        return true;
    }
    let Some(value) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    // Constant-time comparison: the token is a secret.
    value.len() == token.len()
        && value
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn metrics(shared: &Shared) -> String {
    shared.metrics.render(&[
        (
            "edgemirror_store_objects",
            shared.store.object_count() as u64,
        ),
        ("edgemirror_store_disk_bytes", shared.store.disk_bytes()),
        (
            "edgemirror_hot_memory_bytes",
            shared.hot.memory_usage() as u64,
        ),
    ])
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: String,
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = String::with_capacity(256 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nServer: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n{body}",
        reply::reason(status),
        reply::SERVER,
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
    );
    let (res, _) = stream.write_all(out.into_bytes()).await;
    res.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::authorized;

    #[test]
    fn bearer_token_checks() {
        assert!(authorized("", None));
        assert!(authorized("s3cret", Some(b"Bearer s3cret")));
        assert!(!authorized("s3cret", Some(b"Bearer s3cre")));
        assert!(!authorized("s3cret", Some(b"s3cret")));
        assert!(!authorized("s3cret", None));
    }
}
