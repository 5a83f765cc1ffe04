//! Documents + a workload → the filter configs it receives. The rules are
//! Istio's, as written down in docs/xds-ext.md:
//!
//! - a workload selected by a `Gateway` is a gateway: it gets the
//!   VirtualServices bound to those gateways; any other workload is a
//!   sidecar: it gets the VirtualServices bound to `mesh` (or to nothing)
//!   that are exported to its namespace;
//! - a `TrafficPolicy` of the workload's namespace that selects it replaces
//!   the VirtualService rules for its hosts;
//! - per host, the first VirtualService wins on a sidecar (own namespace
//!   first, then by namespace/name); a gateway merges them in that order;
//! - `match` entries with `sourceLabels`/`sourceNamespace`/`gateways` are
//!   kept only when they apply to this workload; a rule left without any
//!   of its `match` entries is dropped;
//! - on a sidecar, a Kubernetes Service no VirtualService names gets
//!   Istio's default route: its HTTP ports to `outbound|<port>||<fqdn>`.
//!
//! Every rendered config is validated with the filters' own
//! `CompiledX::from_config`; a failure is a problem naming the source
//! document, never a config pushed to Envoy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use switchyard_policy::chain::{ChainConfig, CompiledChain};
use switchyard_policy::egress::{CompiledEgress, EgressConfig, EgressHostConfig, OutboundTrafficPolicy};
use switchyard_policy::fault::{AbortConfig, CompiledFault, DelayConfig, FaultConfig, FaultRouteConfig};
use switchyard_policy::mirror::{CompiledMirror, MirrorConfig, MirrorPolicyConfig, MirrorRouteConfig};
use switchyard_policy::routing::{CompiledRouting, RedirectConfig, RouteConfig, RoutingConfig};
use switchyard_policy::{
    ConfigError, Destination, HttpMatchRequest, KeyedList, RetriesConfig, StringMatch, VirtualHostConfig,
    CONFIG_VERSION,
};

use super::manifests::routes_http;
use super::model::*;
use super::problem::{Findings, Problem, Severity};
use super::yaml::{Node, NodeKind};
use crate::workload::{self, Rendered, Workload};

/// Istio's root namespace: a Sidecar there without selector is the mesh-wide default.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// Retries Istio applies to a route that sets none (its default
/// `defaultHttpRetryPolicy`: 2 attempts; the filter fills in Istio's
/// default `retryOn`).
const ISTIO_DEFAULT_ATTEMPTS: u32 = 2;
const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// The four filter configs of one workload (egress-tls uses the egress one),
/// and what `explain` needs to tell where each rule came from.
#[derive(Debug, Clone)]
pub struct Configs {
    pub routing: RoutingConfig,
    pub fault: FaultConfig,
    pub mirror: MirrorConfig,
    pub egress: EgressConfig,
    /// `virtual_host/rule` → `"VirtualService default/reviews spec.http[0] (FILE:LINE)"`.
    pub sources: BTreeMap<String, String>,
    /// `virtual_host/rule` of fault and mirror rules that are there only to
    /// keep first-match order (they never fire).
    pub fault_fillers: BTreeSet<String>,
    pub mirror_fillers: BTreeSet<String>,
    /// Gateways (`namespace/name`) that select the workload; empty for a sidecar.
    pub gateways: Vec<String>,
}

impl Configs {
    /// The JSON documents, keyed by resource name. The combined config
    /// (`switchyard.http`) is checked as the combined filter reads it: its
    /// bytes through `CompiledChain::from_json`.
    pub fn to_rendered(&self) -> Result<Rendered, Vec<Problem>> {
        let mut resources = BTreeMap::new();
        let json = [
            (workload::RESOURCE_ROUTING, serde_json::to_string(&self.routing)),
            (workload::RESOURCE_FAULT, serde_json::to_string(&self.fault)),
            (workload::RESOURCE_MIRROR, serde_json::to_string(&self.mirror)),
            (workload::RESOURCE_EGRESS, serde_json::to_string(&self.egress)),
            (workload::RESOURCE_EGRESS_TLS, serde_json::to_string(&self.egress)),
            (workload::RESOURCE_HTTP, serde_json::to_string(&self.chain())),
        ];
        for (name, text) in json {
            match text {
                Ok(text) => {
                    resources.insert(name.to_string(), text);
                }
                Err(e) => return Err(vec![workload_problem(name, format!("cannot encode config: {e}"))]),
            }
        }
        if let Some(text) = resources.get(workload::RESOURCE_HTTP) {
            if let Err(e) = CompiledChain::from_json(text.as_bytes()) {
                return Err(vec![workload_problem(workload::RESOURCE_HTTP, e.to_string())]);
            }
        }
        Ok(Rendered { resources })
    }

    /// The combined filter's config (`switchyard.http`): the four configs
    /// above as its sections, without the stages that would do nothing for
    /// this workload (see [`Configs::chain_stages`]).
    pub fn chain(&self) -> ChainConfig {
        let [egress, routing, fault, mirror] = self.chain_stages().map(|(_, left_out)| left_out.is_none());
        ChainConfig {
            version: CONFIG_VERSION,
            egress: egress.then(|| self.egress.clone()),
            routing: routing.then(|| self.routing.clone()),
            fault: fault.then(|| self.fault.clone()),
            mirror: mirror.then(|| self.mirror.clone()),
        }
    }

    /// The combined filter's stages in the order they run, each with why it
    /// is left out of this workload's `switchyard.http` (`None`: it runs).
    /// A workload pays only for the stages that can change a request:
    /// - egress runs under REGISTRY_ONLY only. Under ALLOW_ANY every
    ///   decision is "allow", whatever the hosts (render lists every Service
    ///   even without a Sidecar: they only name the host allowed) or
    ///   `dry_run` (it only softens denials, and ALLOW_ANY denies nothing).
    ///   The one thing lost is the combined filter's
    ///   `switchyard_egress_http_allowed_total` for such a workload;
    /// - routing always runs. Render never sends a routing config that does
    ///   nothing: the one without virtual hosts (a workload no VirtualService
    ///   or Service reaches) still has the filter remove a client-sent
    ///   cluster header from every request, which keeps a client from
    ///   picking its cluster through a `cluster_header` route
    ///   (filters/routing/src/lib.rs). Leaving it out would open that;
    /// - fault and mirror run when they have a virtual host (render leaves
    ///   out the hosts without a fault or mirror rule).
    pub fn chain_stages(&self) -> [(&'static str, Option<&'static str>); 4] {
        let egress = match self.egress.outbound_traffic_policy {
            OutboundTrafficPolicy::RegistryOnly => None,
            OutboundTrafficPolicy::AllowAny => Some("ALLOW_ANY: every host is allowed"),
        };
        let fault = self.fault.virtual_hosts.is_empty().then_some("no fault rules");
        let mirror = self.mirror.virtual_hosts.is_empty().then_some("no mirror rules");
        [("egress", egress), ("routing", None), ("fault", fault), ("mirror", mirror)]
    }
}

fn workload_problem(field: &str, message: String) -> Problem {
    Problem {
        file: PathBuf::new(),
        line: 0,
        document: String::new(),
        field: field.to_string(),
        message,
        severity: Severity::Error,
    }
}

/// Configs that manage nothing (what a workload no policy selects gets).
pub fn empty_configs() -> Configs {
    Configs {
        routing: RoutingConfig {
            version: CONFIG_VERSION,
            cluster_header: None,
            cluster_name_template: None,
            virtual_hosts: vec![],
        },
        fault: FaultConfig { version: CONFIG_VERSION, max_active_faults: None, virtual_hosts: vec![] },
        mirror: MirrorConfig {
            version: CONFIG_VERSION,
            cluster_name_template: None,
            max_body_bytes: None,
            max_pending: None,
            virtual_hosts: vec![],
        },
        egress: EgressConfig {
            version: CONFIG_VERSION,
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            hosts: vec![],
            dry_run: false,
            deny_status: None,
        },
        sources: BTreeMap::new(),
        fault_fillers: BTreeSet::new(),
        mirror_fillers: BTreeSet::new(),
        gateways: vec![],
    }
}

