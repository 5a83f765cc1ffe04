//! The plain-Envoy gateway bootstraps of `examples/envoy-gateways/`, each in
//! a real Envoy with the real xds-ext serving the example policy
//! (`examples/envoy-gateways/policy/ingress-gateway.yaml`, bookinfo's
//! `egress-gateway.yaml`, and bookinfo's Services, DestinationRules and
//! ServiceEntries), one flow each:
//! - ingress: `bookinfo.example.com` routed by the Gateway-bound
//!   VirtualService, jason to reviews v2, everyone else to v1;
//! - egress: the SNI of a ServiceEntry host goes on to that host (resolved
//!   by the bootstrap's dynamic forward proxy), an unknown SNI is closed
//!   before any upstream connection.
//!
//! The bootstraps are used as written except for addresses: admin and
//! listeners on `127.0.0.1:0`, xds-ext's and the backends' real ports, and
//! for the egress gateway a DNS resolver on loopback (below) and the
//! upstream's port in place of 443 for the forwarded connection.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_tests::bootstrap::bootstrap;
use switchyard_tests::xds_ext::{bookinfo, XdsExt};
use switchyard_tests::{http_client, tls, workspace_root, EchoServer, Envoy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const EGRESS_TLS: &str = "switchyard.egress-tls";

fn example(file: &str) -> String {
    let path = workspace_root().join("examples/envoy-gateways").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` with `from` replaced by `to`, which must occur.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "`{from}` not found in the example");
    text.replace(from, to)
}

/// The example bootstrap `file` on loopback: admin and listeners on port 0,
/// xds-ext at `xds_port`.
fn on_loopback(file: &str, listener_port: u16, xds_port: u16) -> String {
    let yaml = replace(&example(file), "address: 127.0.0.1, port_value: 15000", "address: 127.0.0.1, port_value: 0");
    let yaml =
        replace(&yaml, &format!("address: 0.0.0.0, port_value: {listener_port}"), "address: 127.0.0.1, port_value: 0");
    replace(&yaml, "address: XDS_EXT_HOST, port_value: 15012", &format!("address: 127.0.0.1, port_value: {xds_port}"))
}

async fn start_envoy(yaml: &str, xds: &XdsExt) -> Envoy {
    // Envoy merges --config-yaml over the harness's (empty) bootstrap.
    match Envoy::builder(bootstrap(vec![], vec![])).arg("--config-yaml").arg(yaml).start().await {
        Ok(envoy) => envoy,
        Err(e) => panic!("{e}\n--- xds-ext log ---\n{}", xds.log()),
    }
}

#[tokio::test]
async fn the_ingress_gateway_routes_jason_to_reviews_v2_by_the_gateway_bound_virtual_service() {
    let reviews =
        [(18081, EchoServer::start("reviews", "v1").await), (18082, EchoServer::start("reviews", "v2").await)];
    let config = XdsExt::config_dir(&[("ingress-gateway.yaml", &example("policy/ingress-gateway.yaml"))]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let mut yaml = on_loopback("ingress-gateway.yaml", 8080, xds.grpc_port);
    for (port, echo) in &reviews {
        yaml = replace(&yaml, &format!("port_value: {port}"), &format!("port_value: {}", echo.port()));
    }
    let envoy = start_envoy(&yaml, &xds).await;
    let url = format!("{}/reviews/0", envoy.listener_url("http"));
    let client = http_client();

    for (user, version) in [(Some("jason"), "v2"), (None, "v1"), (Some("someone"), "v1")] {
        let mut request = client.get(&url).header("host", "bookinfo.example.com");
        if let Some(user) = user {
            request = request.header("end-user", user);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status().as_u16(), 200, "{user:?}\n{}", envoy.log_tail(30));
        let served = response.headers().get("x-echo-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(served.as_deref(), Some(version), "{user:?}");
    }
    // The gateway is the workload the Gateway selects, and only its
    // VirtualService's host is routed.
    let other = client.get(&url).header("host", "reviews").send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(other.status().as_u16(), 404, "a host the Gateway does not admit is not routed: 404, as in Istio");
    assert!(reviews.iter().all(|(_, echo)| echo.received().iter().all(|r| r.header("x-switchyard-cluster").is_none())));
    assert!(xds.log().contains("proxy connected"), "{}", xds.log());
}

/// A DNS server on loopback that answers every A query with 127.0.0.1 (the
/// egress gateway resolves SNI hosts; no real DNS here), recording the names.
struct LoopbackDns {
    port: u16,
    names: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackDns {
    async fn start() -> LoopbackDns {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = socket.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let names = Arc::new(Mutex::new(Vec::new()));
        let recorded = names.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                if let Some((name, reply)) = dns_answer(&buf[..n]) {
                    recorded.lock().unwrap_or_else(|e| e.into_inner()).push(name);
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        LoopbackDns { port, names, task }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for LoopbackDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The queried name and a reply to a one-question DNS query: 127.0.0.1 for
/// type A, no answer for any other type (RFC 1035 §4.1).
fn dns_answer(query: &[u8]) -> Option<(String, Vec<u8>)> {
    if query.len() < 12 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let question = query.get(12..at + 4)?;
    let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
    let mut reply = vec![query[0], query[1], 0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0];
    reply.extend_from_slice(question);
    if is_a {
        // Name by pointer to the question, type A, class IN, TTL 60, 4 bytes.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((labels.join("."), reply))
}

/// A TCP upstream recording what each connection sent.
struct TcpUpstream {
    port: u16,
    connections: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpUpstream {
    async fn start() -> TcpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
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
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        recorded.lock().unwrap_or_else(|e| e.into_inner())[index].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        TcpUpstream { port, connections, task }
    }

    fn connections(&self) -> Vec<Vec<u8>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for TcpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the gateway closes a connection that sent a ClientHello for
/// `sni`, within 5 s.
async fn closed_after_client_hello(port: u16, sni: &str) -> bool {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(&tls::client_hello(sni)).await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn the_egress_gateway_forwards_a_service_entry_sni_and_closes_an_unknown_one() {
    let upstream = TcpUpstream::start().await;
    let dns = LoopbackDns::start().await;
    let service_entries = bookinfo("service-entry-httpbin-org.yaml");
    let config = XdsExt::config_dir(&[
        ("egress-gateway.yaml", &bookinfo("egress-gateway.yaml")),
        ("service-entry-httpbin-org.yaml", &service_entries),
    ]);
    let xds = XdsExt::start(config.path(), "127.0.0.1:0").await;
    let yaml = on_loopback("egress-gateway.yaml", 443, xds.grpc_port);
    // Whole lines only: "port_value: 443" is also the start of a kernel-chosen
    // port like 44337 substituted above.
    let yaml = replace(&yaml, "port_value: 443\n", &format!("port_value: {}\n", upstream.port));
    let resolver = format!(
        "{{name: egress, dns_lookup_family: V4_ONLY, typed_dns_resolver_config: {{name: envoy.network.dns_resolver.cares, \
         typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, \
         resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {}, protocol: UDP}}}}]}}}}}}",
        dns.port
    );
    let yaml = replace(&yaml, "{name: egress, dns_lookup_family: V4_ONLY}", &resolver);
    let envoy = start_envoy(&yaml, &xds).await;
    let port = envoy.listener_port("tls");

    // A gateway admits the registry hosts on any port (it listens on its
    // Service's target ports), so the loopback listener port needs no
    // ServiceEntry of its own.
    xds.wait_status("egress-gateway", EGRESS_TLS, "SYNCED").await;

    assert!(closed_after_client_hello(port, "evil.example.com").await, "unknown SNI closed\n{}", envoy.log_tail(30));
    assert!(upstream.connections().is_empty(), "no upstream connection for a denied SNI");
    assert!(dns.names().is_empty(), "a denied SNI is not even resolved: {:?}", dns.names());

    let hello = tls::client_hello("www.google.com");
    let mut allowed = TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    allowed.write_all(&hello).await.unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.connections() != vec![hello.clone()] {
        assert!(
            Instant::now() < deadline,
            "www.google.com must reach its upstream with the ClientHello as sent: {:?}\n{}",
            upstream.connections(),
            envoy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let names = dns.names();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "www.google.com"),
        "the gateway resolved the SNI's host: {names:?}"
    );
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_tls_denied_total").await, 1);
    assert_eq!(envoy.counter("wasmcustom.switchyard_egress_tls_allowed_total").await, 1);
}
