//! Mirror rules through the admin API (`PUT|GET|DELETE /v1/regions/{r}/buckets/{b}/backSource`),
//! and each rule field end to end against a recording origin.
//!
//! The API half checks the contract an operator relies on: no token, no change (401); a bad
//! rule is refused whole with a message naming the field (400); what a PUT sends is what a GET
//! returns, defaults filled in; a change applies to the next request without a restart, and a
//! PUT or a DELETE outlives a restart. One source per bucket: a bucket with `[[buckets.mirror]]`
//! in the config is the file's (the API reads it, refuses to change it with 409, and a restart
//! after editing the file applies the file); a bucket without is the API's.
//!
//! The data-plane half sets one rule per test and looks at what the origin received: target
//! (path prefix, key rewrites, query string), headers (header rule, Host), redirects, and
//! connection reuse.

use serde_json::{json, Value};

use crate::support::client::{get, request_bytes, Conn};
use crate::support::node::{Node, NodeBuilder};
use crate::support::origin::{Origin, Reply};
use crate::support::{
    admin_json, admin_request, assert_origin_count, assert_s3_error, back_source_path, closed_port_addr, get_rules,
    get_stored, object_path, origin_and_node, pattern_body, put_rules, source_of, ADMIN_TOKEN, BUCKET,
};

/// A node whose `example-bucket` has no rule yet: each test sets its own through the API.
fn node_without_rules() -> Node {
    NodeBuilder::new().bucket(BUCKET).start()
}

/// The smallest rule: every key to `origin` under `path`.
fn rule_to(origin: &Origin, path: &str) -> Value {
    json!({"address": {"hostName": origin.addr().to_string(), "path": path}})
}

/// PUTs a list of rules (JSON values) for [`BUCKET`].
fn set_rules(node: &Node, rules: &[Value]) {
    put_rules(node.admin_addr(), BUCKET, &Value::Array(rules.to_vec()).to_string());
}

/// A PUT of `body` (raw text) that must be refused with 400; returns the error message.
fn put_refused(node: &Node, body: &str) -> String {
    let resp = admin_request(node.admin_addr(), "PUT", &back_source_path(BUCKET), Some(ADMIN_TOKEN), Some(body));
    assert_eq!(resp.status, 400, "PUT {body} should be refused: {resp:?} {}", resp.text());
    let json = admin_json(&resp);
    assert_eq!(json["error"]["code"], 400, "{json}");
    json["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {json}")).to_string()
}

/// Checks the reference API's error shape: `{"requestId": "...", "error": {"code": N, ...}}`.
fn assert_api_error(resp: &crate::support::client::Response, status: u16) {
    assert_eq!(resp.status, status, "{resp:?} {}", resp.text());
    let json = admin_json(resp);
    assert!(json["requestId"].as_str().is_some_and(|s| !s.is_empty()), "no requestId in {json}");
    assert_eq!(json["error"]["code"], u64::from(status), "error.code in {json}");
    assert!(json["error"]["message"].is_string(), "no error.message in {json}");
}

/// GETs `key` (a fresh connection, no extra headers) and asserts a 200 with `body` from the origin.
fn get_mirrored(node: &Node, key: &str, body: &[u8]) {
    let resp = get(node.data_addr(), &object_path(key), &[]).unwrap_or_else(|e| panic!("GET {key}: {e:?}"));
    assert_eq!(resp.status, 200, "GET {key}: {resp:?}");
    assert!(resp.body == body, "GET {key}: body differs: {resp:?}");
    assert_eq!(source_of(&resp), "origin", "GET {key}: {resp:?}");
}

/// The targets the origin received, in order.
fn origin_paths(origin: &Origin) -> Vec<String> {
    origin.requests().into_iter().map(|r| r.path).collect()
}

// ---------------------------------------------------------------------------------------------
// The API.

#[test]
fn missing_or_wrong_token_is_401_and_changes_nothing() {
    let (origin, node) = origin_and_node();
    let admin = node.admin_addr();
    let seed = get_rules(admin, BUCKET);
    assert_eq!(seed.len(), 1, "the TOML seed: {seed:?}");
    let path = back_source_path(BUCKET);
    let replacement = json!({"backSourceRules": [{"address": {"hostName": "127.0.0.1:1"}}]}).to_string();

    let attempts: [(&str, Option<&str>, Option<&str>); 7] = [
        ("GET", None, None),
        ("GET", Some("wrong-token"), None),
        ("PUT", None, Some(&replacement)),
        ("PUT", Some("wrong-token"), Some(&replacement)),
        // Same prefix, longer: a comparison that stops at the shorter length would accept it.
        ("PUT", Some("test-token-and-more"), Some(&replacement)),
        ("DELETE", None, None),
        ("DELETE", Some("test-toke"), None),
    ];
    for (method, token, body) in attempts {
        let resp = admin_request(admin, method, &path, token, body);
        assert_api_error(&resp, 401);
    }

    assert_eq!(get_rules(admin, BUCKET), seed, "a refused request changed the rules");
    // And the data plane still uses the seed.
    origin.set("/dir1/still-seeded", Reply::ok("seed rule"));
    get_mirrored(&node, "still-seeded", b"seed rule");
}

