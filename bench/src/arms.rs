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
    /// Envoy worker threads (`--concurrency`): 1 but for the 2-worker memory arms.
    pub workers: usize,
    /// The arm writes an access log (`access.log` in its directory) with the
    /// timings of [`ACCESS_LOG_FORMAT`].
    pub access_log: bool,
}

/// Where the modules are.
#[derive(Debug, Clone)]
pub struct Modules {
    /// The four single-purpose modules and, when built, `switchyard.wasm`
    /// (`target/switchyard`, or the counting builds' directory).
    pub dir: PathBuf,
    /// The floor: `noop.wasm`, built by the harness (`bench/build-wasm.sh floor`).
    pub floor: Option<PathBuf>,
}

/// The combined module's file stem and root id (the HTTP chain).
pub const COMBINED: &str = "switchyard";

impl Modules {
    fn path(&self, module: &str) -> String {
        self.dir.join(format!("{module}.wasm")).display().to_string()
    }
    /// Whether `switchyard.wasm` is there (the combined arms are left out until it is).
    pub fn has_combined(&self) -> bool {
        self.dir.join(format!("{COMBINED}.wasm")).is_file()
    }
    /// A Switchyard filter entry for `http_filters`.
    fn filter(&self, filter: &str, config: &Value) -> Value {
        wasm_filter(
            &format!("switchyard.{filter}"),
            filter,
            &format!("switchyard-{filter}"),
            &self.path(filter),
            config,
        )
    }
    /// The combined module as one filter of `http_filters`; filters with the
    /// same `vm_id` share one VM.
    fn combined(&self, name: &str, vm_id: &str, config: &Value) -> Value {
        wasm_filter(name, COMBINED, vm_id, &self.path(COMBINED), config)
    }
    /// The no-op floor module (each `vm_id` its own VM).
    fn floor(&self, vm_id: &str) -> Value {
        let path = self.floor.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        wasm_filter(&format!("bench.{vm_id}"), "noop", vm_id, &path, &json!({}))
    }
}

fn wasm_filter(name: &str, root_id: &str, vm_id: &str, path: &str, config: &Value) -> Value {
    json!({"name": name, "typed_config": wasm_config(name, root_id, vm_id, path, config)})
}

/// An `envoy.extensions.filters.http.wasm.v3.Wasm` (a filter's `typed_config`,
/// or an ECDS resource's).
fn wasm_config(name: &str, root_id: &str, vm_id: &str, path: &str, config: &Value) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": name,
            "root_id": root_id,
            "vm_config": {
                "vm_id": vm_id,
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": path}}
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config.to_string()
            }
        }
    })
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
    routing_policy_split(50)
}

/// Routing with `v1_weight` % to v1 and the rest to v3 (the config pushes alternate it).
fn routing_policy_split(v1_weight: u32) -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [{"destination": dest("v2")}]},
        {"name": "split", "route": [{"destination": dest("v1"), "weight": v1_weight},
                                    {"destination": dest("v3"), "weight": 100 - v1_weight}]}
    ]}]})
}

/// The combined module's config: each section is the single filter's config
/// JSON (its own `"version": 1`), sections left out are not run.
fn combined_config(sections: &[(&str, Value)]) -> Value {
    let mut config = serde_json::Map::new();
    config.insert("version".into(), json!(1));
    for (section, value) in sections {
        config.insert(section.to_string(), value.clone());
    }
    Value::Object(config)
}

