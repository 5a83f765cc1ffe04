//! The routing filter's config and decision: which cluster, with which
//! timeout, retries, header operations and rewrites; or a redirect.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::cluster_name::{is_header_value, ClusterNameTemplate, Destination};
use crate::duration::millis;
use crate::error::{quote, ConfigError, Failed, Path};
use crate::header_ops::HeadersConfig;
use crate::http_match::{header_name, HttpMatchRequest, UriMatcher};
use crate::json::{decode, decode_struct, Decode, Decoder};
use crate::redirect::{location, validate_authority, DirectResponse, Redirect, RedirectRequest};
use crate::request::{HeaderSource, Request};
use crate::retry::RetriesConfig;
use crate::rewrite::{PathRewrite, RegexRewrite};
use crate::virtual_host::{Lookup, RouteSpec, RuleId, VirtualHostConfig, VirtualHosts};
use crate::weighted::{pick_weighted, sticky_hash};

pub use crate::header_ops::{HeaderMutations, HeaderOps};
pub use crate::redirect::{DirectResponseConfig, RedirectConfig, RedirectTarget, MAX_DIRECT_RESPONSE_BODY};
pub use crate::retry::RetryHeaders;
pub use crate::rewrite::{RegexRewriteConfig, RewriteConfig, UriRewrite};

pub const DEFAULT_CLUSTER_HEADER: &str = "x-switchyard-cluster";

/// Request headers the routing decision is expressed in, besides the
/// cluster header. On a managed host the filter owns them: a value sent by
/// the client must be removed before the decision is applied, or a client
/// could choose its own timeout or retries.
pub const ENVOY_ROUTING_HEADERS: &[&str] = &[
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name_template: Option<String>,
    pub virtual_hosts: Vec<VirtualHostConfig<RouteConfig>>,
}

decode_struct!(RoutingConfig {
    version: required,
    cluster_header: default,
    cluster_name_template: default,
    virtual_hosts: required,
});

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Vec<RouteDestination>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetriesConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeadersConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
}

decode_struct!(RouteConfig {
    name: required,
    match_ = "match": default,
    route: default,
    redirect: default,
    direct_response: default,
    rewrite: default,
    timeout: default,
    retries: default,
    headers: default,
    sticky: default,
});

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteDestination {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeadersConfig>,
}

decode_struct!(RouteDestination { destination: required, weight: default, headers: default });

/// Keeps a client on one destination of a weighted route: the pick hashes
/// this header's or cookie's value instead of using the random draw.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StickyConfig {
    Header(String),
    Cookie(String),
}

impl Decode for StickyConfig {
    fn blank() -> Self {
        StickyConfig::Header(String::new())
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        const VARIANTS: &[&str] = &["header", "cookie"];
        let (index, object) = d.variant(at, VARIANTS, false)?;
        let mut name = String::new();
        name.decode_into(d, &Path::Field(at, if index == 0 { "header" } else { "cookie" }))?;
        d.end_variant(at, VARIANTS, object)?;
        *self = if index == 0 { StickyConfig::Header(name) } else { StickyConfig::Cookie(name) };
        Ok(())
    }
}

impl RouteSpec for RouteConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn match_blocks(&self) -> &[HttpMatchRequest] {
        &self.match_
    }
    fn rewrite_regex(&self) -> Option<&str> {
        self.rewrite.as_ref()?.uri_regex.as_ref().map(|r| r.pattern.as_str())
    }
}

// ---------------------------------------------------------------- compiled

#[derive(Debug)]
struct CompiledDestination {
    cluster: String,
    /// Index into `CompiledRouting::clusters()`.
    cluster_index: usize,
    headers: HeaderMutations,
}

#[derive(Debug)]
enum Sticky {
    Header(String),
    Cookie(String),
}

#[derive(Debug)]
struct Forward {
    destinations: Vec<CompiledDestination>,
    weights: Vec<u32>,
    timeout_ms: Option<String>,
    retries: Option<RetryHeaders>,
    headers: HeaderMutations,
    uri_rewrite: Option<PathRewrite>,
    authority_rewrite: Option<String>,
    sticky: Option<Sticky>,
}

