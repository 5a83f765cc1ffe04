//! YAML documents → [`Doc`]s. Every field Switchyard does not apply is named
//! in a warning; deprecated fields are accepted with a warning; anything
//! malformed is an error with its line and field path.

use std::path::Path;

use switchyard_policy::compare::{CompareConfig, StatusMatch, MAX_COMPARE_BODY_BYTES};
use switchyard_policy::egress::OutboundTrafficPolicy;
use switchyard_policy::mirror::MAX_PENDING_LIMIT;
use switchyard_policy::routing::{
    DirectResponseConfig, RedirectConfig, RegexRewriteConfig, RewriteConfig, StickyConfig,
};
use switchyard_policy::{grpc_status_from_name, HeaderOpsConfig, HeadersConfig, KeyedList, RetriesConfig, StringMatch};

use super::model::*;
use super::problem::Findings;
use super::reader::{join, keyed, At, Field, Obj};
use super::tree::Tree;
use super::yaml::{Node, NodeKind};

pub const ISTIO_GROUP: &str = "networking.istio.io";
pub const ISTIO_VERSIONS: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];
pub const SWITCHYARD_API_VERSION: &str = "switchyard.dev/v1alpha1";
/// Namespace of documents without `metadata.namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The outcome of decoding one YAML document.
#[derive(Debug)]
pub enum Decoded {
    /// Empty, or a kind Switchyard does not use (reported as a warning).
    Ignored,
    Valid(Doc),
    /// Has errors. `key` when the document could at least be identified,
    /// so its last good version can stay in force.
    Invalid {
        key: Option<DocKey>,
    },
    /// Has errors in its spec, but decoded as far as it goes: never served,
    /// still checked for references so one pass reports every error.
    Rejected(Doc),
}

/// Decodes one document; findings go to `f`. `label` receives the
/// document's display name (`VirtualService default/reviews`) as soon as it
/// is known, for the problems' `document` column. A valid document keeps
/// `tree` (`root`, to be parsed again) to find the lines of fields named later.
pub fn decode_document(
    root: &Node,
    tree: Tree,
    line: usize,
    file: &Path,
    f: &mut Findings,
    label: &mut String,
) -> Decoded {
    if root.kind == NodeKind::Null {
        return Decoded::Ignored;
    }
    let at = At::new(root, "");
    let Some(mut top) = at.object(f) else {
        return Decoded::Invalid { key: None };
    };
    let api_version = top.string("apiVersion", f).unwrap_or_default();
    let Some(kind_name) = top.string("kind", f) else {
        f.error(line, "kind", "kind is required");
        return Decoded::Invalid { key: None };
    };
    let Some(kind) = known_kind(&api_version, &kind_name, line, f) else {
        return if f.has_errors() { Decoded::Invalid { key: None } } else { Decoded::Ignored };
    };
    let (name, namespace) = match top.take("metadata") {
        Some(meta) => metadata(meta, f),
        None => {
            f.error(line, "metadata", "metadata.name is required");
            (None, DEFAULT_NAMESPACE.to_string())
        }
    };
    let Some(name) = name else {
        *label = kind.as_str().to_string();
        return Decoded::Invalid { key: None };
    };
    let key = DocKey { kind, namespace, name };
    *label = key.to_string();
    top.take("status");
    let spec = top.take("spec");
    top.finish(f);
    let empty = Node { line, kind: NodeKind::Null };
    let spec = spec.unwrap_or_else(|| At::new(&empty, "spec"));
    let decoded = match kind {
        Kind::VirtualService => virtual_service(spec, f).map(Spec::VirtualService),
        Kind::DestinationRule => destination_rule(spec, f).map(Spec::DestinationRule),
        Kind::Gateway => gateway(spec, f).map(Spec::Gateway),
        Kind::ServiceEntry => service_entry(spec, f).map(Spec::ServiceEntry),
        Kind::Sidecar => sidecar(spec, f).map(Spec::Sidecar),
        Kind::Service => service(spec, f).map(Spec::Service),
        Kind::TrafficPolicy => traffic_policy(spec, f).map(Spec::TrafficPolicy),
    };
    match decoded {
        Some(spec) => {
            let doc = Doc { key, file: file.to_path_buf(), line, tree, spec };
            if f.has_errors() {
                Decoded::Rejected(doc)
            } else {
                Decoded::Valid(doc)
            }
        }
        None => Decoded::Invalid { key: Some(key) },
    }
}

fn known_kind(api_version: &str, kind: &str, line: usize, f: &mut Findings) -> Option<Kind> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let istio = match kind {
        "VirtualService" => Some(Kind::VirtualService),
        "DestinationRule" => Some(Kind::DestinationRule),
        "Gateway" => Some(Kind::Gateway),
        "ServiceEntry" => Some(Kind::ServiceEntry),
        "Sidecar" => Some(Kind::Sidecar),
        _ => None,
    };
    match (group, istio) {
        (ISTIO_GROUP, Some(kind)) => {
            if ISTIO_VERSIONS.contains(&version) {
                Some(kind)
            } else {
                f.error(
                    line,
                    "apiVersion",
                    format!("unsupported apiVersion {api_version:?} (use {ISTIO_GROUP}/v1, v1beta1 or v1alpha3)"),
                );
                None
            }
        }
        ("", _) if kind == "Service" && version == "v1" => Some(Kind::Service),
        ("switchyard.dev", _) if kind == "TrafficPolicy" => {
            if api_version == SWITCHYARD_API_VERSION {
                Some(Kind::TrafficPolicy)
            } else {
                f.error(
                    line,
                    "apiVersion",
                    format!("unsupported apiVersion {api_version:?} (use {SWITCHYARD_API_VERSION})"),
                );
                None
            }
        }
        _ => {
            let api = if api_version.is_empty() { String::new() } else { format!(" ({api_version})") };
            f.warning(line, "", format!("kind {kind}{api} ignored: Switchyard does not use it"));
            None
        }
    }
}

