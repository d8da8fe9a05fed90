//! Configuration: TOML parsed once into [`RawConfig`] (serde, unknown keys rejected, documented
//! defaults), then validated into [`Config`]. Handlers only ever see validated types.
//!
//! Every validation error starts with the dotted path of the offending field
//! (`buckets[0].mirror[1].url: ...`), so a bad config names what to fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgemirror_cache::{HotConfig, SyncPolicy};
use serde::{Deserialize, Serialize};

use crate::netguard::AddressPolicy;
use crate::rules::{self, BackSourceRule, MAX_RULES_PER_BUCKET};
use crate::tls;

/// The config `edgemirror` runs with when given no `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub origin: RawOrigin,
    #[serde(default)]
    pub buckets: Vec<RawBucket>,
    /// The HTTPS listener; absent: plain HTTP only.
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub s3: RawS3,
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// A fleet of edges (absent: this node alone).
    pub fleet: Option<RawFleet>,
}

/// `[fleet]`: the edges that share the origin's work (see `fleet.rs`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// This node's data-plane URL, exactly as it appears in `peers`.
    #[serde(rename = "self")]
    pub self_url: String,
    /// Every node's data-plane URL, this one's included.
    pub peers: Vec<String>,
    /// Shared by every node: proves a request came from a peer.
    pub secret: String,
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
}

fn default_probe_interval_ms() -> u64 {
    1000
}

/// `[access_log]`: one line per request (see `accesslog.rs`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccessLog {
    /// Empty: off; `stdout`; or a file (appended to, reopened on SIGUSR1).
    pub path: String,
    /// `json` (default) or `combined`.
    pub format: String,
    /// Lines wait at most this long in memory before they are written.
    pub flush_ms: u64,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog { path: String::new(), format: "json".into(), flush_ms: 200 }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawS3 {
    /// The region clients sign for (SigV4 scopes naming another are refused).
    pub region: String,
    /// Virtual-host addressing: `{bucket}.{domain}`; empty = path style only (path style always
    /// works).
    pub domain: String,
    /// Access keys allowed to sign requests; none = every write is refused.
    pub keys: Vec<RawS3Key>,
}