#[derive(Debug)]
enum Action {
    Forward(Box<Forward>),
    Redirect(Redirect),
    Direct(DirectResponse, HeaderMutations),
}

/// A routing config, validated and compiled. Share it (`Rc`) between
/// request contexts; `decide` takes `&self`.
#[derive(Debug)]
pub struct CompiledRouting {
    cluster_header: String,
    /// The cluster header, then `ENVOY_ROUTING_HEADERS`.
    owned_headers: Vec<String>,
    /// Distinct cluster names, in first-use order.
    clusters: Vec<String>,
    hosts: VirtualHosts<Action>,
}

/// What the routing filter does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum RoutingDecision<'a> {
    /// No virtual host serves the authority: pass the request on (without
    /// a client-sent cluster header, see `client_headers_to_strip`).
    Unmanaged,
    /// A virtual host serves it but no rule matched: the routing filter
    /// answers 404, as Istio does for a VirtualService without a matching
    /// route.
    NoRoute {
        virtual_host: &'a str,
    },
    Route(RouteDecision<'a>),
    Redirect(RedirectDecision<'a>),
    /// Answer `status` with `body`, adding the rule's response headers.
    DirectResponse(DirectResponseDecision<'a>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteDecision<'a> {
    pub virtual_host: &'a str,
    pub rule: &'a str,
    /// Index into `CompiledRouting::rule_names()`, for per-rule stats.
    pub rule_index: usize,
    /// The `name` of the match block that matched, if it has one.
    pub match_name: Option<&'a str>,
    pub destination_index: usize,
    /// Value for the cluster header.
    pub cluster: &'a str,
    /// Index of `cluster` in `CompiledRouting::clusters()`, for per-cluster stats.
    pub cluster_index: usize,
    /// Value for `x-envoy-upstream-rq-timeout-ms` ("0" disables the timeout).
    pub timeout_ms: Option<&'a str>,
    pub retries: Option<&'a RetryHeaders>,
    /// Route-level operations, then the chosen destination's: apply in this
    /// order so the destination's `set` wins, as in Istio.
    pub header_ops: [&'a HeaderMutations; 2],
    pub uri_rewrite: Option<UriRewrite<'a>>,
    /// New `:authority` (Envoy `host_rewrite_literal`).
    pub authority_rewrite: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectDecision<'a> {
    pub virtual_host: &'a str,
    pub rule: &'a str,
    pub rule_index: usize,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    redirect: &'a Redirect,
    request: RedirectRequest,
}

impl RedirectDecision<'_> {
    /// The `location` header, as Envoy computes it (`Utility::newUri`):
    /// each part replaced when the redirect sets it; a new path without `?`
    /// keeps the request's query string; the request's port is dropped when
    /// the redirect sets a port, or changes the scheme away from the one
    /// whose default port it is.
    pub fn location(&self, target: &RedirectTarget<'_>) -> String {
        location(self.redirect, self.request, target)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponseDecision<'a> {
    pub virtual_host: &'a str,
    pub rule: &'a str,
    pub rule_index: usize,
    /// 200–599.
    pub status: u16,
    pub body: Option<&'a str>,
    /// The rule's response header operations (`set`, then `add`).
    pub headers: &'a HeaderOps,
}

impl CompiledRouting {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_config(&decode::<RoutingConfig>(bytes)?)
    }

    pub fn from_config(config: &RoutingConfig) -> Result<Self, ConfigError> {
        Self::compile(config).map_err(|e| *e)
    }

    fn compile(config: &RoutingConfig) -> Result<Self, Failed> {
        let root = Path::root();
        let cluster_header = match &config.cluster_header {
            Some(name) => {
                let path = root.field("cluster_header");
                let name = header_name(name, &path)?;
                if name.starts_with(':') {
                    return Err(path.error("cluster_header must not be a pseudo-header"));
                }
                name
            }
            None => DEFAULT_CLUSTER_HEADER.to_string(),
        };
        let template =
            ClusterNameTemplate::parse(config.cluster_name_template.as_deref(), &root.field("cluster_name_template"))?;
        let mut clusters: Vec<String> = Vec::new();
        let mut cluster_indexes: HashMap<String, usize> = HashMap::new();
        let mut intern = |cluster: &str| -> usize {
            if let Some(&index) = cluster_indexes.get(cluster) {
                return index;
            }
            clusters.push(cluster.to_string());
            cluster_indexes.insert(cluster.to_string(), clusters.len() - 1);
            clusters.len() - 1
        };
        let hosts = VirtualHosts::compile(&config.virtual_hosts, &root.field("virtual_hosts"), |route, path| {
            compile_action(route, path, &template, &mut intern)
        })?;
        let mut owned_headers = vec![cluster_header.clone()];
        for header in ENVOY_ROUTING_HEADERS {
            owned_headers.push(header.to_string());
        }
        Ok(CompiledRouting { cluster_header, owned_headers, clusters, hosts })
    }

    /// Headers a client must not send, removed before `decision` is
    /// applied. On a managed host: the cluster header and
    /// `ENVOY_ROUTING_HEADERS`, so a client picks neither its cluster nor its
    /// timeout or retries. On any other host the cluster header alone: it is
    /// this filter's channel to a `cluster_header` route, and a client's own
    /// value would send the request to any cluster it names; `x-envoy-*`
    /// headers there stay under Envoy's own trust rules.
    pub fn client_headers_to_strip(&self, decision: &RoutingDecision<'_>) -> impl Iterator<Item = &str> {
        let owned = if matches!(decision, RoutingDecision::Unmanaged) { 1 } else { self.owned_headers.len() };
        self.owned_headers.iter().take(owned).map(String::as_str)
    }

    /// Every distinct cluster a rule can pick, for per-cluster stats;
    /// `RouteDecision::cluster_index` points into it.
    pub fn clusters(&self) -> &[String] {
        &self.clusters
    }

    /// The header operations of a decided route, by the indexes a
    /// `RouteDecision` carries: lets a filter keep two integers until the
    /// response instead of a borrow. Route level first, then destination.
    pub fn header_mutations(&self, rule_index: usize, destination_index: usize) -> Option<[&HeaderMutations; 2]> {
        match &self.hosts.rule(rule_index)?.action {
            Action::Forward(forward) => {
                let destination = forward.destinations.get(destination_index)?;
                Some([&forward.headers, &destination.headers])
            }
            Action::Redirect(_) | Action::Direct(..) => None,
        }
    }

    /// The header the filter writes the cluster name into (a route in Envoy
    /// reads it with `cluster_header`).
    pub fn cluster_header(&self) -> &str {
        &self.cluster_header
    }

    /// Every rule in config order; decisions carry an index into this.
    pub fn rule_names(&self) -> &[RuleId] {
        self.hosts.rule_ids()
    }

    /// How many rules the exact-header index serves (see `docs/policy.md`).
    pub fn indexed_rule_count(&self) -> usize {
        self.hosts.hosts().iter().map(|h| h.table.indexed_rule_count()).sum()
    }

    /// Decides for one request. `random` is a uniformly random `u64` drawn
    /// per request; it picks among weighted destinations unless the rule is
    /// sticky and the request carries the sticky header or cookie.
    pub fn decide<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>, random: u64) -> RoutingDecision<'_> {
        let (virtual_host, hit) = match self.hosts.lookup(req) {
            Lookup::Unmanaged => return RoutingDecision::Unmanaged,
            Lookup::NoRoute { virtual_host } => return RoutingDecision::NoRoute { virtual_host },
            Lookup::Matched { virtual_host, hit } => (virtual_host, hit),
        };
        let rule = hit.rule;
        let prefix_len = match hit.block.map(|b| &b.uri) {
            None | Some(UriMatcher::Any) => Some(1),
            Some(UriMatcher::Prefix { prefix, .. }) => Some(prefix.len()),
            Some(UriMatcher::Exact { .. }) | Some(UriMatcher::Regex(_)) => None,
        };
        let forward = match &rule.action {
            Action::Redirect(redirect) => {
                let port = if redirect.wants_request_port() { req.port() } else { None };
                return RoutingDecision::Redirect(RedirectDecision {
                    virtual_host,
                    rule: &rule.name,
                    rule_index: rule.global_index,
                    status: redirect.status(),
                    redirect,
                    request: RedirectRequest { port, prefix_len },
                });
            }
            Action::Direct(direct, headers) => {
                return RoutingDecision::DirectResponse(DirectResponseDecision {
                    virtual_host,
                    rule: &rule.name,
                    rule_index: rule.global_index,
                    status: direct.status,
                    body: direct.body.as_deref(),
                    headers: &headers.response,
                })
            }
            Action::Forward(forward) => forward,
        };
        let draw = match (&forward.sticky, forward.destinations.len() > 1) {
            (Some(sticky), true) => sticky_key(sticky, req).map_or(random, |key| sticky_hash(key.as_bytes())),
            _ => random,
        };
        let destination_index = if forward.destinations.len() > 1 { pick_weighted(&forward.weights, draw) } else { 0 };
        let Some(destination) = forward.destinations.get(destination_index) else {
            return RoutingDecision::NoRoute { virtual_host };
        };
        let uri_rewrite = forward.uri_rewrite.as_ref().map(|rewrite| UriRewrite::new(rewrite, prefix_len));
        RoutingDecision::Route(RouteDecision {
            virtual_host,
            rule: &rule.name,
            rule_index: rule.global_index,
            match_name: hit.block.and_then(|b| b.name.as_deref()),
            destination_index,
            cluster: &destination.cluster,
            cluster_index: destination.cluster_index,
            timeout_ms: forward.timeout_ms.as_deref(),
            retries: forward.retries.as_ref(),
            header_ops: [&forward.headers, &destination.headers],
            uri_rewrite,
            authority_rewrite: forward.authority_rewrite.as_deref(),
        })
    }
}

fn sticky_key<'r, S: HeaderSource + ?Sized>(sticky: &Sticky, req: &'r mut Request<'_, S>) -> Option<&'r str> {
    match sticky {
        Sticky::Header(name) => req.header(name),
        Sticky::Cookie(name) => cookie_value(req.header("cookie")?, name),
    }
}

/// A cookie's value from a `cookie` header (`a=1; b="2"`), quotes removed,
/// as Envoy's `parseCookieValue` reads it.
fn cookie_value<'c>(header: &'c str, name: &str) -> Option<&'c str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
    })
}

