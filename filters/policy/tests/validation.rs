//! Config validation: every rejected config names the field at fault.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use switchyard_policy::egress::CompiledEgress;
use switchyard_policy::fault::CompiledFault;
use switchyard_policy::mirror::CompiledMirror;
use switchyard_policy::routing::CompiledRouting;
use switchyard_policy::{parse_duration, ConfigError};

fn routing_err(json: &str) -> String {
    match CompiledRouting::from_json(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

/// A routing config with one route whose body is `route` (JSON object members).
fn with_route(route: &str) -> String {
    format!(
        r#"{{"version": 1, "virtual_hosts": [{{"name": "vh", "domains": ["*"], "routes": [{{"name": "r", {route}}}]}}]}}"#
    )
}

const DEST: &str = r#""route": [{"destination": {"host": "reviews", "port": 9080}}]"#;

/// (config, expected error) pairs; the expected text must be a prefix of
/// the error (serde messages end with a line/column position).
fn routing_cases() -> Vec<(String, &'static str)> {
    vec![
        (r#"{"virtual_hosts": []}"#.into(), "version: missing config version (this filter understands 1)"),
        (r#"{"version": 2, "virtual_hosts": []}"#.into(), "version: unsupported config version 2 (this filter understands 1)"),
        (r#"{"version": "1", "virtual_hosts": []}"#.into(), "version: unsupported config version \"1\" (this filter understands 1)"),
        (r#"{"version": 1, "virtual_hosts": [], "extra": 1}"#.into(), "extra: unknown field `extra`"),
        (r#"{"version": 1}"#.into(), "(config): missing field `virtual_hosts`"),
        (r#"{"version": 1, "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": []}]}"#.into(),
            "virtual_hosts[0].routes: at least one route is required"),
        (r#"{"version": 1, "virtual_hosts": [{"name": "a", "domains": [], "routes": []}]}"#.into(),
            "virtual_hosts[0].domains: at least one domain is required"),
        (format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "a", "domains": ["x.com"], "routes": [{{"name": "r", {DEST}}}]}}, {{"name": "b", "domains": ["X.com"], "routes": [{{"name": "r", {DEST}}}]}}]}}"#),
            "virtual_hosts[1].domains[0]: domain \"x.com\" is already used by virtual_hosts[0] (domains are case-insensitive)"),
        (format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "a", "domains": ["a*b"], "routes": [{{"name": "r", {DEST}}}]}}]}}"#),
            "virtual_hosts[0].domains[0]: invalid domain \"a*b\": a wildcard is allowed only as the first or last character"),
        (format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "a", "domains": ["a"], "routes": [{{"name": "r", {DEST}}}]}}, {{"name": "a", "domains": ["b"], "routes": [{{"name": "r", {DEST}}}]}}]}}"#),
            "virtual_hosts[1].name: virtual host name \"a\" is already used by virtual_hosts[0]"),
        (format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "a", "domains": ["a"], "routes": [{{"name": "r", {DEST}}}, {{"name": "r", {DEST}}}]}}]}}"#),
            "virtual_hosts[0].routes[1].name: route name \"r\" is already used by routes[0] of this virtual host"),
        (with_route(r#""match": [{"headers": {"end-user": {"regex": "("}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"end-user\"].regex: invalid regex \"(\":"),
        (with_route(r#""match": [{"uri": {"regex": "a)|(b"}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].uri.regex: invalid regex \"a)|(b\":"),
        (with_route(r#""match": [{"headers": {"x": {"regex": "\\pL"}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"x\"].regex: invalid regex \"\\\\pL\":"),
        (with_route(r#""match": [{"uri": {"regex": "(a{100}){100}"}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].uri.regex: regex \"(a{100}){100}\" is too complex (about"),
        (with_route(r#""match": [{"headers": {"x": {"exact": "a", "prefix": "b"}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"x\"]: set exactly one of exact, prefix, regex (or none for \"present\")"),
        (with_route(r#""match": [{"headers": {"x": {"prefix": ""}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"x\"].prefix: prefix must not be empty (use {} to match any value)"),
        (with_route(r#""match": [{"headers": {"x": {"suffix": "b"}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"x\"].suffix: unknown field `suffix`"),
        (with_route(r#""match": [{"headers": {"X": {}, "x": {}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"x\"]: header \"x\" is matched twice in this block (names are case-insensitive)"),
        (with_route(r#""match": [{"headers": {"x": {}, "x": {}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers: duplicate key \"x\""),
        (with_route(r#""match": [{"headers": {"bad name": {}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].headers[\"bad name\"]: invalid header name \"bad name\""),
        (with_route(r#""match": [{"port": 0}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].port: port must be within 1..=65535"),
        (with_route(r#""match": [{"port": 70000}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].port: invalid value: integer `70000`"),
        (with_route(r#""match": [{"query_params": {"q": {"regex": ""}}}], "route": [{"destination": {"host": "reviews", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].match[0].query_params[\"q\"].regex: regex must not be empty"),
        (with_route(r#""match": []"#), "virtual_hosts[0].routes[0]: set exactly one of route, redirect, direct_response (none is set)"),
        (with_route(&format!(r#"{DEST}, "redirect": {{"uri": "/x"}}"#)),
            "virtual_hosts[0].routes[0]: set exactly one of route, redirect, direct_response (route and redirect are set)"),
        (with_route(r#""redirect": {"uri": "/x"}, "direct_response": {"status": 200}"#),
            "virtual_hosts[0].routes[0]: set exactly one of route, redirect, direct_response (redirect and direct_response are set)"),
        (with_route(r#""direct_response": {"status": 600}"#),
            "virtual_hosts[0].routes[0].direct_response.status: status 600 is not within 200..=599"),
        (with_route(r#""direct_response": {"status": 200}, "timeout": "1s""#),
            "virtual_hosts[0].routes[0].timeout: timeout has no effect on a direct response: remove it"),
        (with_route(r#""direct_response": {"body": "x"}"#),
            "virtual_hosts[0].routes[0].direct_response: missing field `status`"),
        (with_route(r#""redirect": {"uri": "/x", "prefix_rewrite": "/y"}"#),
            "virtual_hosts[0].routes[0].redirect: set uri or prefix_rewrite, not both"),
        (with_route(r#""redirect": {"port": 8080, "port_from_request": true}"#),
            "virtual_hosts[0].routes[0].redirect: set port or port_from_request, not both"),
        (with_route(r#""redirect": {"port": 0}"#),
            "virtual_hosts[0].routes[0].redirect.port: port must be within 1..=65535"),
        (with_route(r#""redirect": {"https_redirect": true, "redirect_code": 302}"#),
            "virtual_hosts[0].routes[0].redirect.redirect_code: redirect_code cannot be combined with https_redirect"),
        (with_route(&format!(r#"{DEST}, "rewrite": {{"uri": "/a", "uri_regex": {{"pattern": "a", "substitution": "b"}}}}"#)),
            "virtual_hosts[0].routes[0].rewrite: set uri or uri_regex, not both"),
        (with_route(&format!(r#"{DEST}, "rewrite": {{"uri_regex": {{"pattern": "(", "substitution": "b"}}}}"#)),
            "virtual_hosts[0].routes[0].rewrite.uri_regex.pattern: invalid regex \"(\": found open group without closing ')'"),
        (with_route(&format!(r#"{DEST}, "rewrite": {{"uri_regex": {{"pattern": "/(a)", "substitution": "\\2"}}}}"#)),
            "virtual_hosts[0].routes[0].rewrite.uri_regex.substitution: substitution \"\\\\2\" refers to group \\2, but the pattern has 1 group(s)"),
        (with_route(&format!(r#"{DEST}, "rewrite": {{"uri_regex": {{"pattern": "/a", "substitution": "\\x"}}}}"#)),
            "virtual_hosts[0].routes[0].rewrite.uri_regex.substitution: invalid substitution \"\\\\x\": a backslash must be followed by a digit or another backslash (RE2)"),
        (with_route(r#""redirect": {"uri": "/x", "redirect_code": 304}"#),
            "virtual_hosts[0].routes[0].redirect.redirect_code: redirect_code 304 is not one of 301, 302, 303, 307, 308"),
        (with_route(r#""redirect": {"uri": "x"}"#),
            "virtual_hosts[0].routes[0].redirect.uri: redirect uri \"x\" must be a path starting with /"),
        (with_route(r#""redirect": {"uri": "/x"}, "timeout": "1s""#),
            "virtual_hosts[0].routes[0].timeout: timeout has no effect on a redirect: remove it"),
        (with_route(r#""route": []"#), "virtual_hosts[0].routes[0].route: at least one destination is required"),
        (with_route(r#""route": [{"destination": {"host": "a", "port": 1}, "weight": 0}, {"destination": {"host": "b", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].route: every destination has weight 0 (or none): give at least one a weight above 0 (Istio refuses a total of 0)"),
        (with_route(r#""route": [{"destination": {"host": "a", "port": 1}, "weight": -1}]"#),
            "virtual_hosts[0].routes[0].route[0].weight: invalid value: integer `-1`"),
        (with_route(r#""route": [{"destination": {"host": "reviews"}}]"#),
            "virtual_hosts[0].routes[0].route[0].destination.port: cluster_name_template \"outbound|{port}|{subset}|{host}\" uses {port} but destination \"reviews\" has no port"),
        (with_route(r#""route": [{"destination": {"host": "bad host", "port": 1}}]"#),
            "virtual_hosts[0].routes[0].route[0].destination.host: invalid destination host \"bad host\""),
        (with_route(&format!(r#"{DEST}, "timeout": "-1s""#)), "virtual_hosts[0].routes[0].timeout: invalid duration \"-1s\""),
        (with_route(&format!(r#"{DEST}, "timeout": "10""#)),
            "virtual_hosts[0].routes[0].timeout: duration \"10\" is missing a unit (h, m, s, ms, us, ns)"),
        (with_route(&format!(r#"{DEST}, "timeout": "100us""#)), "virtual_hosts[0].routes[0].timeout: duration \"100us\" must be at least 1ms"),
        (with_route(&format!(r#"{DEST}, "timeout": "99999999999h""#)), "virtual_hosts[0].routes[0].timeout: duration \"99999999999h\" is too large"),
        (with_route(&format!(r#"{DEST}, "timeout": 5"#)), "virtual_hosts[0].routes[0].timeout: invalid type: integer `5`, expected a string"),
        (with_route(&format!(r#"{DEST}, "retries": {{"attempts": 3, "retry_on": "5xx,sometimes"}}"#)),
            "virtual_hosts[0].routes[0].retries.retry_on: unknown retry condition \"sometimes\""),
        (with_route(&format!(r#"{DEST}, "retries": {{"attempts": 3, "retry_on": "999"}}"#)),
            "virtual_hosts[0].routes[0].retries.retry_on: status code 999 is not within 100..=599"),
        (with_route(&format!(r#"{DEST}, "retries": {{"attempts": 3, "per_try_timeout": "0s"}}"#)),
            "virtual_hosts[0].routes[0].retries.per_try_timeout: duration \"0s\" must be at least 1ms"),
        (with_route(&format!(r#"{DEST}, "headers": {{"request": {{"set": {{":authority": "x"}}}}}}"#)),
            "virtual_hosts[0].routes[0].headers.request.set[\":authority\"]: header \":authority\" cannot be changed here (use rewrite.authority for the authority)"),
        (with_route(&format!(r#"{DEST}, "headers": {{"response": {{"add": {{"x": "a\nb"}}}}}}"#)),
            "virtual_hosts[0].routes[0].headers.response.add[\"x\"]: header value must not contain CR, LF or NUL"),
        (with_route(&format!(r#"{DEST}, "rewrite": {{}}"#)), "virtual_hosts[0].routes[0].rewrite: set uri or uri_regex, authority, or both"),
        (with_route(&format!(r#"{DEST}, "sticky": {{"header": "x", "cookie": "y"}}"#)), "virtual_hosts[0].routes[0].sticky:"),
        (with_route(&format!(r#"{DEST}, "sticky": {{"cookie": "a b"}}"#)), "virtual_hosts[0].routes[0].sticky.cookie: invalid cookie name \"a b\""),
        (r#"{"version": 1, "cluster_name_template": "{cluster}", "virtual_hosts": []}"#.into(),
            "cluster_name_template: unknown placeholder {cluster} in cluster_name_template (known: {host}, {port}, {subset})"),
        (r#"{"version": 1, "cluster_name_template": "a{host", "virtual_hosts": []}"#.into(),
            "cluster_name_template: unclosed '{' in cluster_name_template \"a{host\""),
        (r#"{"version": 1, "cluster_header": ":path", "virtual_hosts": []}"#.into(),
            "cluster_header: cluster_header must not be a pseudo-header"),
        (r#"{"version": 1, "virtual_hosts": [}"#.into(), "virtual_hosts: expected value at line 1 column 34"),
        ("[1, 2]".into(), "(config): a config must be a JSON object"),
        ("".into(), "(config): EOF while parsing a value at line 1 column 0"),
        (r#"{"version": 1, "virtual_hosts": []} trailing"#.into(), "(config): trailing characters"),
        (r#"{"version": 1e400, "virtual_hosts": []}"#.into(), "version: number out of range"),
    ]
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn routing_errors_name_the_field() {
    let mut failures = Vec::new();
    for (json, expected) in routing_cases() {
        let got = routing_err(&json);
        if !got.starts_with(expected) {
            failures.push(format!("config: {json}\n  expected: {expected}\n  got:      {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn invalid_utf8_and_deep_nesting_are_errors() {
    let bad_utf8: &[u8] = b"{\"version\": 1, \"virtual_hosts\": [{\"name\": \"\xff\"}]}";
    assert!(CompiledRouting::from_json(bad_utf8).is_err());
    for deep in [
        format!(r#"{{"version": 1, "virtual_hosts": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000)),
        format!(r#"{{"version": {}{}, "virtual_hosts": []}}"#, "[".repeat(100_000), "]".repeat(100_000)),
        format!(r#"{{"version": 1, "x": {}{}}}"#, "{\"a\":".repeat(100_000), "}".repeat(100_000)),
    ] {
        assert!(CompiledRouting::from_json(deep.as_bytes()).is_err());
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn many_regexes_together_exceed_the_compile_budget() {
    let route = |i: usize| {
        format!(
            r#"{{"name": "r{i}", "match": [{{"uri": {{"regex": "[a-z]{{900}}"}}}}], "route": [{{"destination": {{"host": "a", "port": 1}}}}]}}"#
        )
    };
    let routes: Vec<String> = (0..600).map(route).collect();
    let json = format!(
        r#"{{"version": 1, "virtual_hosts": [{{"name": "v", "domains": ["*"], "routes": [{}]}}]}}"#,
        routes.join(",")
    );
    let err = routing_err(&json);
    assert!(
        err.starts_with("virtual_hosts[0].routes[554].match[0]: the config's regexes are too complex together"),
        "{err}"
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn oversized_configs_are_refused_before_parsing() {
    let huge = vec![b' '; 10 << 20];
    let err = match CompiledRouting::from_json(&huge) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert_eq!(err.to_string(), "(config): config is 10485760 bytes, over the 4194304-byte limit");
}

fn expect_err<T>(result: Result<T, ConfigError>) -> String {
    match result {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fault_errors_name_the_field() {
    let fault = |route: &str| {
        expect_err(CompiledFault::from_json(
            format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "f", {route}}}]}}]}}"#)
                .as_bytes(),
        ))
    };
    let cases: &[(&str, &str)] = &[
        (r#""match": []"#, "virtual_hosts[0].routes[0]: a fault rule needs delay, abort or both"),
        (r#""delay": {"fixed_delay": "5s"}"#, "virtual_hosts[0].routes[0].delay: missing field `percentage`"),
        (
            r#""delay": {"fixed_delay": "5s", "percentage": 101}"#,
            "virtual_hosts[0].routes[0].delay.percentage: percentage 101 is not within 0..=100",
        ),
        (
            r#""delay": {"fixed_delay": "5s", "percentage": -0.5}"#,
            "virtual_hosts[0].routes[0].delay.percentage: percentage -0.5 is not within 0..=100",
        ),
        (
            r#""delay": {"fixed_delay": "0s", "percentage": 10}"#,
            "virtual_hosts[0].routes[0].delay.fixed_delay: duration \"0s\" must be at least 1ms",
        ),
        (
            r#""abort": {"percentage": 10}"#,
            "virtual_hosts[0].routes[0].abort: set exactly one of http_status, grpc_status",
        ),
        (
            r#""abort": {"http_status": 500, "grpc_status": 14, "percentage": 10}"#,
            "virtual_hosts[0].routes[0].abort: set exactly one of http_status, grpc_status",
        ),
        (
            r#""abort": {"http_status": 700, "percentage": 10}"#,
            "virtual_hosts[0].routes[0].abort.http_status: http_status 700 is not within 200..=599",
        ),
        (
            r#""abort": {"grpc_status": 17, "percentage": 10}"#,
            "virtual_hosts[0].routes[0].abort.grpc_status: grpc_status 17 is not a gRPC status code (0..=16)",
        ),
        (
            r#""abort": {"http_status": 500, "percentage": "10"}"#,
            "virtual_hosts[0].routes[0].abort.percentage: invalid type: string \"10\", expected f64",
        ),
    ];
    for (route, expected) in cases {
        let got = fault(route);
        assert!(got.starts_with(expected), "expected {expected}\n got {got}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn mirror_errors_name_the_field() {
    let mirror = |route: &str| {
        expect_err(CompiledMirror::from_json(
            format!(r#"{{"version": 1, "virtual_hosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "m", {route}}}]}}]}}"#)
                .as_bytes(),
        ))
    };
    assert_eq!(mirror(r#""mirrors": []"#), "virtual_hosts[0].routes[0].mirrors: at least one mirror is required");
    assert_eq!(
        mirror(r#""mirrors": [{"destination": {"host": "a", "port": 1}, "percentage": 200}]"#),
        "virtual_hosts[0].routes[0].mirrors[0].percentage: percentage 200 is not within 0..=100"
    );
    assert_eq!(
        mirror(r#""mirrors": [{"destination": {"host": "a"}}]"#),
        "virtual_hosts[0].routes[0].mirrors[0].destination.port: cluster_name_template \"outbound|{port}|{subset}|{host}\" uses {port} but destination \"a\" has no port"
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn mirror_bounds_and_compare_errors_name_the_field() {
    let mirror = |fields: &str| {
        expect_err(CompiledMirror::from_json(
            format!(
                r#"{{"version": 1, "virtual_hosts": [{{"name": "v", "domains": ["*"], "routes": [{{"name": "m",
                "mirrors": [{{"destination": {{"host": "a", "port": 1}}{fields}}}]}}]}}]}}"#
            )
            .as_bytes(),
        ))
    };
    let at = "virtual_hosts[0].routes[0].mirrors[0]";
    assert_eq!(mirror(r#", "timeout": "0s""#), format!("{at}.timeout: duration \"0s\" must be at least 1ms"));
    assert_eq!(
        mirror(r#", "timeout": "2h""#),
        format!("{at}.timeout: 7200000 ms is above the limit of 3600000 ms (1h)")
    );
    assert_eq!(
        mirror(r#", "max_in_flight": 0"#),
        format!("{at}.max_in_flight: must be at least 1 (percentage 0 turns a mirror off)")
    );
    assert_eq!(
        mirror(r#", "compare": {"status": "near"}"#),
        format!("{at}.compare.status: unknown variant `near`, expected one of `exact`, `class` at line 2 column 98")
    );
    assert_eq!(
        mirror(r#", "compare": {"headers": ["x-a"], "log_headers": ["x-b"]}"#),
        format!(
            "{at}.compare.log_headers[0]: \"x-b\" is not in headers: a log line shows values of compared headers only"
        )
    );
    assert_eq!(
        expect_err(CompiledMirror::from_json(br#"{"version": 1, "max_pending": 0, "virtual_hosts": []}"#)),
        "max_pending: must be at least 1 (percentage 0 turns a mirror off)"
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn egress_errors_name_the_field() {
    let egress = |rest: &str| {
        expect_err(CompiledEgress::from_json(
            format!(r#"{{"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", {rest}}}"#).as_bytes(),
        ))
    };
    let cases: &[(&str, &str)] = &[
        (r#""hosts": [{"host": "a.*.com"}]"#, "hosts[0].host: invalid host \"a.*.com\": a wildcard is allowed only as the whole first label (*.example.com)"),
        (r#""hosts": [{"host": "*"}]"#, "hosts[0].host: invalid host \"*\": a wildcard is allowed only as the whole first label (*.example.com)"),
        (r#""hosts": [{"host": "-a.com"}]"#, "hosts[0].host: invalid host \"-a.com\": a label must not start or end with '-'"),
        (r#""hosts": [{"host": "a..com"}]"#, "hosts[0].host: invalid host \"a..com\": each label must be 1 to 63 characters"),
        (r#""hosts": [{"host": "a_b.com"}]"#, "hosts[0].host: invalid host \"a_b.com\": labels hold only letters, digits and '-'"),
        (r#""hosts": [{"host": "a.com"}, {"host": "A.com"}]"#, "hosts[1].host: host \"A.com\" is already listed in hosts[0]"),
        (r#""hosts": [{"host": "::1"}, {"host": "[0::1]"}]"#, "hosts[1].host: host \"[0::1]\" is already listed in hosts[0]"),
        (r#""hosts": [{"host": "a.com", "ports": [0]}]"#, "hosts[0].ports[0]: port must be within 1..=65535"),
        (r#""hosts": [{"host": "a.com", "ports": [80, 80]}]"#, "hosts[0].ports[1]: port 80 is listed twice"),
        (r#""hosts": [{"host": "a.com", "ports": []}]"#, "hosts[0].ports: ports must not be empty when set (omit it for every port)"),
        (r#""deny_status": 99"#, "deny_status: deny_status 99 is not within 200..=599"),
    ];
    for (rest, expected) in cases {
        assert_eq!(egress(rest), *expected);
    }
    let bad_policy = expect_err(CompiledEgress::from_json(br#"{"version": 1, "outbound_traffic_policy": "DENY"}"#));
    assert!(bad_policy.starts_with("outbound_traffic_policy: unknown variant `DENY`"), "{bad_policy}");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn durations_parse_like_go_and_protobuf() {
    let ms = |s: &str| parse_duration(s).map(|d| d.as_nanos());
    assert_eq!(ms("0.5s"), Ok(500_000_000));
    assert_eq!(ms("7s"), Ok(7_000_000_000));
    assert_eq!(ms("100ms"), Ok(100_000_000));
    assert_eq!(ms("1m"), Ok(60_000_000_000));
    assert_eq!(ms("1h2m3.5s"), Ok(3_723_500_000_000));
    assert_eq!(ms("250us"), Ok(250_000));
    assert_eq!(ms("250µs"), Ok(250_000));
    assert_eq!(ms("3ns"), Ok(3));
    assert_eq!(ms(".5s"), Ok(500_000_000));
    assert_eq!(ms("0"), Ok(0));
    for bad in [
        "",
        "-1s",
        "+1s",
        "1",
        "s",
        "1x",
        "1.s.",
        "1 s",
        "1s ",
        ".s",
        "1e3s",
        "18446744073709551616ns",
        "9999999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
}
