//! Virtual hosts: picking the rule list for a request by `:authority`, the
//! way Envoy picks a virtual host by domain.
//!
//! Lookup order (Envoy's `RouteMatcher::findVirtualHost`): exact domain,
//! then suffix wildcards (`*.example.com`, `*-bar.example.com`) longest
//! first, then prefix wildcards (`example.*`) longest first, then `*`.
//! Matching is case-insensitive. Each stage tries the authority as sent,
//! then (when it carries a port) the bare host: Envoy only matches a
//! portless domain against `host:port` when the listener strips the port
//! (`strip_any_host_port`, which Istio gateways set), and Istio lists both
//! `host` and `host:port` domains for sidecars, so the fallback gives the
//! same answer in both setups. Virtual hosts may share a domain when their
//! `port`s differ (Istio's per-port route tables): the request's port —
//! the authority's when it matched as `host:port`, else
//! `HeaderSource::port` — picks among them, else the one without `port`;
//! the port is asked only for such domains. A wildcard never matches an empty part:
//! `*.example.com` does not match `.example.com`, and it does not match the
//! apex `example.com`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::http_match::{CompiledMatch, HttpMatchRequest};
use crate::json::{Decode, Decoder, Fields};
use crate::request::{HeaderSource, Request};
use crate::route_table::{Hit, RouteTable, Rule};
use crate::string_match::{program_size_estimate, MAX_TOTAL_REGEX_PROGRAM_SIZE};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualHostConfig<R> {
    pub name: String,
    pub domains: Vec<String>,
    /// The Istio port this virtual host serves (istiod's route table of
    /// that port): among virtual hosts sharing a domain, the one whose port
    /// is the request's (`HeaderSource::port`), else the one without port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub routes: Vec<R>,
}

impl<R: Decode> Decode for VirtualHostConfig<R> {
    fn blank() -> Self {
        VirtualHostConfig { name: String::new(), domains: Vec::new(), port: None, routes: Vec::new() }
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        d.fields(at, &["name", "domains", "routes", "port"], &[true, true, true, false], self)
    }
}

impl<R: Decode> Fields for VirtualHostConfig<R> {
    fn decode_field(&mut self, index: usize, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        match index {
            0 => self.name.decode_into(d, at),
            1 => self.domains.decode_into(d, at),
            2 => self.routes.decode_into(d, at),
            _ => self.port.decode_into(d, at),
        }
    }
}

/// What every filter's route shares: a name and Istio match blocks.
pub(crate) trait RouteSpec {
    fn name(&self) -> &str;
    fn match_blocks(&self) -> &[HttpMatchRequest];
    /// A regex the route compiles besides its matchers (a path rewrite),
    /// counted in the config's regex budget.
    fn rewrite_regex(&self) -> Option<&str> {
        None
    }
}

#[derive(Debug)]
pub(crate) struct VirtualHost<T> {
    pub(crate) name: String,
    pub(crate) table: RouteTable<T>,
}

/// Identifies a rule for stats: its virtual host and name. Displays as
/// `virtual_host/rule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleId {
    pub virtual_host: String,
    pub rule: String,
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.virtual_host, self.rule)
    }
}

#[derive(Debug)]
pub(crate) struct VirtualHosts<T> {
    hosts: Vec<VirtualHost<T>>,
    /// Domain → index into `groups`.
    exact: HashMap<String, usize>,
    /// (suffix without the `*`, group index), longest first.
    suffixes: Vec<(String, usize)>,
    /// (prefix without the `*`, group index), longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    /// The virtual hosts of one domain: one per port, and one without.
    groups: Vec<DomainGroup>,
    rule_ids: Vec<RuleId>,
    /// Global rule index → (host index, index within the host).
    rule_locations: Vec<(usize, usize)>,
}

/// The virtual hosts that list one domain (host indexes).
#[derive(Debug, Default)]
struct DomainGroup {
    portless: Option<usize>,
    by_port: Vec<(u16, usize)>,
}