impl Default for RawS3 {
    fn default() -> Self {
        RawS3 { region: "us-east-1".into(), domain: String::new(), keys: Vec::new() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Key {
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// HTTPS data-plane listen address; the same routes as `[server]`.
    pub listen: String,
    /// One or more certificates, chosen by SNI; the first is the default.
    pub certs: Vec<RawCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    /// PEM certificate chain (relative paths are relative to the config file).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Data-plane listen address.
    pub listen: String,
    /// Worker threads, one runtime and listener each; 0 = one per core.
    pub workers: usize,
    /// Time allowed for a request head to arrive once its first byte has (slowloris guard).
    pub header_timeout_ms: u64,
    /// How long a keep-alive connection may sit idle between requests.
    pub idle_timeout_ms: u64,
    /// How long a write to a client may stall before the connection is dropped.
    pub write_timeout_ms: u64,
    /// How long a request body (an upload) may stall between two reads.
    pub body_timeout_ms: u64,
    /// Open client connections one worker holds at most; more are closed on accept.
    pub max_connections_per_worker: usize,
    /// Largest request head (431 above); at most 16384.
    pub max_head_bytes: usize,
    /// Most header fields in a request (431 above); at most 64.
    pub max_headers: usize,
    /// Longest request target (414 above); at most 8192.
    pub max_uri_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 30_000,
            body_timeout_ms: 30_000,
            max_connections_per_worker: 10_000,
            max_head_bytes: edgemirror_proto::MAX_HEAD_BYTES,
            max_headers: edgemirror_proto::MAX_HEADERS,
            max_uri_bytes: edgemirror_proto::MAX_URI_BYTES,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
    /// Bearer token for the admin API; empty disables the authenticated endpoints.
    pub token: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin { listen: "127.0.0.1:8081".into(), token: String::new() }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub dir: PathBuf,
    /// Capacity of one segment file.
    pub segment_bytes: u64,
    /// Largest object the store will hold.
    pub max_object_bytes: u64,
    /// "never", "interval" or "always" (see `SyncPolicy`).
    pub sync: String,
    /// Threads computing the MD5 (ETag) and CRC-32C (record check) of mirrored bodies off the
    /// workers, for the bodies a worker does not hash with others itself (`hash::LocalLanes`); 0
    /// hashes inline (bodies of up to 16 KiB are always hashed inline: `hash::INLINE_MAX_BYTES`).
    pub hash_threads: usize,
    pub sync_interval_ms: u64,
    /// Most bytes of segment files; 0 = no limit but the disk's.
    pub max_bytes: u64,
    /// Free space left on the store's filesystem; writes that would eat into it are refused.
    pub min_free_bytes: u64,
    /// How often compaction looks for segments to rewrite; 0 = never in the background.
    pub compaction_interval_ms: u64,
    /// A sealed segment is rewritten once this share of its bytes is dead (0.0-1.0).
    pub compaction_min_dead_ratio: f64,
    /// Compaction's copy rate limit.
    pub compaction_bytes_per_sec: u64,
    /// Multipart uploads neither completed nor aborted after this long are aborted.
    pub multipart_max_age_s: u64,
    /// How a GET reads a stored object whose bytes are not in memory: "async" (an io_uring
    /// read, the core serving other requests meanwhile) or "fault" (through the mapping).
    pub cold_reads: String,
    /// "local" (this node's segments hold the objects of record) or "s3" (a shared
    /// S3-compatible store does, `[store.s3]`; the local segments are a cache in front of it).
    pub backend: String,
    pub s3: Option<RawSharedStore>,
}

/// `[store.s3]`: the shared store of record for `store.backend = "s3"` (see `sharedstore.rs`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedStore {
    /// `http(s)://host[:port]` of the S3 API, one per node of the cluster (or one load
    /// balancer): each key starts at one picked by its hash, and a failed request moves to the
    /// next.
    pub endpoints: Vec<String>,
    pub bucket: String,
    /// Prepended to `{bucket}/{key}` for every object's name in the shared bucket.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `{bucket}.{host}` rather than `{host}/{bucket}`.
    #[serde(default)]
    pub virtual_host: bool,
    /// A local copy is served without asking the shared store for at most this long after it
    /// was last found current there: the bound on how stale a node's answer can be after a PUT
    /// or DELETE through another node.
    #[serde(default = "default_staleness_ms")]
    pub staleness_ms: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_staleness_ms() -> u64 {
    1000
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            dir: PathBuf::from("./edgemirror-data"),
            segment_bytes: 256 << 20,
            max_object_bytes: 64 << 30,
            sync: "interval".into(),
            hash_threads: 1,
            sync_interval_ms: 1000,
            max_bytes: 0,
            min_free_bytes: 256 << 20,
            compaction_interval_ms: 30_000,
            compaction_min_dead_ratio: 0.5,
            compaction_bytes_per_sec: 64 << 20,
            multipart_max_age_s: 7 * 24 * 3600,
            cold_reads: "async".into(),
            backend: "local".into(),
            s3: None,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    pub memory_bytes: u64,
    /// foyer disk tier; 0 disables it.
    pub disk_bytes: u64,
    /// Where the disk tier lives (fast disk); default `<store.dir>/cache`.
    pub dir: Option<PathBuf>,
    /// Largest object cached whole in foyer; larger ones are served from the store's mapping.
    pub max_object_bytes: u64,
    /// Store hits of 32-128 KiB over plain HTTP go out with `sendfile` from the page cache (and
    /// are not copied into foyer); off, they are copied like the others (as nginx's
    /// `sendfile off`, for filesystems where `sendfile` misbehaves).
    pub sendfile: bool,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache { memory_bytes: 256 << 20, disk_bytes: 1 << 30, dir: None, max_object_bytes: 1 << 20, sendfile: true }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOrigin {
    pub connect_timeout_ms: u64,
    /// From request sent to response head received.
    pub first_byte_timeout_ms: u64,
    /// Longest pause between two reads of an origin body.
    pub idle_timeout_ms: u64,
    /// Keep fetching and store the object when every client of a fill has gone.
    pub complete_on_client_abort: bool,
    /// Extra trusted roots (PEM) for https origins, on top of the webpki root set.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification of https origins. For test origins only; logged loudly.
    pub insecure_skip_verify: bool,
    /// May origins (and their redirects) resolve to private, loopback or this host's addresses?
    /// A self-hosted edge usually mirrors from an internal origin, hence on by default; a node
    /// whose rules are set by others (multi-tenant) turns it off.
    pub allow_private: bool,
    /// Host names or IPs allowed although they resolve to link-local or cloud metadata
    /// addresses (169.254.169.254 ...), which are refused otherwise.
    pub allow_link_local: Vec<String>,
    /// Failures (unreachable, timed out, 5xx) of one origin within `breaker_window_ms` that
    /// open its circuit breaker; 0 turns breakers off.
    pub breaker_failures: u32,
    pub breaker_window_ms: u64,
    /// How long an open breaker answers 424 before it lets one probe through.
    pub breaker_open_ms: u64,
    /// The whole exchange with an origin, connect to last body byte; 0: no limit but the
    /// other timeouts.
    pub total_timeout_ms: u64,
    /// Exchanges with one origin in flight at once, across cores; 0: no cap.
    pub max_fetches_per_origin: u32,
    /// Bytes a second read from one origin, across cores; 0: no cap.
    pub max_bytes_per_sec_per_origin: u64,
    /// How long an origin's 404 for a key is remembered (answered without asking it again);
    /// 0 turns the negative cache off.
    pub negative_ttl_ms: u64,
    /// Most keys the negative cache remembers.
    pub negative_entries: u64,
}

impl Default for RawOrigin {
    fn default() -> Self {
        RawOrigin {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 15_000,
            idle_timeout_ms: 30_000,
            complete_on_client_abort: true,
            ca_file: None,
            insecure_skip_verify: false,
            allow_private: true,
            allow_link_local: Vec::new(),
            breaker_failures: 5,
            breaker_window_ms: 10_000,
            breaker_open_ms: 10_000,
            negative_ttl_ms: 0,
            negative_entries: 100_000,
            total_timeout_ms: 3_600_000,
            max_fetches_per_origin: 0,
            max_bytes_per_sec_per_origin: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    pub name: String,
    /// "mirror" (default: the stored copy is the source of truth, never evicted) or "cache"
    /// (an edge cache: under capacity pressure its objects are evicted, oldest first, and
    /// mirrored again on the next GET).
    #[serde(default = "mirror_mode")]
    pub mode: String,
    /// Anonymous GET and HEAD of objects (a CDN serves the public); false = reads need a
    /// signature too. Writes, deletes and bucket operations always do.
    #[serde(default = "yes_public")]
    pub public_read: bool,
    /// `[[buckets.mirror]]`: rules in their TOML spelling, read into the API's rule type by
    /// [`toml_rule`].
    #[serde(default)]
    pub mirror: Vec<toml::Table>,
}

fn yes_public() -> bool {
    true
}

fn mirror_mode() -> String {
    "mirror".into()
}

/// How a TOML mirror rule spells the fields of the API's rule ([`BackSourceRule`]): the TOML
/// name, and the field's path in the API's JSON. The types, defaults and validation are the
/// API's; only the names differ (snake_case and flat in TOML, as the rest of the file). `url`
/// stands for `address.{protocol, hostName, path}` and is handled apart.
const TOML_RULE_FIELDS: [(&str, &str); 20] = [
    ("key_prefix", "condition.keyPrefixEquals"),
    ("allow_query_string", "allowQueryString"),
    ("follow_redirects", "followRedirects"),
    ("replace_key_with", "address.replaceKeyWith"),
    ("replace_key_prefix_with", "address.replaceKeyPrefixWith"),
    ("replace_key_suffix_with", "address.replaceKeySuffixWith"),
    ("allow_all_headers", "headerRule.allowAllHeaders"),
    ("allow_headers", "headerRule.allowHeaders"),
    ("not_allow_headers", "headerRule.notAllowHeaders"),
    ("set_headers", "headerRule.setHeaders"),
    ("check_content_md5", "checkContentMd5"),
    ("mirror_head", "mirrorHead"),
    ("standby_urls", "address.standbyUrls"),
    ("failover_statuses", "failoverStatuses"),
    ("origin_weights", "address.originWeights"),
    ("s3_bucket", "address.s3.bucket"),
    ("s3_region", "address.s3.region"),
    ("s3_access_key_id", "address.s3.accessKeyId"),
    ("s3_secret_access_key", "address.s3.secretAccessKey"),
    ("s3_virtual_host", "address.s3.virtualHost"),
];

/// Reads one `[[buckets.mirror]]` table into the API's rule. Errors start with the TOML name of
/// the field (`allow_headers[0]: ...`).
pub fn toml_rule(table: &toml::Table) -> std::result::Result<BackSourceRule, String> {
    use serde_json::{Map, Value};
    let url = match table.get("url") {
        Some(toml::Value::String(u)) => u,
        Some(_) => return Err("url: must be a string".into()),
        None => return Err("url: missing (the MirrorURL, e.g. \"http://origin.example/dir/\")".into()),
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("url: '{url}' is not a URL: {e}"))?;
    let protocol = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(format!("url: '{url}' must start with http:// or https://")),
    };
    let authority = uri.authority().ok_or_else(|| format!("url: '{url}' has no host"))?;
    if uri.query().is_some() {
        return Err("url: a MirrorURL cannot carry a query string".into());
    }
    let mut rule = Map::new();
    let address = serde_json::json!({"protocol": protocol, "hostName": authority.as_str(), "path": uri.path()});
    rule.insert("address".into(), address);
    for (name, value) in table {
        if name == "url" {
            continue;
        }
        let Some((_, path)) = TOML_RULE_FIELDS.iter().find(|(t, _)| t == name) else {
            let known: Vec<&str> = TOML_RULE_FIELDS.iter().map(|(t, _)| *t).collect();
            return Err(format!("unknown field `{name}`, expected `url` or one of {}", known.join(", ")));
        };
        let value = serde_json::to_value(value).map_err(|e| format!("{name}: {e}"))?;
        let mut at = &mut rule;
        let mut segments = path.split('.').peekable();
        while let Some(seg) = segments.next() {
            if segments.peek().is_none() {
                at.insert(seg.into(), value.clone());
            } else {
                let next = at.entry(seg).or_insert_with(|| Value::Object(Map::new()));
                at = next.as_object_mut().ok_or_else(|| format!("{name}: conflicting fields"))?;
            }
        }
    }
    serde_path_to_error::deserialize::<_, BackSourceRule>(Value::Object(rule))
        .map_err(|e| toml_names(&format!("{}: {}", e.path(), e.inner())))
}

/// Rewrites an error about the API's rule (`headerRule.allowHeaders[0]: ...`) with the TOML
/// names of the fields (`allow_headers[0]: ...`).
pub fn toml_names(message: &str) -> String {
    if let Some(rest) =
        ["address.protocol", "address.hostName", "address.path"].iter().find_map(|p| message.strip_prefix(p))
    {
        return format!("url{rest}");
    }
    TOML_RULE_FIELDS
        .iter()
        .find_map(|(toml, api)| message.strip_prefix(api).map(|rest| format!("{toml}{rest}")))
        .unwrap_or_else(|| message.to_string())
}

/// The S3 side of the data plane.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub region: String,
    /// Virtual-host addressing domain, lower case; empty = path style only.
    pub domain: String,
    /// Access key id -> secret key.
    pub keys: std::collections::HashMap<String, String>,
}

/// What a bucket's stored copies are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketMode {
    /// The seed's semantics: the stored copy is the source of truth and is never evicted.
    Mirror,
    /// An edge cache: objects may be evicted under capacity pressure and mirrored again.
    Cache,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub s3: S3Config,
    /// `store.multipart_max_age_s`.
    pub multipart_max_age: Duration,
    /// Hasher threads for mirrored bodies (`store.hash_threads`).
    pub hash_threads: usize,
    /// `store.cold_reads = "async"`: a hit on stored bytes that are not in memory reads them
    /// asynchronously first (`stored::read_cold`).
    pub cold_reads_async: bool,
    /// `cache.sendfile`: 32-128 KiB store hits over plain HTTP may go out with `sendfile`
    /// (`stored::sends_from_file`).
    pub sendfile: bool,
    pub server: ServerConfig,
    pub tls: Option<TlsListenConfig>,
    pub admin: AdminConfig,
    pub store: edgemirror_cache::StoreConfig,
    pub cache: HotConfig,
    pub origin: OriginConfig,
    pub buckets: Vec<BucketConfig>,
    pub access_log: crate::accesslog::AccessLogConfig,
    /// `[fleet]`: `None` for a node alone.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// `store.backend = "s3"`: the shared store of record.
    pub shared_store: Option<crate::sharedstore::SharedStoreConfig>,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub workers: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections_per_worker: usize,
    pub limits: edgemirror_proto::RequestLimits,
}

/// The HTTPS listener.
#[derive(Clone, Debug)]
pub struct TlsListenConfig {
    pub listen: SocketAddr,
    pub server: Arc<rustls::ServerConfig>,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
}

#[derive(Clone, Debug)]
pub struct OriginConfig {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub complete_on_client_abort: bool,
    /// rustls config for https origins.
    pub tls: Arc<rustls::ClientConfig>,
    pub insecure_skip_verify: bool,
    pub allow_private: bool,
    pub allow_link_local: Vec<String>,
    pub breaker: crate::protect::BreakerConfig,
    /// The whole exchange's deadline (`None`: `origin.total_timeout_ms = 0`).
    pub total_timeout: Option<Duration>,
    /// Exchanges with one origin at once (0: no cap).
    pub max_fetches_per_origin: usize,
    /// Bytes a second from one origin (0: no cap).
    pub max_bytes_per_sec_per_origin: u64,
    /// Origin 404s remembered this long (zero: not at all), at most `negative_entries` keys.
    pub negative_ttl: Duration,
    pub negative_entries: usize,
}

impl OriginConfig {
    /// The address policy these settings give, for a node listening on `listeners`.
    pub fn address_policy(&self, listeners: &[SocketAddr]) -> AddressPolicy {
        AddressPolicy::from_system(listeners)
            .with_allow_private(self.allow_private)
            .with_allow_link_local(&self.allow_link_local)
    }
}

#[derive(Clone, Debug)]
pub struct BucketConfig {
    pub name: String,
    pub mode: BucketMode,
    pub public_read: bool,
    /// The bucket's mirror rules from TOML, in the API's wire form, when the config manages
    /// them (it has `[[buckets.mirror]]`). `None`: the admin API manages them (persisted in
    /// `store.dir/rules.json`). Never both: see [`crate::rules`] on precedence.
    pub config_rules: Option<Vec<BackSourceRule>>,
}

impl Config {
    /// Parses and validates TOML; relative file paths in it are taken from the current directory.
    pub fn from_toml(text: &str) -> Result<Config> {
        Config::from_toml_in(text, Path::new("."))
    }

    fn from_toml_in(text: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        raw.validate(base)
    }

    /// Reads a config file; relative paths in it (store, cache, certificates, CA file) are
    /// relative to its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::from_toml_in(&text, base).with_context(|| format!("invalid config {}", path.display()))
    }
}

fn request_limits(s: &RawServer) -> Result<edgemirror_proto::RequestLimits> {
    use edgemirror_proto::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_URI_BYTES};
    let check = |field: &str, v: usize, min: usize, max: usize| {
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(anyhow!("{field}: {v} is outside {min}..={max}"))
        }
    };
    Ok(edgemirror_proto::RequestLimits {
        head_bytes: check("server.max_head_bytes", s.max_head_bytes, 256, MAX_HEAD_BYTES)?,
        headers: check("server.max_headers", s.max_headers, 4, MAX_HEADERS)?,
        uri_bytes: check("server.max_uri_bytes", s.max_uri_bytes, 16, MAX_URI_BYTES)?,
    })
}

