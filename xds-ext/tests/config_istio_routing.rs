//! Istio routing fields as Istio means them (issue 13, items 1, 6, 9, 10,
//! 11): weights normalised to their sum, `directResponse`,
//! `rewrite.uriRegexRewrite`, `redirect.port`/`derivePort`/`scheme`/
//! `prefixRewrite`, and a Gateway server's `tls.httpsRedirect`; bad input
//! gets errors naming the file, line and field.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load_one, warnings, workload};
use xds_ext::config::explain::{explain, Explanation, RequestSpec};
use xds_ext::config::ConfigStore;

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
"#;

fn load_ok(yaml: &str) -> ConfigStore {
    let (store, problems) = load_one(&format!("{SERVICES}{yaml}"));
    assert!(errors(&problems).is_empty() && warnings(&problems).is_empty(), "{problems:#?}");
    store
}

fn ask(store: &ConfigStore, labels: &str, url: &str, headers: &[&str], random: u64) -> Explanation {
    let namespace = if labels.starts_with("istio=") { "istio-system" } else { "default" };
    let configs = store.render_configs(&workload(namespace, labels)).unwrap();
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let req = RequestSpec::parse("GET", url, &headers).unwrap();
    explain(&configs, &req, random).unwrap()
}

fn problems_of(yaml: &str) -> Vec<String> {
    let (_, problems) = load_one(&format!("{SERVICES}{yaml}"));
    errors(&problems)
}

#[test]
fn weights_are_normalised_to_their_sum_and_a_missing_weight_is_zero() {
    let store = load_ok(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /a}}]
    route:
    - {destination: {host: web, subset: v1}, weight: 1}
    - {destination: {host: web, subset: v2}, weight: 3}
  - route:
    - {destination: {host: web, subset: v1}, weight: 100}
    - {destination: {host: web, subset: v2}}
"#,
    );
    let cluster =
        |path: &str, random: u64| ask(&store, "app=client", &format!("http://web{path}"), &[], random).routing.cluster;
    let quarter = u64::MAX / 4;
    assert_eq!(cluster("/a", quarter - (1 << 20)).as_deref(), Some("outbound|80|v1|web.default.svc.cluster.local"));
    assert_eq!(cluster("/a", quarter + (1 << 20)).as_deref(), Some("outbound|80|v2|web.default.svc.cluster.local"));
    assert_eq!(cluster("/b", u64::MAX).as_deref(), Some("outbound|80|v1|web.default.svc.cluster.local"));
}

#[test]
fn only_an_all_zero_total_is_refused() {
    let errors = problems_of(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - route:
    - {destination: {host: web, subset: v1}, weight: 0}
    - {destination: {host: web, subset: v2}}
"#,
    );
    assert_eq!(
        errors,
        ["test.yaml:20: VirtualService default/web: spec.http[0].route: every destination has weight 0 (or none): \
          give at least one a weight above 0 (Istio refuses a total of 0)"]
    );
}

#[test]
fn direct_response_answers_instead_of_forwarding() {
    let store = load_ok(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {exact: /healthz}}]
    directResponse: {status: 200, body: {string: ok}}
    headers: {response: {set: {content-type: text/plain}}}
  - match: [{uri: {exact: /bin}}]
    directResponse: {status: 503, body: {bytes: dW5rbm93biBlcnJvcg==}}
  - match: [{uri: {prefix: /gone}}]
    directResponse: {status: 410}
  - route: [{destination: {host: web}}]
