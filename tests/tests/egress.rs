//! The egress filter in a real Envoy: ServiceEntry-style host lists with
//! wildcards and ports under REGISTRY_ONLY, ALLOW_ANY, dry-run, and the deny
//! status. (TLS/SNI egress is covered in smoke.rs.)

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_config, route_to_cluster, static_cluster, wasm_http_filter,
};
use switchyard_tests::{http_client, EchoServer, Envoy};

async fn egress_envoy(config: Value, outside: &EchoServer) -> Envoy {
    let module = module_path("egress").unwrap_or_else(|e| panic!("{e}"));
    let filter = wasm_http_filter("switchyard.egress", &module, "egress", "switchyard-egress", &config.to_string());
    let listener = http_listener("main", route_config(vec![route_to_cluster("outside")]), vec![filter]);
    Envoy::start(bootstrap(vec![listener], vec![static_cluster("outside", outside.port(), false)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn status_for(envoy: &Envoy, authority: &str) -> u16 {
    http_client()
        .get(format!("{}/", envoy.listener_url("main")))
        .header("host", authority)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .as_u16()
}

fn registry(policy: &str, extra: Value) -> Value {
    let mut config = json!({"version": 1, "outbound_traffic_policy": policy, "hosts": [
        {"host": "*.wikipedia.org"},
        {"host": "api.example.com", "ports": [80, 443]},
        {"host": "10.1.2.3"}]});
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    config
}

#[tokio::test]
async fn registry_only_allows_listed_hosts_wildcards_and_ports_and_nothing_else() {
    let outside = EchoServer::start("outside", "v1").await;
    let envoy = egress_envoy(registry("REGISTRY_ONLY", json!({})), &outside).await;

    for allowed in ["en.wikipedia.org", "EN.Wikipedia.ORG", "api.example.com", "api.example.com:443", "10.1.2.3:8080"] {
        assert_eq!(status_for(&envoy, allowed).await, 200, "{allowed} should be allowed");
    }
    for denied in ["wikipedia.org", "evil.example.com", "api.example.com:8080", "en.wikipedia.org.evil.com", "10.1.2.4"]
    {
        assert_eq!(status_for(&envoy, denied).await, 502, "{denied} should be denied");
    }
    assert_eq!(outside.requests(), 5);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_http_denied_total").await, 5);
}

#[tokio::test]
async fn allow_any_lets_unlisted_hosts_through() {
    let outside = EchoServer::start("outside", "v1").await;
    let envoy = egress_envoy(registry("ALLOW_ANY", json!({})), &outside).await;

    assert_eq!(status_for(&envoy, "anything.example.net").await, 200);
    assert_eq!(status_for(&envoy, "en.wikipedia.org").await, 200);
    assert_eq!(outside.requests(), 2);
}

#[tokio::test]
async fn dry_run_lets_denied_hosts_through_and_counts_them() {
    let outside = EchoServer::start("outside", "v1").await;
    let envoy = egress_envoy(registry("REGISTRY_ONLY", json!({"dry_run": true})), &outside).await;

    assert_eq!(status_for(&envoy, "evil.example.com").await, 200);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_http_dry_run_denied_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_http_denied_total").await, 0);
    assert!(envoy.log().contains("dry-run: would deny evil.example.com"), "{}", envoy.log_tail(20));
}

#[tokio::test]
async fn the_deny_status_is_configurable() {
    let outside = EchoServer::start("outside", "v1").await;
    let envoy = egress_envoy(registry("REGISTRY_ONLY", json!({"deny_status": 403})), &outside).await;

    let reply = http_client()
        .get(format!("{}/", envoy.listener_url("main")))
        .header("host", "evil.example.com")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status().as_u16(), 403);
    assert_eq!(reply.headers().get("x-switchyard-egress").and_then(|v| v.to_str().ok()), Some("denied"));
    assert_eq!(outside.requests(), 0);
}
