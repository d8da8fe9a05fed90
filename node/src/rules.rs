//! Mirror rules: the JD Cloud-compatible rule model (`BackSourceRule`), its validation, the
//! validated form the data plane uses ([`MirrorRule`]), and the per-bucket rule table that the
//! admin API swaps atomically and persists under `store.dir`.
//!
//! Two forms of a rule:
//! - [`BackSourceRule`]: the wire form, field names exactly as the reference open API
//!   (`backSourceType`, `condition.keyPrefixEquals`, `address.hostName`, `headerRule`, ...). What
//!   a PUT sends is what a GET returns (with defaults filled in).
//! - [`MirrorRule`]: validated and pre-digested for the request path (lower-cased header names,
//!   parsed host and port, normalised path).
//!
//! The table ([`RuleTable`]) is immutable; an update builds a new one and swaps it in through
//! `ArcSwap`, so every core sees the new rules on its next request without locks on the hot
//! path. Persistence is an atomic replace of `rules.json` (write temp, fsync, rename, fsync dir).
//!
//! Precedence, one source per bucket ([`RuleSource`]): a bucket whose config has
//! `[[buckets.mirror]]` rules is managed by the config file: the API reads its rules but refuses
//! to change them (409, saying why), and `rules.json` is never consulted for it. A bucket with
//! no `[[buckets.mirror]]` is managed by the API: its rules are what was last PUT (saved in
//! `rules.json`), none at first. Editing the file and restarting therefore always does what the
//! file says, and an API change is never silently undone by the file, nor the file by the API.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::netguard::AddressPolicy;

/// The reference feature allows at most 5 mirror rules per bucket.
pub const MAX_RULES_PER_BUCKET: usize = 5;

/// Most redirects a fill follows before giving up with 424.
pub const MAX_REDIRECTS: usize = 10;

/// Headers a rule may not name: the reference's list (x-oss-*, authorization, authorization2,
/// content-length, range, date) plus hop-by-hop headers (RFC 9110 §7.6.1), which describe one
/// connection and are never forwarded. None of these is ever passed to an origin, even when a
/// rule passes all headers: `range` in particular would turn a whole-object fill into a partial
/// one.
pub const FORBIDDEN_HEADERS: [&str; 15] = [
    "authorization",
    "authorization2",
    "content-length",
    "range",
    "date",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    // The fleet's secret (`fleet::PEER_HEADER`): a peer's request never passes it to an origin.
    "x-edgemirror-fleet",
];
pub const FORBIDDEN_HEADER_PREFIX: &str = "x-oss-";

pub fn is_forbidden_header(lower: &str) -> bool {
    lower.starts_with(FORBIDDEN_HEADER_PREFIX) || FORBIDDEN_HEADERS.contains(&lower)
}

// ---------------------------------------------------------------------------------------------
// Wire form (JSON, camelCase as the reference API).

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackSourceBody {
    #[serde(default)]
    pub back_source_rules: Vec<BackSourceRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackSourceRule {
    #[serde(default = "mirror_type")]
    pub back_source_type: String,
    #[serde(default)]
    pub condition: Condition,
    pub address: Address,
    #[serde(default)]
    pub allow_query_string: bool,
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    #[serde(default)]
    pub header_rule: HeaderRuleSpec,
    /// Our extension: when the origin sends Content-MD5, refuse to store a body that does not
    /// match it (the client's connection is cut).
    #[serde(default = "yes")]
    pub check_content_md5: bool,
    /// Our extension: let HEAD of an absent key trigger the mirror (off: HEAD answers 404 without
    /// contacting the origin, so SDK existence checks do not cause downloads).
    #[serde(default)]
    pub mirror_head: bool,
    /// Our extension: the origin statuses that move on to the next standby (`standbyUrls`);
    /// empty: every 5xx. Unreachable and timed-out origins always move on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_statuses: Vec<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key_prefix_equals: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_error_code_returned_equals: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Address {
    #[serde(default = "http")]
    pub protocol: String,
    pub host_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_key_with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_key_prefix_with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_key_suffix_with: Option<String>,
    /// Our extension: the MirrorURL path (`/dir1/` -> origin path `/dir1/<key>`).
    #[serde(default = "root")]
    pub path: String,
    /// Our extension: standby origins, whole MirrorURLs (`http://backup.example/dir1/`), asked in
    /// order when the one before failed (unreachable, timed out, breaker open, 5xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_urls: Vec<String>,
    /// Our extension: a weighted set instead of a primary and standbys. One weight per origin
    /// (the MirrorURL, then each standby); a key goes first to the origin its hash picks in
    /// proportion to the weights (the same origin every time, for the origin's own caches),
    /// then to the others in order. Weight 0: a standby only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origin_weights: Vec<u32>,
    /// Our extension: the origin is a private S3-compatible bucket at `protocol://hostName`;
    /// every request to it is signed (AWS Signature V4) with these credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3OriginSpec>,
}

/// A private S3-compatible origin (`address.s3`). `address.path` is then a key prefix within the
/// bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3OriginSpec {
    pub bucket: String,
    #[serde(default = "us_east_1")]
    pub region: String,
    pub access_key_id: String,
    /// Never shown back: GET of the rules answers [`REDACTED`].
    pub secret_access_key: String,
    /// `{bucket}.{hostName}` rather than `{hostName}/{bucket}`.
    #[serde(default)]
    pub virtual_host: bool,
}

