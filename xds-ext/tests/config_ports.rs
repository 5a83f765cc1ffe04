//! Istio's per-port route tables: a destination without `port.number` on a
//! multi-port Service goes to the port the request came in on, a port the
//! Service lacks is not routed to another one, and a gateway has one route
//! table per server port.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load_one, render, workload};
use serde_json::json;
use xds_ext::config::explain::{explain, RequestSpec};
use xds_ext::config::ConfigStore;
use xds_ext::workload::Workload;

/// The cluster and outcome `explain` gives for `url`.
fn ask(store: &ConfigStore, w: &Workload, url: &str) -> (Option<String>, String) {
    let c = store.render_configs(w).unwrap();
    let req = RequestSpec::parse("GET", url, &[]).unwrap();
    let e = explain(&c, &req, 0).unwrap();
    (e.routing.cluster, e.routing.outcome)
}

const MULTI_PORT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  ports: [{name: http, port: 8080}, {name: http-admin, port: 9901}, {name: tcp-db, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api]
  http:
  - name: admin-only
    match: [{port: 9901, uri: {prefix: /debug}}]
    route: [{destination: {host: api, subset: v2}}]
  - name: all
    route: [{destination: {host: api, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec: {host: api, subsets: [{name: v1}, {name: v2}]}
"#;

#[test]
fn a_destination_without_port_goes_to_the_port_the_request_came_in_on() {
    let (store, problems) = load_one(MULTI_PORT);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let w = workload("default", "app=web");
    assert_eq!(
        ask(&store, &w, "http://api:8080/").0.as_deref(),
        Some("outbound|8080|v1|api.default.svc.cluster.local")
    );
    assert_eq!(
        ask(&store, &w, "http://api:9901/").0.as_deref(),
        Some("outbound|9901|v1|api.default.svc.cluster.local")
    );
    assert_eq!(
        ask(&store, &w, "http://api.default.svc.cluster.local:9901/debug/x").0.as_deref(),
        Some("outbound|9901|v2|api.default.svc.cluster.local")
    );
    // `match.port: 9901` belongs to the 9901 table only.
    assert_eq!(
        ask(&store, &w, "http://api:8080/debug/x").0.as_deref(),
        Some("outbound|8080|v1|api.default.svc.cluster.local")
    );
    // Ports the Service lacks (80), or does not route as HTTP (5432): not routed to another port.
    for url in ["http://api/", "http://api:5432/", "http://api:7000/"] {
        let (cluster, outcome) = ask(&store, &w, url);
        assert_eq!(cluster, None, "{url}");
        assert!(outcome.starts_with("unmanaged"), "{url}: {outcome}");
    }

    // One virtual host per HTTP port, named as istiod names them; the port
    // picks among those sharing the bare names.
    let configs = render(&store, &w);
    let hosts = configs["switchyard.routing"]["virtual_hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api.default.svc.cluster.local:8080", "api.default.svc.cluster.local:9901"]);
    assert_eq!(hosts[1]["port"], 9901);
    assert!(hosts[1]["domains"].as_array().unwrap().contains(&json!("api:9901")));
    assert!(hosts[1]["domains"].as_array().unwrap().contains(&json!("api")));
    assert_eq!(hosts[0]["routes"].as_array().unwrap().len(), 1, "admin-only is not on 8080");
    assert_eq!(hosts[1]["routes"][0]["match"], json!([{"uri": {"prefix": "/debug"}}]), "port implied by the table");
}

#[test]
fn a_single_port_service_keeps_one_virtual_host_for_its_port() {
    let (store, problems) = load_one(
        r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {ports: [{name: http, port: 9080}, {name: tcp-metrics, port: 15020}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#,
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let configs = render(&store, &workload("default", ""));
    let vh = &configs["switchyard.routing"]["virtual_hosts"][0];
    assert_eq!(vh["name"], "reviews.default.svc.cluster.local");
    assert!(vh.get("port").is_none());
    // Two ports, one of them HTTP: the HTTP one, not the first.
    assert_eq!(vh["routes"][0]["route"][0]["destination"]["port"], 9080);
}

const GATEWAY_PORTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/shop.example.com"]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8080, name: http-internal, protocol: HTTP}, hosts: ["*/shop.example.com", "*/admin.example.com"]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public, istio-system/internal]
  http:
  - name: shop
    match: [{uri: {prefix: /shop}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tools}
spec:
  hosts: [shop.example.com, admin.example.com]
  gateways: [istio-system/internal]
  http:
  - name: tools
    match: [{uri: {prefix: /tools}}]
    route: [{destination: {host: tools, port: {number: 9000}}}]
"#;

#[test]
fn a_gateway_has_one_route_table_per_server_port() {
    let (store, problems) = load_one(GATEWAY_PORTS);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let gw = workload("istio-system", "istio=ingressgateway");
    assert_eq!(
        ask(&store, &gw, "http://shop.example.com/shop/1").0.as_deref(),
        Some("outbound|9080||productpage.default.svc.cluster.local")
    );
    assert_eq!(
        ask(&store, &gw, "http://shop.example.com:8080/tools/x").0.as_deref(),
        Some("outbound|9000||tools.default.svc.cluster.local")
    );
    // /tools is routed on 8080 only: 404 on port 80.
    let (cluster, outcome) = ask(&store, &gw, "http://shop.example.com/tools/x");
    assert_eq!(cluster, None);
    assert!(outcome.starts_with("no route"), "{outcome}");
    // A host served only on 8080 is not served on 80.
    assert!(ask(&store, &gw, "http://admin.example.com/tools").1.starts_with("unmanaged"));
    assert!(ask(&store, &gw, "http://admin.example.com:8080/tools").0.is_some());

    let configs = render(&store, &gw);
    let names: Vec<(String, serde_json::Value)> = configs["switchyard.routing"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_string(), h["port"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("admin.example.com:8080".to_string(), json!(8080)),
            ("shop.example.com:80".to_string(), json!(80)),
            ("shop.example.com:8080".to_string(), json!(8080)),
        ]
    );
}

#[test]
fn a_gateway_host_on_every_server_port_keeps_one_table() {
    let (store, problems) = load_one(
        &GATEWAY_PORTS
            .replace("gateways: [istio-system/internal]", "gateways: [istio-system/public, istio-system/internal]")
            .replace("hosts: [\"*/shop.example.com\"]}", "hosts: [\"*/shop.example.com\", \"*/admin.example.com\"]}"),
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let configs = render(&store, &workload("istio-system", "istio=ingressgateway"));
    let vhs = configs["switchyard.routing"]["virtual_hosts"].as_array().unwrap();
    let names: Vec<&str> = vhs.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin.example.com", "shop.example.com"]);
    assert!(vhs.iter().all(|h| h.get("port").is_none()));
}

#[test]
fn a_gateway_destination_without_port_on_a_multi_port_service_takes_the_server_port() {
    let yaml = format!(
        "{MULTI_PORT}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {app: gw}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: [edge.example.com]
  gateways: [gw]
  http: [{route: [{destination: {host: api}}]}]
"#
    );
    let (store, problems) = load_one(&yaml);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let gw = workload("default", "app=gw");
    assert_eq!(
        ask(&store, &gw, "http://edge.example.com:8080/").0.as_deref(),
        Some("outbound|8080||api.default.svc.cluster.local")
    );
}
