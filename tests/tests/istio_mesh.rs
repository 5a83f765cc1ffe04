//! `envoyfilter-manifests/` in a real Envoy 1.40 shaped like an Istio proxy.
//!
//! No API server or istiod runs here, so the test builds what istiod would
//! send — listeners, route configurations and clusters named as istiod names
//! them (`0.0.0.0_9080`, route config `9080`, vhost
//! `reviews.default.svc.cluster.local:9080`, clusters
//! `outbound|9080|v1|reviews.default.svc.cluster.local`), delivered
//! dynamically (LDS/RDS/CDS from files, so Envoy's rules for API-delivered
//! resources apply) — renders the overlays with `kubectl kustomize`, applies
//! their EnvoyFilter patches with the test helper `switchyard_tests::envoyfilter`,
//! and runs the bookinfo flows through it with the real xds-ext serving the
//! base's policy ConfigMap and the modules as remote code.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{istio_node, loopback_address};
use switchyard_tests::envoyfilter::{self, EnvoyConfig, Proxy};
use switchyard_tests::istiod::{
    dynamic_bootstrap, eventually, fqdn, http_listener, outbound_cluster, overlay, resolve_xds_ext, ROUTER,
};
use switchyard_tests::xds_ext::{write, XdsExt};
use switchyard_tests::{http_client, tls, workspace_root, EchoServer, Envoy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the manifests name, and what the test resolves them to.
const MODULE_CLUSTER: &str = "outbound|15014||xds-ext.switchyard-system.svc.cluster.local";
const MODULE_BASE_URL: &str = "http://xds-ext.switchyard-system.svc:15014/modules";

// ---------------------------------------------------------------------------
// What istiod would send

/// A sidecar's virtual host for a service port, with istiod's default
/// route; its domains are the name forms with and without the port.
fn sidecar_vhost(host: &str, port: u16) -> Value {
    let short = host.trim_end_matches(".svc.cluster.local");
    let name = short.split('.').next().unwrap_or(short);
    let forms = [host.to_string(), format!("{short}.svc"), short.to_string(), name.to_string()];
    let domains: Vec<String> = forms.iter().flat_map(|d| [d.clone(), format!("{d}:{port}")]).collect();
    json!({
        "name": format!("{host}:{port}"),
        "domains": domains,
        "routes": [{"name": "default", "match": {"prefix": "/"},
                    "route": {"cluster": format!("outbound|{port}||{host}"), "timeout": "0s"}}],
    })
}

/// istiod's `virtualOutbound` (port 15001 in a pod: the iptables target
/// handing connections to the port listeners; what matches none passes
/// through by TCP).
fn virtual_outbound() -> Value {
    json!({
        "name": "virtualOutbound",
        "address": loopback_address(0),
        "traffic_direction": "OUTBOUND",
        "use_original_dst": true,
        "filter_chains": [{"name": "virtualOutbound-catchall-tcp", "filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                             "stat_prefix": "PassthroughCluster", "cluster": "PassthroughCluster"},
        }]}],
    })
}

/// istiod's `virtualInbound` (15006): the workload's inbound HTTP, with an
/// HCM of its own that outbound patches must leave alone.
fn virtual_inbound(app_port: u16) -> Value {
    json!({
        "name": "virtualInbound",
        "address": loopback_address(0),
        "traffic_direction": "INBOUND",
        "filter_chains": [{"name": format!("0.0.0.0_{app_port}"), "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "inbound_0.0.0.0_9080",
                "route_config": {"name": format!("inbound|{app_port}||"), "virtual_hosts": [{"name": "inbound|http|9080",
                    "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": format!("inbound|{app_port}||")}}]}]},
                "http_filters": [
                    {"name": "envoy.filters.http.fault", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                    {"name": ROUTER, "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                ],
            },
        }]}],
    })
}

