//! xds-ext's gRPC port over TLS and mTLS, with real Envoys: an Envoy whose
//! `xds-ext` cluster speaks TLS gets its routing config and routes by it; with
//! `--tls-client-ca` only an Envoy presenting a certificate of that CA does,
//! and only for the namespace (and service account) its certificate's SPIFFE
//! ID names; bad TLS flags stop xds-ext at start with the flag and file named.
//!
//! Certificates are made at run time (rcgen) into a temp dir: none is
//! committed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde_json::{json, Value};
use switchyard_tests::bootstrap::{module_path, static_cluster, xds_ext_binary};
use switchyard_tests::sidecar::{reviews_to, routing_sidecar, versions, Reviews, ROUTING};
use switchyard_tests::xds_ext::XdsExt;
use switchyard_tests::{http_client, Envoy};
const UPDATE_SUCCESS: &str = "extension_config_discovery.http_filter.switchyard.routing.update_success";
const UPSTREAM_TLS_CONTEXT: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
/// The name the server certificate carries and Envoy asks for (SNI) and checks.
const SERVER_NAME: &str = "xds-ext";
/// The SPIFFE ID of the productpage sidecar in `default`, as Istio issues it.
const PRODUCTPAGE_ID: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
/// The same service account in namespace `prod`.
const PROD_ID: &str = "spiffe://cluster.local/ns/prod/sa/bookinfo-productpage";
const DENIED: &str = "xds_ext_streams_denied_total";

/// A CA, a server certificate for `xds-ext` / 127.0.0.1, client
/// certificates from the same CA (`client`: productpage in `default`;
/// `prod-client`: productpage in `prod`; `dns-client`: no SPIFFE ID, a DNS
/// name only) and one from a CA nobody trusts, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("switchyard-pki-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pki = Pki { dir };
        let ca = pki.ca("ca", "switchyard test CA");
        pki.leaf("server", &ca, &[SERVER_NAME, "127.0.0.1"], &[], ExtendedKeyUsagePurpose::ServerAuth);
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        pki.leaf("client", &ca, &["productpage.default"], &[PRODUCTPAGE_ID], client.clone());
        pki.leaf("prod-client", &ca, &["productpage.prod"], &[PROD_ID], client.clone());
        pki.leaf("dns-client", &ca, &["productpage.default"], &[], client.clone());
        let rogue = pki.ca("rogue-ca", "a CA xds-ext does not trust");
        pki.leaf("rogue-client", &rogue, &["productpage.default"], &[PRODUCTPAGE_ID], client);
        pki
    }

    /// `<name>.pem`, `<name>-key.pem`; the CA as an issuer for leaves.
    fn ca(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        self.write(name, &cert.pem(), &key.serialize_pem());
        Issuer::new(params, key)
    }

    /// `<name>.pem`, `<name>-key.pem`: a leaf for `names` (DNS names or
    /// IPs) and `uris` (URI SANs: SPIFFE IDs).
    fn leaf(
        &self,
        name: &str,
        issuer: &Issuer<'static, KeyPair>,
        names: &[&str],
        uris: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap_or_else(|e| panic!("{e}"));
        for uri in uris {
            let uri = (*uri).try_into().unwrap_or_else(|e| panic!("{uri}: {e}"));
            params.subject_alt_names.push(SanType::URI(uri));
        }
        params.distinguished_name.push(DnType::CommonName, names[0].as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, issuer).unwrap_or_else(|e| panic!("{e}"));
        self.write(name, &cert.pem(), &key.serialize_pem());
    }

    fn write(&self, name: &str, cert: &str, key: &str) {
        for (file, text) in [(format!("{name}.pem"), cert), (format!("{name}-key.pem"), key)] {
            std::fs::write(self.dir.path().join(&file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `--tls-cert server.pem --tls-key server-key.pem`, plus `extra`.
    fn server_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args =
            vec!["--tls-cert".to_owned(), self.arg("server.pem"), "--tls-key".to_owned(), self.arg("server-key.pem")];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).to_string_lossy().into_owned()
    }

    /// Envoy's UpstreamTlsContext for the xds-ext cluster: HTTP/2 by ALPN,
    /// SNI `xds-ext`, the server checked against our CA and its name; with
    /// `client`, that certificate (`client`, `prod-client`, `dns-client` or
    /// `rogue-client`) is presented.
    fn envoy_transport_socket(&self, client: Option<&str>) -> Value {
        let mut common = json!({
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": self.arg("ca.pem")},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": SERVER_NAME}}],
            },
        });
        if let Some(name) = client {
            common["tls_certificates"] = json!([{
                "certificate_chain": {"filename": self.arg(&format!("{name}.pem"))},
                "private_key": {"filename": self.arg(&format!("{name}-key.pem"))},
            }]);
        }
        json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS_CONTEXT, "sni": SERVER_NAME, "common_tls_context": common},
        })
    }
}

