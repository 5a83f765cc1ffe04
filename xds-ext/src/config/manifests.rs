//! Documents → the Istio `EnvoyFilter`s that depend on the policy: the route
//! patches that let the routing filter steer exactly the hosts Switchyard
//! manages (`xds-ext manifests`). The filters themselves and their ECDS
//! source do not depend on the policy: they are the static EnvoyFilters of
//! `envoyfilter-manifests/`.
//!
//! istiod builds, per HTTP port, a route configuration whose virtual hosts
//! are named `host:port` (`reviews.default.svc.cluster.local:9080` on a
//! sidecar, `*:8080` on a gateway). A managed host gets one extra route, put
//! first, that matches only when the routing filter decided (its filter
//! state, which no client can set) and then reads the cluster from the
//! filter's cluster header:
//!
//! - on a sidecar, `HTTP_ROUTE` `INSERT_FIRST` into the host's virtual host
//!   (one EnvoyFilter per VirtualService or TrafficPolicy). istiod's own route
//!   stays behind it, so a request the routing filter did not steer (no
//!   config yet, or a rule that did not match) goes where Istio sends it;
//! - on a gateway, the virtual host itself: istiod builds gateway virtual
//!   hosts only from the VirtualServices bound to it, and those are
//!   Switchyard's, not Istio's — so `VIRTUAL_HOST` `ADD` of `host:port`, and
//!   `REMOVE` of the `blackhole:port` host istiod puts on a port without any
//!   (one EnvoyFilter per Gateway, selecting its workloads).
//!
//! A request the routing filter did not steer never takes that route, so a
//! client-sent cluster header cannot pick a cluster (and the routing filter
//! removes one on every request it sees anyway).

use std::collections::BTreeSet;

use serde_json::{json, Value};
use switchyard_policy::routing::DEFAULT_CLUSTER_HEADER;

use super::model::{Doc, Gateway, GatewayServer, Kind, Spec};
use super::render::{fqdn, gateway_ref, ns_host_matches, Registry, ROOT_NAMESPACE};

/// Which proxies to generate for (`--for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Sidecars,
    IngressGateway,
    EgressGateway,
    All,
}

impl Target {
    fn sidecars(self) -> bool {
        matches!(self, Target::Sidecars | Target::All)
    }

    fn gateway(self, egress: bool) -> bool {
        match self {
            Target::IngressGateway => !egress,
            Target::EgressGateway => egress,
            Target::All => true,
            Target::Sidecars => false,
        }
    }
}

/// Where the route patches apply after the filters' own EnvoyFilters
/// (priorities 10–40 in `envoyfilter-manifests/`): order among route
/// patches does not matter, but an explicit priority keeps `istioctl
/// analyze` quiet (IST0155).
const PRIORITY: i64 = 50;

/// The generated EnvoyFilters, sorted by name, and what was left out and why.
#[derive(Debug, Default)]
pub struct Manifests {
    pub envoy_filters: Vec<Value>,
    pub notes: Vec<String>,
}

/// Generates the route patches for `target` from valid documents.
pub fn manifests(docs: &[Doc], target: Target) -> Manifests {
    let mut out = Manifests::default();
    if target.sidecars() {
        sidecar_patches(docs, &mut out);
    }
    gateway_patches(docs, target, &mut out);
    out.envoy_filters.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    out
}

// ---------------------------------------------------------------------------
// Sidecars

fn sidecar_patches(docs: &[Doc], out: &mut Manifests) {
    let registry = Registry::new(docs);
    for doc in docs {
        let (hosts, prefix) = match &doc.spec {
            Spec::VirtualService(vs) if binds_mesh(&vs.gateways) => (&vs.hosts, "switchyard-routes"),
            Spec::TrafficPolicy(tp) => (&tp.hosts, "switchyard-trafficpolicy-routes"),
            _ => continue,
        };
        let mut patches = Vec::new();
        for host in hosts {
            let host = fqdn(host, &doc.key.namespace);
            let Some(ports) = registry.ports(&host, &doc.key.namespace) else {
                out.notes.push(format!(
                    "{} {}: host {host}: no Service or ServiceEntry gives its ports, so istiod has no virtual host \
                     for it on sidecars: no route patch",
                    doc.key, doc.key.namespace
                ));
                continue;
            };
            for port in ports.iter().filter(|p| p.is_http()) {
                patches.push(json!({
                    "applyTo": "HTTP_ROUTE",
                    "match": {
                        "context": "SIDECAR_OUTBOUND",
                        "routeConfiguration": {
                            "portNumber": port.number,
                            "vhost": {"name": format!("{host}:{}", port.number)},
                        },
                    },
                    "patch": {"operation": "INSERT_FIRST", "value": switchyard_route()},
                }));
            }
        }
        if !patches.is_empty() {
            out.envoy_filters.push(envoy_filter(
                &format!("{prefix}-{}-{}", doc.key.namespace, doc.key.name),
                doc,
                None,
                patches,
            ));
        }
    }
}

