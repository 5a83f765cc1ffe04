//! Gateway server ports and delegate VirtualServices through xds-ext in a
//! real Envoy 1.40 shaped like an Istio ingress gateway: two Gateway servers
//! (ports 80 and 8080, pods listening on other ports), route configurations
//! `http.<pod port>` whose virtual hosts `host:<server port>` come from
//! `xds-ext manifests`, the filters from `envoyfilter-manifests/overlays/ingress-gateway`.
//! A path routed on 8080 only answers 404 on 80; a root rule's delegate
//! answers under the root's prefix.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::istio_node;
use switchyard_tests::envoyfilter::{self, EnvoyConfig, Proxy};
use switchyard_tests::istiod::{
    dynamic_bootstrap, fqdn, http_listener, ingress_gateway_manifests, outbound_cluster, resolve_xds_ext,
};
use switchyard_tests::xds_ext::{write, XdsExt};
use switchyard_tests::{http_client, workspace_root, EchoServer, Envoy};

const POLICY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/shop.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http-internal, protocol: HTTP}, hosts: ["*/shop.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public, istio-system/internal]
  http:
  - name: api-v2
    match: [{uri: {prefix: /api/v2}}]
    delegate: {name: api-v2}
  - name: shop
    match: [{uri: {prefix: /shop}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-v2, namespace: default}
spec:
  http:
  - name: beta
    match: [{uri: {prefix: /api/v2/beta}}]
    route: [{destination: {host: api-beta, port: {number: 8080}}}]
  - name: v2
    route: [{destination: {host: api-v2, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tools, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/internal]
  http:
  - name: tools
    match: [{uri: {prefix: /tools}}]
    route: [{destination: {host: tools, port: {number: 9000}}}]
"#;

/// A gateway listener as istiod builds it: RDS `http.<pod port>`.
fn gateway_listener(pod_port: u16, rds_dir: &Path) -> Value {
    http_listener(&format!("0.0.0.0_{pod_port}"), &format!("http.{pod_port}"), rds_dir)
}

/// `outbound|port||<name>.default.svc.cluster.local` at one loopback port.
fn cluster(port: u16, name: &str, endpoint: u16) -> Value {
    outbound_cluster(port, "", &fqdn(name), &[endpoint])
}

#[tokio::test]
async fn gateway_routes_each_server_port_with_its_own_table_and_delegates_answer_under_the_roots_prefix() {
    let productpage = EchoServer::start("productpage", "v1").await;
    let tools = EchoServer::start("tools", "v1").await;
    let api_v2 = EchoServer::start("api-v2", "v1").await;
    let api_beta = EchoServer::start("api-beta", "v1").await;
    let policy = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(policy.path(), "policy.yaml", POLICY);
    let xds = XdsExt::start_with_args(
        policy.path(),
        "127.0.0.1:0",
        &workspace_root().join("target/switchyard"),
        &["--inline-modules"],
    )
    .await;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Server port 80 → pods on 18080, 8080 → 18081.
    let blackhole = |pod: u16, server: u16| json!({"name": format!("http.{pod}"), "virtual_hosts": [{"name": format!("blackhole:{server}"), "domains": ["*"], "routes": []}]});
    let mut config = EnvoyConfig {
        listeners: vec![gateway_listener(18080, dir.path()), gateway_listener(18081, dir.path())],
        route_configs: vec![blackhole(18080, 80), blackhole(18081, 8080)],
        clusters: vec![
            cluster(9080, "productpage", productpage.port()),
            cluster(9000, "tools", tools.port()),
            cluster(8080, "api-v2", api_v2.port()),
            cluster(8080, "api-beta", api_beta.port()),
        ],
    };
    let proxy = Proxy {
        gateway: true,
        namespace: "istio-system".into(),
        labels: vec![("istio".into(), "ingressgateway".into()), ("app".into(), "istio-ingressgateway".into())],
        gateway_ports: vec![(80, 18080), (8080, 18081)],
    };
    envoyfilter::apply(&ingress_gateway_manifests(policy.path()), &proxy, &mut config);
    resolve_xds_ext(&mut config, xds.grpc_port);
    let names = |rc: &Value| -> Vec<String> {
        rc["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(&config.route_configs[0]), ["shop.example.com:80"]);
    assert_eq!(names(&config.route_configs[1]), ["shop.example.com:8080"]);

    let node = istio_node(
        "router~127.0.0.1~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
        "istio-system",
        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
    );
    let bootstrap = dynamic_bootstrap(dir.path(), node, &config, vec![]);
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));

    let get = |pod_port: u16, path: &'static str| {
        let url = format!("http://127.0.0.1:{}{path}", envoy.listener_port(&format!("0.0.0.0_{pod_port}")));
        let request = http_client().get(url).header("host", "shop.example.com");
        async move {
            match request.send().await {
                Ok(r) => (
                    r.status().as_u16(),
                    r.headers().get("x-echo-service").and_then(|v| v.to_str().ok()).unwrap_or("").to_string(),
                ),
                Err(_) => (0, String::new()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(18080, "/shop").await != (200, "productpage".to_string()) {
        assert!(Instant::now() < deadline, "the gateway never routed /shop\n{}", envoy.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(18081, "/tools/x").await, (200, "tools".to_string()), "tools on server port 8080");
    assert_eq!(get(18080, "/tools/x").await.0, 404, "tools is routed on 8080 only: 404 on port 80");
    assert_eq!(get(18081, "/shop").await, (200, "productpage".to_string()), "shop is on both ports");
    assert_eq!(get(18080, "/api/v2/users").await, (200, "api-v2".to_string()), "the delegate's catch-all");
    assert_eq!(get(18081, "/api/v2/beta/1").await, (200, "api-beta".to_string()), "the delegate's own match");
    assert_eq!(get(18080, "/api/v1").await.0, 404, "outside the root's prefix no delegate rule applies");
}
