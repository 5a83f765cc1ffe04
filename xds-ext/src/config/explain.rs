//! `xds-ext explain`: which rule a request hits and what each filter does
//! with it, decided by the filters' own compiled configs (the code that runs
//! in Envoy), with `StaticHeaders` standing in for the request.
//!
//! Percentages and weights are shown as configured. The filters draw one
//! random number per request; explain uses the draw given by `--random`
//! (default 0: every share above 0 % hits, and a weighted pick takes the
//! first destination whose weight is above 0).

use serde::Serialize;
use switchyard_policy::egress::{CompiledEgress, EgressDecision};
use switchyard_policy::fault::{Abort, CompiledFault, FaultDecision};
use switchyard_policy::mirror::{CompiledMirror, MirrorDecision};
use switchyard_policy::routing::{CompiledRouting, RedirectTarget, RoutingDecision};
use switchyard_policy::{HeaderOps, Request, StaticHeaders, DEFAULT_CLUSTER_NAME_TEMPLATE};

use super::render::Configs;
use crate::workload::RESOURCE_HTTP;

/// A request as `explain` takes it: `METHOD URL` plus headers.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSpec {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RequestSpec {
    /// Parses `URL` (`http://host[:port]/path?query`, or `/path` with a
    /// `host` header) and `name: value` header lines.
    pub fn parse(method: &str, url: &str, headers: &[String]) -> Result<Self, String> {
        let mut parsed = Vec::new();
        for h in headers {
            let (name, value) = h.split_once(':').ok_or_else(|| format!("header {h:?} is not `name: value`"))?;
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(format!("header {h:?} has no name"));
            }
            parsed.push((name, value.trim().to_string()));
        }
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("http".to_string(), url),
        };
        let (authority, path) = if url.contains("://") {
            match rest.find(['/', '?']) {
                Some(at) => (rest[..at].to_string(), rest[at..].to_string()),
                None => (rest.to_string(), "/".to_string()),
            }
        } else {
            let host = parsed.iter().find(|(n, _)| n == "host" || n == ":authority").map(|(_, v)| v.clone());
            (host.ok_or("a URL without scheme://host needs a `host: NAME` header")?, rest.to_string())
        };
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        if authority.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        parsed.retain(|(n, _)| n != "host" && n != ":authority");
        Ok(RequestSpec { method: method.to_ascii_uppercase(), scheme, authority, path, headers: parsed })
    }

    fn port(&self) -> u16 {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match self.authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || self.authority.starts_with('[') => {
                port.parse().unwrap_or(default)
            }
            _ => default,
        }
    }

    fn static_headers(&self) -> StaticHeaders {
        let mut pairs = vec![
            (":method".to_string(), self.method.clone()),
            (":scheme".to_string(), self.scheme.clone()),
            (":authority".to_string(), self.authority.clone()),
            (":path".to_string(), self.path.clone()),
        ];
        pairs.extend(self.headers.iter().cloned());
        StaticHeaders::new(pairs)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub request: RequestSpec,
    pub random: u64,
    /// `sidecar`, or `gateway (ns/name, ...)`.
    pub role: String,
    pub egress: String,
    pub routing: RoutingExplained,
    pub fault: String,
    pub mirror: String,
    /// The stages the combined filter (`switchyard.http`) runs for this
    /// workload, deciding as above, and those it leaves out.
    pub combined: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct RoutingExplained {
    /// `unmanaged`, `no route (404)`, `route`, `redirect`, `direct response`.
    pub outcome: String,
    pub rule: Option<String>,
    pub source: Option<String>,
    pub cluster: Option<String>,
    /// Every destination of the rule with its weight.
    pub destinations: Vec<String>,
    pub timeout: Option<String>,
    pub retries: Option<String>,
    pub rewrite: Option<String>,
    pub redirect: Option<String>,
    pub headers: Vec<String>,
}

/// What a redirect keeps of the request: its scheme, `x-forwarded-proto`
/// (Envoy sets it to the scheme when the client did not), authority, path.
fn redirect_target(request: &RequestSpec) -> RedirectTarget<'_> {
    let forwarded = request.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-proto"));
    RedirectTarget {
        scheme: &request.scheme,
        forwarded_proto: forwarded.map_or(&request.scheme, |(_, v)| v),
        authority: &request.authority,
        path: &request.path,
    }
}

