//! Helpers shared by the integration tests.
#![allow(dead_code)]

use switchyard_policy::routing::{CompiledRouting, RoutingDecision};
use switchyard_policy::{Request, StaticHeaders};

pub fn headers(pairs: &[(&str, &str)]) -> StaticHeaders {
    StaticHeaders::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// A routing config with one catch-all virtual host holding `routes` (a JSON array).
pub fn routing(routes: &str) -> CompiledRouting {
    routing_with_hosts(&format!(r#"[{{"name": "vh", "domains": ["*"], "routes": {routes}}}]"#))
}

pub fn routing_with_hosts(virtual_hosts: &str) -> CompiledRouting {
    let json = format!(r#"{{"version": 1, "virtual_hosts": {virtual_hosts}}}"#);
    match CompiledRouting::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("config rejected: {e}\n{json}"),
    }
}

/// Name of the rule the request hits ("" for none, "unmanaged" when no host).
/// Adds `:authority: reviews` unless `pairs` sets one.
pub fn rule_hit(config: &CompiledRouting, pairs: &[(&str, &str)], port: Option<u16>) -> String {
    let mut all = pairs.to_vec();
    if !pairs.iter().any(|(k, _)| *k == ":authority") {
        all.push((":authority", "reviews"));
    }
    let source = headers(&all);
    let mut req = Request::new(&source);
    if let Some(port) = port {
        req = req.with_port(port);
    }
    match config.decide(&mut req, 0) {
        RoutingDecision::Unmanaged => "unmanaged".to_string(),
        RoutingDecision::NoRoute { .. } => String::new(),
        RoutingDecision::Route(r) => r.rule.to_string(),
        RoutingDecision::Redirect(r) => r.rule.to_string(),
        RoutingDecision::DirectResponse(r) => r.rule.to_string(),
    }
}

/// Minimal route JSON forwarding to `reviews` subset `name` on 9080.
pub fn route(name: &str, matches: &str) -> String {
    format!(
        r#"{{"name": "{name}", "match": {matches}, "route": [{{"destination": {{"host": "reviews", "subset": "{name}", "port": 9080}}}}]}}"#
    )
}