/// `path` as written in a config file in `base`: absolute paths as they are, relative ones below
/// the file's directory (`base` is `.` for the embedded default and `from_toml`).
fn relative_to(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() || base == Path::new(".") {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn ms(field: &str, v: u64) -> Result<Duration> {
    if v == 0 {
        bail!("{field}: must be greater than 0");
    }
    Ok(Duration::from_millis(v))
}

fn addr(field: &str, v: &str) -> Result<SocketAddr> {
    v.parse().map_err(|_| anyhow!("{field}: '{v}' is not an IP:port socket address"))
}

impl RawConfig {
    pub fn validate(self, base: &Path) -> Result<Config> {
        let workers = match self.server.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n if n > 1024 => bail!("server.workers: {n} is more than 1024"),
            n => n,
        };
        let server = ServerConfig {
            listen: addr("server.listen", &self.server.listen)?,
            workers,
            header_timeout: ms("server.header_timeout_ms", self.server.header_timeout_ms)?,
            idle_timeout: ms("server.idle_timeout_ms", self.server.idle_timeout_ms)?,
            write_timeout: ms("server.write_timeout_ms", self.server.write_timeout_ms)?,
            body_timeout: ms("server.body_timeout_ms", self.server.body_timeout_ms)?,
            max_connections_per_worker: match self.server.max_connections_per_worker {
                0 => bail!("server.max_connections_per_worker: must be greater than 0"),
                n => n,
            },
            limits: request_limits(&self.server)?,
        };
        let admin = AdminConfig { listen: addr("admin.listen", &self.admin.listen)?, token: self.admin.token };
        if admin.token.chars().any(|c| c.is_control() || c == ' ') {
            bail!("admin.token: must not contain spaces or control characters");
        }
        if admin.listen == server.listen && admin.listen.port() != 0 {
            bail!("admin.listen: same address as server.listen");
        }

        let s = self.store;
        if s.dir.as_os_str().is_empty() {
            bail!("store.dir: must not be empty");
        }
        if s.segment_bytes < (1 << 20) {
            bail!("store.segment_bytes: must be at least 1048576 (1 MiB)");
        }
        let sync = match s.sync.as_str() {
            "never" => SyncPolicy::Never,
            "always" => SyncPolicy::Always,
            "interval" => SyncPolicy::Interval(ms("store.sync_interval_ms", s.sync_interval_ms)?),
            other => bail!("store.sync: '{other}' is not one of never, interval, always"),
        };
        if s.max_object_bytes == 0 {
            bail!("store.max_object_bytes: must be greater than 0");
        }
        // Relative to the config file, like every other path in it (nginx does the same for its
        // includes): where the node is started from does not move its data.
        let store_dir = relative_to(base, &s.dir);
        let store = edgemirror_cache::StoreConfig {
            dir: store_dir.clone(),
            segment_bytes: s.segment_bytes,
            lanes: workers,
            sync,
            max_object_bytes: s.max_object_bytes,
            max_bytes: s.max_bytes,
            min_free_bytes: s.min_free_bytes,
            compaction: edgemirror_cache::CompactionConfig {
                interval: Duration::from_millis(s.compaction_interval_ms),
                min_dead_ratio: s.compaction_min_dead_ratio,
                bytes_per_sec: s.compaction_bytes_per_sec,
            },
            // Filled in below, once the buckets are read.
            evictable_buckets: Vec::new(),
            evict_all: false,
        };
        if !(0.0..=1.0).contains(&s.compaction_min_dead_ratio) {
            bail!("store.compaction_min_dead_ratio: {} is outside 0.0..=1.0", s.compaction_min_dead_ratio);
        }
        if s.compaction_bytes_per_sec < (1 << 20) {
            bail!("store.compaction_bytes_per_sec: must be at least 1048576 (1 MiB/s)");
        }
        if s.max_bytes != 0 && s.max_bytes < 2 * s.segment_bytes {
            bail!("store.max_bytes: must be 0 (no limit) or at least two segments ({})", 2 * s.segment_bytes);
        }

        let c = self.cache;
        if c.max_object_bytes as usize > HotConfig::MAX_OBJECT_BYTES {
            bail!("cache.max_object_bytes: at most {} (half a disk-tier block)", HotConfig::MAX_OBJECT_BYTES);
        }
        if c.disk_bytes != 0 && c.disk_bytes < (16 << 20) {
            bail!("cache.disk_bytes: must be 0 (no disk tier) or at least 16777216 (16 MiB)");
        }
        let sendfile = c.sendfile;
        let cache = HotConfig {
            memory_bytes: usize::try_from(c.memory_bytes).map_err(|_| anyhow!("cache.memory_bytes: too large"))?,
            disk_bytes: c.disk_bytes,
            dir: c.dir.map(|d| relative_to(base, &d)).unwrap_or_else(|| store_dir.join("cache")),
            max_object_bytes: c.max_object_bytes as usize,
        };

        let origin = OriginConfig {
            connect_timeout: ms("origin.connect_timeout_ms", self.origin.connect_timeout_ms)?,
            first_byte_timeout: ms("origin.first_byte_timeout_ms", self.origin.first_byte_timeout_ms)?,
            idle_timeout: ms("origin.idle_timeout_ms", self.origin.idle_timeout_ms)?,
            complete_on_client_abort: self.origin.complete_on_client_abort,
            tls: tls::client_config(
                self.origin.ca_file.as_ref().map(|p| relative_to(base, p)).as_deref(),
                self.origin.insecure_skip_verify,
            )?,
            insecure_skip_verify: self.origin.insecure_skip_verify,
            allow_private: self.origin.allow_private,
            allow_link_local: self.origin.allow_link_local,
            breaker: crate::protect::BreakerConfig {
                failures: self.origin.breaker_failures,
                window: ms("origin.breaker_window_ms", self.origin.breaker_window_ms)?,
                open: ms("origin.breaker_open_ms", self.origin.breaker_open_ms)?,
            },
            total_timeout: (self.origin.total_timeout_ms > 0)
                .then(|| Duration::from_millis(self.origin.total_timeout_ms)),
            max_fetches_per_origin: self.origin.max_fetches_per_origin as usize,
            max_bytes_per_sec_per_origin: self.origin.max_bytes_per_sec_per_origin,
            negative_ttl: Duration::from_millis(self.origin.negative_ttl_ms),
            negative_entries: match self.origin.negative_entries {
                0 => bail!("origin.negative_entries: must be at least 1"),
                n => usize::try_from(n).map_err(|_| anyhow!("origin.negative_entries: too large"))?,
            },
        };
        for (i, name) in origin.allow_link_local.iter().enumerate() {
            if rules::parse_host_port(name).is_err() || name.contains(':') && !name.starts_with('[') {
                bail!("origin.allow_link_local[{i}]: '{name}' is not a host name or IP address");
            }
        }
        // The node's listeners are not known yet; rules are checked against them again at start.
        let policy = origin.address_policy(&[]);
        let tls = match self.tls {
            None => None,
            Some(t) => {
                let listen = addr("tls.listen", &t.listen)?;
                if t.certs.is_empty() {
                    bail!("tls.certs: at least one [[tls.certs]] is required");
                }
                let paths: Vec<_> =
                    t.certs.iter().map(|c| (relative_to(base, &c.cert), relative_to(base, &c.key))).collect();
                let server = tls::server_config(&paths).map_err(|e| anyhow!("tls.certs: {e:#}"))?;
                Some(TlsListenConfig { listen, server })
            }
        };

        let mut buckets: Vec<BucketConfig> = Vec::with_capacity(self.buckets.len());
        for (i, b) in self.buckets.into_iter().enumerate() {
            let field = format!("buckets[{i}]");
            validate_bucket_name(&b.name).map_err(|e| anyhow!("{field}.name: {e}"))?;
            if buckets.iter().any(|x| x.name == b.name) {
                bail!("{field}.name: bucket '{}' is defined twice", b.name);
            }
            if b.mirror.len() > MAX_RULES_PER_BUCKET {
                bail!("{field}.mirror: {} rules; at most {MAX_RULES_PER_BUCKET} are allowed", b.mirror.len());
            }
            let mut mirror_seed = Vec::with_capacity(b.mirror.len());
            for (j, r) in b.mirror.iter().enumerate() {
                let rule = toml_rule(r).map_err(|e| anyhow!("{field}.mirror[{j}].{e}"))?;
                rules::validate_rule(&rule, &policy).map_err(|e| anyhow!("{field}.mirror[{j}].{}", toml_names(&e)))?;
                mirror_seed.push(rule);
            }
            let config_rules = (!mirror_seed.is_empty()).then_some(mirror_seed);
            let mode = match b.mode.as_str() {
                "mirror" => BucketMode::Mirror,
                "cache" => BucketMode::Cache,
                other => bail!("{field}.mode: '{other}' is not mirror or cache"),
            };
            buckets.push(BucketConfig { name: b.name, mode, public_read: b.public_read, config_rules });
        }
        let mut store = store;
        store.evictable_buckets =
            buckets.iter().filter(|b| b.mode == BucketMode::Cache).map(|b| b.name.clone()).collect();
        if s.hash_threads > 64 {
            bail!("store.hash_threads: {} is more than 64", s.hash_threads);
        }
        let domain = self.s3.domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if !domain.is_empty() && rules::parse_host_port(&domain).map_or(true, |(_, port)| port.is_some()) {
            bail!("s3.domain: '{}' is not a host name (no scheme, port or path)", self.s3.domain);
        }
        let region = self.s3.region.trim().to_string();
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("s3.region: '{}' is not a region name (letters, digits, '-')", self.s3.region);
        }
        let mut keys = std::collections::HashMap::new();
        for (i, k) in self.s3.keys.into_iter().enumerate() {
            if k.access_key.is_empty() || !k.access_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                bail!("s3.keys[{i}].access_key: must be non-empty letters and digits");
            }
            if k.secret_key.len() < 8 || k.secret_key.chars().any(|c| c.is_control() || c == ' ') {
                bail!("s3.keys[{i}].secret_key: at least 8 characters, no spaces or control characters");
            }
            if keys.insert(k.access_key.clone(), k.secret_key).is_some() {
                bail!("s3.keys[{i}].access_key: '{}' is listed twice", k.access_key);
            }
        }
        let s3 = S3Config { region, domain, keys };
        if s.multipart_max_age_s == 0 {
            bail!("store.multipart_max_age_s: must be at least 1 (seconds an unfinished multipart upload is kept)");
        }
        let multipart_max_age = Duration::from_secs(s.multipart_max_age_s);
        let cold_reads_async = match s.cold_reads.as_str() {
            "async" => true,
            "fault" => false,
            other => bail!("store.cold_reads: '{other}' is not async or fault"),
        };
        let access_log = access_log(&self.access_log, base)?;
        let fleet = self.fleet.as_ref().map(fleet).transpose()?;
        let shared_store = match (s.backend.as_str(), &s.s3) {
            ("local", _) => None,
            ("s3", Some(raw)) => Some(shared_store(raw)?),
            ("s3", None) => {
                bail!("store.s3: store.backend = \"s3\" needs a [store.s3] section (endpoint, bucket, keys)")
            }
            (other, _) => bail!("store.backend: '{other}' is not local or s3"),
        };
        // Over a shared store, every local copy is a cache: evictable under capacity pressure.
        // An object goes there in one PUT, so none may be larger than a PUT takes.
        store.evict_all = shared_store.is_some();
        if shared_store.is_some() {
            store.max_object_bytes = store.max_object_bytes.min(crate::sharedstore::MAX_PUT_BYTES);
        }
        Ok(Config {
            s3,
            multipart_max_age,
            hash_threads: s.hash_threads,
            cold_reads_async,
            sendfile,
            server,
            tls,
            admin,
            store,
            cache,
            origin,
            buckets,
            access_log,
            fleet,
            shared_store,
        })
    }
}

