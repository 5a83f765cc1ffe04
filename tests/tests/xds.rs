//! xds-ext serving real Envoys over ECDS: per-workload configs from Istio
//! YAML, live edits under load, bad edits, NACKs, xds-ext restarts, and the
//! bookinfo flows. The real `xds-ext` binary runs on kernel-chosen ports with
//! a temp config directory; every Envoy gets its filters only from it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::Value;
use switchyard_tests::bootstrap::{ecds_config_source, module_path, static_cluster};
use switchyard_tests::sidecar::{reviews_to, routing_sidecar, send, versions, Reviews, ROUTING};
use switchyard_tests::xds_ext::{bookinfo, write, XdsExt};
use switchyard_tests::{http_client, Envoy};

/// An Envoy presenting itself as workload `labels` in `default`, its
/// routing filter from xds-ext at `xds_port`.
async fn sidecar(node_id: &str, labels: &[(&str, &str)], xds_port: u16, reviews: &Reviews) -> Envoy {
    Envoy::start(sidecar_bootstrap(node_id, labels, xds_port, reviews)).await.unwrap_or_else(|e| panic!("{e}"))
}

fn sidecar_bootstrap(node_id: &str, labels: &[(&str, &str)], xds_port: u16, reviews: &Reviews) -> Value {
    routing_sidecar(node_id, labels, static_cluster("xds-ext", xds_port, true), reviews)
}

/// The routing filter's ECDS source in `bootstrap` becomes a delta stream.
fn use_delta(bootstrap: &mut Value) {
    let filter = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0];
    filter["config_discovery"]["config_source"] = ecds_config_source("xds-ext", true);
}

fn all(versions: &[String], version: &str) -> bool {
    versions.iter().all(|v| v == version)
}

