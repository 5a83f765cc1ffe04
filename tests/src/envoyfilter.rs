//! **A test helper, not istiod**: applies Istio `EnvoyFilter` patches to an
//! Envoy configuration the way istiod does, for the parts of the EnvoyFilter
//! API that `envoyfilter-manifests/` uses — so a test can run the rendered
//! manifests in a real Envoy without a Kubernetes API server or istiod.
//!
//! Implemented, following istiod's `pilot/pkg/networking/core/envoyfilter`:
//! - which EnvoyFilters apply to a proxy: those in the root namespace
//!   (`istio-system`) or the proxy's own, whose `workloadSelector` labels the
//!   proxy has; their patches in `priority` order, then document order (the
//!   stand-in for creation time);
//! - `match.context` (`SIDECAR_OUTBOUND` on a sidecar's outbound listeners
//!   and its route configurations, `GATEWAY` on a gateway, `ANY`);
//! - `HTTP_FILTER` and `NETWORK_FILTER`: `INSERT_BEFORE`, `INSERT_AFTER`,
//!   `INSERT_FIRST`, `ADD`, `REMOVE`, matched by `listener.filterChain.filter.name`
//!   (and `subFilter.name` for HTTP filters);
//! - `VIRTUAL_HOST`: `ADD` (after the removes), `REMOVE`, matched by
//!   `routeConfiguration.portNumber` / `name` / `vhost.name`;
//! - `HTTP_ROUTE`: `INSERT_FIRST` and `ADD` into matching virtual hosts.
//!
//! Anything else (another `applyTo` or operation, a match field it does not
//! know) panics: a manifest that starts to rely on more fails this helper
//! loudly instead of being half-applied.

use serde_json::Value;

/// The root namespace: EnvoyFilters there apply to every proxy.
const ROOT_NAMESPACE: &str = "istio-system";

/// The proxy the patches are for.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub gateway: bool,
    pub namespace: String,
    pub labels: Vec<(String, String)>,
    /// A gateway's Service ports → the ports its pods listen on (istiod
    /// matches `portNumber` against either).
    pub gateway_ports: Vec<(u16, u16)>,
}

/// An Envoy configuration as istiod would deliver it: LDS, RDS and CDS
/// resources in Envoy's JSON form (snake_case, `@type` on typed configs).
#[derive(Debug, Clone, Default)]
pub struct EnvoyConfig {
    pub listeners: Vec<Value>,
    pub route_configs: Vec<Value>,
    pub clusters: Vec<Value>,
}

/// One `configPatches` entry with the priority of its EnvoyFilter.
struct Patch {
    priority: i64,
    order: usize,
    apply_to: String,
    matcher: Value,
    operation: String,
    value: Value,
}

/// Applies every EnvoyFilter of `documents` (other kinds are skipped) that
/// selects `proxy` to `config`.
pub fn apply(documents: &[Value], proxy: &Proxy, config: &mut EnvoyConfig) {
    let mut patches = selected_patches(documents, proxy);
    patches.sort_by_key(|p| (p.priority, p.order));
    for patch in &patches {
        if !context_matches(&patch.matcher, proxy) {
            continue;
        }
        match patch.apply_to.as_str() {
            "HTTP_FILTER" => patch_listener_filters(patch, config, true),
            "NETWORK_FILTER" => patch_listener_filters(patch, config, false),
            "VIRTUAL_HOST" | "HTTP_ROUTE" => {}
            other => panic!("envoyfilter test helper: applyTo {other} is not implemented"),
        }
    }
    // Route configurations: removes, then adds, then routes (istiod's order).
    for rc in &mut config.route_configs {
        let route_patches: Vec<&Patch> = patches
            .iter()
            .filter(|p| context_matches(&p.matcher, proxy) && route_config_matches(&p.matcher, rc, proxy))
            .collect();
        patch_virtual_hosts(&route_patches, rc);
    }
}

fn selected_patches(documents: &[Value], proxy: &Proxy) -> Vec<Patch> {
    let mut out = Vec::new();
    for doc in documents.iter().filter(|d| d["kind"] == "EnvoyFilter") {
        let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        if namespace != ROOT_NAMESPACE && namespace != proxy.namespace {
            continue;
        }
        if let Some(labels) = doc["spec"]["workloadSelector"]["labels"].as_object() {
            let has =
                |k: &str, v: &Value| proxy.labels.iter().any(|(pk, pv)| pk == k && Some(pv.as_str()) == v.as_str());
            if !labels.iter().all(|(k, v)| has(k, v)) {
                continue;
            }
        }
        let priority = doc["spec"]["priority"].as_i64().unwrap_or(0);
        for patch in doc["spec"]["configPatches"].as_array().into_iter().flatten() {
            out.push(Patch {
                priority,
                order: out.len(),
                apply_to: patch["applyTo"].as_str().unwrap_or_default().to_string(),
                matcher: patch["match"].clone(),
                operation: patch["patch"]["operation"].as_str().unwrap_or_default().to_string(),
                value: patch["patch"]["value"].clone(),
            });
        }
    }
    out
}