/// The whole chain in one config: egress, routing, fault, mirror (the policies
/// of the single-module arms).
fn combined_all(v1_weight: u32) -> Value {
    combined_config(&[
        ("egress", egress_policy()),
        ("routing", routing_policy_split(v1_weight)),
        ("fault", fault_policy()),
        ("mirror", mirror_policy()),
    ])
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

/// Mirror with comparison (issue 14): the same shadow, each answer compared
/// with the primary's by status, a header and the first 4 KiB of the body.
fn mirror_compare_policy() -> Value {
    json!({"version": 1, "virtual_hosts": [{"name": HOST, "domains": [HOST], "routes": [
        {"name": "shadow-v3", "mirrors": [{"destination": dest("v3"), "percentage": 100,
            "compare": {"status": "exact", "headers": ["content-type"], "body_bytes": 4096}}]}]}]})
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
    Arm {
        name: name.into(),
        bootstrap,
        headers: vec![("end-user".into(), end_user.into())],
        workers: 1,
        access_log: false,
    }
}

/// Arms whose module mirrors every request to v3 (the harness checks that
/// the shadow cluster saw at least as many requests as were measured).
pub fn mirrors(arm: &str) -> bool {
    arm.ends_with("-mirror")
        || arm == "switchyard-mirror-compare"
        || arm == "switchyard-combined"
        || arm == "switchyard-combined-x4"
}

/// A request that matches no special rule (not jason, no user-N).
const USER: &str = "bob";

/// The four modules in the order of docs/design.md, each its own VM.
fn chain_of_four(m: &Modules) -> Vec<Value> {
    vec![
        m.filter("egress", &egress_policy()),
        m.filter("routing", &routing_policy()),
        m.filter("fault", &fault_policy()),
        m.filter("mirror", &mirror_policy()),
    ]
}

/// The arms of the rate-driven scenarios, `plain` first.
pub fn main_arms(m: &Modules, up: u16, matcher_sizes: &[usize]) -> Vec<Arm> {
    let mut arms = vec![arm("plain", bootstrap(json!([to(V1)]), vec![], up), USER)];
    if m.floor.is_some() {
        arms.push(arm("floor", bootstrap(json!([to(V1)]), vec![m.floor("floor")], up), USER));
    }
    arms.extend([
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
        arm(
            "switchyard-mirror-compare",
            bootstrap(json!([to(V1)]), vec![m.filter("mirror", &mirror_compare_policy())], up),
            USER,
        ),
        arm("native-egress", bootstrap(json!([to(V1)]), vec![rbac_native()], up), USER),
        arm("switchyard-egress", bootstrap(json!([to(V1)]), vec![m.filter("egress", &egress_policy())], up), USER),
        arm("native-chain", bootstrap(routing_native_routes(true), vec![rbac_native(), fault_native()], up), USER),
        arm(
            "switchyard-chain",
            bootstrap(
                by_cluster_header(),
                chain_of_four(m),
                up,
            ),
            USER,
        ),
    ]);
    if m.floor.is_some() {
        // The chain's floor: four no-op modules, each its own VM, as the chain's four are.
        let floors = (1..=4).map(|i| m.floor(&format!("floor-{i}"))).collect();
        arms.push(arm("floor-4", bootstrap(json!([to(V1)]), floors, up), USER));
    }
    if m.has_combined() {
        arms.extend(combined_arms(m, up));
    }
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

/// The combined module (`switchyard.wasm`, one VM): the whole chain from one
/// config, routing alone from a config with only that section, and the chain
/// as four filters of the one module sharing its VM (four contexts per request).
fn combined_arms(m: &Modules, up: u16) -> Vec<Arm> {
    let sections = [
        ("egress", egress_policy()),
        ("routing", routing_policy()),
        ("fault", fault_policy()),
        ("mirror", mirror_policy()),
    ];
    let x4 = sections
        .iter()
        .map(|(s, policy)| m.combined(&format!("switchyard.{s}"), COMBINED, &combined_config(&[(s, policy.clone())])))
        .collect();
    vec![
        arm(
            "switchyard-combined",
            bootstrap(by_cluster_header(), vec![m.combined("switchyard", COMBINED, &combined_all(50))], up),
            USER,
        ),
        arm(
            "switchyard-combined-routing",
            bootstrap(
                by_cluster_header(),
                vec![m.combined("switchyard", COMBINED, &combined_config(&[("routing", routing_policy())]))],
                up,
            ),
            USER,
        ),
        arm("switchyard-combined-x4", bootstrap(by_cluster_header(), x4, up), USER),
    ]
}

/// Arms started only to weigh Envoy's memory: the routing module with a
/// one-rule policy (the 1 000-rule case is the `switchyard-match-1000` arm),
/// and with 2 workers (each worker has its own VMs): plain Envoy, the floor,
/// the four-module chain and the combined module.
pub fn rss_arms(m: &Modules, up: u16) -> Vec<Arm> {
    let mut arms = vec![
        arm(
            "switchyard-routing-1-rule",
            bootstrap(by_cluster_header(), vec![m.filter("routing", &matcher_policy(0))], up),
            USER,
        ),
        arm("plain-2w", bootstrap(json!([to(V1)]), vec![], up), USER),
    ];
    if m.floor.is_some() {
        arms.push(arm("floor-2w", bootstrap(json!([to(V1)]), vec![m.floor("floor")], up), USER));
    }
    arms.push(arm("switchyard-chain-2w", bootstrap(by_cluster_header(), chain_of_four(m), up), USER));
    if m.has_combined() {
        arms.push(arm(
            "switchyard-combined-2w",
            bootstrap(by_cluster_header(), vec![m.combined("switchyard", COMBINED, &combined_all(50))], up),
            USER,
        ));
    }
    for a in arms.iter_mut().filter(|a| a.name.ends_with("-2w")) {
        a.workers = 2;
    }
    arms
}

/// An Envoy whose one Switchyard filter comes over ECDS from a file
/// (`path_config_source`, watched): the config-push arms.
pub struct PushArm {
    pub arm: Arm,
    /// The ECDS resource name (the filter's name).
    pub resource: String,
    /// The file Envoy watches; replace it atomically (write + rename) to push.
    pub file: PathBuf,
    module: String,
    root_id: String,
    vm_id: String,
}

impl PushArm {
    /// The `n`th push's content: a `DiscoveryResponse` whose one resource is
    /// the filter's config, its routing split `1 + n % 99` / the rest: 99
    /// configs in a row each unlike any before. Distinct texts matter: Envoy's
    /// Wasm host keys a plugin by its whole configuration and remembers every
    /// key it has checked (docs/design.md, "Memory per config").
    pub fn discovery_response(&self, n: usize) -> Value {
        let v1 = 1 + (n % 99) as u32;
        let config = if self.root_id == COMBINED { combined_all(v1) } else { routing_policy_split(v1) };
        json!({
            "version_info": n.to_string(),
            "resources": [{
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": self.resource,
                "typed_config": wasm_config(&self.resource, &self.root_id, &self.vm_id, &self.module, &config)
            }]
        })
    }
}

/// The config-push arms, 2 workers each: the combined module (when built)
/// and, for comparison, the routing module. `dir(name)` is the directory the
/// launcher gives the arm's Envoy (the ECDS file lives there).
pub fn push_arms(m: &Modules, up: u16, dir: impl Fn(&str) -> PathBuf) -> Vec<PushArm> {
    let mut out = Vec::new();
    let mut kinds = vec![("push-switchyard-routing", "routing", "routing")];
    if m.has_combined() {
        kinds.insert(0, ("push-switchyard-combined", COMBINED, COMBINED));
    }
    for (name, module, root_id) in kinds {
        let resource = format!("switchyard.{module}");
        let dir = dir(name);
        let file = dir.join("ecds.json");
        let ecds = json!({
            "name": resource,
            "config_discovery": {
                "config_source": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": file.display().to_string(),
                                           "watched_directory": {"path": dir.display().to_string()}}
                },
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
            }
        });
        let mut bootstrap = bootstrap(by_cluster_header(), vec![ecds], up);
        // A filesystem subscription wants a node id and cluster.
        bootstrap["node"] = json!({"id": name, "cluster": "bench"});
        let mut a = arm(name, bootstrap, USER);
        a.workers = 2;
        out.push(PushArm {
            arm: a,
            resource,
            file,
            module: m.path(module),
            root_id: root_id.into(),
            vm_id: format!("switchyard-{module}"),
        });
    }
    out
}