fn metadata(meta: At<'_>, f: &mut Findings) -> (Option<String>, String) {
    let Some(mut obj) = meta.object(f) else {
        return (None, DEFAULT_NAMESPACE.to_string());
    };
    let name = match obj.take("name") {
        Some(at) => at.name(f),
        None => {
            f.error(meta.line(), &meta.path, "metadata.name is required");
            None
        }
    };
    let namespace = obj.take("namespace").and_then(|at| at.name(f)).unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    // Other metadata (labels, annotations, uid, ...) is Kubernetes' business.
    (name, namespace)
}

fn hosts_required(obj: &mut Obj<'_>, f: &mut Findings) -> Vec<String> {
    let line = obj.line();
    let path = join(&obj.path, "hosts");
    let given = obj.take("hosts");
    let hosts = given.as_ref().and_then(|at| at.strings(f)).unwrap_or_default();
    if hosts.is_empty() {
        f.error(line, &path, "at least one host is required");
    }
    let item_line = |i: usize| match given.as_ref().map(|at| &at.node.kind) {
        Some(NodeKind::Seq(items)) => items.get(i).map_or(line, |n| n.line),
        _ => line,
    };
    for (i, host) in hosts.iter().enumerate() {
        if host.is_empty() {
            f.error(item_line(i), &format!("{path}[{i}]"), "host must not be empty");
        } else if let Some(why) = not_a_host(host) {
            f.error(item_line(i), &format!("{path}[{i}]"), format!("{host:?} is not a host name: {why}"));
        }
    }
    hosts
}