/// What GET of the rules shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Rules sent back as GET showed them (the console edits, re-orders and saves whole lists): a
/// private S3 origin whose secret is still [`REDACTED`] takes the saved secret of the rule with
/// the same host, bucket and access key. Any other placeholder stays, and validation refuses it.
pub fn restore_secrets(rules: &mut [BackSourceRule], saved: &[BackSourceRule]) {
    for rule in rules {
        let host = rule.address.host_name.clone();
        let Some(s3) = rule.address.s3.as_mut().filter(|s| s.secret_access_key == REDACTED) else { continue };
        let same = saved.iter().filter(|r| r.address.host_name == host).filter_map(|r| r.address.s3.as_ref());
        if let Some(found) = same.into_iter().find(|o| o.bucket == s3.bucket && o.access_key_id == s3.access_key_id) {
            s3.secret_access_key = found.secret_access_key.clone();
        }
    }
}

fn us_east_1() -> String {
    "us-east-1".into()
}

impl BackSourceRule {
    /// The rule as GET of the rules shows it: secrets redacted.
    pub fn redacted(&self) -> BackSourceRule {
        let mut rule = self.clone();
        if let Some(s3) = rule.address.s3.as_mut() {
            s3.secret_access_key = REDACTED.into();
        }
        rule
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderRuleSpec {
    #[serde(default)]
    pub allow_all_headers: bool,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub not_allow_headers: Vec<String>,
    #[serde(default)]
    pub set_headers: BTreeMap<String, String>,
}

pub fn mirror_type() -> String {
    "mirror".into()
}
fn yes() -> bool {
    true
}
fn http() -> String {
    "http".into()
}
fn root() -> String {
    "/".into()
}

// ---------------------------------------------------------------------------------------------
// Validated form.

/// Where a rule fetches from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OriginAddr {
    pub tls: bool,
    /// Host name or IP literal, without brackets or port.
    pub host: String,
    pub port: u16,
    /// The `Host` header value: host, plus `:port` when not the scheme's default.
    pub host_header: String,
    /// Path prefix, always starting and ending with '/'.
    pub path: String,
}

impl OriginAddr {
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    pub fn new(tls: bool, host: &str, port: Option<u16>, path: &str) -> OriginAddr {
        let default_port = if tls { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let host_header = match (port == default_port, bare.contains(':')) {
            (true, false) => bare.clone(),
            (true, true) => format!("[{bare}]"),
            (false, false) => format!("{bare}:{port}"),
            (false, true) => format!("[{bare}]:{port}"),
        };
        let mut path = path.to_string();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        OriginAddr { tls, host: bare, port, host_header, path }
    }
}

/// How the origin key is derived from the requested key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRewrite {
    /// Origin key = requested key.
    None,
    /// `replaceKeyWith`: a template in which `${key}` stands for the requested key.
    Whole(String),
    /// `replaceKeyPrefixWith` replaces the matched prefix; `replaceKeySuffixWith` is appended.
    Affix { prefix: Option<String>, suffix: Option<String> },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRule {
    pub allow_all: bool,
    /// Lower-cased.
    pub allow: Vec<String>,
    /// Lower-cased.
    pub not_allow: Vec<String>,
    /// Lower-cased names, values as given.
    pub set: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorRule {
    pub key_prefix: String,
    pub origin: OriginAddr,
    /// Asked in order when the origin before failed.
    pub standbys: Vec<OriginAddr>,
    /// Statuses that count as failures for the failover (empty: every 5xx).
    pub failover_statuses: Vec<u16>,
    /// `address.originWeights` (empty: primary first, then standbys in order).
    pub weights: Vec<u32>,
    /// A private S3 origin's signer (`address.s3`).
    pub s3: Option<std::sync::Arc<S3Signer>>,
    pub key_rewrite: KeyRewrite,
    pub allow_query_string: bool,
    pub follow_redirects: bool,
    pub headers: HeaderRule,
    pub check_content_md5: bool,
    pub mirror_head: bool,
}

impl MirrorRule {
    /// The order in which `key`'s origins are asked: indexes into the MirrorURL (0) and the
    /// standbys (1..). With weights, the first is picked by the key's hash in proportion to
    /// them (stable across processes: FNV-1a), the rest follow in order.
    pub fn origin_order(&self, key: &str) -> Vec<usize> {
        let all: Vec<usize> = (0..=self.standbys.len()).collect();
        let total: u64 = self.weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return all;
        }
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let mut point = hash % total;
        let first = self
            .weights
            .iter()
            .position(|w| {
                let w = u64::from(*w);
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            })
            .unwrap_or(0);
        std::iter::once(first).chain(all.into_iter().filter(|i| *i != first)).collect()
    }

    /// Whether an origin's `status` moves on to the next standby.
    pub fn fails_over(&self, status: u16) -> bool {
        if self.failover_statuses.is_empty() {
            status >= 500
        } else {
            self.failover_statuses.contains(&status)
        }
    }

    /// The key to ask the origin for.
    pub fn origin_key(&self, key: &str) -> String {
        match &self.key_rewrite {
            KeyRewrite::None => key.to_string(),
            KeyRewrite::Whole(template) => template.replace("${key}", key),
            KeyRewrite::Affix { prefix, suffix } => {
                let mut k = match prefix {
                    Some(p) => format!("{p}{}", &key[self.key_prefix.len().min(key.len())..]),
                    None => key.to_string(),
                };
                if let Some(s) = suffix {
                    k.push_str(s);
                }
                k
            }
        }
    }
}

/// The first rule whose key prefix matches `key`.
pub fn match_rule<'a>(rules: &'a [MirrorRule], key: &str) -> Option<&'a MirrorRule> {
    rules.iter().find(|r| key.starts_with(r.key_prefix.as_str()))
}