/// Runs the request through the four filters' decisions.
pub fn explain(configs: &Configs, request: &RequestSpec, random: u64) -> Result<Explanation, String> {
    let routing = CompiledRouting::from_config(&configs.routing).map_err(|e| format!("routing config: {e}"))?;
    let fault = CompiledFault::from_config(&configs.fault).map_err(|e| format!("fault config: {e}"))?;
    let mirror = CompiledMirror::from_config(&configs.mirror).map_err(|e| format!("mirror config: {e}"))?;
    let egress = CompiledEgress::from_config(&configs.egress).map_err(|e| format!("egress config: {e}"))?;
    let headers = request.static_headers();
    let port = request.port();
    let role = if configs.gateways.is_empty() {
        "sidecar".to_string()
    } else {
        format!("gateway ({})", configs.gateways.join(", "))
    };

    // An app's `https://` request reaches its sidecar as TLS: Envoy sees the
    // SNI and the port, never the HTTP inside, so only egress-tls decides.
    if request.scheme == "https" && configs.gateways.is_empty() {
        return Ok(explain_tls(&egress, request, port, random, role));
    }
    let combined = combined_stages(configs);

    let egress_text = match egress.decide_authority_with_default_port(&request.authority, port) {
        EgressDecision::Allow { host: Some(host) } => format!("allow (listed host {host})"),
        EgressDecision::Allow { host: None } => "allow (ALLOW_ANY: host not listed)".to_string(),
        EgressDecision::Deny { status } => format!("deny: answers {status} (REGISTRY_ONLY: host not listed)"),
        EgressDecision::WouldDeny { status } => format!("would deny with {status} (dry run: let through)"),
    };

    let mut req = Request::new(&headers).with_port(port);
    let routing_text = match routing.decide(&mut req, random) {
        RoutingDecision::Unmanaged => {
            RoutingExplained { outcome: "unmanaged: no virtual host for this authority".into(), ..Default::default() }
        }
        RoutingDecision::NoRoute { virtual_host } => RoutingExplained {
            outcome: format!("no route: {virtual_host} has no matching rule, answers 404"),
            ..Default::default()
        },
        RoutingDecision::Route(d) => {
            let id = format!("{}/{}", d.virtual_host, d.rule);
            let mut out = RoutingExplained {
                outcome: "route".into(),
                source: configs.sources.get(&id).cloned(),
                rule: Some(id),
                cluster: Some(d.cluster.to_string()),
                timeout: timeout_ms_text(d.timeout_ms),
                ..Default::default()
            };
            out.destinations = destinations_of(configs, d.virtual_host, d.rule);
            out.retries = d.retries.map(|r| {
                let mut text = format!("max {}", r.max_retries);
                for (label, value) in [
                    ("retry-on", &r.retry_on),
                    ("grpc-on", &r.grpc_retry_on),
                    ("status codes", &r.retriable_status_codes),
                    ("per-try timeout ms", &r.per_try_timeout_ms),
                ] {
                    if let Some(v) = value {
                        text.push_str(&format!(", {label} {v}"));
                    }
                }
                text
            });
            let mut rewrites = Vec::new();
            if let Some(uri) = &d.uri_rewrite {
                rewrites.push(format!("path {} → {}", request.path, uri.apply(&request.path)));
            }
            if let Some(authority) = d.authority_rewrite {
                rewrites.push(format!("authority → {authority}"));
            }
            out.rewrite = (!rewrites.is_empty()).then(|| rewrites.join(", "));
            for ops in d.header_ops {
                out.headers.extend(describe_ops("request", &ops.request));
                out.headers.extend(describe_ops("response", &ops.response));
            }
            out
        }
        RoutingDecision::Redirect(d) => {
            let id = format!("{}/{}", d.virtual_host, d.rule);
            RoutingExplained {
                outcome: "redirect".into(),
                source: configs.sources.get(&id).cloned(),
                rule: Some(id),
                redirect: Some(format!("{} location: {}", d.status, d.location(&redirect_target(request)))),
                ..Default::default()
            }
        }
        RoutingDecision::DirectResponse(d) => {
            let id = format!("{}/{}", d.virtual_host, d.rule);
            let body = d.body.map_or("no body".to_string(), |b| format!("body {b:?}"));
            RoutingExplained {
                outcome: "direct response".into(),
                source: configs.sources.get(&id).cloned(),
                rule: Some(id),
                redirect: Some(format!("{} {body}", d.status)),
                headers: describe_ops("response", d.headers),
                ..Default::default()
            }
        }
    };

    let mut req = Request::new(&headers).with_port(port);
    let fault_text = match fault.decide(&mut req, random) {
        FaultDecision::Unmanaged | FaultDecision::NoRoute { .. } => "none (no fault rule for this request)".into(),
        FaultDecision::Fault(action) => {
            let id = format!("{}/{}", action.virtual_host, action.rule);
            if configs.fault_fillers.contains(&id) {
                "none (the matching rule has no fault)".to_string()
            } else {
                let route = configs
                    .fault
                    .virtual_hosts
                    .iter()
                    .find(|v| v.name == action.virtual_host)
                    .and_then(|v| v.routes.iter().find(|r| r.name == action.rule));
                let mut parts = Vec::new();
                if let Some(delay) = route.and_then(|r| r.delay.as_ref()) {
                    let hit = if action.delay_ms.is_some() { "injected" } else { "not drawn" };
                    parts.push(format!("delay {} at {}% ({hit} with this draw)", delay.fixed_delay, delay.percentage));
                }
                if let Some(abort) = route.and_then(|r| r.abort.as_ref()) {
                    let status = match (abort.http_status, abort.grpc_status) {
                        (Some(code), _) => format!("HTTP {code}"),
                        (None, Some(code)) => format!("gRPC status {code}"),
                        (None, None) => "?".into(),
                    };
                    let hit = match action.abort {
                        Some(Abort::Http(_)) | Some(Abort::Grpc(_)) => "injected",
                        None => "not drawn",
                    };
                    parts.push(format!("abort {status} at {}% ({hit} with this draw)", abort.percentage));
                }
                format!("rule {id}: {}", parts.join("; "))
            }
        }
    };

    let mut req = Request::new(&headers).with_port(port);
    let mirror_text = match mirror.decide(&mut req, random) {
        MirrorDecision::Unmanaged | MirrorDecision::NoRoute { .. } => "none (no mirror rule for this request)".into(),
        MirrorDecision::Mirror(selection) => {
            let id = format!("{}/{}", selection.virtual_host, selection.rule);
            if configs.mirror_fillers.contains(&id) {
                "none (the matching rule has no mirror)".to_string()
            } else {
                let route = configs
                    .mirror
                    .virtual_hosts
                    .iter()
                    .find(|v| v.name == selection.virtual_host)
                    .and_then(|v| v.routes.iter().find(|r| r.name == selection.rule));
                let chosen: Vec<&str> = selection.clusters().collect();
                // The rule's mirrors as compiled: their bounds and comparison
                // with the defaults filled in.
                let compiled: Vec<_> = mirror
                    .targets()
                    .filter(|(rule, _)| rule.virtual_host == selection.virtual_host && rule.rule == selection.rule)
                    .map(|(_, target)| target)
                    .collect();
                let all: Vec<String> = route
                    .map(|r| {
                        r.mirrors
                            .iter()
                            .enumerate()
                            .map(|(k, m)| {
                                let cluster = cluster_name(&m.destination);
                                let drawn = if chosen.contains(&cluster.as_str()) { "copied" } else { "not drawn" };
                                let mut text =
                                    format!("{cluster} at {}% ({drawn} with this draw", m.percentage.unwrap_or(100.0));
                                if let Some(target) = compiled.get(k) {
                                    text.push_str(&format!(
                                        "; timeout {}, at most {} in flight per worker; {}",
                                        shadow_timeout(target.timeout_ms()),
                                        target.max_in_flight(),
                                        match target.compare() {
                                            Some(compare) => format!("compare: {}", compare.summary()),
                                            None => "not compared".to_string(),
                                        }
                                    ));
                                }
                                text.push(')');
                                text
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "rule {id}: shadow copy (authority {}) to {}",
                    switchyard_policy::shadow_authority(&request.authority),
                    all.join(", ")
                )
            }
        }
    };

    Ok(Explanation {
        request: request.clone(),
        random,
        role,
        egress: egress_text,
        routing: routing_text,
        fault: fault_text,
        mirror: mirror_text,
        combined,
    })
}

/// `2s`, `250ms`.
fn shadow_timeout(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `switchyard.http: egress → routing (left out: fault: no fault rules; mirror: no mirror rules)`.
pub fn combined_stages(configs: &Configs) -> String {
    let stages = configs.chain_stages();
    let runs: Vec<&str> = stages.iter().filter(|(_, out)| out.is_none()).map(|(stage, _)| *stage).collect();
    let left_out: Vec<String> =
        stages.iter().filter_map(|(stage, out)| out.map(|why| format!("{stage}: {why}"))).collect();
    let mut text = format!("{}: {}", RESOURCE_HTTP, runs.join(" → "));
    if !left_out.is_empty() {
        text.push_str(&format!(" (left out: {})", left_out.join("; ")));
    }
    text
}

/// A sidecar's view of TLS from its app: switchyard.egress-tls on the SNI.
fn explain_tls(egress: &CompiledEgress, request: &RequestSpec, port: u16, random: u64, role: String) -> Explanation {
    let host = match request.authority.rsplit_once(':') {
        Some((host, p)) if p.parse::<u16>().is_ok() => host,
        _ => request.authority.as_str(),
    };
    let egress_text = match egress.decide_sni(Some(host), Some(port)) {
        EgressDecision::Allow { host: Some(listed) } => {
            format!("TLS: switchyard.egress-tls lets SNI {host}:{port} through (listed host {listed}), encrypted end to end")
        }
        EgressDecision::Allow { host: None } => {
            format!("TLS: switchyard.egress-tls lets SNI {host}:{port} through (ALLOW_ANY: not listed)")
        }
        EgressDecision::Deny { .. } => format!(
            "TLS: switchyard.egress-tls closes the connection for SNI {host}:{port} before any upstream connection \
             (REGISTRY_ONLY: not listed)"
        ),
        EgressDecision::WouldDeny { .. } => {
            format!("TLS: switchyard.egress-tls would close SNI {host}:{port} (dry run: let through)")
        }
    };
    let not_http = "not applied: the sidecar passes TLS through and sees no HTTP (no path, headers or method)";
    Explanation {
        request: request.clone(),
        random,
        role,
        egress: egress_text,
        routing: RoutingExplained { outcome: not_http.to_string(), ..Default::default() },
        fault: not_http.to_string(),
        mirror: not_http.to_string(),
        combined: format!("{RESOURCE_HTTP}: {not_http}"),
    }
}

fn timeout_ms_text(timeout_ms: Option<&str>) -> Option<String> {
    timeout_ms.map(|ms| if ms == "0" { "none (0: disabled, Istio's default)".to_string() } else { format!("{ms} ms") })
}

fn describe_ops(direction: &str, ops: &HeaderOps) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(ops.remove.iter().map(|n| format!("{direction}: remove {n}")));
    out.extend(ops.set.iter().map(|(n, v)| format!("{direction}: set {n}: {v}")));
    out.extend(ops.add.iter().map(|(n, v)| format!("{direction}: add {n}: {v}")));
    out
}

fn cluster_name(d: &switchyard_policy::Destination) -> String {
    DEFAULT_CLUSTER_NAME_TEMPLATE
        .replace("{port}", &d.port.map(|p| p.to_string()).unwrap_or_default())
        .replace("{subset}", d.subset.as_deref().unwrap_or(""))
        .replace("{host}", &d.host)
}

fn destinations_of(configs: &Configs, virtual_host: &str, rule: &str) -> Vec<String> {
    let Some(route) = configs
        .routing
        .virtual_hosts
        .iter()
        .find(|v| v.name == virtual_host)
        .and_then(|v| v.routes.iter().find(|r| r.name == rule))
    else {
        return Vec::new();
    };
    let destinations = route.route.as_deref().unwrap_or_default();
    let sticky = match &route.sticky {
        Some(switchyard_policy::routing::StickyConfig::Header(h)) if destinations.len() > 1 => {
            format!(" (sticky on header {h})")
        }
        Some(switchyard_policy::routing::StickyConfig::Cookie(c)) if destinations.len() > 1 => {
            format!(" (sticky on cookie {c})")
        }
        _ => String::new(),
    };
    destinations
        .iter()
        .map(|d| {
            let weight = if destinations.len() == 1 { 100 } else { d.weight.unwrap_or(0) };
            format!("{} weight {weight}{sticky}", cluster_name(&d.destination))
        })
        .collect()
}

impl Explanation {
    /// The human form (`-o table`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let r = &self.request;
        out.push_str(&format!("request:  {} {}://{}{}\n", r.method, r.scheme, r.authority, r.path));
        for (name, value) in &r.headers {
            out.push_str(&format!("          {name}: {value}\n"));
        }
        out.push_str(&format!("workload: {}\n", self.role));
        out.push_str(&format!(
            "draw:     {} (percentages and weights are as configured; --random N picks another draw)\n",
            self.random
        ));
        out.push_str(&format!("egress:   {}\n", self.egress));
        let rt = &self.routing;
        out.push_str(&format!("routing:  {}\n", rt.outcome));
        let mut line = |label: &str, value: &str| out.push_str(&format!("          {label:<13}{value}\n"));
        if let Some(rule) = &rt.rule {
            line("rule", rule);
        }
        if let Some(source) = &rt.source {
            line("from", source);
        }
        if let Some(cluster) = &rt.cluster {
            line("cluster", cluster);
        }
        for d in &rt.destinations {
            line("destination", d);
        }
        for (label, value) in
            [("timeout", &rt.timeout), ("retries", &rt.retries), ("rewrite", &rt.rewrite), ("redirect", &rt.redirect)]
        {
            if let Some(value) = value {
                line(label, value);
            }
        }
        for h in &rt.headers {
            line("headers", h);
        }
        out.push_str(&format!("fault:    {}\n", self.fault));
        out.push_str(&format!("mirror:   {}\n", self.mirror));
        out.push_str(&format!("combined: {}\n", self.combined));
        out
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_parse() {
        let r = RequestSpec::parse("get", "http://reviews:9080/reviews/0?x=1", &["End-User: jason".into()]).unwrap();
        assert_eq!(
            (r.method.as_str(), r.authority.as_str(), r.path.as_str()),
            ("GET", "reviews:9080", "/reviews/0?x=1")
        );
        assert_eq!(r.port(), 9080);
        assert_eq!(r.headers, vec![("end-user".to_string(), "jason".to_string())]);
        let r = RequestSpec::parse("GET", "/productpage", &["host: bookinfo.example.com".into()]).unwrap();
        assert_eq!((r.authority.as_str(), r.port()), ("bookinfo.example.com", 80));
        assert!(RequestSpec::parse("GET", "/x", &[]).is_err());
        assert!(RequestSpec::parse("GET", "http://a/", &["nocolon".into()]).is_err());
    }
}