// ---------------------------------------------------------------------------
// Names and visibility

/// A host as Istio resolves it from a document of namespace `ns`: short
/// names become `name.ns.svc.cluster.local`; anything with a dot (or a
/// wildcard) is taken as written. Lowercased.
pub fn fqdn(host: &str, ns: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host.contains('*') {
        host
    } else {
        format!("{host}.{ns}.{CLUSTER_DOMAIN}")
    }
}

/// The `:authority` forms that reach a host from a workload of namespace
/// `from_ns`: for a cluster service `name.ns.svc.cluster.local` also
/// `name.ns.svc`, `name.ns`, and `name` from its own namespace (as Istio's
/// sidecar routes list them). `host:port` forms are the filter's business.
pub fn domains(fqdn: &str, from_ns: &str) -> Vec<String> {
    let mut out = vec![fqdn.to_string()];
    if let Some(short) = fqdn.strip_suffix(&format!(".{CLUSTER_DOMAIN}")) {
        if let Some((name, ns)) = short.split_once('.') {
            if !ns.contains('.') {
                out.push(format!("{short}.svc"));
                out.push(short.to_string());
                if ns == from_ns {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

/// `exportTo` semantics: empty or `*` everywhere, `.` own namespace, `~` nowhere.
pub fn exported_to(export_to: &[String], owner_ns: &str, to_ns: &str) -> bool {
    export_to.is_empty() || export_to.iter().any(|e| e == "*" || e == to_ns || (e == "." && owner_ns == to_ns))
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Host pattern matching with a leading `*` wildcard (either side).
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    if pattern == "*" || pattern == host {
        return true;
    }
    match (pattern.strip_prefix('*'), host.strip_prefix('*')) {
        (Some(suffix), _) => host.ends_with(suffix),
        (None, Some(suffix)) => pattern.ends_with(suffix),
        (None, None) => false,
    }
}

/// `namespace/host` (Gateway servers, Sidecar egress): namespace `*` any,
/// `.` the owner's, `~` none; a bare `host` means `*/host`.
pub(crate) fn ns_host_matches(pattern: &str, owner_ns: &str, ns: &str, host: &str) -> bool {
    let (pns, phost) = pattern.split_once('/').unwrap_or(("*", pattern));
    let ns_ok = match pns {
        "*" => true,
        "." => ns == owner_ns,
        "~" => false,
        other => other == ns,
    };
    ns_ok && host_matches(phost, host)
}

// ---------------------------------------------------------------------------
// The registry: ports and subsets

pub(crate) struct Registry<'a> {
    services: HashMap<(String, String), &'a Service>,
    service_docs: Vec<(&'a Doc, &'a Service)>,
    entries: Vec<(&'a Doc, &'a ServiceEntry)>,
    rules: Vec<(&'a Doc, &'a DestinationRule)>,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(docs: &'a [Doc]) -> Self {
        let mut registry = Registry { services: HashMap::new(), service_docs: vec![], entries: vec![], rules: vec![] };
        for doc in docs {
            match &doc.spec {
                Spec::Service(s) => {
                    registry.services.insert((doc.key.namespace.clone(), doc.key.name.to_ascii_lowercase()), s);
                    registry.service_docs.push((doc, s));
                }
                Spec::ServiceEntry(se) => registry.entries.push((doc, se)),
                Spec::DestinationRule(dr) => registry.rules.push((doc, dr)),
                _ => {}
            }
        }
        registry
    }

    pub(crate) fn ports(&self, fqdn: &str, from_ns: &str) -> Option<&'a [Port]> {
        if let Some((name, ns)) = fqdn.strip_suffix(&format!(".{CLUSTER_DOMAIN}")).and_then(|s| s.split_once('.')) {
            if let Some(service) = self.services.get(&(ns.to_string(), name.to_string())) {
                return Some(&service.ports);
            }
        }
        self.entries
            .iter()
            .find(|(doc, se)| {
                exported_to(&se.export_to, &doc.key.namespace, from_ns)
                    && se.hosts.iter().any(|h| fqdn_eq(&fqdn_of(h, doc), fqdn))
            })
            .map(|(_, se)| se.ports.as_slice())
    }

    /// The port of a destination without one, as istiod picks it: the
    /// Service's (or ServiceEntry's) only port, else the port of the route
    /// table (`listener_port`: the service port on a sidecar, the server
    /// port on a gateway) — even one the Service lacks, whose cluster Envoy
    /// does not have (503), never another port. With the table's port
    /// unknown (load-time checks), the first HTTP port, else the first.
    fn default_port(&self, fqdn: &str, from_ns: &str, listener_port: Option<u16>) -> Option<u16> {
        let ports = self.ports(fqdn, from_ns)?;
        match (ports, listener_port) {
            ([only], _) => Some(only.number),
            ([], _) => None,
            (_, Some(port)) => Some(port),
            (ports, None) => ports.iter().find(|p| p.is_http()).or(ports.first()).map(|p| p.number),
        }
    }

    fn has_subset(&self, fqdn: &str, subset: &str, from_ns: &str) -> bool {
        self.rules.iter().any(|(doc, dr)| {
            exported_to(&dr.export_to, &doc.key.namespace, from_ns)
                && fqdn_eq(&fqdn_of(&dr.host, doc), fqdn)
                && dr.subsets.iter().any(|s| s == subset)
        })
    }

    /// Resolves a destination of a document of namespace `doc_ns`, as seen
    /// from a workload of namespace `from_ns`, on the route table of
    /// `listener_port`.
    pub(crate) fn resolve(
        &self,
        d: &DestinationRef,
        doc_ns: &str,
        from_ns: &str,
        listener_port: Option<u16>,
    ) -> Result<Destination, String> {
        let host = fqdn(&d.host, doc_ns);
        if host.contains('*') {
            return Err(format!("destination host {:?} must not be a wildcard", d.host));
        }
        let port = match d.port {
            Some(port) => port,
            None => self.default_port(&host, from_ns, listener_port).ok_or_else(|| {
                format!(
                    "destination {host} has no port: set destination.port.number, or add the Kubernetes Service \
                     (or a ServiceEntry with ports) for it"
                )
            })?,
        };
        if let Some(subset) = &d.subset {
            if !self.has_subset(&host, subset, from_ns) {
                return Err(format!(
                    "subset {subset:?} of {host} is not defined by any DestinationRule visible in namespace {from_ns} \
                     (Istio would answer 503 for it)"
                ));
            }
        }
        Ok(Destination { host, subset: d.subset.clone(), port: Some(port) })
    }
}

fn fqdn_of(host: &str, doc: &Doc) -> String {
    fqdn(host, &doc.key.namespace)
}

fn fqdn_eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

// ---------------------------------------------------------------------------
// Plans: which rules of which documents go to which virtual host

struct PlannedRule<'a> {
    name: String,
    doc: &'a Doc,
    rule: &'a HttpRule,
    /// The kept `match` entries and their indexes in the source.
    matches: Vec<(usize, HttpMatchRequest)>,
}

struct VhostPlan<'a> {
    name: String,
    domains: Vec<String>,
    /// The Istio port whose route table this is, when the host has one
    /// per port (see [`VirtualHostConfig::port`]).
    port: Option<u16>,
    /// The port a destination without `port.number` goes to (Istio's
    /// listener port), when known.
    listener_port: Option<u16>,
    rules: Vec<PlannedRule<'a>>,
}

/// Who the workload is, for `match` entries decided at render time.
struct Viewer<'a> {
    workload: &'a Workload,
    /// `namespace/name` of the gateways selecting it; empty for a sidecar.
    gateways: Vec<String>,
}

impl Viewer<'_> {
    fn is_gateway(&self) -> bool {
        !self.gateways.is_empty()
    }

    /// Whether a `gateways` list (of a document of namespace `ns`) reaches this workload.
    fn bound(&self, gateways: &[String], ns: &str) -> bool {
        if self.is_gateway() {
            gateways.iter().any(|g| self.gateways.contains(&gateway_ref(g, ns)))
        } else {
            gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
        }
    }

    fn keeps(&self, block: &MatchBlock, ns: &str) -> bool {
        (block.gateways.is_empty() || self.bound(&block.gateways, ns))
            && block.source_namespace.as_ref().is_none_or(|s| *s == self.workload.namespace)
            && selects(&block.source_labels, &self.workload.labels)
    }
}