/// A VirtualService without `gateways` is bound to `mesh`.
fn binds_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

// ---------------------------------------------------------------------------
// Gateways

fn gateway_patches(docs: &[Doc], target: Target, out: &mut Manifests) {
    // istiod merges every Gateway of a workload into one route configuration
    // per port: a virtual host two Gateways would both add is added once.
    let mut added: BTreeSet<(String, u16, String)> = BTreeSet::new();
    let mut gateways: Vec<(&Doc, &Gateway)> = docs
        .iter()
        .filter_map(|d| match &d.spec {
            Spec::Gateway(g) => Some((d, g)),
            _ => None,
        })
        .collect();
    gateways.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    for (doc, gateway) in gateways {
        let egress = gateway.selector.get("istio").is_some_and(|v| v == "egressgateway");
        if !target.gateway(egress) {
            continue;
        }
        if gateway.selector.is_empty() {
            out.notes.push(format!("{}: no selector, so it selects no gateway workload: no route patch", doc.key));
            continue;
        }
        let selector = format!("{:?}", gateway.selector);
        let reference = format!("{}/{}", doc.key.namespace, doc.key.name);
        let mut patches = Vec::new();
        for server in gateway.servers.iter().filter(|s| routes_http(s)) {
            let Some(port) = &server.port else { continue };
            let mut hosts = BTreeSet::new();
            for vs_doc in docs {
                let Spec::VirtualService(vs) = &vs_doc.spec else { continue };
                if !vs.gateways.iter().any(|g| gateway_ref(g, &vs_doc.key.namespace) == reference) {
                    continue;
                }
                for host in &vs.hosts {
                    let host = host.to_ascii_lowercase();
                    if server.hosts.iter().any(|h| ns_host_matches(h, &doc.key.namespace, &vs_doc.key.namespace, &host))
                    {
                        hosts.insert(host);
                    }
                }
            }
            if hosts.is_empty() {
                continue;
            }
            patches.push(json!({
                "applyTo": "VIRTUAL_HOST",
                "match": {
                    "context": "GATEWAY",
                    "routeConfiguration": {
                        "portNumber": port.number,
                        "vhost": {"name": format!("blackhole:{}", port.number)},
                    },
                },
                "patch": {"operation": "REMOVE"},
            }));
            for host in hosts {
                if !added.insert((selector.clone(), port.number, host.clone())) {
                    continue;
                }
                patches.push(json!({
                    "applyTo": "VIRTUAL_HOST",
                    "match": {"context": "GATEWAY", "routeConfiguration": {"portNumber": port.number}},
                    "patch": {
                        "operation": "ADD",
                        "value": {
                            "name": format!("{host}:{}", port.number),
                            "domains": [host],
                            "routes": [switchyard_route()],
                        },
                    },
                }));
            }
        }
        if patches.is_empty() {
            continue;
        }
        let name = format!("switchyard-gateway-routes-{}-{}", doc.key.namespace, doc.key.name);
        out.envoy_filters.push(envoy_filter(&name, doc, Some(&gateway.selector), patches));
    }
}

/// HTTP routes exist on HTTP servers and on HTTPS servers that terminate TLS.
pub(crate) fn routes_http(server: &GatewayServer) -> bool {
    let Some(port) = &server.port else { return false };
    let protocol = port.protocol.to_ascii_uppercase();
    match protocol.as_str() {
        "HTTP" | "HTTP2" | "GRPC" => true,
        "HTTPS" => !server.passthrough,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The pieces

/// The route a managed host gets first: taken only when the routing filter
/// chose a cluster — it matches the filter state the routing filter sets
/// with its decision (`wasm.switchyard.route`), which a client cannot send,
/// unlike a header — and then reads the cluster from the filter's header.
/// Timeout and retries are the routing filter's `x-envoy-*` headers;
/// `timeout: 0s` is Istio's default (no route timeout unless the
/// VirtualService sets one).
fn switchyard_route() -> Value {
    json!({
        "name": "switchyard",
        "match": {
            "prefix": "/",
            "filter_state": [{"key": ROUTE_FILTER_STATE, "string_match": {"safe_regex": {"regex": ".+"}}}],
        },
        "route": {"cluster_header": DEFAULT_CLUSTER_HEADER, "timeout": "0s"},
    })
}

/// The routing filter's decision as Envoy filter state (`wasm.` + the
/// filter's property name).
const ROUTE_FILTER_STATE: &str = "wasm.switchyard.route";

/// Every generated EnvoyFilter lives in Istio's root namespace: mesh-wide
/// without a selector, and reaching gateways in any namespace with one.
fn envoy_filter(
    name: &str,
    source: &Doc,
    selector: Option<&std::collections::BTreeMap<String, String>>,
    patches: Vec<Value>,
) -> Value {
    let mut spec = json!({"priority": PRIORITY, "configPatches": patches});
    if let Some(labels) = selector {
        spec["workloadSelector"] = json!({"labels": labels});
    }
    json!({
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": kubernetes_name(name),
            "namespace": ROOT_NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "switchyard",
                "app.kubernetes.io/managed-by": "xds-ext-manifests",
            },
            "annotations": {"switchyard.dev/source": source_label(source)},
        },
        "spec": spec,
    })
}

