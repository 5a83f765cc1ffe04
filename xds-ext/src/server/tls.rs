//! Optional TLS, and mTLS, on the gRPC port: `--tls-cert`, `--tls-key` and
//! `--tls-client-ca`, served by tonic's rustls (ring backend). With client
//! certificates, each stream's node is bound to its certificate's SPIFFE ID
//! (`spiffe.rs`) unless `--tls-any-client-identity` says otherwise.
//!
//! Every file is read and checked here before tonic sees it, because tonic
//! reports a bad input as "Error parsing TLS certificate." or not at all (a
//! file without PEM blocks is an empty list to it, a CA file without one
//! fails only as "no root anchors"): each problem below names its flag and
//! file, and the process exits before it listens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::spiffe::IdentityCheck;

/// A client that connects and never finishes its handshake would hold a
/// task and a socket forever: tonic has no handshake deadline of its own.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Default)]
pub struct TlsArgs {
    /// Serve gRPC over TLS with this certificate chain (PEM, leaf first);
    /// needs --tls-key. Envoy's cluster then needs an
    /// `envoy.transport_sockets.tls` transport socket with ALPN h2.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by one of these CAs (PEM) — mTLS;
    /// a client without one fails the handshake. Needs --tls-cert. Each
    /// stream's node must then be named by its certificate: a URI SAN
    /// spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT with the node's
    /// NAMESPACE metadata (`default` when absent) and its SERVICE_ACCOUNT
    /// when the node sends one, as istiod checks; otherwise the stream ends
    /// with PERMISSION_DENIED.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: the SPIFFE trust domain client certificates
    /// must name (e.g. cluster.local, Istio's default). Without it any
    /// trust domain the CA signed is accepted.
    #[arg(long, value_name = "DOMAIN")]
    trust_domain: Option<String>,
    /// With --tls-client-ca: serve any node to any certificate of that CA,
    /// without the SPIFFE check (istiod's PILOT_ENABLE_XDS_IDENTITY_CHECK=false).
    /// Any proxy holding such a certificate can then read every workload's config.
    #[arg(long)]
    tls_any_client_identity: bool,
}

/// The checked TLS settings of the gRPC port.
pub struct GrpcTls {
    pub config: ServerTlsConfig,
    client_certificates: bool,
    identity: Option<IdentityCheck>,
}

impl GrpcTls {
    /// For the startup line: `grpc listening on ADDR (tls...)`.
    pub fn describe(&self) -> String {
        match (self.client_certificates, &self.identity) {
            (false, _) => "tls".to_owned(),
            (true, None) => "tls, client certificates required, any identity".to_owned(),
            (true, Some(IdentityCheck { trust_domain: None })) => {
                "tls, client certificates required, SPIFFE ID bound to the node".to_owned()
            }
            (true, Some(IdentityCheck { trust_domain: Some(domain) })) => {
                format!("tls, client certificates required, SPIFFE ID bound to the node, trust domain {domain}")
            }
        }
    }

    /// The check each stream's first request goes through, if any.
    pub fn identity_check(&self) -> Option<IdentityCheck> {
        self.identity.clone()
    }
}

/// `None` without TLS flags (plaintext); otherwise the checked settings, or
/// an error naming the flag and the file at fault.
pub fn load(args: &TlsArgs) -> Result<Option<GrpcTls>, String> {
    let identity = identity_check(args)?;
    let (cert_path, key_path) = match (&args.tls_cert, &args.tls_key, &args.tls_client_ca) {
        (None, None, None) => return Ok(None),
        (Some(cert), Some(key), _) => (cert.as_path(), key.as_path()),
        (Some(_), None, _) => return Err("--tls-cert needs --tls-key (the certificate's private key)".into()),
        (None, Some(_), _) => return Err("--tls-key needs --tls-cert (the certificate it belongs to)".into()),
        (None, None, Some(_)) => {
            return Err("--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS that also checks clients".into())
        }
    };
    // tonic builds its rustls config with the process-wide provider, and
    // rustls panics choosing one if a dependency ever compiles in a second
    // backend: settle it here. An error only means one is installed already.
    let provider = ring::default_provider();
    let _ = provider.clone().install_default();

    let cert_pem = read("--tls-cert", cert_path)?;
    let key_pem = read("--tls-key", key_path)?;
    check_identity(&provider, cert_path, &cert_pem, key_path, &key_pem)?;
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)).timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca_path) = &args.tls_client_ca {
        let ca_pem = read("--tls-client-ca", ca_path)?;
        check_client_ca(&provider, ca_path, &ca_pem)?;
        config = config.client_ca_root(Certificate::from_pem(ca_pem));
    }
    Ok(Some(GrpcTls { config, client_certificates: args.tls_client_ca.is_some(), identity }))
}