pub(crate) fn gateway_ref(g: &str, ns: &str) -> String {
    if g.contains('/') {
        g.to_string()
    } else {
        format!("{ns}/{g}")
    }
}

/// The rules of one document as `viewer` gets them on the route table of
/// `port` (`None`: a table for every port, where `match.port` is left to
/// the filter): `match` entries for other workloads or, with a port, for
/// other ports are dropped (istiod's per-port tables), and so is a rule
/// left without any of its entries. A rule with `delegate` is replaced by
/// the delegate's rules, each matching the root's match and its own.
fn plan_rules<'a>(
    docs: &'a [Doc],
    doc: &'a Doc,
    rules: &'a [HttpRule],
    viewer: Option<&Viewer<'_>>,
    port: Option<u16>,
) -> Vec<PlannedRule<'a>> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(delegate) = &rule.delegate {
            let Some((ddoc, dvs)) = find_delegate(docs, delegate, &doc.key.namespace) else { continue };
            for (j, drule) in dvs.http.iter().enumerate() {
                if drule.skipped || drule.delegate.is_some() {
                    continue;
                }
                let merged = merge_matches(&rule.matches, &drule.matches);
                if merged.is_empty() && !(rule.matches.is_empty() && drule.matches.is_empty()) {
                    continue;
                }
                let matches = keep_matches(&merged, &doc.key.namespace, viewer, port);
                if !merged.is_empty() && matches.is_empty() {
                    continue;
                }
                let name = drule.name.clone().unwrap_or_else(|| format!("{}-{j}", ddoc.key.name));
                out.push(PlannedRule { name, doc: ddoc, rule: drule, matches });
            }
            continue;
        }
        if rule.skipped {
            continue;
        }
        let matches = keep_matches(&rule.matches, &doc.key.namespace, viewer, port);
        if !rule.matches.is_empty() && matches.is_empty() {
            continue;
        }
        let name = rule.name.clone().unwrap_or_else(|| format!("{}-{i}", doc.key.name));
        out.push(PlannedRule { name, doc, rule, matches });
    }
    out
}

fn keep_matches(
    blocks: &[MatchBlock],
    ns: &str,
    viewer: Option<&Viewer<'_>>,
    port: Option<u16>,
) -> Vec<(usize, HttpMatchRequest)> {
    blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| viewer.is_none_or(|v| v.keeps(b, ns)))
        .filter(|(_, b)| port.is_none() || b.request.port.is_none() || b.request.port == port)
        .map(|(j, b)| {
            let mut request = b.request.clone();
            if port.is_some() {
                request.port = None; // implied by the table's port
            }
            (j, request)
        })
        .collect()
}

/// The delegate a root rule names: a VirtualService without hosts,
/// exported to the root's namespace.
fn find_delegate<'a>(docs: &'a [Doc], d: &Delegate, root_ns: &str) -> Option<(&'a Doc, &'a VirtualService)> {
    let ns = d.namespace.as_deref().unwrap_or(root_ns);
    docs.iter().find_map(|doc| match &doc.spec {
        Spec::VirtualService(vs)
            if doc.key.namespace == ns
                && doc.key.name == d.name
                && vs.hosts.is_empty()
                && exported_to(&vs.export_to, ns, root_ns) =>
        {
            Some((doc, vs))
        }
        _ => None,
    })
}

/// Istio's merge of a root rule's `match` with a delegate rule's: every
/// pair (root entry, delegate entry) that does not conflict, the delegate's
/// conditions completed by the root's. Either side without `match` leaves
/// the other's entries.
fn merge_matches(root: &[MatchBlock], delegate: &[MatchBlock]) -> Vec<MatchBlock> {
    if root.is_empty() {
        return delegate.to_vec();
    }
    if delegate.is_empty() {
        return root.to_vec();
    }
    let mut out = Vec::new();
    for r in root {
        for d in delegate {
            if let Some(m) = merge_match(r, d) {
                out.push(m);
            }
        }
    }
    out
}

/// One merged entry, or `None` when the two conflict (Istio drops it): the
/// delegate's uri must stay within the root's, and a condition both set
/// must agree.
fn merge_match(root: &MatchBlock, delegate: &MatchBlock) -> Option<MatchBlock> {
    use switchyard_policy::{KeyedList, StringMatch};
    let (r, d) = (&root.request, &delegate.request);
    let same = |a: &Option<StringMatch>, b: &Option<StringMatch>| a.is_none() || b.is_none() || a == b;
    let uri_ok = match (&r.uri, &d.uri) {
        (Some(ru), Some(du)) => match (&ru.prefix, &du.prefix, &du.exact) {
            (Some(rp), Some(dp), _) => dp.starts_with(rp.as_str()),
            (Some(rp), None, Some(de)) => de.starts_with(rp.as_str()),
            _ => ru == du,
        },
        _ => true,
    };
    let keyed_ok = |a: &KeyedList<StringMatch>, b: &KeyedList<StringMatch>| {
        a.0.iter().all(|(k, v)| b.0.iter().all(|(k2, v2)| k != k2 || v == v2))
    };
    let labels_ok = root.source_labels.iter().all(|(k, v)| delegate.source_labels.get(k).is_none_or(|v2| v == v2));
    let conflict = !uri_ok
        || !same(&r.method, &d.method)
        || !same(&r.scheme, &d.scheme)
        || !same(&r.authority, &d.authority)
        || !keyed_ok(&r.headers, &d.headers)
        || !keyed_ok(&r.without_headers, &d.without_headers)
        || !keyed_ok(&r.query_params, &d.query_params)
        || (r.port.is_some() && d.port.is_some() && r.port != d.port)
        || (r.uri.is_some() && d.uri.is_some() && r.ignore_uri_case != d.ignore_uri_case)
        || (root.source_namespace.is_some()
            && delegate.source_namespace.is_some()
            && root.source_namespace != delegate.source_namespace)
        || !labels_ok;
    if conflict {
        return None;
    }
    let mut m = delegate.clone();
    let out = &mut m.request;
    out.name = match (&r.name, &d.name) {
        (Some(a), Some(b)) => Some(format!("{a}-{b}")),
        (a, b) => b.clone().or_else(|| a.clone()),
    };
    out.uri = d.uri.clone().or_else(|| r.uri.clone());
    out.scheme = d.scheme.clone().or_else(|| r.scheme.clone());
    out.method = d.method.clone().or_else(|| r.method.clone());
    out.authority = d.authority.clone().or_else(|| r.authority.clone());
    for (list, root_list) in [
        (&mut out.headers, &r.headers),
        (&mut out.without_headers, &r.without_headers),
        (&mut out.query_params, &r.query_params),
    ] {
        for (k, v) in &root_list.0 {
            if !list.0.iter().any(|(k2, _)| k2 == k) {
                list.0.push((k.clone(), v.clone()));
            }
        }
    }
    if d.uri.is_none() {
        out.ignore_uri_case = r.ignore_uri_case;
    }
    out.port = d.port.or(r.port);
    for (k, v) in &root.source_labels {
        m.source_labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if m.source_namespace.is_none() {
        m.source_namespace = root.source_namespace.clone();
    }
    if m.gateways.is_empty() {
        m.gateways = root.gateways.clone();
    }
    Some(m)
}

fn unique_names(rules: &mut [PlannedRule<'_>]) {
    let mut seen = BTreeSet::new();
    for rule in rules.iter_mut() {
        let mut name = rule.name.clone();
        let mut n = 2;
        while seen.contains(&name) {
            name = format!("{}-{n}", rule.name);
            n += 1;
        }
        seen.insert(name.clone());
        rule.name = name;
    }
}

/// Rules for a host from one document, and the Istio ports whose route
/// tables they are in (`None`: every port the host has).
struct Source<'a> {
    doc: &'a Doc,
    rules: &'a [HttpRule],
    ports: Option<BTreeSet<u16>>,
}

impl Source<'_> {
    fn on(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }
}