/// Validates one wire rule. Errors name the field relative to the rule (`address.hostName: ...`).
///
/// A host given as an IP literal (in any form the resolver accepts: `127.1`, `2130706433`,
/// `[::ffff:127.0.0.1]`, `localhost.`) is checked against `policy` now, for a clear error; every
/// host is checked again, resolved, at each connect (`origin.rs`).
pub fn validate_rule(rule: &BackSourceRule, policy: &AddressPolicy) -> Result<MirrorRule, String> {
    if rule.back_source_type != "mirror" {
        return Err(format!("backSourceType: '{}' is not supported (only \"mirror\")", rule.back_source_type));
    }
    if let Some(code) = rule.condition.http_error_code_returned_equals {
        if code != 404 {
            return Err(format!("condition.httpErrorCodeReturnedEquals: {code} is not supported (only 404)"));
        }
    }
    let prefix = &rule.condition.key_prefix_equals;
    if prefix.len() > 1024 || prefix.chars().any(char::is_control) {
        return Err("condition.keyPrefixEquals: at most 1024 bytes, no control characters".into());
    }
    let a = &rule.address;
    let tls = match a.protocol.as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("address.protocol: '{other}' is not http or https")),
    };
    let (host, port) = parse_host_port(&a.host_name).map_err(|e| format!("address.hostName: {e}"))?;
    if !a.path.starts_with('/') || a.path.contains(['?', '#']) || a.path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(
            "address.path: must start with '/' and hold no query, fragment, spaces or control characters".into()
        );
    }
    let mut origin = OriginAddr::new(tls, &host, port, &a.path);
    let s3 = match &a.s3 {
        None => None,
        Some(spec) => {
            if !a.standby_urls.is_empty() || rule.allow_query_string {
                return Err("address.s3: an S3 origin takes no standbyUrls and no allowQueryString".into());
            }
            let signer = S3Signer::new(&origin, spec)?;
            // Requests go where the signed URL points (the bucket's host in virtual-host style).
            origin = OriginAddr::new(tls, &signer.host, port, "/");
            Some(std::sync::Arc::new(signer))
        }
    };
    if let Err(refusal) = policy.check_literal(&origin.host, origin.port) {
        return Err(format!("address.hostName: '{}': {refusal}", a.host_name));
    }
    if a.standby_urls.len() > MAX_STANDBYS {
        return Err(format!("address.standbyUrls: at most {MAX_STANDBYS} standby origins"));
    }
    let mut standbys = Vec::with_capacity(a.standby_urls.len());
    for (i, url) in a.standby_urls.iter().enumerate() {
        let standby = parse_mirror_url(url).map_err(|e| format!("address.standbyUrls[{i}]: {e}"))?;
        if let Err(refusal) = policy.check_literal(&standby.host, standby.port) {
            return Err(format!("address.standbyUrls[{i}]: '{url}': {refusal}"));
        }
        standbys.push(standby);
    }
    if let Some((i, s)) = rule.failover_statuses.iter().enumerate().find(|(_, s)| !(400..=599).contains(*s)) {
        return Err(format!("failoverStatuses[{i}]: {s} is not an error status (400-599)"));
    }
    if !a.origin_weights.is_empty() {
        if a.origin_weights.len() != 1 + standbys.len() {
            return Err(format!(
                "address.originWeights: one weight per origin ({}: the MirrorURL and each standbyUrls)",
                1 + standbys.len()
            ));
        }
        if a.origin_weights.iter().all(|w| *w == 0) || a.origin_weights.iter().any(|w| *w > 1_000_000) {
            return Err("address.originWeights: at least one above 0, each at most 1000000".into());
        }
    }
    let key_rewrite = match (&a.replace_key_with, &a.replace_key_prefix_with, &a.replace_key_suffix_with) {
        (None, None, None) => KeyRewrite::None,
        (Some(t), None, None) => {
            check_key_part("address.replaceKeyWith", t)?;
            KeyRewrite::Whole(t.clone())
        }
        (Some(_), _, _) => {
            return Err(
                "address.replaceKeyWith: cannot be combined with replaceKeyPrefixWith or replaceKeySuffixWith".into()
            )
        }
        (None, p, s) => {
            if let Some(p) = p {
                check_key_part("address.replaceKeyPrefixWith", p)?;
            }
            if let Some(s) = s {
                check_key_part("address.replaceKeySuffixWith", s)?;
            }
            KeyRewrite::Affix { prefix: p.clone(), suffix: s.clone() }
        }
    };
    let headers = validate_header_rule(&rule.header_rule)?;
    Ok(MirrorRule {
        key_prefix: prefix.clone(),
        origin,
        standbys,
        failover_statuses: rule.failover_statuses.clone(),
        weights: a.origin_weights.clone(),
        s3,
        key_rewrite,
        allow_query_string: rule.allow_query_string,
        follow_redirects: rule.follow_redirects,
        headers,
        check_content_md5: rule.check_content_md5,
        mirror_head: rule.mirror_head,
    })
}

