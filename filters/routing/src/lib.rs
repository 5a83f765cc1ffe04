//! Routing filter: Istio VirtualService `http` routes inside stock Envoy.
//!
//! Per request it finds the virtual host by `:authority`, takes the first
//! matching route (compiled `switchyard-policy` matchers) and applies it:
//! - the destination cluster goes into a request header that an Envoy route
//!   with `cluster_header` reads, and the route cache is cleared so the router
//!   sees it;
//! - timeout and retries become Envoy's `x-envoy-*` request headers;
//! - header operations, rewrite and redirect as in Istio.
//!
//! On hosts it manages the filter owns those headers: whatever a client sent
//! in the cluster header or the routing `x-envoy-*` headers is removed first,
//! so a client can pick neither a cluster nor a timeout. Requests for hosts it
//! does not manage pass on untouched but for the cluster header, which is
//! removed everywhere: a `cluster_header` route would otherwise obey it.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use switchyard_host::{load_config, log, request_header, Counter, HostRequestHeaders, Rng};
use switchyard_policy::routing::{CompiledRouting, HeaderOps, RedirectTarget, RouteDecision, RoutingDecision};
use switchyard_policy::Request;

proxy_wasm::main! {{
    switchyard_host::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(RoutingRoot { context_id, state: None })
    });
}}

/// Filter state a later filter in the chain can read: `<virtual host>/<route>`.
/// Envoy stores it under `wasm.` + this name, so it is
/// `get_property(["wasm.switchyard.route"])` to another wasm filter and
/// `%FILTER_STATE(wasm.switchyard.route:PLAIN)%` to Envoy's formatters.
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

struct State {
    config: CompiledRouting,
    stats: Stats,
    rng: Rng,
    /// `<virtual host>/<route>` per rule, for the filter state.
    route_ids: Vec<String>,
}

struct RoutingRoot {
    context_id: u32,
    state: Option<Rc<State>>,
}

impl Context for RoutingRoot {}

impl RootContext for RoutingRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(config) = load_config("routing", CompiledRouting::from_json) else {
            return false;
        };
        let stats = Stats::define(&config);
        let route_ids = config.rule_names().iter().map(|id| format!("{}/{}", id.virtual_host, id.rule)).collect();
        self.state = Some(Rc::new(State { config, stats, rng: Rng::from_host_time(self.context_id), route_ids }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RoutingHttp { state: self.state.clone()?, response_ops: None }))
    }
}

struct RoutingHttp {
    state: Rc<State>,
    /// The chosen (rule, destination), when it has response header operations.
    response_ops: Option<(usize, usize)>,
}

impl RoutingHttp {
    fn forward(&mut self, route: &RouteDecision<'_>) {
        let config = &self.state.config;
        self.set_http_request_header(config.cluster_header(), Some(route.cluster));
        if let Some(ms) = route.timeout_ms {
            self.set_http_request_header("x-envoy-upstream-rq-timeout-ms", Some(ms));
        }
        if let Some(retries) = route.retries {
            self.set_http_request_header("x-envoy-max-retries", Some(&retries.max_retries));
            let optional = [
                ("x-envoy-retry-on", &retries.retry_on),
                ("x-envoy-retry-grpc-on", &retries.grpc_retry_on),
                ("x-envoy-retriable-status-codes", &retries.retriable_status_codes),
                ("x-envoy-upstream-rq-per-try-timeout-ms", &retries.per_try_timeout_ms),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    self.set_http_request_header(name, Some(value));
                }
            }
        }
        if let Some(rewrite) = route.uri_rewrite {
            let path = request_header(":path").unwrap_or_default();
            self.set_http_request_header(":path", Some(&rewrite.apply(&path)));
        }
        if let Some(authority) = route.authority_rewrite {
            self.set_http_request_header(":authority", Some(authority));
        }
        for ops in route.header_ops {
            apply(
                &ops.request,
                |name, value| self.set_http_request_header(name, value),
                |name, value| self.add_http_request_header(name, value),
            );
        }
        if route.header_ops.iter().any(|ops| !ops.response.is_empty()) {
            self.response_ops = Some((route.rule_index, route.destination_index));
        }
        let route_id = self.state.route_ids.get(route.rule_index).map(String::as_bytes);
        if let Err(status) = hostcalls::set_property(vec![ROUTE_PROPERTY], route_id) {
            log(LogLevel::Warn, &format!("switchyard.routing: cannot set filter state {ROUTE_PROPERTY}: {status:?}"));
        }
        clear_route_cache();
    }
}