fn plan<'a>(
    docs: &'a [Doc],
    defaults: &'a [DefaultRoute<'a>],
    redirects: &'a [HttpsRedirect<'a>],
    registry: &Registry<'a>,
    viewer: &Viewer<'_>,
) -> Vec<VhostPlan<'a>> {
    let ns = viewer.workload.namespace.as_str();
    let mut by_host: BTreeMap<String, Vec<Source<'a>>> = BTreeMap::new();
    let mut policy_hosts = BTreeSet::new();
    for doc in docs {
        let Spec::TrafficPolicy(tp) = &doc.spec else { continue };
        if doc.key.namespace != ns || !tp.selector.as_ref().is_none_or(|s| selects(s, &viewer.workload.labels)) {
            continue;
        }
        for host in &tp.hosts {
            let key = fqdn_of(host, doc);
            if policy_hosts.insert(key.clone()) {
                by_host.insert(key, vec![Source { doc, rules: &tp.http, ports: None }]);
            }
        }
    }
    let gateway_docs: Vec<(&Doc, &Gateway)> = docs
        .iter()
        .filter_map(|d| match &d.spec {
            Spec::Gateway(g) if viewer.gateways.contains(&format!("{}/{}", d.key.namespace, d.key.name)) => {
                Some((d, g))
            }
            _ => None,
        })
        .collect();
    // Every port the gateway workload routes HTTP on.
    let gateway_ports: BTreeSet<u16> = gateway_docs
        .iter()
        .flat_map(|(_, g)| g.servers.iter().filter(|s| routes_http(s)).filter_map(|s| s.port.as_ref()))
        .map(|p| p.number)
        .collect();
    let sidecar = if viewer.is_gateway() { None } else { sidecar_for(docs, viewer.workload) };
    let mut services: Vec<(&Doc, &VirtualService)> = docs
        .iter()
        .filter_map(|d| match &d.spec {
            Spec::VirtualService(vs) => Some((d, vs)),
            _ => None,
        })
        .filter(|(d, vs)| {
            exported_to(&vs.export_to, &d.key.namespace, ns) && viewer.bound(&vs.gateways, &d.key.namespace)
        })
        .collect();
    // Own namespace first, then by namespace/name (docs are sorted by key).
    services.sort_by_key(|(d, _)| d.key.namespace != ns);
    for (doc, vs) in services {
        for host in &vs.hosts {
            let key = fqdn_of(host, doc);
            if policy_hosts.contains(&key) {
                continue;
            }
            let ports = if viewer.is_gateway() {
                // The ports of the servers, of the gateways it is bound to,
                // that admit the host (istiod's per-server-port tables).
                let ports: BTreeSet<u16> = gateway_docs
                    .iter()
                    .filter(|(gd, _)| {
                        let reference = format!("{}/{}", gd.key.namespace, gd.key.name);
                        vs.gateways.iter().any(|g| gateway_ref(g, &doc.key.namespace) == reference)
                    })
                    .flat_map(|(gd, g)| {
                        g.servers.iter().filter(|s| {
                            routes_http(s)
                                && s.hosts
                                    .iter()
                                    .any(|p| ns_host_matches(p, &gd.key.namespace, &doc.key.namespace, host))
                        })
                    })
                    .filter_map(|s| s.port.as_ref().map(|p| p.number))
                    .collect();
                if ports.is_empty() {
                    continue;
                }
                Some(ports)
            } else {
                // A Sidecar's egress hosts scope the VirtualServices it imports too.
                if !imports(sidecar, &doc.key.namespace, &key) {
                    continue;
                }
                None
            };
            let source = Source { doc, rules: &vs.http, ports };
            match by_host.get_mut(&key) {
                Some(sources) if viewer.is_gateway() => sources.push(source),
                Some(_) => {} // sidecar: the first VirtualService for a host wins
                None => {
                    by_host.insert(key, vec![source]);
                }
            }
        }
    }
    // httpsRedirect servers: their rule first in every host they admit, and
    // a host of their own where no VirtualService routes (as istiod does).
    for redirect in redirects {
        let source = || Source {
            doc: redirect.doc,
            rules: std::slice::from_ref(&redirect.rule),
            ports: Some([redirect.port].into()),
        };
        for (key, sources) in by_host.iter_mut() {
            if redirect.hosts.iter().any(|h| host_matches(h, key)) {
                sources.insert(0, source());
            }
        }
        for host in &redirect.hosts {
            by_host.entry(host.clone()).or_insert_with(|| vec![source()]);
        }
    }
    if !viewer.is_gateway() {
        let routed: BTreeSet<String> = by_host.keys().cloned().collect();
        for default in defaults {
            let service_ns = &default.doc.key.namespace;
            if routed.contains(&default.fqdn) || !imports(sidecar, service_ns, &default.fqdn) {
                continue;
            }
            let source = Source {
                doc: default.doc,
                rules: std::slice::from_ref(&default.rule),
                ports: Some([default.port].into()),
            };
            by_host.entry(default.fqdn.clone()).or_default().push(source);
        }
    }
    let from_ns = |key: &str| if viewer.is_gateway() { short_name_ns(key).to_owned() } else { ns.to_owned() };
    // domain → the host that claimed it first (its per-port tables share it).
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut plans = Vec::new();
    for (key, sources) in by_host {
        let bare = domains(&key, &from_ns(&key));
        // (port, listener port, domains) of each route table of the host.
        let tables: Vec<(Option<u16>, Option<u16>, Vec<String>)> = if viewer.is_gateway() {
            let ports: BTreeSet<u16> = sources.iter().flat_map(|s| s.ports.clone().unwrap_or_default()).collect();
            let everywhere = sources.iter().all(|s| s.ports.as_ref().is_none_or(|p| *p == ports));
            if everywhere && ports == gateway_ports {
                let listener = if ports.len() == 1 { ports.first().copied() } else { None };
                vec![(None, listener, bare.clone())]
            } else {
                ports.iter().map(|p| (Some(*p), Some(*p), bare.clone())).collect()
            }
        } else {
            let ports = sidecar_ports(registry, &key, ns);
            match ports.as_slice() {
                [] => vec![(None, None, bare.clone())],
                [only] => vec![(None, Some(*only), bare.clone())],
                many => many
                    .iter()
                    .map(|p| {
                        let mut d: Vec<String> = bare.iter().map(|d| format!("{d}:{p}")).collect();
                        d.extend(bare.iter().cloned());
                        (Some(*p), Some(*p), d)
                    })
                    .collect(),
            }
        };
        for (port, listener_port, domains) in tables {
            let mut rules = Vec::new();
            for source in sources.iter().filter(|s| port.is_none_or(|p| s.on(p))) {
                rules.extend(plan_rules(docs, source.doc, source.rules, Some(viewer), port));
            }
            if rules.is_empty() {
                continue;
            }
            let domains: Vec<String> = domains
                .into_iter()
                .filter(|d| claimed.entry(d.clone()).or_insert_with(|| key.clone()) == &key)
                .collect();
            if domains.is_empty() {
                continue;
            }
            unique_names(&mut rules);
            let name = port.map_or_else(|| key.clone(), |p| format!("{key}:{p}"));
            plans.push(VhostPlan { name, domains, port, listener_port, rules });
        }
    }
    plans
}

/// The ports of a host's route tables on a sidecar: the HTTP ports of its
/// Service or ServiceEntry, else all its ports (protocol sniffing).
fn sidecar_ports(registry: &Registry<'_>, fqdn: &str, ns: &str) -> Vec<u16> {
    let Some(ports) = registry.ports(fqdn, ns) else { return Vec::new() };
    let http: Vec<u16> = ports.iter().filter(|p| p.is_http()).map(|p| p.number).collect();
    let mut out = if http.is_empty() { ports.iter().map(|p| p.number).collect() } else { http };
    out.sort_unstable();
    out.dedup();
    out
}

/// A Gateway server with `tls.httpsRedirect: true`: Envoy's `require_tls`
/// on its port, i.e. a first rule answering a request that is not https
/// (`x-forwarded-proto`, Envoy's test) with a 301 to `https://` + authority
/// + path.
pub(crate) struct HttpsRedirect<'a> {
    doc: &'a Doc,
    port: u16,
    /// Its server hosts, namespace part dropped, lowercased.
    hosts: Vec<String>,
    rule: HttpRule,
}