/// The egress gateway's TLS listener for a PASSTHROUGH server with hosts
/// `*`: tls_inspector, and a chain sending every SNI on by tcp_proxy.
fn tls_passthrough_listener(name: &str, cluster: &str) -> Value {
    json!({
        "name": name,
        "address": loopback_address(0),
        "traffic_direction": "OUTBOUND",
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                             "stat_prefix": name, "cluster": cluster},
        }]}],
    })
}

// ---------------------------------------------------------------------------
// xds-ext with the base's policy, modules as remote code

fn policy_dir(replace: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("switchyard-istio-policy-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = workspace_root();
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("envoyfilter-manifests/base/policy"))
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .collect();
    for file in files {
        let mut text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        write(dir.path(), &file.file_name().unwrap_or_default().to_string_lossy(), &text);
    }
    dir
}

/// xds-ext as `overlays/modules-inline` runs it: the modules inside each
/// resource. Envoy 1.40 fetches remote code only while a listener warms, so
/// a config that first arrives later (xds-ext down when the proxy started)
/// needs its code inline (or on the proxy's disk).
async fn xds_ext_inline_modules(policy: &Path, grpc: &str) -> XdsExt {
    XdsExt::start_with_args(policy, grpc, &workspace_root().join("target/switchyard"), &["--inline-modules"]).await
}

async fn xds_ext(policy: &Path, grpc: &str) -> XdsExt {
    let modules = workspace_root().join("target/switchyard");
    XdsExt::start_with_args(
        policy,
        grpc,
        &modules,
        &["--module-base-url", MODULE_BASE_URL, "--module-cluster", MODULE_CLUSTER],
    )
    .await
}

// ---------------------------------------------------------------------------
// The productpage sidecar

struct Backends {
    reviews: [EchoServer; 3],
    ratings: EchoServer,
    internet: EchoServer,
    egress_gateway: EchoServer,
}

impl Backends {
    async fn start() -> Backends {
        Backends {
            reviews: [
                EchoServer::start("reviews", "v1").await,
                EchoServer::start("reviews", "v2").await,
                EchoServer::start("reviews", "v3").await,
            ],
            ratings: EchoServer::start("ratings", "v1").await,
            internet: EchoServer::start("internet", "-").await,
            egress_gateway: EchoServer::start("istio-egressgateway", "-").await,
        }
    }
}

