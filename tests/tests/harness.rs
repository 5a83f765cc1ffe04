//! Self-test of the harness: plain Envoy (no wasm) in front of echo upstreams.

use std::time::Duration;

use switchyard_tests::bootstrap::{
    bootstrap, http_listener, route_config, route_to_cluster, static_cluster, trust_loopback_clients,
};
use switchyard_tests::{http_client, EchoResponse, EchoServer, Envoy};

/// One listener `ingress` routing `/` to cluster `echo` at the echo server.
fn echo_bootstrap(echo: &EchoServer, http2: bool) -> serde_json::Value {
    bootstrap(
        vec![http_listener("ingress", route_config(vec![route_to_cluster("echo")]), vec![])],
        vec![static_cluster("echo", echo.port(), http2)],
    )
}

#[tokio::test]
async fn echo_through_envoy_and_stats() {
    let echo = EchoServer::start("reviews", "v1").await;
    let envoy = Envoy::start(echo_bootstrap(&echo, false)).await.unwrap_or_else(|e| panic!("{e}"));
    let client = http_client();

    let resp = client
        .post(format!("{}/reviews/1?x=1", envoy.listener_url("ingress")))
        .header("end-user", "jason")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo-service"], "reviews");
    assert_eq!(resp.headers()["x-echo-version"], "v1");
    let body: EchoResponse = resp.json().await.unwrap();
    assert_eq!(body.service, "reviews");
    assert_eq!(body.method, "POST");
    assert_eq!(body.path, "/reviews/1");
    assert_eq!(body.query, "x=1");
    assert_eq!(body.body, "hello");
    assert_eq!(body.protocol, "HTTP/1.1");
    assert_eq!(body.headers["end-user"], "jason");
    assert!(body.headers.contains_key("x-request-id"), "envoy adds x-request-id: {body:?}");

    // The echo server recorded it.
    let got = echo.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("end-user"), Some("jason"));
    assert!(got[0].authority().is_some_and(|a| a.starts_with("127.0.0.1:")));

    // Status knob and stats.
    let resp = client.get(format!("{}/?status=418", envoy.listener_url("ingress"))).send().await.unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(envoy.counter("cluster.echo.upstream_rq_total").await, 2);
    assert_eq!(envoy.counter("cluster.echo.upstream_rq_418").await, 1);
    assert_eq!(envoy.counter("http.ingress.downstream_rq_total").await, 2);
    assert_eq!(envoy.counter("cluster.echo.no_such_stat").await, 0);
    assert_eq!(envoy.stat("cluster.echo.no_such_stat").await, None);
    let stats = envoy.stats().await;
    assert!(stats.contains_key("server.live"), "gauges are included");
    let prom = envoy.prometheus().await;
    assert!(prom.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"echo\"} 2"), "{prom}");
    assert!(envoy.log().contains("starting main dispatch loop"));
}

#[tokio::test]
async fn h2c_upstream_delay_and_retry_knobs() {
    let echo = EchoServer::start("ratings", "v2").await;
    let mut config = echo_bootstrap(&echo, true);
    // Envoy 1.40 ignores x-envoy-* request headers from external clients, and
    // by default no address is internal: trust loopback explicitly.
    trust_loopback_clients(&mut config["static_resources"]["listeners"][0]);
    let envoy = Envoy::builder(config).concurrency(2).start().await.unwrap_or_else(|e| panic!("{e}"));
    let client = http_client();
    let url = envoy.listener_url("ingress");

    let body: EchoResponse = client.get(format!("{url}/r")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body.protocol, "HTTP/2.0");
    assert_eq!(body.version, "v2");

    let start = std::time::Instant::now();
    let resp = client.get(format!("{url}/?delay_ms=200")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(200));

    // fail_times: first 2 requests with key k1 get 503; Envoy retries them away.
    let resp = client
        .get(format!("{url}/?fail_times=2&fail_key=k1"))
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-max-retries", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(envoy.counter("cluster.echo.upstream_rq_retry").await, 2);
    // Without retries a fresh key fails once, then succeeds.
    let first = client.get(format!("{url}/?fail_times=1&fail_key=k2")).send().await.unwrap();
    assert_eq!(first.status(), 503);
    let second = client.get(format!("{url}/?fail_times=1&fail_key=k2")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    echo.wait_for_requests(7, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn two_envoys_in_parallel() {
    let a = EchoServer::start("a", "v1").await;
    let b = EchoServer::start("b", "v1").await;
    let (ea, eb) = tokio::join!(Envoy::start(echo_bootstrap(&a, false)), Envoy::start(echo_bootstrap(&b, false)));
    let (ea, eb) = (ea.unwrap_or_else(|e| panic!("{e}")), eb.unwrap_or_else(|e| panic!("{e}")));
    assert_ne!(ea.admin_url(), eb.admin_url());
    assert_ne!(ea.listener_port("ingress"), eb.listener_port("ingress"));
    let client = http_client();
    for (envoy, want) in [(&ea, "a"), (&eb, "b")] {
        let body: EchoResponse = client.get(envoy.listener_url("ingress")).send().await.unwrap().json().await.unwrap();
        assert_eq!(body.service, want);
        assert_eq!(envoy.counter("cluster.echo.upstream_rq_total").await, 1);
    }
}

#[tokio::test]
async fn refused_bootstrap_reports_exit_and_log() {
    let bad = bootstrap(
        vec![http_listener("ingress", route_config(vec![route_to_cluster("nowhere")]), vec![])],
        vec![static_cluster("echo", 1, false)],
    );
    let (status, log) = Envoy::start_expect_failure(bad.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success());
    assert!(log.contains("unknown cluster 'nowhere'"), "{log}");

    // The same bootstrap through `start` is an error carrying the log.
    let err = match Envoy::start(bad).await {
        Ok(_) => panic!("envoy accepted a route to an unknown cluster"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("exited"), "{err}");
    assert!(err.contains("unknown cluster 'nowhere'"), "{err}");
}

#[tokio::test]
async fn expect_failure_errors_when_envoy_starts() {
    let echo = EchoServer::start("x", "v1").await;
    let err = Envoy::start_expect_failure(echo_bootstrap(&echo, false)).await.err();
    assert!(err.is_some_and(|e| e.to_string().contains("became ready")));
}

#[tokio::test]
async fn wait_exit_and_kill() {
    let echo = EchoServer::start("x", "v1").await;
    let mut envoy = Envoy::start(echo_bootstrap(&echo, false)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(envoy.wait_exit(Duration::from_millis(100)).await, None);
    assert!(envoy.is_running());
    let pid = envoy.pid().unwrap();
    envoy.kill();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
