//! The fault filter in a real Envoy: Istio's bookinfo fault-injection flows
//! (a delay and an HTTP 500 abort for `end-user: jason` on ratings), gRPC
//! aborts, percentages, delay then abort, `max_active_faults`, and a client
//! that gives up during a delay.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_config, route_to_cluster, static_cluster, wasm_http_filter,
};
use switchyard_tests::{http_client, EchoServer, Envoy};

async fn fault_envoy(config: Value, ratings: &EchoServer) -> Envoy {
    let module = module_path("fault").unwrap_or_else(|e| panic!("{e}"));
    let filter = wasm_http_filter("switchyard.fault", &module, "fault", "switchyard-fault", &config.to_string());
    let listener = http_listener("main", route_config(vec![route_to_cluster("ratings")]), vec![filter]);
    Envoy::start(bootstrap(vec![listener], vec![static_cluster("ratings", ratings.port(), false)]))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Istio's `virtual-service-ratings-test-*` shape: a fault for jason, then a
/// plain route for everyone (which carries no fault).
fn ratings_fault_for_jason(fault: Value) -> Value {
    let mut jason = json!({"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}]});
    for (key, value) in fault.as_object().into_iter().flatten() {
        jason[key] = value.clone();
    }
    json!({"version": 1, "virtual_hosts": [{"name": "ratings", "domains": ["ratings"], "routes": [jason]}]})
}

struct Reply {
    status: u16,
    body: String,
    took: Duration,
}

async fn get(envoy: &Envoy, user: Option<&str>) -> Reply {
    let started = Instant::now();
    let mut request = http_client().get(format!("{}/ratings/0", envoy.listener_url("main"))).header("host", "ratings");
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("request through envoy: {e}"));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Reply { status, body, took: started.elapsed() }
}

#[tokio::test]
async fn jason_waits_for_the_injected_delay_and_others_do_not() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({"delay": {"fixed_delay": "1s", "percentage": 100}}));
    let envoy = fault_envoy(config, &ratings).await;

    let (jason, alice) = tokio::join!(get(&envoy, Some("jason")), get(&envoy, Some("alice")));

    assert_eq!((jason.status, alice.status), (200, 200), "{}", envoy.log_tail(20));
    assert!(jason.took >= Duration::from_millis(1000), "delay ended early: {:?}", jason.took);
    assert!(jason.took < Duration::from_millis(1300), "delay overran: {:?}", jason.took);
    assert!(alice.took < Duration::from_millis(300), "alice was delayed: {:?}", alice.took);
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_delays_injected_total").await, 1);
}

#[tokio::test]
async fn jason_gets_an_http_500_abort_without_reaching_ratings() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({"abort": {"http_status": 500, "percentage": 100}}));
    let envoy = fault_envoy(config, &ratings).await;

    let jason = get(&envoy, Some("jason")).await;
    let anonymous = get(&envoy, None).await;

    assert_eq!(jason.status, 500);
    assert_eq!(jason.body, "fault filter abort");
    assert_eq!(anonymous.status, 200);
    assert_eq!(ratings.requests(), 1, "the aborted request must not reach ratings");
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_aborts_injected_total").await, 1);
}

#[tokio::test]
async fn a_grpc_abort_answers_a_grpc_request_with_the_grpc_status() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({"abort": {"grpc_status": 14, "percentage": 100}}));
    let envoy = fault_envoy(config, &ratings).await;

    let reply = http_client()
        .post(format!("{}/bookinfo.Ratings/Get", envoy.listener_url("main")))
        .header("host", "ratings")
        .header("end-user", "jason")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let header = |name: &str| reply.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(header("grpc-status").as_deref(), Some("14"), "{:?}", reply.headers());
    assert_eq!(header("grpc-message").as_deref(), Some("fault filter abort"));
    assert_eq!(header("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(ratings.requests(), 0);
}

#[tokio::test]
async fn a_half_percentage_aborts_about_half_the_requests() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({"abort": {"http_status": 503, "percentage": 50}}));
    let envoy = fault_envoy(config, &ratings).await;

    let mut aborted = 0;
    for _ in 0..25 {
        let replies = join_all((0..16).map(|_| get(&envoy, Some("jason")))).await;
        aborted += replies.iter().filter(|r| r.status == 503).count();
        assert!(replies.iter().all(|r| r.status == 503 || r.status == 200));
    }

    let share = aborted as f64 / 400.0;
    assert!((0.40..=0.60).contains(&share), "aborted share {share}");
    assert_eq!(ratings.requests(), 400 - aborted);
}

#[tokio::test]
async fn a_delay_with_an_abort_aborts_after_the_delay() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({
        "delay": {"fixed_delay": "300ms", "percentage": 100},
        "abort": {"http_status": 418, "percentage": 100}}));
    let envoy = fault_envoy(config, &ratings).await;

    let jason = get(&envoy, Some("jason")).await;

    assert_eq!(jason.status, 418);
    assert!(jason.took >= Duration::from_millis(300), "{:?}", jason.took);
    assert_eq!(ratings.requests(), 0);
}

#[tokio::test]
async fn faults_beyond_max_active_faults_pass_unfaulted() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let mut config = ratings_fault_for_jason(json!({"delay": {"fixed_delay": "800ms", "percentage": 100}}));
    config["max_active_faults"] = json!(1);
    let envoy = fault_envoy(config, &ratings).await;

    let replies = join_all((0..3).map(|_| get(&envoy, Some("jason")))).await;

    let delayed = replies.iter().filter(|r| r.took >= Duration::from_millis(800)).count();
    assert_eq!(delayed, 1, "{:?}", replies.iter().map(|r| r.took).collect::<Vec<_>>());
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_faults_overflow_total").await, 2);
}

#[tokio::test]
async fn a_client_that_leaves_during_a_delay_leaves_the_filter_working() {
    let ratings = EchoServer::start("ratings", "v1").await;
    let config = ratings_fault_for_jason(json!({"delay": {"fixed_delay": "300ms", "percentage": 100}}));
    let envoy = fault_envoy(config, &ratings).await;

    let impatient = reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(50)).build();
    let gave_up = impatient
        .unwrap_or_else(|e| panic!("{e}"))
        .get(format!("{}/ratings/0", envoy.listener_url("main")))
        .header("host", "ratings")
        .header("end-user", "jason")
        .send()
        .await;
    assert!(gave_up.is_err(), "the client should have timed out during the delay");
    tokio::time::sleep(Duration::from_millis(400)).await;

    let after = get(&envoy, Some("jason")).await;
    assert_eq!(after.status, 200, "{}", envoy.log_tail(20));
    assert!(after.took >= Duration::from_millis(300));
    assert_eq!(ratings.requests(), 1, "the abandoned request must not reach ratings");
    assert!(!envoy.log().contains("panic"), "{}", envoy.log_tail(20));
}