/// istiod's config for a productpage sidecar (ALLOW_ANY in Istio's own
/// mesh config: the `allow_any` host passes anything else out, so a deny can
/// only come from Switchyard's REGISTRY_ONLY), the manifests' patches applied.
fn productpage_sidecar(
    dir: &Path,
    backends: &Backends,
    (grpc_port, admin_port): (u16, u16),
    overlay_docs: &[Value],
    static_clusters: Vec<Value>,
) -> Value {
    let (reviews, ratings) = (fqdn("reviews"), fqdn("ratings"));
    let [v1, v2, v3] = &backends.reviews;
    let mut config = EnvoyConfig {
        listeners: vec![
            virtual_outbound(),
            virtual_inbound(9080),
            http_listener("0.0.0.0_9080", "9080", dir),
            http_listener("0.0.0.0_80", "80", dir),
        ],
        route_configs: vec![
            json!({"name": "9080", "virtual_hosts": [
                sidecar_vhost(&reviews, 9080),
                sidecar_vhost(&ratings, 9080),
                {"name": "allow_any", "domains": ["*"], "routes": [{"name": "allow_any", "match": {"prefix": "/"},
                    "route": {"cluster": "PassthroughCluster", "timeout": "0s"}}]},
            ]}),
            // Port 80: the ServiceEntry host httpbin.org, which the policy
            // sends through the egress gateway (`match: port: 80`).
            json!({"name": "80", "virtual_hosts": [
                {"name": "httpbin.org:80", "domains": ["httpbin.org", "httpbin.org:80"], "routes": [{"name": "default",
                    "match": {"prefix": "/"}, "route": {"cluster": "outbound|80||httpbin.org", "timeout": "0s"}}]},
            ]}),
        ],
        clusters: vec![
            outbound_cluster(9080, "", &reviews, &[v1.port(), v2.port(), v3.port()]),
            outbound_cluster(9080, "v1", &reviews, &[v1.port()]),
            outbound_cluster(9080, "v2", &reviews, &[v2.port()]),
            outbound_cluster(9080, "v3", &reviews, &[v3.port()]),
            outbound_cluster(9080, "", &ratings, &[backends.ratings.port()]),
            outbound_cluster(9080, "v1", &ratings, &[backends.ratings.port()]),
            outbound_cluster(80, "", "httpbin.org", &[backends.internet.port()]),
            json!({"name": "inbound|9080||", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "inbound|9080||",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback_address(backends.internet.port())}}]}]}}),
            outbound_cluster(
                80,
                "",
                "istio-egressgateway.istio-system.svc.cluster.local",
                &[backends.egress_gateway.port()],
            ),
            json!({"name": "PassthroughCluster", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {
                "cluster_name": "PassthroughCluster",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback_address(backends.internet.port())}}]}]}}),
            // istiod gives every sidecar this cluster for the xds-ext Service.
            outbound_cluster(15014, "", "xds-ext.switchyard-system.svc.cluster.local", &[admin_port]),
        ],
    };
    let proxy = Proxy {
        gateway: false,
        namespace: "default".into(),
        labels: vec![("app".into(), "productpage".into()), ("version".into(), "v1".into())],
        gateway_ports: vec![],
    };
    envoyfilter::apply(overlay_docs, &proxy, &mut config);
    resolve_xds_ext(&mut config, grpc_port);
    let node = istio_node(
        "sidecar~127.0.0.1~productpage-v1-0.default~default.svc.cluster.local",
        "default",
        &[("app", "productpage"), ("version", "v1")],
    );
    dynamic_bootstrap(dir, node, &config, static_clusters)
}