/// Signs requests to a private S3-compatible origin: presigned URLs (the query form of AWS
/// Signature V4) made by `rusty-s3`, a sans-I/O S3 request builder, so the monoio origin client
/// sends them as it sends any request.
pub struct S3Signer {
    bucket: rusty_s3::Bucket,
    credentials: rusty_s3::Credentials,
    /// Key prefix within the bucket (`address.path` without its leading '/').
    prefix: String,
    /// The host the signed URLs name (the bucket's own in virtual-host style).
    host: String,
}

impl std::fmt::Debug for S3Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Signer").field("bucket", &self.bucket.name()).field("prefix", &self.prefix).finish()
    }
}

impl PartialEq for S3Signer {
    fn eq(&self, other: &S3Signer) -> bool {
        self.bucket.base_url() == other.bucket.base_url() && self.prefix == other.prefix
    }
}

impl Eq for S3Signer {}

/// How long a signed origin request stays valid: it is sent at once.
const S3_SIGNATURE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

impl S3Signer {
    /// A signer for `spec`'s bucket at `origin`, whose path (without its leading '/') is the
    /// key prefix within the bucket.
    pub fn new(origin: &OriginAddr, spec: &S3OriginSpec) -> Result<S3Signer, String> {
        if spec.bucket.is_empty() || spec.access_key_id.is_empty() || spec.secret_access_key.is_empty() {
            return Err("address.s3: bucket, accessKeyId and secretAccessKey are required".into());
        }
        if spec.secret_access_key == REDACTED {
            return Err("address.s3.secretAccessKey: give the secret (GET of the rules never shows it)".into());
        }
        let endpoint = format!("{}://{}", origin.scheme(), origin.host_header);
        let endpoint = url::Url::parse(&endpoint).map_err(|e| format!("address.hostName: {e}"))?;
        let style = if spec.virtual_host { rusty_s3::UrlStyle::VirtualHost } else { rusty_s3::UrlStyle::Path };
        let bucket = rusty_s3::Bucket::new(endpoint, style, spec.bucket.clone(), spec.region.clone())
            .map_err(|e| format!("address.s3.bucket: {e}"))?;
        let host = bucket.base_url().host_str().unwrap_or(&origin.host).to_string();
        Ok(S3Signer {
            credentials: rusty_s3::Credentials::new(spec.access_key_id.clone(), spec.secret_access_key.clone()),
            bucket,
            prefix: origin.path.trim_start_matches('/').to_string(),
            host,
        })
    }