fn compile_action(
    route: &RouteConfig,
    path: &Path,
    template: &ClusterNameTemplate,
    intern: &mut impl FnMut(&str) -> usize,
) -> Result<Action, Failed> {
    let set = [route.route.is_some(), route.redirect.is_some(), route.direct_response.is_some()];
    match set.iter().filter(|s| **s).count() {
        0 => return Err(path.error("set exactly one of route, redirect, direct_response (none is set)")),
        1 => {}
        _ => {
            let names: Vec<&str> = ["route", "redirect", "direct_response"]
                .iter()
                .zip(set)
                .filter_map(|(name, set)| set.then_some(*name))
                .collect();
            return Err(path.error(format!(
                "set exactly one of route, redirect, direct_response ({} are set)",
                names.join(" and ")
            )));
        }
    }
    if let Some(destinations) = &route.route {
        return compile_forward(route, destinations, path, template, intern).map(|f| Action::Forward(Box::new(f)));
    }
    let local = if route.redirect.is_some() { "a redirect" } else { "a direct response" };
    for (field, set) in [
        ("rewrite", route.rewrite.is_some()),
        ("timeout", route.timeout.is_some()),
        ("retries", route.retries.is_some()),
        ("headers", route.headers.is_some() && route.redirect.is_some()),
        ("sticky", route.sticky.is_some()),
    ] {
        if set {
            return Err(path.field(field).error(format!("{field} has no effect on {local}: remove it")));
        }
    }
    if let Some(redirect) = &route.redirect {
        return Redirect::compile(redirect, &path.field("redirect")).map(Action::Redirect);
    }
    let direct = match &route.direct_response {
        Some(direct) => DirectResponse::compile(direct, &path.field("direct_response"))?,
        None => return Err(path.error("set exactly one of route, redirect, direct_response (none is set)")),
    };
    let headers = match &route.headers {
        Some(h) => HeaderMutations::compile(h, &path.field("headers"))?,
        None => HeaderMutations::default(),
    };
    Ok(Action::Direct(direct, headers))
}

