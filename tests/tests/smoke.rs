//! Each Switchyard module loads into a real Envoy 1.40 with a minimal valid
//! configuration and handles a request; an invalid configuration is refused
//! with the filter's own reason in Envoy's log. The assertions read the
//! filter's own counters from Envoy's stats: only a running filter moves them.

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_by_cluster_header, route_config, route_to_cluster, static_cluster,
    tcp_proxy_listener, wasm_http_filter, wasm_network_filter,
};
use switchyard_tests::{http_client, tls, EchoServer, Envoy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn filter(name: &str, config: &Value) -> Value {
    let module = module_path(name).unwrap_or_else(|e| panic!("{e}"));
    wasm_http_filter(&format!("switchyard.{name}"), &module, name, &format!("switchyard-{name}"), &config.to_string())
}

/// One listener in front of one echo upstream, with `filters` before the
/// router; the route reads the routing filter's cluster header when asked.
async fn envoy_with(filters: Vec<Value>, cluster_header_route: bool, upstream: &EchoServer) -> Envoy {
    let route =
        if cluster_header_route { route_by_cluster_header("x-switchyard-cluster") } else { route_to_cluster("echo") };
    let listener = http_listener("main", route_config(vec![route]), filters);
    Envoy::start(bootstrap(vec![listener], vec![static_cluster("echo", upstream.port(), false)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn get(envoy: &Envoy, host: &str) -> (u16, String) {
    let response = http_client()
        .get(format!("{}/smoke", envoy.listener_url("main")))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("request through envoy: {e}"));
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn routing_module_routes_a_request_and_counts_it() {
    let upstream = EchoServer::start("echo", "v1").await;
    let config = json!({"version": 1, "cluster_name_template": "{host}", "virtual_hosts": [
        {"name": "smoke", "domains": ["smoke"], "routes": [{"name": "all", "route": [{"destination": {"host": "echo"}}]}]}]});
    let envoy = envoy_with(vec![filter("routing", &config)], true, &upstream).await;

    let (status, body) = get(&envoy, "smoke").await;

    assert_eq!(status, 200, "{body}\n{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("wasmcustom.switchyard_routing_requests_total").await, 1);
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn fault_module_passes_a_request_without_fault_and_counts_it() {
    let upstream = EchoServer::start("echo", "v1").await;
    let config = json!({"version": 1, "virtual_hosts": [{"name": "smoke", "domains": ["smoke"], "routes": [
        {"name": "never", "match": [{"headers": {"x-fault": {"exact": "yes"}}}], "abort": {"http_status": 500, "percentage": 100}}]}]});
    let envoy = envoy_with(vec![filter("fault", &config)], false, &upstream).await;

    let (status, _) = get(&envoy, "smoke").await;

    assert_eq!(status, 200, "{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_requests_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_aborts_injected_total").await, 0);
}

#[tokio::test]
async fn mirror_module_passes_a_request_and_counts_it() {
    let upstream = EchoServer::start("echo", "v1").await;
    let config = json!({"version": 1, "cluster_name_template": "{host}", "virtual_hosts": [{"name": "smoke", "domains": ["other"],
        "routes": [{"name": "shadow", "mirrors": [{"destination": {"host": "echo"}, "percentage": 100}]}]}]});
    let envoy = envoy_with(vec![filter("mirror", &config)], false, &upstream).await;

    let (status, _) = get(&envoy, "smoke").await;

    assert_eq!(status, 200, "{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("wasmcustom.switchyard_mirror_requests_total").await, 1);
    assert_eq!(upstream.requests(), 1, "a host without mirror rules is not mirrored");
}

#[tokio::test]
async fn egress_module_allows_a_registered_host_and_denies_another() {
    let upstream = EchoServer::start("echo", "v1").await;
    let config = json!({"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "hosts": [{"host": "smoke"}]});
    let envoy = envoy_with(vec![filter("egress", &config)], false, &upstream).await;

    let (allowed, _) = get(&envoy, "smoke").await;
    let (denied, _) = get(&envoy, "elsewhere.example.com").await;

    assert_eq!((allowed, denied), (200, 502), "{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_http_allowed_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_http_denied_total").await, 1);
    assert_eq!(upstream.requests(), 1);
}

/// Sends a ClientHello with `sni` and reports whether Envoy kept the
/// connection open (true) or closed it (false) within a short wait.
async fn tls_connection_survives(port: u16, sni: &str) -> bool {
    let mut stream =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("connect: {e}"));
    stream.write_all(&tls::client_hello(sni)).await.unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = [0u8; 64];
    match tokio::time::timeout(std::time::Duration::from_millis(500), stream.read(&mut buf)).await {
        Err(_elapsed) => true,
        Ok(Ok(0)) | Ok(Err(_)) => false,
        // The echo upstream answers the garbage with an HTTP 400: connected.
        Ok(Ok(_)) => true,
    }
}

#[tokio::test]
async fn egress_tls_module_closes_a_denied_sni_before_any_upstream_connection() {
    let upstream = EchoServer::start("echo", "v1").await;
    let config =
        json!({"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "hosts": [{"host": "*.allowed.example"}]});
    let module = module_path("egress").unwrap_or_else(|e| panic!("{e}"));
    let network_filter =
        wasm_network_filter("switchyard.egress-tls", &module, "egress-tls", "switchyard-egress", &config.to_string());
    let listener = tcp_proxy_listener("tls", "echo", vec![network_filter], true);
    let envoy = Envoy::start(bootstrap(vec![listener], vec![static_cluster("echo", upstream.port(), false)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = envoy.listener_port("tls");

    assert!(!tls_connection_survives(port, "evil.example").await, "denied SNI must be closed\n{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("cluster.echo.upstream_cx_total").await, 0, "no upstream connection for a denied SNI");
    assert!(tls_connection_survives(port, "api.allowed.example").await, "{}", envoy.log_tail(30));
    assert_eq!(envoy.counter("cluster.echo.upstream_cx_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_tls_denied_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_tls_allowed_total").await, 1);
}

#[tokio::test]
async fn each_module_refuses_an_invalid_config_and_logs_why() {
    let cases = [
        ("routing", json!({"version": 1, "virtual_hosts": [{"name": "x", "domains": ["x"], "routes": []}]}), "routes"),
        ("fault", json!({"version": 2, "virtual_hosts": []}), "version"),
        ("mirror", json!({"version": 1, "virtual_hosts": [], "bogus": true}), "bogus"),
        (
            "egress",
            json!({"version": 1, "outbound_traffic_policy": "SOMETIMES", "hosts": []}),
            "outbound_traffic_policy",
        ),
    ];
    for (name, config, field) in cases {
        let listener = http_listener("main", route_config(vec![route_to_cluster("echo")]), vec![filter(name, &config)]);
        let (status, log) =
            Envoy::start_expect_failure(bootstrap(vec![listener], vec![static_cluster("echo", 9, false)]))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!status.success(), "{name}: envoy must refuse the config");
        let reason = log
            .lines()
            .find(|line| line.contains(&format!("switchyard.{name}: rejected configuration:")))
            .unwrap_or_else(|| panic!("{name}: no rejection line in the log:\n{log}"));
        assert!(reason.contains(field), "{name}: the reason must name `{field}`: {reason}");
    }
}
