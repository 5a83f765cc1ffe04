//! Delegate VirtualServices: a root rule with `delegate` is replaced by the
//! delegate's rules, each matching the root's match and its own (Istio's
//! merge); a delegate has no hosts and applies only through a root.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load_one, workload};
use serde_json::json;
use xds_ext::config::explain::{explain, RequestSpec};

pub const DELEGATES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    delegate: {name: api-v2, namespace: team}
  - name: catch-all
    route: [{destination: {host: legacy, port: {number: 80}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-v2, namespace: team}
spec:
  http:
  - name: beta
    match: [{uri: {prefix: /api/v2/beta}, headers: {x-beta: {exact: "1"}}}]
    route: [{destination: {host: api-beta, port: {number: 8080}}}]
  - name: elsewhere
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: never, port: {number: 8080}}}]
  - name: v2
    route: [{destination: {host: api-v2, port: {number: 8080}}}]
"#;

#[test]
fn a_delegate_rule_takes_the_roots_match_and_its_own() {
    let (store, problems) = load_one(DELEGATES);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "app=web")).unwrap();
    let ask = |path: &str, headers: &[String]| {
        let req = RequestSpec::parse("GET", &format!("http://api.example.com{path}"), headers).unwrap();
        explain(&c, &req, 0).unwrap().routing
    };
    assert_eq!(ask("/api/v2/users", &[]).cluster.as_deref(), Some("outbound|8080||api-v2.team.svc.cluster.local"));
    assert_eq!(
        ask("/api/v2/beta/x", &["x-beta: 1".into()]).cluster.as_deref(),
        Some("outbound|8080||api-beta.team.svc.cluster.local"),
        "the delegate's short names resolve in its own namespace"
    );
    assert_eq!(ask("/api/v1/users", &[]).cluster.as_deref(), Some("outbound|80||legacy.default.svc.cluster.local"));
    // /other conflicts with the root's /api/v2: that rule is dropped, not widened.
    assert_eq!(ask("/other", &[]).cluster.as_deref(), Some("outbound|80||legacy.default.svc.cluster.local"));
    let routes = &c.routing.virtual_hosts[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["beta", "v2", "catch-all"]);
    let beta = serde_json::to_value(&routes[0].match_).unwrap();
    assert_eq!(beta, json!([{"uri": {"prefix": "/api/v2/beta"}, "headers": {"x-beta": {"exact": "1"}}}]));
    assert_eq!(serde_json::to_value(&routes[1].match_).unwrap(), json!([{"uri": {"prefix": "/api/v2"}}]));
    assert!(
        c.sources["api.example.com/beta"].starts_with("VirtualService team/api-v2 spec.http[0]"),
        "{:?}",
        c.sources
    );
}

#[test]
fn a_delegate_alone_routes_nothing_and_bad_delegates_are_errors() {
    let (store, problems) = load_one(
        &DELEGATES
            .replace("metadata: {name: api, namespace: default}", "metadata: {name: api, namespace: default}\n# root")
            .replace("delegate: {name: api-v2, namespace: team}", "delegate: {name: missing}"),
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "app=web")).unwrap();
    let names: Vec<&str> = c.routing.virtual_hosts[0].routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["catch-all"], "an unknown delegate contributes nothing; its requests go on");

    let (_, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: d}
spec:
  gateways: [gw]
  http:
  - delegate: {name: deeper}
  - delegate: {}
  - delegate: {name: y}
    route: [{destination: {host: x, port: {number: 80}}}]
"#,
    );
    let e = errors(&problems);
    assert!(
        e.iter().any(|m| m.contains("spec.gateways: a delegate VirtualService (no hosts) must not set gateways")),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|m| m.contains("spec.http[0].delegate: a delegate VirtualService cannot delegate again")),
        "{e:#?}"
    );
    assert!(e.iter().any(|m| m.contains("spec.http[1].delegate.name: name is required")), "{e:#?}");
    assert!(
        e.iter().any(|m| m.contains("spec.http[2]: a rule with delegate must not set route or redirect")),
        "{e:#?}"
    );
}
