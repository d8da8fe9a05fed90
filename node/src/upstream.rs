//! One exchange with a mirror origin through a rule: send the planned request, follow redirects
//! as the rule says (at most [`MAX_REDIRECTS`] hops, every hop resolved and checked again by
//! the origin client), and hand back the final response.
//!
//! Used by the fill's producer (`fill.rs`, GET) and by a HEAD of an object not stored yet
//! (`object.rs`, HEAD: answered from the origin's head, nothing stored). What to do with the
//! final status is the caller's business.

use bytes::Bytes;

use crate::metrics::OriginFetch;
use crate::mirror::{self, FetchPlan};
use crate::origin::{self, Method, OriginResponse};
use crate::reply::SOURCE_HEADER;
use crate::rules::{OriginAddr, MAX_REDIRECTS};
use crate::worker::Worker;

/// Why no final response came back.
#[derive(Debug)]
pub enum Upstream {
    /// The origin could not be reached or misbehaved: 424, the reason is for the log.
    Failed(String),
    /// `followRedirects: false` and the origin redirected: pass its 3xx on.
    Redirect { status: u16, location: Bytes },
}

/// The final response to `plan`'s request, and the URL it came from. The rule's origin is asked
/// first, then its standbys in order while the answer is a failure (unreachable, timed out, its
/// breaker open, or 5xx); a 404 or any other answer is the answer.
pub async fn exchange(worker: &Worker, plan: &FetchPlan, method: Method) -> Result<(OriginResponse, String), Upstream> {
    let rule = &plan.rule;
    if let Some(s3) = &rule.s3 {
        // A private S3 origin: the request is a presigned URL for this method and key.
        let path = s3.signed_path(method == Method::Head, &plan.origin_key);
        return exchange_with(worker, plan, method, rule.origin.clone(), path).await;
    }
    // The plan's path is the primary's MirrorURL path + the key: a standby gets its own path.
    let key_path = plan.path.strip_prefix(rule.origin.path.as_str()).unwrap_or(&plan.path);
    let all: Vec<&OriginAddr> = std::iter::once(&rule.origin).chain(&rule.standbys).collect();
    let origins: Vec<&OriginAddr> = rule.origin_order(&plan.origin_key).into_iter().map(|i| all[i]).collect();
    let mut outcome = Err(Upstream::Failed("no origin".into()));
    for (i, origin) in origins.iter().enumerate() {
        let last = i + 1 == origins.len();
        outcome = exchange_with(worker, plan, method, (*origin).clone(), format!("{}{key_path}", origin.path)).await;
        let failure = match &outcome {
            Ok((resp, _)) if rule.fails_over(resp.status) => format!("status {}", resp.status),
            Err(Upstream::Failed(reason)) => reason.clone(),
            _ => return outcome,
        };
        if !last {
            tracing::warn!(
                request_id = %plan.request_id,
                origin = %format!("{}://{}", origin.scheme(), origin.host_header),
                failure,
                "origin failed; trying the next standby"
            );
        }
    }
    outcome
}

/// What the shared store said about a key.
pub enum SharedAnswer {
    /// 200, from the `usize`th request.
    Found(Box<OriginResponse>, String, usize),
    /// 404 from an endpoint: it holds no such object.
    Absent,
    /// No endpoint answered with 200 or 404.
    Unreachable(String),
}

/// Asks the shared store for an object (GET or HEAD; `plans` from
/// [`mirror::shared_plans`]), endpoint by endpoint until one answers 200 or 404.
pub async fn shared_answer(worker: &Worker, plans: &[FetchPlan], method: Method) -> SharedAnswer {
    let mut reason = String::from("no endpoint");
    for (i, plan) in plans.iter().enumerate() {
        worker.metrics().shared_requests.inc();
        match exchange(worker, plan, method).await {
            Ok((resp, url)) if resp.status == 200 => return SharedAnswer::Found(Box::new(resp), url, i),
            Ok((resp, _)) if resp.status == 404 => {
                resp.body.release(&worker.pool);
                return SharedAnswer::Absent;
            }
            Ok((resp, url)) => {
                reason = format!("{} answered {}", redact_url(&url), resp.status);
                resp.body.release(&worker.pool);
            }
            Err(Upstream::Failed(why)) => reason = why,
            Err(Upstream::Redirect { status, .. }) => reason = format!("redirected ({status})"),
        }
    }
    SharedAnswer::Unreachable(reason)
}

