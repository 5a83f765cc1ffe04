//! The example bootstraps users copy do what their comments say, in a real
//! Envoy. (`make run`'s ECDS bootstrap is exercised by the xds tests' setup.)

use switchyard_tests::bootstrap::bootstrap;
use switchyard_tests::{http_client, workspace_root, EchoServer, Envoy};

#[tokio::test]
async fn the_static_example_routes_jason_aborts_ratings_and_denies_unknown_hosts() {
    let backends = [
        (18080, EchoServer::start("productpage", "v1").await),
        (18081, EchoServer::start("reviews", "v1").await),
        (18082, EchoServer::start("reviews", "v2").await),
        (18083, EchoServer::start("reviews", "v3").await),
        (18084, EchoServer::start("ratings", "v1").await),
        (18085, EchoServer::start("httpbin.org", "external").await),
    ];
    let root = workspace_root();
    let mut yaml = std::fs::read_to_string(root.join("examples/local/envoy-static.yaml"))
        .unwrap_or_else(|e| panic!("examples/local/envoy-static.yaml: {e}"))
        .replace("{{ADMIN_PORT}}", "0")
        .replace("{{LISTENER_PORT}}", "0")
        .replace("filename: target/switchyard/", &format!("filename: {}/target/switchyard/", root.display()));
    for (port, echo) in &backends {
        yaml = yaml.replace(&format!("port_value: {port}"), &format!("port_value: {}", echo.port()));
    }
    // Envoy merges --config-yaml over the harness's (empty) bootstrap.
    let envoy = Envoy::builder(bootstrap(vec![], vec![]))
        .arg("--config-yaml")
        .arg(&yaml)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = envoy.listener_url("demo");
    let get = |host: &'static str, user: Option<&'static str>| {
        let mut request = http_client().get(format!("{url}/x")).header("host", host);
        if let Some(user) = user {
            request = request.header("end-user", user);
        }
        async move { request.send().await.unwrap_or_else(|e| panic!("{e}")) }
    };

    let version =
        |r: &reqwest::Response| r.headers().get("x-echo-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(version(&get("reviews", Some("jason")).await).as_deref(), Some("v2"));
    assert_eq!(version(&get("reviews", None).await).as_deref(), Some("v1"));
    assert_eq!(get("ratings", Some("jason")).await.status().as_u16(), 500);
    assert_eq!(get("ratings", None).await.status().as_u16(), 200);
    assert_eq!(get("evil.example.com", None).await.status().as_u16(), 502);
    assert_eq!(version(&get("httpbin.org", None).await).as_deref(), Some("external"));
    // The mirror rule shadows every reviews request to v3.
    backends[3].1.wait_for_requests(2, std::time::Duration::from_secs(5)).await;
}