/// Why `host` is not what Istio accepts in `hosts`, if it is not: a DNS
/// name (labels of letters, digits and inner `-`, at most 63 characters,
/// 255 in all) whose first label may start with `*`, `*` alone, or an IP
/// address. Short names (`reviews`) are names.
fn not_a_host(host: &str) -> Option<String> {
    if host == "*" || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    if host.contains("://") {
        return Some("a URL: give the host alone, without scheme or path".into());
    }
    if host.len() > 255 {
        return Some(format!("{} characters long, over 255", host.len()));
    }
    for (i, label) in host.split('.').enumerate() {
        let label = if i == 0 { label.strip_prefix('*').unwrap_or(label) } else { label };
        if label.is_empty() {
            if i == 0 && host.starts_with("*.") {
                continue;
            }
            return Some("an empty label (a dot at an end, or two in a row)".into());
        }
        if label.len() > 63 {
            return Some(format!("a label of {} characters, over 63", label.len()));
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            let hint = match c {
                ':' => " (a port belongs in the route's destination.port)",
                '*' => " (a wildcard may only start the first label)",
                _ => "",
            };
            return Some(format!("{c:?} cannot be part of a host name{hint}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    None
}

fn virtual_service(spec: At<'_>, f: &mut Findings) -> Option<VirtualService> {
    let mut obj = spec.object(f)?;
    // Without hosts, a delegate: its rules apply where a root delegates to it.
    let delegate = !obj.has("hosts");
    let hosts = if delegate { Vec::new() } else { hosts_required(&mut obj, f) };
    let gateways = obj.strings("gateways", f);
    if delegate && !gateways.is_empty() {
        f.error(
            obj.line(),
            &join(&obj.path, "gateways"),
            "a delegate VirtualService (no hosts) must not set gateways: its root's apply (Istio refuses it)",
        );
    }
    if gateways.is_empty() || gateways.iter().any(|g| g == "mesh") {
        if let Some(i) = hosts.iter().position(|h| h == "*") {
            let path = format!("{}.hosts[{i}]", obj.path);
            f.error(obj.line(), &path, "host \"*\" is not allowed for the mesh (Istio refuses it): name the hosts");
        }
    }
    let export_to = export_to(&mut obj, false, f);
    let http = match obj.take("http") {
        Some(at) => http_rules(at, false, f),
        None => Vec::new(),
    };
    // Switchyard's VirtualServices are not applied to Istio (docs/istio.md),
    // so a TCP or TLS route left out here would route nothing at all.
    let l4 = "Switchyard routes HTTP only; keep TCP and TLS routes in a VirtualService Istio applies";
    obj.refused("tcp", l4, f);
    obj.refused("tls", l4, f);
    obj.finish(f);
    if delegate {
        for (i, rule) in http.iter().enumerate().filter(|(_, r)| r.delegate.is_some()) {
            let path = format!("{}.http[{i}].delegate", spec.path);
            f.error(
                rule.origin.line,
                &path,
                "a delegate VirtualService cannot delegate again (Istio supports one level)",
            );
        }
    }
    Some(VirtualService { hosts, gateways, export_to, http })
}

fn traffic_policy(spec: At<'_>, f: &mut Findings) -> Option<TrafficPolicy> {
    let mut obj = spec.object(f)?;
    let selector = match obj.take("workloadSelector") {
        Some(at) => {
            let mut sel = at.object(f)?;
            let labels = sel.take("matchLabels").and_then(|l| l.string_map(f)).unwrap_or_default();
            sel.finish(f);
            Some(labels)
        }
        None => None,
    };
    let hosts = hosts_required(&mut obj, f);
    let http = match obj.take("http") {
        Some(at) => http_rules(at, true, f),
        None => Vec::new(),
    };
    if http.is_empty() {
        f.error(obj.line(), &join(&obj.path, "http"), "at least one http rule is required");
    }
    obj.finish(f);
    Some(TrafficPolicy { selector, hosts, http })
}

fn http_rules(at: At<'_>, allow_sticky: bool, f: &mut Findings) -> Vec<HttpRule> {
    let Some(items) = at.list(f) else { return Vec::new() };
    exact(items.iter().filter_map(|item| http_rule(item, allow_sticky, f)))
}

/// `collect()` over a filtering iterator makes room for 4 items, then
/// doubles: a decoded document lives as long as it is in force, so it keeps
/// exactly what it holds (most rules have one match and one destination).
fn exact<T>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = items.collect();
    out.shrink_to_fit();
    out
}

fn http_rule(item: &Field<'_>, allow_sticky: bool, f: &mut Findings) -> Option<HttpRule> {
    let at = item.at();
    let mut obj = at.object(f)?;
    let mut rule = HttpRule { origin: Origin { line: at.line(), path: at.path.to_string() }, ..Default::default() };
    rule.name = obj.take("name").and_then(|n| n.name(f));
    if let Some(m) = obj.take("match") {
        rule.matches = exact(m.list(f)?.iter().filter_map(|b| match_block(b.at(), f)));
    }
    if let Some(r) = obj.take("route") {
        rule.route = exact(r.list(f)?.iter().filter_map(|d| route_destination(d.at(), f)));
    }
    // Given, even if invalid: its own error is enough.
    let answers = obj.has("redirect") || obj.has("directResponse");
    rule.redirect = obj.take("redirect").and_then(|r| redirect(r, f));
    rule.direct_response = obj.take("directResponse").and_then(|r| direct_response(r, f));
    rule.rewrite = obj.take("rewrite").and_then(|r| rewrite(r, f));
    rule.timeout = obj.string("timeout", f);
    rule.retries = obj.take("retries").and_then(|r| retries(r, f));
    rule.headers = obj.take("headers").and_then(|h| headers(h, f));
    rule.fault = obj.take("fault").and_then(|x| fault(x, f));
    rule.mirrors = mirrors(&mut obj, allow_sticky, f);
    if allow_sticky {
        rule.sticky = obj.take("sticky").and_then(|s| sticky(s, f));
    }
    rule.delegate = obj.take("delegate").and_then(|d| delegate(d, f));
    if rule.delegate.is_some() && (!rule.route.is_empty() || rule.redirect.is_some()) {
        f.error(at.line(), &at.path, "a rule with delegate must not set route or redirect (Istio refuses it)");
    }
    obj.refused(
        "corsPolicy",
        "without it preflight requests would be forwarded and responses lack the CORS headers; \
         answer CORS in the application or in a VirtualService Istio applies",
        f,
    );
    if answers && rule.fault.is_some() {
        // In Istio the fault filter runs before the router answers; here the
        // routing filter answers before the fault filter sees the request.
        f.error(
            at.line(),
            &join(&at.path, "fault"),
            "a fault on a redirect or directResponse rule is not supported: the routing filter answers before \
             the fault filter runs, so it would never be injected",
        );
    }
    let answered = answers || rule.delegate.is_some();
    if !rule.skipped && rule.route.is_empty() && !answered && !obj.has("route") {
        f.error(at.line(), &at.path, "set route, redirect or directResponse");
    }
    obj.finish(f);
    Some(rule)
}

/// `delegate: {name, namespace}`: a VirtualService without hosts whose
/// rules replace this one (Istio's delegation, one level).
fn delegate(at: At<'_>, f: &mut Findings) -> Option<Delegate> {
    let mut obj = at.object(f)?;
    let name = match obj.take("name") {
        Some(n) => n.name(f),
        None => {
            f.error(at.line(), &join(&at.path, "name"), "name is required");
            None
        }
    };
    let namespace = obj.take("namespace").and_then(|n| n.name(f));
    obj.finish(f);
    Some(Delegate { name: name?, namespace })
}

fn match_block(at: At<'_>, f: &mut Findings) -> Option<MatchBlock> {
    let mut obj = at.object(f)?;
    let mut block = MatchBlock::default();
    let r = &mut block.request;
    r.name = obj.string("name", f);
    r.uri = obj.take("uri").and_then(|m| string_match(m, f));
    r.scheme = obj.take("scheme").and_then(|m| string_match(m, f));
    r.method = obj.take("method").and_then(|m| string_match(m, f));
    r.authority = obj.take("authority").and_then(|m| string_match(m, f));
    r.headers = obj.take("headers").map(|m| header_matches(m, f)).unwrap_or_default();
    r.without_headers = obj.take("withoutHeaders").map(|m| header_matches(m, f)).unwrap_or_default();
    r.query_params = obj.take("queryParams").map(|m| string_matches(m, f)).unwrap_or_default();
    r.ignore_uri_case = obj.take("ignoreUriCase").and_then(|b| b.boolean(f)).unwrap_or(false);
    r.port = obj.take("port").and_then(|p| p.integer::<u16>(f, 1, 65535));
    block.source_labels = obj.take("sourceLabels").and_then(|l| l.string_map(f)).unwrap_or_default();
    block.source_namespace = obj.take("sourceNamespace").and_then(|n| n.name(f));
    block.gateways = obj.strings("gateways", f);
    obj.unapplied("statPrefix", "Switchyard's stats are named after the rule", f);
    obj.finish(f);
    Some(block)
}

fn string_match(at: At<'_>, f: &mut Findings) -> Option<StringMatch> {
    let mut obj = at.object(f)?;
    let m =
        StringMatch { exact: obj.string("exact", f), prefix: obj.string("prefix", f), regex: obj.string("regex", f) };
    obj.finish(f);
    Some(m)
}

/// `headers` / `withoutHeaders`. Istio's `@request.auth.claims.NAME` keys
/// match JWT claims, which Envoy's `jwt_authn` leaves in dynamic metadata
/// under a per-provider key and Istio's own `istio_authn` filter (not in
/// stock Envoy) re-files for route matching: refused, as routing on them
/// without that filter would match nothing or everything.
fn header_matches(at: At<'_>, f: &mut Findings) -> KeyedList<StringMatch> {
    let list = string_matches(at.clone(), f);
    if let NodeKind::Map(entries) = &at.node.kind {
        for entry in entries.iter().filter(|e| e.key.starts_with("@request.auth.claims")) {
            f.error(
                entry.key_line,
                &keyed(&at.path, &entry.key),
                "JWT claim routing (@request.auth.claims.NAME) is not supported: it needs Istio's istio_authn filter, \
                 which stock Envoy lacks; match a header your authentication sets instead (e.g. jwt_authn's \
                 claim_to_headers)",
            );
        }
    }
    list
}

fn string_matches(at: At<'_>, f: &mut Findings) -> KeyedList<StringMatch> {
    let Some(obj) = at.object(f) else { return KeyedList::default() };
    let mut out = Vec::new();
    for entry in obj.entries {
        let path = keyed(&at.path, &entry.key);
        if let Some(m) = string_match(At { node: &entry.value, path, line: entry.key_line }, f) {
            out.push((entry.key.clone(), m));
        }
    }
    out.shrink_to_fit();
    KeyedList(out)
}

fn destination(at: At<'_>, f: &mut Findings) -> Option<DestinationRef> {
    let mut obj = at.object(f)?;
    let host = match obj.take("host") {
        Some(h) => h.name(f),
        None => {
            f.error(at.line(), &join(&at.path, "host"), "host is required");
            None
        }
    };
    let subset = obj.take("subset").and_then(|s| s.name(f));
    let port = match obj.take("port") {
        Some(p) => {
            let mut port = p.object(f)?;
            let number = port.take("number").and_then(|n| n.integer::<u16>(f, 1, 65535));
            port.finish(f);
            number
        }
        None => None,
    };
    obj.finish(f);
    Some(DestinationRef { host: host?, subset, port, origin: Origin { line: at.line(), path: at.path.to_string() } })
}

fn route_destination(at: At<'_>, f: &mut Findings) -> Option<RouteDestination> {
    let mut obj = at.object(f)?;
    let destination = match obj.take("destination") {
        Some(d) => destination(d, f),
        None => {
            f.error(at.line(), &join(&at.path, "destination"), "destination is required");
            None
        }
    };
    let weight = obj.take("weight").and_then(|w| w.integer::<u32>(f, 0, 1_000_000));
    let headers = obj.take("headers").and_then(|h| headers(h, f));
    obj.finish(f);
    Some(RouteDestination { destination: destination?, weight, headers })
}

fn redirect(at: At<'_>, f: &mut Findings) -> Option<RedirectConfig> {
    let mut obj = at.object(f)?;
    let mut config = RedirectConfig {
        uri: obj.string("uri", f),
        prefix_rewrite: obj.string("prefixRewrite", f),
        authority: obj.string("authority", f),
        scheme: obj.string("scheme", f),
        port: obj.take("port").and_then(|p| p.integer::<u16>(f, 1, 65535)),
        redirect_code: obj.take("redirectCode").and_then(|c| c.integer::<u16>(f, 0, 999)),
        ..Default::default()
    };
    if let Some(derive) = obj.take("derivePort") {
        // Istio: FROM_PROTOCOL_DEFAULT sets no port (Envoy keeps the
        // request's, dropping a default one when the scheme changes);
        // FROM_REQUEST_PORT the port the route serves.
        match derive.string(f).as_deref() {
            Some("FROM_PROTOCOL_DEFAULT") => {}
            Some("FROM_REQUEST_PORT") => config.port_from_request = true,
            Some(other) => f.error(
                derive.line(),
                &derive.path,
                format!("derivePort {other:?} is not FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"),
            ),
            None => {}
        }
        if config.port.is_some() {
            f.error(
                derive.line(),
                &derive.path,
                "set port or derivePort, not both (Istio's redirect_port is one of them)",
            );
        }
    }
    if config.uri.is_some() && config.prefix_rewrite.is_some() {
        f.error(at.line(), &at.path, "set uri or prefixRewrite, not both (Istio: mutually exclusive)");
    }
    obj.finish(f);
    Some(config)
}

/// `directResponse`: `status` and `body.string` or `body.bytes` (base64,
/// as protobuf JSON carries bytes). The filter's config holds text, so
/// bytes must decode to UTF-8.
fn direct_response(at: At<'_>, f: &mut Findings) -> Option<DirectResponseConfig> {
    use base64::Engine as _;
    let mut obj = at.object(f)?;
    let status = match obj.take("status") {
        Some(s) => s.integer::<u16>(f, 200, 599),
        None => {
            f.error(at.line(), &join(&at.path, "status"), "status is required");
            None
        }
    };
    let body = match obj.take("body") {
        Some(b) => {
            let mut body = b.object(f)?;
            let text = body.string("string", f);
            let bytes = body.take("bytes").and_then(|bytes| {
                let encoded = bytes.string(f)?;
                let engines = [base64::engine::general_purpose::STANDARD, base64::engine::general_purpose::URL_SAFE];
                let decoded = engines
                    .iter()
                    .find_map(|e| e.decode(encoded.trim_end_matches('=')).ok().or_else(|| e.decode(&encoded).ok()));
                match decoded.map(String::from_utf8) {
                    Some(Ok(text)) => Some(text),
                    Some(Err(_)) => {
                        f.error(
                            bytes.line(),
                            &bytes.path,
                            "bytes must decode to UTF-8 text: Switchyard's direct responses carry text (use string)",
                        );
                        None
                    }
                    None => {
                        f.error(bytes.line(), &bytes.path, "bytes is not base64");
                        None
                    }
                }
            });
            body.finish(f);
            if text.is_some() && bytes.is_some() {
                f.error(b.line(), &b.path, "set string or bytes, not both");
            }
            text.or(bytes)
        }
        None => None,
    };
    obj.finish(f);
    Some(DirectResponseConfig { status: status?, body })
}

fn rewrite(at: At<'_>, f: &mut Findings) -> Option<RewriteConfig> {
    let mut obj = at.object(f)?;
    let mut config =
        RewriteConfig { uri: obj.string("uri", f), authority: obj.string("authority", f), uri_regex: None };
    if let Some(r) = obj.take("uriRegexRewrite") {
        let mut regex = r.object(f)?;
        let pattern = regex.string("match", f).unwrap_or_default();
        let substitution = regex.string("rewrite", f).unwrap_or_default();
        regex.finish(f);
        if pattern.is_empty() || substitution.is_empty() {
            f.error(r.line(), &r.path, "uriRegexRewrite needs both match and rewrite (Istio refuses it otherwise)");
        } else {
            config.uri_regex = Some(RegexRewriteConfig { pattern, substitution });
        }
        if config.uri.is_some() {
            f.error(r.line(), &r.path, "set uri or uriRegexRewrite, not both (Istio refuses both)");
        }
    }
    obj.finish(f);
    Some(config)
}

fn retries(at: At<'_>, f: &mut Findings) -> Option<RetriesConfig> {
    let mut obj = at.object(f)?;
    let config = RetriesConfig {
        attempts: obj.take("attempts").and_then(|a| a.integer::<u32>(f, 0, 1000)).unwrap_or(0),
        per_try_timeout: obj.string("perTryTimeout", f),
        retry_on: obj.string("retryOn", f),
    };
    obj.unapplied("retryRemoteLocalities", "Envoy's retry headers have no form for it", f);
    obj.unapplied("retryIgnorePreviousHosts", "Envoy's retry headers have no form for it", f);
    obj.unapplied("backoff", "Envoy's retry headers have no form for it", f);
    obj.finish(f);
    Some(config)
}

fn headers(at: At<'_>, f: &mut Findings) -> Option<HeadersConfig> {
    let mut obj = at.object(f)?;
    let config = HeadersConfig {
        request: obj.take("request").and_then(|o| header_ops(o, f)),
        response: obj.take("response").and_then(|o| header_ops(o, f)),
    };
    obj.finish(f);
    Some(config)
}

fn header_ops(at: At<'_>, f: &mut Findings) -> Option<HeaderOpsConfig> {
    let mut obj = at.object(f)?;
    let pairs = |key: &str, obj: &mut Obj<'_>, f: &mut Findings| -> KeyedList<String> {
        let Some(map) = obj.take(key).and_then(|m| m.object(f)) else { return KeyedList::default() };
        let mut out = Vec::new();
        for entry in map.entries {
            let path = keyed(&map.path, &entry.key);
            if let Some(value) = (At { node: &entry.value, path, line: entry.key_line }).string(f) {
                out.push((entry.key.clone(), value));
            }
        }
        KeyedList(out)
    };
    let set = pairs("set", &mut obj, f);
    let add = pairs("add", &mut obj, f);
    let remove = obj.strings("remove", f);
    obj.finish(f);
    Some(HeaderOpsConfig { set, add, remove })
}

fn sticky(at: At<'_>, f: &mut Findings) -> Option<StickyConfig> {
    let mut obj = at.object(f)?;
    let header = obj.take("header").and_then(|h| h.name(f));
    let cookie = obj.take("cookie").and_then(|c| c.name(f));
    obj.finish(f);
    match (header, cookie) {
        (Some(h), None) => Some(StickyConfig::Header(h)),
        (None, Some(c)) => Some(StickyConfig::Cookie(c)),
        _ => {
            f.error(at.line(), &at.path, "set exactly one of header, cookie");
            None
        }
    }
}

/// `percentage: {value: x}` or the deprecated integer `percent`; Istio's
/// translation gives 0 % when neither is set, and so do we (with a warning).
fn fault_percentage(obj: &mut Obj<'_>, what: &str, f: &mut Findings) -> f64 {
    if let Some(p) = obj.take("percentage") {
        if obj.take("percent").is_some() {
            f.warning(p.line(), &p.path, "percentage and the deprecated percent are both set: percentage is used");
        }
        return percentage_value(p, f).unwrap_or(0.0);
    }
    if let Some(p) = obj.take("percent") {
        f.warning(p.line(), &p.path, "percent is deprecated: use percentage.value");
        return p.integer::<u32>(f, 0, 100).map(f64::from).unwrap_or(0.0);
    }
    f.warning(
        obj.line(),
        &obj.path,
        format!("no percentage: as in Istio, this {what} applies to 0% of requests (set percentage.value, e.g. 100)"),
    );
    0.0
}

fn percentage_value(at: At<'_>, f: &mut Findings) -> Option<f64> {
    let mut obj = at.object(f)?;
    let value = obj.take("value").and_then(|v| v.number(f)).unwrap_or(0.0);
    obj.finish(f);
    if !(0.0..=100.0).contains(&value) {
        f.error(at.line(), &join(&at.path, "value"), format!("percentage {value} is not within 0..100"));
        return None;
    }
    Some(value)
}

fn fault(at: At<'_>, f: &mut Findings) -> Option<Fault> {
    let mut obj = at.object(f)?;
    let delay = match obj.take("delay") {
        Some(d) => fault_delay(d, f),
        None => None,
    };
    let abort = match obj.take("abort") {
        Some(a) => fault_abort(a, f),
        None => None,
    };
    obj.finish(f);
    if delay.is_none() && abort.is_none() {
        if !f.has_errors() {
            f.warning(at.line(), &at.path, "fault has neither a delay nor an abort Switchyard applies: ignored");
        }
        return None;
    }
    Some(Fault { delay, abort })
}

fn fault_delay(at: At<'_>, f: &mut Findings) -> Option<FaultDelay> {
    let mut obj = at.object(f)?;
    let fixed_delay = obj.string("fixedDelay", f);
    let exponential = obj.has("exponentialDelay");
    obj.unapplied("exponentialDelay", "only fixedDelay is supported (Istio does not support it either)", f);
    let percentage = fault_percentage(&mut obj, "delay", f);
    obj.finish(f);
    match fixed_delay {
        Some(fixed_delay) => Some(FaultDelay { fixed_delay, percentage }),
        None if exponential => None,
        None => {
            f.error(at.line(), &join(&at.path, "fixedDelay"), "fixedDelay is required");
            None
        }
    }
}

fn fault_abort(at: At<'_>, f: &mut Findings) -> Option<FaultAbort> {
    let mut obj = at.object(f)?;
    let http = obj.take("httpStatus").and_then(|s| s.integer::<u32>(f, 0, 999));
    let grpc = match obj.take("grpcStatus") {
        Some(s) => grpc_status(s, f),
        None => None,
    };
    let http2 = obj.has("http2Error");
    obj.unapplied("http2Error", "use httpStatus or grpcStatus", f);
    let percentage = fault_percentage(&mut obj, "abort", f);
    obj.finish(f);
    let status = match (http, grpc) {
        (Some(code), None) => AbortStatus::Http(code),
        (None, Some(code)) => AbortStatus::Grpc(code),
        (Some(_), Some(_)) => {
            f.error(at.line(), &at.path, "set one of httpStatus, grpcStatus (both are set)");
            return None;
        }
        (None, None) => {
            if !http2 && !f.has_errors() {
                f.error(at.line(), &at.path, "set httpStatus or grpcStatus");
            }
            return None;
        }
    };
    Some(FaultAbort { status, percentage })
}

fn grpc_status(at: At<'_>, f: &mut Findings) -> Option<u32> {
    let text = at.string(f)?;
    if let Ok(code) = text.parse::<u32>() {
        return Some(code);
    }
    match grpc_status_from_name(&text) {
        Some(code) => Some(code),
        None => {
            f.error(at.line(), &at.path, format!("unknown gRPC status {text:?} (use a name like UNAVAILABLE)"));
            None
        }
    }
}

/// `mirror` / `mirrors`. A TrafficPolicy's (`switchyard`) `mirrors[]`
/// entries also take `timeout`, `maxInFlight` and `compare`; a
/// VirtualService's are warned about (leaving them out changes no answer).
fn mirrors(obj: &mut Obj<'_>, switchyard: bool, f: &mut Findings) -> Vec<Mirror> {
    let mut out = Vec::new();
    let single_origin = Origin { line: obj.line(), path: join(&obj.path, "mirror") };
    let single = obj.take("mirror").and_then(|m| destination(m, f));
    let percentage = match (obj.take("mirrorPercentage"), obj.take("mirrorPercent")) {
        (Some(p), deprecated) => {
            if let Some(d) = deprecated {
                f.warning(d.line(), &d.path, "mirrorPercent is deprecated and ignored: mirrorPercentage is set");
            }
            percentage_value(p, f)
        }
        (None, Some(p)) => {
            f.warning(p.line(), &p.path, "mirrorPercent is deprecated: use mirrorPercentage.value");
            p.integer::<u32>(f, 0, 100).map(f64::from)
        }
        (None, None) => None,
    };
    if let Some(destination) = single {
        out.push(Mirror {
            destination,
            percentage,
            timeout: None,
            max_in_flight: None,
            compare: None,
            origin: single_origin,
        });
    } else if percentage.is_some() {
        f.warning(obj.line(), &obj.path, "mirrorPercentage without mirror is ignored");
    }
    if let Some(list) = obj.take("mirrors") {
        if !out.is_empty() {
            f.error(list.line(), &list.path, "set mirror or mirrors, not both");
            return out;
        }
        for item in list.list(f).unwrap_or_default() {
            let Some(mut m) = item.at().object(f) else { continue };
            let destination = match m.take("destination") {
                Some(d) => destination(d, f),
                None => {
                    f.error(item.line(), &join(&item.path, "destination"), "destination is required");
                    None
                }
            };
            let percentage = m.take("percentage").and_then(|p| percentage_value(p, f));
            let (mut timeout, mut max_in_flight, mut compare) = (None, None, None);
            if switchyard {
                timeout = m.string("timeout", f);
                max_in_flight = m.take("maxInFlight").and_then(|n| n.integer::<u32>(f, 1, MAX_PENDING_LIMIT));
                compare = m.take("compare").and_then(|c| mirror_compare(c, f));
            } else {
                let why = "a Switchyard field: put the rule in a TrafficPolicy (switchyard.dev/v1alpha1)";
                for key in ["timeout", "maxInFlight", "compare"] {
                    m.unapplied(key, why, f);
                }
            }
            m.finish(f);
            if let Some(destination) = destination {
                let origin = Origin { line: item.line(), path: item.path.to_string() };
                out.push(Mirror { destination, percentage, timeout, max_in_flight, compare, origin });
            }
        }
    }
    out
}

/// A TrafficPolicy mirror's `compare` (docs/mirror-compare.md). Header
/// names and the log allow-list are checked by the mirror filter's own
/// validation when the rule is rendered.
fn mirror_compare(at: At<'_>, f: &mut Findings) -> Option<CompareConfig> {
    let mut obj = at.object(f)?;
    let status = obj.take("status").and_then(|s| match s.string(f)?.as_str() {
        "exact" => Some(StatusMatch::Exact),
        "class" => Some(StatusMatch::Class),
        other => {
            f.error(s.line(), &s.path, format!("status {other:?}: use exact or class"));
            None
        }
    });
    let headers = obj.strings("headers", f);
    let body_bytes = obj.take("bodyBytes").and_then(|b| b.integer::<u32>(f, 0, MAX_COMPARE_BODY_BYTES));
    let log_headers = obj.strings("logHeaders", f);
    let log_per_minute = obj.take("logPerMinute").and_then(|n| n.integer::<u32>(f, 0, u32::MAX));
    obj.finish(f);
    Some(CompareConfig { status, headers, body_bytes, log_headers, log_per_minute })
}

fn destination_rule(spec: At<'_>, f: &mut Findings) -> Option<DestinationRule> {
    let mut obj = spec.object(f)?;
    let host = match obj.take("host") {
        Some(h) => h.name(f),
        None => {
            f.error(spec.line(), &join(&spec.path, "host"), "host is required");
            None
        }
    };
    let mut subsets = Vec::new();
    if let Some(list) = obj.take("subsets") {
        for item in list.list(f).unwrap_or_default() {
            let Some(mut s) = item.at().object(f) else { continue };
            match s.take("name").and_then(|n| n.name(f)) {
                Some(name) if subsets.contains(&name) => {
                    f.error(item.line(), &join(&item.path, "name"), format!("subset {name:?} is defined twice"))
                }
                Some(name) => subsets.push(name),
                None if !s.has("name") => f.error(item.line(), &join(&item.path, "name"), "name is required"),
                None => {}
            }
            // Labels pick endpoints: Envoy's clusters (istiod) do that.
            s.take("labels");
            traffic_policy_warning(&mut s, f);
            s.finish(f);
        }
    }
    traffic_policy_warning(&mut obj, f);
    let export_to = export_to(&mut obj, false, f);
    obj.unapplied("workloadSelector", "subsets apply to every workload that sees the host", f);
    obj.finish(f);
    Some(DestinationRule { host: host?, subsets, export_to })
}

fn traffic_policy_warning(obj: &mut Obj<'_>, f: &mut Findings) {
    if let Some(tp) = obj.take("trafficPolicy") {
        deprecated_consecutive_errors(tp.node, &tp.path, f);
        f.warning(tp.line(), &tp.path, "trafficPolicy is not applied: it stays with Envoy's clusters (istiod)");
    }
}

/// `outlierDetection.consecutiveErrors` anywhere under a trafficPolicy.
fn deprecated_consecutive_errors(node: &Node, path: &str, f: &mut Findings) {
    let NodeKind::Map(entries) = &node.kind else { return };
    for entry in entries {
        let child = join(path, &entry.key);
        if entry.key == "consecutiveErrors" {
            f.warning(entry.key_line, &child, "consecutiveErrors is deprecated: use consecutive5xxErrors");
        } else if matches!(entry.value.kind, NodeKind::Map(_)) {
            deprecated_consecutive_errors(&entry.value, &child, f);
        } else if let NodeKind::Seq(items) = &entry.value.kind {
            for (i, item) in items.iter().enumerate() {
                deprecated_consecutive_errors(item, &format!("{child}[{i}]"), f);
            }
        }
    }
}

fn gateway(spec: At<'_>, f: &mut Findings) -> Option<Gateway> {
    let mut obj = spec.object(f)?;
    let selector = obj.take("selector").and_then(|s| s.string_map(f)).unwrap_or_default();
    let mut hosts = Vec::new();
    let mut servers = Vec::new();
    if let Some(list) = obj.take("servers") {
        for item in list.list(f).unwrap_or_default() {
            let Some(mut server) = item.at().object(f) else { continue };
            let server_hosts = server.strings("hosts", f);
            hosts.extend(server_hosts.iter().cloned());
            let port = match server.take("port") {
                Some(p) => gateway_port(p, f),
                None => {
                    f.error(
                        item.line(),
                        &join(&item.path, "port"),
                        "port is required (Istio refuses a server without one)",
                    );
                    None
                }
            };
            let (passthrough, https_redirect) = server.take("tls").map_or((false, false), |tls| server_tls(tls, f));
            // Listener settings: Envoy's (istiod's) business, not ours.
            for key in ["name", "bind", "defaultEndpoint"] {
                server.take(key);
            }
            server.finish(f);
            servers.push(GatewayServer { port, hosts: server_hosts, passthrough, https_redirect });
        }
    }
    obj.finish(f);
    Some(Gateway { selector, hosts, servers })
}

/// A Gateway server's `port` (`number`, `name`, `protocol`; `targetPort` is
/// deprecated and ignored by Istio).
fn gateway_port(at: At<'_>, f: &mut Findings) -> Option<Port> {
    let mut obj = at.object(f)?;
    let number = match obj.take("number") {
        Some(n) => n.integer::<u16>(f, 1, 65535),
        None => {
            f.error(at.line(), &join(&at.path, "number"), "number is required");
            None
        }
    };
    let name = obj.string("name", f).unwrap_or_default();
    let protocol = obj.string("protocol", f).unwrap_or_default();
    obj.take("targetPort");
    obj.finish(f);
    Some(Port { number: number?, name, protocol })
}

/// Whether a server's `tls` passes TLS through (no HTTP routes on it), and
/// whether it sets `httpsRedirect` (plain HTTP answered 301 to https).
fn server_tls(at: At<'_>, f: &mut Findings) -> (bool, bool) {
    let Some(mut tls) = at.object(f) else { return (false, false) };
    let mode = tls.string("mode", f).unwrap_or_default();
    let https_redirect = tls.take("httpsRedirect").and_then(|b| b.boolean(f)).unwrap_or(false);
    // The rest (certificates, versions) is istiod's: not finished, so not
    // reported as unknown.
    (matches!(mode.as_str(), "PASSTHROUGH" | "AUTO_PASSTHROUGH"), https_redirect)
}

/// `exportTo`, checked as Istio validates it: `.`, `*` or a namespace name;
/// `~` (visible to no other workload) only on a ServiceEntry; no duplicates,
/// and `*` alone.
fn export_to(obj: &mut Obj<'_>, service_entry: bool, f: &mut Findings) -> Vec<String> {
    let Some(at) = obj.take("exportTo") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for item in at.list(f).unwrap_or_default() {
        let Some(value) = item.at().string(f) else { continue };
        let valid_namespace = !value.is_empty()
            && value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !value.starts_with('-')
            && !value.ends_with('-');
        let problem = match value.as_str() {
            _ if out.contains(&value) => Some(format!("duplicate entry {value:?}")),
            "." | "*" => None,
            "~" if service_entry => None,
            "~" => Some("\"~\" (exported nowhere) is allowed only on a ServiceEntry, as in Istio".to_string()),
            _ if valid_namespace => None,
            _ => Some(format!("{value:?} is not \".\", \"*\" or a namespace name")),
        };
        if let Some(message) = problem {
            f.error(item.line(), &item.path, message);
        }
        out.push(value);
    }
    if out.len() > 1 && out.iter().any(|e| e == "*") {
        f.error(
            at.line(),
            &at.path,
            "\"*\" exports everywhere: it cannot be combined with other entries (Istio refuses it)",
        );
    }
    out
}

fn ports(at: At<'_>, number_key: &str, protocol_key: &str, f: &mut Findings) -> Vec<Port> {
    let mut out = Vec::new();
    for item in at.list(f).unwrap_or_default() {
        let Some(mut p) = item.at().object(f) else { continue };
        let number = match p.take(number_key) {
            Some(n) => n.integer::<u16>(f, 1, 65535),
            None => {
                f.error(item.line(), &join(&item.path, number_key), format!("{number_key} is required"));
                None
            }
        };
        let name = p.string("name", f).unwrap_or_default();
        let protocol = p.string(protocol_key, f).unwrap_or_default();
        if let Some(number) = number {
            out.push(Port { number, name, protocol });
        }
    }
    out
}

fn service_entry(spec: At<'_>, f: &mut Findings) -> Option<ServiceEntry> {
    let mut obj = spec.object(f)?;
    let hosts = hosts_required(&mut obj, f);
    let ports = obj.take("ports").map(|p| ports(p, "number", "protocol", f)).unwrap_or_default();
    let export_to = export_to(&mut obj, true, f);
    // How istiod builds the clusters; the egress policy needs only hosts and ports.
    for key in ["location", "resolution", "addresses", "endpoints", "subjectAltNames", "workloadSelector"] {
        obj.take(key);
    }
    obj.finish(f);
    Some(ServiceEntry { hosts, ports, export_to })
}

fn sidecar(spec: At<'_>, f: &mut Findings) -> Option<Sidecar> {
    let mut obj = spec.object(f)?;
    let selector = match obj.take("workloadSelector") {
        Some(at) => {
            let mut sel = at.object(f)?;
            let labels = sel.take("labels").and_then(|l| l.string_map(f)).unwrap_or_default();
            sel.finish(f);
            Some(labels)
        }
        None => None,
    };
    let outbound_traffic_policy = match obj.take("outboundTrafficPolicy") {
        Some(at) => {
            let mut otp = at.object(f)?;
            let mode = match otp.take("mode") {
                Some(m) => match m.string(f).as_deref() {
                    Some("REGISTRY_ONLY") => Some(OutboundTrafficPolicy::RegistryOnly),
                    Some("ALLOW_ANY") => Some(OutboundTrafficPolicy::AllowAny),
                    Some(other) => {
                        f.error(m.line(), &m.path, format!("mode {other:?} is not REGISTRY_ONLY or ALLOW_ANY"));
                        None
                    }
                    None => None,
                },
                None => Some(OutboundTrafficPolicy::AllowAny),
            };
            otp.unapplied("egressProxy", "unknown hosts are denied or allowed, never proxied", f);
            otp.finish(f);
            mode
        }
        None => None,
    };
    let mut egress_hosts = Vec::new();
    if let Some(list) = obj.take("egress") {
        for item in list.list(f).unwrap_or_default() {
            let Some(mut e) = item.at().object(f) else { continue };
            let hosts_path = join(&item.path, "hosts");
            let hosts = e.strings("hosts", f);
            for (i, host) in hosts.iter().enumerate() {
                if let Err(message) = sidecar_egress_host(host) {
                    f.error(item.line(), &format!("{hosts_path}[{i}]"), message);
                }
            }
            egress_hosts.extend(hosts);
            for key in ["port", "bind", "captureMode"] {
                e.take(key);
            }
            e.finish(f);
        }
    }
    obj.unapplied("ingress", "inbound listeners stay with Istio", f);
    obj.unapplied("inboundConnectionPool", "inbound listeners stay with Istio", f);
    obj.finish(f);
    Some(Sidecar { selector, outbound_traffic_policy, egress_hosts })
}

/// A Sidecar `egress[].hosts` entry as Istio validates it: `namespace/host`
/// with namespace `*`, `.`, `~` (no namespace: imports nothing) or a
/// namespace name. Istio has no exclusions: `~ns/host` is an invalid
/// namespace there, and refused here rather than read as an import.
fn sidecar_egress_host(entry: &str) -> Result<(), String> {
    let Some((ns, host)) = entry.split_once('/') else {
        return Err(format!(
            "{entry:?} must be namespace/host (e.g. \"./{entry}\" or \"*/{entry}\"), as Istio requires"
        ));
    };
    if let Some(excluded) = ns.strip_prefix('~').filter(|n| !n.is_empty()) {
        return Err(format!(
            "{entry:?}: Sidecar egress hosts have no exclusions (Istio refuses namespace {ns:?}): list the hosts to \
             import instead; \"~/{host}\" imports nothing, and namespace {excluded:?} is left out by not listing it"
        ));
    }
    let dns_label = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if !matches!(ns, "*" | "." | "~") && !dns_label {
        return Err(format!("{entry:?}: namespace {ns:?} is not \"*\", \".\", \"~\" or a namespace name"));
    }
    if host.is_empty() || host.contains('/') {
        return Err(format!("{entry:?}: host must be a name, \"*\" or \"*.suffix\""));
    }
    Ok(())
}

fn service(spec: At<'_>, f: &mut Findings) -> Option<Service> {
    let mut obj = spec.object(f)?;
    let ports = obj.take("ports").map(|p| ports(p, "port", "appProtocol", f)).unwrap_or_default();
    // The rest of a Kubernetes Service (selector, type, clusterIP, ...) is not ours.
    Some(Service { ports })
}
