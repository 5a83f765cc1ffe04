//! A sidecar with every Switchyard HTTP filter, each over ECDS from a real
//! `xds-ext serve`: the robustness suites (config churn, control-plane loss,
//! hostile requests) run against it.
//!
//! The HTTP filters are a parameter — the ECDS resource names, in chain
//! order — so the same suite runs the single modules
//! ([`EVERY_FILTER`]) or one module carrying them all. The layout is
//! `examples/local/envoy.yaml`'s: listener `outbound` with the filters and
//! the router, a `mesh` virtual host routed only by the routing filter's
//! cluster header, a `passthrough` virtual host for every other host, and
//! Istio-named clusters in front of echo upstreams. The listener accepts
//! HTTP/1.1 and h2c and upgrades WebSockets, as Istio's sidecars do.

use std::time::Duration;

use serde_json::{json, Value};

use crate::bootstrap::{
    admin, ecds_http_filter, http_connection_manager, istio_node, loopback_address, static_cluster,
};
use crate::xds_ext::XdsExt;
use crate::{EchoServer, Envoy};

/// The single-filter modules' resources, in Istio's chain order.
pub const EVERY_FILTER: &[&str] = &["switchyard.egress", "switchyard.routing", "switchyard.fault", "switchyard.mirror"];
pub const NODE_ID: &str = "productpage-v1";
/// The routing filter's default `cluster_header` (docs/policy.md).
pub const CLUSTER_HEADER: &str = "x-switchyard-cluster";
pub const REVIEWS_V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
pub const REVIEWS_V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
pub const REVIEWS_V3: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";
pub const RATINGS_V1: &str = "outbound|9080|v1|ratings.default.svc.cluster.local";

/// The egress half of the suites' policies: REGISTRY_ONLY mesh-wide (the
/// root `Sidecar`), with a ServiceEntry `name` letting `host` out on port 80.
pub fn registry_only_letting_out(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts:
  - {host}
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
"
    )
}

/// The echo upstreams behind the sidecar's clusters.
pub struct Upstreams {
    pub reviews_v1: EchoServer,
    pub reviews_v2: EchoServer,
    pub reviews_v3: EchoServer,
    pub ratings_v1: EchoServer,
    /// Where the `passthrough` cluster leads: every host outside the mesh.
    pub external: EchoServer,
}

impl Upstreams {
    pub async fn start() -> Upstreams {
        Upstreams {
            reviews_v1: EchoServer::start("reviews", "v1").await,
            reviews_v2: EchoServer::start("reviews", "v2").await,
            reviews_v3: EchoServer::start("reviews", "v3").await,
            ratings_v1: EchoServer::start("ratings", "v1").await,
            external: EchoServer::start("external", "external").await,
        }
    }

    fn clusters(&self) -> Vec<Value> {
        [
            (REVIEWS_V1, &self.reviews_v1),
            (REVIEWS_V2, &self.reviews_v2),
            (REVIEWS_V3, &self.reviews_v3),
            (RATINGS_V1, &self.ratings_v1),
            ("passthrough", &self.external),
        ]
        .iter()
        .map(|(name, echo)| static_cluster(name, echo.port(), false))
        .collect()
    }

    /// Every upstream, for checks that span them all.
    pub fn all(&self) -> [&EchoServer; 5] {
        [&self.reviews_v1, &self.reviews_v2, &self.reviews_v3, &self.ratings_v1, &self.external]
    }
}