impl Context for RoutingHttp {}

impl HttpContext for RoutingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let state = Rc::clone(&self.state);
        let config = &state.config;
        state.stats.requests.inc();
        let source = HostRequestHeaders;
        let mut request = Request::new(&source);
        let decision = config.decide(&mut request, state.rng.next_u64());
        for name in config.client_headers_to_strip(&decision) {
            self.set_http_request_header(name, None);
        }
        match decision {
            RoutingDecision::Unmanaged => {
                state.stats.unmanaged.inc();
                Action::Continue
            }
            // Istio answers 404 for a host whose VirtualService has no
            // matching route; Envoy's `cluster_header` route would answer its
            // `cluster_not_found_response_code` (503 by default) instead.
            RoutingDecision::NoRoute { .. } => {
                state.stats.no_route.inc();
                self.send_http_response(404, vec![], None);
                Action::Pause
            }
            RoutingDecision::Redirect(redirect) => {
                count(&state.stats.route_matched, redirect.rule_index);
                state.stats.redirects.inc();
                let scheme = request.header(":scheme").unwrap_or("http").to_owned();
                let forwarded_proto = request.header("x-forwarded-proto").unwrap_or(&scheme).to_owned();
                let authority = request.header(":authority").unwrap_or_default().to_owned();
                let path = request.header(":path").unwrap_or_default();
                let target =
                    RedirectTarget { scheme: &scheme, forwarded_proto: &forwarded_proto, authority: &authority, path };
                let location = redirect.location(&target);
                self.send_http_response(u32::from(redirect.status), vec![("location", &location)], None);
                Action::Pause
            }
            RoutingDecision::DirectResponse(direct) => {
                count(&state.stats.route_matched, direct.rule_index);
                state.stats.direct_responses.inc();
                let mut headers: Vec<(&str, &str)> = Vec::new();
                for (name, value) in direct.headers.set.iter().chain(&direct.headers.add) {
                    headers.push((name, value));
                }
                self.send_http_response(u32::from(direct.status), headers, direct.body.map(str::as_bytes));
                Action::Pause
            }
            RoutingDecision::Route(route) => {
                count(&state.stats.route_matched, route.rule_index);
                count(&state.stats.cluster_picked, route.cluster_index);
                self.forward(&route);
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((rule, destination)) = self.response_ops else { return Action::Continue };
        let Some(mutations) = self.state.config.header_mutations(rule, destination) else { return Action::Continue };
        for ops in mutations {
            apply(
                &ops.response,
                |name, value| self.set_http_response_header(name, value),
                |name, value| self.add_http_response_header(name, value),
            );
        }
        Action::Continue
    }
}

/// Istio's order: remove, then set (replacing), then add (appending).
fn apply(ops: &HeaderOps, set: impl Fn(&str, Option<&str>), add: impl Fn(&str, &str)) {
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

/// Envoy clears the route cache on header changes only for ABI <= 0.2.1; the
/// explicit call keeps routing correct on hosts that stop doing so.
fn clear_route_cache() {
    if let Err(status) = hostcalls::call_foreign_function("clear_route_cache", None) {
        log(LogLevel::Debug, &format!("switchyard.routing: clear_route_cache unavailable: {status:?}"));
    }
}
