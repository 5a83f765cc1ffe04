//! Routing stage: Istio VirtualService `http` routes.
//!
//! It finds the virtual host by `:authority`, takes the first matching route
//! and applies it:
//! - the destination cluster goes into a request header that an Envoy route
//!   with `cluster_header` reads (writing it clears Envoy's route cache, so
//!   the router sees it);
//! - timeout and retries become Envoy's `x-envoy-*` request headers;
//! - header operations, rewrite and redirect as in Istio.
//!
//! On hosts it manages the stage owns those headers: whatever a client sent
//! in the cluster header or the routing `x-envoy-*` headers is removed first,
//! so a client can pick neither a cluster nor a timeout. Requests for hosts it
//! does not manage pass on untouched but for the cluster header, which is
//! removed everywhere: a `cluster_header` route would otherwise obey it.

use proxy_wasm::types::LogLevel;
use switchyard_host::{calls, log, Counter, RequestHeaders};
use switchyard_policy::routing::{CompiledRouting, HeaderOps, RedirectTarget, RouteDecision, RoutingDecision};
use switchyard_policy::Request;

/// Filter state a later filter can read: `<virtual host>/<route>`. Envoy
/// stores it under `wasm.` + this name, so it is
/// `get_property(["wasm.switchyard.route"])` to another wasm filter and
/// `%FILTER_STATE(wasm.switchyard.route:PLAIN)%` to Envoy's formatters; the
/// Istio sidecar manifests' route matches on it.
const ROUTE_PROPERTY: &str = "switchyard.route";

struct Stats {
    requests: Counter,
    unmanaged: Counter,
    no_route: Counter,
    redirects: Counter,
    direct_responses: Counter,
    /// One per rule, in `CompiledRouting::rule_names()` order.
    route_matched: Vec<Counter>,
    /// One per cluster, in `CompiledRouting::clusters()` order.
    cluster_picked: Vec<Counter>,
}

impl Stats {
    fn define(config: &CompiledRouting) -> Stats {
        Stats {
            requests: Counter::define("switchyard_routing_requests_total"),
            unmanaged: Counter::define("switchyard_routing_unmanaged_total"),
            no_route: Counter::define("switchyard_routing_no_route_total"),
            redirects: Counter::define("switchyard_routing_redirects_total"),
            direct_responses: Counter::define("switchyard_routing_direct_responses_total"),
            route_matched: config
                .rule_names()
                .iter()
                .map(|id| {
                    Counter::define(&format!("switchyard_routing_route_matched_total.{}.{}", id.virtual_host, id.rule))
                })
                .collect(),
            cluster_picked: config
                .clusters()
                .iter()
                .map(|cluster| Counter::define(&format!("switchyard_routing_cluster_picked_total.{cluster}")))
                .collect(),
        }
    }
}

pub(crate) struct RoutingStage {
    config: CompiledRouting,
    stats: Stats,
    /// `<virtual host>/<route>` per rule, for the filter state.
    route_ids: Vec<String>,
}

/// What the stage did to the request.
pub(crate) enum Routed {
    /// Not a host it manages: untouched (but for the stripped headers).
    Passed,
    /// Sent on to its destination; `response_ops` names the (rule,
    /// destination) whose response header operations are still to apply.
    Forwarded { response_ops: Option<(usize, usize)> },
    /// Answered (404, redirect, direct response): nothing after this runs.
    Answered,
}

impl RoutingStage {
    pub fn new(config: CompiledRouting) -> Self {
        let stats = Stats::define(&config);
        let route_ids = config.rule_names().iter().map(|id| format!("{}/{}", id.virtual_host, id.rule)).collect();
        RoutingStage { config, stats, route_ids }
    }