/// Polls until `n` requests all answer from `version`; panics after `timeout`.
async fn wait_for_version(envoy: &Envoy, version: &str, headers: &[(&str, &str)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = versions(envoy, 8, headers).await;
        if all(&seen, version) {
            return;
        }
        assert!(Instant::now() < deadline, "still {seen:?}, wanted {version} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const REVIEWS_BY_SOURCE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - name: from-productpage
    match:
    - sourceLabels:
        app: productpage
    route:
    - destination:
        host: reviews
        subset: v2
  - name: default
    route:
    - destination:
        host: reviews
        subset: v1
";

#[tokio::test]
async fn two_workloads_get_their_own_config_and_route_the_same_request_differently() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", REVIEWS_BY_SOURCE)]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let productpage = sidecar("productpage-v1", &[("app", "productpage"), ("version", "v1")], xds.grpc_port, &reviews);
    // One state-of-the-world stream, one delta stream.
    let mut ratings =
        sidecar_bootstrap("ratings-v1", &[("app", "ratings"), ("version", "v1")], xds.grpc_port, &reviews);
    use_delta(&mut ratings);
    let (productpage, ratings) = tokio::join!(productpage, Envoy::start(ratings));
    let ratings = ratings.unwrap_or_else(|e| panic!("{e}"));

    assert!(all(&versions(&productpage, 50, &[]).await, "v2"));
    assert!(all(&versions(&ratings, 50, &[]).await, "v1"));
    let a = xds.wait_status("productpage-v1", ROUTING, "SYNCED").await;
    let b = xds.wait_status("ratings-v1", ROUTING, "SYNCED").await;
    assert_ne!(a["acked"], b["acked"], "different workloads, different content versions");
    let protocols: Vec<Value> =
        xds.json("/debug/proxies").await.as_array().into_iter().flatten().map(|p| p["protocol"].clone()).collect();
    assert!(protocols.contains(&"sotw".into()) && protocols.contains(&"delta".into()), "{protocols:?}");
    assert_eq!(
        productpage.admin_get("/stats?filter=routing.version_text").await.unwrap_or_default().trim(),
        format!("extension_config_discovery.http_filter.switchyard.routing.version_text: {}", a["acked"])
    );
}

#[tokio::test]
async fn an_edit_changes_behaviour_within_a_second_without_failing_a_request_under_load() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v1"))]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let envoy = sidecar("productpage-v1", &[("app", "productpage")], xds.grpc_port, &reviews).await;
    assert!(all(&versions(&envoy, 20, &[]).await, "v1"));
    let envoy_pid = envoy.pid();

    // Load: 8 clients in a loop until stopped, recording every answer.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let first_v3 = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let url = envoy.listener_url("main");
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, failures, sent, first_v3, url) =
                (stop.clone(), failures.clone(), sent.clone(), first_v3.clone(), url.clone());
            tokio::spawn(async move {
                let client = http_client();
                while !stop.load(Ordering::Relaxed) {
                    let reply = send(&client, &url, "/reviews/0", &[]).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if reply.status != 200 {
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("{}: {}", reply.status, reply.body));
                    } else if reply.version == "v3" {
                        first_v3.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(Instant::now);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let edited = Instant::now();
    write(config.path(), "reviews.yaml", &reviews_to("v3"));
    wait_for_version(&envoy, "v3", &[], Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    join_all(load).await;

    let switched = first_v3.lock().unwrap_or_else(|e| e.into_inner()).unwrap_or_else(|| panic!("no v3 under load"));
    let took = switched.duration_since(edited);
    eprintln!("edit to first v3 answer: {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?} from the edit to the first v3 answer");
    let failures = failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        sent.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 100, "the load loop hardly ran");
    assert_eq!(envoy.pid(), envoy_pid);
    assert_eq!(envoy.counter("extension_config_discovery.http_filter.switchyard.routing.update_success").await, 2);
}

#[tokio::test]
async fn a_bad_edit_keeps_the_last_good_config_names_the_problem_and_a_fix_recovers() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v2"))]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let envoy = sidecar("productpage-v1", &[("app", "productpage")], xds.grpc_port, &reviews).await;
    assert!(all(&versions(&envoy, 20, &[]).await, "v2"));
    let synced = xds.wait_status("productpage-v1", ROUTING, "SYNCED").await;

    let bad = format!("{}    timeout: banana\n", reviews_to("v3"));
    write(config.path(), "reviews.yaml", &bad);
    let deadline = Instant::now() + Duration::from_secs(5);
    while xds.metric("xds_ext_config_errors").await < 1.0 {
        assert!(Instant::now() < deadline, "no config error reported:\n{}", xds.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(all(&versions(&envoy, 50, &[]).await, "v2"), "the last good config keeps serving");
    assert_eq!(xds.resource("productpage-v1", ROUTING).await["acked"], synced["acked"]);

    let metrics = xds.get("/metrics").await.unwrap_or_default();
    let problem = metrics.lines().find(|l| l.starts_with("xds_ext_config_problem{")).unwrap_or_default();
    assert!(problem.contains("reviews.yaml") && problem.contains("severity=\"error\""), "{metrics}");
    let status = xds.status_cli();
    assert!(status.contains("config: 1 error(s)") && status.contains("reviews.yaml"), "{status}");
    assert!(xds.log().lines().any(|l| l.contains("config error") && l.contains("reviews.yaml")), "{}", xds.log());
    let problems = xds.json("/debug/config").await;
    assert!(problems["problems"][0]["file"].as_str().unwrap_or_default().ends_with("reviews.yaml"), "{problems}");

    write(config.path(), "reviews.yaml", &reviews_to("v3"));
    wait_for_version(&envoy, "v3", &[], Duration::from_secs(3)).await;
    assert_eq!(xds.metric("xds_ext_config_errors").await, 0.0);
    xds.wait_status("productpage-v1", ROUTING, "SYNCED").await;
}

#[tokio::test]
async fn a_config_envoy_rejects_shows_nacked_with_envoys_error_and_is_not_resent() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v2"))]);
    // A module directory whose routing.wasm is not wasm: Envoy refuses the plugin.
    let modules = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(modules.path().join("routing.wasm"), b"not a wasm module").unwrap_or_else(|e| panic!("{e}"));
    let xds = XdsExt::start_with_modules(config.path(), "127.0.0.1:0", modules.path()).await;
    let envoy = sidecar("productpage-v1", &[("app", "productpage")], xds.grpc_port, &reviews).await;

    let entry = xds.wait_status("productpage-v1", ROUTING, "NACKED").await;
    let error = entry["nack"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("Unable to create Wasm plugin"), "{entry}");
    let status = xds.status_cli();
    assert!(status.contains("NACKED") && status.contains(&error), "{status}");
    assert!(xds.log().contains("NACK from productpage-v1"), "{}", xds.log());

    let rejected = "extension_config_discovery.http_filter.switchyard.routing.update_rejected";
    let pushes = xds.metric("xds_ext_pushes_total").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(envoy.counter(rejected).await, 1, "the rejected config was sent again");
    assert_eq!(xds.metric("xds_ext_pushes_total").await, pushes);
    assert_eq!(xds.metric("xds_ext_nacks_total").await, 1.0);

    // The same config again (an unrelated edit): still not re-sent.
    write(config.path(), "unrelated.yaml", "# nothing\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(envoy.counter(rejected).await, 1);
    assert_eq!(xds.resource("productpage-v1", ROUTING).await["status"], "NACKED");
}

#[tokio::test]
async fn envoy_keeps_serving_while_xds_ext_is_down_and_resyncs_after_a_restart() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v2"))]);
    let mut xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let port = xds.grpc_port;
    let mut bootstrap = sidecar_bootstrap("productpage-v1", &[("app", "productpage")], port, &reviews);
    // Delta: the reconnecting Envoy names the versions it runs.
    use_delta(&mut bootstrap);
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(all(&versions(&envoy, 20, &[]).await, "v2"));

    xds.kill();
    let connected = "extension_config_discovery.http_filter.switchyard.routing.control_plane.connected_state";
    let deadline = Instant::now() + Duration::from_secs(5);
    while envoy.counter(connected).await != 0 {
        assert!(Instant::now() < deadline, "envoy never noticed xds-ext was gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(all(&versions(&envoy, 50, &[]).await, "v2"), "envoy keeps the last config");

    write(config.path(), "reviews.yaml", &reviews_to("v3"));
    let grpc = format!("127.0.0.1:{port}");
    let xds = XdsExt::start(config.path(), &grpc).await;
    wait_for_version(&envoy, "v3", &[], Duration::from_secs(5)).await;
    xds.wait_status("productpage-v1", ROUTING, "SYNCED").await;
}

#[tokio::test]
async fn bookinfo_request_routing_traffic_shifting_and_timeout_from_istio_yaml() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &bookinfo("virtual-service-reviews-test-v2.yaml"))]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let envoy = sidecar("productpage-v1", &[("app", "productpage"), ("version", "v1")], xds.grpc_port, &reviews).await;

    // Request routing: jason sees reviews v2, everyone else v1.
    assert!(all(&versions(&envoy, 100, &[("end-user", "jason")]).await, "v2"));
    assert!(all(&versions(&envoy, 100, &[]).await, "v1"));
    assert!(all(&versions(&envoy, 100, &[("end-user", "alice")]).await, "v1"));

    // Traffic shifting: 50/50 between v1 and v3.
    write(config.path(), "reviews.yaml", &bookinfo("virtual-service-reviews-50-v3.yaml"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !versions(&envoy, 16, &[]).await.iter().any(|v| v == "v3") {
        assert!(Instant::now() < deadline, "no v3 after the 50/50 edit");
    }
    let seen = versions(&envoy, 1000, &[]).await;
    let v3 = seen.iter().filter(|v| *v == "v3").count() as f64 / seen.len() as f64;
    assert!(seen.iter().all(|v| v == "v1" || v == "v3"), "only v1 and v3 may answer");
    assert!((0.43..=0.57).contains(&v3), "v3 share {v3}");

    // Request timeouts: reviews v2 with a 0.5 s timeout; a 2 s upstream gets 504.
    write(config.path(), "reviews.yaml", &bookinfo("virtual-service-reviews-timeout.yaml"));
    wait_for_version(&envoy, "v2", &[], Duration::from_secs(3)).await;
    let started = Instant::now();
    let reply = send(&http_client(), &envoy.listener_url("main"), "/reviews/0?delay_ms=2000", &[]).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.body, "upstream request timeout");
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(900), "took {took:?}");
}

#[tokio::test]
async fn remote_modules_are_fetched_from_xds_ext_and_checked_by_sha256() {
    let reviews = Reviews::start().await;
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v3"))]);
    let routing = module_path("routing").unwrap_or_else(|e| panic!("{e}"));
    let modules = routing.parent().unwrap_or_else(|| Path::new("."));
    let remote = ["--module-base-url", "http://xds-ext/modules", "--module-cluster", "xds-ext-modules"];
    let xds = XdsExt::start_with_args(config.path(), "127.0.0.1:0", modules, &remote).await;

    let mut bootstrap = sidecar_bootstrap("productpage-v1", &[("app", "productpage")], xds.grpc_port, &reviews);
    let module_cluster = static_cluster("xds-ext-modules", xds.admin_port, false);
    if let Some(clusters) = bootstrap["static_resources"]["clusters"].as_array_mut() {
        clusters.push(module_cluster);
    }
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));

    assert!(all(&versions(&envoy, 20, &[]).await, "v3"));
    assert!(envoy.counter("cluster.xds-ext-modules.upstream_rq_200").await >= 1, "the module came from xds-ext");
    let served = http_client()
        .get(format!("http://{}/modules/routing.wasm", xds.admin()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(served.status().as_u16(), 200);
    let bytes = served.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bytes.as_ref(), std::fs::read(&routing).unwrap_or_else(|e| panic!("{e}")).as_slice());
}
