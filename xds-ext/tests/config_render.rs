//! Rendering per workload, with Istio's semantics: sidecar or gateway,
//! exportTo, per-workload matches, TrafficPolicy, ports and subsets, fault
//! and mirror rule order, egress.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use config_common::{errors, load, load_one, render, workload};
use serde_json::{json, Value};
use xds_ext::config::ConfigStore;

fn hosts_of(configs: &serde_json::Map<String, Value>) -> Vec<String> {
    configs["switchyard.routing"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn rule_names(configs: &serde_json::Map<String, Value>, vh: usize) -> Vec<String> {
    configs["switchyard.routing"]["virtual_hosts"][vh]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

const MESH_AND_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/shop.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - route: [{destination: {host: productpage, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: both, namespace: default}
spec:
  hosts: [ratings, ratings.example.com]
  gateways: [mesh, istio-system/public]
  http:
  - name: internal-only
    match: [{gateways: [mesh], uri: {prefix: /internal}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - route: [{destination: {host: ratings, port: {number: 9080}}}]
"#;

#[test]
fn sidecars_get_mesh_routes_and_gateways_get_their_gateway_routes() {
    let (store, problems) = load_one(MESH_AND_GATEWAY);
    assert!(problems.is_empty(), "{problems:#?}");

    let sidecar = render(&store, &workload("default", "app=productpage"));
    assert_eq!(
        hosts_of(&sidecar),
        ["ratings.default.svc.cluster.local", "ratings.example.com", "reviews.default.svc.cluster.local"]
    );
    assert_eq!(rule_names(&sidecar, 0), ["internal-only", "both-1"]);

    let gateway = render(&store, &workload("istio-system", "istio=ingressgateway"));
    // ratings.example.com is not among the gateway's server hosts; ratings
    // (short name) is not either; only shop.example.com is served.
    assert_eq!(hosts_of(&gateway), ["shop.example.com"]);
    assert_eq!(gateway["switchyard.routing"]["virtual_hosts"][0]["domains"], json!(["shop.example.com"]));
}

#[test]
fn a_gateway_gets_matches_bound_to_it_and_not_those_bound_to_the_mesh() {
    let yaml = MESH_AND_GATEWAY.replace("\"*/shop.example.com\"", "\"*/*\"");
    let (store, _) = load_one(&yaml);
    let gateway = render(&store, &workload("istio-system", "istio=ingressgateway"));
    let hosts = hosts_of(&gateway);
    assert!(hosts.contains(&"ratings.example.com".to_string()), "{hosts:?}");
    let vh = hosts.iter().position(|h| h == "ratings.example.com").unwrap();
    assert_eq!(rule_names(&gateway, vh), ["both-1"], "the mesh-only match is dropped, and with it its rule");
}

#[test]
fn export_to_limits_which_namespaces_see_a_virtual_service() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: a}
spec:
  hosts: [svc]
  exportTo: ["."]
  http: [{route: [{destination: {host: svc, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shared, namespace: a}
spec:
  hosts: [other]
  exportTo: [b]
  http: [{route: [{destination: {host: other, port: {number: 80}}}]}]
"#,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let in_a = render(&store, &workload("a", ""));
    assert_eq!(hosts_of(&in_a), ["svc.a.svc.cluster.local"]);
    assert_eq!(
        in_a["switchyard.routing"]["virtual_hosts"][0]["domains"],
        json!(["svc.a.svc.cluster.local", "svc.a.svc", "svc.a", "svc"])
    );
    let in_b = render(&store, &workload("b", ""));
    assert_eq!(hosts_of(&in_b), ["other.a.svc.cluster.local"]);
    // From another namespace the bare short name means another service.
    assert_eq!(
        in_b["switchyard.routing"]["virtual_hosts"][0]["domains"],
        json!(["other.a.svc.cluster.local", "other.a.svc", "other.a"])
    );
    assert!(hosts_of(&render(&store, &workload("c", ""))).is_empty());
}

#[test]
fn source_labels_and_namespace_are_decided_per_workload() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: from-productpage
    match:
    - sourceLabels: {app: productpage}
      headers: {end-user: {exact: jason}}
    - sourceNamespace: test
    route: [{destination: {host: reviews, subset: v2, port: {number: 9080}}}]
  - name: default
    route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1}, {name: v2}]}
"#,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let productpage = render(&store, &workload("default", "app=productpage,version=v1"));
    assert_eq!(rule_names(&productpage, 0), ["from-productpage", "default"]);
    let first = &productpage["switchyard.routing"]["virtual_hosts"][0]["routes"][0];
    assert_eq!(first["match"], json!([{"headers": {"end-user": {"exact": "jason"}}}]));

    let other = render(&store, &workload("default", "app=details"));
    assert_eq!(rule_names(&other, 0), ["default"]);

    let test_ns = render(&store, &workload("test", "app=details"));
    assert_eq!(test_ns["switchyard.routing"]["virtual_hosts"][0]["routes"][0]["match"], json!([{}]));
}

#[test]
fn a_traffic_policy_replaces_the_virtual_service_for_the_workloads_it_selects() {
    let store = config_common::bookinfo(&[
        config_common::SERVICES,
        config_common::RULES,
        "virtual-service-all-v1.yaml",
        "traffic-policy-reviews-sticky.yaml",
    ]);
    let productpage = render(&store, &workload("default", "app=productpage,version=v1"));
    let reviews = productpage["switchyard.routing"]["virtual_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(reviews["routes"][0]["name"], "sticky-split");
    assert_eq!(reviews["routes"][0]["sticky"], json!({"header": "end-user"}));
    assert_eq!(reviews["routes"][0]["route"].as_array().unwrap().len(), 2);

    let details = render(&store, &workload("default", "app=details"));
    let reviews = &details["switchyard.routing"]["virtual_hosts"][3];
    assert_eq!(reviews["name"], "reviews.default.svc.cluster.local");
    assert_eq!(reviews["routes"][0]["route"][0]["destination"]["subset"], "v1");
}

#[test]
fn a_destination_without_port_uses_the_service_port_or_is_an_error() {
    let vs = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"#;
    let (store, problems) = load_one(vs);
    assert_eq!(
        errors(&problems),
        ["test.yaml:8: VirtualService default/reviews: spec.http[0].route[0].destination: destination reviews.default.svc.cluster.local has no port: set destination.port.number, or add the Kubernetes Service (or a ServiceEntry with ports) for it"]
    );
    // Still in force (the fix may come from another document), but it cannot render.
    assert_eq!(store.documents().len(), 1);
    let problems = store.render(&workload("default", "")).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert!(problems[0]
        .to_string()
        .contains("spec.http[0].route[0].destination: destination reviews.default.svc.cluster.local has no port"));

    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{port: 15020, name: tcp-metrics}, {port: 9080, name: http-web}]\n";
    let (store, problems) = load(&[("vs.yaml", vs), ("svc.yaml", service)]);
    assert!(problems.is_empty(), "{problems:#?}");
    let configs = render(&store, &workload("default", ""));
    assert_eq!(configs["switchyard.routing"]["virtual_hosts"][0]["routes"][0]["route"][0]["destination"]["port"], 9080);
}

#[test]
fn an_unknown_subset_is_refused_where_istio_would_answer_503() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v4, port: {number: 9080}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews.default.svc.cluster.local, subsets: [{name: v1}]}
"#,
    );
    assert_eq!(
        errors(&problems),
        ["test.yaml:8: VirtualService default/reviews: spec.http[0].route[0].destination: subset \"v4\" of reviews.default.svc.cluster.local is not defined by any DestinationRule visible in namespace default (Istio would answer 503 for it)"]
    );
    assert!(store.render(&workload("default", "")).is_err());
}

#[test]
fn faults_and_mirrors_keep_first_match_order() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - name: everyone
    fault: {abort: {httpStatus: 500, percentage: {value: 100}}}
    mirror: {host: ratings-shadow, port: {number: 9080}}
    route: [{destination: {host: ratings, port: {number: 9080}}}]
  - name: never-reached
    route: [{destination: {host: ratings, port: {number: 9080}}}]
"#,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let configs = render(&store, &workload("default", ""));
    let faults = &configs["switchyard.fault"]["virtual_hosts"][0]["routes"];
    // jason's rule is there so jason never falls through to the abort; it never fires.
    assert_eq!(faults[0]["name"], "jason");
    assert_eq!(faults[0]["abort"]["percentage"], 0.0);
    assert_eq!(faults[1]["name"], "everyone");
    assert_eq!(faults[1]["abort"], json!({"http_status": 500, "percentage": 100.0}));
    assert_eq!(faults.as_array().unwrap().len(), 2, "rules after the last fault are not needed");
    let mirrors = &configs["switchyard.mirror"]["virtual_hosts"][0]["routes"];
    assert_eq!(mirrors[0]["mirrors"][0]["percentage"], 0.0);
    assert_eq!(
        mirrors[1]["mirrors"],
        json!([{"destination": {"host": "ratings-shadow.default.svc.cluster.local", "port": 9080}}])
    );

    // explain agrees: jason gets no fault, others the abort.
    let c = store.render_configs(&workload("default", "")).unwrap();
    let req = |h: &[String]| xds_ext::config::explain::RequestSpec::parse("GET", "http://ratings:9080/", h).unwrap();
    let jason = xds_ext::config::explain::explain(&c, &req(&["end-user: jason".into()]), 0).unwrap();
    assert_eq!(jason.fault, "none (the matching rule has no fault)");
    assert_eq!(jason.mirror, "none (the matching rule has no mirror)");
    let other = xds_ext::config::explain::explain(&c, &req(&[]), 0).unwrap();
    assert!(other.fault.contains("abort HTTP 500 at 100% (injected"), "{}", other.fault);
}

#[test]
fn the_first_virtual_service_for_a_host_wins_on_a_sidecar_and_gateways_merge() {
    let vs = |name: &str, ns: &str, gateways: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [reviews.shop.svc.cluster.local]\n  gateways: {gateways}\n  http:\n  - name: r\n    route: [{{destination: {{host: reviews.shop.svc.cluster.local, port: {{number: 80}}}}}}]\n"
        )
    };
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec:\n  selector: {app: gw}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*/*\"]}]\n";
    let (store, problems) = load(&[
        ("a.yaml", &vs("b-second", "shop", "[mesh, gw]")),
        ("b.yaml", &vs("a-first", "shop", "[mesh, gw]")),
        ("c.yaml", &vs("own", "client", "[mesh]")),
        ("gw.yaml", gw),
    ]);
    assert!(problems.is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("shop", "app=x")).unwrap();
    assert_eq!(c.sources.len(), 1);
    assert!(c.sources.values().next().unwrap().starts_with("VirtualService shop/a-first"), "{:?}", c.sources);
    // A workload's own namespace comes first.
    let c = store.render_configs(&workload("client", "app=x")).unwrap();
    assert!(c.sources.values().next().unwrap().starts_with("VirtualService client/own"), "{:?}", c.sources);
    // A gateway merges the rules of both, in namespace/name order, with unique names.
    let c = store.render_configs(&workload("shop", "app=gw")).unwrap();
    let names: Vec<&str> = c.routing.virtual_hosts[0].routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r", "r-2"]);
}

#[test]
fn egress_follows_the_sidecar_that_selects_the_workload() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: open, namespace: shop}
spec:
  workloadSelector: {labels: {app: legacy}}
  outboundTrafficPolicy: {mode: ALLOW_ANY}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: restricted, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com, "*.googleapis.com"]
  ports: [{number: 443, name: https, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: elsewhere, namespace: other}
spec:
  hosts: [other.example.com]
  exportTo: ["."]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{port: 9080, name: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {ports: [{port: 5432, name: tcp}]}
"#,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let egress = |ns: &str, labels: &str| render(&store, &workload(ns, labels))["switchyard.egress"].clone();

    let shop = egress("shop", "app=web");
    assert_eq!(shop["outbound_traffic_policy"], "REGISTRY_ONLY");
    let hosts: Vec<&str> = shop["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(
        hosts,
        [
            "*.googleapis.com",
            "api.example.com",
            "reviews",
            "reviews.shop",
            "reviews.shop.svc",
            "reviews.shop.svc.cluster.local"
        ],
        "the Sidecar imports ./* only: no db from namespace data"
    );
    assert_eq!(shop["hosts"][1], json!({"host": "api.example.com", "ports": [443]}));

    assert_eq!(egress("shop", "app=legacy")["outbound_traffic_policy"], "ALLOW_ANY");

    // Elsewhere the root namespace's default applies, and the Sidecar's import list does not.
    let data = egress("data", "app=x");
    assert_eq!(data["outbound_traffic_policy"], "REGISTRY_ONLY");
    let hosts: Vec<&str> = data["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert!(hosts.contains(&"db") && hosts.contains(&"reviews.shop") && !hosts.contains(&"reviews"));
    assert!(!hosts.contains(&"other.example.com"), "exported to its own namespace only");
    assert!(egress("other", "")["hosts"].as_array().unwrap().iter().any(|h| h["host"] == "other.example.com"));
}

#[test]
fn rendering_is_deterministic_and_always_valid_for_the_filters() {
    let files = [
        config_common::SERVICES,
        config_common::RULES,
        "bookinfo-gateway.yaml",
        "virtual-service-reviews-test-v2.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "httpbin.yaml",
        "virtual-service-httpbin-mirror.yaml",
        "service-entry-httpbin-org.yaml",
        "sidecar-registry-only.yaml",
        "traffic-policy-reviews-sticky.yaml",
    ];
    let store = config_common::bookinfo(&files);
    let mut reversed: Vec<&str> = files.to_vec();
    reversed.reverse();
    let again = config_common::bookinfo(&reversed);
    for (ns, labels) in [
        ("default", "app=productpage,version=v1"),
        ("default", "app=reviews,version=v2"),
        ("istio-system", "istio=ingressgateway"),
        ("other", ""),
    ] {
        let w = workload(ns, labels);
        let a = store.render(&w).unwrap();
        assert_eq!(a, store.render(&w).unwrap());
        assert_eq!(a, again.render(&w).unwrap(), "file order does not matter");
        for (name, json) in &a.resources {
            let bytes = json.as_bytes();
            let ok = match name.as_str() {
                "switchyard.routing" => switchyard_policy::routing::CompiledRouting::from_json(bytes).is_ok(),
                "switchyard.fault" => switchyard_policy::fault::CompiledFault::from_json(bytes).is_ok(),
                "switchyard.mirror" => switchyard_policy::mirror::CompiledMirror::from_json(bytes).is_ok(),
                "switchyard.http" => switchyard_policy::chain::CompiledChain::from_json(bytes).is_ok(),
                _ => switchyard_policy::egress::CompiledEgress::from_json(bytes).is_ok(),
            };
            assert!(ok, "{name} for {ns}/{labels}: {json}");
        }
    }
    let _ = ConfigStore::new();
}

/// The sections of a workload's combined config (`switchyard.http`), each
/// checked to be exactly the single filter's config.
fn chain_sections(configs: &serde_json::Map<String, Value>) -> Vec<String> {
    let http = configs["switchyard.http"].as_object().unwrap();
    assert_eq!(http["version"], 1);
    let mut sections = Vec::new();
    for section in ["egress", "routing", "fault", "mirror"] {
        if let Some(config) = http.get(section) {
            assert_eq!(config, &configs[&format!("switchyard.{section}")], "{section}");
            sections.push(section.to_string());
        }
    }
    assert_eq!(http.len(), sections.len() + 1, "unknown sections in {http:?}");
    sections
}

#[test]
fn the_combined_config_has_only_the_stages_that_do_something_for_the_workload() {
    let store = config_common::bookinfo(&[
        config_common::SERVICES,
        config_common::RULES,
        "bookinfo-gateway.yaml",
        "virtual-service-ratings-test-delay.yaml",
        "httpbin.yaml",
        "virtual-service-httpbin-mirror.yaml",
    ]);
    // No Sidecar: ALLOW_ANY, whose hosts (every Service) only name what is allowed.
    let reviews = render(&store, &workload("default", "app=reviews,version=v2"));
    assert_eq!(reviews["switchyard.egress"]["outbound_traffic_policy"], "ALLOW_ANY");
    assert!(!reviews["switchyard.egress"]["hosts"].as_array().unwrap().is_empty());
    assert_eq!(chain_sections(&reviews), ["routing", "fault", "mirror"]);
    // A gateway's routes and no fault or mirror bound to it: a `*` host is ALLOW_ANY.
    let gateway = render(&store, &workload("istio-system", "istio=ingressgateway"));
    assert_eq!(chain_sections(&gateway), ["routing"]);

    let store = config_common::bookinfo(&[config_common::SERVICES, config_common::RULES, "sidecar-registry-only.yaml"]);
    let productpage = render(&store, &workload("default", "app=productpage"));
    assert_eq!(chain_sections(&productpage), ["egress", "routing"]);

    // Nothing selects it: routing alone, still removing a client's cluster header.
    let empty = render(&ConfigStore::new(), &workload("default", "app=x"));
    assert_eq!(chain_sections(&empty), ["routing"]);
    assert_eq!(empty["switchyard.http"]["routing"]["virtual_hosts"], json!([]));

    // A gateway that admits only its server hosts (REGISTRY_ONLY, 404) keeps egress.
    let (store, problems) = load_one(MESH_AND_GATEWAY);
    assert!(errors(&problems).is_empty(), "{problems:?}");
    let ingress = render(&store, &workload("istio-system", "istio=ingressgateway"));
    assert_eq!(chain_sections(&ingress), ["egress", "routing"]);

    // explain and render -o table say the same.
    let configs = store.render_configs(&workload("istio-system", "istio=ingressgateway")).unwrap();
    assert_eq!(
        xds_ext::config::explain::combined_stages(&configs),
        "switchyard.http: egress → routing (left out: fault: no fault rules; mirror: no mirror rules)"
    );
}

#[test]
fn sidecar_resources_do_not_restrict_gateways() {
    let store = config_common::bookinfo(&[
        config_common::SERVICES,
        config_common::RULES,
        "bookinfo-gateway.yaml",
        "sidecar-registry-only.yaml",
    ]);
    let gw = render(&store, &workload("istio-system", "istio=ingressgateway"));
    assert_eq!(gw["switchyard.egress"]["outbound_traffic_policy"], "ALLOW_ANY");
    let sidecar = render(&store, &workload("default", "app=productpage"));
    assert_eq!(sidecar["switchyard.egress"]["outbound_traffic_policy"], "REGISTRY_ONLY");
}

#[test]
fn explain_shows_redirects_rewrites_and_header_changes() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  http:
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /v2/api, authority: api.internal}
    headers: {request: {set: {x-from: web}}, response: {remove: [server]}}
    route: [{destination: {host: api, port: {number: 8080}}}]
"#,
    );
    assert!(problems.is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "")).unwrap();
    let ask = |url: &str| {
        let req = xds_ext::config::explain::RequestSpec::parse("GET", url, &[]).unwrap();
        xds_ext::config::explain::explain(&c, &req, 0).unwrap()
    };
    let old = ask("http://web.example.com/old/page?q=1");
    assert_eq!(old.routing.outcome, "redirect");
    assert_eq!(old.routing.redirect.as_deref(), Some("302 location: http://web.example.com/new?q=1"));
    let api = ask("http://web.example.com/api/books");
    assert_eq!(api.routing.cluster.as_deref(), Some("outbound|8080||api.default.svc.cluster.local"));
    assert_eq!(api.routing.rewrite.as_deref(), Some("path /api/books → /v2/api/books, authority → api.internal"));
    assert_eq!(api.routing.headers, ["request: set x-from: web", "response: remove server"]);
    assert!(ask("http://web.example.com/other").routing.outcome.starts_with("no route"));
    assert!(ask("http://elsewhere/").routing.outcome.starts_with("unmanaged"));
}

#[test]
fn an_egress_gateway_reaches_the_registry_hosts_its_servers_admit_and_other_gateways_their_server_hosts() {
    let egress = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - {port: {number: 443, name: tls, protocol: TLS}, hosts: ["*"], tls: {mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.external.example]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"#;
    let (store, problems) = load_one(&format!("{egress}---\n{MESH_AND_GATEWAY}"));
    assert!(errors(&problems).is_empty(), "{problems:?}");
    let gateway = render(&store, &workload("istio-system", "istio=egressgateway"));
    let config = &gateway["switchyard.egress"];
    assert_eq!(config["outbound_traffic_policy"], "REGISTRY_ONLY");
    assert_eq!(config["hosts"], json!([{"host": "api.external.example"}]));
    assert_eq!(gateway["switchyard.egress-tls"], gateway["switchyard.egress"]);

    let ingress = render(&store, &workload("istio-system", "istio=ingressgateway"));
    assert_eq!(ingress["switchyard.egress"]["outbound_traffic_policy"], "REGISTRY_ONLY");
    assert_eq!(ingress["switchyard.egress"]["hosts"], json!([{"host": "shop.example.com"}]));
    assert_eq!(ingress["switchyard.egress"]["deny_status"], 404, "a host the gateway does not admit: 404, as in Istio");
    assert!(gateway["switchyard.egress"]["deny_status"].is_null(), "the egress gateway blocks with Istio's 502");
    let (star, _) = load_one(&MESH_AND_GATEWAY.replace("*/shop.example.com", "*"));
    let ingress = render(&star, &workload("istio-system", "istio=ingressgateway"));
    assert_eq!(ingress["switchyard.egress"]["outbound_traffic_policy"], "ALLOW_ANY");
}