/// The HTTP filters of listener `name` as written to LDS.
fn http_filter_names(bootstrap_dir: &Path, name: &str) -> Vec<String> {
    let lds: Value = serde_json::from_str(&std::fs::read_to_string(bootstrap_dir.join("lds.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let listeners = lds["resources"].as_array().cloned().unwrap_or_default();
    let listener = listeners.iter().find(|l| l["name"] == name).unwrap_or_else(|| panic!("no listener {name}"));
    listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// (status, service, version) of one request through the sidecar.
async fn call(envoy: &Envoy, host: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let url = format!("http://127.0.0.1:{}/reviews/0", envoy.listener_port("0.0.0.0_9080"));
    let mut request = http_client().get(url).header("host", host);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("request to {host}: {e}"));
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (status, field("service"), field("version"))
}

#[tokio::test]
async fn sidecar_manifests_route_jason_to_v2_abort_ratings_and_deny_unknown_hosts_in_istio_shaped_envoy() {
    let backends = Backends::start().await;
    let policy = policy_dir(&[]);
    let xds = xds_ext(policy.path(), "127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap =
        productpage_sidecar(dir.path(), &backends, (xds.grpc_port, xds.admin_port), &overlay("sidecars"), vec![]);
    assert_eq!(
        http_filter_names(dir.path(), "0.0.0.0_9080"),
        ["envoy.filters.http.cors", "envoy.filters.http.fault", "switchyard.http", ROUTER],
        "the filter goes before the router, after Istio's own"
    );
    assert_eq!(
        http_filter_names(dir.path(), "virtualInbound"),
        ["envoy.filters.http.fault", ROUTER],
        "SIDECAR_OUTBOUND patches leave the inbound listener alone"
    );
    let envoy = Envoy::builder(bootstrap)
        .component_log_level("wasm:debug,http:debug")
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let jason = [("end-user", "jason")];
    // Every worker's VM loads the fetched module on its own: wait until
    // requests are steered in a row, not just once.
    let routed = eventually(Duration::from_secs(20), || async {
        for _ in 0..5 {
            if call(&envoy, "reviews:9080", &jason).await.2 != "v2" {
                return false;
            }
        }
        true
    })
    .await;
    if !routed {
        let stats: Vec<String> = envoy
            .stats()
            .await
            .into_iter()
            .filter(|(k, _)| k.contains("extension_config") || k.contains("wasm") || k.contains("15014"))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        panic!(
            "the routing config from xds-ext did not apply: {:?}\n{}\n{}",
            call(&envoy, "reviews:9080", &jason).await,
            stats.join("\n"),
            envoy
                .log()
                .lines()
                .filter(|l| l.contains("wasm") || l.contains("remote") || l.contains("cluster"))
                .take(60)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    for _ in 0..10 {
        assert_eq!(call(&envoy, "reviews:9080", &jason).await, (200, "reviews".into(), "v2".into()));
        assert_eq!(call(&envoy, "reviews:9080", &[]).await, (200, "reviews".into(), "v1".into()), "others: v1");
    }
    let url = format!("http://127.0.0.1:{}/ratings/0", envoy.listener_port("0.0.0.0_9080"));
    let aborted = http_client().get(&url).header("host", "ratings:9080").header("end-user", "jason").send().await;
    let aborted = aborted.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(aborted.status().as_u16(), 500, "ratings abort for jason");
    assert_eq!(aborted.text().await.unwrap_or_default(), "fault filter abort");
    assert_eq!(call(&envoy, "ratings:9080", &[]).await, (200, "ratings".into(), "v1".into()));

    // Istio's allow_any host would pass this out; Switchyard's REGISTRY_ONLY does not.
    let (status, service, _) = call(&envoy, "unknown.example.com", &[]).await;
    assert_eq!((status, service.as_str()), (502, ""), "REGISTRY_ONLY denies an unknown host");
    assert_eq!(backends.internet.requests(), 0, "nothing reached the outside");
    // httpbin.org on port 80 goes to the egress gateway (the rule's `port: 80`
    // is the port of istiod's virtual host `httpbin.org:80`).
    let url = format!("http://127.0.0.1:{}/get", envoy.listener_port("0.0.0.0_80"));
    let via = http_client().get(&url).header("host", "httpbin.org").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(via.status().as_u16(), 200);
    assert_eq!(via.json::<Value>().await.unwrap_or_default()["service"], "istio-egressgateway");
    assert_eq!(backends.internet.requests(), 0, "nothing reached the outside directly");
    // A client cannot pick a cluster by sending the routing filter's header.
    let forged = [("x-switchyard-cluster", "outbound|9080|v1|ratings.default.svc.cluster.local")];
    assert_eq!(call(&envoy, "reviews:9080", &forged).await.1, "reviews");
    assert!(
        envoy.counter("wasm.envoy.wasm.runtime.v8.created").await >= 4
            || envoy.log().contains("Wasm remote code fetch"),
        "the modules came as remote code through {MODULE_CLUSTER}"
    );
}

/// An Envoy started with `overlay` while xds-ext is not there yet; the
/// returned port is where xds-ext must come up, the policy dir what it serves.
async fn sidecar_before_xds_ext(backends: &Backends, overlay_name: &str) -> (Envoy, u16, XdsExt, tempfile::TempDir) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    let port = port.unwrap_or_else(|e| panic!("{e}"));
    let policy = policy_dir(&[]);
    // The module cluster's endpoint: an xds-ext whose gRPC port Envoy does
    // not know (the late xds-ext sends inline code, see xds_ext_inline_modules).
    let modules_only = xds_ext(policy.path(), "127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap =
        productpage_sidecar(dir.path(), backends, (port, modules_only.admin_port), &overlay(overlay_name), vec![]);
    // Listeners warm for the manifests' initial_fetch_timeout (5 s) first.
    let envoy = Envoy::builder(bootstrap).ready_timeout(Duration::from_secs(30)).start().await;
    let envoy = envoy.unwrap_or_else(|e| panic!("{e}"));
    std::mem::forget(dir); // Envoy keeps reading its xDS files
    (envoy, port, modules_only, policy)
}

/// Sends jason's requests until they are steered to v2 and the unknown host
/// gets Switchyard's 502, collecting every status seen on the way.
async fn until_configured(envoy: &Envoy, what: &str) -> std::collections::BTreeSet<u16> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut steered = 0;
    while steered < 5 {
        let (status, _, version) = call(envoy, "reviews:9080", &[("end-user", "jason")]).await;
        seen.insert(status);
        steered = if version == "v2" { steered + 1 } else { 0 };
        assert!(
            Instant::now() < deadline,
            "{what}: configs not applied within 40 s (seen {seen:?})\n{}",
            envoy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each filter's config arrives on its own stream: egress may follow
    // routing by a moment.
    let denied =
        eventually(Duration::from_secs(10), || async { call(envoy, "unknown.example.com", &[]).await.0 == 502 }).await;
    assert!(denied, "{what}: REGISTRY_ONLY once configured\n{}", envoy.log_tail(20));
    seen
}

#[tokio::test]
async fn without_xds_ext_routing_fault_and_mirror_pass_to_istio_and_with_fail_open_egress_so_does_egress() {
    let backends = Backends::start().await;
    let (envoy, port, _modules, policy) = sidecar_before_xds_ext(&backends, "egress-fail-open").await;

    // No config: istiod's default route (every reviews version), no fault for
    // jason on ratings, a forged cluster header removed, egress open.
    let mut versions = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (status, service, version) = call(&envoy, "reviews:9080", &[("end-user", "jason")]).await;
        assert_eq!((status, service.as_str()), (200, "reviews"));
        versions.insert(version);
    }
    assert_eq!(versions.len(), 3, "istiod's route balances over v1, v2, v3: {versions:?}");
    assert_eq!(call(&envoy, "ratings:9080", &[("end-user", "jason")]).await.0, 200, "no fault without a config");
    let forged = [("x-switchyard-cluster", "outbound|9080|v1|ratings.default.svc.cluster.local")];
    assert_eq!(call(&envoy, "reviews:9080", &forged).await.1, "reviews", "the header is stripped without a config too");
    assert_eq!(call(&envoy, "unknown.example.com", &[]).await.1, "internet", "fail-open egress lets it out");

    // xds-ext comes up: the policy applies without a restart and without a
    // single failed request on the way (no NFCF window).
    let xds = xds_ext_inline_modules(policy.path(), &format!("127.0.0.1:{port}")).await;
    let seen = until_configured(&envoy, "fail-open").await;
    assert_eq!(seen, [200].into(), "only 200s while the configs arrived\n{}", xds.log());
}

#[tokio::test]
async fn without_xds_ext_egress_fails_closed_by_default_until_the_first_config() {
    let backends = Backends::start().await;
    let (envoy, port, _modules, policy) = sidecar_before_xds_ext(&backends, "sidecars").await;
    for host in ["reviews:9080", "unknown.example.com"] {
        let (status, service, _) = call(&envoy, host, &[]).await;
        assert_eq!((status, service.as_str()), (403, ""), "{host}: denied until the egress policy is known");
    }
    assert_eq!(backends.internet.requests() + backends.reviews.iter().map(EchoServer::requests).sum::<usize>(), 0);

    let xds = xds_ext_inline_modules(policy.path(), &format!("127.0.0.1:{port}")).await;
    let seen = until_configured(&envoy, "fail-closed").await;
    assert!(seen.is_subset(&[200, 403].into()), "403 before, 200 after, nothing else: {seen:?}\n{}", xds.log());
}

// ---------------------------------------------------------------------------
// The ECDS source: google_grpc works; envoy_grpc needs a bootstrap cluster

#[tokio::test]
async fn envoy_grpc_to_a_cds_cluster_makes_envoy_refuse_the_listener_and_a_bootstrap_cluster_works() {
    let backends = Backends::start().await;
    let policy = policy_dir(&[]);
    let xds = xds_ext(policy.path(), "127.0.0.1:0").await;
    let docs = overlay("envoy-grpc");
    let xds_cluster = || {
        let mut c = outbound_cluster(15012, "", "xds-ext", &[xds.grpc_port]);
        c["name"] = json!("switchyard-xds-ext");
        c["load_assignment"]["cluster_name"] = json!("switchyard-xds-ext");
        c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}});
        c
    };

    // The cluster as an EnvoyFilter CLUSTER ADD would give it: over CDS.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = productpage_sidecar(dir.path(), &backends, (xds.grpc_port, xds.admin_port), &docs, vec![]);
    let cds = dir.path().join("cds.json");
    let mut resources: Value =
        serde_json::from_str(&std::fs::read_to_string(&cds).unwrap_or_default()).unwrap_or_default();
    let mut cluster = xds_cluster();
    cluster["@type"] = json!("type.googleapis.com/envoy.config.cluster.v3.Cluster");
    if let Some(r) = resources["resources"].as_array_mut() {
        r.push(cluster);
    }
    write(dir.path(), "cds.json", &resources.to_string());
    let refused = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));
    let ports = refused.listener_ports();
    assert!(
        !ports.contains_key("0.0.0.0_9080") && !ports.contains_key("0.0.0.0_80"),
        "the listeners with the filters must be refused: {ports:?}"
    );
    assert!(ports.contains_key("virtualOutbound"), "the others stay: {ports:?}");
    assert!(refused.counter("listener_manager.lds.update_rejected").await >= 1);
    assert!(
        refused.log().contains("statically defined non-EDS cluster"),
        "Envoy names the reason\n{}",
        refused.log_tail(20)
    );

    // The same manifests with the cluster in the bootstrap (Istio's bootstrap override).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap =
        productpage_sidecar(dir.path(), &backends, (xds.grpc_port, xds.admin_port), &docs, vec![xds_cluster()]);
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));
    let steered = eventually(Duration::from_secs(20), || async {
        call(&envoy, "reviews:9080", &[("end-user", "jason")]).await.2 == "v2"
    })
    .await;
    assert!(steered, "envoy_grpc through the bootstrap cluster serves the configs\n{}", envoy.log_tail(20));
}