    pub fn on_request(
        &self,
        headers: &RequestHeaders,
        request: &mut Request<'_, RequestHeaders>,
        random: u64,
    ) -> Routed {
        let config = &self.config;
        self.stats.requests.inc();
        let decision = config.decide(request, random);
        for name in config.client_headers_to_strip(&decision) {
            // The header map is in hand: removing a header that is not there
            // would be a host call for nothing.
            if headers.contains(name) {
                calls::set_request_header(name, None);
            }
        }
        match decision {
            RoutingDecision::Unmanaged => {
                self.stats.unmanaged.inc();
                Routed::Passed
            }
            // Istio answers 404 for a host whose VirtualService has no
            // matching route; Envoy's `cluster_header` route would answer its
            // `cluster_not_found_response_code` (503 by default) instead.
            RoutingDecision::NoRoute { .. } => {
                self.stats.no_route.inc();
                let _ = calls::send_response(404, vec![], None);
                Routed::Answered
            }
            RoutingDecision::Redirect(redirect) => {
                count(&self.stats.route_matched, redirect.rule_index);
                self.stats.redirects.inc();
                let scheme = request.header(":scheme").unwrap_or("http").to_owned();
                let forwarded_proto = request.header("x-forwarded-proto").unwrap_or(&scheme).to_owned();
                let authority = request.header(":authority").unwrap_or_default().to_owned();
                let path = request.header(":path").unwrap_or_default();
                let target =
                    RedirectTarget { scheme: &scheme, forwarded_proto: &forwarded_proto, authority: &authority, path };
                let location = redirect.location(&target);
                let _ = calls::send_response(u32::from(redirect.status), vec![("location", &location)], None);
                Routed::Answered
            }
            RoutingDecision::DirectResponse(direct) => {
                count(&self.stats.route_matched, direct.rule_index);
                self.stats.direct_responses.inc();
                let mut headers: Vec<(&str, &str)> = Vec::new();
                for (name, value) in direct.headers.set.iter().chain(&direct.headers.add) {
                    headers.push((name, value));
                }
                let _ = calls::send_response(u32::from(direct.status), headers, direct.body.map(str::as_bytes));
                Routed::Answered
            }
            RoutingDecision::Route(route) => {
                count(&self.stats.route_matched, route.rule_index);
                count(&self.stats.cluster_picked, route.cluster_index);
                self.forward(&route, request);
                let response_ops = route
                    .header_ops
                    .iter()
                    .any(|ops| !ops.response.is_empty())
                    .then_some((route.rule_index, route.destination_index));
                Routed::Forwarded { response_ops }
            }
        }
    }

    /// The request header naming the cluster it picked.
    pub fn cluster_header(&self) -> &str {
        self.config.cluster_header()
    }

    fn forward(&self, route: &RouteDecision<'_>, request: &mut Request<'_, RequestHeaders>) {
        calls::set_request_header(self.config.cluster_header(), Some(route.cluster));
        if let Some(ms) = route.timeout_ms {
            calls::set_request_header("x-envoy-upstream-rq-timeout-ms", Some(ms));
        }
        if let Some(retries) = route.retries {
            calls::set_request_header("x-envoy-max-retries", Some(&retries.max_retries));
            let optional = [
                ("x-envoy-retry-on", &retries.retry_on),
                ("x-envoy-retry-grpc-on", &retries.grpc_retry_on),
                ("x-envoy-retriable-status-codes", &retries.retriable_status_codes),
                ("x-envoy-upstream-rq-per-try-timeout-ms", &retries.per_try_timeout_ms),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    calls::set_request_header(name, Some(value));
                }
            }
        }
        if let Some(rewrite) = route.uri_rewrite {
            let path = request.header(":path").unwrap_or_default();
            calls::set_request_header(":path", Some(&rewrite.apply(path)));
        }
        if let Some(authority) = route.authority_rewrite {
            calls::set_request_header(":authority", Some(authority));
        }
        for ops in route.header_ops {
            apply(&ops.request, calls::set_request_header, calls::add_request_header);
        }
        let route_id = self.route_ids.get(route.rule_index).map(String::as_bytes);
        if let Err(status) = calls::set_property(&[ROUTE_PROPERTY], route_id) {
            log(LogLevel::Warn, &format!("switchyard.routing: cannot set filter state {ROUTE_PROPERTY}: {status:?}"));
        }
        // No `clear_route_cache` call: Envoy clears the route cache itself
        // on every request header a module of ABI 0.2.1 (the SDK's) writes,
        // so the router sees the cluster header; an explicit call was one
        // host call per request for nothing. An Envoy that stops doing so
        // fails the routing tests.
    }

    /// The response header operations of the route a request took.
    pub fn on_response(&self, (rule, destination): (usize, usize)) {
        let Some(mutations) = self.config.header_mutations(rule, destination) else { return };
        for ops in mutations {
            apply(&ops.response, calls::set_response_header, calls::add_response_header);
        }
    }
}

/// Istio's order: remove, then set (replacing), then add (appending).
fn apply(ops: &HeaderOps, set: fn(&str, Option<&str>), add: fn(&str, &str)) {
    for name in &ops.remove {
        set(name, None);
    }
    for (name, value) in &ops.set {
        set(name, Some(value));
    }
    for (name, value) in &ops.add {
        add(name, value);
    }
}

fn count(counters: &[Counter], index: usize) {
    if let Some(counter) = counters.get(index) {
        counter.inc();
    }
}
