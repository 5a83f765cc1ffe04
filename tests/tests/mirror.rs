//! The mirror filter in a real Envoy: Istio's httpbin mirroring flow (v1
//! serves, v2 gets a shadow copy), and the primary never waits for the shadow.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_config, route_to_cluster, static_cluster, wasm_http_filter,
};
use switchyard_tests::{http_client, EchoServer, Envoy};

async fn mirror_envoy(config: serde_json::Value, primary: &EchoServer, shadow_port: u16) -> Envoy {
    let module = module_path("mirror").unwrap_or_else(|e| panic!("{e}"));
    let filter = wasm_http_filter("switchyard.mirror", &module, "mirror", "switchyard-mirror", &config.to_string());
    let listener = http_listener("main", route_config(vec![route_to_cluster("httpbin-v1")]), vec![filter]);
    let clusters =
        vec![static_cluster("httpbin-v1", primary.port(), false), static_cluster("httpbin-v2", shadow_port, false)];
    Envoy::builder(bootstrap(vec![listener], clusters))
        .component_log_level("wasm:debug")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn mirror_all_to_v2(percentage: f64) -> serde_json::Value {
    json!({"version": 1, "cluster_name_template": "httpbin-{subset}", "virtual_hosts": [{"name": "httpbin", "domains": ["httpbin"],
        "routes": [{"name": "shadow", "mirrors": [{"destination": {"host": "httpbin", "subset": "v2"}, "percentage": percentage}]}]}]})
}

#[tokio::test]
async fn every_request_is_served_by_v1_and_copied_to_v2_with_a_shadow_authority() {
    let (v1, v2) = (EchoServer::start("httpbin", "v1").await, EchoServer::start("httpbin", "v2").await);
    let envoy = mirror_envoy(mirror_all_to_v2(100.0), &v1, v2.port()).await;

    for i in 0..20 {
        let reply = http_client()
            .post(format!("{}/anything/{i}", envoy.listener_url("main")))
            .header("host", "httpbin")
            .body(format!("payload {i}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.headers().get("x-echo-version").and_then(|v| v.to_str().ok()), Some("v1"));
    }

    let shadows = v2.wait_for_requests(20, Duration::from_secs(5)).await;
    assert_eq!(v1.requests(), 20);
    for shadow in &shadows {
        assert_eq!(shadow.authority(), Some("httpbin-shadow"), "{:?}", shadow.headers);
        assert!(shadow.body_str().starts_with("payload "), "shadow body: {:?}", shadow.body_str());
    }
    assert_eq!(envoy.counter("wasmcustom.switchyard_mirror_mirrored_total").await, 20, "{}", envoy.log_tail(20));
    envoy.wait_for_counter("cluster.httpbin-v2.upstream_rq_200", 20, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_primary_is_not_held_up_by_a_shadow_that_never_answers() {
    let v1 = EchoServer::start("httpbin", "v1").await;
    // The shadow cluster points at a port that accepts connections and never
    // answers: a shadow that hangs until its 5 s timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let silent_port = silent.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let envoy = mirror_envoy(mirror_all_to_v2(100.0), &v1, silent_port).await;

    for _ in 0..5 {
        let started = Instant::now();
        let reply = http_client()
            .get(format!("{}/get", envoy.listener_url("main")))
            .header("host", "httpbin")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status().as_u16(), 200);
        assert!(started.elapsed() < Duration::from_millis(500), "primary took {:?}", started.elapsed());
    }
    assert_eq!(envoy.counter("wasmcustom.switchyard_mirror_mirrored_total").await, 5);
    drop(silent);
}

#[tokio::test]
async fn zero_percent_mirrors_nothing() {
    let (v1, v2) = (EchoServer::start("httpbin", "v1").await, EchoServer::start("httpbin", "v2").await);
    let envoy = mirror_envoy(mirror_all_to_v2(0.0), &v1, v2.port()).await;
    for _ in 0..20 {
        let reply = http_client()
            .get(format!("{}/get", envoy.listener_url("main")))
            .header("host", "httpbin")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status().as_u16(), 200);
    }
    assert_eq!(v1.requests(), 20);
    assert_eq!(v2.requests(), 0);
}
