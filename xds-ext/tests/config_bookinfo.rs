//! The bookinfo task flows (examples/bookinfo): each file renders to the
//! filter configs the acceptance tests expect, and the filters' decisions
//! on those configs are the Istio ones.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{bookinfo, render, workload, RULES, SERVICES};
use serde_json::{json, Value};
use xds_ext::config::explain::{explain, Explanation, RequestSpec};
use xds_ext::config::ConfigStore;
use xds_ext::workload::Workload;

fn productpage() -> Workload {
    workload("default", "app=productpage,version=v1")
}

fn with(file: &str) -> ConfigStore {
    bookinfo(&[SERVICES, RULES, file])
}

fn vhost<'a>(configs: &'a serde_json::Map<String, Value>, resource: &str, name: &str) -> &'a Value {
    configs[resource]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no virtual host {name} in {resource}: {:#}", configs[resource]))
}

fn ask(store: &ConfigStore, w: &Workload, url: &str, headers: &[&str], random: u64) -> Explanation {
    let configs = store.render_configs(w).unwrap();
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    explain(&configs, &RequestSpec::parse("GET", url, &headers).unwrap(), random).unwrap()
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";

#[test]
fn every_bookinfo_file_is_valid() {
    let (store, problems) = ConfigStore::load_paths(&[config_common::bookinfo_dir()]);
    // The task files redefine the same VirtualServices (one step at a time):
    // loading them all together reports exactly those duplicates.
    assert!(problems.iter().all(|p| p.message.contains("defined twice")), "{problems:#?}");
    assert!(store.documents().len() >= 15);
}

#[test]
fn all_v1_routes_every_service_to_its_v1_subset() {
    let configs = render(&with("virtual-service-all-v1.yaml"), &productpage());
    for host in ["details", "productpage", "ratings", "reviews"] {
        let name = format!("{host}.default.svc.cluster.local");
        let vh = vhost(&configs, "switchyard.routing", &name);
        assert_eq!(
            vh["domains"],
            json!([name.clone(), format!("{host}.default.svc"), format!("{host}.default"), host])
        );
        assert_eq!(vh["routes"][0]["route"], json!([{"destination": {"host": name, "subset": "v1", "port": 9080}}]));
        assert_eq!(vh["routes"][0]["timeout"], "0s", "Istio: no timeout");
        assert_eq!(vh["routes"][0]["retries"], json!({"attempts": 2}), "Istio's default retries");
    }
    assert_eq!(configs["switchyard.fault"]["virtual_hosts"], json!([]));
    assert_eq!(configs["switchyard.mirror"]["virtual_hosts"], json!([]));
}

#[test]
fn jason_is_routed_to_reviews_v2() {
    let store = with("virtual-service-reviews-test-v2.yaml");
    let configs = render(&store, &productpage());
    let vh = vhost(&configs, "switchyard.routing", REVIEWS);
    assert_eq!(vh["routes"][0]["match"], json!([{"headers": {"end-user": {"exact": "jason"}}}]));
    assert_eq!(vh["routes"][0]["route"][0]["destination"]["subset"], "v2");
    assert_eq!(vh["routes"][1]["route"][0]["destination"]["subset"], "v1");

    let jason = ask(&store, &productpage(), "http://reviews:9080/reviews/0", &["end-user: jason"], 0);
    assert_eq!(jason.routing.cluster.as_deref(), Some("outbound|9080|v2|reviews.default.svc.cluster.local"));
    let anyone = ask(&store, &productpage(), "http://reviews:9080/reviews/0", &[], 0);
    assert_eq!(anyone.routing.cluster.as_deref(), Some("outbound|9080|v1|reviews.default.svc.cluster.local"));
}

#[test]
fn reviews_is_split_50_50_between_v1_and_v3() {
    let store = with("virtual-service-reviews-50-v3.yaml");
    let configs = render(&store, &productpage());
    let route = &vhost(&configs, "switchyard.routing", REVIEWS)["routes"][0]["route"];
    assert_eq!(route[0]["weight"], 50);
    assert_eq!(route[1]["weight"], 50);
    assert_eq!(route[1]["destination"]["subset"], "v3");
    let low = ask(&store, &productpage(), "http://reviews:9080/", &[], 0);
    let high = ask(&store, &productpage(), "http://reviews:9080/", &[], u64::MAX);
    assert_eq!(low.routing.cluster.as_deref(), Some("outbound|9080|v1|reviews.default.svc.cluster.local"));
    assert_eq!(high.routing.cluster.as_deref(), Some("outbound|9080|v3|reviews.default.svc.cluster.local"));
}

#[test]
fn reviews_v3_takes_all_traffic() {
    let configs = render(&with("virtual-service-reviews-v3.yaml"), &productpage());
    let route = &vhost(&configs, "switchyard.routing", REVIEWS)["routes"][0]["route"];
    assert_eq!(route, &json!([{"destination": {"host": REVIEWS, "subset": "v3", "port": 9080}}]));
}

#[test]
fn ratings_is_delayed_7s_for_jason() {
    let store = with("virtual-service-ratings-test-delay.yaml");
    let configs = render(&store, &workload("default", "app=reviews,version=v2"));
    let fault = vhost(&configs, "switchyard.fault", RATINGS);
    assert_eq!(
        fault["routes"],
        json!([{"name": "jason-delay", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                "delay": {"fixed_delay": "7s", "percentage": 100.0}}])
    );
    let w = workload("default", "app=reviews,version=v2");
    let jason = ask(&store, &w, "http://ratings:9080/ratings/0", &["end-user: jason"], u64::MAX);
    assert!(jason.fault.contains("delay 7s at 100% (injected"), "{}", jason.fault);
    let anyone = ask(&store, &w, "http://ratings:9080/ratings/0", &[], 0);
    assert!(anyone.fault.starts_with("none"), "{}", anyone.fault);
}

#[test]
fn ratings_aborts_with_500_for_jason() {
    let store = with("virtual-service-ratings-test-abort.yaml");
    let configs = render(&store, &workload("default", "app=reviews,version=v2"));
    let fault = vhost(&configs, "switchyard.fault", RATINGS);
    assert_eq!(fault["routes"][0]["abort"], json!({"http_status": 500, "percentage": 100.0}));
    assert_eq!(fault["routes"].as_array().unwrap().len(), 1);
}

#[test]
fn reviews_times_out_after_half_a_second() {
    let store = with("virtual-service-reviews-timeout.yaml");
    let configs = render(&store, &productpage());
    let route = &vhost(&configs, "switchyard.routing", REVIEWS)["routes"][0];
    assert_eq!(route["timeout"], "0.5s");
    assert_eq!(route["route"][0]["destination"]["subset"], "v2");
    let e = ask(&store, &productpage(), "http://reviews:9080/", &[], 0);
    assert_eq!(e.routing.timeout.as_deref(), Some("500 ms"));
}

#[test]
fn httpbin_v1_is_mirrored_to_v2() {
    let store = bookinfo(&["httpbin.yaml", "virtual-service-httpbin-mirror.yaml"]);
    let configs = render(&store, &workload("default", "app=sleep"));
    let vh = vhost(&configs, "switchyard.mirror", "httpbin.default.svc.cluster.local");
    assert_eq!(
        vh["routes"][0]["mirrors"],
        json!([{"destination": {"host": "httpbin.default.svc.cluster.local", "subset": "v2", "port": 8000},
                "percentage": 100.0}])
    );
    let route = &vhost(&configs, "switchyard.routing", "httpbin.default.svc.cluster.local")["routes"][0];
    assert_eq!(route["route"][0]["destination"]["subset"], "v1");
    let e = ask(&store, &workload("default", "app=sleep"), "http://httpbin:8000/headers", &[], 0);
    assert!(e.mirror.contains("outbound|8000|v2|httpbin.default.svc.cluster.local at 100% (copied"), "{}", e.mirror);
    assert!(e.mirror.contains("httpbin-shadow:8000"), "{}", e.mirror);
}

#[test]
fn registry_only_egress_allows_service_entries_and_the_mesh_only() {
    let store = bookinfo(&[SERVICES, RULES, "service-entry-httpbin-org.yaml", "sidecar-registry-only.yaml"]);
    let configs = render(&store, &productpage());
    let egress = &configs["switchyard.egress"];
    assert_eq!(egress["outbound_traffic_policy"], "REGISTRY_ONLY");
    let hosts = egress["hosts"].as_array().unwrap();
    assert!(hosts.contains(&json!({"host": "httpbin.org", "ports": [80]})));
    assert!(hosts.contains(&json!({"host": "www.google.com", "ports": [443]})));
    assert!(hosts.contains(&json!({"host": "reviews", "ports": [9080]})));
    assert_eq!(configs["switchyard.egress-tls"], configs["switchyard.egress"]);

    let w = productpage();
    assert!(ask(&store, &w, "http://httpbin.org/headers", &[], 0).egress.starts_with("allow"));
    assert!(ask(&store, &w, "https://www.google.com/", &[], 0).egress.contains("lets SNI www.google.com:443 through"));
    assert!(ask(&store, &w, "http://reviews:9080/", &[], 0).egress.starts_with("allow"));
    assert_eq!(
        ask(&store, &w, "http://edition.cnn.com/", &[], 0).egress,
        "deny: answers 502 (REGISTRY_ONLY: host not listed)"
    );
    assert!(ask(&store, &w, "http://httpbin.org:8080/", &[], 0).egress.starts_with("deny"), "port not listed");
}

#[test]
fn the_ingress_gateway_routes_productpage_paths() {
    let store = bookinfo(&[SERVICES, RULES, "bookinfo-gateway.yaml"]);
    let gw = workload("istio-system", "istio=ingressgateway,app=istio-ingressgateway");
    let configs = render(&store, &gw);
    let vh = vhost(&configs, "switchyard.routing", "*");
    assert_eq!(vh["domains"], json!(["*"]));
    assert_eq!(vh["routes"][0]["match"].as_array().unwrap().len(), 5);
    assert_eq!(
        ask(&store, &gw, "http://bookinfo.example.com/productpage", &[], 0).routing.cluster.as_deref(),
        Some("outbound|9080||productpage.default.svc.cluster.local")
    );
    assert!(ask(&store, &gw, "http://bookinfo.example.com/admin", &[], 0).routing.outcome.starts_with("no route"));
    // A sidecar does not get the gateway's routes, only Istio's default
    // route of each Service.
    let sidecar = render(&store, &productpage());
    let names: Vec<&str> = sidecar["switchyard.routing"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vh| vh["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "details.default.svc.cluster.local",
            "productpage.default.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ]
    );
}

#[test]
fn a_service_without_a_virtual_service_gets_istios_default_route_on_each_http_port() {
    let api = "apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  ports:
  - {name: http, port: 8080}
  - {name: http-admin, port: 9901}
  - {name: tcp-db, port: 5432}
";
    let services = std::fs::read_to_string(config_common::bookinfo_dir().join(SERVICES)).unwrap();
    let (store, problems) = config_common::load(&[("services.yaml", &services), ("api.yaml", api)]);
    assert!(config_common::errors(&problems).is_empty(), "{problems:?}");
    let w = productpage();
    let cluster = |url: &str| ask(&store, &w, url, &[], 0).routing.cluster;
    assert_eq!(cluster("http://details:9080/").as_deref(), Some("outbound|9080||details.default.svc.cluster.local"));
    // One route table per HTTP port, picked by the request's port; port 80
    // (`http://api/`) is not one of them, so not routed to another port.
    assert_eq!(cluster("http://api/").as_deref(), None);
    assert_eq!(cluster("http://api:8080/").as_deref(), Some("outbound|8080||api.default.svc.cluster.local"));
    assert_eq!(cluster("http://api:9901/").as_deref(), Some("outbound|9901||api.default.svc.cluster.local"));
    assert_eq!(
        cluster("http://api.default.svc.cluster.local:9901/").as_deref(),
        Some("outbound|9901||api.default.svc.cluster.local")
    );
    // Istio routes no HTTP to a port it does not treat as HTTP.
    assert_eq!(cluster("http://api:5432/").as_deref(), None);
    let explained = ask(&store, &w, "http://api:9901/", &[], 0);
    assert!(explained.routing.source.as_deref().unwrap_or_default().starts_with("Service default/api spec.ports[1]"));

    // A VirtualService replaces the default route of its host.
    let store = with("virtual-service-reviews-test-v2.yaml");
    assert_eq!(
        ask(&store, &w, "http://reviews:9080/", &[], 0).routing.cluster.as_deref(),
        Some("outbound|9080|v1|reviews.default.svc.cluster.local")
    );
    // A gateway routes only what is bound to it.
    let gw = workload("istio-system", "istio=ingressgateway");
    let outcome = ask(&store, &gw, "http://details:9080/", &[], 0).routing.outcome;
    assert!(outcome.starts_with("unmanaged"), "{outcome}");
}