/// A productpage sidecar with the routing filter from xds-ext at
/// `xds_port`, reached over `transport_socket`.
fn sidecar_bootstrap(node_id: &str, xds_port: u16, transport_socket: Value, reviews: &Reviews) -> Value {
    let mut xds = static_cluster("xds-ext", xds_port, true);
    xds["transport_socket"] = transport_socket;
    routing_sidecar(node_id, &[("app", "productpage"), ("version", "v1")], xds, reviews)
}

/// The routing filter stops waiting for its first config after `timeout`, so
/// an Envoy that never gets one still starts (its listener without config).
fn initial_fetch_timeout(bootstrap: &mut Value, timeout: &str) {
    let filter = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0];
    filter["config_discovery"]["config_source"]["initial_fetch_timeout"] = json!(timeout);
}

async fn start_xds(pki: &Pki, extra: &[&str]) -> (tempfile::TempDir, XdsExt) {
    let config = XdsExt::config_dir(&[("reviews.yaml", &reviews_to("v3"))]);
    let routing = module_path("routing").unwrap_or_else(|e| panic!("{e}"));
    let modules = routing.parent().unwrap_or_else(|| Path::new("."));
    let args = pki.server_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let xds = XdsExt::start_with_args(config.path(), "127.0.0.1:0", modules, &args).await;
    (config, xds)
}

/// Does xds-ext list a stream of `node_id`?
async fn has_stream(xds: &XdsExt, node_id: &str) -> bool {
    xds.json("/debug/proxies").await.as_array().into_iter().flatten().any(|p| p["node_id"] == node_id)
}

/// Over `window`, the Envoy never gets a config and xds-ext never sees its
/// node. (Not `control_plane.connected_state`: Envoy sets it to 1 as it
/// starts each attempt's stream, before any handshake, so it flickers.)
async fn assert_never_configured(envoy: &Envoy, xds: &XdsExt, node_id: &str, window: Duration) {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        assert_eq!(envoy.counter(UPDATE_SUCCESS).await, 0, "{node_id} got a config");
        assert!(!has_stream(xds, node_id).await, "xds-ext serves {node_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_envoy_gets_its_config_over_tls_and_routes_by_it() {
    let pki = Pki::new();
    let reviews = Reviews::start().await;
    let (_config, xds) = start_xds(&pki, &[]).await;
    assert!(xds.log().contains(&format!("grpc listening on 127.0.0.1:{} (tls)", xds.grpc_port)), "{}", xds.log());

    let bootstrap = sidecar_bootstrap("productpage-v1", xds.grpc_port, pki.envoy_transport_socket(None), &reviews);
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));

    assert!(versions(&envoy, 24, &[]).await.iter().all(|v| v == "v3"));
    xds.wait_status("productpage-v1", ROUTING, "SYNCED").await;
    assert_eq!(envoy.counter(UPDATE_SUCCESS).await, 1);
    // The handshake happened: Envoy counts the TLS connection it made.
    assert!(envoy.counter("cluster.xds-ext.ssl.handshake").await >= 1);
}

