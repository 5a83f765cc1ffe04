//! The arms: one Envoy bootstrap each, all with the same listener, the same
//! three upstream clusters (all pointing at the one upstream process) and the
//! same request shape. Only the filters and the route differ.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The `:authority` every request carries (the managed virtual host).
pub const HOST: &str = "reviews";
/// The request path.
pub const PATH: &str = "/bench";
/// The delay of the fault-delay-accuracy arms.
pub const DELAY_MS: u64 = 100;

const V1: &str = "outbound|9080|v1|reviews";
const V2: &str = "outbound|9080|v2|reviews";
const V3: &str = "outbound|9080|v3|reviews";
const CLUSTER_HEADER: &str = "x-switchyard-cluster";

/// One arm: a name, its bootstrap and the headers its requests carry.
#[derive(Debug, Clone)]
pub struct Arm {
    pub name: String,
    pub bootstrap: Value,
    pub headers: Vec<(String, String)>,
}

/// Where the modules are.
#[derive(Debug, Clone)]
pub struct Modules {
    pub dir: PathBuf,
}

impl Modules {
    fn path(&self, filter: &str) -> String {
        self.dir.join(format!("{filter}.wasm")).display().to_string()
    }
    /// A Switchyard filter entry for `http_filters`.
    fn filter(&self, filter: &str, config: &Value) -> Value {
        json!({
            "name": format!("switchyard.{filter}"),
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": format!("switchyard.{filter}"),
                    "root_id": filter,
                    "vm_config": {
                        "vm_id": format!("switchyard-{filter}"),
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": {"local": {"filename": self.path(filter)}}
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": config.to_string()
                    }
                }
            }
        })
    }
}

fn cluster(name: &str, upstream_port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{"max_connections": 100000, "max_pending_requests": 100000, "max_requests": 100000}]},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}}}}]}]}
    })
}

fn bootstrap(routes: Value, mut filters: Vec<Value>, upstream_port: u16) -> Value {
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "codec_type": "AUTO",
                        "route_config": {"name": "bench", "virtual_hosts": [
                            {"name": HOST, "domains": [HOST], "routes": routes}]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": [cluster(V1, upstream_port), cluster(V2, upstream_port), cluster(V3, upstream_port)]
        }
    })
}

/// The upstream every arm talks to: an Envoy answering 200 `ok` from a
/// `direct_response` route, for any authority (mirrors send `reviews-shadow`).
pub fn upstream_bootstrap() -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "upstream",
                    "codec_type": "AUTO",
                    "route_config": {"name": "upstream", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                }
            }]}]
        }]}
    })
}

fn hundred() -> Value {
    json!({"numerator": 100, "denominator": "HUNDRED"})
}

fn to(cluster: &str) -> Value {
    json!({"match": {"prefix": "/"}, "route": {"cluster": cluster}})
}

fn by_cluster_header() -> Value {
    json!([{"match": {"prefix": "/"}, "route": {"cluster_header": CLUSTER_HEADER}}])
}

fn dest(subset: &str) -> Value {
    json!({"host": HOST, "subset": subset, "port": 9080})
}

fn header_match(value: &str) -> Value {
    json!([{"name": "end-user", "string_match": {"exact": value}}])
}

// --- policies (Switchyard JSON) and their native equivalents ---------------

/// Routing: `end-user: jason` → v2, everything else split 50/50 over v1 and v3.
fn routing_policy() -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": dest("v2")}]},
        {"name": "split", "route": [{"destination": dest("v1"), "weight": 50}, {"destination": dest("v3"), "weight": 50}]}
    ]}]})
}

fn routing_native_routes(mirror: bool) -> Value {
    let mut jason = json!({"match": {"prefix": "/", "headers": header_match("jason")}, "route": {"cluster": V2}});
    let mut split = json!({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": V1, "weight": 50}, {"name": V3, "weight": 50}]}}});
    if mirror {
        jason["route"]["request_mirror_policies"] = mirror_policies();
        split["route"]["request_mirror_policies"] = mirror_policies();
    }
    json!([jason, split])
}

/// `n` exact-header rules (`end-user: user-<i>` → v2), then a default → v1.
fn matcher_policy(n: usize) -> Value {
    let mut routes: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("user-{i}"), "match": [{"headers": {"end-user": {"exact": format!("user-{i}")}}}],
                   "route": [{"destination": dest("v2")}]})
        })
        .collect();
    routes.push(json!({"name": "default", "route": [{"destination": dest("v1")}]}));
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": routes}]})
}

fn matcher_native_routes(n: usize) -> Value {
    let mut routes: Vec<Value> = (0..n)
        .map(|i| json!({"match": {"prefix": "/", "headers": header_match(&format!("user-{i}"))}, "route": {"cluster": V2}}))
        .collect();
    routes.push(to(V1));
    Value::Array(routes)
}

/// Fault: abort `end-user: jason` with 500; the bench's requests are not jason,
/// so no fault is applied (the cost of looking).
fn fault_policy() -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "jason-abort", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "abort": {"http_status": 500, "percentage": 100}}]}]})
}

fn fault_native() -> Value {
    json!({"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "abort": {"http_status": 500, "percentage": hundred()},
        "headers": header_match("jason")}})
}

fn delay_policy() -> Value {
    json!({"version": 1, "max_active_faults": 1_000_000, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "delay", "delay": {"fixed_delay": format!("{DELAY_MS}ms"), "percentage": 100}}]}]})
}