fn shared_store(raw: &RawSharedStore) -> Result<crate::sharedstore::SharedStoreConfig> {
    if raw.endpoints.is_empty() || raw.endpoints.len() > 16 {
        bail!("store.s3.endpoints: give 1 to 16 URLs of the S3 API (one per node of the cluster)");
    }
    if raw.prefix.starts_with('/') || raw.prefix.contains("//") {
        bail!("store.s3.prefix: a key prefix within the bucket, like \"edge/\" (no leading '/')");
    }
    if raw.staleness_ms == 0 {
        bail!("store.s3.staleness_ms: must be at least 1 (every hit would ask the shared store)");
    }
    let spec = crate::rules::S3OriginSpec {
        bucket: raw.bucket.clone(),
        region: raw.region.clone(),
        access_key_id: raw.access_key_id.clone(),
        secret_access_key: raw.secret_access_key.clone(),
        virtual_host: raw.virtual_host,
    };
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, url) in raw.endpoints.iter().enumerate() {
        let field = format!("store.s3.endpoints[{i}]");
        let addr = crate::rules::parse_mirror_url(url).map_err(|e| anyhow!("{field}: {e}"))?;
        if addr.path != "/" {
            bail!("{field}: give the S3 API's scheme, host and port only (the bucket is store.s3.bucket)");
        }
        // The signer's path is the key prefix within the bucket.
        let prefixed =
            crate::rules::OriginAddr::new(addr.tls, &addr.host, Some(addr.port), &format!("/{}", raw.prefix));
        let signer = crate::rules::S3Signer::new(&prefixed, &spec).map_err(|e| {
            anyhow!(
                "store.s3: {}",
                e.replace("address.s3.", "")
                    .replace("accessKeyId", "access_key_id")
                    .replace("secretAccessKey", "secret_access_key")
            )
        })?;
        // Requests go where the signed URLs point (the bucket's host in virtual-host style).
        let addr = crate::rules::OriginAddr::new(addr.tls, signer.host(), Some(addr.port), "/");
        endpoints.push(crate::sharedstore::Endpoint { addr, signer: Arc::new(signer) });
    }
    Ok(crate::sharedstore::SharedStoreConfig { endpoints, staleness: Duration::from_millis(raw.staleness_ms) })
}

