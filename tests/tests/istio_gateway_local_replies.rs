//! A Gateway server's `tls.httpsRedirect`, `directResponse` and weights
//! normalised to their sum, through xds-ext in a real Envoy 1.40 shaped like
//! an Istio ingress gateway (as `istio_gateway_ports.rs`): server 80
//! redirects plain HTTP to https, server 8080 routes; `/healthz` is answered
//! by the routing filter, `/split` (weights 1 and 3) goes a quarter / three
//! quarters.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::istio_node;
use switchyard_tests::envoyfilter::{self, EnvoyConfig, Proxy};
use switchyard_tests::istiod::{
    dynamic_bootstrap, fqdn, http_listener, ingress_gateway_manifests, outbound_cluster, resolve_xds_ext,
};
use switchyard_tests::xds_ext::{write, XdsExt};
use switchyard_tests::{workspace_root, EchoServer, Envoy};

const POLICY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*/shop.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 8080, name: http-internal, protocol: HTTP}
    hosts: ["*/shop.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/public]
  http:
  - name: healthz
    match: [{uri: {exact: /healthz}}]
    directResponse: {status: 200, body: {string: ok}}
    headers: {response: {set: {x-answered-by: switchyard}}}
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: productpage, port: {number: 9080}}, weight: 1}
    - {destination: {host: tools, port: {number: 9000}}, weight: 3}
  - name: shop
    route: [{destination: {host: productpage, port: {number: 9080}}}]
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
async fn https_redirect_direct_response_and_normalised_weights_in_an_istio_shaped_gateway() {
    let productpage = EchoServer::start("productpage", "v1").await;
    let tools = EchoServer::start("tools", "v1").await;
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
        clusters: vec![cluster(9080, "productpage", productpage.port()), cluster(9000, "tools", tools.port())],
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

    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let get = |pod_port: u16, path: &'static str| {
        let url = format!("http://127.0.0.1:{}{path}", envoy.listener_port(&format!("0.0.0.0_{pod_port}")));
        let request = client.get(url).header("host", "shop.example.com");
        async move {
            match request.send().await {
                Ok(r) => {
                    let header =
                        |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let (status, service, location, by) =
                        (r.status().as_u16(), header("x-echo-service"), header("location"), header("x-answered-by"));
                    (status, service, location, by, r.text().await.unwrap_or_default())
                }
                Err(_) => (0, String::new(), String::new(), String::new(), String::new()),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(18081, "/shop").await.1 != "productpage" {
        assert!(Instant::now() < deadline, "the gateway never routed /shop\n{}", envoy.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Server 80 has httpsRedirect: plain HTTP gets a 301 to https, whatever the path.
    let (status, service, location, _, _) = get(18080, "/shop?x=1").await;
    assert_eq!((status, service.as_str(), location.as_str()), (301, "", "https://shop.example.com/shop?x=1"));
    assert_eq!(get(18080, "/healthz").await.0, 301, "the redirect comes before every rule");
    // Server 8080 answers /healthz itself: not forwarded to the backend.
    let (status, service, _, by, body) = get(18081, "/healthz").await;
    assert_eq!((status, service.as_str(), by.as_str(), body.as_str()), (200, "", "switchyard", "ok"));
    // Weights 1 and 3: a quarter to productpage, three quarters to tools.
    let mut productpage_hits = 0;
    let total = 200;
    for _ in 0..total {
        let (status, service, ..) = get(18081, "/split").await;
        assert_eq!(status, 200);
        if service == "productpage" {
            productpage_hits += 1;
        } else {
            assert_eq!(service, "tools");
        }
    }
    // Expected 50 (sd about 6); 1:3 is far from 1:1 (100) and from all-or-nothing.
    assert!((25..=80).contains(&productpage_hits), "{productpage_hits} of {total} to productpage");
}