/// The SPIFFE binding of client certificates to nodes: on with
/// --tls-client-ca unless --tls-any-client-identity.
fn identity_check(args: &TlsArgs) -> Result<Option<IdentityCheck>, String> {
    let domain = args.trust_domain.as_deref();
    match (&args.tls_client_ca, args.tls_any_client_identity, domain) {
        (None, true, _) => Err("--tls-any-client-identity needs --tls-client-ca (it relaxes the client check)".into()),
        (None, false, Some(_)) => Err("--trust-domain needs --tls-client-ca (client certificates name it)".into()),
        (Some(_), true, Some(_)) => {
            Err("--trust-domain and --tls-any-client-identity contradict each other: the first checks identities, \
                 the second turns the check off"
                .into())
        }
        (Some(_), false, Some(d)) if d.is_empty() || d.contains(['/', ' ']) => {
            Err(format!("--trust-domain {d:?} is not a trust domain (a name like cluster.local)"))
        }
        (Some(_), false, _) => Ok(Some(IdentityCheck { trust_domain: domain.map(str::to_owned) })),
        (_, _, None) => Ok(None),
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// The certificates parse and the key is the private half of the first one.
fn check_identity(
    provider: &CryptoProvider,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), String> {
    let chain = certificates("--tls-cert", cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "--tls-key {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC one)",
            key_path.display()
        ),
        e => format!("--tls-key {}: not valid PEM: {e}", key_path.display()),
    })?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("--tls-key {}: unusable private key: {e}", key_path.display()))?;
    match CertifiedKey::new(chain, key).keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(format!(
            "--tls-key {} does not match the certificate in --tls-cert {} (not its private key)",
            key_path.display(),
            cert_path.display()
        )),
        Err(e) => Err(format!("--tls-cert {}: not a usable certificate: {e}", cert_path.display())),
    }
}

/// Every certificate of the file is a CA clients can chain to.
fn check_client_ca(provider: &CryptoProvider, path: &Path, pem: &[u8]) -> Result<(), String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates("--tls-client-ca", path, pem)? {
        roots.add(cert).map_err(|e| format!("--tls-client-ca {}: not a usable CA certificate: {e}", path.display()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider.clone()))
        .build()
        .map(drop)
        .map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))
}

