//! Virtual hosts per Istio port: several virtual hosts may list one domain
//! when their `port`s differ; the request's port picks among them.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod common;

use common::{route, routing_with_hosts, rule_hit};
use switchyard_policy::routing::CompiledRouting;

fn per_port() -> switchyard_policy::routing::CompiledRouting {
    routing_with_hosts(&format!(
        r#"[
        {{"name": "reviews:9080", "domains": ["reviews", "reviews:9080"], "port": 9080, "routes": [{}]}},
        {{"name": "reviews:9090", "domains": ["reviews", "reviews:9090"], "port": 9090, "routes": [{}]}},
        {{"name": "shop:8080", "domains": ["shop.example.com"], "port": 8080, "routes": [{}]}}
        ]"#,
        route("v1", "[]"),
        route("v2", "[]"),
        route("admin", r#"[{"uri": {"prefix": "/admin"}}]"#),
    ))
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn the_request_port_picks_among_virtual_hosts_sharing_a_domain() {
    let config = per_port();
    assert_eq!(rule_hit(&config, &[], Some(9080)), "v1");
    assert_eq!(rule_hit(&config, &[], Some(9090)), "v2");
    // An authority naming the port finds its virtual host by domain.
    assert_eq!(rule_hit(&config, &[(":authority", "reviews:9090")], Some(15001)), "v2");
    // A port the host has no virtual host for is not served by another port's.
    assert_eq!(rule_hit(&config, &[], Some(7000)), "unmanaged");
    assert_eq!(rule_hit(&config, &[(":authority", "reviews:7000")], None), "unmanaged");
    // A gateway host served on 8080 only: nothing on port 80.
    let shop = [(":authority", "shop.example.com"), (":path", "/admin/x")];
    assert_eq!(rule_hit(&config, &shop, Some(8080)), "admin");
    assert_eq!(rule_hit(&config, &shop, Some(80)), "unmanaged");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_virtual_host_without_port_serves_the_other_ports() {
    let config = routing_with_hosts(&format!(
        r#"[
        {{"name": "a:80", "domains": ["a"], "port": 80, "routes": [{}]}},
        {{"name": "a", "domains": ["a"], "routes": [{}]}}
        ]"#,
        route("eighty", "[]"),
        route("other", "[]"),
    ));
    let a = [(":authority", "a")];
    assert_eq!(rule_hit(&config, &a, Some(80)), "eighty");
    assert_eq!(rule_hit(&config, &a, Some(81)), "other");
    assert_eq!(rule_hit(&config, &a, None), "other");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn a_domain_is_shared_only_between_different_ports() {
    let config = |a: &str, b: &str| {
        let json = format!(
            r#"{{"version": 1, "virtual_hosts": [
            {{"name": "x", "domains": ["a"]{a}, "routes": [{}]}},
            {{"name": "y", "domains": ["A"]{b}, "routes": [{}]}}]}}"#,
            route("r", "[]"),
            route("r", "[]"),
        );
        CompiledRouting::from_json(json.as_bytes()).map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(config(r#", "port": 80"#, r#", "port": 81"#).is_ok());
    assert!(config(r#", "port": 80"#, "").is_ok());
    let err = config(r#", "port": 80"#, r#", "port": 80"#).unwrap_err();
    assert!(
        err.contains("virtual_hosts[1].domains[0]: domain \"a\" is already used by virtual_hosts[0] for port 80"),
        "{err}"
    );
    assert!(config("", "").unwrap_err().contains("already used by virtual_hosts[0]"));
}