#[tokio::test]
async fn with_a_client_ca_only_an_envoy_presenting_a_certificate_of_that_ca_is_served() {
    let pki = Pki::new();
    let reviews = Reviews::start().await;
    let (_config, xds) = start_xds(&pki, &["--tls-client-ca", &pki.arg("ca.pem")]).await;
    assert!(
        xds.log().contains(&format!(
            "grpc listening on 127.0.0.1:{} (tls, client certificates required, SPIFFE ID bound to the node)",
            xds.grpc_port
        )),
        "{}",
        xds.log()
    );

    let trusted = sidecar_bootstrap("trusted", xds.grpc_port, pki.envoy_transport_socket(Some("client")), &reviews);
    let mut anonymous = sidecar_bootstrap("anonymous", xds.grpc_port, pki.envoy_transport_socket(None), &reviews);
    initial_fetch_timeout(&mut anonymous, "0.5s");
    let mut rogue =
        sidecar_bootstrap("rogue", xds.grpc_port, pki.envoy_transport_socket(Some("rogue-client")), &reviews);
    initial_fetch_timeout(&mut rogue, "0.5s");
    let (trusted, anonymous, rogue) = tokio::join!(Envoy::start(trusted), Envoy::start(anonymous), Envoy::start(rogue));
    let (trusted, anonymous, rogue) = (
        trusted.unwrap_or_else(|e| panic!("{e}")),
        anonymous.unwrap_or_else(|e| panic!("{e}")),
        rogue.unwrap_or_else(|e| panic!("{e}")),
    );

    assert!(versions(&trusted, 24, &[]).await.iter().all(|v| v == "v3"));
    xds.wait_status("trusted", ROUTING, "SYNCED").await;
    assert!(xds.log().contains(&format!("(default app=productpage,version=v1) as {PRODUCTPAGE_ID}")), "{}", xds.log());
    // Both keep retrying (0.1 s to 1 s backoff): a couple of seconds covers
    // several refused handshakes each.
    let window = Duration::from_secs(2);
    tokio::join!(
        assert_never_configured(&anonymous, &xds, "anonymous", window),
        assert_never_configured(&rogue, &xds, "rogue", window),
    );
    for (name, envoy) in [("anonymous", &anonymous), ("rogue", &rogue)] {
        // Refused at the handshake, again and again. Envoy's upstream TLS goes
        // up to 1.2 by default, where the server checks the client's
        // certificate before either side calls the handshake done.
        assert!(envoy.counter("cluster.xds-ext.ssl.connection_error").await >= 2, "{name}: no refused handshakes");
        assert_eq!(envoy.counter("cluster.xds-ext.ssl.handshake").await, 0, "{name}: a TLS session");
        let url = format!("{}/reviews/0", envoy.listener_url("main"));
        let reply = http_client().get(&url).header("host", "reviews").send().await.unwrap_or_else(|e| panic!("{e}"));
        // A filter that never got its config answers 500 itself: nothing reaches reviews.
        assert_eq!(reply.status(), 500, "{name}");
        assert!(reply.headers().get("x-echo-version").is_none(), "{name} reached reviews");
    }
}

/// An Envoy in `default` whose node sends SERVICE_ACCOUNT `service_account`.
fn with_service_account(mut bootstrap: Value, service_account: &str) -> Value {
    bootstrap["node"]["metadata"]["SERVICE_ACCOUNT"] = json!(service_account);
    bootstrap
}

#[tokio::test]
async fn with_a_client_ca_an_envoy_gets_only_the_config_of_the_namespace_its_certificate_names() {
    let pki = Pki::new();
    let reviews = Reviews::start().await;
    let (_config, xds) = start_xds(&pki, &["--tls-client-ca", &pki.arg("ca.pem")]).await;
    let sidecar = |node_id: &str, client: &str| {
        let mut bootstrap =
            sidecar_bootstrap(node_id, xds.grpc_port, pki.envoy_transport_socket(Some(client)), &reviews);
        initial_fetch_timeout(&mut bootstrap, "0.5s");
        bootstrap
    };
    // Every one claims to be productpage in `default`.
    let own = with_service_account(sidecar("own", "client"), "bookinfo-productpage");
    let other_namespace = sidecar("other-namespace", "prod-client");
    let other_account = with_service_account(sidecar("other-account", "client"), "bookinfo-reviews");
    let no_spiffe = sidecar("no-spiffe", "dns-client");
    let (own, other_namespace, other_account, no_spiffe) = tokio::join!(
        Envoy::start(own),
        Envoy::start(other_namespace),
        Envoy::start(other_account),
        Envoy::start(no_spiffe)
    );
    let start = |e: Result<Envoy, _>| e.unwrap_or_else(|e| panic!("{e}"));
    let (own, other_namespace, other_account, no_spiffe) =
        (start(own), start(other_namespace), start(other_account), start(no_spiffe));

    assert!(versions(&own, 24, &[]).await.iter().all(|v| v == "v3"));
    xds.wait_status("own", ROUTING, "SYNCED").await;

    let refused = [("other-namespace", &other_namespace), ("other-account", &other_account), ("no-spiffe", &no_spiffe)];
    let window = Duration::from_secs(2);
    tokio::join!(
        assert_never_configured(&other_namespace, &xds, "other-namespace", window),
        assert_never_configured(&other_account, &xds, "other-account", window),
        assert_never_configured(&no_spiffe, &xds, "no-spiffe", window),
    );
    for (name, envoy) in refused {
        // Refused after the handshake, by the identity check: TLS itself succeeded.
        assert!(envoy.counter("cluster.xds-ext.ssl.handshake").await >= 1, "{name}: no TLS session");
        let url = format!("{}/reviews/0", envoy.listener_url("main"));
        let reply = http_client().get(&url).header("host", "reviews").send().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status(), 500, "{name}");
        assert!(reply.headers().get("x-echo-version").is_none(), "{name} reached reviews");
    }
    let log = xds.log();
    for reason in [
        format!(
            "PERMISSION_DENIED: node \"other-namespace\" asks for the config of namespace \"default\", but its \
             client certificate is {PROD_ID}"
        ),
        format!(
            "PERMISSION_DENIED: node \"other-account\" asks for the config of namespace \"default\", service \
             account \"bookinfo-reviews\", but its client certificate is {PRODUCTPAGE_ID}"
        ),
        "PERMISSION_DENIED: node \"no-spiffe\": its client certificate has no URI SAN".to_owned(),
    ] {
        assert!(log.contains(&reason), "no {reason:?} in:\n{log}");
    }
    // Each keeps retrying and is refused each time.
    assert!(xds.metric(DENIED).await >= 6.0, "{}", xds.metric(DENIED).await);
}

