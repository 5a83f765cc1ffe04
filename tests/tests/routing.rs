//! The routing filter in a real Envoy: Istio's bookinfo request-routing,
//! traffic-shifting, timeout and retry flows, ingress-style uri rules, header
//! operations, rewrite, redirect, and a client trying to steer by itself.
//! Upstreams answer with their version; every response is checked.

use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    bootstrap, http_listener, module_path, route_by_cluster_header, route_config, static_cluster,
    trust_loopback_clients, wasm_http_filter,
};
use switchyard_tests::{http_client, EchoServer, Envoy};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn cluster(subset: &str) -> String {
    format!("outbound|9080|{subset}|{REVIEWS}")
}

/// Envoy with the routing filter (`config`) before a route that reads the
/// filter's cluster header, and one cluster per `(name, upstream)`.
async fn routing_envoy(config: Value, upstreams: &[(String, &EchoServer)]) -> Envoy {
    routing_envoy_with_routes(config, vec![], upstreams).await
}

/// [`routing_envoy`] with Envoy `routes` before the cluster-header route.
async fn routing_envoy_with_routes(
    config: Value,
    mut routes: Vec<Value>,
    upstreams: &[(String, &EchoServer)],
) -> Envoy {
    let module = module_path("routing").unwrap_or_else(|e| panic!("{e}"));
    let filter = wasm_http_filter("switchyard.routing", &module, "routing", "switchyard-routing", &config.to_string());
    let mut route = route_by_cluster_header("x-switchyard-cluster");
    // Envoy's own formatter reads the filter state the routing filter leaves
    // for later filters, and hands it to the upstream.
    route["request_headers_to_add"] =
        json!([{"header": {"key": "x-seen-route", "value": "%FILTER_STATE(wasm.switchyard.route:PLAIN)%"}}]);
    routes.push(route);
    let mut listener = http_listener("main", route_config(routes), vec![filter]);
    // Room for the oversized-headers test (Envoy's defaults: 60 KiB, 100 headers).
    let manager = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    manager["max_request_headers_kb"] = json!(1024);
    manager["common_http_protocol_options"] = json!({"max_headers_count": 200});
    // Envoy honours client `x-envoy-*` headers only from trusted clients:
    // trusting loopback makes the filter's stripping the only defence, so the
    // test of it means something.
    trust_loopback_clients(&mut listener);
    let clusters = upstreams.iter().map(|(name, echo)| static_cluster(name, echo.port(), false)).collect();
    Envoy::start(bootstrap(vec![listener], clusters)).await.unwrap_or_else(|e| panic!("{e}"))
}

fn reviews_vhost(routes: Value) -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": "reviews", "domains": ["reviews", REVIEWS], "routes": routes}]})
}

struct Reply {
    status: u16,
    version: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

async fn send(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = http_client().get(format!("{}{path}", envoy.listener_url("main"))).header("host", "reviews");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("request through envoy: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let version = headers.get("x-echo-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    Reply { status, version, headers, body }
}

/// Versions answering `n` requests, sent 16 at a time.
async fn versions(envoy: &Envoy, n: usize, headers: &[(&str, &str)]) -> Vec<String> {
    let mut all = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        let replies = join_all(batch.iter().map(|_| send(envoy, "/reviews/0", headers))).await;
        for reply in replies {
            assert_eq!(reply.status, 200, "{}", reply.body);
            all.push(reply.version.unwrap_or_default());
        }
    }
    all
}

async fn reviews_v1_v2_v3() -> (EchoServer, EchoServer, EchoServer) {
    (
        EchoServer::start("reviews", "v1").await,
        EchoServer::start("reviews", "v2").await,
        EchoServer::start("reviews", "v3").await,
    )
}

fn destination(subset: &str) -> Value {
    json!({"host": REVIEWS, "subset": subset, "port": 9080})
}

#[tokio::test]
async fn jason_is_routed_to_reviews_v2_and_everyone_else_to_v1() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(json!([
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": destination("v2")}]},
        {"name": "default", "route": [{"destination": destination("v1")}]}]));
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;

