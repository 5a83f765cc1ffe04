//! Control-plane loss, with the sidecar of `every_filter` and a real
//! `xds-ext serve`:
//! - xds-ext SIGKILLed under a steady load: no request fails, Envoy goes on
//!   serving the last config; restarted on the same port with the same
//!   policy, it re-syncs without sending a config (Envoy reconnects naming
//!   the version it runs) and Envoy applies nothing new;
//! - an Envoy started while xds-ext is down runs, once its
//!   `initial_fetch_timeout` has passed, each filter's declared default
//!   (`bootstrap::default_http_config`): the combined filter and the egress
//!   filter fail closed (403), routing, fault and mirror fail open (Envoy's
//!   own route answers); when xds-ext comes up the policy takes over.
//!
//! About 15 s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::bootstrap::ecds_http_filter_with_default;
use switchyard_tests::every_filter::{
    bounded, chain_bootstrap, registry_only_letting_out, updates_applied, wasm_failure_stats, ChainSidecar, Upstreams,
    CLUSTER_HEADER, EVERY_FILTER, NODE_ID, REVIEWS_V1,
};
use switchyard_tests::http_client;
use switchyard_tests::xds_ext::XdsExt;
use switchyard_tests::Envoy;

const POLICY_FILE: &str = "policy.yaml";
const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: reviews
        subset: v2
  - route:
    - destination:
        host: reviews
        subset: v3
---
";

/// The routes, and REGISTRY_ONLY letting `alpha.example.com` out.
fn policy() -> String {
    format!("{ROUTES}{}", registry_only_letting_out("alpha", "alpha.example.com"))
}

const RATE: u64 = 100;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The four kinds of request, each with the answer the policy gives.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// reviews: v3 (the default rule).
    Reviews,
    /// reviews as jason: v2.
    Jason,
    /// alpha.example.com, let out by its ServiceEntry.
    Allowed,
    /// beta.example.com: denied by REGISTRY_ONLY (502, `x-switchyard-egress: denied`).
    Denied,
}

/// What came back: status, `x-echo-service`, `x-echo-version`, `x-switchyard-egress`.
type Answer = (u16, String, String, String);

async fn send(client: &reqwest::Client, url: &str, probe: Probe, seq: u64) -> Result<Answer, String> {
    let request = match probe {
        Probe::Reviews => client.get(format!("{url}/r/{seq}")).header("host", "reviews:9080"),
        Probe::Jason => client.get(format!("{url}/j/{seq}")).header("host", "reviews:9080").header("end-user", "jason"),
        Probe::Allowed => client.get(format!("{url}/a/{seq}")).header("host", "alpha.example.com"),
        Probe::Denied => client.get(format!("{url}/d/{seq}")).header("host", "beta.example.com"),
    };
    let response = request.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| format!("no response: {e}"))?;
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    Ok((response.status().as_u16(), header("x-echo-service"), header("x-echo-version"), header("x-switchyard-egress")))
}

/// Whether `answer` is what the policy gives `probe`.
fn as_policy_says(probe: Probe, answer: &Answer) -> bool {
    let (status, service, version, egress) = answer;
    match probe {
        Probe::Reviews => *status == 200 && service == "reviews" && version == "v3",
        Probe::Jason => *status == 200 && service == "reviews" && version == "v2",
        Probe::Allowed => *status == 200 && service == "external",
        Probe::Denied => *status == 502 && egress == "denied",
    }
}

/// Requests answered, and every answer that was not the policy's.
type Tally = Arc<Mutex<(u64, Vec<String>)>>;

