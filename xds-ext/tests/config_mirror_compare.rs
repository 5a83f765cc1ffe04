//! A TrafficPolicy's mirror comparison and shadow bounds (issue 14): the
//! YAML fields become the mirror filter's `timeout`, `max_in_flight` and
//! `compare`; `explain` shows them with their defaults; a VirtualService
//! carrying them is warned; bad values are errors naming file, line and field.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load_one, render, warnings, workload};
use serde_json::json;
use xds_ext::config::explain::{explain, RequestSpec};

const HTTPBIN: &str = r#"apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec:
  ports: [{port: 8000, name: http}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec:
  host: httpbin
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
"#;

fn policy(mirror: &str) -> String {
    format!(
        r#"{HTTPBIN}apiVersion: switchyard.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: httpbin-v2-shadow}}
spec:
  hosts: [httpbin]
  http:
  - route: [{{destination: {{host: httpbin, subset: v1}}}}]
    mirrors:
    - destination: {{host: httpbin, subset: v2}}
{mirror}"#
    )
}

const COMPARED: &str = "      timeout: 2s
      maxInFlight: 10
      compare:
        status: class
        headers: [content-type, X-Api-Version]
        logHeaders: [content-type]
        bodyBytes: 4096
        logPerMinute: 3
";

#[test]
fn a_traffic_policy_mirror_renders_its_bounds_and_comparison() {
    let (store, problems) = load_one(&policy(COMPARED));
    assert!(problems.is_empty(), "{problems:#?}");
    let configs = render(&store, &workload("default", "app=sleep"));
    let mirror = &configs["switchyard.mirror"]["virtual_hosts"][0]["routes"][0]["mirrors"][0];
    assert_eq!(
        mirror,
        &json!({"destination": {"host": "httpbin.default.svc.cluster.local", "subset": "v2", "port": 8000},
            "timeout": "2s", "max_in_flight": 10,
            "compare": {"status": "class", "headers": ["content-type", "X-Api-Version"], "body_bytes": 4096,
                        "log_headers": ["content-type"], "log_per_minute": 3}})
    );
    // The combined filter carries the same mirror section.
    assert_eq!(&configs["switchyard.http"]["mirror"]["virtual_hosts"][0]["routes"][0]["mirrors"][0], mirror);
}

#[test]
fn explain_shows_a_mirrors_bounds_and_comparison_with_their_defaults() {
    let ask = |yaml: &str| {
        let (store, problems) = load_one(yaml);
        assert!(problems.is_empty(), "{problems:#?}");
        let configs = store.render_configs(&workload("default", "app=sleep")).unwrap();
        explain(&configs, &RequestSpec::parse("GET", "http://httpbin:8000/get", &[]).unwrap(), 0).unwrap().mirror
    };
    assert_eq!(
        ask(&policy(COMPARED)),
        "rule httpbin.default.svc.cluster.local/httpbin-v2-shadow-0: shadow copy (authority httpbin-shadow:8000) to \
         outbound|8000|v2|httpbin.default.svc.cluster.local at 100% (copied with this draw; timeout 2s, at most 10 \
         in flight per worker; compare: status class, headers [content-type, x-api-version] (values logged: \
         content-type), body first 4096 bytes, mismatches logged at most 3/min)"
    );
    assert!(
        ask(&policy(""))
            .ends_with("(copied with this draw; timeout 5s, at most 1024 in flight per worker; not compared)"),
        "{}",
        ask(&policy(""))
    );
}

#[test]
fn a_virtual_service_mirror_with_switchyard_fields_is_warned_and_renders_without_them() {
    let yaml = format!(
        r#"{HTTPBIN}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin}}
spec:
  hosts: [httpbin]
  http:
  - route: [{{destination: {{host: httpbin, subset: v1}}}}]
    mirrors:
    - destination: {{host: httpbin, subset: v2}}
      compare: {{bodyBytes: 10}}
"#
    );
    let (store, problems) = load_one(&yaml);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    assert_eq!(
        warnings(&problems),
        vec!["warning: test.yaml:23: VirtualService default/httpbin: spec.http[0].mirrors[0].compare: compare is not applied: \
              a Switchyard field: put the rule in a TrafficPolicy (switchyard.dev/v1alpha1)"]
    );
    let configs = render(&store, &workload("default", "app=sleep"));
    let mirror = &configs["switchyard.mirror"]["virtual_hosts"][0]["routes"][0]["mirrors"][0];
    assert!(mirror.get("compare").is_none(), "{mirror}");
}

#[test]
fn bad_compare_fields_are_errors_naming_the_field() {
    let problems_of = |mirror: &str| errors(&load_one(&policy(mirror)).1);
    assert_eq!(
        problems_of("      compare: {status: near}\n"),
        vec![
            "test.yaml:23: TrafficPolicy default/httpbin-v2-shadow: spec.http[0].mirrors[0].compare.status: \
              status \"near\": use exact or class"
        ]
    );
    assert_eq!(
        problems_of("      maxInFlight: 0\n"),
        vec![
            "test.yaml:23: TrafficPolicy default/httpbin-v2-shadow: spec.http[0].mirrors[0].maxInFlight: \
              expected an integer from 1 to 1000000, found \"0\""
        ]
    );
    // What the filter's own validation finds is reported at load too (each
    // workload's configs are checked), at the field in the TrafficPolicy.
    assert_eq!(
        problems_of("      compare: {headers: [a], logHeaders: [b]}\n"),
        vec![
            "test.yaml:23: TrafficPolicy default/httpbin-v2-shadow: spec.http[0].mirrors[0].compare.logHeaders[0]: \
              \"b\" is not in headers: a log line shows values of compared headers only"
        ]
    );
    assert_eq!(
        problems_of("      timeout: 2h\n"),
        vec![
            "test.yaml:23: TrafficPolicy default/httpbin-v2-shadow: spec.http[0].mirrors[0].timeout: \
              7200000 ms is above the limit of 3600000 ms (1h)"
        ]
    );
}
