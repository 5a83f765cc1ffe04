//! What each filter decides for the bookinfo-style flows and edge cases.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::headers;
use switchyard_policy::egress::{CompiledEgress, EgressDecision};
use switchyard_policy::fault::{grpc_status_from_name, Abort, CompiledFault, FaultDecision};
use switchyard_policy::mirror::{CompiledMirror, MirrorDecision};
use switchyard_policy::routing::{CompiledRouting, RedirectTarget, RoutingDecision};
use switchyard_policy::{shadow_authority, Request};

const BOOKINFO: &str = r#"{
  "version": 1,
  "virtual_hosts": [{
    "name": "reviews",
    "domains": ["reviews", "reviews:9080"],
    "routes": [
      {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
       "route": [{"destination": {"host": "reviews.default.svc.cluster.local", "subset": "v2", "port": 9080}}],
       "timeout": "0.5s",
       "retries": {"attempts": 3, "per_try_timeout": "2s", "retry_on": "5xx,unavailable,503"}},
      {"name": "split", "match": [{"uri": {"prefix": "/split"}}],
       "route": [
         {"destination": {"host": "reviews.default.svc.cluster.local", "subset": "v1", "port": 9080}, "weight": 50},
         {"destination": {"host": "reviews.default.svc.cluster.local", "subset": "v3", "port": 9080}, "weight": 50,
          "headers": {"request": {"set": {"x-version": "v3"}}}}],
       "headers": {"request": {"set": {"x-version": "route"}}, "response": {"remove": ["x-internal"]}},
       "sticky": {"cookie": "session"}},
      {"name": "old-api", "match": [{"uri": {"prefix": "/v1/"}}], "redirect": {"uri": "/v2/", "redirect_code": 308}},
      {"name": "rewrite", "match": [{"uri": {"prefix": "/legacy"}}],
       "route": [{"destination": {"host": "reviews.default.svc.cluster.local", "port": 9080}}],
       "rewrite": {"uri": "/modern", "authority": "reviews-new"}},
      {"name": "default",
       "route": [{"destination": {"host": "reviews.default.svc.cluster.local", "subset": "v1", "port": 9080}}]}
    ]
  }]
}"#;

