//! What to request: the server address and one pre-built HTTP/1.1 request per key.
//!
//! Requests are rendered once at start-up and leaked into `&'static [u8]`, so the hot loop hands
//! the same bytes to the kernel for every GET and allocates nothing. All URLs of a run must name
//! the same `host:port`: every connection can then carry any key. Only `http://` is supported.
//!
//! Sources of URLs, in the order they are added:
//! - `--url URL` (repeatable);
//! - `--url-template 'http://127.0.0.1:8080/bucket/obj-{}' --keys N [--key-offset K]`: `{}` is
//!   replaced by K, K+1, .., K+N-1;
//! - `--url-file FILE`: one URL per line, or one path per line with `--host HOST:PORT`.
//!
//! With `--put-bytes N` each request is an S3 PutObject of N bytes instead of a GET ([`Upload`]).

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};
use edgemirror_proto::s3::sigv4;

/// The placeholder a URL template's key index replaces.
pub const KEY_PLACEHOLDER: &str = "{}";

/// The resolved server and the request bytes for each key.
pub struct Targets {
    pub addr: SocketAddr,
    /// One complete request head per key, index = key number in the mix.
    pub requests: &'static [&'static [u8]],
    /// The first path, for the report.
    pub first_path: String,
}

/// Where the URLs come from (already read from the command line).
#[derive(Default)]
pub struct TargetSpec {
    pub urls: Vec<String>,
    pub template: Option<String>,
    pub keys: u64,
    pub key_offset: u64,
    pub url_file: Option<std::path::PathBuf>,
    pub host: Option<String>,
    /// Extra request headers, each `Name: value`.
    pub headers: Vec<String>,
    /// PUT a body of this many bytes to each URL instead of a GET (see [`Upload`]).
    pub upload: Option<Upload>,
}

