//! Istio's bookinfo fault-injection, mirroring and egress flows, with every
//! Switchyard filter of the sidecar configured by a real `xds-ext serve` from
//! the unmodified files of `examples/bookinfo/` (xds.rs covers the routing
//! flows the same way).
//!
//! The sidecar is modelled on `examples/local/envoy.yaml`: one HTTP listener
//! with egress → routing → fault → mirror → router, each filter over ECDS; a
//! `mesh` virtual host routed by the routing filter's cluster header and a
//! `passthrough` virtual host for everything else; Istio-named clusters
//! `outbound|<port>|<subset>|<fqdn>` in front of echo upstreams. A second
//! listener carries the `switchyard.egress-tls` network filter (over ECDS)
//! before `tcp_proxy`, for TLS egress by SNI.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    admin, ecds_http_filter, ecds_network_filter, http_connection_manager, istio_node, loopback_address,
    route_by_cluster_header, route_to_cluster, static_cluster, tcp_proxy_filter,
};
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use switchyard_tests::{http_client, tls, EchoResponse, EchoServer, Envoy, ReceivedRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NODE_ID: &str = "productpage-v1";
const XDS_CLUSTER: &str = "xds-ext";
/// The routing filter's default `cluster_header` (docs/policy.md).
const CLUSTER_HEADER: &str = "x-switchyard-cluster";
const HTTP_FILTERS: [&str; 4] = ["switchyard.egress", "switchyard.routing", "switchyard.fault", "switchyard.mirror"];
const EGRESS_TLS: &str = "switchyard.egress-tls";
/// The cluster Istio names for the `www.google.com` ServiceEntry (TLS, 443).
const GOOGLE_CLUSTER: &str = "outbound|443||www.google.com";
const LOG_LINES: usize = 40;

/// The echo upstreams behind the sidecar's clusters, and a raw TCP upstream
/// for TLS egress.
struct Upstreams {
    reviews_v1: EchoServer,
    ratings_v1: EchoServer,
    httpbin_v1: EchoServer,
    httpbin_v2: EchoServer,
    /// Where the `passthrough` cluster leads: "the internet" (httpbin.org).
    external: EchoServer,
    google: TcpUpstream,
}

impl Upstreams {
    async fn start() -> Upstreams {
        Upstreams {
            reviews_v1: EchoServer::start("reviews", "v1").await,
            ratings_v1: EchoServer::start("ratings", "v1").await,
            httpbin_v1: EchoServer::start("httpbin", "v1").await,
            httpbin_v2: EchoServer::start("httpbin", "v2").await,
            external: EchoServer::start("httpbin.org", "external").await,
            google: TcpUpstream::start().await,
        }
    }

    /// Istio's cluster names (ports from services.yaml and httpbin.yaml) → port.
    fn clusters(&self) -> Vec<(String, u16)> {
        vec![
            ("outbound|9080|v1|reviews.default.svc.cluster.local".into(), self.reviews_v1.port()),
            ("outbound|9080|v1|ratings.default.svc.cluster.local".into(), self.ratings_v1.port()),
            ("outbound|8000|v1|httpbin.default.svc.cluster.local".into(), self.httpbin_v1.port()),
            ("outbound|8000|v2|httpbin.default.svc.cluster.local".into(), self.httpbin_v2.port()),
            ("passthrough".into(), self.external.port()),
            (GOOGLE_CLUSTER.into(), self.google.port),
        ]
    }
}

/// A TCP upstream that records what each accepted connection sent and
/// answers `hello from upstream` once it has read something.
struct TcpUpstream {
    port: u16,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

const UPSTREAM_HELLO: &[u8] = b"hello from upstream";

impl TcpUpstream {
    async fn start() -> TcpUpstream {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding the TCP upstream: {e}"));
        let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let recorded = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let index = {
                    let mut all = recorded.lock().unwrap_or_else(|e| e.into_inner());
                    all.push(Vec::new());
                    all.len() - 1
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut answered = false;
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        recorded.lock().unwrap_or_else(|e| e.into_inner())[index].extend_from_slice(&buf[..n]);
                        if !answered {
                            answered = true;
                            let _ = stream.write_all(UPSTREAM_HELLO).await;
                        }
                    }
                });
            }
        });
        TcpUpstream { port, connections, task }
    }

    /// What each connection accepted so far has sent, in accept order.
    fn connections(&self) -> Vec<Vec<u8>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TcpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sidecar bootstrap, after `examples/local/envoy.yaml` (the example
/// sidecar of productpage v1): listener `outbound` (HTTP, the four filters
/// over ECDS) and listener `tls` (proxy_protocol + tls_inspector, the
/// egress-tls network filter over ECDS, tcp_proxy to www.google.com's
/// cluster).
fn sidecar_bootstrap(xds_port: u16, upstreams: &Upstreams) -> Value {
    let mesh_domains = [
        "reviews",
        "reviews:9080",
        "ratings",
        "ratings:9080",
        "httpbin",
        "httpbin:8000",
        "*.svc.cluster.local",
        "*.svc.cluster.local:9080",
        "*.svc.cluster.local:8000",
    ];
    let route_config = json!({
        "name": "outbound",
        "virtual_hosts": [
            // Mesh services: only the routing filter's cluster header picks the upstream.
            {"name": "mesh", "domains": mesh_domains, "routes": [route_by_cluster_header(CLUSTER_HEADER)]},
            // Everything else leaves the mesh, if the egress filter lets it.
            {"name": "passthrough", "domains": ["*"], "routes": [route_to_cluster("passthrough")]},
        ],
    });
    let http_filters = HTTP_FILTERS.iter().map(|name| ecds_http_filter(name, XDS_CLUSTER)).collect();
    let outbound = json!({
        "name": "outbound",
        "address": loopback_address(0),
        "filter_chains": [{"filters": [http_connection_manager("outbound", route_config, http_filters)]}],
    });
    // In a pod, iptables sends TLS traffic to the sidecar and the original
    // destination (…:443) is the connection's destination, which the
    // egress-tls filter checks against the ServiceEntry's ports. On loopback
    // the test client states that destination in a PROXY protocol header.
    let tls = json!({
        "name": "tls",
        "address": loopback_address(0),
        "listener_filters": [
            {"name": "envoy.filters.listener.proxy_protocol", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"}},
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
        ],
        "filter_chains": [{"filters": [
            ecds_network_filter(EGRESS_TLS, XDS_CLUSTER),
            tcp_proxy_filter("tls", GOOGLE_CLUSTER),
        ]}],
    });
    let mut clusters = vec![static_cluster(XDS_CLUSTER, xds_port, true)];
    clusters.extend(upstreams.clusters().iter().map(|(name, port)| static_cluster(name, *port, false)));
    json!({
        "node": istio_node(NODE_ID, "default", &[("app", "productpage"), ("version", "v1")]),
        "admin": admin(),
        "static_resources": {"listeners": [outbound, tls], "clusters": clusters},
    })
}

/// xds-ext serving bookinfo's Services and DestinationRules plus `files`
/// (unmodified, from `examples/bookinfo/`), and the productpage sidecar
/// getting all five Switchyard filters from it.
struct Sidecar {
    upstreams: Upstreams,
    envoy: Envoy,
    xds: XdsExt,
    _config: tempfile::TempDir,
}

impl Sidecar {
    async fn start(files: &[&str]) -> Sidecar {
        let upstreams = Upstreams::start().await;
        let texts: Vec<(&str, String)> = files.iter().map(|f| (*f, bookinfo(f))).collect();
        let named: Vec<(&str, &str)> = texts.iter().map(|(f, t)| (*f, t.as_str())).collect();
        let config = XdsExt::config_dir(&named);
        let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
        let envoy = match Envoy::start(sidecar_bootstrap(xds.grpc_port, &upstreams)).await {
            Ok(envoy) => envoy,
            Err(e) => panic!("{e}\n--- xds-ext log ---\n{}", xds.log()),
        };
        let sidecar = Sidecar { upstreams, envoy, xds, _config: config };
        // Envoy is ready only once every ECDS filter has a config; make sure
        // each one is xds-ext's, not a leftover or a default.
        for resource in HTTP_FILTERS.iter().chain([&EGRESS_TLS]) {
            sidecar.xds.wait_status(NODE_ID, resource, "SYNCED").await;
        }
        sidecar
    }

    /// Envoy's and xds-ext's logs, for a failure message.
    fn logs(&self) -> String {
        format!(
            "--- envoy log (last {LOG_LINES} lines) ---\n{}\n--- xds-ext log ---\n{}",
            self.envoy.log_tail(LOG_LINES),
            self.xds.log()
        )
    }

    async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request =
            http_client().get(format!("{}{path}", self.envoy.listener_url("outbound"))).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let started = Instant::now();
        let response =
            request.send().await.unwrap_or_else(|e| panic!("GET {host}{path} through envoy: {e}\n{}", self.logs()));
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (service, version) = (header("x-echo-service"), header("x-echo-version"));
        let body = response.text().await.unwrap_or_default();
        Reply { status, service, version, body, took: started.elapsed() }
    }

    async fn counter(&self, name: &str) -> u64 {
        self.envoy.counter(name).await
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// `x-echo-service` / `x-echo-version`: which upstream answered, if any.
    service: Option<String>,
    version: Option<String>,
    body: String,
    took: Duration,
}

impl Reply {
    fn answered_by(&self) -> (Option<&str>, Option<&str>) {
        (self.service.as_deref(), self.version.as_deref())
    }
}

const JASON: &[(&str, &str)] = &[("end-user", "jason")];

#[tokio::test]
async fn jason_waits_seven_seconds_for_ratings_from_the_istio_delay_yaml_and_others_do_not_wait() {
    let sidecar = Sidecar::start(&["virtual-service-ratings-test-delay.yaml"]).await;
    let ratings = &sidecar.upstreams.ratings_v1;

    let started = Instant::now();
    let jason = sidecar.get("ratings:9080", "/ratings/0", JASON);
    let anonymous = sidecar.get("ratings:9080", "/ratings/0", &[]);
    let (jason, anonymous) = tokio::join!(jason, anonymous);

    assert_eq!(anonymous.status, 200, "{anonymous:?}\n{}", sidecar.logs());
    assert_eq!(anonymous.answered_by(), (Some("ratings"), Some("v1")), "{anonymous:?}");
    assert!(anonymous.took < Duration::from_secs(2), "the request without end-user waited {:?}", anonymous.took);
    assert_eq!(jason.status, 200, "{jason:?}\n{}", sidecar.logs());
    assert_eq!(jason.answered_by(), (Some("ratings"), Some("v1")), "{jason:?}");
    assert!(jason.took >= Duration::from_secs(7), "jason's delay ended early: {:?}\n{}", jason.took, sidecar.logs());
    assert!(jason.took < Duration::from_secs(10), "jason's delay overran: {:?}", jason.took);
    // The delay is before the upstream: ratings saw jason's request only after 7 s.
    let received = ratings.received();
    let jasons: Vec<_> = received.iter().filter(|r| r.header("end-user") == Some("jason")).collect();
    assert_eq!(jasons.len(), 1, "{received:#?}");
    let reached = jasons[0].at.duration_since(started);
    assert!(reached >= Duration::from_secs(7), "jason's request reached ratings after {reached:?}");
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(sidecar.counter("wasmcustom.switchyard_fault_delays_injected_total").await, 1, "{}", sidecar.logs());
}

#[tokio::test]
async fn jason_gets_a_500_abort_from_the_istio_abort_yaml_and_others_get_ratings_v1() {
    let sidecar = Sidecar::start(&["virtual-service-ratings-test-abort.yaml"]).await;
    let ratings = &sidecar.upstreams.ratings_v1;

    for _ in 0..5 {
        let jason = sidecar.get("ratings:9080", "/ratings/0", JASON).await;
        assert_eq!(jason.status, 500, "{jason:?}\n{}", sidecar.logs());
        assert_eq!(jason.body, "fault filter abort", "{jason:?}");
        assert_eq!(jason.answered_by(), (None, None), "the abort must not come from an upstream: {jason:?}");
    }
    for user in [None, Some("alice")] {
        let headers: Vec<(&str, &str)> = user.map(|u| ("end-user", u)).into_iter().collect();
        let other = sidecar.get("ratings:9080", "/ratings/0", &headers).await;
        assert_eq!(other.status, 200, "{user:?}: {other:?}\n{}", sidecar.logs());
        assert_eq!(other.answered_by(), (Some("ratings"), Some("v1")), "{other:?}");
    }

    let received = ratings.received();
    assert_eq!(received.len(), 2, "only the two requests without jason reach ratings: {received:#?}");
    assert!(received.iter().all(|r| r.header("end-user") != Some("jason")), "{received:#?}");
    assert_eq!(sidecar.counter("wasmcustom.switchyard_fault_aborts_injected_total").await, 5, "{}", sidecar.logs());
}

#[tokio::test]
async fn httpbin_v1_answers_and_v2_gets_a_shadow_copy_from_the_istio_mirror_yaml() {
    let sidecar = Sidecar::start(&["httpbin.yaml", "virtual-service-httpbin-mirror.yaml"]).await;
    let (v1, v2) = (&sidecar.upstreams.httpbin_v1, &sidecar.upstreams.httpbin_v2);

    const N: usize = 10;
    for i in 0..N {
        let reply = sidecar.get("httpbin:8000", &format!("/headers/{i}"), &[]).await;
        assert_eq!(reply.status, 200, "{reply:?}\n{}", sidecar.logs());
        assert_eq!(reply.answered_by(), (Some("httpbin"), Some("v1")), "{reply:?}");
        let echo: EchoResponse = serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
        assert_eq!(echo.authority, "httpbin:8000", "the primary keeps its authority");
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    while v2.requests() < N {
        assert!(
            Instant::now() < deadline,
            "httpbin v2 got {} of {N} shadow copies within 5 s: {:#?}\n{}",
            v2.requests(),
            v2.received(),
            sidecar.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shadows = v2.received();
    let paths =
        |requests: &[ReceivedRequest]| -> BTreeSet<String> { requests.iter().map(|r| r.path.clone()).collect() };
    let expected: BTreeSet<String> = (0..N).map(|i| format!("/headers/{i}")).collect();
    assert_eq!(shadows.len(), N, "{shadows:#?}");
    assert_eq!(paths(&shadows), expected, "each request is mirrored once");
    for shadow in &shadows {
        assert_eq!(shadow.authority(), Some("httpbin-shadow:8000"), "{:?}", shadow.headers);
    }
    let primaries = v1.received();
    assert_eq!(primaries.len(), N, "v1 gets the primaries only, no shadow copy: {primaries:#?}");
    assert_eq!(paths(&primaries), expected);
    assert!(primaries.iter().all(|r| r.authority() == Some("httpbin:8000")), "{primaries:#?}");
    assert_eq!(sidecar.counter("wasmcustom.switchyard_mirror_mirrored_total").await, N as u64, "{}", sidecar.logs());
}

#[tokio::test]
async fn registry_only_lets_httpbin_org_and_mesh_services_through_and_denies_unknown_hosts_with_502() {
    // virtual-service-all-v1.yaml routes the mesh (Istio's first bookinfo step).
    let sidecar = Sidecar::start(&[
        "virtual-service-all-v1.yaml",
        "service-entry-httpbin-org.yaml",
        "sidecar-registry-only.yaml",
    ])
    .await;
    let external = &sidecar.upstreams.external;

    let allowed = sidecar.get("httpbin.org", "/get", &[]).await;
    assert_eq!(allowed.status, 200, "httpbin.org is in a ServiceEntry: {allowed:?}\n{}", sidecar.logs());
    assert_eq!(allowed.answered_by(), (Some("httpbin.org"), Some("external")), "{allowed:?}");

    for denied_host in ["evil.example.com", "httpbin.org:8080", "www.google.com"] {
        let denied = sidecar.get(denied_host, "/", &[]).await;
        assert_eq!(denied.status, 502, "{denied_host} must be denied: {denied:?}\n{}", sidecar.logs());
        assert_eq!(denied.answered_by(), (None, None), "{denied_host} reached an upstream: {denied:?}");
    }
    assert_eq!(external.requests(), 1, "only httpbin.org left the mesh: {:#?}", external.received());

    for host in ["reviews:9080", "ratings:9080"] {
        let mesh = sidecar.get(host, "/", &[]).await;
        assert_eq!(mesh.status, 200, "{host}: {mesh:?}\n{}", sidecar.logs());
        assert_eq!(mesh.version.as_deref(), Some("v1"), "{host}: {mesh:?}");
    }
    assert_eq!(sidecar.counter("wasmcustom.switchyard_egress_http_denied_total").await, 3, "{}", sidecar.logs());
    assert_eq!(sidecar.counter("wasmcustom.switchyard_egress_http_allowed_total").await, 3);
}

/// Opens a connection to the sidecar's `tls` listener as if to
/// `127.0.0.1:<original_port>` (PROXY protocol v1), sends a ClientHello for
/// `sni`, and returns the stream.
async fn tls_connect(sidecar: &Sidecar, original_port: u16, sni: &str) -> TcpStream {
    let port = sidecar.envoy.listener_port("tls");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("connect: {e}"));
    let mut bytes = format!("PROXY TCP4 127.0.0.1 127.0.0.1 40000 {original_port}\r\n").into_bytes();
    bytes.extend_from_slice(&tls::client_hello(sni));
    stream.write_all(&bytes).await.unwrap_or_else(|e| panic!("write: {e}"));
    stream
}

/// Reads until `n` bytes, EOF or an error, at most `timeout`: what came, and
/// whether the connection ended (EOF or reset).
async fn read_some(stream: &mut TcpStream, n: usize, timeout: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_elapsed) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
        }
    }
    (got, false)
}

#[tokio::test]
async fn registry_only_lets_the_service_entry_sni_through_and_closes_an_unknown_sni_before_any_upstream_connection() {
    let sidecar = Sidecar::start(&["service-entry-httpbin-org.yaml", "sidecar-registry-only.yaml"]).await;
    let google = &sidecar.upstreams.google;
    let upstream_cx = format!("cluster.{GOOGLE_CLUSTER}.upstream_cx_total");

    for (sni, port) in [("evil.example.com", 443), ("www.google.com", 8443)] {
        let mut denied = tls_connect(&sidecar, port, sni).await;
        let (got, closed) = read_some(&mut denied, 1, Duration::from_secs(5)).await;
        assert!(closed && got.is_empty(), "{sni}:{port} must be closed (got {got:?})\n{}", sidecar.logs());
    }
    assert_eq!(sidecar.counter(&upstream_cx).await, 0, "no upstream connection for a denied SNI");
    assert!(google.connections().is_empty(), "the upstream was reached: {:?}", google.connections());
    assert_eq!(sidecar.counter("wasmcustom.switchyard_egress_tls_denied_total").await, 2, "{}", sidecar.logs());

    let hello = tls::client_hello("www.google.com");
    let mut allowed = tls_connect(&sidecar, 443, "www.google.com").await;
    let (got, closed) = read_some(&mut allowed, UPSTREAM_HELLO.len(), Duration::from_secs(5)).await;
    assert_eq!(
        got,
        UPSTREAM_HELLO,
        "www.google.com:443 must reach its upstream (closed: {closed})\n{}",
        sidecar.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while google.connections() != vec![hello.clone()] {
        assert!(Instant::now() < deadline, "the upstream must get the ClientHello as sent: {:?}", google.connections());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sidecar.counter(&upstream_cx).await, 1);
    assert_eq!(sidecar.counter("wasmcustom.switchyard_egress_tls_allowed_total").await, 1);
}