impl DomainGroup {
    /// The host for the request's port: asked only when the domain has
    /// per-port virtual hosts, so a portless config never pays for it.
    /// `authority_port`: the port of an authority that matched as
    /// `host:port`, which then is the port asked for.
    fn pick<S: HeaderSource + ?Sized>(&self, authority_port: Option<u16>, req: &mut Request<'_, S>) -> Option<usize> {
        if self.by_port.is_empty() {
            return self.portless;
        }
        let port = authority_port.or_else(|| req.port());
        port.and_then(|p| self.by_port.iter().find(|(q, _)| *q == p).map(|(_, i)| *i)).or(self.portless)
    }
}

/// The outcome of looking a request up.
pub(crate) enum Lookup<'a, T> {
    /// No virtual host serves the authority: leave the request alone.
    Unmanaged,
    NoRoute {
        virtual_host: &'a str,
    },
    Matched {
        virtual_host: &'a str,
        hit: Hit<'a, T>,
    },
}

impl<T> VirtualHosts<T> {
    pub(crate) fn compile<R: RouteSpec>(
        configs: &[VirtualHostConfig<R>],
        path: &Path,
        mut compile_action: impl FnMut(&R, &Path) -> Result<T, Failed>,
    ) -> Result<Self, Failed> {
        // No virtual hosts is valid: the filter manages nothing and every
        // request passes untouched. xds-ext sends this to a workload that no
        // policy selects, so its Envoy's ECDS subscription still completes.
        check_regex_budget(configs, path)?;
        let mut out = VirtualHosts {
            hosts: Vec::with_capacity(configs.len()),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            groups: Vec::new(),
            rule_ids: Vec::new(),
            rule_locations: Vec::new(),
        };
        let mut domain_owner: HashMap<String, usize> = HashMap::new();
        let mut host_names: HashMap<String, usize> = HashMap::new();
        for (host_index, config) in configs.iter().enumerate() {
            let host_path = path.index(host_index);
            if config.name.is_empty() {
                return Err(host_path.field("name").error("name must not be empty"));
            }
            if let Some(first) = host_names.insert(config.name.clone(), host_index) {
                return Err(host_path.field("name").error(format!(
                    "virtual host name {} is already used by virtual_hosts[{first}]",
                    quote(&config.name)
                )));
            }
            if config.domains.is_empty() {
                return Err(host_path.field("domains").error("at least one domain is required"));
            }
            for (domain_index, raw) in config.domains.iter().enumerate() {
                let domains_path = host_path.field("domains");
                let domain_path = domains_path.index(domain_index);
                let domain = validate_domain(raw, &domain_path)?;
                let group_index = match domain_owner.get(&domain) {
                    Some(&g) => g,
                    None => {
                        let g = out.groups.len();
                        out.groups.push(DomainGroup::default());
                        domain_owner.insert(domain.clone(), g);
                        if domain == "*" {
                            out.any = Some(g);
                        } else if let Some(suffix) = domain.strip_prefix('*') {
                            out.suffixes.push((suffix.to_string(), g));
                        } else if let Some(prefix) = domain.strip_suffix('*') {
                            out.prefixes.push((prefix.to_string(), g));
                        } else {
                            out.exact.insert(domain.clone(), g);
                        }
                        g
                    }
                };
                let group = &mut out.groups[group_index];
                let taken = match config.port {
                    None => group.portless.replace(host_index),
                    Some(port) => match group.by_port.iter().find(|(p, _)| *p == port) {
                        Some(&(_, owner)) => Some(owner),
                        None => {
                            group.by_port.push((port, host_index));
                            None
                        }
                    },
                };
                if let Some(owner) = taken {
                    let port = config.port.map_or(String::new(), |p| format!(" for port {p}"));
                    return Err(domain_path.error(format!(
                        "domain {} is already used by virtual_hosts[{owner}]{port} (domains are case-insensitive)",
                        quote(&domain)
                    )));
                }
            }
            let routes_path = host_path.field("routes");
            if config.routes.is_empty() {
                return Err(routes_path.error("at least one route is required"));
            }
            let mut rules = Vec::with_capacity(config.routes.len());
            let mut route_names: HashMap<String, usize> = HashMap::new();
            for (route_index, route) in config.routes.iter().enumerate() {
                let route_path = routes_path.index(route_index);
                let name = route.name();
                if name.is_empty() {
                    return Err(route_path.field("name").error("name must not be empty"));
                }
                if let Some(first) = route_names.insert(name.to_string(), route_index) {
                    return Err(route_path.field("name").error(format!(
                        "route name {} is already used by routes[{first}] of this virtual host",
                        quote(name)
                    )));
                }
                let mut matches = Vec::with_capacity(route.match_blocks().len());
                for (block_index, block) in route.match_blocks().iter().enumerate() {
                    matches.push(CompiledMatch::compile(block, &route_path.field("match").index(block_index))?);
                }
                let action = compile_action(route, &route_path)?;
                rules.push(Rule { name: name.to_string(), global_index: out.rule_ids.len(), matches, action });
                out.rule_locations.push((host_index, route_index));
                out.rule_ids.push(RuleId { virtual_host: config.name.clone(), rule: name.to_string() });
            }
            out.hosts.push(VirtualHost { name: config.name.clone(), table: RouteTable::new(rules) });
        }
        longest_first(&mut out.suffixes);
        longest_first(&mut out.prefixes);
        Ok(out)
    }