"#,
    );
    let healthz = ask(&store, "app=client", "http://web/healthz", &[], 0).routing;
    assert_eq!(healthz.outcome, "direct response");
    assert_eq!(healthz.redirect.as_deref(), Some(r#"200 body "ok""#));
    assert_eq!(healthz.headers, ["response: set content-type: text/plain"]);
    assert_eq!(
        ask(&store, "app=client", "http://web/bin", &[], 0).routing.redirect.as_deref(),
        Some(r#"503 body "unknown error""#)
    );
    assert_eq!(ask(&store, "app=client", "http://web/gone/x", &[], 0).routing.redirect.as_deref(), Some("410 no body"));
    assert_eq!(ask(&store, "app=client", "http://web/other", &[], 0).routing.outcome, "route");
}

#[test]
fn bad_direct_responses_are_errors_naming_the_field() {
    let errors = problems_of(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - directResponse: {status: 700}
  - directResponse: {status: 200, body: {bytes: "//79"}}
"#,
    );
    assert_eq!(
        errors,
        [
            "test.yaml:20: VirtualService default/web: spec.http[0].directResponse.status: expected an integer from \
             200 to 599, found \"700\"",
            "test.yaml:21: VirtualService default/web: spec.http[1].directResponse.body.bytes: bytes must decode to \
             UTF-8 text: Switchyard's direct responses carry text (use string)",
        ]
    );
    let errors = problems_of(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - directResponse: {status: 200}
    route: [{destination: {host: web}}]
"#,
    );
    assert_eq!(
        errors,
        ["test.yaml:20: VirtualService default/web: spec.http[0]: set exactly one of route, redirect, \
          direct_response (route and direct_response are set)"]
    );
}

#[test]
fn uri_regex_rewrite_is_envoys_regex_rewrite() {
    let store = load_ok(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /service}}]
    rewrite: {uriRegexRewrite: {match: '^/service/([^/]+)/(.*)$', rewrite: '/customprefix/\2/\1'}}
    route: [{destination: {host: web}}]
"#,
    );
    let rewrite = ask(&store, "app=client", "http://web/service/update/v1/api?x=1", &[], 0).routing.rewrite;
    assert_eq!(rewrite.as_deref(), Some("path /service/update/v1/api?x=1 → /customprefix/v1/api/update?x=1"));
    let errors = problems_of(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - rewrite:
      uriRegexRewrite: {match: '/(a', rewrite: /b}
    route: [{destination: {host: web}}]
"#,
    );
    assert_eq!(
        errors,
        ["test.yaml:21: VirtualService default/web: spec.http[0].rewrite.uriRegexRewrite.match: invalid regex \"/(a\": \
          found open group without closing ')'"]
    );
}

#[test]
fn redirects_take_port_derive_port_scheme_and_prefix_rewrite() {
    let store = load_ok(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, port: 8443}
  - match: [{uri: {prefix: /same-port}}]
    redirect: {authority: other, derivePort: FROM_REQUEST_PORT}
  - match: [{uri: {prefix: /default-port}}]
    redirect: {scheme: https, derivePort: FROM_PROTOCOL_DEFAULT}
  - match: [{uri: {prefix: /old}}]
    redirect: {prefixRewrite: /new, redirectCode: 308}
"#,
    );
    let location = |url: &str| ask(&store, "app=client", url, &[], 0).routing.redirect.unwrap();
    assert_eq!(location("http://web/secure/a"), "301 location: https://web:8443/secure/a");
    assert_eq!(location("http://web:80/same-port"), "301 location: http://other:80/same-port");
    assert_eq!(location("http://web:80/default-port"), "301 location: https://web/default-port");
    assert_eq!(location("http://web/old/page?q=1"), "308 location: http://web/new/page?q=1");
}

#[test]
fn redirect_fields_that_conflict_are_errors() {
    let errors = problems_of(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - redirect: {port: 8080, derivePort: FROM_REQUEST_PORT}
  - redirect: {derivePort: FROM_ELSEWHERE}
  - redirect: {uri: /a, prefixRewrite: /b}
"#,
    );
    assert_eq!(
        errors,
        [
            "test.yaml:20: VirtualService default/web: spec.http[0].redirect.derivePort: set port or derivePort, not \
             both (Istio's redirect_port is one of them)",
            "test.yaml:21: VirtualService default/web: spec.http[1].redirect.derivePort: derivePort \"FROM_ELSEWHERE\" \
             is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
            "test.yaml:22: VirtualService default/web: spec.http[2].redirect: set uri or prefixRewrite, not both \
             (Istio: mutually exclusive)",
        ]
    );
}

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: cert}
---
"#;

#[test]
fn https_redirect_servers_answer_301_to_https_for_plain_http() {
    let store = load_ok(&format!(
        r#"{GATEWAY}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.example.com]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: web.default.svc.cluster.local}}}}]
"#
    ));
    let gw = "istio=ingressgateway";
    let plain = ask(&store, gw, "http://web.example.com:80/a?b=1", &[], 0).routing;
    assert_eq!(plain.outcome, "redirect");
    assert_eq!(plain.redirect.as_deref(), Some("301 location: https://web.example.com:80/a?b=1"));
    assert!(plain.source.unwrap().starts_with("Gateway istio-system/gw spec.servers[0].tls.httpsRedirect"));
    // Hosts no VirtualService routes are redirected too (istiod adds them).
    let other = ask(&store, gw, "http://other.example.com:80/", &[], 0).routing;
    assert_eq!(other.redirect.as_deref(), Some("301 location: https://other.example.com:80/"));
    // What arrived over TLS (x-forwarded-proto https, port 443) is routed.
    let tls = ask(&store, gw, "https://web.example.com:443/a", &["x-forwarded-proto: https"], 0).routing;
    assert_eq!(tls.cluster.as_deref(), Some("outbound|80||web.default.svc.cluster.local"));
}