#[tokio::test]
async fn tls_any_client_identity_serves_any_certificate_of_the_ca() {
    let pki = Pki::new();
    let reviews = Reviews::start().await;
    let args = ["--tls-client-ca", &pki.arg("ca.pem"), "--tls-any-client-identity"];
    let (_config, xds) = start_xds(&pki, &args).await;
    assert!(xds.log().contains("(tls, client certificates required, any identity)"), "{}", xds.log());
    let bootstrap =
        sidecar_bootstrap("no-spiffe", xds.grpc_port, pki.envoy_transport_socket(Some("dns-client")), &reviews);
    let envoy = Envoy::start(bootstrap).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(versions(&envoy, 8, &[]).await.iter().all(|v| v == "v3"));
    xds.wait_status("no-spiffe", ROUTING, "SYNCED").await;
    assert_eq!(xds.metric(DENIED).await, 0.0);
}

/// `xds-ext serve` with `args` after the config dir, expected to exit
/// within 10 s: its exit code and stderr.
fn serve_fails(args: &[&str]) -> (Option<i32>, String) {
    let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
    let config = XdsExt::config_dir(&[]);
    let log = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(&binary)
        .arg("serve")
        .arg("--config-dir")
        .arg(config.path())
        .args(["--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xds-ext {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(!stderr.contains("listening on"), "it listened before failing: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (status.code(), stderr)
}

#[test]
fn bad_tls_flags_stop_xds_ext_at_start_naming_the_flag_and_the_file() {
    let pki = Pki::new();
    let (server, server_key, client_key) =
        (pki.arg("server.pem"), pki.arg("server-key.pem"), pki.arg("client-key.pem"));
    let missing = pki.arg("missing.pem");

    let (code, stderr) = serve_fails(&["--tls-cert", &missing, "--tls-key", &server_key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--tls-cert {missing}: No such file")), "{stderr}");

    let (code, stderr) = serve_fails(&["--tls-cert", &server, "--tls-key", &client_key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--tls-key {client_key} does not match the certificate in --tls-cert {server} (not its private key)"
        )),
        "{stderr}"
    );

    let (code, stderr) = serve_fails(&["--tls-cert", &server_key, "--tls-key", &server_key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--tls-cert {server_key}: no PEM certificate in it")), "{stderr}");

    let (code, stderr) = serve_fails(&["--tls-key", &server_key]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--tls-key needs --tls-cert"), "{stderr}");

    let (code, stderr) = serve_fails(&["--tls-cert", &server, "--tls-key", &server_key, "--tls-client-ca", &missing]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--tls-client-ca {missing}: No such file")), "{stderr}");

    let (code, stderr) =
        serve_fails(&["--tls-cert", &server, "--tls-key", &server_key, "--trust-domain", "cluster.local"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--trust-domain needs --tls-client-ca"), "{stderr}");
}
