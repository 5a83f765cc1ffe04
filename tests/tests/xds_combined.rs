//! The combined filter served by a real `xds-ext serve`: a productpage
//! sidecar whose HTTP listener runs `switchyard.http` (switchyard.wasm, one
//! filter for egress → routing → fault → mirror) and whose TLS listener runs
//! `switchyard.egress-tls`, both over ECDS, from the unmodified files of
//! `examples/bookinfo/`. With `--module-layout combined` (the default) the
//! TLS filter shares the HTTP chain's VM; with `single` it runs egress.wasm
//! in a VM of its own and decides the same.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::bootstrap::{
    admin, ecds_http_filter, ecds_network_filter, http_connection_manager, istio_node, loopback_address,
    route_by_cluster_header, route_to_cluster, static_cluster, tcp_proxy_listener,
};
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use switchyard_tests::{http_client, tls, EchoServer, Envoy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NODE_ID: &str = "productpage-v1";
const XDS_CLUSTER: &str = "xds-ext";
const CLUSTER_HEADER: &str = "x-switchyard-cluster";
const HTTP: &str = "switchyard.http";
const EGRESS_TLS: &str = "switchyard.egress-tls";
const GOOGLE_CLUSTER: &str = "outbound|443||www.google.com";
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
const VM_GAUGE: &str = "wasm.envoy.wasm.runtime.v8.active";

struct Upstreams {
    reviews_v1: EchoServer,
    reviews_v2: EchoServer,
    /// Where the `passthrough` cluster leads: "the internet".
    external: EchoServer,
}

impl Upstreams {
    async fn start() -> Upstreams {
        Upstreams {
            reviews_v1: EchoServer::start("reviews", "v1").await,
            reviews_v2: EchoServer::start("reviews", "v2").await,
            external: EchoServer::start("httpbin.org", "external").await,
        }
    }
}

/// A sidecar with the combined filter over ECDS: listener `outbound` (a
/// `mesh` virtual host routed by the cluster header, `passthrough` for the
/// rest) and listener `tls` (tls_inspector, egress-tls, tcp_proxy).
fn bootstrap(xds_port: u16, upstreams: &Upstreams) -> Value {
    let mesh_domains = ["reviews", "reviews:9080", "*.svc.cluster.local", "*.svc.cluster.local:9080"];
    let route_config = json!({
        "name": "outbound",
        "virtual_hosts": [
            {"name": "mesh", "domains": mesh_domains, "routes": [route_by_cluster_header(CLUSTER_HEADER)]},
            {"name": "passthrough", "domains": ["*"], "routes": [route_to_cluster("passthrough")]},
        ],
    });
    let outbound = json!({
        "name": "outbound",
        "address": loopback_address(0),
        "filter_chains": [{"filters": [
            http_connection_manager("outbound", route_config, vec![ecds_http_filter(HTTP, XDS_CLUSTER)]),
        ]}],
    });
    let tls = tcp_proxy_listener("tls", GOOGLE_CLUSTER, vec![ecds_network_filter(EGRESS_TLS, XDS_CLUSTER)], true);
    let clusters = vec![
        static_cluster(XDS_CLUSTER, xds_port, true),
        static_cluster("outbound|9080|v1|reviews.default.svc.cluster.local", upstreams.reviews_v1.port(), false),
        static_cluster(V2, upstreams.reviews_v2.port(), false),
        static_cluster("passthrough", upstreams.external.port(), false),
        // Never reached in these tests: every SNI sent is denied.
        static_cluster(GOOGLE_CLUSTER, upstreams.external.port(), false),
    ];
    json!({
        "node": istio_node(NODE_ID, "default", &[("app", "productpage"), ("version", "v1")]),
        "admin": admin(),
        "static_resources": {"listeners": [outbound, tls], "clusters": clusters},
    })
}

struct Sidecar {
    upstreams: Upstreams,
    envoy: Envoy,
    xds: XdsExt,
    _config: tempfile::TempDir,
}

impl Sidecar {
    /// xds-ext (with `xds_args`) serving bookinfo's Services and
    /// DestinationRules plus `files`, and a two-worker sidecar synced with it.
    async fn start(files: &[&str], xds_args: &[&str]) -> Sidecar {
        let upstreams = Upstreams::start().await;
        let texts: Vec<(&str, String)> = files.iter().map(|f| (*f, bookinfo(f))).collect();
        let named: Vec<(&str, &str)> = texts.iter().map(|(f, t)| (*f, t.as_str())).collect();
        let config = XdsExt::config_dir(&named);
        let modules = switchyard_tests::workspace_root().join("target/switchyard");
        let xds = XdsExt::start_with_args(config.path(), "127.0.0.1:0", &modules, xds_args).await;
        let envoy = match Envoy::builder(bootstrap(xds.grpc_port, &upstreams)).concurrency(2).start().await {
            Ok(envoy) => envoy,
            Err(e) => panic!("{e}\n--- xds-ext log ---\n{}", xds.log()),
        };
        let sidecar = Sidecar { upstreams, envoy, xds, _config: config };
        for resource in [HTTP, EGRESS_TLS] {
            sidecar.xds.wait_status(NODE_ID, resource, "SYNCED").await;
        }
        sidecar
    }

    fn logs(&self) -> String {
        format!("--- envoy log ---\n{}\n--- xds-ext log ---\n{}", self.envoy.log_tail(40), self.xds.log())
    }

    /// GET / through the sidecar: the status and the `x-echo-version` of the upstream, if any.
    async fn get(&self, host: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let mut request = http_client().get(format!("{}/", self.envoy.listener_url("outbound"))).header("host", host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("GET {host}: {e}\n{}", self.logs()));
        let version = response.headers().get("x-echo-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        (response.status().as_u16(), version)
    }

    /// A TLS ClientHello for `sni` on the `tls` listener: true when Envoy
    /// closes the connection without an answer.
    async fn tls_closed(&self, sni: &str) -> bool {
        let mut stream = TcpStream::connect(("127.0.0.1", self.envoy.listener_port("tls")))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        stream.write_all(&tls::client_hello(sni)).await.unwrap_or_else(|e| panic!("write: {e}"));
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

const REGISTRY_ONLY: &[&str] =
    &["virtual-service-reviews-test-v2.yaml", "service-entry-httpbin-org.yaml", "sidecar-registry-only.yaml"];

#[tokio::test]
async fn the_combined_filter_and_egress_tls_over_ecds_run_in_one_vm_and_decide_as_the_single_filters() {
    let combined = Sidecar::start(REGISTRY_ONLY, &[]).await;
    // Routing (jason -> v2), egress (REGISTRY_ONLY: 502 for an unknown host,
    // the ServiceEntry's httpbin.org through), one filter.
    assert_eq!(
        combined.get("reviews:9080", &[("end-user", "jason")]).await,
        (200, Some("v2".into())),
        "{}",
        combined.logs()
    );
    assert_eq!(combined.get("reviews:9080", &[]).await, (200, Some("v1".into())));
    assert_eq!(combined.get("evil.example.com", &[]).await, (502, None), "{}", combined.logs());
    assert_eq!(combined.get("httpbin.org", &[]).await, (200, Some("external".into())));
    assert_eq!(combined.upstreams.external.requests(), 1, "only httpbin.org left the mesh");
    assert_eq!(combined.envoy.counter("wasmcustom.switchyard_egress_http_denied_total").await, 1);
    // The TLS filter of the same module closes an SNI the registry lacks.
    assert!(combined.tls_closed("payments.example.com").await, "{}", combined.logs());
    combined.envoy.wait_for_counter("wasmcustom.switchyard_egress_tls_denied_total", 1, Duration::from_secs(5)).await;
    let one_vm = combined.envoy.stat(VM_GAUGE).await;

    let single = Sidecar::start(REGISTRY_ONLY, &["--module-layout", "single"]).await;
    assert_eq!(single.get("reviews:9080", &[("end-user", "jason")]).await, (200, Some("v2".into())));
    assert!(single.tls_closed("payments.example.com").await, "{}", single.logs());
    single.envoy.wait_for_counter("wasmcustom.switchyard_egress_tls_denied_total", 1, Duration::from_secs(5)).await;
    let two_vms = single.envoy.stat(VM_GAUGE).await;
    let (Some(one_vm), Some(two_vms)) = (one_vm, two_vms) else { panic!("no VM gauge: {one_vm:?} / {two_vms:?}") };
    assert!(
        one_vm < two_vms,
        "egress-tls in the HTTP chain's VM ({one_vm} VMs) must need fewer VMs than in its own ({two_vms})"
    );
}

#[tokio::test]
async fn left_out_stages_do_not_run_and_routing_still_strips_a_client_cluster_header() {
    // No Sidecar: ALLOW_ANY, so switchyard.http carries routing only.
    let sidecar = Sidecar::start(&["virtual-service-reviews-test-v2.yaml"], &[]).await;
    assert_eq!(
        sidecar.get("reviews:9080", &[("end-user", "jason")]).await,
        (200, Some("v2".into())),
        "{}",
        sidecar.logs()
    );
    // Anything goes out, as under ALLOW_ANY with the egress filter.
    assert_eq!(sidecar.get("evil.example.com", &[]).await, (200, Some("external".into())), "{}", sidecar.logs());
    // A mesh-looking host no VirtualService or Service names: the routing
    // stage removes the client's cluster header, so the cluster_header route
    // finds no cluster instead of obeying the client.
    let (status, version) = sidecar.get("unknown.default.svc.cluster.local", &[(CLUSTER_HEADER, V2)]).await;
    assert_eq!(version, None, "the client picked its cluster: {status}\n{}", sidecar.logs());
    assert_ne!(status, 200);
    assert_eq!(sidecar.upstreams.reviews_v2.requests(), 1, "only jason's request reached v2");
    // Had an egress stage run, it would have counted these requests allowed.
    let allowed = sidecar.envoy.stat("wasmcustom.switchyard_egress_http_allowed_total").await;
    assert_eq!(allowed.unwrap_or(0), 0, "no egress stage under ALLOW_ANY");
}