fn fleet(raw: &RawFleet) -> Result<crate::fleet::FleetConfig> {
    let mut seen = std::collections::HashSet::new();
    for (i, url) in raw.peers.iter().enumerate() {
        let peer = crate::fleet::normalized(url).map_err(|e| anyhow::anyhow!("fleet.peers[{i}]: {e}"))?;
        if !seen.insert(peer) {
            bail!("fleet.peers[{i}]: '{url}' is listed twice");
        }
    }
    let me = crate::fleet::normalized(&raw.self_url).map_err(|e| anyhow::anyhow!("fleet.self: {e}"))?;
    if !raw.peers.iter().any(|p| crate::fleet::normalized(p).is_ok_and(|p| p == me)) {
        bail!("fleet.self: '{}' is not one of fleet.peers (list this node's URL exactly as in peers)", raw.self_url);
    }
    if raw.secret.len() < 16 || raw.secret.chars().any(|c| c.is_control() || c == ' ') {
        bail!("fleet.secret: at least 16 characters, no spaces or control characters");
    }
    Ok(crate::fleet::FleetConfig {
        self_url: raw.self_url.clone(),
        peers: raw.peers.clone(),
        secret: raw.secret.clone(),
        probe_interval: ms("fleet.probe_interval_ms", raw.probe_interval_ms)?,
    })
}