// ---------------------------------------------------------------------------
// The egress gateway

#[tokio::test]
async fn egress_gateway_routes_service_entry_hosts_and_closes_an_unknown_sni_before_any_upstream_connection() {
    let httpbin = EchoServer::start("httpbin.org", "-").await;
    let google = EchoServer::start("www.google.com", "-").await;
    // The Gateway passes every SNI through (hosts "*"): only Switchyard's
    // egress policy (the ServiceEntry hosts) stands between it and the outside.
    // The rule's `match.port: 80` is the Gateway server port: the routing
    // filter takes it from the virtual host `httpbin.org:80`, not from the
    // port the gateway listens on (8080 in a pod, a loopback port here).
    let policy = policy_dir(&[("    - www.google.com\n    tls:", "    - \"*\"\n    tls:")]);
    // Inline code: the gateway runs the egress module twice (HTTP egress and
    // egress-tls), and Envoy 1.40 fails the second of two remote fetches of
    // one module in flight at once ("failed to load (cached)"); docs/istio.md.
    let xds = xds_ext_inline_modules(policy.path(), "127.0.0.1:0").await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = EnvoyConfig {
        listeners: vec![
            http_listener("0.0.0.0_8080", "http.8080", dir.path()),
            tls_passthrough_listener("0.0.0.0_8443", "outbound|443||www.google.com"),
        ],
        // istiod's route configuration for a port without VirtualServices.
        route_configs: vec![
            json!({"name": "http.8080", "virtual_hosts": [{"name": "blackhole:80", "domains": ["*"], "routes": []}]}),
        ],
        clusters: vec![
            outbound_cluster(80, "", "httpbin.org", &[httpbin.port()]),
            outbound_cluster(443, "", "www.google.com", &[google.port()]),
            outbound_cluster(15014, "", "xds-ext.switchyard-system.svc.cluster.local", &[xds.admin_port]),
        ],
    };
    let proxy = Proxy {
        gateway: true,
        namespace: "istio-system".into(),
        labels: vec![("istio".into(), "egressgateway".into()), ("app".into(), "istio-egressgateway".into())],
        gateway_ports: vec![(80, 8080), (443, 8443)],
    };
    envoyfilter::apply(&overlay("egress-gateway"), &proxy, &mut config);
    resolve_xds_ext(&mut config, xds.grpc_port);
    let node = istio_node(
        "router~127.0.0.1~istio-egressgateway-0.istio-system~istio-system.svc.cluster.local",
        "istio-system",
        &[("istio", "egressgateway"), ("app", "istio-egressgateway")],
    );
    let envoy =
        Envoy::start(dynamic_bootstrap(dir.path(), node, &config, vec![])).await.unwrap_or_else(|e| panic!("{e}"));

    let url = format!("http://127.0.0.1:{}/get", envoy.listener_port("0.0.0.0_8080"));
    let get = |host: &'static str| {
        let request = http_client().get(&url).header("host", host);
        async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let routed = eventually(Duration::from_secs(20), || async { get("httpbin.org").await == 200 }).await;
    if !routed {
        let reply =
            http_client().get(&url).header("host", "httpbin.org").send().await.unwrap_or_else(|e| panic!("{e}"));
        let status = reply.status();
        panic!(
            "httpbin.org through the egress gateway: {status} {}\n{}",
            reply.text().await.unwrap_or_default(),
            envoy.log_tail(20)
        );
    }
    assert_eq!(
        httpbin.received().last().and_then(|r| r.authority().map(str::to_string)).as_deref(),
        Some("httpbin.org")
    );
    assert_eq!(get("evil.example.com").await, 502, "a host the registry does not know");

    let tls_port = envoy.listener_port("0.0.0.0_8443");
    assert!(!tls_survives(tls_port, "evil.example.com").await, "unknown SNI closed\n{}", envoy.log_tail(20));
    let upstream = "cluster.outbound|443||www.google.com.upstream_cx_total";
    assert_eq!(envoy.counter(upstream).await, 0, "no upstream connection for the unknown SNI");
    assert!(tls_survives(tls_port, "www.google.com").await, "the ServiceEntry host passes");
    assert_eq!(envoy.counter(upstream).await, 1);
}

/// Sends a ClientHello with `sni`: true when Envoy kept the connection (the
/// upstream got it), false when it closed it.
async fn tls_survives(port: u16, sni: &str) -> bool {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(&tls::client_hello(sni)).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
        Err(_) => true,
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(_)) => true, // the echo upstream answered the bytes: connected
    }
}

// ---------------------------------------------------------------------------
// `xds-ext manifests`

#[test]
fn the_committed_route_patches_are_what_make_manifests_generates() {
    let output = std::process::Command::new(workspace_root().join("scripts/manifests.sh"))
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("scripts/manifests.sh: {e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn manifests_of_invalid_documents_name_file_and_line_and_print_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "bad.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n      weight: -3\n");
    let output = std::process::Command::new(workspace_root().join("target/debug/xds-ext"))
        .arg("manifests")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("xds-ext: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing written: {}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("bad.yaml:9:"), "FILE:LINE of the bad field: {stderr}");
}
