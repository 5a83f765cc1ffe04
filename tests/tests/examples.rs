//! The example bootstraps users copy do what their comments say, in a real
//! Envoy: the static one, and `make run`'s sidecar fed by xds-ext with the
//! policy and backends `scripts/run.sh` uses.

use switchyard_tests::bootstrap::bootstrap;
use switchyard_tests::xds_ext::{bookinfo, write, XdsExt};
use switchyard_tests::{http_client, workspace_root, EchoServer, Envoy};

/// Envoy from `examples/local/<file>`: `{{NAME}}` placeholders filled from
/// `vars` (admin and listener ports become 0), the backends' fixed ports
/// replaced by their echo servers' and the module paths made absolute.
async fn example_envoy(file: &str, vars: &[(&str, String)], backends: &[(u16, EchoServer)]) -> Envoy {
    let root = workspace_root();
    let mut yaml = std::fs::read_to_string(root.join("examples/local").join(file))
        .unwrap_or_else(|e| panic!("examples/local/{file}: {e}"))
        .replace("{{ADMIN_PORT}}", "0")
        .replace("{{LISTENER_PORT}}", "0")
        .replace("filename: target/switchyard/", &format!("filename: {}/target/switchyard/", root.display()));
    for (name, value) in vars {
        yaml = yaml.replace(&format!("{{{{{name}}}}}"), value);
    }
    for (port, echo) in backends {
        yaml = yaml.replace(&format!("port_value: {port}"), &format!("port_value: {}", echo.port()));
    }
    // Envoy merges --config-yaml over the harness's (empty) bootstrap.
    Envoy::builder(bootstrap(vec![], vec![]))
        .arg("--config-yaml")
        .arg(&yaml)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// GET `/x` through `url` for `host`, as `end-user: user` if given.
async fn get(url: &str, host: &str, user: Option<&str>) -> reqwest::Response {
    let mut request = http_client().get(format!("{url}/x")).header("host", host);
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    request.send().await.unwrap_or_else(|e| panic!("{e}"))
}

/// `service version` of the echo server that answered.
fn served_by(response: &reqwest::Response) -> String {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    format!("{} {}", header("x-echo-service"), header("x-echo-version"))
}

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
    let envoy = example_envoy("envoy-static.yaml", &[], &backends).await;
    let url = envoy.listener_url("demo");

    assert_eq!(served_by(&get(&url, "reviews", Some("jason")).await), "reviews v2");
    assert_eq!(served_by(&get(&url, "reviews", None).await), "reviews v1");
    assert_eq!(get(&url, "ratings", Some("jason")).await.status().as_u16(), 500);
    assert_eq!(get(&url, "ratings", None).await.status().as_u16(), 200);
    assert_eq!(get(&url, "evil.example.com", None).await.status().as_u16(), 502);
    assert_eq!(served_by(&get(&url, "httpbin.org", None).await), "httpbin.org external");
    // The mirror rule shadows every reviews request to v3.
    backends[3].1.wait_for_requests(2, std::time::Duration::from_secs(5)).await;
}

/// `scripts/run.sh`'s `NAME=(...)` array, one word per element, quotes dropped.
fn run_sh_array(name: &str) -> Vec<String> {
    let script = std::fs::read_to_string(workspace_root().join("scripts/run.sh")).unwrap_or_else(|e| panic!("{e}"));
    let start = script.find(&format!("\n{name}=(")).unwrap_or_else(|| panic!("no {name}=( in scripts/run.sh"));
    let body = &script[start + name.len() + 3..];
    let end = body.find(')').unwrap_or_else(|| panic!("{name}=( not closed in scripts/run.sh"));
    let lines = body[..end].lines().map(|l| l.split('#').next().unwrap_or_default());
    lines.flat_map(|l| l.split_whitespace().map(|w| w.trim_matches('"').to_owned()).collect::<Vec<_>>()).collect()
}

#[tokio::test]
async fn the_make_run_sidecar_serves_the_example_policy_from_xds_ext() {
    // The demo's backends and policy, as scripts/run.sh starts them.
    let mut backends = Vec::new();
    for backend in run_sh_array("BACKENDS").chunks(3) {
        let [name, version, port] = backend else { panic!("BACKENDS: {backend:?}") };
        let port: u16 = port.parse().unwrap_or_else(|e| panic!("BACKENDS port {port}: {e}"));
        backends.push((port, EchoServer::start(name, version).await));
    }
    let config = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for file in run_sh_array("POLICY") {
        write(config.path(), &file, &bookinfo(&file));
    }
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let envoy = example_envoy("envoy.yaml", &[("XDS_PORT", xds.grpc_port.to_string())], &backends).await;
    let url = envoy.listener_url("outbound");

    // The curl commands make run prints, with their documented answers.
    assert_eq!(served_by(&get(&url, "reviews:9080", Some("jason")).await), "reviews v2");
    assert_eq!(served_by(&get(&url, "reviews:9080", None).await), "reviews v1");
    assert_eq!(get(&url, "ratings:9080", Some("jason")).await.status().as_u16(), 500);
    assert_eq!(served_by(&get(&url, "ratings:9080", None).await), "ratings v1");
    assert_eq!(served_by(&get(&url, "details:9080", None).await), "details v1", "Istio's default route");
    assert_eq!(served_by(&get(&url, "productpage:9080", None).await), "productpage v1", "Istio's default route");
    assert_eq!(get(&url, "evil.example.com", None).await.status().as_u16(), 502);
    assert_eq!(served_by(&get(&url, "httpbin.org", None).await), "httpbin.org external");

    // The routing filter's cluster header stops at the route.
    for (_, echo) in &backends {
        for request in echo.received() {
            assert_eq!(request.header("x-switchyard-cluster"), None, "{request:?}");
        }
    }
    assert!(xds.log().contains("proxy connected"), "{}", xds.log());
}