    let jason = versions(&envoy, 200, &[("end-user", "jason")]).await;
    let anonymous = versions(&envoy, 200, &[]).await;
    let other_user = versions(&envoy, 200, &[("end-user", "alice")]).await;

    assert!(jason.iter().all(|v| v == "v2"), "jason: {jason:?}");
    assert!(anonymous.iter().all(|v| v == "v1"), "no end-user: {anonymous:?}");
    assert!(other_user.iter().all(|v| v == "v1"), "alice: {other_user:?}");
    assert_eq!(v3.requests(), 0);
    assert_eq!(envoy.counter("wasmcustom.switchyard_routing_route_matched_total.reviews.jason").await, 200);
}

#[tokio::test]
async fn weights_shift_half_the_traffic_to_v3_then_all_of_it() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let upstreams = [(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)];
    let fifty_fifty = reviews_vhost(json!([{"name": "shift", "route": [
        {"destination": destination("v1"), "weight": 50}, {"destination": destination("v3"), "weight": 50}]}]));
    let envoy = routing_envoy(fifty_fifty, &upstreams).await;

    let seen = versions(&envoy, 2000, &[]).await;
    let v3_share = seen.iter().filter(|v| *v == "v3").count() as f64 / seen.len() as f64;
    assert!(seen.iter().all(|v| v == "v1" || v == "v3"), "only v1 and v3 may answer");
    assert!((0.45..=0.55).contains(&v3_share), "v3 share {v3_share} outside 45-55%");
    drop(envoy);

    let all_v3 = reviews_vhost(json!([{"name": "shift", "route": [
        {"destination": destination("v1"), "weight": 0}, {"destination": destination("v3"), "weight": 100}]}]));
    let envoy = routing_envoy(all_v3, &upstreams).await;
    let seen = versions(&envoy, 300, &[]).await;
    assert!(seen.iter().all(|v| v == "v3"), "{seen:?}");
}

#[tokio::test]
async fn a_half_second_timeout_turns_a_slow_v2_into_504() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(
        json!([{"name": "v2-timeout", "route": [{"destination": destination("v2")}], "timeout": "0.5s"}]),
    );
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;

    let started = Instant::now();
    let reply = send(&envoy, "/reviews/0?delay_ms=2000", &[]).await;
    let took = started.elapsed();

    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.body, "upstream request timeout");
    assert!(took >= Duration::from_millis(440) && took <= Duration::from_millis(560), "took {took:?}");
}

#[tokio::test]
async fn three_retry_attempts_ride_over_two_failures_and_one_does_not() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let upstreams = [(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)];
    let with_retries = |attempts: u32| {
        reviews_vhost(json!([{"name": "retry", "route": [{"destination": destination("v1")}],
            "retries": {"attempts": attempts, "retry_on": "5xx"}}]))
    };

    let envoy = routing_envoy(with_retries(3), &upstreams).await;
    let reply = send(&envoy, "/reviews/0?fail_times=2&fail_key=three", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(v1.requests(), 3, "two failures then a success");
    drop(envoy);

    v1.reset();
    let envoy = routing_envoy(with_retries(1), &upstreams).await;
    let reply = send(&envoy, "/reviews/0?fail_times=2&fail_key=one", &[]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(v1.requests(), 2, "the first try and one retry");
}

#[tokio::test]
async fn ingress_uri_rules_send_bookinfo_paths_to_productpage_and_the_rest_to_404() {
    let productpage = EchoServer::start("productpage", "v1").await;
    let config = json!({"version": 1, "virtual_hosts": [{"name": "bookinfo", "domains": ["*"], "routes": [
        {"name": "productpage", "match": [
            {"uri": {"exact": "/productpage"}}, {"uri": {"prefix": "/static"}}, {"uri": {"exact": "/login"}},
            {"uri": {"exact": "/logout"}}, {"uri": {"prefix": "/api/v1/products"}}],
         "route": [{"destination": {"host": "productpage", "port": 9080}}]}]}]});
    let envoy = routing_envoy(config, &[("outbound|9080||productpage".to_owned(), &productpage)]).await;

    for path in
        ["/productpage", "/static/css/style.css", "/login", "/api/v1/products/0/reviews", "/productpage?u=normal"]
    {
        let reply = send(&envoy, path, &[]).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.headers.get("x-echo-service").and_then(|v| v.to_str().ok()), Some("productpage"), "{path}");
    }
    for path in ["/", "/productpage/extra", "/admin", "/api/v2/products"] {
        assert_eq!(send(&envoy, path, &[]).await.status, 404, "{path}");
    }
    assert_eq!(productpage.requests(), 5);
}