#[test]
fn explain_of_https_from_a_sidecar_is_the_sni_decision_not_the_http_filters() {
    let (store, problems) = load_one(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: google}
spec:
  hosts: [www.google.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: google}
spec:
  hosts: [www.google.com]
  http: [{fault: {abort: {httpStatus: 500, percentage: {value: 100}}}, route: [{destination: {host: www.google.com, port: {number: 443}}}]}]
"#,
    );
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let c = store.render_configs(&workload("default", "app=productpage")).unwrap();
    let ask = |url: &str| {
        let req = xds_ext::config::explain::RequestSpec::parse("GET", url, &[]).unwrap();
        xds_ext::config::explain::explain(&c, &req, 0).unwrap()
    };
    let google = ask("https://www.google.com/search");
    assert!(
        google.egress.starts_with("TLS: switchyard.egress-tls lets SNI www.google.com:443 through"),
        "{}",
        google.egress
    );
    assert!(google.routing.outcome.contains("passes TLS through"), "{:?}", google.routing);
    assert!(google.fault.starts_with("not applied"), "the HTTP abort cannot apply to TLS: {}", google.fault);
    let evil = ask("https://evil.example.com/");
    assert!(evil.egress.contains("closes the connection for SNI evil.example.com:443"), "{}", evil.egress);
    let plain = ask("http://www.google.com:443/");
    assert!(plain.fault.contains("abort HTTP 500"), "plain HTTP still gets the HTTP filters: {}", plain.fault);
}