    pub(crate) fn rule_ids(&self) -> &[RuleId] {
        &self.rule_ids
    }

    /// A rule by its global index (`RuleId` order).
    pub(crate) fn rule(&self, global_index: usize) -> Option<&Rule<T>> {
        let (host, local) = *self.rule_locations.get(global_index)?;
        self.hosts.get(host)?.table.rule(local)
    }

    pub(crate) fn hosts(&self) -> &[VirtualHost<T>] {
        &self.hosts
    }

    /// The domain group serving `authority`, if any, and the authority's
    /// port when a domain matched it with its port.
    fn find_group(&self, authority: &str) -> Option<(usize, Option<u16>)> {
        let lowered: Cow<'_, str> = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(authority.to_ascii_lowercase())
        } else {
            Cow::Borrowed(authority)
        };
        let full: &str = &lowered;
        let bare = strip_port(full);
        let candidates = [Some(full), bare];
        if let Some(&group) = self.exact.get(full) {
            let port = bare.and_then(|b| full.get(b.len() + 1..)).and_then(|p| p.parse().ok());
            return Some((group, port));
        }
        let group = bare
            .and_then(|h| self.exact.get(h).copied())
            .or_else(|| {
                candidates.iter().flatten().find_map(|h| {
                    self.suffixes.iter().find(|(s, _)| h.len() > s.len() && h.ends_with(s.as_str())).map(|(_, i)| *i)
                })
            })
            .or_else(|| {
                candidates.iter().flatten().find_map(|h| {
                    self.prefixes.iter().find(|(p, _)| h.len() > p.len() && h.starts_with(p.as_str())).map(|(_, i)| *i)
                })
            })
            .or(self.any)?;
        Some((group, None))
    }

    pub(crate) fn lookup<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>) -> Lookup<'_, T> {
        let group = match req.header(":authority") {
            Some(authority) => self.find_group(authority),
            None => None,
        };
        let host = group
            .and_then(|(g, port)| self.groups.get(g).map(|g| (g, port)))
            .and_then(|(g, port)| g.pick(port, req))
            .and_then(|i| self.hosts.get(i));
        let Some(host) = host else {
            return Lookup::Unmanaged;
        };
        match host.table.find(req) {
            Some(hit) => Lookup::Matched { virtual_host: &host.name, hit },
            None => Lookup::NoRoute { virtual_host: &host.name },
        }
    }
}