#[tokio::test]
async fn header_operations_rewrite_and_redirect_apply_per_route() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(json!([
        {"name": "moved", "match": [{"uri": {"prefix": "/old"}}],
         "redirect": {"uri": "/reviews/new", "authority": "bookinfo.example", "redirect_code": 308}},
        {"name": "legacy", "match": [{"uri": {"prefix": "/legacy/"}}],
         "rewrite": {"uri": "/reviews/", "authority": "reviews-v2.internal"},
         "route": [{"destination": destination("v2")}]},
        {"name": "default", "route": [{"destination": destination("v1")}],
         "headers": {"request": {"set": {"x-route": "default"}, "add": {"x-added": "yes"}, "remove": ["x-secret"]},
                     "response": {"set": {"x-served-by": "switchyard"}, "remove": ["x-echo-service"]}}}]));
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;

    let no_follow = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build();
    let redirect = no_follow
        .unwrap_or_else(|e| panic!("{e}"))
        .get(format!("{}/old/thing", envoy.listener_url("main")))
        .header("host", "reviews")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(redirect.status().as_u16(), 308);
    assert_eq!(
        redirect.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("http://bookinfo.example/reviews/new")
    );

    let rewritten = send(&envoy, "/legacy/7?x=1", &[]).await;
    assert_eq!(rewritten.version.as_deref(), Some("v2"), "{}", rewritten.body);
    let echo: Value = serde_json::from_str(&rewritten.body).unwrap_or_else(|e| panic!("{e}: {}", rewritten.body));
    assert_eq!(echo["path"], "/reviews/7", "{echo}");
    assert_eq!(echo["headers"]["host"], "reviews-v2.internal", "{echo}");

    let plain = send(&envoy, "/reviews/1", &[("x-secret", "hunter2")]).await;
    let echo: Value = serde_json::from_str(&plain.body).unwrap_or_else(|e| panic!("{e}: {}", plain.body));
    assert_eq!(echo["headers"]["x-route"], "default");
    assert_eq!(echo["headers"]["x-added"], "yes");
    assert!(echo["headers"].get("x-secret").is_none(), "removed request header reached the upstream: {echo}");
    assert_eq!(plain.headers.get("x-served-by").and_then(|v| v.to_str().ok()), Some("switchyard"));
    assert!(plain.headers.get("x-echo-service").is_none(), "removed response header reached the client");
}

#[tokio::test]
async fn a_client_cannot_pick_the_cluster_timeout_or_retries_on_a_managed_host() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    // No timeout or retries on the route: only the filter's stripping stands
    // between the client's `x-envoy-*` headers and a router that trusts them.
    let config = reviews_vhost(json!([{"name": "default", "route": [{"destination": destination("v1")}]}]));
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;

    let steered = versions(&envoy, 50, &[("x-switchyard-cluster", &cluster("v3"))]).await;
    assert!(steered.iter().all(|v| v == "v1"), "{steered:?}");
    assert_eq!(v3.requests(), 0);

    let short_timeout = send(&envoy, "/reviews/0?delay_ms=400", &[("x-envoy-upstream-rq-timeout-ms", "100")]).await;
    assert_eq!(short_timeout.status, 200, "a client-sent timeout applied: {}", short_timeout.body);

    v1.reset();
    let retries = [("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")];
    let retried = send(&envoy, "/reviews/0?fail_times=1&fail_key=client-retry", &retries).await;
    assert_eq!(retried.status, 503, "client-sent retries applied: {}", retried.body);
    assert_eq!(v1.requests(), 1);
}