/// The fault delay accuracy arms (100 ms on every request), each with an
/// access log of its timings, so the error is also measured inside Envoy.
pub fn delay_arms(m: &Modules, up: u16) -> Vec<Arm> {
    let mut arms = vec![
        arm("native-delay", bootstrap(json!([to(V1)]), vec![delay_native()], up), USER),
        arm("switchyard-delay", bootstrap(json!([to(V1)]), vec![m.filter("fault", &delay_policy())], up), USER),
    ];
    if m.has_combined() {
        arms.push(arm(
            "switchyard-combined-delay",
            bootstrap(
                json!([to(V1)]),
                vec![m.combined("switchyard", COMBINED, &combined_config(&[("fault", delay_policy())]))],
                up,
            ),
            USER,
        ));
    }
    for a in &mut arms {
        let hcm = a.bootstrap.pointer_mut("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config");
        if let Some(hcm) = hcm {
            hcm["access_log"] = json!([{"name": "envoy.access_loggers.file", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": ACCESS_LOG,
                "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}}}}]);
            a.access_log = true;
        }
    }
    arms
}

/// The delay arms' access log, relative to the arm's directory (Envoy's cwd).
pub const ACCESS_LOG: &str = "access.log";

/// Per request: status, then µs from the start of the downstream request to
/// the end of the response sent downstream, from the start of the upstream
/// request to the end of its response, and from the downstream start to the
/// upstream start (the delay plus the filters before the router).
pub const ACCESS_LOG_FORMAT: &str = "%RESPONSE_CODE% %COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)% \
     %COMMON_DURATION(US_TX_BEG:US_RX_END:us)% %COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%\n";

/// The module sizes: `(module, bytes)`; `switchyard` only once it is built.
pub fn wasm_sizes(dir: &Path) -> Vec<(String, u64)> {
    ["routing", "fault", "mirror", "egress", COMBINED]
        .iter()
        .filter_map(|f| {
            let size = std::fs::metadata(dir.join(format!("{f}.wasm"))).map(|m| m.len());
            match size {
                Ok(size) => Some((f.to_string(), size)),
                Err(_) if *f == COMBINED => None,
                Err(_) => Some((f.to_string(), 0)),
            }
        })
        .collect()
}