fn access_log(raw: &RawAccessLog, base: &Path) -> Result<crate::accesslog::AccessLogConfig> {
    use crate::accesslog::{Format, Target};
    let format = match raw.format.as_str() {
        "json" => Format::Json,
        "combined" => Format::Combined,
        other => bail!("access_log.format: '{other}' is not json or combined"),
    };
    let target = match raw.path.as_str() {
        "" => None,
        "stdout" => Some(Target::Stdout),
        path => Some(Target::File(relative_to(base, Path::new(path)))),
    };
    let flush_interval = ms("access_log.flush_ms", raw.flush_ms)?;
    Ok(crate::accesslog::AccessLogConfig { target, format, flush_interval })
}

/// S3 bucket naming: 3-63 characters of lowercase letters, digits, '-' and '.', starting and
/// ending with a letter or digit.
pub fn validate_bucket_name(name: &str) -> std::result::Result<(), String> {
    let ok_len = (3..=63).contains(&name.len());
    let ok_chars = name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ok_ends = name.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid bucket name (3-63 of a-z, 0-9, '-', '.')"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::from_toml(DEFAULT_CONFIG).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.admin.listen, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(c.store.dir, PathBuf::from("./edgemirror-data"));
        assert_eq!(c.buckets[0].name, "example-bucket");
    }

    /// `--print-default-config` promises every key with its default: compare the printed file
    /// with the defaults of the schema itself, key by key, so a new key cannot be left out.
    #[test]
    fn the_printed_default_config_shows_every_key_with_its_default() {
        let printed: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
        let schema: [(&str, toml::Value); 6] = [
            ("s3", toml::Value::try_from(RawS3::default()).unwrap()),
            ("server", toml::Value::try_from(RawServer::default()).unwrap()),
            ("admin", toml::Value::try_from(RawAdmin::default()).unwrap()),
            ("store", toml::Value::try_from(RawStore::default()).unwrap()),
            ("cache", toml::Value::try_from(RawCache::default()).unwrap()),
            ("origin", toml::Value::try_from(RawOrigin::default()).unwrap()),
        ];
        // Keys without a default (serialised as absent) must still be shown, commented out.
        let optional = ["cache.dir", "origin.ca_file"];
        for (section, defaults) in schema {
            let shown = printed.get(section).and_then(|v| v.as_table()).unwrap_or_else(|| panic!("no [{section}]"));
            for (key, value) in defaults.as_table().unwrap() {
                assert_eq!(shown.get(key), Some(value), "{section}.{key}: printed default differs from the schema");
            }
            for key in shown.keys() {
                assert!(
                    defaults.as_table().unwrap().contains_key(key),
                    "{section}.{key} is printed but not in the schema"
                );
            }
        }
        for key in optional {
            let (section, key) = key.split_once('.').unwrap();
            let section_text = DEFAULT_CONFIG.split(&format!("[{section}]")).nth(1).unwrap();
            assert!(section_text.contains(&format!("# {key} = ")), "{section}.{key} is not shown");
        }
        assert!(DEFAULT_CONFIG.contains("# [tls]") && DEFAULT_CONFIG.contains("# [[tls.certs]]"));
        // Every commented-out example parses as the schema's type.
        let uncommented: String = DEFAULT_CONFIG
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|r| r.starts_with('[') || r.contains(" = ")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str::<RawConfig>(&uncommented).unwrap();
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgemirror.toml");
        std::fs::write(&path, "[store]\ndir = \"data\"\n[cache]\ndir = \"/fast/cache\"\n").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.store.dir, dir.path().join("data"));
        assert_eq!(c.cache.dir, PathBuf::from("/fast/cache"), "absolute paths stay");
        std::fs::write(&path, "[store]\ndir = \"data\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().cache.dir, dir.path().join("data/cache"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen"),
            ("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1", "bogus"),
            ("[store]\nsync = \"sometimes\"", "store.sync"),
            ("[store]\ncold_reads = \"mmap\"", "store.cold_reads"),
            ("[[buckets]]\nname = \"Bad_Name\"", "buckets[0].name"),
            ("[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"ftp://x/\"", "buckets[0].mirror[0].url"),
            ("[cache]\nmax_object_bytes = 99999999999", "cache.max_object_bytes"),
            ("[server]\nmax_head_bytes = 1000000", "server.max_head_bytes"),
            ("[server]\nmax_headers = 65", "server.max_headers"),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Config::from_toml(text).unwrap_err());
            assert!(err.contains(field), "error for {text:?} should name {field}: {err}");
        }
        let six = "[[buckets]]\nname = \"abc\"\n".to_string() + &"[[buckets.mirror]]\nurl = \"http://h/\"\n".repeat(6);
        assert!(format!("{:#}", Config::from_toml(&six).unwrap_err()).contains("buckets[0].mirror"));
    }

    #[test]
    fn toml_rules_seed_the_wire_form() {
        let c = Config::from_toml(
            "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"http://127.0.0.1:9000/dir1/\"\nkey_prefix = \"img/\"\nallow_query_string = true\nset_headers = { c-header = \"000\" }",
        )
        .unwrap();
        let r = &c.buckets[0].config_rules.as_ref().unwrap()[0];
        assert_eq!(r.address.host_name, "127.0.0.1:9000");
        assert_eq!(r.address.path, "/dir1/");
        assert_eq!(r.condition.key_prefix_equals, "img/");
        assert!(r.allow_query_string && r.follow_redirects);
        assert_eq!(r.header_rule.set_headers["c-header"], "000");
        let e = format!(
            "{:#}",
            Config::from_toml(
                "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"http://h/\"\nallow_headers = [\"range\"]"
            )
            .unwrap_err()
        );
        assert!(e.contains("buckets[0].mirror[0].allow_headers[0]: the header 'range'"), "{e}");
    }

    #[test]
    fn toml_rules_take_a_private_s3_origin() {
        let toml = "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"https://s3.example.com/photos/\"\n\
                    s3_bucket = \"src\"\ns3_region = \"eu-west-1\"\ns3_access_key_id = \"AK\"\n\
                    s3_secret_access_key = \"SECRET\"";
        let config = Config::from_toml(toml).unwrap();
        let rule = &config.buckets[0].config_rules.as_ref().unwrap()[0];
        let s3 = rule.address.s3.as_ref().unwrap();
        assert_eq!((s3.bucket.as_str(), s3.region.as_str(), s3.virtual_host), ("src", "eu-west-1", false));
        let missing = "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"http://h/\"\ns3_bucket = \"src\"";
        let err = Config::from_toml(missing).unwrap_err().to_string();
        assert!(err.contains("s3_access_key_id") || err.contains("accessKeyId"), "{err}");
    }

    #[test]
    fn toml_rules_take_standby_urls() {
        let toml = "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"http://h/a/\"\n\
                    standby_urls = [\"https://b.example:8443/x\", \"http://c/\"]";
        let config = Config::from_toml(toml).unwrap();
        let rules = config.buckets[0].config_rules.as_ref().unwrap();
        assert_eq!(rules[0].address.standby_urls.len(), 2);
        let bad = "[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\nurl = \"http://h/\"\nstandby_urls = [\"nope\"]";
        let err = Config::from_toml(bad).unwrap_err().to_string();
        assert!(err.contains("buckets[0].mirror[0].standby_urls[0]"), "{err}");
    }

    #[test]
    fn toml_rule_errors_use_toml_names() {
        let cases = [
            (
                "url = \"http://h/\"\nallow_query_string = \"yes\"",
                "buckets[0].mirror[0].allow_query_string: invalid type",
            ),
            ("url = \"http://h/\"\nset_headers = { Date = \"x\" }", "buckets[0].mirror[0].set_headers[0]"),
            (
                "url = \"http://h/\"\nnot_allow_headers = [\"ok\", \"bad name\"]",
                "buckets[0].mirror[0].not_allow_headers[1]",
            ),
            ("url = \"http://h:99999/\"", "buckets[0].mirror[0].url"),
            ("url = \"http://h/\"\nbogus = 1", "buckets[0].mirror[0].unknown field `bogus`"),
            ("key_prefix = \"a\"", "buckets[0].mirror[0].url: missing"),
            (
                "url = \"http://h/\"\nreplace_key_with = \"a\"\nreplace_key_prefix_with = \"b\"",
                "buckets[0].mirror[0].replace_key_with",
            ),
        ];
        for (rule, expected) in cases {
            let text = format!("[[buckets]]\nname = \"abc\"\n[[buckets.mirror]]\n{rule}");
            let e = format!("{:#}", Config::from_toml(&text).unwrap_err());
            assert!(e.contains(expected), "{rule:?}: {e}");
            assert!(!e.contains("headerRule") && !e.contains("address.") && !e.contains("Query"), "{e}");
        }
    }

    #[test]
    fn shared_store_settings_are_checked_by_field() {
        let ok = "[store]\nbackend = \"s3\"\n[store.s3]\nendpoints = [\"http://10.0.0.1:3900\", \"https://s3.example\"]\nbucket = \"edge\"\naccess_key_id = \"GK1\"\nsecret_access_key = \"s3cr3t\"\n";
        let c = Config::from_toml(ok).unwrap();
        let store = c.shared_store.as_ref().unwrap();
        assert_eq!(store.endpoints.len(), 2);
        assert_eq!(store.staleness, Duration::from_millis(1000));
        assert!(c.store.evict_all, "over a shared store every local copy is a cache");
        assert_eq!(c.store.max_object_bytes, crate::sharedstore::MAX_PUT_BYTES, "capped to one PUT");
        assert!(Config::from_toml("[store]\nbackend = \"local\"\n").unwrap().shared_store.is_none());
        let cases = [
            ("[store]\nbackend = \"nfs\"\n".to_string(), "store.backend"),
            ("[store]\nbackend = \"s3\"\n".to_string(), "store.s3"),
            (ok.replace("\"http://10.0.0.1:3900\", ", "\"ftp://x\", "), "store.s3.endpoints[0]"),
            (ok.replace("\"https://s3.example\"", "\"https://s3.example/bucket/\""), "store.s3.endpoints[1]"),
            (ok.replace("[\"http://10.0.0.1:3900\", \"https://s3.example\"]", "[]"), "store.s3.endpoints"),
            (ok.to_string() + "staleness_ms = 0\n", "store.s3.staleness_ms"),
            (ok.to_string() + "prefix = \"/abs\"\n", "store.s3.prefix"),
            (ok.replace("s3cr3t", ""), "secret_access_key"),
            (ok.to_string() + "bogus = 1\n", "bogus"),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Config::from_toml(&text).unwrap_err());
            assert!(err.contains(field), "error for {text:?} should name {field}: {err}");
        }
    }

    #[test]
    fn fleet_settings_are_checked_by_field() {
        let base = "[[buckets]]\nname = \"bkt\"\n[fleet]\nsecret = \"0123456789abcdef\"\n";
        let err = |fleet: &str| Config::from_toml(&format!("{base}{fleet}")).unwrap_err().to_string();
        let ok = "self = \"http://a:8080\"\npeers = [\"http://a:8080/\", \"http://b:8080\"]\n";
        assert!(Config::from_toml(&format!("{base}{ok}")).unwrap().fleet.is_some());
        assert!(err("self = \"http://c:8080\"\npeers = [\"http://a:8080\"]\n").contains("fleet.self"));
        assert!(err("self = \"http://a\"\npeers = [\"http://a\", \"http://a:80/\"]\n").contains("fleet.peers[1]"));
        assert!(err("self = \"http://a\"\npeers = [\"http://a/x/\"]\n").contains("fleet.peers[0]"));
        let short = "[fleet]\nsecret = \"short\"\nself = \"http://a\"\npeers = [\"http://a\"]\n";
        assert!(Config::from_toml(short).unwrap_err().to_string().contains("fleet.secret"));
    }
}