    /// The signed path and query of a ListObjectsV2 page of the rule's prefix in the bucket,
    /// after `continuation` when given.
    pub fn signed_list_path(&self, continuation: Option<&str>) -> String {
        use rusty_s3::S3Action as _;
        let mut list = self.bucket.list_objects_v2(Some(&self.credentials));
        if !self.prefix.is_empty() {
            list.with_prefix(self.prefix.as_str());
        }
        if let Some(token) = continuation {
            list.with_continuation_token(token);
        }
        list.with_max_keys(1000);
        path_and_query(&list.sign(S3_SIGNATURE_TTL))
    }

    /// The signed path and query of a PUT of `key` (after the prefix) with `headers` signed
    /// too (lowercase names; the request must send exactly these values).
    pub fn signed_put_path(&self, key: &str, headers: &[(&str, &str)]) -> String {
        use rusty_s3::S3Action as _;
        let object = format!("{}{key}", self.prefix);
        let mut put = self.bucket.put_object(Some(&self.credentials), &object);
        for (name, value) in headers {
            put.headers_mut().insert(*name, *value);
        }
        path_and_query(&put.sign(S3_SIGNATURE_TTL))
    }

    /// The signed path and query of a DELETE of `key` (after the prefix).
    pub fn signed_delete_path(&self, key: &str) -> String {
        use rusty_s3::S3Action as _;
        let object = format!("{}{key}", self.prefix);
        path_and_query(&self.bucket.delete_object(Some(&self.credentials), &object).sign(S3_SIGNATURE_TTL))
    }

    /// The signed path and query of one ListObjectsV2 page under `prefix` (after the signer's
    /// own), with a delimiter, a page size and a continuation token or a start-after key when
    /// given (both after the signer's prefix too).
    pub fn signed_list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        max_keys: usize,
        continuation: Option<&str>,
        start_after: Option<&str>,
    ) -> String {
        use rusty_s3::S3Action as _;
        let mut list = self.bucket.list_objects_v2(Some(&self.credentials));
        list.with_prefix(format!("{}{prefix}", self.prefix));
        if let Some(d) = delimiter {
            list.query_mut().insert("delimiter", d.to_string());
        }
        if let Some(token) = continuation {
            list.with_continuation_token(token.to_string());
        }
        if let Some(after) = start_after {
            list.with_start_after(format!("{}{after}", self.prefix));
        }
        list.with_max_keys(max_keys);
        path_and_query(&list.sign(S3_SIGNATURE_TTL))
    }

    /// The host the signed URLs name (the `Host` header to send).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The key prefix within the bucket: an origin key is this + the local key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The signed path and query of a GET or HEAD of `key` (the origin key, after the rule's
    /// rewrite).
    pub fn signed_path(&self, head: bool, key: &str) -> String {
        use rusty_s3::S3Action as _;
        let object = format!("{}{key}", self.prefix);
        let url = if head {
            self.bucket.head_object(Some(&self.credentials), &object).sign(S3_SIGNATURE_TTL)
        } else {
            self.bucket.get_object(Some(&self.credentials), &object).sign(S3_SIGNATURE_TTL)
        };
        path_and_query(&url)
    }
}

/// A signed URL's `path?query`, the request target sent to the origin.
fn path_and_query(url: &url::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// Standby origins a rule may list.
pub const MAX_STANDBYS: usize = 4;

/// A whole MirrorURL (`http://host[:port]/path/`) as an origin.
pub fn parse_mirror_url(url: &str) -> Result<OriginAddr, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("'{url}' is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("'{url}' must start with http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| format!("'{url}' has no host"))?;
    if uri.query().is_some() {
        return Err(format!("'{url}': a MirrorURL cannot carry a query string"));
    }
    let (host, port) = parse_host_port(authority.as_str())?;
    let path = if uri.path().ends_with('/') { uri.path().to_string() } else { format!("{}/", uri.path()) };
    Ok(OriginAddr::new(tls, &host, port, &path))
}

fn check_key_part(field: &str, v: &str) -> Result<(), String> {
    if v.len() > 1024 || v.chars().any(char::is_control) {
        return Err(format!("{field}: at most 1024 bytes, no control characters"));
    }
    Ok(())
}