fn bookinfo() -> CompiledRouting {
    match CompiledRouting::from_json(BOOKINFO.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jason_is_routed_to_reviews_v2_with_timeout_and_retries() {
    let config = bookinfo();
    let source = headers(&[(":authority", "reviews:9080"), (":path", "/reviews/1"), ("end-user", "jason")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), 0) else {
        panic!("expected a route");
    };
    assert_eq!(route.rule, "jason");
    assert_eq!(route.cluster, "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(route.timeout_ms, Some("500"));
    let Some(retries) = route.retries else { panic!("expected retries") };
    assert_eq!(retries.max_retries, "3");
    assert_eq!(retries.retry_on.as_deref(), Some("5xx,retriable-status-codes"));
    assert_eq!(retries.grpc_retry_on.as_deref(), Some("unavailable"));
    assert_eq!(retries.retriable_status_codes.as_deref(), Some("503"));
    assert_eq!(retries.per_try_timeout_ms.as_deref(), Some("2000"));
    assert_eq!(config.cluster_header(), "x-switchyard-cluster");
    assert_eq!(config.rule_names()[route.rule_index].rule, "jason");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn others_fall_through_to_reviews_v1() {
    let config = bookinfo();
    let source = headers(&[(":authority", "reviews"), (":path", "/reviews/1"), ("end-user", "kim")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), 0) else {
        panic!("expected a route");
    };
    assert_eq!(route.rule, "default");
    assert_eq!(route.cluster, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(route.timeout_ms, None);
    assert!(route.retries.is_none());
}

fn split_cluster(config: &CompiledRouting, random: u64, cookie: Option<&str>) -> String {
    let mut pairs = vec![(":authority", "reviews"), (":path", "/split")];
    if let Some(cookie) = cookie {
        pairs.push(("cookie", cookie));
    }
    let source = headers(&pairs);
    match config.decide(&mut Request::new(&source), random) {
        RoutingDecision::Route(r) => r.cluster.to_string(),
        other => panic!("expected a route, got {other:?}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fifty_fifty_split_follows_the_random_draw() {
    let config = bookinfo();
    assert_eq!(split_cluster(&config, 0, None), "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(split_cluster(&config, u64::MAX / 2 - 1, None), "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(split_cluster(&config, u64::MAX / 2 + 2, None), "outbound|9080|v3|reviews.default.svc.cluster.local");
    assert_eq!(split_cluster(&config, u64::MAX, None), "outbound|9080|v3|reviews.default.svc.cluster.local");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sticky_cookie_pins_the_destination_whatever_the_draw() {
    let config = bookinfo();
    let first = split_cluster(&config, 0, Some("a=1; session=\"abc\""));
    for random in [1, u64::MAX / 3, u64::MAX / 2 + 7, u64::MAX] {
        assert_eq!(split_cluster(&config, random, Some("session=\"abc\"; b=2")), first);
    }
    // Some session lands on each side.
    let sides: std::collections::HashSet<String> =
        (0..64).map(|i| split_cluster(&config, 0, Some(&format!("session=s{i}")))).collect();
    assert_eq!(sides.len(), 2);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn destination_header_ops_come_after_route_ops() {
    let config = bookinfo();
    let source = headers(&[(":authority", "reviews"), (":path", "/split")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), u64::MAX) else {
        panic!("expected a route");
    };
    let [route_ops, destination_ops] = route.header_ops;
    assert_eq!(route_ops.request.set, vec![("x-version".to_string(), "route".to_string())]);
    assert_eq!(route_ops.response.remove, vec!["x-internal".to_string()]);
    assert_eq!(destination_ops.request.set, vec![("x-version".to_string(), "v3".to_string())]);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn redirect_keeps_the_query_and_replaces_the_path() {
    let config = bookinfo();
    let source = headers(&[(":authority", "reviews"), (":path", "/v1/items?page=2")]);
    let RoutingDecision::Redirect(redirect) = config.decide(&mut Request::new(&source), 0) else {
        panic!("expected a redirect");
    };
    assert_eq!(redirect.status, 308);
    let target =
        RedirectTarget { scheme: "http", forwarded_proto: "http", authority: "reviews", path: "/v1/items?page=2" };
    assert_eq!(redirect.location(&target), "http://reviews/v2/?page=2");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn prefix_rewrite_replaces_the_matched_prefix() {
    let config = bookinfo();
    let source = headers(&[(":authority", "reviews"), (":path", "/legacy/books?id=1")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), 0) else {
        panic!("expected a route");
    };
    let Some(rewrite) = route.uri_rewrite else { panic!("expected a rewrite") };
    assert_eq!(rewrite.apply("/legacy/books?id=1"), "/modern/books?id=1");
    assert_eq!(route.authority_rewrite, Some("reviews-new"));
    assert_eq!(route.cluster, "outbound|9080||reviews.default.svc.cluster.local");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn exact_and_regex_rewrites_replace_the_whole_path() {
    let config = common::routing(
        r#"[
      {"name": "exact", "match": [{"uri": {"exact": "/a"}}], "route": [{"destination": {"host": "s", "port": 80}}], "rewrite": {"uri": "/b"}},
      {"name": "regex", "match": [{"uri": {"regex": "/r/[0-9]+"}}], "route": [{"destination": {"host": "s", "port": 80}}], "rewrite": {"uri": "/x"}},
      {"name": "any", "route": [{"destination": {"host": "s", "port": 80}}], "rewrite": {"uri": "/v2/"}}
    ]"#,
    );
    let rewritten = |path: &str| {
        let source = headers(&[(":authority", "s"), (":path", path)]);
        match config.decide(&mut Request::new(&source), 0) {
            RoutingDecision::Route(r) => r.uri_rewrite.map(|w| w.apply(path)),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rewritten("/a?q=1").as_deref(), Some("/b?q=1"));
    assert_eq!(rewritten("/r/12").as_deref(), Some("/x"));
    // No uri match is Istio's prefix "/": only the leading slash is replaced.
    assert_eq!(rewritten("/books").as_deref(), Some("/v2/books"));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn cluster_name_template_and_header_are_configurable() {
    let json = r#"{"version": 1, "cluster_header": "X-Target", "cluster_name_template": "{host}_{subset}",
      "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
        {"name": "r", "route": [{"destination": {"host": "ratings", "subset": "v1"}}]}]}]}"#;
    let config = match CompiledRouting::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(config.cluster_header(), "x-target");
    let source = headers(&[(":authority", "ratings")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), 0) else {
        panic!("expected a route");
    };
    assert_eq!(route.cluster, "ratings_v1");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn retries_default_to_istio_policy_and_zero_disables() {
    let config = common::routing(
        r#"[
      {"name": "default", "match": [{"uri": {"prefix": "/d"}}], "route": [{"destination": {"host": "s", "port": 80}}], "retries": {"attempts": 2}},
      {"name": "off", "route": [{"destination": {"host": "s", "port": 80}}], "retries": {"attempts": 0}, "timeout": "0s"}
    ]"#,
    );
    let decide = |path: &str| {
        let source = headers(&[(":authority", "s"), (":path", path)]);
        match config.decide(&mut Request::new(&source), 0) {
            RoutingDecision::Route(r) => (r.retries.cloned(), r.timeout_ms.map(str::to_string)),
            other => panic!("{other:?}"),
        }
    };
    let (retries, _) = decide("/d");
    let Some(retries) = retries else { panic!() };
    assert_eq!(retries.retry_on.as_deref(), Some("connect-failure,refused-stream,retriable-status-codes"));
    assert_eq!(retries.grpc_retry_on.as_deref(), Some("unavailable,cancelled"));
    assert_eq!(retries.retriable_status_codes.as_deref(), Some("503"));
    let (retries, timeout) = decide("/other");
    let Some(retries) = retries else { panic!() };
    assert_eq!(retries.max_retries, "0");
    assert_eq!(retries.retry_on, None);
    assert_eq!(timeout.as_deref(), Some("0"));
}

// ---- fault

const FAULTS: &str = r#"{
  "version": 1, "max_active_faults": 100,
  "virtual_hosts": [{"name": "ratings", "domains": ["ratings"], "routes": [
    {"name": "delay-jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
     "delay": {"fixed_delay": "7s", "percentage": 100}},
    {"name": "abort-kim", "match": [{"headers": {"end-user": {"exact": "kim"}}}],
     "abort": {"http_status": 500, "percentage": 100.0}},
    {"name": "grpc", "match": [{"headers": {"end-user": {"exact": "grpc"}}}],
     "abort": {"grpc_status": 14, "percentage": 100}},
    {"name": "half", "match": [{"headers": {"end-user": {"exact": "half"}}}],
     "delay": {"fixed_delay": "100ms", "percentage": 50}, "abort": {"http_status": 503, "percentage": 0}}
  ]}]
}"#;

fn fault_for<'a>(config: &'a CompiledFault, user: &str, random: u64) -> FaultDecision<'a> {
    let source = headers(&[(":authority", "ratings"), ("end-user", user)]);
    config.decide(&mut Request::new(&source), random)
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fault_delay_and_abort_for_the_seed_users() {
    let config = match CompiledFault::from_json(FAULTS.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(config.max_active_faults(), Some(100));
    let FaultDecision::Fault(action) = fault_for(&config, "jason", u64::MAX) else { panic!() };
    assert_eq!((action.rule, action.delay_ms, action.abort), ("delay-jason", Some(7000), None));
    let FaultDecision::Fault(action) = fault_for(&config, "kim", 12345) else { panic!() };
    assert_eq!((action.delay_ms, action.abort), (None, Some(Abort::Http(500))));
    let FaultDecision::Fault(action) = fault_for(&config, "grpc", 0) else { panic!() };
    assert_eq!(action.abort, Some(Abort::Grpc(14)));
    assert_eq!(fault_for(&config, "nobody", 0), FaultDecision::NoRoute { virtual_host: "ratings" });
    let source = headers(&[(":authority", "details")]);
    assert_eq!(config.decide(&mut Request::new(&source), 0), FaultDecision::Unmanaged);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn fault_percentage_selects_a_share_and_zero_never_fires() {
    let config = match CompiledFault::from_json(FAULTS.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let FaultDecision::Fault(low) = fault_for(&config, "half", 0) else { panic!() };
    assert_eq!(low.delay_ms, Some(100));
    let FaultDecision::Fault(high) = fault_for(&config, "half", u64::MAX) else { panic!() };
    assert!(high.is_noop());
    for random in [0, 1, u64::MAX / 2, u64::MAX] {
        let FaultDecision::Fault(action) = fault_for(&config, "half", random) else { panic!() };
        assert_eq!(action.abort, None);
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn grpc_status_names_map_to_codes() {
    assert_eq!(grpc_status_from_name("OK"), Some(0));
    assert_eq!(grpc_status_from_name("UNAVAILABLE"), Some(14));
    assert_eq!(grpc_status_from_name("UNAUTHENTICATED"), Some(16));
    assert_eq!(grpc_status_from_name("unavailable"), None);
    assert_eq!(grpc_status_from_name("NOPE"), None);
}

// ---- mirror

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn mirror_all_traffic_to_v2_and_a_share_to_v3() {
    let json = r#"{"version": 1, "virtual_hosts": [{"name": "reviews", "domains": ["reviews"], "routes": [
      {"name": "shadow", "mirrors": [
        {"destination": {"host": "reviews", "subset": "v2", "port": 9080}},
        {"destination": {"host": "reviews", "subset": "v3", "port": 9080}, "percentage": 0}]}]}]}"#;
    let config = match CompiledMirror::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let source = headers(&[(":authority", "reviews")]);
    for random in [0, u64::MAX / 2, u64::MAX] {
        let MirrorDecision::Mirror(selection) = config.decide(&mut Request::new(&source), random) else { panic!() };
        assert_eq!(selection.clusters().collect::<Vec<_>>(), vec!["outbound|9080|v2|reviews"]);
    }
    assert_eq!(shadow_authority("reviews:9080"), "reviews-shadow:9080");
    assert_eq!(shadow_authority("reviews"), "reviews-shadow");
    assert_eq!(shadow_authority("[::1]:80"), "[::1]-shadow:80");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_mirror_has_an_index_its_bounds_and_its_comparison() {
    let json = r#"{"version": 1, "max_pending": 50, "virtual_hosts": [{"name": "reviews", "domains": ["reviews"], "routes": [
      {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "mirrors": [
        {"destination": {"host": "reviews", "subset": "v2", "port": 9080}, "timeout": "250ms", "max_in_flight": 7,
         "compare": {"status": "class", "headers": ["Content-Type"], "body_bytes": 100}}]},
      {"name": "all", "mirrors": [
        {"destination": {"host": "reviews", "subset": "v3", "port": 9080}}]}]}]}"#;
    let config = match CompiledMirror::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(config.max_pending(), 50);
    let targets: Vec<_> =
        config.targets().map(|(rule, t)| (rule.to_string(), t.index(), t.cluster().to_owned())).collect();
    assert_eq!(
        targets,
        vec![
            ("reviews/jason".to_string(), 0, "outbound|9080|v2|reviews".to_string()),
            ("reviews/all".to_string(), 1, "outbound|9080|v3|reviews".to_string())
        ]
    );
    let (_, jason) = config.targets().next().unwrap_or_else(|| panic!("no targets"));
    assert_eq!((jason.timeout_ms(), jason.max_in_flight()), (250, 7));
    let compare = jason.compare().unwrap_or_else(|| panic!("no compare"));
    assert_eq!((compare.headers(), compare.body_bytes()), (&["content-type".to_string()][..], 100));
    let (_, all) = config.targets().nth(1).unwrap_or_else(|| panic!("no second target"));
    assert_eq!((all.timeout_ms(), all.max_in_flight(), all.compare().is_none()), (5_000, 1024, true));
    // A request picks the mirror by rule; its target says where its state is.
    let source = headers(&[(":authority", "reviews"), ("end-user", "jason")]);
    let MirrorDecision::Mirror(selection) = config.decide(&mut Request::new(&source), 0) else { panic!() };
    assert_eq!(selection.targets().map(|t| t.index()).collect::<Vec<_>>(), vec![0]);
}

// ---- egress

fn egress(json: &str) -> CompiledEgress {
    match CompiledEgress::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn registry_only_allows_listed_hosts_and_ports() {
    let config = egress(
        r#"{"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "hosts": [
      {"host": "api.example.com", "ports": [443, 80]},
      {"host": "*.googleapis.com"},
      {"host": "10.0.0.1"},
      {"host": "2001:db8::1", "ports": [8080]}]}"#,
    );
    let deny = EgressDecision::Deny { status: 502 };
    let allow = |host: &'static str| EgressDecision::Allow { host: Some(host) };
    assert_eq!(config.decide_authority("api.example.com"), allow("api.example.com"));
    assert_eq!(config.decide_authority("API.Example.com:443"), allow("api.example.com"));
    assert_eq!(config.decide_authority("api.example.com:8443"), deny);
    assert_eq!(config.decide_authority("storage.googleapis.com:443"), allow("*.googleapis.com"));
    assert_eq!(config.decide_authority("a.b.googleapis.com"), allow("*.googleapis.com"));
    assert_eq!(config.decide_authority("googleapis.com"), deny);
    assert_eq!(config.decide_authority("10.0.0.1:9000"), allow("10.0.0.1"));
    assert_eq!(config.decide_authority("[2001:db8:0::1]:8080"), allow("2001:db8::1"));
    assert_eq!(config.decide_authority("[2001:db8::1]:80"), deny);
    assert_eq!(config.decide_authority("evil.com"), deny);
    assert_eq!(config.decide_authority("api.example.com:notaport"), deny);
    assert_eq!(config.decide_sni(Some("api.example.com"), Some(443)), allow("api.example.com"));
    // Unknown port: only hosts without a port list match.
    assert_eq!(config.decide_sni(Some("api.example.com"), None), deny);
    assert_eq!(config.decide_sni(Some("x.googleapis.com"), None), allow("*.googleapis.com"));
    assert_eq!(config.decide_sni(None, Some(443)), deny);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn allow_any_and_dry_run_let_traffic_through() {
    let config = egress(r#"{"version": 1, "outbound_traffic_policy": "ALLOW_ANY", "hosts": [{"host": "a.com"}]}"#);
    assert_eq!(config.decide_authority("b.com"), EgressDecision::Allow { host: None });
    assert_eq!(config.decide_authority("a.com"), EgressDecision::Allow { host: Some("a.com") });
    let config =
        egress(r#"{"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "dry_run": true, "deny_status": 403}"#);
    assert_eq!(config.decide_authority("b.com"), EgressDecision::WouldDeny { status: 403 });
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn stats_indexes_and_owned_headers_are_exposed() {
    let config = bookinfo();
    assert_eq!(
        config.clusters(),
        [
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v3|reviews.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local",
        ]
    );
    let names: Vec<String> = config.rule_names().iter().map(ToString::to_string).collect();
    assert_eq!(names, ["reviews/jason", "reviews/split", "reviews/old-api", "reviews/rewrite", "reviews/default"]);
    let managed = RoutingDecision::NoRoute { virtual_host: "reviews" };
    let owned: Vec<&str> = config.client_headers_to_strip(&managed).collect();
    assert_eq!(owned[0], "x-switchyard-cluster");
    assert!(owned.contains(&"x-envoy-upstream-rq-timeout-ms"));
    assert!(owned.contains(&"x-envoy-retry-grpc-on"));
    let unmanaged: Vec<&str> = config.client_headers_to_strip(&RoutingDecision::Unmanaged).collect();
    assert_eq!(unmanaged, ["x-switchyard-cluster"], "on other hosts only the cluster header is the filter's");

    let source = headers(&[(":authority", "reviews"), (":path", "/split")]);
    let RoutingDecision::Route(route) = config.decide(&mut Request::new(&source), u64::MAX) else {
        panic!("expected a route");
    };
    assert_eq!(config.clusters()[route.cluster_index], route.cluster);
    let Some([route_ops, destination_ops]) = config.header_mutations(route.rule_index, route.destination_index) else {
        panic!("expected header operations");
    };
    assert_eq!(route_ops.response.remove, ["x-internal"]);
    assert_eq!(destination_ops, route.header_ops[1]);
    assert!(config.header_mutations(2, 0).is_none(), "a redirect has no header operations");
    assert!(config.header_mutations(99, 0).is_none());
}

#[test]
fn a_config_without_virtual_hosts_manages_nothing() {
    use switchyard_policy::routing::{CompiledRouting, RoutingDecision};
    use switchyard_policy::{Request, StaticHeaders};
    let config = CompiledRouting::from_json(br#"{"version": 1, "virtual_hosts": []}"#);
    let config = config.unwrap_or_else(|e| panic!("{e}"));
    let headers = StaticHeaders::new([(":authority", "reviews"), (":path", "/")]);
    assert_eq!(config.decide(&mut Request::new(&headers), 0), RoutingDecision::Unmanaged);
}