fn https_redirects<'a>(docs: &'a [Doc], gateways: &[String]) -> Vec<HttpsRedirect<'a>> {
    let mut out = Vec::new();
    for doc in docs {
        let Spec::Gateway(gateway) = &doc.spec else { continue };
        if !gateways.contains(&format!("{}/{}", doc.key.namespace, doc.key.name)) {
            continue;
        }
        for (i, server) in gateway.servers.iter().enumerate() {
            let Some(port) = server.port.as_ref().filter(|_| server.https_redirect && routes_http(server)) else {
                continue;
            };
            let path = format!("spec.servers[{i}].tls.httpsRedirect");
            let origin = Origin { line: line_of(&doc.tree, &path).unwrap_or(doc.line), path };
            let not_https = StringMatch { exact: Some("https".into()), ..Default::default() };
            let request = HttpMatchRequest {
                port: Some(port.number),
                without_headers: KeyedList(vec![("x-forwarded-proto".into(), not_https)]),
                ..Default::default()
            };
            let rule = HttpRule {
                name: Some("https-redirect".into()),
                origin,
                matches: vec![MatchBlock { request, ..Default::default() }],
                redirect: Some(RedirectConfig { https_redirect: true, ..Default::default() }),
                ..Default::default()
            };
            let hosts = server
                .hosts
                .iter()
                .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_ascii_lowercase())
                .collect();
            out.push(HttpsRedirect { doc, port: port.number, hosts, rule });
        }
    }
    out
}

/// Istio's route for one HTTP port of a Kubernetes Service that no
/// VirtualService names: everything to the port's cluster without subset
/// (`outbound|9080||details.default.svc.cluster.local`), Istio's default
/// retries, no timeout.
pub(crate) struct DefaultRoute<'a> {
    doc: &'a Doc,
    fqdn: String,
    port: u16,
    rule: HttpRule,
}

/// The default routes of every Service's HTTP ports (a port Istio treats as
/// HTTP by its name or `appProtocol`; a Service with none gets no route).
fn default_routes(docs: &[Doc]) -> Vec<DefaultRoute<'_>> {
    let mut out = Vec::new();
    for doc in docs {
        let Spec::Service(service) = &doc.spec else { continue };
        let fqdn = fqdn(&doc.key.name, &doc.key.namespace);
        let http_ports = service.ports.iter().enumerate().filter(|(_, p)| p.is_http());
        for (i, port) in http_ports {
            let path = format!("spec.ports[{i}]");
            let origin = Origin { line: line_of(&doc.tree, &path).unwrap_or(doc.line), path };
            let destination =
                DestinationRef { host: fqdn.clone(), subset: None, port: Some(port.number), origin: origin.clone() };
            let rule = HttpRule {
                name: Some("default".into()),
                origin,
                route: vec![RouteDestination { destination, weight: None, headers: None }],
                ..Default::default()
            };
            out.push(DefaultRoute { doc, fqdn: fqdn.clone(), port: port.number, rule });
        }
    }
    out
}

/// Whether the workload's Sidecar (if it lists `egress` hosts) imports
/// `host` of namespace `host_ns`.
fn imports(sidecar: Option<(&Doc, &Sidecar)>, host_ns: &str, host: &str) -> bool {
    match sidecar {
        Some((doc, s)) if !s.egress_hosts.is_empty() => {
            s.egress_hosts.iter().any(|p| ns_host_matches(p, &doc.key.namespace, host_ns, host))
        }
        _ => true,
    }
}

/// A gateway reaches a service by its short name too (the VirtualService
/// author wrote it): the namespace part of `name.ns.svc.cluster.local`.
fn short_name_ns(fqdn: &str) -> &str {
    fqdn.strip_suffix(&format!(".{CLUSTER_DOMAIN}")).and_then(|s| s.split_once('.')).map_or("", |(_, ns)| ns)
}

// ---------------------------------------------------------------------------
// Building the filter configs

type Resolve<'r> = dyn FnMut(&Doc, &DestinationRef) -> Option<Destination> + 'r;
/// Resolves a destination on the route table of a listener port (`None`: unknown).
type ResolveAt<'r> = dyn FnMut(&Doc, &DestinationRef, Option<u16>) -> Option<Destination> + 'r;

struct Built {
    routing: RoutingConfig,
    fault: FaultConfig,
    mirror: MirrorConfig,
    fault_fillers: BTreeSet<String>,
    mirror_fillers: BTreeSet<String>,
    /// Per filter, `virtual_hosts[i].routes[j]` → rule (index into the plan).
    fault_routes: Vec<Vec<usize>>,
    mirror_routes: Vec<Vec<usize>>,
}