/// Refuses a config whose regexes together would take too long to compile,
/// before compiling any of them.
fn check_regex_budget<R: RouteSpec>(configs: &[VirtualHostConfig<R>], path: &Path) -> Result<(), Failed> {
    let mut total = 0usize;
    for (h, host) in configs.iter().enumerate() {
        for (r, route) in host.routes.iter().enumerate() {
            total = total.saturating_add(route.rewrite_regex().map_or(0, program_size_estimate));
            for (b, block) in route.match_blocks().iter().enumerate() {
                for regex in block.regexes() {
                    total = total.saturating_add(program_size_estimate(regex));
                    if total > MAX_TOTAL_REGEX_PROGRAM_SIZE {
                        return Err(path.index(h).field("routes").index(r).field("match").index(b).error(format!(
                            "the config's regexes are too complex together (over {MAX_TOTAL_REGEX_PROGRAM_SIZE} estimated instructions)"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sorts (pattern, index) pairs longest pattern first, then by index.
/// Lists are built in config order with non-decreasing indexes, so this is
/// the order a stable sort by length gives, up to entries with equal length
/// and index, which are interchangeable. A heapsort: O(n log n) on any
/// input, and a few hundred bytes of wasm where `slice::sort` is ~4 KB.
pub(crate) fn longest_first(list: &mut [(String, usize)]) {
    // `a` goes after `b` (is "greater").
    let after = |a: &(String, usize), b: &(String, usize)| (b.0.len(), a.1) > (a.0.len(), b.1);
    let sift_down = |list: &mut [(String, usize)], mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && after(&list[child + 1], &list[child]) {
            child += 1;
        }
        if !after(&list[child], &list[root]) {
            break;
        }
        list.swap(root, child);
        root = child;
    };
    for root in (0..list.len() / 2).rev() {
        sift_down(list, root, list.len());
    }
    for end in (1..list.len()).rev() {
        list.swap(0, end);
        sift_down(list, 0, end);
    }
}

/// The host part of `host:port` / `[v6]:port`, when a numeric port is present
/// (Envoy's `HeaderUtility::getPortStart`).
pub(crate) fn strip_port(authority: &str) -> Option<&str> {
    let colon = authority.rfind(':')?;
    if let Some(bracket) = authority.rfind(']') {
        if bracket > colon {
            return None;
        }
    }
    let port = authority.get(colon + 1..)?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    authority.get(..colon)
}

/// Envoy's domain rules: `*` alone, or one `*` at the start or the end;
/// lowercased; no whitespace or control characters.
fn validate_domain(raw: &str, path: &Path) -> Result<String, Failed> {
    if raw.is_empty() {
        return Err(path.error("domain must not be empty"));
    }
    if raw.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/') {
        return Err(path.error(format!("invalid domain {}", quote(raw))));
    }
    let stars = raw.matches('*').count();
    let ok = raw == "*" || stars == 0 || (stars == 1 && (raw.starts_with('*') || raw.ends_with('*')));
    if !ok {
        return Err(path.error(format!(
            "invalid domain {}: a wildcard is allowed only as the first or last character",
            quote(raw)
        )));
    }
    Ok(raw.to_ascii_lowercase())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Same lookup order as a stable sort by length, for lists built the
        // way `compile` builds them (indexes non-decreasing).
        #[test]
        fn longest_first_matches_a_stable_sort(mut list in prop::collection::vec(("[a-c]{0,4}", 0usize..3), 0..40)) {
            list.sort_by_key(|(_, index)| *index);
            let mut stable = list.clone();
            stable.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.len()));
            longest_first(&mut list);
            let key = |l: &[(String, usize)]| l.iter().map(|(p, i)| (p.len(), *i)).collect::<Vec<_>>();
            prop_assert_eq!(key(&list), key(&stable));
            let mut sorted_input = list.clone();
            sorted_input.sort();
            let mut sorted_stable = stable.clone();
            sorted_stable.sort();
            prop_assert_eq!(sorted_input, sorted_stable);
        }
    }
}