fn delay_native() -> Value {
    json!({"name": "envoy.filters.http.fault", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "max_active_faults": 1_000_000,
        "delay": {"fixed_delay": format!("{}s", DELAY_MS as f64 / 1000.0), "percentage": hundred()}}})
}

/// Mirror: every request to the host is also sent to v3.
fn mirror_policy() -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "shadow-v3", "mirrors": [{"destination": dest("v3"), "percentage": 100}]}]}]})
}

fn mirror_policies() -> Value {
    json!([{"cluster": V3, "runtime_fraction": {"default_value": hundred()}}])
}

/// Egress: REGISTRY_ONLY with six hosts; the bench's host is listed last.
const EGRESS_HOSTS: [&str; 6] = ["productpage", "ratings", "details", "api.example.com", "*.googleapis.com", HOST];

fn egress_policy() -> Value {
    let hosts: Vec<Value> = EGRESS_HOSTS
        .iter()
        .map(|h| if *h == "api.example.com" { json!({"host": h, "ports": [443]}) } else { json!({"host": h}) })
        .collect();
    json!({"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY", "hosts": hosts})
}

/// RBAC allowing exactly the egress policy's hosts by `:authority`.
fn rbac_native() -> Value {
    let rules: Vec<Value> = EGRESS_HOSTS
        .iter()
        .map(|h| {
            let m = if let Some(suffix) = h.strip_prefix('*') {
                json!({"suffix": suffix})
            } else if *h == "api.example.com" {
                json!({"exact": format!("{h}:443")})
            } else {
                json!({"exact": h})
            };
            json!({"header": {"name": ":authority", "string_match": m}})
        })
        .collect();
    json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"egress": {
            "permissions": [{"or_rules": {"rules": rules}}],
            "principals": [{"any": true}]}}}}})
}

fn arm(name: &str, bootstrap: Value, end_user: &str) -> Arm {
    Arm { name: name.into(), bootstrap, headers: vec![("end-user".into(), end_user.into())] }
}

/// A request that matches no special rule (not jason, no user-N).
const USER: &str = "bob";

/// The arms of the rate-driven scenarios, `plain` first.
pub fn main_arms(m: &Modules, up: u16, matcher_sizes: &[usize]) -> Vec<Arm> {
    let mut arms = vec![
        arm("plain", bootstrap(json!([to(V1)]), vec![], up), USER),
        arm("native-routing", bootstrap(routing_native_routes(false), vec![], up), USER),
        arm(
            "switchyard-routing",
            bootstrap(by_cluster_header(), vec![m.filter("routing", &routing_policy())], up),
            USER,
        ),
        arm("native-fault", bootstrap(json!([to(V1)]), vec![fault_native()], up), USER),
        arm("switchyard-fault", bootstrap(json!([to(V1)]), vec![m.filter("fault", &fault_policy())], up), USER),
        arm(
            "native-mirror",
            bootstrap(
                json!([{"match": {"prefix": "/"}, "route": {"cluster": V1, "request_mirror_policies": mirror_policies()}}]),
                vec![],
                up,
            ),
            USER,
        ),
        arm("switchyard-mirror", bootstrap(json!([to(V1)]), vec![m.filter("mirror", &mirror_policy())], up), USER),
        arm("native-egress", bootstrap(json!([to(V1)]), vec![rbac_native()], up), USER),
        arm("switchyard-egress", bootstrap(json!([to(V1)]), vec![m.filter("egress", &egress_policy())], up), USER),
        arm("native-chain", bootstrap(routing_native_routes(true), vec![rbac_native(), fault_native()], up), USER),
        arm(
            "switchyard-chain",
            bootstrap(
                by_cluster_header(),
                vec![
                    m.filter("egress", &egress_policy()),
                    m.filter("routing", &routing_policy()),
                    m.filter("fault", &fault_policy()),
                    m.filter("mirror", &mirror_policy()),
                ],
                up,
            ),
            USER,
        ),
    ];
    for &n in matcher_sizes {
        // The request matches the last rule of the run.
        let last = format!("user-{}", n.saturating_sub(1));
        arms.push(arm(&format!("native-match-{n}"), bootstrap(matcher_native_routes(n), vec![], up), &last));
        arms.push(arm(
            &format!("switchyard-match-{n}"),
            bootstrap(by_cluster_header(), vec![m.filter("routing", &matcher_policy(n))], up),
            &last,
        ));
    }
    arms
}

/// Arms started only to weigh Envoy's memory: the routing module with a
/// one-rule policy (the 1 000-rule case is the `switchyard-match-1000` arm).
pub fn rss_arms(m: &Modules, up: u16) -> Vec<Arm> {
    vec![arm(
        "switchyard-routing-1-rule",
        bootstrap(by_cluster_header(), vec![m.filter("routing", &matcher_policy(0))], up),
        USER,
    )]
}

/// The fault delay accuracy arms (100 ms on every request).
pub fn delay_arms(m: &Modules, up: u16) -> Vec<Arm> {
    vec![
        arm("native-delay", bootstrap(json!([to(V1)]), vec![delay_native()], up), USER),
        arm("switchyard-delay", bootstrap(json!([to(V1)]), vec![m.filter("fault", &delay_policy())], up), USER),
    ]
}

/// The module sizes: `(filter, bytes)`.
pub fn wasm_sizes(dir: &Path) -> Vec<(String, u64)> {
    ["routing", "fault", "mirror", "egress"]
        .iter()
        .map(|f| {
            let size = std::fs::metadata(dir.join(format!("{f}.wasm"))).map(|m| m.len()).unwrap_or(0);
            (f.to_string(), size)
        })
        .collect()
}