#[tokio::test]
async fn unmanaged_hosts_pass_untouched_but_a_client_cannot_pick_their_cluster() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(json!([{"name": "default", "route": [{"destination": destination("v1")}]}]));
    // `ratings` has a plain Envoy route; every other host goes by the
    // cluster header, as the mesh virtual host of examples/local/envoy.yaml.
    let ratings = json!({
        "match": {"prefix": "/", "headers": [{"name": ":authority", "string_match": {"exact": "ratings"}}]},
        "route": {"cluster": cluster("v1")},
    });
    let envoy = routing_envoy_with_routes(
        config,
        vec![ratings],
        &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)],
    )
    .await;
    let get = |host: &'static str| {
        let request = http_client()
            .get(format!("{}/other", envoy.listener_url("main")))
            .header("host", host)
            .header("x-switchyard-cluster", cluster("v3"))
            .header("x-custom", "kept");
        async move { request.send().await.unwrap_or_else(|e| panic!("{e}")) }
    };

    // A host without a Switchyard virtual host: the client's cluster header
    // is gone, so the cluster-header route finds no cluster.
    let steered = get("details").await;
    assert_eq!(steered.status().as_u16(), 503, "{:?}", steered.headers());
    assert_eq!(v3.requests(), 0, "the client picked the cluster of an unmanaged host");

    // Everything else about an unmanaged request passes untouched.
    let plain = get("ratings").await;
    assert_eq!(plain.status().as_u16(), 200);
    let echo: Value = serde_json::from_str(&plain.text().await.unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(echo["headers"]["x-custom"], "kept", "{echo}");
    assert!(echo["headers"].get("x-switchyard-cluster").is_none(), "{echo}");
    assert_eq!(envoy.counter("wasmcustom.switchyard_routing_unmanaged_total").await, 2);
}

#[tokio::test]
async fn the_matched_route_is_left_as_filter_state_for_later_filters() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(json!([
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": destination("v2")}]},
        {"name": "default", "route": [{"destination": destination("v1")}]}]));
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;

    let jason = send(&envoy, "/reviews/0", &[("end-user", "jason")]).await;
    let echo: Value = serde_json::from_str(&jason.body).unwrap_or_else(|e| panic!("{e}: {}", jason.body));

    assert_eq!(echo["headers"]["x-seen-route"], "reviews/jason", "{echo}");
}

#[tokio::test]
async fn odd_request_data_never_breaks_the_filter() {
    let (v1, v2, v3) = reviews_v1_v2_v3().await;
    let config = reviews_vhost(json!([
        {"name": "jason", "match": [{"headers": {"end-user": {"regex": "ja.*"}}}], "route": [{"destination": destination("v2")}]},
        {"name": "default", "route": [{"destination": destination("v1")}]}]));
    let envoy = routing_envoy(config, &[(cluster("v1"), &v1), (cluster("v2"), &v2), (cluster("v3"), &v3)]).await;
    let url = format!("{}/reviews/0", envoy.listener_url("main"));

    // A header value that is not UTF-8 (obs-text bytes, legal in HTTP/1.1).
    let latin1 = reqwest::header::HeaderValue::from_bytes(b"ja\xe9son").unwrap_or_else(|e| panic!("{e}"));
    let reply = http_client().get(&url).header("host", "reviews").header("end-user", latin1).send().await;
    let reply = reply.unwrap_or_else(|e| panic!("{e}"));
    assert!(reply.status().is_success() || reply.status().is_client_error(), "{}", reply.status());

    // A hundred 8 KiB headers.
    let big = "x".repeat(8 * 1024);
    let mut request = http_client().get(&url).header("host", "reviews").header("end-user", "jason");
    for i in 0..100 {
        request = request.header(format!("x-bulk-{i}"), &big);
    }
    let reply = request.send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.status().as_u16(), 200, "{:?}", reply.headers());
    assert_eq!(reply.headers().get("x-echo-version").and_then(|v| v.to_str().ok()), Some("v2"));

    // The filter is still there and sane afterwards.
    assert_eq!(send(&envoy, "/reviews/0", &[("end-user", "jason")]).await.version.as_deref(), Some("v2"));
    assert!(!envoy.log().contains("panic"), "{}", envoy.log_tail(30));
}