fn build(plans: &[VhostPlan<'_>], resolve_at: &mut ResolveAt<'_>) -> Built {
    let empty = empty_configs();
    let mut built = Built {
        routing: empty.routing,
        fault: empty.fault,
        mirror: empty.mirror,
        fault_fillers: BTreeSet::new(),
        mirror_fillers: BTreeSet::new(),
        fault_routes: vec![],
        mirror_routes: vec![],
    };
    for plan in plans {
        let resolve = &mut |doc: &Doc, d: &DestinationRef| resolve_at(doc, d, plan.listener_port);
        let mut routes = Vec::new();
        let mut faults: Vec<FaultRouteConfig> = Vec::new();
        let mut fault_index = Vec::new();
        let mut mirrors: Vec<MirrorRouteConfig> = Vec::new();
        let mut mirror_index = Vec::new();
        let last_fault = plan.rules.iter().rposition(|r| r.rule.fault.is_some());
        let last_mirror = plan.rules.iter().rposition(|r| !r.rule.mirrors.is_empty());
        let filler_mirror = plan.rules.iter().flat_map(|r| r.rule.mirrors.first().map(|m| (r.doc, m))).next();
        let filler_mirror = filler_mirror.and_then(|(doc, m)| resolve(doc, &m.destination));
        for (i, r) in plan.rules.iter().enumerate() {
            let match_: Vec<HttpMatchRequest> = r.matches.iter().map(|(_, m)| m.clone()).collect();
            routes.push(route_config(r, match_.clone(), resolve));
            let id = format!("{}/{}", plan.name, r.name);
            if last_fault.is_some_and(|last| i <= last) {
                fault_index.push(i);
                let (delay, abort) = match &r.rule.fault {
                    Some(fault) => (
                        fault
                            .delay
                            .as_ref()
                            .map(|d| DelayConfig { fixed_delay: d.fixed_delay.clone(), percentage: d.percentage }),
                        fault.abort.as_ref().map(|a| AbortConfig {
                            http_status: match a.status {
                                AbortStatus::Http(code) => Some(code),
                                AbortStatus::Grpc(_) => None,
                            },
                            grpc_status: match a.status {
                                AbortStatus::Grpc(code) => Some(code),
                                AbortStatus::Http(_) => None,
                            },
                            percentage: a.percentage,
                        }),
                    ),
                    None => {
                        // Keeps first-match order: a request this rule matches
                        // must not fall through to a later rule's fault.
                        built.fault_fillers.insert(id.clone());
                        (None, Some(AbortConfig { http_status: Some(503), grpc_status: None, percentage: 0.0 }))
                    }
                };
                faults.push(FaultRouteConfig { name: r.name.clone(), match_: match_.clone(), delay, abort });
            }
            if last_mirror.is_some_and(|last| i <= last) {
                let policies: Vec<MirrorPolicyConfig> = if r.rule.mirrors.is_empty() {
                    built.mirror_fillers.insert(id.clone());
                    filler_mirror
                        .iter()
                        .map(|d| MirrorPolicyConfig {
                            destination: d.clone(),
                            percentage: Some(0.0),
                            timeout: None,
                            max_in_flight: None,
                            compare: None,
                        })
                        .collect()
                } else {
                    r.rule
                        .mirrors
                        .iter()
                        .filter_map(|m| {
                            resolve(r.doc, &m.destination).map(|destination| MirrorPolicyConfig {
                                destination,
                                percentage: m.percentage,
                                timeout: m.timeout.clone(),
                                max_in_flight: m.max_in_flight,
                                compare: m.compare.clone(),
                            })
                        })
                        .collect()
                };
                if !policies.is_empty() {
                    mirror_index.push(i);
                    mirrors.push(MirrorRouteConfig { name: r.name.clone(), match_, mirrors: policies });
                }
            }
        }
        built.routing.virtual_hosts.push(VirtualHostConfig {
            name: plan.name.clone(),
            domains: plan.domains.clone(),
            port: plan.port,
            routes,
        });
        if !faults.is_empty() {
            built.fault.virtual_hosts.push(VirtualHostConfig {
                name: plan.name.clone(),
                domains: plan.domains.clone(),
                port: plan.port,
                routes: faults,
            });
        }
        built.fault_routes.push(fault_index);
        if !mirrors.is_empty() {
            built.mirror.virtual_hosts.push(VirtualHostConfig {
                name: plan.name.clone(),
                domains: plan.domains.clone(),
                port: plan.port,
                routes: mirrors,
            });
        }
        built.mirror_routes.push(mirror_index);
    }
    // Indexes of vhosts in the fault/mirror configs skip the hosts without rules.
    built.fault_routes.retain(|v| !v.is_empty());
    built.mirror_routes.retain(|v| !v.is_empty());
    built
}

fn route_config(r: &PlannedRule<'_>, match_: Vec<HttpMatchRequest>, resolve: &mut Resolve<'_>) -> RouteConfig {
    let rule = r.rule;
    let mut route = RouteConfig { name: r.name.clone(), match_, ..Default::default() };
    if rule.redirect.is_some() || rule.direct_response.is_some() {
        route.redirect = rule.redirect.clone();
        route.direct_response = rule.direct_response.clone();
        // Istio refuses a rule with several; the filter says so (with its path).
        if !rule.route.is_empty() {
            route.route = Some(vec![]);
        }
        // Response headers apply to a direct response (Envoy, and Istio's docs
        // for a Content-Type); a redirect refuses them.
        route.headers = rule.headers.clone();
        return route;
    }
    route.route = Some(
        rule.route
            .iter()
            .filter_map(|d| {
                resolve(r.doc, &d.destination).map(|destination| switchyard_policy::routing::RouteDestination {
                    destination,
                    weight: d.weight,
                    headers: d.headers.clone(),
                })
            })
            .collect(),
    );
    route.rewrite = rule.rewrite.clone();
    // Istio: no timeout means none at all; no retries means its default policy.
    route.timeout = Some(rule.timeout.clone().unwrap_or_else(|| "0s".to_string()));
    route.retries = Some(rule.retries.clone().unwrap_or(RetriesConfig {
        attempts: ISTIO_DEFAULT_ATTEMPTS,
        per_try_timeout: None,
        retry_on: None,
    }));
    route.headers = rule.headers.clone();
    route.sticky = rule.sticky.clone();
    route
}

// ---------------------------------------------------------------------------
// Validation with the filters' own code, errors mapped back to the source

#[derive(Clone, Copy)]
enum Filter {
    Routing,
    Fault,
    Mirror,
}

fn source_problem(
    plans: &[VhostPlan<'_>],
    built: &Built,
    filter: Filter,
    error: &ConfigError,
    resource: &str,
) -> Problem {
    let located = locate(plans, built, filter, &error.path);
    match located {
        Some((rule, path)) => Problem {
            file: rule.doc.file.clone(),
            line: line_of(&rule.doc.tree, &path).unwrap_or(rule.rule.origin.line),
            document: rule.doc.key.to_string(),
            field: path,
            message: error.message.clone(),
            severity: Severity::Error,
        },
        None => workload_problem(resource, error.to_string()),
    }
}

/// `virtual_hosts[i].routes[j]REST` → the planned rule and the source path.
fn locate<'p, 'a>(
    plans: &'p [VhostPlan<'a>],
    built: &Built,
    filter: Filter,
    path: &str,
) -> Option<(&'p PlannedRule<'a>, String)> {
    let rest = path.strip_prefix("virtual_hosts[")?;
    let (vh, rest) = rest.split_once(']')?;
    let vh: usize = vh.parse().ok()?;
    let rest = rest.strip_prefix(".routes[")?;
    let (route, rest) = rest.split_once(']')?;
    let route: usize = route.parse().ok()?;
    let (plan, rule_index) = match filter {
        Filter::Routing => (plans.get(vh)?, route),
        Filter::Fault | Filter::Mirror => {
            let table = if matches!(filter, Filter::Fault) { &built.fault_routes } else { &built.mirror_routes };
            let routes = table.get(vh)?;
            let rule_index = *routes.get(route)?;
            // The n-th non-empty table belongs to the n-th plan with rules there.
            let nth = plans
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.rules.iter().any(|r| match filter {
                        Filter::Fault => r.rule.fault.is_some(),
                        _ => !r.rule.mirrors.is_empty(),
                    })
                })
                .nth(vh)?;
            (nth.1, rule_index)
        }
    };
    let rule = plan.rules.get(rule_index)?;
    let base = rule.rule.origin.path.clone();
    let source = match filter {
        Filter::Routing => format!("{base}{}", source_suffix(rule, rest)),
        Filter::Fault => {
            if rest.starts_with(".match") {
                format!("{base}{}", source_suffix(rule, rest))
            } else {
                format!("{base}.fault{}", camel(rest))
            }
        }
        Filter::Mirror => match rest.strip_prefix(".mirrors[").and_then(|r| r.split_once(']')) {
            Some((k, tail)) => match k.parse::<usize>().ok().and_then(|k| rule.rule.mirrors.get(k)) {
                // A TrafficPolicy mirror's own fields (`.compare.log_headers[0]`).
                Some(m) if !tail.is_empty() && !tail.starts_with(".destination") => {
                    format!("{}{}", m.origin.path, camel(tail))
                }
                Some(m) => m.destination.origin.path.clone(),
                None => base,
            },
            None => format!("{base}{}", source_suffix(rule, rest)),
        },
    };
    Some((rule, source))
}

/// Maps `.match[k]…` to the source index of the k-th kept match entry and
/// snake_case field names to Istio's camelCase.
fn source_suffix(rule: &PlannedRule<'_>, rest: &str) -> String {
    if let Some((k, tail)) = rest.strip_prefix(".match[").and_then(|r| r.split_once(']')) {
        if let Some((source, _)) = k.parse::<usize>().ok().and_then(|k| rule.matches.get(k)) {
            return format!(".match[{source}]{}", camel(tail));
        }
    }
    // Filter fields named differently from Istio's.
    let rest = rest
        .replace(".uri_regex.pattern", ".uriRegexRewrite.match")
        .replace(".uri_regex.substitution", ".uriRegexRewrite.rewrite")
        .replace(".uri_regex", ".uriRegexRewrite")
        .replace(".port_from_request", ".derivePort");
    camel(&rest)
}

fn camel(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_key = false;
    let mut upper = false;
    for c in path.chars() {
        match c {
            '"' => {
                in_key = !in_key;
                out.push(c);
            }
            '_' if !in_key => upper = true,
            _ if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            _ => out.push(c),
        }
    }
    out
}

/// The line of the deepest node of `path` (`a.b[0]["k"].c`) found in `tree`.
pub(crate) fn line_of(tree: &Node, path: &str) -> Option<usize> {
    let mut node = tree;
    let mut line = None;
    let mut rest = path;
    while !rest.is_empty() {
        let (next, remaining) = if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]")?;
            let key = &r[..end];
            (find_key(node, key), &r[end + 2..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let index: usize = r[..end].parse().ok()?;
            let item = match &node.kind {
                NodeKind::Seq(items) => items.get(index),
                _ => None,
            };
            (item.map(|n| (n, n.line)), &r[end + 1..])
        } else {
            let r = rest.strip_prefix('.').unwrap_or(rest);
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (find_key(node, &r[..end]), &r[end..])
        };
        match next {
            Some((n, l)) => {
                node = n;
                line = Some(l);
                rest = remaining;
            }
            None => break,
        }
    }
    line
}