#[test]
fn unknown_bucket_is_404() {
    let node = node_without_rules();
    let path = back_source_path("no-such-bucket");
    let body = json!({"backSourceRules": []}).to_string();
    for (method, body) in [("GET", None), ("PUT", Some(body.as_str())), ("DELETE", None)] {
        let resp = admin_request(node.admin_addr(), method, &path, Some(ADMIN_TOKEN), body);
        assert_api_error(&resp, 404);
    }
}

#[test]
fn put_then_get_returns_the_rules_with_defaults_filled_in() {
    let node = node_without_rules();
    let admin = node.admin_addr();
    assert_eq!(get_rules(admin, BUCKET), Vec::<Value>::new(), "no rule configured yet");

    put_rules(admin, BUCKET, r#"[{"address":{"hostName":"origin.example:8080"}}]"#);
    let rules = get_rules(admin, BUCKET);
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    assert_eq!(r["backSourceType"], "mirror", "{r}");
    assert_eq!(r["followRedirects"], true, "{r}");
    assert_eq!(r["allowQueryString"], false, "{r}");
    assert_eq!(r["checkContentMd5"], true, "{r}");
    assert_eq!(r["mirrorHead"], false, "{r}");
    assert_eq!(r["address"]["hostName"], "origin.example:8080", "{r}");
    assert_eq!(r["address"]["protocol"], "http", "{r}");
    assert_eq!(r["condition"]["keyPrefixEquals"], "", "{r}");

    // A rule with every field set comes back exactly as sent.
    let full = json!([{
        "backSourceType": "mirror",
        "condition": {"keyPrefixEquals": "img/", "httpErrorCodeReturnedEquals": 404},
        "address": {
            "protocol": "http",
            "hostName": "origin.example:8080",
            "replaceKeyPrefixWith": "static/",
            "replaceKeySuffixWith": ".webp",
            "path": "/dir1/"
        },
        "allowQueryString": true,
        "followRedirects": false,
        "headerRule": {
            "allowAllHeaders": false,
            "allowHeaders": ["a-header"],
            "notAllowHeaders": ["b-header"],
            "setHeaders": {"c-header": "000"}
        },
        "checkContentMd5": false,
        "mirrorHead": true
    }]);
    put_rules(admin, BUCKET, &full.to_string());
    assert_eq!(Value::Array(get_rules(admin, BUCKET)), full);
}

#[test]
fn delete_empties_the_rule_list() {
    let origin = Origin::start();
    let node = node_without_rules();
    set_rules(&node, &[rule_to(&origin, "/dir1/")]);
    origin.set("/dir1/k", Reply::ok("must not be fetched"));
    let resp = admin_request(node.admin_addr(), "DELETE", &back_source_path(BUCKET), Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 200, "{resp:?} {}", resp.text());
    assert_eq!(get_rules(node.admin_addr(), BUCKET), Vec::<Value>::new());

    let resp = get(node.data_addr(), &object_path("k"), &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

#[test]
fn more_than_five_rules_is_400() {
    let node = node_without_rules();
    let one = json!({"address": {"hostName": "origin.example"}});
    let six = json!({"backSourceRules": vec![one.clone(); 6]}).to_string();
    let message = put_refused(&node, &six);
    assert!(message.contains("backSourceRules"), "message does not name backSourceRules: {message}");
    assert_eq!(get_rules(node.admin_addr(), BUCKET), Vec::<Value>::new(), "a refused PUT changed the rules");

    // Five is the limit, not one less.
    set_rules(&node, &vec![one; 5]);
    assert_eq!(get_rules(node.admin_addr(), BUCKET).len(), 5);
}

#[test]
fn each_invalid_field_is_400_naming_it() {
    let node = node_without_rules();
    // Each case: (rule JSON, text the error message must contain).
    let mut cases: Vec<(Value, String)> = vec![
        (json!({"backSourceType": "redirect", "address": {"hostName": "h"}}), "backSourceType".into()),
        (
            json!({"condition": {"httpErrorCodeReturnedEquals": 403}, "address": {"hostName": "h"}}),
            "httpErrorCodeReturnedEquals".into(),
        ),
        (json!({"address": {"protocol": "ftp", "hostName": "h"}}), "protocol".into()),
        (json!({"address": {"hostName": ""}}), "hostName".into()),
        (
            json!({"address": {"hostName": "h", "replaceKeyWith": "a", "replaceKeyPrefixWith": "b"}}),
            "replaceKeyWith".into(),
        ),
        (
            json!({"address": {"hostName": "h"}, "headerRule": {"setHeaders": {"c-header": "a\rb"}}}),
            "setHeaders".into(),
        ),
        (
            json!({"address": {"hostName": "h"}, "headerRule": {"setHeaders": {"c-header": "a\nb"}}}),
            "setHeaders".into(),
        ),
        // Unknown fields are refused, not ignored: a typo must not silently drop a setting.
        (json!({"address": {"hostName": "h"}, "bogusField": 1}), "bogusField".into()),
        (json!({"address": {"hostName": "h", "bogusAddressField": 1}}), "bogusAddressField".into()),
    ];
    let forbidden =
        ["x-oss-meta-a", "X-Oss-Date", "authorization", "Authorization2", "content-length", "Range", "date"];
    let forbidden = forbidden.iter().chain(["transfer-encoding"].iter());
    for name in forbidden {
        for field in ["allowHeaders", "notAllowHeaders"] {
            cases.push((json!({"address": {"hostName": "h"}, "headerRule": {field: [name]}}), field.to_string()));
        }
        cases.push((
            json!({"address": {"hostName": "h"}, "headerRule": {"setHeaders": {*name: "v"}}}),
            "setHeaders".into(),
        ));
    }

    for (rule, field) in &cases {
        let body = json!({"backSourceRules": [rule]}).to_string();
        let message = put_refused(&node, &body);
        assert!(message.contains(field.as_str()), "PUT {body}: message {message:?} does not name {field}");
    }
    let body = json!({"backSourceRules": [], "bogusTopLevel": true}).to_string();
    let message = put_refused(&node, &body);
    assert!(message.contains("bogusTopLevel"), "message {message:?} does not name the unknown field");

    assert_eq!(get_rules(node.admin_addr(), BUCKET), Vec::<Value>::new(), "a refused PUT changed the rules");
}

#[test]
fn rule_pointing_at_this_node_is_400() {
    let node = node_without_rules();
    let data = node.data_addr();
    let admin = node.admin_addr();
    for host in [data.to_string(), admin.to_string(), format!("localhost:{}", data.port())] {
        let body = json!({"backSourceRules": [{"address": {"hostName": host}}]}).to_string();
        let message = put_refused(&node, &body);
        assert!(message.contains("hostName"), "PUT {body}: message {message:?} does not name hostName");
    }
    assert_eq!(get_rules(admin, BUCKET), Vec::<Value>::new());
}

#[test]
fn put_applies_at_once_and_survives_restart() {
    let first = Origin::start();
    let second = Origin::start();
    let mut node = node_without_rules();
    first.set("/one/before", Reply::ok("from the first rule"));
    second.set("/two/after", Reply::ok("from the new rule"));
    second.set("/two/after-restart", Reply::ok("still the new rule"));
    set_rules(&node, &[rule_to(&first, "/one/")]);
    get_mirrored(&node, "before", b"from the first rule");

    set_rules(&node, &[rule_to(&second, "/two/")]);
    // No restart: the very next request uses the new rule.
    get_mirrored(&node, "after", b"from the new rule");
    let put = get_rules(node.admin_addr(), BUCKET);

    node.restart();
    assert_eq!(get_rules(node.admin_addr(), BUCKET), put, "the PUT rules did not survive the restart");
    get_mirrored(&node, "after-restart", b"still the new rule");
    assert_eq!(origin_paths(&first), ["/one/before"]);
    assert_eq!(origin_paths(&second), ["/two/after", "/two/after-restart"]);
}

#[test]
fn delete_survives_restart() {
    let origin = Origin::start();
    let mut node = node_without_rules();
    set_rules(&node, &[rule_to(&origin, "/dir1/")]);
    origin.set("/dir1/k", Reply::ok("must not be fetched"));
    let resp = admin_request(node.admin_addr(), "DELETE", &back_source_path(BUCKET), Some(ADMIN_TOKEN), None);
    assert_eq!(resp.status, 200, "{resp:?} {}", resp.text());

    node.restart();
    assert_eq!(get_rules(node.admin_addr(), BUCKET), Vec::<Value>::new(), "the deleted rules came back");
    let resp = get(node.data_addr(), &object_path("k"), &[]).expect("GET");
    assert_s3_error(&resp, 404, Some("NoSuchKey"));
    assert!(origin.requests().is_empty(), "{:?}", origin.requests());
}

#[test]
fn a_bucket_whose_rules_the_config_file_manages_refuses_api_changes() {
    let (origin, node) = origin_and_node();
    let admin = node.admin_addr();
    let seed = get_rules(admin, BUCKET);
    assert_eq!(seed.len(), 1, "{seed:?}");
    let resp = admin_request(admin, "GET", &back_source_path(BUCKET), Some(ADMIN_TOKEN), None);
    assert_eq!(admin_json(&resp)["result"]["managedBy"], "config");

    let body = json!({"backSourceRules": [rule_to(&origin, "/elsewhere/")]}).to_string();
    for (method, body) in [("PUT", Some(body.as_str())), ("DELETE", None)] {
        let resp = admin_request(admin, method, &back_source_path(BUCKET), Some(ADMIN_TOKEN), body);
        assert_api_error(&resp, 409);
        let message = admin_json(&resp)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains("config file") && message.contains("[[buckets.mirror]]"), "{message}");
    }
    assert_eq!(get_rules(admin, BUCKET), seed, "a refused change changed the rules");
    origin.set("/dir1/k", Reply::ok("the file's rule"));
    get_mirrored(&node, "k", b"the file's rule");
}

#[test]
fn editing_the_config_file_and_restarting_applies_the_file() {
    let old = Origin::start();
    let new = Origin::start();
    let mut node = NodeBuilder::new().mirror(&format!("{}/old/", old.url()), "").start();
    old.set("/old/a", Reply::ok("old rule"));
    new.set("/new/b", Reply::ok("new rule"));
    get_mirrored(&node, "a", b"old rule");

    let config = std::fs::read_to_string(node.config_path()).unwrap();
    let edited = config.replace(&format!("{}/old/", old.url()), &format!("{}/new/", new.url()));
    assert_ne!(config, edited, "the rule's url was not found in the config");
    std::fs::write(node.config_path(), edited).unwrap();
    node.restart();
    get_mirrored(&node, "b", b"new rule");
    assert_eq!(origin_paths(&old), ["/old/a"]);
}

#[test]
fn api_rules_of_a_bucket_the_file_now_manages_are_ignored_with_a_warning() {
    let api_origin = Origin::start();
    let file_origin = Origin::start();
    let mut node = node_without_rules();
    set_rules(&node, &[rule_to(&api_origin, "/api/")]);
    node.stop();
    // The operator adds [[buckets.mirror]] to the bucket: from now on the file manages it.
    let config = std::fs::read_to_string(node.config_path()).unwrap();
    let rule = format!("[[buckets.mirror]]\nurl = \"{}/file/\"\n", file_origin.url());
    let edited = config.replace(&format!("name = \"{BUCKET}\"\n"), &format!("name = \"{BUCKET}\"\n{rule}"));
    assert_ne!(config, edited);
    std::fs::write(node.config_path(), edited).unwrap();
    node.restart();
    file_origin.set("/file/k", Reply::ok("the file's rule"));
    get_mirrored(&node, "k", b"the file's rule");
    assert!(api_origin.requests().is_empty());
    assert!(node.stderr().contains("the API rules are ignored"), "{}", node.stderr());
}

// ---------------------------------------------------------------------------------------------
// Each field, end to end.

#[test]
fn rules_match_in_put_order_and_the_first_prefix_wins() {
    let images = Origin::start();
    let rest = Origin::start();
    let node = node_without_rules();
    images.set("/a/img/1.jpg", Reply::ok("image 1"));
    rest.set("/b/doc/1.txt", Reply::ok("doc 1"));
    rest.set("/b/img/2.jpg", Reply::ok("image 2 from the catch-all"));

    let mut img = rule_to(&images, "/a/");
    img["condition"] = json!({"keyPrefixEquals": "img/"});
    let all = rule_to(&rest, "/b/");
    set_rules(&node, &[img.clone(), all.clone()]);
    get_mirrored(&node, "img/1.jpg", b"image 1");
    get_mirrored(&node, "doc/1.txt", b"doc 1");

    // Same rules, catch-all first: it shadows the prefix rule.
    set_rules(&node, &[all, img]);
    get_mirrored(&node, "img/2.jpg", b"image 2 from the catch-all");
    assert_eq!(origin_paths(&images), ["/a/img/1.jpg"]);
    assert_eq!(origin_paths(&rest), ["/b/doc/1.txt", "/b/img/2.jpg"]);
}

#[test]
fn address_path_is_the_mirror_url_path() {
    let origin = Origin::start();
    let node = node_without_rules();
    let mut under_dir = rule_to(&origin, "/dir1/");
    under_dir["condition"] = json!({"keyPrefixEquals": "image/"});
    // Without a path the key goes at the root.
    let root = json!({"address": {"hostName": origin.addr().to_string()}});
    set_rules(&node, &[under_dir, root]);
    origin.set("/dir1/image/a.jpg", Reply::ok("under dir1"));
    origin.set("/other/b.txt", Reply::ok("at the root"));

    get_mirrored(&node, "image/a.jpg", b"under dir1");
    get_mirrored(&node, "other/b.txt", b"at the root");
    assert_eq!(origin_paths(&origin), ["/dir1/image/a.jpg", "/other/b.txt"]);
}

/// Mirrors `key` through a single `rule` and checks the origin was asked for `origin_path`, and
/// that the object is then stored under the requested key (not the rewritten one).
fn assert_rewrite(rule: Value, key: &str, origin_path: &str) {
    let origin = Origin::start();
    let node = node_without_rules();
    let mut rule = rule;
    rule["address"]["hostName"] = json!(origin.addr().to_string());
    set_rules(&node, &[rule]);
    let body = pattern_body(3_000, 60);
    origin.set(origin_path, Reply::ok(body.clone()));

    let resp = get(node.data_addr(), &object_path(key), &[]).expect("GET");
    assert_eq!(resp.status, 200, "{resp:?}; the origin saw {:?}", origin_paths(&origin));
    assert!(resp.body == body);
    assert_eq!(origin_paths(&origin), [origin_path]);
    get_stored(node.data_addr(), &object_path(key), &body);
    assert_origin_count(&origin, origin_path, 1);
}

#[test]
fn replace_key_with_uses_the_template() {
    assert_rewrite(
        json!({"condition": {"keyPrefixEquals": "t/"}, "address": {"hostName": "", "replaceKeyWith": "pre/${key}.x"}}),
        "t/a.jpg",
        "/pre/t/a.jpg.x",
    );
}

#[test]
fn replace_key_prefix_with_replaces_the_matched_prefix() {
    assert_rewrite(
        json!({"condition": {"keyPrefixEquals": "img/"}, "address": {"hostName": "", "replaceKeyPrefixWith": "static/images/"}}),
        "img/a.jpg",
        "/static/images/a.jpg",
    );
}

#[test]
fn replace_key_suffix_with_is_appended() {
    assert_rewrite(json!({"address": {"hostName": "", "replaceKeySuffixWith": ".webp"}}), "s/a.jpg", "/s/a.jpg.webp");
}

#[test]
fn query_string_is_dropped_unless_allowed() {
    let origin = Origin::start();
    let node = node_without_rules();
    let mut plain = rule_to(&origin, "/dir1/");
    plain["condition"] = json!({"keyPrefixEquals": "plain/"});
    let mut with_query = rule_to(&origin, "/dir1/");
    with_query["condition"] = json!({"keyPrefixEquals": "q/"});
    with_query["allowQueryString"] = json!(true);
    set_rules(&node, &[plain, with_query]);
    origin.set("/dir1/plain/k", Reply::ok("plain"));
    origin.set("/dir1/q/k", Reply::ok("with query"));

    let resp = get(node.data_addr(), &object_path("plain/k?x=1&y=%20"), &[]).expect("GET plain");
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = get(node.data_addr(), &object_path("q/k?x=1&y=%20"), &[]).expect("GET q");
    assert_eq!(resp.status, 200, "{resp:?}");
    // allowQueryString false: no query at all; true: the raw query exactly as the client sent it.
    assert_eq!(origin_paths(&origin), ["/dir1/plain/k", "/dir1/q/k?x=1&y=%20"]);
}

/// Mirrors key `k` through `rule`, the client sending `raw` (a whole request head); returns what
/// the origin received.
fn origin_sees(
    rule: Value,
    raw_head: impl FnOnce(std::net::SocketAddr) -> Vec<u8>,
) -> (Origin, crate::support::origin::RecordedRequest) {
    let origin = Origin::start();
    let node = node_without_rules();
    let mut rule = rule;
    rule["address"]["hostName"] = json!(origin.addr().to_string());
    rule["address"]["path"] = json!("/dir1/");
    set_rules(&node, &[rule]);
    origin.set("/dir1/k", Reply::ok("k"));
    let addr = node.data_addr();
    let resp = Conn::new(addr).request(&raw_head(addr)).expect("GET");
    assert!(resp.status == 200 || resp.status == 206, "{resp:?}");
    let requests = origin.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let seen = requests[0].clone();
    (origin, seen)
}

#[test]
fn by_default_no_client_header_reaches_the_origin() {
    let (origin, seen) = origin_sees(json!({"address": {"hostName": ""}}), |addr| {
        request_bytes("GET", addr, &object_path("k"), &[("a-header", "111"), ("User-Agent", "client/1.0")])
    });
    assert_eq!(seen.header("a-header"), None, "{seen:?}");
    assert_ne!(seen.header("user-agent"), Some("client/1.0"), "{seen:?}");
    assert_eq!(seen.header("host"), Some(origin.addr().to_string().as_str()), "{seen:?}");
}

#[test]
fn header_rule_reference_example() {
    // The reference: pass a-header, never b-header, set c-header to 000.
    let rule = json!({
        "address": {"hostName": ""},
        "headerRule": {"allowHeaders": ["a-header"], "notAllowHeaders": ["b-header"], "setHeaders": {"c-header": "000"}}
    });
    let (origin, seen) = origin_sees(rule, |addr| {
        request_bytes(
            "GET",
            addr,
            &object_path("k"),
            &[("a-header", "111"), ("b-header", "222"), ("c-header", "333"), ("d-header", "444")],
        )
    });
    assert_eq!(seen.header("a-header"), Some("111"), "{seen:?}");
    assert_eq!(seen.header("b-header"), None, "{seen:?}");
    assert_eq!(seen.header("d-header"), None, "not in allowHeaders: {seen:?}");
    let c: Vec<&str> =
        seen.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("c-header")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(c, ["000"], "the set value replaces the client's: {seen:?}");
    assert_eq!(seen.header("host"), Some(origin.addr().to_string().as_str()), "{seen:?}");
}

/// A GET of `k` with our own Host header (the request_bytes helper always sends the address).
fn with_host(host: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut raw = format!("GET {} HTTP/1.1\r\nHost: {host}\r\n", object_path("k"));
    for (name, value) in extra {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

#[test]
fn allow_all_headers_passes_headers_and_the_client_host() {
    let rule = json!({"address": {"hostName": ""}, "headerRule": {"allowAllHeaders": true}});
    let (_origin, seen) = origin_sees(rule, |_| with_host("bucket.example.com", &[("x-anything", "v1")]));
    assert_eq!(seen.header("x-anything"), Some("v1"), "{seen:?}");
    assert_eq!(seen.header("host"), Some("bucket.example.com"), "{seen:?}");
}

#[test]
fn allow_all_headers_with_host_not_allowed_sends_the_origin_host() {
    let rule =
        json!({"address": {"hostName": ""}, "headerRule": {"allowAllHeaders": true, "notAllowHeaders": ["Host"]}});
    let (origin, seen) = origin_sees(rule, |_| with_host("bucket.example.com", &[("x-anything", "v1")]));
    assert_eq!(seen.header("x-anything"), Some("v1"), "{seen:?}");
    assert_eq!(seen.header("host"), Some(origin.addr().to_string().as_str()), "{seen:?}");
}

#[test]
fn authorization_and_range_are_never_forwarded() {
    let rule = json!({"address": {"hostName": ""}, "headerRule": {"allowAllHeaders": true}});
    let (_origin, seen) = origin_sees(rule, |addr| {
        request_bytes(
            "GET",
            addr,
            &object_path("k"),
            &[("Authorization", "AWS4-HMAC-SHA256 secret"), ("Range", "bytes=0-0"), ("x-ok", "1")],
        )
    });
    assert_eq!(seen.header("x-ok"), Some("1"), "allowAllHeaders should pass x-ok: {seen:?}");
    assert_eq!(seen.header("authorization"), None, "{seen:?}");
    assert_eq!(seen.header("range"), None, "{seen:?}");
}

#[test]
fn redirect_is_followed_and_the_final_body_stored_under_the_requested_key() {
    let origin = Origin::start();
    let node = node_without_rules();
    set_rules(&node, &[rule_to(&origin, "/dir1/")]);
    let body = pattern_body(20_000, 61);
    // Relative Location: resolved against /dir1/old.jpg.
    origin.set("/dir1/old.jpg", Reply::redirect(302, "new.jpg"));
    origin.set("/dir1/new.jpg", Reply::ok(body.clone()));

    get_mirrored(&node, "old.jpg", &body);
    assert_eq!(origin_paths(&origin), ["/dir1/old.jpg", "/dir1/new.jpg"]);
    get_stored(node.data_addr(), &object_path("old.jpg"), &body);
    assert_eq!(origin_paths(&origin), ["/dir1/old.jpg", "/dir1/new.jpg"], "served again from the origin");
}

#[test]
fn redirect_loop_is_mirror_failed_after_ten_hops() {
    let origin = Origin::start();
    let node = node_without_rules();
    set_rules(&node, &[rule_to(&origin, "/dir1/")]);
    origin.set("/dir1/loop", Reply::redirect(302, "/dir1/loop"));

    let resp = get(node.data_addr(), &object_path("loop"), &[]).expect("GET");
    assert_s3_error(&resp, 424, Some("MirrorFailed"));
    // The first request plus ten followed redirects.
    assert_origin_count(&origin, "/dir1/loop", 11);
}

#[test]
fn follow_redirects_false_passes_the_3xx_and_stores_nothing() {
    let origin = Origin::start();
    let node = node_without_rules();
    let mut rule = rule_to(&origin, "/dir1/");
    rule["followRedirects"] = json!(false);
    set_rules(&node, &[rule]);
    origin.set("/dir1/moved", Reply::redirect(301, "http://127.0.0.1:1/elsewhere/moved"));

    for _ in 0..2 {
        let resp = get(node.data_addr(), &object_path("moved"), &[]).expect("GET");
        assert_eq!(resp.status, 301, "{resp:?}");
        assert_eq!(resp.header("location"), Some("http://127.0.0.1:1/elsewhere/moved"), "{resp:?}");
        assert!(resp.body.is_empty(), "{resp:?}");
    }
    // Nothing stored: the second GET went to the origin again.
    assert_origin_count(&origin, "/dir1/moved", 2);
}

#[test]
fn consecutive_misses_reuse_the_origin_connection() {
    let origin = Origin::start();
    // One worker: origin connections are pooled per core, and two client connections could
    // otherwise land on two cores.
    let node = NodeBuilder::new().with_workers(1).bucket(BUCKET).start();
    set_rules(&node, &[rule_to(&origin, "/dir1/")]);
    origin.set("/dir1/one", Reply::ok(pattern_body(10_000, 62)));
    origin.set("/dir1/two", Reply::ok(pattern_body(10_000, 63)));

    get_mirrored(&node, "one", &pattern_body(10_000, 62));
    get_mirrored(&node, "two", &pattern_body(10_000, 63));
    let requests = origin.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        requests[0].conn_id, requests[1].conn_id,
        "the second miss opened a new origin connection: {requests:?}"
    );
    // Not a vacuous pass: the origin did see a keep-alive request.
    assert!(requests[0].header("connection").is_none_or(|v| !v.eq_ignore_ascii_case("close")), "{requests:?}");
}

#[test]
fn closed_port_rule_is_accepted_but_fetch_fails() {
    // The API validates syntax and self-loops, not reachability: a rule to a dead origin is
    // accepted and a miss through it is 424.
    let node = node_without_rules();
    let dead = closed_port_addr();
    set_rules(&node, &[json!({"address": {"hostName": dead.to_string()}})]);
    let resp = get(node.data_addr(), &object_path("k"), &[]).expect("GET");
    assert_s3_error(&resp, 424, Some("MirrorFailed"));
}

/// Standby origins (`address.standbyUrls`): asked in order when the one before fails
/// (unreachable, 5xx, breaker open), each with its own MirrorURL path; a 404 is an answer and
/// does not fail over. Bad standby URLs are refused naming the field.
#[test]
fn standby_origins_take_over_when_the_primary_fails() {
    let standby = Origin::start();
    let second = Origin::start();
    let dead = crate::support::closed_port_addr();
    let node = NodeBuilder::new().bucket(BUCKET).start();
    set_rules(
        &node,
        &[json!({
            "address": {"hostName": dead.to_string(), "path": "/dir1/",
                        "standbyUrls": [format!("{}/mirror/", second.url()), format!("{}/backup/", standby.url())]},
        })],
    );
    second.set("/mirror/a.txt", Reply::status(503));
    standby.set("/backup/a.txt", Reply::ok("from the standby"));
    let resp = get(node.data_addr(), &object_path("a.txt"), &[]).unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"from the standby"[..]), "{resp:?}");
    assert_eq!(second.count("/mirror/a.txt"), 1, "the second origin was asked, and failed");
    assert!(node.stderr().contains("trying the next standby"), "{}", node.stderr());

    // A 404 is the origin's answer: no failover.
    second.set("/mirror/gone.txt", Reply::status(404));
    standby.set("/backup/gone.txt", Reply::ok("should not be asked"));
    let resp = get(node.data_addr(), &object_path("gone.txt"), &[]).unwrap();
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(standby.count("/backup/gone.txt"), 0);

    // With failoverStatuses, the statuses named move on (here a 404), and a 5xx not named does not.
    set_rules(
        &node,
        &[json!({
            "address": {"hostName": second.addr().to_string(), "path": "/mirror/",
                        "standbyUrls": [format!("{}/backup/", standby.url())]},
            "failoverStatuses": [404],
        })],
    );
    let resp = get(node.data_addr(), &object_path("gone.txt"), &[]).unwrap();
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"should not be asked"[..]), "{resp:?}");
    second.set("/mirror/b.txt", Reply::status(503));
    standby.set("/backup/b.txt", Reply::ok("b"));
    assert_eq!(get(node.data_addr(), &object_path("b.txt"), &[]).unwrap().status, 424);
    assert_eq!(standby.count("/backup/b.txt"), 0);
    let message = put_refused(
        &node,
        &json!({"backSourceRules": [{"address": {"hostName": "127.0.0.1:1"}, "failoverStatuses": [200]}]}).to_string(),
    );
    assert!(message.contains("failoverStatuses[0]"), "{message}");

    // The rule keeps its standbys as given, and bad ones are refused naming the field.
    let got = admin_request(node.admin_addr(), "GET", &back_source_path(BUCKET), Some(ADMIN_TOKEN), None);
    let rules = admin_json(&got);
    let standbys = &rules["result"]["backSourceRules"][0]["address"]["standbyUrls"];
    assert_eq!(standbys.as_array().map(Vec::len), Some(1), "{rules}");
    assert_eq!(rules["result"]["backSourceRules"][0]["failoverStatuses"], json!([404]), "{rules}");
    let message = put_refused(
        &node,
        &json!({"backSourceRules": [{"address": {"hostName": "127.0.0.1:1", "standbyUrls": ["ftp://x/"]}}]})
            .to_string(),
    );
    assert!(message.contains("address.standbyUrls[0]"), "{message}");
}

