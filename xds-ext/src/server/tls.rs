//! Optional TLS, and mTLS, on the gRPC port: `--tls-cert`, `--tls-key` and
//! `--tls-client-ca`, served by tonic's rustls (ring backend).
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
    /// a client without one fails the handshake. Needs --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
}

/// The checked TLS settings of the gRPC port.
pub struct GrpcTls {
    pub config: ServerTlsConfig,
    client_certificates: bool,
}

impl GrpcTls {
    /// For the startup line: `grpc listening on ADDR (tls...)`.
    pub fn describe(&self) -> &'static str {
        if self.client_certificates {
            "tls, client certificates required"
        } else {
            "tls"
        }
    }
}

/// `None` without TLS flags (plaintext); otherwise the checked settings, or
/// an error naming the flag and the file at fault.
pub fn load(args: &TlsArgs) -> Result<Option<GrpcTls>, String> {
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
    Ok(Some(GrpcTls { config, client_certificates: args.tls_client_ca.is_some() }))
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
        assert_eq!(mtls.describe(), "tls, client certificates required");
        assert!(tonic::transport::Server::builder().tls_config(mtls.config).is_ok(), "tonic takes what load checked");
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