/// A fleet peer's answer as the origin's, or why it is not one (then this node asks the origin
/// itself): no peer answered, every one answered 5xx, or the answer was the peer's own decision
/// (`x-edgemirror-source: edge`: its config lacks the bucket or the rule, or refused the
/// request), which says nothing of the origin and must not be remembered as its 404.
pub fn peer_answer(
    worker: &Worker,
    exchanged: Result<(OriginResponse, String), Upstream>,
) -> Result<Result<(OriginResponse, String), Upstream>, String> {
    match exchanged {
        Err(Upstream::Failed(reason)) => Err(reason),
        Ok((resp, url))
            if resp.status >= 500 || (resp.status >= 400 && resp.header(SOURCE_HEADER) == Some(b"edge")) =>
        {
            let reason = format!("{url} answered {} on its own", resp.status);
            resp.body.release(&worker.pool);
            Err(reason)
        }
        other => Ok(other),
    }
}

/// What an exchange came to, for the metrics and the access log: the URL that answered (the
/// rule's origin when none did), its status, and `elapsed`. Credentials in the URL's query (a
/// private S3 origin's presigned signature, or one an origin redirected to) are redacted.
pub fn outcome(
    plan: &FetchPlan,
    exchanged: &Result<(OriginResponse, String), Upstream>,
    elapsed: std::time::Duration,
) -> OriginFetch {
    let primary = || format!("{}://{}{}", plan.rule.origin.scheme(), plan.rule.origin.host_header, plan.path);
    let (mut url, status) = match exchanged {
        Ok((resp, url)) => (url.clone(), Some(resp.status)),
        Err(Upstream::Redirect { status, .. }) => (primary(), Some(*status)),
        Err(Upstream::Failed(_)) => (primary(), None),
    };
    url = redact_url(&url);
    OriginFetch { url, status, elapsed }
}

/// `url` with the credentials in its query (a presigned S3 signature) redacted, for logs.
pub fn redact_url(url: &str) -> String {
    match url.find('?') {
        None => url.to_string(),
        Some(q) => {
            let redacted = crate::accesslog::redact_query(&url.as_bytes()[q + 1..]).into_owned();
            format!("{}{}", &url[..q + 1], String::from_utf8_lossy(&redacted))
        }
    }
}

/// One origin's answer to `plan`'s request for `path`, redirects followed as the rule says.
async fn exchange_with(
    worker: &Worker,
    plan: &FetchPlan,
    method: Method,
    mut target: OriginAddr,
    mut path: String,
) -> Result<(OriginResponse, String), Upstream> {
    let shared = &worker.shared;
    let rid = plan.request_id;
    let rule = &plan.rule;
    let mut hops = 0;
    loop {
        let host = match (&plan.client_host, hops) {
            // A signed S3 request names its own host.
            (Some(h), 0) if rule.s3.is_none() => h.as_slice(),
            _ => target.host_header.as_bytes(),
        };
        let request = origin::build_request(method, &path, host, &plan.extra, &shared.via_token);
        let origin_name = format!("{}://{}", target.scheme(), target.host_header);
        let url = format!("{origin_name}{path}");
        let pass = match shared.breakers.pass(&origin_name) {
            Ok(pass) => pass,
            Err(retry_in) => {
                return Err(Upstream::Failed(format!(
                    "origin {origin_name} is failing: its circuit is open (next probe in {} ms)",
                    retry_in.as_millis()
                )));
            }
        };
        let config = worker.config();
        let cfg = &config.origin;
        let Some(slot) = shared.fetch_slots.acquire(&origin_name, cfg.first_byte_timeout).await else {
            return Err(Upstream::Failed(format!(
                "origin {origin_name} is busy: origin.max_fetches_per_origin fetches in flight"
            )));
        };
        let outgoing = origin::Outgoing { head: request, body: None, reach: plan.reach };
        let fetched = origin::fetch(&target, method, outgoing, cfg, &worker.pool, &shared.network).await;
        pass.record(fetched.as_ref().is_ok_and(|r| r.status < 500));
        let resp = match fetched {
            Ok(mut r) => {
                // The slot stays taken until the body has been read or dropped.
                r.body.hold(slot);
                r.body.pace(shared.pacers.get(&origin_name));
                r.body.pace(plan.pacer.clone());
                r
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, origin = %redact_url(&url), error = %e, "mirror fetch failed");
                return Err(Upstream::Failed(e.to_string()));
            }
        };
        if !mirror::is_redirect(resp.status) {
            return Ok((resp, url));
        }
        let Some(location) = resp.header("location") else {
            return Err(Upstream::Failed(format!("origin answered {} without Location", resp.status)));
        };
        if !rule.follow_redirects {
            return Err(Upstream::Redirect { status: resp.status, location: Bytes::copy_from_slice(location) });
        }
        hops += 1;
        if hops > MAX_REDIRECTS {
            tracing::warn!(request_id = %rid, origin = %url, "more than {MAX_REDIRECTS} redirects");
            return Err(Upstream::Failed("too many redirects".into()));
        }
        match mirror::resolve_location(&target, &path, location) {
            Ok((t, p)) => (target, path) = (t, p),
            Err(e) => {
                tracing::warn!(request_id = %rid, origin = %url, error = %e, "unfollowable redirect");
                return Err(Upstream::Failed(e));
            }
        }
    }
}
