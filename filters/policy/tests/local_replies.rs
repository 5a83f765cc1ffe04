//! Istio fidelity of weights, rewrites and the answers the routing filter
//! gives itself: normalised weights, `uriRegexRewrite` (Envoy's
//! `regex_rewrite`), redirects with Envoy's `location` rules (`port`,
//! `derivePort`, `scheme`, `prefixRewrite`), the `require_tls` answer of a
//! Gateway's `httpsRedirect`, and `directResponse`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::headers;
use switchyard_policy::routing::{CompiledRouting, RedirectTarget, RoutingDecision};
use switchyard_policy::Request;

fn compile(routes: &str) -> CompiledRouting {
    let json =
        format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "web", "domains": ["*"], "routes": [{routes}]}}]}}"#);
    match CompiledRouting::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn dest(subset: &str) -> String {
    format!(r#"{{"host": "web", "subset": "{subset}", "port": 80}}"#)
}

/// The destination a draw at `fraction` of the `u64` range picks.
fn picked(config: &CompiledRouting, fraction: f64) -> String {
    let source = headers(&[(":authority", "web"), (":path", "/")]);
    match config.decide(&mut Request::new(&source), (fraction * u64::MAX as f64) as u64) {
        RoutingDecision::Route(r) => r.cluster.to_string(),
        other => panic!("expected a route, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn weights_are_shares_of_their_sum_as_in_istio() {
    // 1 and 3: a quarter and three quarters (Istio sends weight / sum).
    let config = compile(&format!(
        r#"{{"name": "split", "route": [{{"destination": {}, "weight": 1}}, {{"destination": {}, "weight": 3}}]}}"#,
        dest("v1"),
        dest("v2")
    ));
    assert_eq!(picked(&config, 0.0), "outbound|80|v1|web");
    assert_eq!(picked(&config, 0.24), "outbound|80|v1|web");
    assert_eq!(picked(&config, 0.26), "outbound|80|v2|web");
    assert_eq!(picked(&config, 1.0), "outbound|80|v2|web");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_destination_without_weight_next_to_weighted_ones_gets_nothing() {
    let config = compile(&format!(
        r#"{{"name": "split", "route": [{{"destination": {}, "weight": 100}}, {{"destination": {}}}]}}"#,
        dest("v1"),
        dest("v2")
    ));
    for fraction in [0.0, 0.5, 0.999, 1.0] {
        assert_eq!(picked(&config, fraction), "outbound|80|v1|web");
    }
}

fn rewritten(rewrite: &str, match_: &str, path: &str) -> String {
    let config = compile(&format!(
        r#"{{"name": "r", "match": [{match_}], "route": [{{"destination": {}}}], "rewrite": {rewrite}}}"#,
        dest("v1")
    ));
    let source = headers(&[(":authority", "web"), (":path", path)]);
    match config.decide(&mut Request::new(&source), 0) {
        RoutingDecision::Route(r) => r.uri_rewrite.expect("a rewrite").apply(path),
        other => panic!("expected a route, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn uri_regex_rewrite_replaces_every_match_in_the_path_and_keeps_the_query() {
    // Istio's own example, groups referenced as \1, \2. Its docs show
    // "/customprefix/v1/api/update", but group 2 is "/v1/api", so RE2 (and
    // Envoy) give a double slash; so do we.
    let swap = r#"{"uri_regex": {"pattern": "^/service/([^/]+)(/.*)$", "substitution": "/customprefix/\\2/\\1"}}"#;
    assert_eq!(rewritten(swap, "{}", "/service/update/v1/api?x=1"), "/customprefix//v1/api/update?x=1");
    // Case-insensitive, and every match is replaced (RE2's GlobalReplace).
    let yyy = r#"{"uri_regex": {"pattern": "(?i)/xxx/", "substitution": "/yyy/"}}"#;
    assert_eq!(rewritten(yyy, "{}", "/aaa/XxX/bbb/xxx/c"), "/aaa/yyy/bbb/yyy/c");
    // \0 is the whole match, \\ a backslash; no match leaves the path alone.
    let whole = r#"{"uri_regex": {"pattern": "b+", "substitution": "[\\0\\\\]"}}"#;
    assert_eq!(rewritten(whole, "{}", "/abbc"), "/a[bb\\]c");
    assert_eq!(rewritten(whole, "{}", "/none"), "/none");
    // The prefix rewrite still replaces the matched prefix.
    assert_eq!(rewritten(r#"{"uri": "/v2/"}"#, r#"{"uri": {"prefix": "/v1/"}}"#, "/v1/a?q"), "/v2/a?q");
}

fn location(redirect: &str, match_: &str, target: &RedirectTarget<'_>, port: Option<u16>) -> (u16, String) {
    let config = compile(&format!(r#"{{"name": "r", "match": [{match_}], "redirect": {redirect}}}"#));
    let source = headers(&[(":authority", target.authority), (":path", target.path)]);
    let mut req = Request::new(&source);
    if let Some(port) = port {
        req = req.with_port(port);
    }
    match config.decide(&mut req, 0) {
        RoutingDecision::Redirect(r) => (r.status, r.location(target)),
        other => panic!("expected a redirect, got {other:?}"),
    }
}

fn http<'a>(authority: &'a str, path: &'a str) -> RedirectTarget<'a> {
    RedirectTarget { scheme: "http", forwarded_proto: "http", authority, path }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn redirects_build_the_location_as_envoy_does() {
    let r = |redirect: &str, target: RedirectTarget<'_>| location(redirect, "{}", &target, Some(8080)).1;
    // Scheme change: the old scheme's default port goes, another port stays.
    assert_eq!(r(r#"{"scheme": "https"}"#, http("web:80", "/a?q")), "https://web/a?q");
    assert_eq!(r(r#"{"scheme": "https"}"#, http("web:8080", "/a")), "https://web:8080/a");
    assert_eq!(r(r#"{"scheme": "https"}"#, http("[::1]:80", "/a")), "https://[::1]/a");
    // A port replaces the request's.
    assert_eq!(r(r#"{"scheme": "https", "port": 8443}"#, http("web:80", "/a")), "https://web:8443/a");
    assert_eq!(r(r#"{"port": 9090}"#, http("web", "/a")), "http://web:9090/a");
    // FROM_REQUEST_PORT: the request's (Istio) port.
    assert_eq!(r(r#"{"authority": "other", "port_from_request": true}"#, http("web", "/a")), "http://other:8080/a");
    // No port: the request's is kept (Istio's FROM_PROTOCOL_DEFAULT sets none).
    assert_eq!(r(r#"{"uri": "/new"}"#, http("web:8080", "/a?q=1")), "http://web:8080/new?q=1");
    // An https request keeps :443 only when the scheme does not change.
    let https = RedirectTarget { scheme: "https", forwarded_proto: "https", authority: "web:443", path: "/" };
    assert_eq!(r(r#"{"uri": "/b"}"#, https), "https://web:443/b");
    let https = RedirectTarget { scheme: "https", forwarded_proto: "https", authority: "web:443", path: "/" };
    assert_eq!(r(r#"{"scheme": "http"}"#, https), "http://web/");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn prefix_rewrite_redirect_replaces_the_matched_prefix() {
    let target = http("web", "/foo/baz?x=1");
    let (status, at) = location(
        r#"{"prefix_rewrite": "/bar", "redirect_code": 302}"#,
        r#"{"uri": {"prefix": "/foo"}}"#,
        &target,
        None,
    );
    assert_eq!((status, at.as_str()), (302, "http://web/bar/baz?x=1"));
    let (_, at) = location(r#"{"prefix_rewrite": "/"}"#, r#"{"uri": {"prefix": "/foo/"}}"#, &target, None);
    assert_eq!(at, "http://web/baz?x=1");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn https_redirect_answers_301_to_https_with_the_authority_as_sent() {
    // Envoy's require_tls (`createSslRedirectPath`): nothing is dropped.
    let match_ = r#"{"without_headers": {"x-forwarded-proto": {"exact": "https"}}}"#;
    let (status, at) = location(r#"{"https_redirect": true}"#, match_, &http("web:80", "/a?b"), None);
    assert_eq!((status, at.as_str()), (301, "https://web:80/a?b"));
    // Already https (x-forwarded-proto): the rule does not match.
    let config = compile(&format!(r#"{{"name": "r", "match": [{match_}], "redirect": {{"https_redirect": true}}}}"#));
    let source = headers(&[(":authority", "web"), (":path", "/"), ("x-forwarded-proto", "https")]);
    assert!(matches!(config.decide(&mut Request::new(&source), 0), RoutingDecision::NoRoute { .. }));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn direct_response_answers_with_status_body_and_response_headers() {
    let config = compile(&format!(
        r#"{{"name": "healthz", "match": [{{"uri": {{"exact": "/healthz"}}}}], "direct_response": {{"status": 200, "body": "ok"}},
             "headers": {{"response": {{"set": {{"content-type": "text/plain; charset=utf-8"}}}}}}}},
           {{"name": "gone", "match": [{{"uri": {{"prefix": "/old"}}}}], "direct_response": {{"status": 410}}}},
           {{"name": "rest", "route": [{{"destination": {}}}]}}"#,
        dest("v1")
    ));
    let decide = |path: &str| {
        let source = headers(&[(":authority", "web"), (":path", path)]);
        match config.decide(&mut Request::new(&source), 0) {
            RoutingDecision::DirectResponse(d) => {
                let headers: Vec<String> = d.headers.set.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{} {} {:?} {headers:?}", d.rule, d.status, d.body)
            }
            RoutingDecision::Route(r) => format!("route {}", r.rule),
            other => format!("{other:?}"),
        }
    };
    assert_eq!(decide("/healthz"), r#"healthz 200 Some("ok") ["content-type: text/plain; charset=utf-8"]"#);
    assert_eq!(decide("/old/x"), "gone 410 None []");
    assert_eq!(decide("/healthz/more"), "route rest");
}