/// An open-loop load of the four probes in turn until `stop` fires.
fn start_load(url: String, mut stop: tokio::sync::oneshot::Receiver<()>) -> (tokio::task::JoinHandle<()>, Tally) {
    let seen: Tally = Arc::new(Mutex::new((0, Vec::new())));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let client = http_client();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        let mut in_flight = Vec::new();
        for seq in 0.. {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
            }
            let probe = [Probe::Reviews, Probe::Jason, Probe::Allowed, Probe::Denied][(seq % 4) as usize];
            let (client, url, record) = (client.clone(), url.clone(), record.clone());
            in_flight.push(tokio::spawn(async move {
                let answer = send(&client, &url, probe, seq).await;
                let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
                seen.0 += 1;
                match answer {
                    Ok(answer) if as_policy_says(probe, &answer) => {}
                    other => seen.1.push(format!("{probe:?} #{seq}: {other:?}")),
                }
            }));
        }
        futures::future::join_all(in_flight).await;
    });
    (task, seen)
}

async fn connected(envoy: &Envoy, resource: &str) -> u64 {
    envoy.counter(&format!("extension_config_discovery.http_filter.{resource}.control_plane.connected_state")).await
}

async fn wait_connected(envoy: &Envoy, resource: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while connected(envoy, resource).await != want {
        assert!(Instant::now() < deadline, "{resource}: connected_state never became {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn xds_ext_killed_under_load_costs_no_request_and_its_restart_sends_nothing_new() {
    let resources = ["switchyard.http"];
    let mut sidecar = ChainSidecar::start(&resources, &[(POLICY_FILE, &policy())]).await;
    let port = sidecar.xds.grpc_port;
    let version = sidecar.xds.resource(NODE_ID, resources[0]).await["acked"].clone();
    assert!(version.as_str().is_some_and(|v| !v.is_empty()), "no version served: {version}");

    let (stop, stopped) = tokio::sync::oneshot::channel();
    let (load, seen) = start_load(sidecar.url(), stopped);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = sidecar.updates_applied().await;

    sidecar.xds.kill();
    wait_connected(&sidecar.envoy, resources[0], 0).await;
    // Envoy runs on its last config while nobody answers its reconnects.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let xds = XdsExt::start(sidecar.config.path(), &format!("127.0.0.1:{port}")).await;
    wait_connected(&sidecar.envoy, resources[0], 1).await;
    let entry = xds.wait_status(NODE_ID, resources[0], "SYNCED").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    bounded("the load's last requests", REQUEST_TIMEOUT * 2, load).await.unwrap_or_else(|e| panic!("{e}"));

    let (answered, wrong) = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(answered >= RATE * 3, "only {answered} requests sent");
    assert!(wrong.is_empty(), "{} of {answered} answers not the policy's: {wrong:#?}\n{}", wrong.len(), sidecar.logs());
    assert_eq!(entry["acked"], version, "the restarted xds-ext sees Envoy run the version it had: {entry}");
    assert_eq!(entry["desired"], version, "{entry}");
    assert_eq!(xds.metric("xds_ext_pushes_total").await, 0.0, "the restart re-sent the config\n{}", xds.log());
    assert_eq!(sidecar.updates_applied().await, applied, "Envoy applied a config after the restart");
    let failures: Vec<_> = wasm_failure_stats(&sidecar.envoy).await.into_iter().filter(|(_, v)| *v > 0).collect();
    assert!(failures.is_empty(), "{failures:?}");
}

/// A port nothing listens on, for the xds-ext that starts later.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// Envoy first, with `resources` declared with their defaults and a short
/// `initial_fetch_timeout`, xds-ext nowhere. The mesh virtual host routes by
/// the routing stage's cluster header when there is one, else to reviews v1
/// (as istiod's own route would): what fail-open leaves.
async fn envoy_before_xds_ext(resources: &[&str]) {
    let upstreams = Upstreams::start().await;
    let port = free_port();
    let filters = resources.iter().map(|r| ecds_http_filter_with_default(r, "xds-ext", "1s")).collect();
    let mut bootstrap = chain_bootstrap(port, filters, &upstreams);
    let listener = &mut bootstrap["static_resources"]["listeners"][0];
    let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
    let mesh = &mut hcm["route_config"]["virtual_hosts"][0];
    let by_header = mesh["routes"][0].clone();
    let mut steered = by_header.clone();
    steered["match"]["headers"] = json!([{"name": CLUSTER_HEADER, "present_match": true}]);
    mesh["routes"] = json!([steered, {"match": {"prefix": "/"}, "route": {"cluster": REVIEWS_V1}}]);
    let started = Instant::now();
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() < Duration::from_secs(10), "Envoy took {:?} to get ready", started.elapsed());

    let client = http_client();
    let url = envoy.listener_url("outbound");
    let reviews = bounded("reviews", REQUEST_TIMEOUT, send(&client, &url, Probe::Jason, 0)).await;
    let allowed = bounded("alpha", REQUEST_TIMEOUT, send(&client, &url, Probe::Allowed, 0)).await;
    let reviews = reviews.unwrap_or_else(|e| panic!("{e}"));
    let allowed = allowed.unwrap_or_else(|e| panic!("{e}"));
    let rbac_denied = envoy.counter("http.outbound.rbac.denied").await;
    if resources.contains(&"switchyard.http") || resources.contains(&"switchyard.egress") {
        // Fail closed: the filter holding the egress policy lets nothing through.
        assert_eq!(reviews.0, 403, "{reviews:?}\n{}", envoy.log_tail(30));
        assert_eq!(allowed.0, 403, "{allowed:?}");
        assert!(rbac_denied >= 2, "rbac.denied {rbac_denied}");
        assert!(upstreams.all().iter().all(|u| u.received().is_empty()), "a request got through");
    } else {
        // Fail open: no routing decision, no fault, no mirror; Envoy's routes answer.
        assert_eq!((reviews.0, reviews.1.as_str(), reviews.2.as_str()), (200, "reviews", "v1"), "{reviews:?}");
        assert_eq!((allowed.0, allowed.1.as_str()), (200, "external"), "{allowed:?}");
    }

    let config = XdsExt::config_dir(&[(POLICY_FILE, &policy())]);
    let xds = XdsExt::start(config.path(), &format!("127.0.0.1:{port}")).await;
    for resource in resources {
        xds.wait_status(NODE_ID, resource, "SYNCED").await;
    }
    let owned: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates_applied(&envoy, &owned).await < resources.len() as u64 {
        assert!(Instant::now() < deadline, "configs not applied\n{}", envoy.log_tail(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut probes = vec![Probe::Jason, Probe::Reviews, Probe::Allowed];
    if resources.contains(&"switchyard.http") || resources.contains(&"switchyard.egress") {
        probes.push(Probe::Denied);
    }
    for (seq, probe) in probes.into_iter().enumerate() {
        let seq = seq as u64 + 1;
        let answer = bounded("after xds-ext", REQUEST_TIMEOUT, send(&client, &url, probe, seq)).await;
        let answer = answer.unwrap_or_else(|e| panic!("{e}"));
        assert!(as_policy_says(probe, &answer), "{probe:?}: {answer:?} once xds-ext is up\n{}", xds.log());
    }
    let failures: Vec<_> = wasm_failure_stats(&envoy).await.into_iter().filter(|(_, v)| *v > 0).collect();
    assert!(failures.is_empty(), "{failures:?}");
}

#[tokio::test]
async fn an_envoy_started_without_xds_ext_fails_closed_with_the_combined_filter() {
    envoy_before_xds_ext(&["switchyard.http"]).await;
}

#[tokio::test]
async fn an_envoy_started_without_xds_ext_fails_closed_at_egress_and_open_elsewhere() {
    envoy_before_xds_ext(EVERY_FILTER).await;
}

#[tokio::test]
async fn without_egress_the_single_filters_fail_open() {
    envoy_before_xds_ext(&["switchyard.routing", "switchyard.fault", "switchyard.mirror"]).await;
}
