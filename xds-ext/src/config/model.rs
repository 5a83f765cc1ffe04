//! The input documents, decoded: only what rendering uses, each piece that
//! can fail at render time keeping its line and field path.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use switchyard_policy::compare::CompareConfig;
use switchyard_policy::egress::OutboundTrafficPolicy;
use switchyard_policy::routing::{DirectResponseConfig, RedirectConfig, RewriteConfig, StickyConfig};
use switchyard_policy::{HeadersConfig, HttpMatchRequest, RetriesConfig};

use super::tree::Tree;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    Service,
    TrafficPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Service => "Service",
            Kind::TrafficPolicy => "TrafficPolicy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies a document, as in Kubernetes: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One valid input document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub key: DocKey,
    pub file: PathBuf,
    /// Line where the document starts in `file`.
    pub line: usize,
    /// The YAML as read, to find the line of a field named in a problem.
    pub tree: Tree,
    pub spec: Spec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    Gateway(Gateway),
    ServiceEntry(ServiceEntry),
    Sidecar(Sidecar),
    Service(Service),
    TrafficPolicy(TrafficPolicy),
}

/// A place in a source document, for problems found while rendering.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub line: usize,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualService {
    pub hosts: Vec<String>,
    /// As written: `mesh`, `name` or `namespace/name`. Empty means `mesh`.
    pub gateways: Vec<String>,
    pub export_to: Vec<String>,
    pub http: Vec<HttpRule>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRule {
    pub name: Option<String>,
    pub origin: Origin,
    pub matches: Vec<MatchBlock>,
    /// True when the rule has nothing we can apply: it is skipped when
    /// rendering.
    pub skipped: bool,
    pub route: Vec<RouteDestination>,
    pub redirect: Option<RedirectConfig>,
    pub direct_response: Option<DirectResponseConfig>,
    pub rewrite: Option<RewriteConfig>,
    pub timeout: Option<String>,
    pub retries: Option<RetriesConfig>,
    pub headers: Option<HeadersConfig>,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
    pub sticky: Option<StickyConfig>,
    /// `delegate`: the rule is replaced by the delegate's rules.
    pub delegate: Option<Delegate>,
}

/// A root rule's `delegate`: a VirtualService without hosts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delegate {
    pub name: String,
    /// `None`: the root's namespace.
    pub namespace: Option<String>,
}

/// One `match` entry: the part the filters evaluate per request, and the
/// part decided per workload at render time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchBlock {
    pub request: HttpMatchRequest,
    pub source_labels: BTreeMap<String, String>,
    pub source_namespace: Option<String>,
    pub gateways: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteDestination {
    pub destination: DestinationRef,
    pub weight: Option<u32>,
    pub headers: Option<HeadersConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRef {
    pub host: String,
    pub subset: Option<String>,
    pub port: Option<u16>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultDelay {
    pub fixed_delay: String,
    pub percentage: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortStatus {
    Http(u32),
    Grpc(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultAbort {
    pub status: AbortStatus,
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub destination: DestinationRef,
    /// `None`: 100 %.
    pub percentage: Option<f64>,
    /// A TrafficPolicy's `mirrors[]` only (Switchyard's fields): the shadow
    /// timeout, the per-worker in-flight cap and the comparison, checked
    /// when rendered. `origin` is the entry's place, for their problems.
    pub timeout: Option<String>,
    pub max_in_flight: Option<u32>,
    pub compare: Option<CompareConfig>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DestinationRule {
    pub host: String,
    pub subsets: Vec<String>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gateway {
    pub selector: BTreeMap<String, String>,
    /// Server hosts, `namespace/host` or `host` (every server's).
    pub hosts: Vec<String>,
    pub servers: Vec<GatewayServer>,
}

/// One `servers[]` entry: what `xds-ext manifests` needs to name the
/// virtual hosts istiod builds for it (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayServer {
    /// `None` when the port is missing or invalid (a problem was reported).
    pub port: Option<Port>,
    pub hosts: Vec<String>,
    /// `tls.mode: PASSTHROUGH` or `AUTO_PASSTHROUGH`: no HTTP routes.
    pub passthrough: bool,
    /// `tls.httpsRedirect`: requests that are not https get a 301 to https.
    pub https_redirect: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Port {
    pub number: u16,
    pub name: String,
    /// `protocol` of a ServiceEntry port, `appProtocol` of a Service port.
    pub protocol: String,
}

impl Port {
    /// Whether Istio would treat the port as HTTP (by protocol, or by the
    /// `http-`/`grpc-` name prefix convention).
    pub fn is_http(&self) -> bool {
        let http = |s: &str| {
            let s = s.to_ascii_lowercase();
            ["http", "http2", "grpc", "grpc-web", "h2c"].iter().any(|p| s == *p || s.starts_with(&format!("{p}-")))
        };
        http(&self.protocol) || http(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceEntry {
    pub hosts: Vec<String>,
    pub ports: Vec<Port>,
    pub export_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sidecar {
    /// `None`: every workload of the namespace.
    pub selector: Option<BTreeMap<String, String>>,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// `egress[].hosts`, `namespace/host` patterns; empty: no restriction.
    pub egress_hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    pub ports: Vec<Port>,
}

/// `switchyard.dev/v1alpha1` `TrafficPolicy`: VirtualService-style rules for
/// the workloads of its namespace that `workloadSelector` selects.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficPolicy {
    /// `None`: every workload of the namespace.
    pub selector: Option<BTreeMap<String, String>>,
    pub hosts: Vec<String>,
    pub http: Vec<HttpRule>,
}
