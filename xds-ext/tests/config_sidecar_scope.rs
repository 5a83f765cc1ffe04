//! Sidecar `egress[].hosts` scope what a workload imports (Services and
//! VirtualServices), Istio's host syntax is checked, and JWT claim routing
//! is refused by name.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{bookinfo_dir, errors, load, load_one, workload, RULES, SERVICES};
use xds_ext::config::explain::{explain, RequestSpec};

const RATINGS_ONLY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-egress}
spec:
  workloadSelector: {labels: {app: productpage}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress: [{hosts: ["./ratings.default.svc.cluster.local"]}]
"#;

#[test]
fn sidecar_egress_hosts_scope_virtual_services_too() {
    let read = |f: &str| std::fs::read_to_string(bookinfo_dir().join(f)).unwrap();
    let (store, problems) = load(&[
        ("services.yaml", &read(SERVICES)),
        ("rules.yaml", &read(RULES)),
        ("vs.yaml", &read("virtual-service-all-v1.yaml")),
        ("sidecar.yaml", RATINGS_ONLY),
    ]);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "app=productpage")).unwrap();
    let names: Vec<&str> = c.routing.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["ratings.default.svc.cluster.local"], "only the imported host is routed");
    let ask = |url: &str| explain(&c, &RequestSpec::parse("GET", url, &[]).unwrap(), 0).unwrap();
    let reviews = ask("http://reviews:9080/reviews/0");
    assert!(reviews.egress.starts_with("deny"), "{}", reviews.egress);
    let ratings = ask("http://ratings:9080/ratings/0");
    assert!(ratings.egress.starts_with("allow"), "{}", ratings.egress);
    assert_eq!(ratings.routing.cluster.as_deref(), Some("outbound|9080|v1|ratings.default.svc.cluster.local"));
    // Other workloads are not scoped by that Sidecar.
    let other = store.render_configs(&workload("default", "app=details")).unwrap();
    assert_eq!(other.routing.virtual_hosts.len(), 4);
}

#[test]
fn sidecar_host_exclusions_are_refused_not_ignored() {
    let (_, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress:
  - hosts: ["./*", "~istio-system/*", "~default/reviews.default.svc.cluster.local", "ratings", "Bad_NS/*", "~/*"]
"#,
    );
    let e = errors(&problems);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].contains("spec.egress[0].hosts[1]: \"~istio-system/*\": Sidecar egress hosts have no exclusions"),
        "{e:#?}"
    );
    assert!(e[1].contains("spec.egress[0].hosts[2]: \"~default/reviews.default.svc.cluster.local\": Sidecar egress hosts have no exclusions"));
    assert!(e[2].contains("spec.egress[0].hosts[3]: \"ratings\" must be namespace/host"));
    assert!(e[3].contains("spec.egress[0].hosts[4]: \"Bad_NS/*\": namespace \"Bad_NS\" is not"));
    assert!(e.iter().all(|m| m.starts_with("test.yaml:7: Sidecar default/default:")), "{e:#?}");
}

#[test]
fn no_namespace_imports_nothing() {
    let read = |f: &str| std::fs::read_to_string(bookinfo_dir().join(f)).unwrap();
    let sidecar = RATINGS_ONLY.replace("./ratings.default.svc.cluster.local", "~/*");
    let (store, problems) = load(&[("services.yaml", &read(SERVICES)), ("sidecar.yaml", &sidecar)]);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "app=productpage")).unwrap();
    assert!(c.routing.virtual_hosts.is_empty());
    assert!(c.egress.hosts.is_empty());
}

#[test]
fn jwt_claim_routing_is_refused_naming_the_feature() {
    let (_, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        "@request.auth.claims.groups": {exact: admin}
    route: [{destination: {host: reviews, port: {number: 9080}}}]
"#,
    );
    let e = errors(&problems);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("test.yaml:9: VirtualService default/reviews: spec.http[0].match[0].headers[\"@request.auth.claims.groups\"]: JWT claim routing (@request.auth.claims.NAME) is not supported"),
        "{e:#?}"
    );
}