fn find_key<'n>(node: &'n Node, key: &str) -> Option<(&'n Node, usize)> {
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| (&e.value, e.key_line)),
        _ => None,
    }
}

fn validate(plans: &[VhostPlan<'_>], built: &Built) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(e) = CompiledRouting::from_config(&built.routing) {
        problems.push(source_problem(plans, built, Filter::Routing, &e, workload::RESOURCE_ROUTING));
    }
    if let Err(e) = CompiledFault::from_config(&built.fault) {
        problems.push(source_problem(plans, built, Filter::Fault, &e, workload::RESOURCE_FAULT));
    }
    if let Err(e) = CompiledMirror::from_config(&built.mirror) {
        problems.push(source_problem(plans, built, Filter::Mirror, &e, workload::RESOURCE_MIRROR));
    }
    problems
}

// ---------------------------------------------------------------------------
// Entry points

/// Renders the configs of `workload` from the documents in force (sorted by key).
pub fn render_configs(docs: &[Doc], workload: &Workload) -> Result<Configs, Vec<Problem>> {
    let gateways: Vec<String> = docs
        .iter()
        .filter(
            |d| matches!(&d.spec, Spec::Gateway(g) if !g.selector.is_empty() && selects(&g.selector, &workload.labels)),
        )
        .map(|d| format!("{}/{}", d.key.namespace, d.key.name))
        .collect();
    let viewer = Viewer { workload, gateways };
    let defaults = default_routes(docs);
    let registry = Registry::new(docs);
    let redirects = https_redirects(docs, &viewer.gateways);
    let plans = plan(docs, &defaults, &redirects, &registry, &viewer);
    let mut problems = Vec::new();
    let mut resolve = |doc: &Doc, d: &DestinationRef, listener_port: Option<u16>| match registry.resolve(
        d,
        &doc.key.namespace,
        &workload.namespace,
        listener_port,
    ) {
        Ok(destination) => Some(destination),
        Err(message) => {
            problems.push(Problem {
                file: doc.file.clone(),
                line: d.origin.line,
                document: doc.key.to_string(),
                field: d.origin.path.clone(),
                message,
                severity: Severity::Error,
            });
            None
        }
    };
    let built = build(&plans, &mut resolve);
    if !problems.is_empty() {
        problems.sort_by(|a, b| (&a.file, a.line, &a.field).cmp(&(&b.file, b.line, &b.field)));
        problems.dedup();
        return Err(problems);
    }
    let problems = validate(&plans, &built);
    if !problems.is_empty() {
        return Err(problems);
    }
    let egress = egress_config(docs, &viewer, &built.routing);
    if let Err(e) = CompiledEgress::from_config(&egress) {
        return Err(vec![workload_problem(workload::RESOURCE_EGRESS, e.to_string())]);
    }
    let mut sources = BTreeMap::new();
    for plan in &plans {
        for r in &plan.rules {
            sources.insert(
                format!("{}/{}", plan.name, r.name),
                format!("{} {} ({}:{})", r.doc.key, r.rule.origin.path, r.doc.file.display(), r.rule.origin.line),
            );
        }
    }
    Ok(Configs {
        routing: built.routing,
        fault: built.fault,
        mirror: built.mirror,
        egress,
        sources,
        fault_fillers: built.fault_fillers,
        mirror_fillers: built.mirror_fillers,
        gateways: viewer.gateways,
    })
}

/// Load-time check of one VirtualService or TrafficPolicy on its own: its
/// rules go through the filters' validation (ports and subsets are checked
/// against the other documents separately, see [`check_references`]).
pub(crate) fn check_document(doc: &Doc, f: &mut Findings) {
    let (hosts, rules) = match &doc.spec {
        Spec::VirtualService(vs) => (&vs.hosts, &vs.http),
        Spec::TrafficPolicy(tp) => (&tp.hosts, &tp.http),
        Spec::ServiceEntry(se) => {
            for (i, host) in se.hosts.iter().enumerate() {
                let config = EgressConfig {
                    version: CONFIG_VERSION,
                    outbound_traffic_policy: OutboundTrafficPolicy::RegistryOnly,
                    hosts: vec![EgressHostConfig { host: host.clone(), ports: None }],
                    dry_run: false,
                    deny_status: None,
                };
                if let Err(e) = CompiledEgress::from_config(&config) {
                    let path = format!("spec.hosts[{i}]");
                    f.error(line_of(&doc.tree, &path).unwrap_or(doc.line), &path, e.message);
                }
            }
            return;
        }
        _ => return,
    };
    let Some(host) = hosts.first() else { return };
    let rules = plan_rules(&[], doc, rules, None, None);
    if rules.is_empty() {
        return;
    }
    let mut rules = rules;
    unique_names(&mut rules);
    let plans = vec![VhostPlan {
        name: fqdn_of(host, doc),
        domains: vec!["check.invalid".into()],
        port: None,
        listener_port: None,
        rules,
    }];
    let mut resolve = |doc: &Doc, d: &DestinationRef, _: Option<u16>| {
        Some(Destination {
            host: fqdn(&d.host, &doc.key.namespace),
            subset: d.subset.clone(),
            port: d.port.or(Some(1)),
        })
    };
    let built = build(&plans, &mut resolve);
    for p in validate(&plans, &built) {
        f.error(p.line, &p.field, p.message);
    }
}

