//! What istiod would send an Envoy, built for tests: listeners, route
//! configurations and clusters named as istiod names them, delivered from
//! files as LDS/RDS/CDS (so Envoy's rules for API-delivered resources apply),
//! and the manifests of `envoyfilter-manifests/` and `xds-ext manifests` to
//! patch them with (see [`crate::envoyfilter`]).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bootstrap::{admin, loopback_address, xds_ext_binary};
use crate::envoyfilter::{self, EnvoyConfig};
use crate::workspace_root;
use crate::xds_ext::write;

/// The ECDS target the manifests name; tests resolve it to xds-ext's port.
pub const XDS_EXT_TARGET: &str = "xds-ext.switchyard-system.svc:15012";
pub const ROUTER: &str = "envoy.filters.http.router";

/// A name of namespace `default`, as istiod spells it.
pub fn fqdn(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

/// `outbound|port|subset|fqdn` with loopback endpoints.
pub fn outbound_cluster(port: u16, subset: &str, host: &str, endpoints: &[u16]) -> Value {
    let name = format!("outbound|{port}|{subset}|{host}");
    let endpoints: Vec<Value> =
        endpoints.iter().map(|p| json!({"endpoint": {"address": loopback_address(*p)}})).collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    })
}

/// An HTTP listener as istiod builds them: HCM over RDS (`route`), Istio's
/// own HTTP filters (cors, fault) before the router; loopback, any port.
pub fn http_listener(name: &str, route: &str, rds_dir: &Path) -> Value {
    json!({
        "name": name,
        "address": loopback_address(0),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "rds": {"route_config_name": route, "config_source": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": rds_dir.join(format!("rds-{route}.json"))},
                }},
                "http_filters": [
                    {"name": "envoy.filters.http.cors", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
                    {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                    {"name": ROUTER, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    })
}

/// Writes LDS, CDS and one RDS file per route configuration into `dir` and
/// returns a bootstrap that reads them: nothing of the mesh is static.
pub fn dynamic_bootstrap(dir: &Path, node: Value, config: &EnvoyConfig, static_clusters: Vec<Value>) -> Value {
    let resources = |type_url: &str, items: &[Value]| {
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                item["@type"] = json!(type_url);
                item
            })
            .collect();
        json!({"version_info": "1", "resources": items}).to_string()
    };
    write(dir, "lds.json", &resources("type.googleapis.com/envoy.config.listener.v3.Listener", &config.listeners));
    write(dir, "cds.json", &resources("type.googleapis.com/envoy.config.cluster.v3.Cluster", &config.clusters));
    for rc in &config.route_configs {
        let name = rc["name"].as_str().unwrap_or_default();
        let text = resources("type.googleapis.com/envoy.config.route.v3.RouteConfiguration", std::slice::from_ref(rc));
        write(dir, &format!("rds-{name}.json"), &text);
    }
    let source = |file: &str| json!({"resource_api_version": "V3", "path_config_source": {"path": dir.join(file)}});
    json!({
        "node": node,
        "admin": admin(),
        "static_resources": {"clusters": static_clusters},
        "dynamic_resources": {"lds_config": source("lds.json"), "cds_config": source("cds.json")},
    })
}

/// Every string equal to `from` in `value` becomes `to` (the test's DNS).
pub fn resolve(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(s) if s == from => *s = to.to_string(),
        Value::Array(items) => items.iter_mut().for_each(|v| resolve(v, from, to)),
        Value::Object(map) => map.values_mut().for_each(|v| resolve(v, from, to)),
        _ => {}
    }
}

/// Points the manifests' ECDS target at xds-ext on loopback.
pub fn resolve_xds_ext(config: &mut EnvoyConfig, grpc_port: u16) {
    for listener in &mut config.listeners {
        resolve(listener, XDS_EXT_TARGET, &format!("127.0.0.1:{grpc_port}"));
    }
}

/// `kubectl kustomize envoyfilter-manifests/overlays/NAME`.
pub fn overlay(name: &str) -> Vec<Value> {
    envoyfilter::kustomize(&workspace_root().join("envoyfilter-manifests/overlays").join(name))
}

/// The ingress gateway's manifests for a test's own policy: the filters of
/// `components/ingress-gateway` with that component's committed route
/// patches (bookinfo's) replaced by those `xds-ext manifests` makes of `policy`.
pub fn ingress_gateway_manifests(policy: &Path) -> Vec<Value> {
    let component = workspace_root().join("envoyfilter-manifests/components/ingress-gateway");
    let mut documents: Vec<Value> = envoyfilter::kustomize(&component)
        .into_iter()
        .filter(|d| !d["metadata"]["name"].as_str().unwrap_or_default().starts_with("switchyard-gateway-routes"))
        .collect();
    documents.extend(route_patches(policy, "ingress-gateway"));
    documents
}

/// `xds-ext manifests POLICY --for TARGET -o json`: the route patches.
pub fn route_patches(policy: &Path, target: &str) -> Vec<Value> {
    let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(binary)
        .args(["manifests", "--for", target, "-o", "json"])
        .arg(policy)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "xds-ext manifests: {}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Polls `check` until it holds; false when `timeout` passed first.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !check().await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}