fn validate_header_rule(h: &HeaderRuleSpec) -> Result<HeaderRule, String> {
    let name = |field: &str, i: usize, n: &str, host_ok: bool| -> Result<String, String> {
        let lower = n.to_ascii_lowercase();
        if lower.is_empty() || !lower.bytes().all(is_token_byte) {
            return Err(format!("headerRule.{field}[{i}]: '{n}' is not a valid header name"));
        }
        if is_forbidden_header(&lower) || (lower == "host" && !host_ok) {
            return Err(format!("headerRule.{field}[{i}]: the header '{n}' cannot be configured"));
        }
        Ok(lower)
    };
    let allow =
        h.allow_headers.iter().enumerate().map(|(i, n)| name("allowHeaders", i, n, true)).collect::<Result<_, _>>()?;
    // Host may be named here: with allowAllHeaders this is how an operator keeps the client's
    // Host (bucket.endpoint) from reaching an origin that checks it.
    let not_allow = h
        .not_allow_headers
        .iter()
        .enumerate()
        .map(|(i, n)| name("notAllowHeaders", i, n, true))
        .collect::<Result<_, _>>()?;
    let mut set = Vec::with_capacity(h.set_headers.len());
    for (i, (n, v)) in h.set_headers.iter().enumerate() {
        let lower = name("setHeaders", i, n, false)?;
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("headerRule.setHeaders.{n}: the value holds CR, LF or NUL"));
        }
        set.push((lower, v.clone()));
    }
    Ok(HeaderRule { allow_all: h.allow_all_headers, allow, not_allow, set })
}

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits `host[:port]` (IPv6 in brackets).
pub fn parse_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.contains(['/', '?', '#', '@', ' ']) || s.chars().any(char::is_control) {
        return Err(format!("'{s}' must be a host name or IP, with an optional :port"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("'{s}': unclosed '['"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| format!("'{s}': junk after ']'"))?),
        };
        (h.to_string(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
            Some(_) => return Err(format!("'{s}': put an IPv6 address in brackets")),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("'{s}': bad port"))?),
        None => None,
    };
    if host.is_empty() {
        return Err(format!("'{s}': empty host"));
    }
    Ok((host, port))
}