/// Ports and subsets of every destination, resolved from the document's
/// own namespace. Reported at load time; rendering checks them again per
/// workload.
pub(crate) fn check_references(docs: &[Doc]) -> Vec<Problem> {
    let registry = Registry::new(docs);
    let mut problems = missing_gateways(docs);
    for doc in docs {
        let rules = match &doc.spec {
            Spec::VirtualService(vs) => &vs.http,
            Spec::TrafficPolicy(tp) => &tp.http,
            _ => continue,
        };
        let ns = &doc.key.namespace;
        for rule in rules.iter().filter(|r| !r.skipped) {
            let destinations =
                rule.route.iter().map(|r| &r.destination).chain(rule.mirrors.iter().map(|m| &m.destination));
            for d in destinations {
                if let Err(message) = registry.resolve(d, ns, ns, None) {
                    problems.push(Problem {
                        file: doc.file.clone(),
                        line: d.origin.line,
                        document: doc.key.to_string(),
                        field: d.origin.path.clone(),
                        message,
                        severity: Severity::Error,
                    });
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Egress

/// The Sidecar that sets the workload's outbound policy: one selecting it in
/// its namespace, else its namespace's Sidecar without selector, else the
/// root namespace's Sidecar without selector.
/// A VirtualService (or one of its matches) bound to a Gateway no document
/// defines applies nowhere for it: a warning, as `istioctl analyze` gives
/// (IST0101), since the Gateway may simply not be among the files given.
fn missing_gateways(docs: &[Doc]) -> Vec<Problem> {
    let gateways: BTreeSet<String> = docs
        .iter()
        .filter(|d| d.key.kind == Kind::Gateway)
        .map(|d| format!("{}/{}", d.key.namespace, d.key.name))
        .collect();
    let mut problems = Vec::new();
    for doc in docs {
        let Spec::VirtualService(vs) = &doc.spec else { continue };
        let ns = &doc.key.namespace;
        let mut refs: Vec<(String, String)> =
            vs.gateways.iter().enumerate().map(|(i, g)| (g.clone(), format!("spec.gateways[{i}]"))).collect();
        for (r, rule) in vs.http.iter().enumerate() {
            for (m, block) in rule.matches.iter().enumerate() {
                for (i, g) in block.gateways.iter().enumerate() {
                    refs.push((g.clone(), format!("spec.http[{r}].match[{m}].gateways[{i}]")));
                }
            }
        }
        for (gateway, path) in refs {
            let reference = gateway_ref(&gateway, ns);
            if gateway != "mesh" && !gateways.contains(&reference) {
                problems.push(Problem {
                    file: doc.file.clone(),
                    line: line_of(&doc.tree, &path).unwrap_or(doc.line),
                    document: doc.key.to_string(),
                    field: path,
                    message: format!(
                        "Gateway {reference} is not defined in these documents: what is bound to it applies nowhere"
                    ),
                    severity: Severity::Warning,
                });
            }
        }
    }
    problems
}

fn sidecar_for<'a>(docs: &'a [Doc], workload: &Workload) -> Option<(&'a Doc, &'a Sidecar)> {
    let sidecars = || {
        docs.iter().filter_map(|d| match &d.spec {
            Spec::Sidecar(s) => Some((d, s)),
            _ => None,
        })
    };
    let ns = workload.namespace.as_str();
    sidecars()
        .find(|(d, s)| d.key.namespace == ns && s.selector.as_ref().is_some_and(|sel| selects(sel, &workload.labels)))
        .or_else(|| sidecars().find(|(d, s)| d.key.namespace == ns && s.selector.is_none()))
        .or_else(|| sidecars().find(|(d, s)| d.key.namespace == ROOT_NAMESPACE && s.selector.is_none()))
}

fn egress_config(docs: &[Doc], viewer: &Viewer<'_>, routing: &RoutingConfig) -> EgressConfig {
    let workload = viewer.workload;
    let ns = workload.namespace.as_str();
    // Sidecar resources do not apply to gateways (Istio): a gateway admits
    // the hosts of its Gateway servers and nothing else.
    if viewer.is_gateway() {
        return gateway_egress_config(docs, viewer);
    }
    let sidecar = sidecar_for(docs, workload);
    let policy = sidecar.and_then(|(_, s)| s.outbound_traffic_policy).unwrap_or(OutboundTrafficPolicy::AllowAny);
    let imported = |host_ns: &str, host: &str| imports(sidecar, host_ns, host);
    // host → allowed ports (None: every port)
    let mut hosts: BTreeMap<String, Option<BTreeSet<u16>>> = BTreeMap::new();
    let add = |hosts: &mut BTreeMap<String, Option<BTreeSet<u16>>>, host: String, ports: Option<Vec<u16>>| {
        let entry = hosts.entry(host).or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), ports) {
            (Some(set), Some(ports)) if !ports.is_empty() => set.extend(ports),
            _ => *entry = None,
        }
    };
    for doc in docs {
        match &doc.spec {
            Spec::ServiceEntry(se) if exported_to(&se.export_to, &doc.key.namespace, ns) => {
                let ports: Vec<u16> = se.ports.iter().map(|p| p.number).collect();
                for host in &se.hosts {
                    if imported(&doc.key.namespace, &fqdn_of(host, doc)) {
                        for d in domains(&fqdn_of(host, doc), ns) {
                            add(&mut hosts, d, Some(ports.clone()));
                        }
                    }
                }
            }
            Spec::Service(service) => {
                let fqdn = fqdn(&doc.key.name, &doc.key.namespace);
                if imported(&doc.key.namespace, &fqdn) {
                    let ports: Vec<u16> = service.ports.iter().map(|p| p.number).collect();
                    for d in domains(&fqdn, ns) {
                        add(&mut hosts, d, Some(ports.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    // Hosts the workload routes to (VirtualService hosts) are mesh-internal too.
    for vh in &routing.virtual_hosts {
        for d in &vh.domains {
            if !hosts.contains_key(d) {
                add(&mut hosts, d.clone(), None);
            }
        }
    }
    let hosts = hosts
        .into_iter()
        .map(|(host, ports)| EgressHostConfig { host, ports: ports.map(|p| p.into_iter().collect()) })
        .filter(valid_egress_host)
        .collect();
    EgressConfig { version: CONFIG_VERSION, outbound_traffic_policy: policy, hosts, dry_run: false, deny_status: None }
}

/// A gateway's egress. istiod builds a gateway's HTTP virtual hosts and TLS
/// filter chains only for the `hosts` of the Gateway servers that select it:
/// - an egress gateway (`istio: egressgateway`) is the mesh's way out, and
///   reaches only what the registry knows: REGISTRY_ONLY over the
///   ServiceEntry and Service hosts its server hosts admit (`*` admits every
///   registry host), on any port (a gateway listens on its Service's target
///   ports, 8443 for 443, so the registry's port numbers do not apply);
/// - any other gateway admits its server hosts (any port: the gateway
///   listens where its Service's target ports say), every host for `*`.
fn gateway_egress_config(docs: &[Doc], viewer: &Viewer<'_>) -> EgressConfig {
    let mut patterns = BTreeSet::new();
    for doc in docs {
        let Spec::Gateway(gateway) = &doc.spec else { continue };
        if viewer.gateways.contains(&format!("{}/{}", doc.key.namespace, doc.key.name)) {
            for host in &gateway.hosts {
                patterns.insert(host.split_once('/').map_or(host.as_str(), |(_, h)| h).to_ascii_lowercase());
            }
        }
    }
    let egress_gateway = viewer.workload.labels.get("istio").is_some_and(|v| v == "egressgateway");
    let (policy, hosts) = if egress_gateway {
        let mut hosts = Vec::new();
        for doc in docs {
            let names: Vec<String> = match &doc.spec {
                Spec::ServiceEntry(se)
                    if exported_to(&se.export_to, &doc.key.namespace, &viewer.workload.namespace) =>
                {
                    se.hosts.iter().map(|h| fqdn_of(h, doc)).collect()
                }
                Spec::Service(_) => vec![fqdn(&doc.key.name, &doc.key.namespace)],
                _ => continue,
            };
            for host in names.into_iter().filter(|h| patterns.iter().any(|p| host_matches(p, h))) {
                hosts.push(EgressHostConfig { host, ports: None });
            }
        }
        (OutboundTrafficPolicy::RegistryOnly, hosts)
    } else if patterns.contains("*") {
        (OutboundTrafficPolicy::AllowAny, Vec::new())
    } else {
        let hosts = patterns.into_iter().map(|host| EgressHostConfig { host, ports: None }).collect();
        (OutboundTrafficPolicy::RegistryOnly, hosts)
    };
    let hosts = hosts.into_iter().filter(valid_egress_host).collect();
    // A host an ingress gateway does not admit has no virtual host in
    // istiod's config: Envoy answers 404 there, not an egress block's 502.
    let deny_status = (!egress_gateway).then_some(404);
    EgressConfig { version: CONFIG_VERSION, outbound_traffic_policy: policy, hosts, dry_run: false, deny_status }
}

fn valid_egress_host(host: &EgressHostConfig) -> bool {
    let config = EgressConfig {
        version: CONFIG_VERSION,
        outbound_traffic_policy: OutboundTrafficPolicy::RegistryOnly,
        hosts: vec![host.clone()],
        dry_run: false,
        deny_status: None,
    };
    CompiledEgress::from_config(&config).is_ok()
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_document_namespace() {
        assert_eq!(fqdn("reviews", "default"), "reviews.default.svc.cluster.local");
        assert_eq!(fqdn("api.example.com", "default"), "api.example.com");
        assert_eq!(fqdn("*", "default"), "*");
        assert_eq!(
            domains("reviews.default.svc.cluster.local", "default"),
            ["reviews.default.svc.cluster.local", "reviews.default.svc", "reviews.default", "reviews"]
        );
        assert_eq!(domains("reviews.default.svc.cluster.local", "other").len(), 3);
        assert_eq!(domains("api.example.com", "default"), ["api.example.com"]);
    }

    #[test]
    fn export_to_follows_istio() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }

    #[test]
    fn ns_host_patterns() {
        assert!(ns_host_matches("*/*", "x", "y", "a.com"));
        assert!(ns_host_matches("./*", "x", "x", "a.com"));
        assert!(!ns_host_matches("./*", "x", "y", "a.com"));
        assert!(ns_host_matches("istio-system/*.example.com", "x", "istio-system", "a.example.com"));
        assert!(ns_host_matches("bookinfo.example.com", "x", "y", "bookinfo.example.com"));
    }

    #[test]
    fn camel_case_paths() {
        assert_eq!(camel(".retries.per_try_timeout"), ".retries.perTryTimeout");
        assert_eq!(camel(".match[0].headers[\"x_y\"].regex"), ".match[0].headers[\"x_y\"].regex");
        assert_eq!(camel(".match[0].without_headers"), ".match[0].withoutHeaders");
    }
}
