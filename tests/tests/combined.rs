//! The combined module (`switchyard.wasm`) in a real Envoy: one HTTP filter
//! running egress → routing → fault → mirror from one config, each stage as
//! its single-purpose filter would act, in Envoy's chain order (a denial or
//! an abort ends the request before later stages; a delayed request, body
//! and shadow copy included, goes on only when its delay ends).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_by_cluster_header, route_config, static_cluster, tcp_proxy_listener,
    wasm_http_filter, wasm_network_filter,
};
use switchyard_tests::{http_client, EchoServer, Envoy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REVIEWS: &str = "reviews.default.svc.cluster.local";
const DELAY_MS: u64 = 400;

fn cluster(subset: &str) -> String {
    format!("outbound|9080|{subset}|{REVIEWS}")
}

fn destination(subset: &str) -> Value {
    json!({"host": REVIEWS, "subset": subset, "port": 9080})
}

fn vhost(routes: Value) -> Value {
    json!([{"name": "reviews", "domains": ["reviews", REVIEWS], "routes": routes}])
}

/// Bookinfo's reviews as one config: only known hosts go out; jason goes to
/// v2, everyone else to v1; `end-user: tester` gets a 503 and `end-user:
/// slow` a delay; every request is copied to v3.
fn bookinfo_chain() -> Value {
    json!({
        "version": 1,
        "egress": {"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "hosts": [{"host": "reviews"}, {"host": REVIEWS}]},
        "routing": {"version": 1, "virtual_hosts": vhost(json!([
            {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": destination("v2")}]},
            {"name": "default", "route": [{"destination": destination("v1")}]}]))},
        "fault": {"version": 1, "virtual_hosts": vhost(json!([
            {"name": "tester", "match": [{"headers": {"end-user": {"exact": "tester"}}}],
             "abort": {"http_status": 503, "percentage": 100}},
            {"name": "slow", "match": [{"headers": {"end-user": {"exact": "slow"}}}],
             "delay": {"fixed_delay": format!("{DELAY_MS}ms"), "percentage": 100}}]))},
        "mirror": {"version": 1, "virtual_hosts": vhost(json!([
            {"name": "all", "mirrors": [{"destination": destination("v3"), "percentage": 100}]}]))},
    })
}

struct Reviews {
    v1: EchoServer,
    v2: EchoServer,
    v3: EchoServer,
}

impl Reviews {
    async fn start() -> Reviews {
        Reviews {
            v1: EchoServer::start("reviews", "v1").await,
            v2: EchoServer::start("reviews", "v2").await,
            v3: EchoServer::start("reviews", "v3").await,
        }
    }

    fn clusters(&self) -> Vec<Value> {
        vec![
            static_cluster(&cluster("v1"), self.v1.port(), false),
            static_cluster(&cluster("v2"), self.v2.port(), false),
            static_cluster(&cluster("v3"), self.v3.port(), false),
        ]
    }
}

fn chain_filter(config: &Value) -> Value {
    let module = module_path("switchyard").unwrap_or_else(|e| panic!("{e}"));
    wasm_http_filter("switchyard.http", &module, "switchyard", "switchyard", &config.to_string())
}

async fn chain_envoy(config: Value, reviews: &Reviews) -> Envoy {
    let listener = http_listener(
        "main",
        route_config(vec![route_by_cluster_header("x-switchyard-cluster")]),
        vec![chain_filter(&config)],
    );
    Envoy::builder(bootstrap(vec![listener], reviews.clusters()))
        .component_log_level("wasm:debug")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Reply {
    status: u16,
    version: Option<String>,
    body: String,
    egress_denied: bool,
}

async fn get(envoy: &Envoy, host: &str, user: Option<&str>) -> Reply {
    let mut request = http_client().get(format!("{}/reviews/0", envoy.listener_url("main"))).header("host", host);
    if let Some(user) = user {
        request = request.header("end-user", user);
    }
    let reply = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    let status = reply.status().as_u16();
    let version = reply.headers().get("x-echo-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let egress_denied = reply.headers().get("x-switchyard-egress").is_some_and(|v| v == "denied");
    let body = reply.text().await.unwrap_or_default();
    Reply { status, version, body, egress_denied }
}

#[tokio::test]
async fn one_filter_runs_egress_routing_fault_and_mirror_in_chain_order() {
    let reviews = Reviews::start().await;
    let envoy = chain_envoy(bookinfo_chain(), &reviews).await;

    for _ in 0..4 {
        let reply = get(&envoy, "reviews", None).await;
        assert_eq!((reply.status, reply.version.as_deref()), (200, Some("v1")), "{}", reply.body);
        let reply = get(&envoy, "reviews", Some("jason")).await;
        assert_eq!((reply.status, reply.version.as_deref()), (200, Some("v2")), "{}", reply.body);
    }
    // The fault stage answers after routing chose a destination, before
    // anything reaches it, and the request is not copied.
    let aborted = get(&envoy, "reviews", Some("tester")).await;
    assert_eq!((aborted.status, aborted.body.as_str()), (503, "fault filter abort"));
    // Egress refuses a host it does not know before routing sees it.
    let denied = get(&envoy, "payments.example.com", Some("jason")).await;
    assert_eq!(denied.status, 502);
    assert!(denied.egress_denied, "the egress stage answers a denied host");

    // 8 routed requests, each copied once to v3 with Envoy's shadow authority.
    let shadows = reviews.v3.wait_for_requests(8, Duration::from_secs(5)).await;
    assert!(shadows.iter().all(|s| s.authority() == Some("reviews-shadow")), "{shadows:?}");
    // Without the routing stage's cluster header (a route that obeys it
    // strips it from the primary, as the examples' do): it names a cluster
    // of this proxy, nothing the shadow's service should see.
    assert!(shadows.iter().all(|s| s.header("x-switchyard-cluster").is_none()), "{shadows:?}");
    assert_eq!((reviews.v1.requests(), reviews.v2.requests()), (4, 4));
    let stats = envoy.stats().await;
    let counter = |name: &str| stats.get(&format!("wasmcustom.{name}")).copied().unwrap_or(0);
    assert_eq!(counter("switchyard_egress_http_denied_total"), 1);
    assert_eq!(counter("switchyard_egress_http_allowed_total"), 9);
    // The denied request never reached routing; tester's was routed, then aborted.
    assert_eq!(counter("switchyard_routing_route_matched_total.reviews.jason"), 4);
    assert_eq!(counter("switchyard_routing_route_matched_total.reviews.default"), 5);
    assert_eq!(counter("switchyard_fault_aborts_injected_total"), 1);
    assert_eq!(counter("switchyard_mirror_mirrored_total"), 8);
    assert_eq!(reviews.v3.requests(), 8, "the aborted request must not be copied");
}

/// A POST written by hand, its body in chunks `gap` apart, so Envoy hands
/// the filter several body callbacks. Returns the status and when the whole
/// response had arrived.
async fn chunked_post(envoy: &Envoy, user: &str, chunks: &[&str], gap: Duration) -> (u16, String) {
    let port = envoy.listener_port("main");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let head = format!(
        "POST /reviews/0 HTTP/1.1\r\nhost: reviews\r\nend-user: {user}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    for chunk in chunks {
        tokio::time::sleep(gap).await;
        let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
        stream.write_all(framed.as_bytes()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap_or_else(|e| panic!("{e}"));
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("no response within 10 s"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_delayed_request_keeps_its_body_and_its_shadow_until_the_delay_ends() {
    let reviews = Reviews::start().await;
    let envoy = chain_envoy(bookinfo_chain(), &reviews).await;
    let chunks = ["first-", "second-", "third"];

    // Without a delay the body streams through and the copy gets all of it.
    let (status, text) = chunked_post(&envoy, "anyone", &chunks, Duration::from_millis(30)).await;
    assert_eq!(status, 200, "{text}");
    let shadow = reviews.v3.wait_for_requests(1, Duration::from_secs(5)).await;
    assert_eq!(shadow[0].body_str(), "first-second-third");
    assert_eq!(reviews.v1.received()[0].body_str(), "first-second-third");
    reviews.v1.reset();
    reviews.v3.reset();

    // A delayed request: its body arrives during the delay and must not let
    // the request go early; upstream and shadow see it whole, after the delay.
    let started = Instant::now();
    let (status, text) = chunked_post(&envoy, "slow", &chunks, Duration::from_millis(30)).await;
    let took = started.elapsed();
    assert_eq!(status, 200, "{text}");
    assert!(took >= Duration::from_millis(DELAY_MS), "the delay was cut short by the body: {took:?}");
    let upstream = reviews.v1.received();
    assert_eq!(upstream.len(), 1);
    assert_eq!(upstream[0].body_str(), "first-second-third");
    assert!(upstream[0].at.duration_since(started) >= Duration::from_millis(DELAY_MS));
    let shadow = reviews.v3.wait_for_requests(1, Duration::from_secs(5)).await;
    assert_eq!(shadow[0].body_str(), "first-second-third", "the copy of a delayed request must be whole");
    assert!(
        shadow[0].at.duration_since(started) >= Duration::from_millis(DELAY_MS),
        "a delayed request's copy waits for the delay, as Envoy's router would mirror it then"
    );
    assert_eq!(envoy.counter("wasmcustom.switchyard_fault_delays_injected_total").await, 1);
}

#[tokio::test]
async fn a_config_with_routing_only_runs_routing_only() {
    let reviews = Reviews::start().await;
    let mut config = bookinfo_chain();
    for section in ["egress", "fault", "mirror"] {
        config.as_object_mut().map(|c| c.remove(section));
    }
    let envoy = chain_envoy(config, &reviews).await;
    assert_eq!(get(&envoy, "reviews", Some("jason")).await.version.as_deref(), Some("v2"));
    // Faults and egress are not there: tester reaches v1, unknown hosts are
    // not the routing stage's business (Envoy's cluster_header route says 503).
    assert_eq!(get(&envoy, "reviews", Some("tester")).await.version.as_deref(), Some("v1"));
    assert!(!get(&envoy, "payments.example.com", None).await.egress_denied);
    let stats = envoy.stats().await;
    assert_eq!(stats.get("wasmcustom.switchyard_routing_requests_total"), Some(&3));
    for absent in ["fault_requests_total", "mirror_requests_total", "egress_http_allowed_total"] {
        assert!(!stats.contains_key(&format!("wasmcustom.switchyard_{absent}")), "{absent}: stage not configured");
    }
    assert_eq!(reviews.v3.requests(), 0);
}

#[tokio::test]
async fn a_bad_section_is_refused_naming_the_section_and_field() {
    let mut config = bookinfo_chain();
    config["fault"]["virtual_hosts"][0]["routes"][0]["abort"]["http_status"] = json!(99);
    let listener = http_listener("main", route_config(vec![]), vec![chain_filter(&config)]);
    let (status, log) =
        Envoy::start_expect_failure(bootstrap(vec![listener], vec![])).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!status.success(), "envoy must refuse the config");
    let reason = log
        .lines()
        .find(|line| line.contains("switchyard.http: rejected configuration:"))
        .unwrap_or_else(|| panic!("no rejection line in the log:\n{log}"));
    assert!(reason.contains("fault.virtual_hosts[0].routes[0].abort.http_status"), "{reason}");
}

/// The HTTP chain and the TLS egress filter share one VM per worker when
/// they load switchyard.wasm under one vm_id; the single modules need one
/// VM each.
#[tokio::test]
async fn the_http_chain_and_the_tls_filter_share_one_vm() {
    let reviews = Reviews::start().await;
    let egress = bookinfo_chain()["egress"].clone();
    let switchyard = module_path("switchyard").unwrap_or_else(|e| panic!("{e}"));
    let tls =
        wasm_network_filter("switchyard.egress-tls", &switchyard, "egress-tls", "switchyard", &egress.to_string());
    let http = http_listener(
        "main",
        route_config(vec![route_by_cluster_header("x-switchyard-cluster")]),
        vec![chain_filter(&bookinfo_chain())],
    );
    let tls_listener = tcp_proxy_listener("tls", &cluster("v1"), vec![tls], true);
    let envoy = Envoy::builder(bootstrap(vec![http, tls_listener], reviews.clusters()))
        .concurrency(2)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&envoy, "reviews", Some("jason")).await.version.as_deref(), Some("v2"));

    // A TLS client with an unknown SNI is cut off by the same module.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", envoy.listener_port("tls")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(&switchyard_tests::tls::client_hello("payments.example.com"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the connection must be closed: {read:?}");
    envoy.wait_for_counter("wasmcustom.switchyard_egress_tls_denied_total", 1, Duration::from_secs(5)).await;

    let one_module = envoy.stat("wasm.envoy.wasm.runtime.v8.active").await;
    let singles = single_modules_envoy(&reviews).await;
    let four_modules = singles.stat("wasm.envoy.wasm.runtime.v8.active").await;
    let (Some(one_module), Some(four_modules)) = (one_module, four_modules) else {
        panic!("no VM gauge: {:?} / {:?}", one_module, four_modules)
    };
    assert!(
        one_module * 4 <= four_modules + 4,
        "one module's VMs ({one_module}) must be about a quarter of five modules' ({four_modules})"
    );
}

async fn single_modules_envoy(reviews: &Reviews) -> Envoy {
    let config = bookinfo_chain();
    let filters = ["egress", "routing", "fault", "mirror"]
        .iter()
        .map(|name| {
            let module = module_path(name).unwrap_or_else(|e| panic!("{e}"));
            let vm = format!("switchyard-{name}");
            wasm_http_filter(&format!("switchyard.{name}"), &module, name, &vm, &config[name].to_string())
        })
        .collect();
    let egress = module_path("egress").unwrap_or_else(|e| panic!("{e}"));
    let tls = wasm_network_filter(
        "switchyard.egress-tls",
        &egress,
        "egress-tls",
        "switchyard-egress",
        &config["egress"].to_string(),
    );
    let http = http_listener("main", route_config(vec![route_by_cluster_header("x-switchyard-cluster")]), filters);
    let tls_listener = tcp_proxy_listener("tls", &cluster("v1"), vec![tls], true);
    Envoy::builder(bootstrap(vec![http, tls_listener], reviews.clusters()))
        .concurrency(2)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
