//! The reviews sidecar the xds-ext suites share: reviews v1, v2 and v3 echo
//! upstreams behind Istio-named clusters, an Envoy whose routing filter gets
//! its config from xds-ext over ECDS, and requests that say which version
//! answered.

use futures::future::join_all;
use serde_json::{json, Value};

use crate::bootstrap::{
    admin, ecds_http_filter, http_listener, istio_node, route_by_cluster_header, route_config, static_cluster,
};
use crate::{http_client, EchoServer, Envoy};

pub const REVIEWS: &str = "reviews.default.svc.cluster.local";
pub const ROUTING: &str = "switchyard.routing";

pub struct Reviews {
    pub v1: EchoServer,
    pub v2: EchoServer,
    pub v3: EchoServer,
}

impl Reviews {
    pub async fn start() -> Reviews {
        Reviews {
            v1: EchoServer::start("reviews", "v1").await,
            v2: EchoServer::start("reviews", "v2").await,
            v3: EchoServer::start("reviews", "v3").await,
        }
    }
}

/// A VirtualService sending all of reviews to `subset`.
pub fn reviews_to(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - name: all
    route:
    - destination:
        host: reviews
        subset: {subset}
"
    )
}

/// The bootstrap of an Envoy presenting itself as workload `labels` in
/// `default`: listener `main` with the routing filter from cluster `xds-ext`
/// (`xds_cluster`, e.g. `static_cluster("xds-ext", port, true)`) before a
/// route that reads the filter's cluster header, and the reviews subsets as
/// Istio-named clusters.
pub fn routing_sidecar(node_id: &str, labels: &[(&str, &str)], xds_cluster: Value, reviews: &Reviews) -> Value {
    let listener = http_listener(
        "main",
        route_config(vec![route_by_cluster_header("x-switchyard-cluster")]),
        vec![ecds_http_filter(ROUTING, "xds-ext")],
    );
    let mut clusters = vec![xds_cluster];
    for (subset, echo) in [("v1", &reviews.v1), ("v2", &reviews.v2), ("v3", &reviews.v3)] {
        clusters.push(static_cluster(&format!("outbound|9080|{subset}|{REVIEWS}"), echo.port(), false));
    }
    json!({
        "node": istio_node(node_id, "default", labels),
        "admin": admin(),
        "static_resources": {"listeners": [listener], "clusters": clusters},
    })
}

pub struct Reply {
    pub status: u16,
    /// `x-echo-version` of the answer (empty if none).
    pub version: String,
    pub body: String,
}

/// GET `path` with `host: reviews` through `envoy_url`; a transport error is
/// status 0 with the error as body.
pub async fn send(client: &reqwest::Client, envoy_url: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client.get(format!("{envoy_url}{path}")).header("host", "reviews");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let version =
                response.headers().get("x-echo-version").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            Reply { status, version, body: response.text().await.unwrap_or_default() }
        }
        Err(e) => Reply { status: 0, version: String::new(), body: e.to_string() },
    }
}

/// The versions answering `n` requests to reviews on listener `main`, 16 at
/// a time; every answer must be 200.
pub async fn versions(envoy: &Envoy, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let client = http_client();
    let url = envoy.listener_url("main");
    let mut all = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        for reply in join_all(batch.iter().map(|_| send(&client, &url, "/reviews/0", headers))).await {
            assert_eq!(reply.status, 200, "{}", reply.body);
            all.push(reply.version);
        }
    }
    all
}