/// The PEM certificates of a file: at least one, and nothing malformed.
fn certificates(flag: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{flag} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        /// A CA, a server certificate it signed and that certificate's key,
        /// plus a second key that belongs to nothing.
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca_params, ca_key);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert =
                rcgen::CertificateParams::new(vec!["xds-ext".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
            let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
            write("ca.pem", ca.pem());
            write("cert.pem", cert.pem());
            write("key.pem", key.serialize_pem());
            write("other-key.pem", rcgen::KeyPair::generate().unwrap().serialize_pem());
            write("notes.txt", "not a certificate\n".to_owned());
            Files { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn args(&self, cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> TlsArgs {
            TlsArgs {
                tls_cert: cert.map(|n| self.path(n)),
                tls_key: key.map(|n| self.path(n)),
                tls_client_ca: ca.map(|n| self.path(n)),
                ..TlsArgs::default()
            }
        }

        fn error(&self, cert: Option<&str>, key: Option<&str>, ca: Option<&str>) -> String {
            match load(&self.args(cert, key, ca)) {
                Ok(_) => panic!("{cert:?} {key:?} {ca:?} accepted"),
                Err(e) => e,
            }
        }
    }

    #[test]
    fn without_flags_the_port_stays_plaintext() {
        assert!(load(&TlsArgs::default()).unwrap().is_none());
    }

    #[test]
    fn a_cert_with_its_key_is_tls_and_a_client_ca_makes_it_mtls() {
        let files = Files::new();
        let tls = load(&files.args(Some("cert.pem"), Some("key.pem"), None)).unwrap().unwrap();
        assert_eq!(tls.describe(), "tls");
        let mtls = load(&files.args(Some("cert.pem"), Some("key.pem"), Some("ca.pem"))).unwrap().unwrap();
        assert_eq!(mtls.describe(), "tls, client certificates required, SPIFFE ID bound to the node");
        assert!(mtls.identity_check().is_some(), "mTLS binds identities by default");
        assert!(tonic::transport::Server::builder().tls_config(mtls.config).is_ok(), "tonic takes what load checked");
    }

    #[test]
    fn the_identity_check_follows_its_flags() {
        let files = Files::new();
        let mtls = |trust_domain: Option<&str>, any: bool| TlsArgs {
            trust_domain: trust_domain.map(str::to_owned),
            tls_any_client_identity: any,
            ..files.args(Some("cert.pem"), Some("key.pem"), Some("ca.pem"))
        };
        let strict = load(&mtls(Some("cluster.local"), false)).unwrap().unwrap();
        assert_eq!(strict.identity_check().unwrap().trust_domain.as_deref(), Some("cluster.local"));
        assert!(strict.describe().ends_with("bound to the node, trust domain cluster.local"), "{}", strict.describe());
        let any = load(&mtls(None, true)).unwrap().unwrap();
        assert!(any.identity_check().is_none());
        assert_eq!(any.describe(), "tls, client certificates required, any identity");
        let error = |args: TlsArgs| load(&args).err().unwrap();
        assert!(error(mtls(Some("cluster.local"), true)).contains("contradict each other"));
        assert!(error(mtls(Some("a/b"), false)).starts_with("--trust-domain \"a/b\" is not a trust domain"));
        let tls_only = |trust_domain: Option<&str>, any: bool| TlsArgs {
            trust_domain: trust_domain.map(str::to_owned),
            tls_any_client_identity: any,
            ..files.args(Some("cert.pem"), Some("key.pem"), None)
        };
        assert!(error(tls_only(Some("cluster.local"), false)).starts_with("--trust-domain needs --tls-client-ca"));
        assert!(error(tls_only(None, true)).starts_with("--tls-any-client-identity needs --tls-client-ca"));
    }

    #[test]
    fn flags_come_in_pairs() {
        let files = Files::new();
        assert!(files.error(Some("cert.pem"), None, None).starts_with("--tls-cert needs --tls-key"));
        assert!(files.error(None, Some("key.pem"), None).starts_with("--tls-key needs --tls-cert"));
        assert!(files.error(None, None, Some("ca.pem")).starts_with("--tls-client-ca needs --tls-cert"));
    }

    #[test]
    fn each_bad_file_is_named_with_its_flag() {
        let files = Files::new();
        let at = |name: &str| files.path(name).display().to_string();
        let missing = files.error(Some("missing.pem"), Some("key.pem"), None);
        assert!(missing.starts_with(&format!("--tls-cert {}: ", at("missing.pem"))), "{missing}");
        assert!(missing.contains("No such file"), "{missing}");
        let not_pem = files.error(Some("notes.txt"), Some("key.pem"), None);
        assert_eq!(
            not_pem,
            format!("--tls-cert {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", at("notes.txt"))
        );
        let swapped = files.error(Some("key.pem"), Some("cert.pem"), None);
        assert!(swapped.starts_with(&format!("--tls-cert {}: no PEM certificate", at("key.pem"))), "{swapped}");
        let no_key = files.error(Some("cert.pem"), Some("cert.pem"), None);
        assert!(no_key.starts_with(&format!("--tls-key {}: no PEM private key", at("cert.pem"))), "{no_key}");
        let ca = files.error(Some("cert.pem"), Some("key.pem"), Some("notes.txt"));
        assert!(ca.starts_with(&format!("--tls-client-ca {}: no PEM certificate", at("notes.txt"))), "{ca}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let files = Files::new();
        assert_eq!(
            files.error(Some("cert.pem"), Some("other-key.pem"), None),
            format!(
                "--tls-key {} does not match the certificate in --tls-cert {} (not its private key)",
                files.path("other-key.pem").display(),
                files.path("cert.pem").display()
            )
        );
    }
}