/// The sidecar's bootstrap: `http_filters` (ECDS filters, e.g. from
/// [`ecds_http_filter`]) on listener `outbound`, the `xds-ext` cluster at
/// `xds_port`, the upstreams' clusters.
pub fn chain_bootstrap(xds_port: u16, http_filters: Vec<Value>, upstreams: &Upstreams) -> Value {
    let mesh_domains =
        ["reviews", "reviews:9080", "ratings", "ratings:9080", "*.svc.cluster.local", "*.svc.cluster.local:9080"];
    let route_config = json!({
        "name": "outbound",
        "virtual_hosts": [
            {"name": "mesh", "domains": mesh_domains, "routes": [{
                "match": {"prefix": "/"},
                "route": {"cluster_header": CLUSTER_HEADER, "timeout": "0s"},
                "request_headers_to_remove": [CLUSTER_HEADER],
            }]},
            {"name": "passthrough", "domains": ["*"], "routes": [{
                "match": {"prefix": "/"}, "route": {"cluster": "passthrough", "timeout": "0s"}}]},
        ],
    });
    let mut hcm = http_connection_manager("outbound", route_config, http_filters);
    hcm["typed_config"]["upgrade_configs"] = json!([{"upgrade_type": "websocket"}]);
    let outbound = json!({
        "name": "outbound",
        "address": loopback_address(0),
        "filter_chains": [{"filters": [hcm]}],
    });
    let mut clusters = vec![static_cluster("xds-ext", xds_port, true)];
    clusters.extend(upstreams.clusters());
    json!({
        "node": istio_node(NODE_ID, "default", &[("app", "productpage"), ("version", "v1")]),
        "admin": admin(),
        "static_resources": {"listeners": [outbound], "clusters": clusters},
    })
}

/// xds-ext serving bookinfo's Services and DestinationRules plus a policy,
/// and the sidecar getting `resources` from it.
pub struct ChainSidecar {
    pub upstreams: Upstreams,
    pub envoy: Envoy,
    pub xds: XdsExt,
    pub resources: Vec<String>,
    pub config: tempfile::TempDir,
}

impl ChainSidecar {
    /// Starts xds-ext with `policy` (file name, YAML) and the sidecar, and
    /// waits until every resource is SYNCED (Envoy is ready only once each
    /// filter has a config; this makes sure it is xds-ext's).
    pub async fn start(resources: &[&str], policy: &[(&str, &str)]) -> ChainSidecar {
        let upstreams = Upstreams::start().await;
        let config = XdsExt::config_dir(policy);
        let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
        let filters = resources.iter().map(|name| ecds_http_filter(name, "xds-ext")).collect();
        let bootstrap = chain_bootstrap(xds.grpc_port, filters, &upstreams);
        let envoy = match Envoy::start(bootstrap).await {
            Ok(envoy) => envoy,
            Err(e) => panic!("{e}\n--- xds-ext log ---\n{}", xds.log()),
        };
        for resource in resources {
            xds.wait_status(NODE_ID, resource, "SYNCED").await;
        }
        let resources = resources.iter().map(|r| r.to_string()).collect();
        ChainSidecar { upstreams, envoy, xds, resources, config }
    }

    /// `http://127.0.0.1:PORT` of listener `outbound`.
    pub fn url(&self) -> String {
        self.envoy.listener_url("outbound")
    }

    /// Envoy's log tail and xds-ext's log, for a failure message.
    pub fn logs(&self) -> String {
        format!("--- envoy log ---\n{}\n--- xds-ext log ---\n{}", self.envoy.log_tail(40), self.xds.log())
    }

    /// Sum over the filters of Envoy's ECDS `update_success`: how many
    /// configs Envoy has applied.
    pub async fn updates_applied(&self) -> u64 {
        updates_applied(&self.envoy, &self.resources).await
    }
}

/// Sum over `resources` of `extension_config_discovery.http_filter.<r>.update_success`.
pub async fn updates_applied(envoy: &Envoy, resources: &[String]) -> u64 {
    let text = envoy.admin_get("/stats?filter=update_success$").await.unwrap_or_default();
    resources
        .iter()
        .map(|r| {
            let name = format!("extension_config_discovery.http_filter.{r}.update_success: ");
            text.lines().find_map(|l| l.strip_prefix(name.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        })
        .sum()
}

/// Envoy's wasm failure stats: every counter of `/stats` whose name says a
/// VM or plugin failed (`wasm.*failed*`, `*.wasm.*fail*`, the runtime's
/// `..._failures`), with its value. All must stay 0.
pub async fn wasm_failure_stats(envoy: &Envoy) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = envoy
        .stats()
        .await
        .into_iter()
        .filter(|(name, _)| name.contains("wasm") && (name.contains("fail") || name.contains("crash")))
        .collect();
    out.sort();
    out
}

/// A client call that must not hang: `timeout` or an error naming `what`.
pub async fn bounded<T>(what: &str, timeout: Duration, call: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(timeout, call).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {timeout:?}"),
    }
}
