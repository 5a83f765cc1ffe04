//! Switchyard integration-test harness.
//!
//! - [`Envoy`] runs a real Envoy 1.40 process from a bootstrap built with
//!   [`bootstrap`] helpers, on loopback with kernel-chosen ports.
//! - [`EchoServer`] is an in-process HTTP/1.1 + h2c upstream that answers with
//!   a JSON echo of the request and records what it received.
//! - [`http_client`] is a plain-HTTP client that never uses a proxy.
//! - [`sidecar`]: the reviews sidecar whose routing filter comes from
//!   xds-ext, shared by the xds-ext suites.
//! - [`every_filter`]: a sidecar with every HTTP filter over ECDS from
//!   xds-ext, for the churn, control-plane-loss and hostile-request suites.
//! - [`xds_ext::XdsExt`] runs the real `xds-ext serve` with a temp config
//!   directory, for Envoys that get their filters over ECDS.
//! - [`envoyfilter`]: applies Istio EnvoyFilter patches to an istiod-shaped
//!   Envoy config (a test helper, not istiod).
//! - [`istiod`]: Envoy configs shaped and named as istiod sends them, from
//!   files, and the manifests to patch them with.
//! - [`tls::client_hello`] builds a TLS ClientHello with an SNI, for
//!   SNI-based network filters (no TLS stack needed).

pub mod bootstrap;
pub mod echo;
pub mod envoy;
pub mod envoyfilter;
pub mod every_filter;
pub mod istiod;
pub mod sidecar;
pub mod tls;
pub mod xds_ext;

use std::fmt;
use std::path::PathBuf;

pub use echo::{CallReport, EchoOptions, EchoResponse, EchoServer, ReceivedRequest};
pub use envoy::{envoy_binary, Envoy, EnvoyBuilder};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A plain-HTTP client for tests: no proxy from the environment, no pooling
/// surprises across Envoys (each test makes its own), 30 s overall timeout.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("building the reqwest client: {e}"))
}

/// Everything the harness can fail with. `Display` carries the whole story,
/// including Envoy's last log lines where Envoy is involved.
#[derive(Debug)]
pub enum HarnessError {
    /// No Envoy binary where we looked.
    EnvoyNotFound(PathBuf),
    /// An Envoy binary that is not 1.40.x.
    WrongEnvoyVersion { path: PathBuf, found: String },
    /// A wasm module that has not been built.
    ModuleMissing(PathBuf),
    /// An I/O error, with what we were doing.
    Io { context: String, source: std::io::Error },
    /// Envoy exited or never became ready; `log_tail` is its last log lines.
    EnvoyStartup { reason: String, log_tail: String },
    /// Envoy was expected to refuse its config but became ready.
    EnvoyUnexpectedlyStarted { log_tail: String },
    /// A call to Envoy's admin interface failed.
    Admin(String),
    /// Anything else.
    Other(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io { context: context.into(), source }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::EnvoyNotFound(p) => {
                write!(f, "envoy not found at {}: run `make setup`", p.display())
            }
            HarnessError::WrongEnvoyVersion { path, found } => write!(
                f,
                "envoy at {} is not Envoy 1.40 (found `{}`): run `make setup` or set SWITCHYARD_ENVOY",
                path.display(),
                found.trim()
            ),
            HarnessError::ModuleMissing(p) => {
                write!(f, "wasm module not found at {}: run `make build`", p.display())
            }
            HarnessError::Io { context, source } => write!(f, "{context}: {source}"),
            HarnessError::EnvoyStartup { reason, log_tail } => {
                write!(f, "envoy failed to start: {reason}\n--- envoy log (last lines) ---\n{log_tail}")
            }
            HarnessError::EnvoyUnexpectedlyStarted { log_tail } => write!(
                f,
                "envoy was expected to refuse its config but became ready\n--- envoy log (last lines) ---\n{log_tail}"
            ),
            HarnessError::Admin(m) => write!(f, "envoy admin: {m}"),
            HarnessError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HarnessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HarnessError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
