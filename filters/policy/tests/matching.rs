//! Table-driven matching semantics (Istio HTTPMatchRequest as Envoy runs it).
//! Runs natively and on wasm32 under wasm-bindgen-test.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::{route, routing, rule_hit};

struct Case {
    name: &'static str,
    /// The rule's `match` array.
    matches: &'static str,
    headers: &'static [(&'static str, &'static str)],
    port: Option<u16>,
    matched: bool,
}

const fn case(
    name: &'static str,
    matches: &'static str,
    headers: &'static [(&'static str, &'static str)],
    matched: bool,
) -> Case {
    Case { name, matches, headers, port: None, matched }
}

const CASES: &[Case] = &[
    // ---- uri
    case("uri exact matches the same path", r#"[{"uri": {"exact": "/a"}}]"#, &[(":path", "/a")], true),
    case("uri exact ignores the query string", r#"[{"uri": {"exact": "/a"}}]"#, &[(":path", "/a?x=1")], true),
    case("uri exact ignores a fragment", r#"[{"uri": {"exact": "/a"}}]"#, &[(":path", "/a#top")], true),
    case("uri exact refuses a longer path", r#"[{"uri": {"exact": "/a"}}]"#, &[(":path", "/a/b")], false),
    case("uri exact is case-sensitive", r#"[{"uri": {"exact": "/a"}}]"#, &[(":path", "/A")], false),
    case(
        "uri exact with ignore_uri_case",
        r#"[{"uri": {"exact": "/a"}, "ignore_uri_case": true}]"#,
        &[(":path", "/A")],
        true,
    ),
    case("uri prefix matches a longer path", r#"[{"uri": {"prefix": "/api"}}]"#, &[(":path", "/api/v1")], true),
    case("uri prefix is not path-segment aware", r#"[{"uri": {"prefix": "/api"}}]"#, &[(":path", "/apix")], true),
    case("uri prefix refuses another path", r#"[{"uri": {"prefix": "/api"}}]"#, &[(":path", "/ap")], false),
    case("uri prefix is case-sensitive", r#"[{"uri": {"prefix": "/api"}}]"#, &[(":path", "/API/v1")], false),
    case(
        "uri prefix with ignore_uri_case",
        r#"[{"uri": {"prefix": "/api"}, "ignore_uri_case": true}]"#,
        &[(":path", "/API/v1")],
        true,
    ),
    case(
        "uri regex must match the whole path",
        r#"[{"uri": {"regex": "/api/v[0-9]+"}}]"#,
        &[(":path", "/api/v12")],
        true,
    ),
    case("uri regex partial match is not enough", r#"[{"uri": {"regex": "/api"}}]"#, &[(":path", "/api/v1")], false),
    case("uri regex sees the path without query", r#"[{"uri": {"regex": "/a"}}]"#, &[(":path", "/a?b=c")], true),
    case(
        "uri regex ignores ignore_uri_case",
        r#"[{"uri": {"regex": "/a"}, "ignore_uri_case": true}]"#,
        &[(":path", "/A")],
        false,
    ),
    case("uri empty match accepts any path", r#"[{"uri": {}}]"#, &[(":path", "/anything")], true),
    case("uri condition fails without :path", r#"[{"uri": {"prefix": "/"}}]"#, &[], false),
    // ---- headers
    case("header exact matches", r#"[{"headers": {"end-user": {"exact": "jason"}}}]"#, &[("end-user", "jason")], true),
    case(
        "header exact refuses another value",
        r#"[{"headers": {"end-user": {"exact": "jason"}}}]"#,
        &[("end-user", "json")],
        false,
    ),
    case(
        "header exact is case-sensitive on the value",
        r#"[{"headers": {"end-user": {"exact": "jason"}}}]"#,
        &[("end-user", "Jason")],
        false,
    ),
    case(
        "header names are case-insensitive in config",
        r#"[{"headers": {"End-User": {"exact": "jason"}}}]"#,
        &[("end-user", "jason")],
        true,
    ),
    case(
        "header exact fails when the header is missing",
        r#"[{"headers": {"end-user": {"exact": "jason"}}}]"#,
        &[],
        false,
    ),
    case("header exact empty matches an empty value", r#"[{"headers": {"x": {"exact": ""}}}]"#, &[("x", "")], true),
    case("header exact empty does not match a missing header", r#"[{"headers": {"x": {"exact": ""}}}]"#, &[], false),
    case(
        "header prefix matches",
        r#"[{"headers": {"user-agent": {"prefix": "curl/"}}}]"#,
        &[("user-agent", "curl/8.0")],
        true,
    ),
    case(
        "header prefix refuses",
        r#"[{"headers": {"user-agent": {"prefix": "curl/"}}}]"#,
        &[("user-agent", "wget")],
        false,
    ),
    case("header regex full match", r#"[{"headers": {"x-id": {"regex": "[0-9]{3}"}}}]"#, &[("x-id", "123")], true),
    case(
        "header regex partial match is not enough",
        r#"[{"headers": {"x-id": {"regex": "[0-9]{3}"}}}]"#,
        &[("x-id", "1234")],
        false,
    ),
    case(
        "header regex alternation is anchored as a whole",
        r#"[{"headers": {"x": {"regex": "a|b"}}}]"#,
        &[("x", "ab")],
        false,
    ),
    case("header present matches any value", r#"[{"headers": {"x": {}}}]"#, &[("x", "whatever")], true),
    case("header present matches an empty value", r#"[{"headers": {"x": {}}}]"#, &[("x", "")], true),
    case("header present fails when missing", r#"[{"headers": {"x": {}}}]"#, &[], false),
    case("header regex star means present (Istio)", r#"[{"headers": {"x": {"regex": "*"}}}]"#, &[("x", "v")], true),
    case(
        "two headers are ANDed: both match",
        r#"[{"headers": {"a": {"exact": "1"}, "b": {"exact": "2"}}}]"#,
        &[("a", "1"), ("b", "2")],
        true,
    ),
    case(
        "two headers are ANDed: one missing",
        r#"[{"headers": {"a": {"exact": "1"}, "b": {"exact": "2"}}}]"#,
        &[("a", "1")],
        false,
    ),
    case(
        "repeated header values are joined with commas",
        r#"[{"headers": {"x": {"exact": "a,b"}}}]"#,
        &[("x", "a"), ("x", "b")],
        true,
    ),
    // ---- without_headers
    case(
        "without_headers exact passes another value",
        r#"[{"without_headers": {"x": {"exact": "a"}}}]"#,
        &[("x", "b")],
        true,
    ),
    case(
        "without_headers exact refuses that value",
        r#"[{"without_headers": {"x": {"exact": "a"}}}]"#,
        &[("x", "a")],
        false,
    ),
    case("without_headers exact passes a missing header", r#"[{"without_headers": {"x": {"exact": "a"}}}]"#, &[], true),
    case(
        "without_headers regex .* refuses a missing header (treated as empty)",
        r#"[{"without_headers": {"x": {"regex": ".*"}}}]"#,
        &[],
        false,
    ),
    case(
        "without_headers exact empty refuses a missing header",
        r#"[{"without_headers": {"x": {"exact": ""}}}]"#,
        &[],
        false,
    ),
    case("without_headers present passes a missing header", r#"[{"without_headers": {"x": {}}}]"#, &[], true),
    case(
        "without_headers present refuses a present header",
        r#"[{"without_headers": {"x": {}}}]"#,
        &[("x", "")],
        false,
    ),
    case(
        "without_headers prefix refuses a prefixed value",
        r#"[{"without_headers": {"x": {"prefix": "te"}}}]"#,
        &[("x", "test")],
        false,
    ),
    // ---- method, authority, scheme
    case("method exact matches", r#"[{"method": {"exact": "GET"}}]"#, &[(":method", "GET")], true),
    case("method exact refuses another method", r#"[{"method": {"exact": "GET"}}]"#, &[(":method", "POST")], false),
    case("method is case-sensitive", r#"[{"method": {"exact": "get"}}]"#, &[(":method", "GET")], false),
    case(
        "authority prefix sees host:port",
        r#"[{"authority": {"prefix": "reviews"}}]"#,
        &[(":authority", "reviews:9080")],
        true,
    ),
    case(
        "authority exact includes the port",
        r#"[{"authority": {"exact": "reviews"}}]"#,
        &[(":authority", "reviews:9080")],
        false,
    ),
    case("authority regex", r#"[{"authority": {"regex": "r[a-z]+:[0-9]+"}}]"#, &[(":authority", "reviews:9080")], true),
    case("scheme exact", r#"[{"scheme": {"exact": "https"}}]"#, &[(":scheme", "https")], true),
    case("scheme fails when missing", r#"[{"scheme": {"exact": "https"}}]"#, &[], false),
    // ---- query_params
    case("query exact matches", r#"[{"query_params": {"v": {"exact": "2"}}}]"#, &[(":path", "/p?v=2")], true),
    case(
        "query exact refuses another value",
        r#"[{"query_params": {"v": {"exact": "2"}}}]"#,
        &[(":path", "/p?v=3")],
        false,
    ),
    case(
        "query present matches any value",
        r#"[{"query_params": {"debug": {}}}]"#,
        &[(":path", "/p?a=1&debug=yes")],
        true,
    ),
    case(
        "query present matches a key without '='",
        r#"[{"query_params": {"debug": {}}}]"#,
        &[(":path", "/p?debug")],
        true,
    ),
    case("query fails when the key is missing", r#"[{"query_params": {"debug": {}}}]"#, &[(":path", "/p?a=1")], false),
    case("query fails without a query string", r#"[{"query_params": {"debug": {}}}]"#, &[(":path", "/p")], false),
    case(
        "query regex full match",
        r#"[{"query_params": {"id": {"regex": "[0-9]+"}}}]"#,
        &[(":path", "/p?id=42")],
        true,
    ),
    case(
        "query regex partial is not enough",
        r#"[{"query_params": {"id": {"regex": "[0-9]"}}}]"#,
        &[(":path", "/p?id=42")],
        false,
    ),
    case("query prefix", r#"[{"query_params": {"id": {"prefix": "4"}}}]"#, &[(":path", "/p?id=42")], true),
    case(
        "query repeated key uses the first value (no)",
        r#"[{"query_params": {"a": {"exact": "2"}}}]"#,
        &[(":path", "/p?a=1&a=2")],
        false,
    ),
    case(
        "query repeated key uses the first value (yes)",
        r#"[{"query_params": {"a": {"exact": "1"}}}]"#,
        &[(":path", "/p?a=1&a=2")],
        true,
    ),
    case(
        "query values are not percent-decoded",
        r#"[{"query_params": {"q": {"exact": "a b"}}}]"#,
        &[(":path", "/p?q=a%20b")],
        false,
    ),
    case(
        "query values match raw encoding",
        r#"[{"query_params": {"q": {"exact": "a%20b"}}}]"#,
        &[(":path", "/p?q=a%20b")],
        true,
    ),
    case(
        "query plus is not a space",
        r#"[{"query_params": {"q": {"exact": "a b"}}}]"#,
        &[(":path", "/p?q=a+b")],
        false,
    ),
    case("query empty value", r#"[{"query_params": {"q": {"exact": ""}}}]"#, &[(":path", "/p?q=")], true),
    case(
        "query value keeps text after a second '='",
        r#"[{"query_params": {"q": {"exact": "a=b"}}}]"#,
        &[(":path", "/p?q=a=b")],
        true,
    ),
    // ---- blocks: OR between, AND within
    case(
        "blocks are ORed: second matches",
        r#"[{"uri": {"exact": "/x"}}, {"uri": {"exact": "/y"}}]"#,
        &[(":path", "/y")],
        true,
    ),
    case(
        "blocks are ORed: none matches",
        r#"[{"uri": {"exact": "/x"}}, {"uri": {"exact": "/y"}}]"#,
        &[(":path", "/z")],
        false,
    ),
    case("empty match list matches everything", "[]", &[], true),
    case("empty match block matches everything", "[{}]", &[], true),
    case(
        "fields in a block are ANDed",
        r#"[{"uri": {"prefix": "/"}, "headers": {"x": {"exact": "1"}}}]"#,
        &[(":path", "/a"), ("x", "2")],
        false,
    ),
];

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn match_table() {
    let mut failures = Vec::new();
    for c in CASES {
        let config = routing(&format!("[{}]", route("r", c.matches)));
        let hit = rule_hit(&config, c.headers, c.port) == "r";
        if hit != c.matched {
            failures.push(format!("{}: expected matched={}, got {}", c.name, c.matched, hit));
        }
    }
    assert!(CASES.len() >= 60, "table has {} cases", CASES.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn port_condition_compares_the_request_port() {
    let config = routing(&format!("[{}]", route("r", r#"[{"port": 9080}]"#)));
    assert_eq!(rule_hit(&config, &[], Some(9080)), "r");
    assert_eq!(rule_hit(&config, &[], Some(80)), "");
    // Without a known port the block cannot match.
    assert_eq!(rule_hit(&config, &[], None), "");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn first_matching_rule_wins_over_a_more_specific_later_rule() {
    let config = routing(&format!(
        "[{}, {}]",
        route("broad", r#"[{"uri": {"prefix": "/"}}]"#),
        route("specific", r#"[{"uri": {"exact": "/reviews/1"}}]"#)
    ));
    assert_eq!(rule_hit(&config, &[(":path", "/reviews/1")], None), "broad");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rule_without_match_is_the_fallback() {
    let config = routing(&format!(
        "[{}, {}]",
        route("jason", r#"[{"headers": {"end-user": {"exact": "jason"}}}]"#),
        route("default", "[]")
    ));
    assert_eq!(rule_hit(&config, &[("end-user", "jason")], None), "jason");
    assert_eq!(rule_hit(&config, &[("end-user", "kim")], None), "default");
    assert_eq!(rule_hit(&config, &[], None), "default");
}

fn user_rule(name: &str, user: &str) -> String {
    route(name, &format!(r#"[{{"headers": {{"end-user": {{"exact": "{user}"}}}}}}]"#))
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn exact_header_index_keeps_first_match_wins() {
    // u0..u9 indexed; "dup" repeats u3's value later in the run.
    let mut rules: Vec<String> = (0..10).map(|i| user_rule(&format!("u{i}"), &format!("user{i}"))).collect();
    rules.push(user_rule("dup", "user3"));
    rules.push(route("after", r#"[{"headers": {"end-user": {"prefix": "user"}}}]"#));
    let config = routing(&format!("[{}]", rules.join(",")));
    assert_eq!(config.indexed_rule_count(), 11);
    assert_eq!(rule_hit(&config, &[("end-user", "user3")], None), "u3");
    assert_eq!(rule_hit(&config, &[("end-user", "user9")], None), "u9");
    assert_eq!(rule_hit(&config, &[("end-user", "user42")], None), "after");
    assert_eq!(rule_hit(&config, &[], None), "");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn rule_before_an_indexed_run_still_wins() {
    let mut rules = vec![route("early", r#"[{"uri": {"prefix": "/admin"}}]"#)];
    rules.extend((0..8).map(|i| user_rule(&format!("u{i}"), &format!("user{i}"))));
    let config = routing(&format!("[{}]", rules.join(",")));
    assert_eq!(rule_hit(&config, &[(":path", "/admin"), ("end-user", "user1")], None), "early");
    assert_eq!(rule_hit(&config, &[(":path", "/x"), ("end-user", "user1")], None), "u1");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn runs_on_different_headers_are_indexed_separately() {
    let mut rules: Vec<String> = (0..5).map(|i| user_rule(&format!("u{i}"), &format!("user{i}"))).collect();
    rules.extend(
        (0..5).map(|i| route(&format!("t{i}"), &format!(r#"[{{"headers": {{"x-tenant": {{"exact": "t{i}"}}}}}}]"#))),
    );
    let config = routing(&format!("[{}]", rules.join(",")));
    assert_eq!(config.indexed_rule_count(), 10);
    assert_eq!(rule_hit(&config, &[("x-tenant", "t2"), ("end-user", "user4")], None), "u4");
    assert_eq!(rule_hit(&config, &[("x-tenant", "t2"), ("end-user", "nobody")], None), "t2");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn short_runs_are_not_indexed() {
    let rules: Vec<String> = (0..3).map(|i| user_rule(&format!("u{i}"), &format!("user{i}"))).collect();
    let config = routing(&format!("[{}]", rules.join(",")));
    assert_eq!(config.indexed_rule_count(), 0);
    assert_eq!(rule_hit(&config, &[("end-user", "user2")], None), "u2");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn headers_are_fetched_once_and_only_when_needed() {
    use std::cell::RefCell;
    use switchyard_policy::{HeaderSource, Request};
    struct Counting(RefCell<Vec<String>>);
    impl HeaderSource for Counting {
        fn header(&self, name: &str) -> Option<String> {
            self.0.borrow_mut().push(name.to_string());
            match name {
                ":authority" => Some("reviews".into()),
                ":path" => Some("/x".into()),
                _ => None,
            }
        }
    }
    let config = routing(&format!(
        "[{}, {}, {}]",
        route("a", r#"[{"uri": {"prefix": "/a"}}]"#),
        route("b", r#"[{"uri": {"prefix": "/b"}, "headers": {"x": {}}}]"#),
        route("c", r#"[{"uri": {"prefix": "/x"}}]"#)
    ));
    let source = Counting(RefCell::new(Vec::new()));
    let mut req = Request::new(&source);
    let _ = config.decide(&mut req, 0);
    // `x` is never read: rule b fails on its uri first.
    assert_eq!(*source.0.borrow(), vec![":authority".to_string(), ":path".to_string()]);
}

// ---- virtual host lookup

const HOSTS: &str = r#"[
  {"name": "exact", "domains": ["reviews", "Reviews.Default.svc"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "with-port", "domains": ["reviews:9080"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "suffix", "domains": ["*.example.com"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "longer-suffix", "domains": ["*.api.example.com"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "prefix", "domains": ["ratings.*"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "v6", "domains": ["[::1]"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]},
  {"name": "any", "domains": ["*"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]}
]"#;

const NO_CATCH_ALL: &str = r#"[
  {"name": "exact", "domains": ["reviews"], "routes": [{"name": "r", "route": [{"destination": {"host": "a", "port": 1}}]}]}
]"#;

fn host_of(config: &switchyard_policy::routing::CompiledRouting, authority: Option<&str>) -> String {
    use switchyard_policy::routing::RoutingDecision;
    use switchyard_policy::Request;
    let pairs: Vec<(&str, &str)> = authority.map(|a| (":authority", a)).into_iter().collect();
    let source = common::headers(&pairs);
    match config.decide(&mut Request::new(&source), 0) {
        RoutingDecision::Unmanaged => "unmanaged".into(),
        RoutingDecision::NoRoute { virtual_host } => virtual_host.into(),
        RoutingDecision::Route(r) => r.virtual_host.into(),
        RoutingDecision::Redirect(r) => r.virtual_host.into(),
        RoutingDecision::DirectResponse(r) => r.virtual_host.into(),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn virtual_host_lookup_table() {
    let config = common::routing_with_hosts(HOSTS);
    let table: &[(&str, Option<&str>, &str)] = &[
        ("exact domain", Some("reviews"), "exact"),
        ("exact domain is case-insensitive", Some("REVIEWS"), "exact"),
        ("configured domain is lowercased", Some("reviews.default.svc"), "exact"),
        ("host:port domain beats the bare host", Some("reviews:9080"), "with-port"),
        ("bare domain serves another port", Some("reviews:8080"), "exact"),
        ("suffix wildcard matches a subdomain", Some("www.example.com"), "suffix"),
        ("suffix wildcard matches deeper names", Some("a.b.example.com"), "suffix"),
        ("suffix wildcard does not match the apex", Some("example.com"), "any"),
        ("longest suffix wins", Some("v1.api.example.com"), "longer-suffix"),
        ("suffix wildcard with port in the authority", Some("www.example.com:8443"), "suffix"),
        ("prefix wildcard", Some("ratings.default"), "prefix"),
        ("exact beats wildcards", Some("reviews"), "exact"),
        ("ipv6 literal with port", Some("[::1]:80"), "v6"),
        ("catch-all takes the rest", Some("other"), "any"),
        ("missing authority is unmanaged", None, "unmanaged"),
    ];
    for (name, authority, expected) in table {
        assert_eq!(host_of(&config, *authority), *expected, "{name}");
    }
    let config = common::routing_with_hosts(NO_CATCH_ALL);
    assert_eq!(host_of(&config, Some("ratings")), "unmanaged", "no host serves the authority");
}