fn context_matches(matcher: &Value, proxy: &Proxy) -> bool {
    match matcher["context"].as_str().unwrap_or("ANY") {
        "ANY" => true,
        "GATEWAY" => proxy.gateway,
        "SIDECAR_OUTBOUND" => !proxy.gateway,
        "SIDECAR_INBOUND" => false,
        other => panic!("envoyfilter test helper: context {other} is not implemented"),
    }
}

// ---------------------------------------------------------------------------
// Listeners

fn patch_listener_filters(patch: &Patch, config: &mut EnvoyConfig, http: bool) {
    let lmatch = &patch.matcher["listener"];
    for key in lmatch.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(key == "filterChain", "envoyfilter test helper: listener match {key} is not implemented");
    }
    let chain_match = &lmatch["filterChain"];
    for key in chain_match.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(key == "filter", "envoyfilter test helper: filterChain match {key} is not implemented");
    }
    let filter_name = chain_match["filter"]["name"].as_str();
    let sub_filter = chain_match["filter"]["subFilter"]["name"].as_str();
    for listener in &mut config.listeners {
        // A sidecar's outbound patches do not touch its inbound listeners.
        if patch.matcher["context"].as_str().is_none_or(|c| c != "GATEWAY")
            && listener["traffic_direction"].as_str() == Some("INBOUND")
        {
            continue;
        }
        for chain in listener["filter_chains"].as_array_mut().into_iter().flatten() {
            let filters = chain["filters"].as_array_mut().expect("filter chain without filters");
            if http {
                for filter in filters.iter_mut() {
                    if filter_name.is_some_and(|n| filter["name"] != n) {
                        continue;
                    }
                    let Some(http_filters) = filter["typed_config"]["http_filters"].as_array_mut() else { continue };
                    edit_list(http_filters, sub_filter, patch);
                }
            } else {
                edit_list(filters, filter_name, patch);
            }
        }
    }
}

/// An operation on a list of named filters, relative to the one named `anchor`.
fn edit_list(list: &mut Vec<Value>, anchor: Option<&str>, patch: &Patch) {
    let position = anchor.map(|a| list.iter().position(|f| f["name"] == a));
    match (patch.operation.as_str(), position) {
        ("ADD", _) => list.push(patch.value.clone()),
        ("INSERT_FIRST", _) => list.insert(0, patch.value.clone()),
        ("INSERT_BEFORE", Some(Some(i))) => list.insert(i, patch.value.clone()),
        ("INSERT_AFTER", Some(Some(i))) => list.insert(i + 1, patch.value.clone()),
        ("REMOVE", Some(Some(i))) => {
            list.remove(i);
        }
        ("INSERT_BEFORE" | "INSERT_AFTER" | "REMOVE", _) => {} // no anchor here: not applied
        (other, _) => panic!("envoyfilter test helper: filter operation {other} is not implemented"),
    }
}

// ---------------------------------------------------------------------------
// Route configurations

fn route_config_matches(matcher: &Value, rc: &Value, proxy: &Proxy) -> bool {
    let rmatch = &matcher["routeConfiguration"];
    if rmatch.is_null() {
        return false; // not a route patch
    }
    for key in rmatch.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(
            matches!(key.as_str(), "portNumber" | "name" | "vhost"),
            "envoyfilter test helper: routeConfiguration match {key} is not implemented"
        );
    }
    let name = rc["name"].as_str().unwrap_or_default();
    if rmatch["name"].as_str().is_some_and(|n| n != name) {
        return false;
    }
    let Some(want) = rmatch["portNumber"].as_u64() else { return true };
    // Sidecars name route configurations by port (`9080`), gateways `http.<port>`.
    let port: u64 = name.trim_start_matches("http.").split('.').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    port == want
        || (proxy.gateway
            && proxy
                .gateway_ports
                .iter()
                .any(|(service, target)| u64::from(*target) == port && u64::from(*service) == want))
}

fn vhost_matches(matcher: &Value, vhost: &Value) -> bool {
    let vmatch = &matcher["routeConfiguration"]["vhost"];
    for key in vmatch.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(key == "name", "envoyfilter test helper: vhost match {key} is not implemented");
    }
    vmatch["name"].as_str().is_none_or(|n| vhost["name"] == n)
}