/// A weighted origin set (`address.originWeights`): each key goes first to the origin its hash
/// picks, in proportion to the weights (a weight of 0 is a standby only), and fails over to the
/// others in order.
#[test]
fn a_weighted_origin_set_spreads_keys_by_weight_and_fails_over() {
    let (a, b, c) = (Origin::start(), Origin::start(), Origin::start());
    let node = NodeBuilder::new().bucket(BUCKET).start();
    set_rules(
        &node,
        &[json!({
            "address": {"hostName": a.addr().to_string(), "path": "/o/",
                        "standbyUrls": [format!("{}/o/", b.url()), format!("{}/o/", c.url())],
                        "originWeights": [1, 3, 0]},
        })],
    );
    for origin in [&a, &b, &c] {
        for i in 0..400 {
            origin.set(&format!("/o/k{i}"), Reply::ok(format!("k{i}")));
        }
    }
    for i in 0..400 {
        let resp = get(node.data_addr(), &object_path(&format!("k{i}")), &[]).unwrap();
        assert_eq!(resp.body, format!("k{i}").into_bytes());
    }
    let count = |o: &Origin| (0..400).map(|i| o.count(&format!("/o/k{i}"))).sum::<usize>();
    let (on_a, on_b, on_c) = (count(&a), count(&b), count(&c));
    assert_eq!(on_a + on_b + on_c, 400, "one fetch per key");
    assert!((60..=140).contains(&on_a) && (260..=340).contains(&on_b) && on_c == 0, "{on_a} {on_b} {on_c}");

    // b fails: its keys go to the next origin in order (a), not to the weight-0 standby first.
    for i in 400..600 {
        a.set(&format!("/o/k{i}"), Reply::ok("from a"));
        b.set(&format!("/o/k{i}"), Reply::status(503));
        c.set(&format!("/o/k{i}"), Reply::ok("from c"));
    }
    for i in 400..600 {
        let resp = get(node.data_addr(), &object_path(&format!("k{i}")), &[]).unwrap();
        assert_eq!(resp.body, b"from a", "k{i}");
    }
    let message = put_refused(
        &node,
        &json!({"backSourceRules": [{"address": {"hostName": "127.0.0.1:1", "originWeights": [1, 2]}}]}).to_string(),
    );
    assert!(message.contains("address.originWeights"), "{message}");
}