fn compile_forward(
    route: &RouteConfig,
    destinations: &[RouteDestination],
    path: &Path,
    template: &ClusterNameTemplate,
    intern: &mut impl FnMut(&str) -> usize,
) -> Result<Forward, Failed> {
    let route_path = path.field("route");
    if destinations.is_empty() {
        return Err(route_path.error("at least one destination is required"));
    }
    let mut compiled = Vec::with_capacity(destinations.len());
    let mut weights = Vec::with_capacity(destinations.len());
    for (i, d) in destinations.iter().enumerate() {
        let d_path = route_path.index(i);
        let cluster = template.render(&d.destination, &d_path.field("destination"))?;
        if !is_header_value(&cluster) {
            return Err(d_path.field("destination").error("cluster name is not a valid header value"));
        }
        let headers = match &d.headers {
            Some(h) => HeaderMutations::compile(h, &d_path.field("headers"))?,
            None => HeaderMutations::default(),
        };
        compiled.push(CompiledDestination { cluster_index: intern(&cluster), cluster, headers });
        weights.push(match (d.weight, destinations.len()) {
            // Istio: a lone destination takes all traffic, whatever its weight.
            (_, 1) => 100,
            (Some(weight), _) => weight,
            // Istio: next to others, a destination without weight gets none.
            (None, _) => 0,
        });
    }
    // Each destination gets weight / total, as Envoy's weighted clusters
    // without `total_weight` (what Istio sends) share traffic.
    if weights.iter().all(|&w| w == 0) {
        return Err(route_path.error(
            "every destination has weight 0 (or none): give at least one a weight above 0 (Istio refuses a total of 0)",
        ));
    }
    let timeout_ms = match &route.timeout {
        Some(text) => Some(millis(&path.field("timeout"), text, true)?.to_string()),
        None => None,
    };
    let retries = match &route.retries {
        Some(r) => Some(RetryHeaders::compile(r, &path.field("retries"))?),
        None => None,
    };
    let headers = match &route.headers {
        Some(h) => HeaderMutations::compile(h, &path.field("headers"))?,
        None => HeaderMutations::default(),
    };
    let (uri_rewrite, authority_rewrite) = match &route.rewrite {
        None => (None, None),
        Some(rewrite) => {
            let rw_path = path.field("rewrite");
            let uri = match (&rewrite.uri, &rewrite.uri_regex) {
                (None, None) if rewrite.authority.is_none() => {
                    return Err(rw_path.error("set uri or uri_regex, authority, or both"))
                }
                (None, None) => None,
                (Some(_), Some(_)) => return Err(rw_path.error("set uri or uri_regex, not both")),
                (Some(uri), None) => {
                    if uri.is_empty() || !is_header_value(uri) {
                        return Err(rw_path.field("uri").error(format!("invalid uri rewrite {}", quote(uri))));
                    }
                    Some(PathRewrite::Prefix(uri.as_str().into()))
                }
                (None, Some(regex)) => {
                    Some(PathRewrite::Regex(Box::new(RegexRewrite::compile(regex, &rw_path.field("uri_regex"))?)))
                }
            };
            if let Some(authority) = &rewrite.authority {
                validate_authority(authority, &rw_path.field("authority"))?;
            }
            (uri, rewrite.authority.clone())
        }
    };
    let sticky = match &route.sticky {
        None => None,
        Some(StickyConfig::Header(name)) => {
            Some(Sticky::Header(header_name(name, &path.field("sticky").field("header"))?))
        }
        Some(StickyConfig::Cookie(name)) => {
            let sticky_path = path.field("sticky");
            let cookie_path = sticky_path.field("cookie");
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b" =;,\"".contains(&b)) {
                return Err(cookie_path.error(format!("invalid cookie name {}", quote(name))));
            }
            Some(Sticky::Cookie(name.clone()))
        }
    };
    Ok(Forward {
        destinations: compiled,
        weights,
        timeout_ms,
        retries,
        headers,
        uri_rewrite,
        authority_rewrite,
        sticky,
    })
}