fn patch_virtual_hosts(patches: &[&Patch], rc: &mut Value) {
    let vhosts = rc["virtual_hosts"].as_array_mut().expect("route configuration without virtual_hosts");
    for patch in patches.iter().filter(|p| p.apply_to == "VIRTUAL_HOST") {
        match patch.operation.as_str() {
            "REMOVE" => vhosts.retain(|vh| !vhost_matches(&patch.matcher, vh)),
            "ADD" => {}
            other => panic!("envoyfilter test helper: VIRTUAL_HOST {other} is not implemented"),
        }
    }
    for patch in patches.iter().filter(|p| p.apply_to == "VIRTUAL_HOST" && p.operation == "ADD") {
        vhosts.push(patch.value.clone());
    }
    for patch in patches.iter().filter(|p| p.apply_to == "HTTP_ROUTE") {
        assert!(
            patch.matcher["routeConfiguration"]["vhost"]["route"].is_null(),
            "envoyfilter test helper: HTTP_ROUTE route matches are not implemented"
        );
        for vhost in vhosts.iter_mut().filter(|vh| vhost_matches(&patch.matcher, vh)) {
            let routes = vhost["routes"].as_array_mut().expect("virtual host without routes");
            match patch.operation.as_str() {
                "INSERT_FIRST" => routes.insert(0, patch.value.clone()),
                "ADD" => routes.push(patch.value.clone()),
                other => panic!("envoyfilter test helper: HTTP_ROUTE {other} is not implemented"),
            }
        }
    }
}

/// `kubectl kustomize DIR` → its documents as JSON. Panics with one line
/// naming what is missing when kubectl is not installed.
pub fn kustomize(dir: &std::path::Path) -> Vec<Value> {
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("kubectl kustomize needs kubectl (with Kustomize 5) on PATH: {e}"));
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout))
}

/// A YAML stream → JSON values.
pub fn yaml_documents(text: &str) -> Vec<Value> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("parsing YAML: {e}"));
    docs.iter().filter(|d| !d.is_null()).map(yaml_to_json).collect()
}

fn yaml_to_json(yaml: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match yaml {
        Yaml::Real(r) => r.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}")), yaml_to_json(v)))
                .collect(),
        ),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sidecar() -> Proxy {
        Proxy {
            gateway: false,
            namespace: "default".into(),
            labels: vec![("app".into(), "a".into())],
            gateway_ports: vec![],
        }
    }

    fn filter(name: &str, priority: i64, op: &str, selector: Option<Value>) -> Value {
        let mut ef = json!({
            "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": "istio-system"},
            "spec": {"priority": priority, "configPatches": [{
                "applyTo": "HTTP_FILTER",
                "match": {"context": "SIDECAR_OUTBOUND", "listener": {"filterChain": {"filter": {
                    "name": "envoy.filters.network.http_connection_manager",
                    "subFilter": {"name": "envoy.filters.http.router"}}}}},
                "patch": {"operation": op, "value": {"name": name}},
            }]},
        });
        if let Some(s) = selector {
            ef["spec"]["workloadSelector"] = json!({"labels": s});
        }
        ef
    }

    fn listener() -> EnvoyConfig {
        EnvoyConfig {
            listeners: vec![
                json!({"name": "0.0.0.0_9080", "traffic_direction": "OUTBOUND", "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {"http_filters": [{"name": "envoy.filters.http.fault"}, {"name": "envoy.filters.http.router"}]},
                }]}]}),
            ],
            ..Default::default()
        }
    }

    fn http_filter_names(config: &EnvoyConfig) -> Vec<String> {
        config.listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn insert_before_the_router_in_priority_order_whatever_the_document_order() {
        let docs = [filter("b", 20, "INSERT_BEFORE", None), filter("a", 10, "INSERT_BEFORE", None)];
        let mut config = listener();
        apply(&docs, &sidecar(), &mut config);
        assert_eq!(http_filter_names(&config), ["envoy.filters.http.fault", "a", "b", "envoy.filters.http.router"]);
    }

    #[test]
    fn a_workload_selector_and_a_context_keep_patches_off_other_proxies() {
        let docs = [filter("x", 0, "INSERT_BEFORE", Some(json!({"istio": "ingressgateway"})))];
        let mut config = listener();
        apply(&docs, &sidecar(), &mut config);
        assert_eq!(http_filter_names(&config).len(), 2);
        let gateway = Proxy { gateway: true, labels: vec![("istio".into(), "ingressgateway".into())], ..sidecar() };
        apply(&docs, &gateway, &mut config);
        assert_eq!(http_filter_names(&config).len(), 2, "SIDECAR_OUTBOUND does not apply to a gateway");
    }

    #[test]
    #[should_panic(expected = "not implemented")]
    fn an_unimplemented_operation_fails_loudly() {
        let docs = [filter("x", 0, "MERGE", None)];
        apply(&docs, &sidecar(), &mut listener());
    }
}