fn source_label(doc: &Doc) -> String {
    let kind = match doc.key.kind {
        Kind::TrafficPolicy => "TrafficPolicy",
        other => other.as_str(),
    };
    format!("{kind} {}/{}", doc.key.namespace, doc.key.name)
}

/// A DNS-1123 subdomain: lowercase, `[a-z0-9.-]`, at most 253 characters.
fn kubernetes_name(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
        .collect();
    out.truncate(253);
    out.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::ConfigStore;

    fn load(yaml: &str) -> ConfigStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, yaml).unwrap();
        let (store, problems) = ConfigStore::load_paths(&[path]);
        assert!(!problems.iter().any(|p| p.is_error()), "{problems:?}");
        store
    }

    const REVIEWS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  ports: [{port: 9080, name: http}, {port: 9090, name: tcp-admin}]
---
apiVersion: v1
kind: Service
metadata: {name: details}
spec:
  ports: [{port: 9080, name: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

    #[test]
    fn a_mesh_virtual_service_patches_its_http_ports_only_and_no_other_host() {
        let store = load(REVIEWS);
        let m = manifests(store.documents(), Target::Sidecars);
        assert_eq!(m.envoy_filters.len(), 1, "{:#?}", m.envoy_filters);
        let ef = &m.envoy_filters[0];
        assert_eq!(ef["metadata"]["name"], "switchyard-routes-default-reviews");
        assert_eq!(ef["metadata"]["namespace"], "istio-system");
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        assert_eq!(patches.len(), 1, "tcp-admin is not an HTTP port: {patches:#?}");
        assert_eq!(patches[0]["applyTo"], "HTTP_ROUTE");
        assert_eq!(patches[0]["patch"]["operation"], "INSERT_FIRST");
        assert_eq!(
            patches[0]["match"]["routeConfiguration"]["vhost"]["name"],
            "reviews.default.svc.cluster.local:9080"
        );
        assert_eq!(patches[0]["match"]["routeConfiguration"]["portNumber"], 9080);
        let route = &patches[0]["patch"]["value"];
        assert_eq!(route["route"]["cluster_header"], "x-switchyard-cluster");
        assert_eq!(route["match"]["filter_state"][0]["key"], "wasm.switchyard.route");
        assert!(manifests(store.documents(), Target::IngressGateway).envoy_filters.is_empty());
    }

    #[test]
    fn a_host_without_ports_is_a_note_not_a_patch() {
        let store = load(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec:\n  hosts: [x.example.com]\n  \
             http: [{route: [{destination: {host: x.example.com, port: {number: 80}}}]}]\n",
        );
        let m = manifests(store.documents(), Target::All);
        assert!(m.envoy_filters.is_empty());
        assert!(m.notes[0].contains("x.example.com"), "{:?}", m.notes);
    }

    #[test]
    fn a_gateway_gets_its_bound_hosts_as_virtual_hosts_and_loses_the_blackhole() {
        let store = load(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: web}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 443, name: tls, protocol: HTTPS}, hosts: ["*"], tls: {mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: web}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{route: [{destination: {host: a, port: {number: 80}}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: other}
spec:
  hosts: ["*", "b.example.com"]
  gateways: [web/gw]
  http: [{route: [{destination: {host: b, port: {number: 80}}}]}]
"#,
        );
        let m = manifests(store.documents(), Target::IngressGateway);
        assert_eq!(m.envoy_filters.len(), 1, "{:#?}", m.envoy_filters);
        let ef = &m.envoy_filters[0];
        assert_eq!(ef["spec"]["workloadSelector"]["labels"]["istio"], "ingressgateway");
        let patches = ef["spec"]["configPatches"].as_array().unwrap();
        let ops: Vec<(String, String)> = patches
            .iter()
            .map(|p| {
                let name =
                    p["patch"]["value"]["name"].as_str().or(p["match"]["routeConfiguration"]["vhost"]["name"].as_str());
                (p["patch"]["operation"].as_str().unwrap().to_string(), name.unwrap().to_string())
            })
            .collect();
        assert_eq!(
            ops,
            [
                ("REMOVE".into(), "blackhole:8080".into()),
                ("ADD".into(), "*:8080".into()),
                ("ADD".into(), "b.example.com:8080".into())
            ],
            "the passthrough server has no HTTP routes; `*` from two VirtualServices is added once"
        );
        assert!(manifests(store.documents(), Target::EgressGateway).envoy_filters.is_empty());
        assert!(manifests(store.documents(), Target::Sidecars).envoy_filters.is_empty(), "bound to a gateway only");
    }

    #[test]
    fn names_are_kubernetes_names() {
        assert_eq!(kubernetes_name("switchyard-routes-default-Reviews_v2"), "switchyard-routes-default-reviews-v2");
    }
}