/// Validates a whole list (as a PUT sends it). Errors name the field:
/// `backSourceRules[2].address.hostName: ...`.
pub fn validate_list(rules: &[BackSourceRule], policy: &AddressPolicy) -> Result<Vec<MirrorRule>, String> {
    if rules.len() > MAX_RULES_PER_BUCKET {
        return Err(format!("backSourceRules: {} rules; at most {MAX_RULES_PER_BUCKET} are allowed", rules.len()));
    }
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(r, policy).map_err(|e| format!("backSourceRules[{i}].{e}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The table.

/// Where a bucket's rules come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RuleSource {
    /// `[[buckets.mirror]]` in the config file; the API may not change them.
    Config,
    /// The admin API, persisted in `rules.json`.
    #[default]
    Api,
}

impl RuleSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleSource::Config => "config",
            RuleSource::Api => "api",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct BucketRules {
    pub source: RuleSource,
    /// As set (wire form, defaults filled in), for GET.
    pub spec: Vec<BackSourceRule>,
    pub rules: Vec<MirrorRule>,
}

/// Rules of every configured bucket. Immutable; replaced whole on update.
#[derive(Clone, Debug, Default)]
pub struct RuleTable {
    pub buckets: HashMap<String, BucketRules>,
}

impl RuleTable {
    pub fn rules(&self, bucket: &str) -> Option<&BucketRules> {
        self.buckets.get(bucket)
    }

    pub fn with_bucket(
        &self,
        bucket: &str,
        source: RuleSource,
        spec: Vec<BackSourceRule>,
        rules: Vec<MirrorRule>,
    ) -> RuleTable {
        let mut t = self.clone();
        t.buckets.insert(bucket.to_string(), BucketRules { source, spec, rules });
        t
    }

    /// Rules across every bucket.
    pub fn rule_count(&self) -> usize {
        self.buckets.values().map(|b| b.rules.len()).sum()
    }

    /// This table without `bucket`'s rules (its DeleteBucket).
    pub fn without_bucket(&self, bucket: &str) -> RuleTable {
        let mut t = self.clone();
        t.buckets.remove(bucket);
        t
    }
}

/// On-disk form of the persisted rules.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedRules {
    pub version: u32,
    pub buckets: BTreeMap<String, BackSourceBody>,
}

pub fn rules_path(store_dir: &Path) -> PathBuf {
    store_dir.join("rules.json")
}

/// Reads persisted rules; a missing file is an empty set.
pub fn load_persisted(store_dir: &Path) -> anyhow::Result<PersistedRules> {
    let path = rules_path(store_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(PersistedRules { version: 1, buckets: BTreeMap::new() })
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Writes the API-managed buckets' specs to `rules.json` atomically: a reader (or a crash) sees
/// the old file or the new one, never a mix. Config-managed buckets are not written: the file
/// holds only what the API set.
pub fn persist(store_dir: &Path, table: &RuleTable) -> std::io::Result<()> {
    let persisted = PersistedRules {
        version: 1,
        buckets: table
            .buckets
            .iter()
            .filter(|(_, b)| b.source == RuleSource::Api)
            .map(|(name, b)| (name.clone(), BackSourceBody { back_source_rules: b.spec.clone() }))
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&persisted).map_err(std::io::Error::other)?;
    replace_file(store_dir, &rules_path(store_dir), &json)
}

/// Replaces `path` (a file in `dir`) with `bytes` atomically and durably: write a temporary
/// file, fsync it, rename it over `path`, fsync the directory.
pub fn replace_file(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule_json(json: &str) -> BackSourceRule {
        serde_json::from_str(json).unwrap()
    }

    fn open() -> AddressPolicy {
        AddressPolicy::new(&[], &[]).with_allow_private(true)
    }

    fn valid(json: &str) -> MirrorRule {
        validate_rule(&rule_json(json), &open()).unwrap()
    }

    fn invalid(json: &str) -> String {
        let policy = AddressPolicy::new(&["127.0.0.1:8080".parse().unwrap()], &[]).with_allow_private(true);
        validate_rule(&rule_json(json), &policy).unwrap_err()
    }

    #[test]
    fn defaults_match_the_reference() {
        let r = rule_json(r#"{"address":{"hostName":"source.com"}}"#);
        assert_eq!(r.back_source_type, "mirror");
        assert!(r.follow_redirects);
        assert!(!r.allow_query_string);
        let m = validate_rule(&r, &open()).unwrap();
        assert_eq!(m.origin.host_header, "source.com");
        assert_eq!(m.origin.port, 80);
        assert_eq!(m.origin.path, "/");
        assert_eq!(m.headers, HeaderRule::default());
    }

    #[test]
    fn key_rewrites() {
        let m = valid(
            r#"{"condition":{"keyPrefixEquals":"img/"},"address":{"hostName":"h","replaceKeyWith":"pics/${key}.orig"}}"#,
        );
        assert_eq!(m.origin_key("img/a.jpg"), "pics/img/a.jpg.orig");
        let m = valid(
            r#"{"condition":{"keyPrefixEquals":"img/"},"address":{"hostName":"h","replaceKeyPrefixWith":"static/images/"}}"#,
        );
        assert_eq!(m.origin_key("img/a.jpg"), "static/images/a.jpg");
        let m = valid(r#"{"address":{"hostName":"h","replaceKeySuffixWith":".webp"}}"#);
        assert_eq!(m.origin_key("a.jpg"), "a.jpg.webp");
        let m = valid(
            r#"{"condition":{"keyPrefixEquals":"a/"},"address":{"hostName":"h","replaceKeyPrefixWith":"b/","replaceKeySuffixWith":"!"}}"#,
        );
        assert_eq!(m.origin_key("a/x"), "b/x!");
        assert_eq!(valid(r#"{"address":{"hostName":"h"}}"#).origin_key("k"), "k");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (r#"{"backSourceType":"redirect","address":{"hostName":"h"}}"#, "backSourceType"),
            (
                r#"{"condition":{"httpErrorCodeReturnedEquals":403},"address":{"hostName":"h"}}"#,
                "httpErrorCodeReturnedEquals",
            ),
            (r#"{"address":{"protocol":"ftp","hostName":"h"}}"#, "address.protocol"),
            (r#"{"address":{"hostName":""}}"#, "address.hostName"),
            (r#"{"address":{"hostName":"h:99999"}}"#, "address.hostName"),
            (r#"{"address":{"hostName":"h/x"}}"#, "address.hostName"),
            (r#"{"address":{"hostName":"127.0.0.1:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"localhost:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"127.1:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"2130706433:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"0:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"0.0.0.0:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"[::ffff:127.0.0.1]:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"localhost.:8080"}}"#, "own listener"),
            (r#"{"address":{"hostName":"169.254.169.254"}}"#, "metadata"),
            (r#"{"address":{"hostName":"h","path":"dir"}}"#, "address.path"),
            (r#"{"address":{"hostName":"h","replaceKeyWith":"a","replaceKeyPrefixWith":"b"}}"#, "replaceKeyWith"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"allowHeaders":["Authorization"]}}"#, "allowHeaders[0]"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"allowHeaders":["x-oss-meta"]}}"#, "allowHeaders[0]"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"notAllowHeaders":["ok","Range"]}}"#, "notAllowHeaders[1]"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"setHeaders":{"Date":"x"}}}"#, "setHeaders"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"setHeaders":{"host":"x"}}}"#, "setHeaders"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"setHeaders":{"a":"x\r\ny: 1"}}}"#, "setHeaders.a"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"allowHeaders":["bad name"]}}"#, "allowHeaders[0]"),
            (r#"{"address":{"hostName":"h"},"headerRule":{"allowHeaders":["Transfer-Encoding"]}}"#, "allowHeaders[0]"),
        ];
        for (json, field) in cases {
            let e = invalid(json);
            assert!(e.contains(field), "{json}: error {e:?} should name {field}");
        }
        let six: Vec<BackSourceRule> = (0..6).map(|_| rule_json(r#"{"address":{"hostName":"h"}}"#)).collect();
        assert!(validate_list(&six, &open()).unwrap_err().starts_with("backSourceRules:"));
        let mut two = six[..2].to_vec();
        two[1].address.host_name.clear();
        assert!(validate_list(&two, &open()).unwrap_err().starts_with("backSourceRules[1].address.hostName"));
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        assert!(serde_json::from_str::<BackSourceRule>(r#"{"address":{"hostName":"h"},"bogus":1}"#).is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(parse_host_port("a.b:81").unwrap(), ("a.b".into(), Some(81)));
        assert_eq!(parse_host_port("[::1]:81").unwrap(), ("::1".into(), Some(81)));
        assert_eq!(parse_host_port("[::1]").unwrap(), ("::1".into(), None));
        assert!(parse_host_port("::1").is_err());
        let o = OriginAddr::new(false, "::1", Some(81), "/d");
        assert_eq!((o.host_header.as_str(), o.path.as_str()), ("[::1]:81", "/d/"));
    }

    #[test]
    fn rules_match_in_order_by_prefix() {
        let rules = [
            valid(r#"{"condition":{"keyPrefixEquals":"img/"},"address":{"hostName":"a"}}"#),
            valid(r#"{"address":{"hostName":"b"}}"#),
        ];
        assert_eq!(match_rule(&rules, "img/x.jpg").unwrap().origin.host, "a");
        assert_eq!(match_rule(&rules, "doc/y").unwrap().origin.host, "b");
        assert!(match_rule(&rules[..1], "doc/y").is_none());
    }

    #[test]
    fn persistence_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let spec = vec![rule_json(r#"{"address":{"hostName":"h"},"headerRule":{"setHeaders":{"c-header":"000"}}}"#)];
        let rules = validate_list(&spec, &open()).unwrap();
        let table = RuleTable::default().with_bucket("bkt", RuleSource::Api, spec.clone(), rules.clone()).with_bucket(
            "file",
            RuleSource::Config,
            spec.clone(),
            rules,
        );
        persist(dir.path(), &table).unwrap();
        let back = load_persisted(dir.path()).unwrap();
        assert_eq!(back.buckets["bkt"].back_source_rules, spec);
        assert!(!back.buckets.contains_key("file"), "config-managed rules are not saved");
    }

    #[test]
    fn a_redacted_secret_sent_back_keeps_the_saved_one_of_the_same_origin_only() {
        let private = |host: &str, key: &str, secret: &str| {
            rule_json(&format!(
                r#"{{"address":{{"hostName":"{host}","s3":{{"bucket":"b","accessKeyId":"{key}","secretAccessKey":"{secret}"}}}}}}"#
            ))
        };
        let saved = vec![private("s3.example", "AK1", "real-secret")];
        let mut sent = vec![
            private("s3.example", "AK1", REDACTED),
            private("s3.example", "AK2", REDACTED),
            private("other.example", "AK1", REDACTED),
            private("s3.example", "AK1", "a-new-secret"),
        ];
        restore_secrets(&mut sent, &saved);
        let secrets: Vec<&str> =
            sent.iter().map(|r| r.address.s3.as_ref().unwrap().secret_access_key.as_str()).collect();
        assert_eq!(secrets, ["real-secret", REDACTED, REDACTED, "a-new-secret"]);
    }
}