/// S3 PutObject load: every request uploads `bytes` bytes, signed with AWS Signature V4
/// (header form, `UNSIGNED-PAYLOAD`) for `region` with `access_key`/`secret_key`. Requests are
/// signed once, at start-up, with the time then: a run must end within the 15 minutes of clock
/// skew S3 allows.
pub struct Upload {
    pub bytes: usize,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Upload {
    /// A signed PUT of `path` (head, then the body).
    fn render(&self, authority: &str, path: &str, headers: &[String], amz: &sigv4::AmzDate) -> Result<Vec<u8>> {
        let payload = "UNSIGNED-PAYLOAD";
        let length = self.bytes.to_string();
        let mut signed: Vec<(&str, &str)> = vec![
            ("content-length", &length),
            ("host", authority),
            ("x-amz-content-sha256", payload),
            ("x-amz-date", amz.as_str()),
        ];
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(n, _)| *n).collect();
        let signed_headers = sigv4::SignedHeaders::parse(names.join(";").into())
            .map_err(|e| anyhow::anyhow!("signed headers: {e:?}"))?;
        let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
        let canonical = sigv4::canonical_request(&sigv4::CanonicalRequest {
            method: "PUT",
            path: path_only.as_bytes(),
            query: query.as_bytes(),
            headers: &signed,
            signed_headers: &signed_headers,
            payload_hash: payload,
            form: sigv4::AuthForm::Header,
        })
        .map_err(|e| anyhow::anyhow!("{path}: {e:?}"))?;
        let scope = format!("{}/{}/s3/aws4_request", amz.date(), self.region);
        let to_sign = sigv4::string_to_sign(amz.as_str(), &scope, &canonical);
        let key = sigv4::signing_key(&self.secret_key, amz.date(), &self.region, "s3");
        let signature = sigv4::to_hex(&sigv4::signature(&key, &to_sign));
        let mut req = format!("PUT {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: emload\r\n");
        for (n, v) in &signed {
            if *n != "host" {
                req.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        req.push_str(&format!(
            "Authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={signature}\r\n",
            self.access_key,
            names.join(";")
        ));
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let mut req = req.into_bytes();
        let start = req.len();
        req.resize(start + self.bytes, 0);
        for (i, b) in req[start..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        Ok(req)
    }
}

/// Splits `http://host:port/path?query` into (`host:port`, `/path?query`).
pub fn split_url(url: &str) -> Result<(&str, &str)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// URLs are supported");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    Ok((authority, path))
}

/// Expands a template: `{}` replaced by each of `offset..offset + keys`.
pub fn expand_template(template: &str, keys: u64, offset: u64) -> Result<Vec<String>> {
    if !template.contains(KEY_PLACEHOLDER) {
        if keys > 1 {
            bail!("--url-template {template}: no {KEY_PLACEHOLDER} to put the key number in");
        }
        return Ok(vec![template.to_string()]);
    }
    Ok((offset..offset + keys.max(1)).map(|i| template.replace(KEY_PLACEHOLDER, &i.to_string())).collect())
}

/// Renders the request head for `path`.
pub fn render_request(authority: &str, path: &str, headers: &[String]) -> Vec<u8> {
    let mut req = Vec::with_capacity(64 + path.len() + authority.len());
    req.extend_from_slice(b"GET ");
    req.extend_from_slice(path.as_bytes());
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    req.extend_from_slice(authority.as_bytes());
    req.extend_from_slice(b"\r\nUser-Agent: emload\r\n");
    for h in headers {
        req.extend_from_slice(h.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

impl Targets {
    pub fn build(spec: &TargetSpec) -> Result<Targets> {
        let mut urls: Vec<String> = spec.urls.clone();
        if let Some(t) = &spec.template {
            urls.extend(expand_template(t, spec.keys, spec.key_offset)?);
        }
        if let Some(file) = &spec.url_file {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("reading --url-file {}", file.display()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if line.starts_with('/') {
                    let Some(host) = &spec.host else {
                        bail!("{}: the line {line:?} is a path; give --host HOST:PORT", file.display());
                    };
                    urls.push(format!("http://{host}{line}"));
                } else {
                    urls.push(line.to_string());
                }
            }
        }
        if urls.is_empty() {
            bail!("nothing to request: give --url, --url-template or --url-file");
        }
        for h in &spec.headers {
            if !h.contains(':') || h.contains('\r') || h.contains('\n') {
                bail!("--header {h:?}: expected 'Name: value'");
            }
        }

        let (authority, first_path) = split_url(&urls[0])?;
        let authority = authority.to_string();
        let first_path = first_path.to_string();
        let mut requests = Vec::with_capacity(urls.len());
        let amz = sigv4::AmzDate::from_system_time(std::time::SystemTime::now())
            .ok_or_else(|| anyhow::anyhow!("the clock is before 1970"))?;
        for url in &urls {
            let (a, path) = split_url(url)?;
            if a != authority {
                bail!("{url}: every URL must name the same host:port ({authority})");
            }
            let rendered = match &spec.upload {
                None => render_request(&authority, path, &spec.headers),
                Some(upload) => upload.render(&authority, path, &spec.headers, &amz)?,
            };
            requests.push(&*Box::leak(rendered.into_boxed_slice()));
        }
        // Resolved once, here: a lookup per connection would block the runtime thread.
        let addr = authority
            .to_socket_addrs()
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        Ok(Targets { addr, requests: Box::leak(requests.into_boxed_slice()), first_path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(split_url("http://127.0.0.1:80/b/k?x=1").unwrap(), ("127.0.0.1:80", "/b/k?x=1"));
        assert_eq!(split_url("http://h:1").unwrap(), ("h:1", "/"));
        assert!(split_url("https://h/").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn expands_templates() {
        let v = expand_template("http://h:1/b/obj-{}", 3, 10).unwrap();
        assert_eq!(v, ["http://h:1/b/obj-10", "http://h:1/b/obj-11", "http://h:1/b/obj-12"]);
        assert!(expand_template("http://h:1/b/x", 2, 0).is_err());
        assert_eq!(expand_template("http://h:1/b/x", 1, 0).unwrap().len(), 1);
    }

    #[test]
    fn renders_a_request_and_rejects_mixed_hosts() {
        let r = render_request("h:1", "/b/k", &["X-A: 1".into()]);
        assert_eq!(r, b"GET /b/k HTTP/1.1\r\nHost: h:1\r\nUser-Agent: emload\r\nX-A: 1\r\n\r\n");
        let spec = TargetSpec {
            urls: vec!["http://127.0.0.1:1/a".into(), "http://127.0.0.1:2/b".into()],
            ..Default::default()
        };
        assert!(Targets::build(&spec).is_err());
        let spec = TargetSpec { template: Some("http://127.0.0.1:9/k{}".into()), keys: 4, ..Default::default() };
        let t = Targets::build(&spec).unwrap();
        assert_eq!(t.requests.len(), 4);
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(t.first_path, "/k0");
    }
}
