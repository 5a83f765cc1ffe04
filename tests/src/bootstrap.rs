//! Builders for Envoy bootstrap JSON (v3 API). Every address is
//! `127.0.0.1:0`: the kernel picks ports and [`crate::Envoy`] reads them back.
//! The results are plain `serde_json::Value`s: adjust any field a test needs.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{workspace_root, HarnessError};

const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const HTTP_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NETWORK_WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm";
const TCP_PROXY_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const TLS_INSPECTOR_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const HTTP_PROTOCOL_OPTIONS_TYPE: &str = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// `127.0.0.1:port` as an Envoy `Address`.
pub fn loopback_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// The admin block: `127.0.0.1:0`.
pub fn admin() -> Value {
    json!({"address": loopback_address(0)})
}

/// A whole bootstrap: admin + static listeners and clusters.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": admin(),
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

/// A STATIC cluster with one endpoint at `127.0.0.1:port`; `http2` makes
/// Envoy speak h2c (prior knowledge) to it.
pub fn static_cluster(name: &str, port: u16, http2: bool) -> Value {
    let mut cluster = json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": loopback_address(port)}}]}],
        },
    });
    if http2 {
        cluster["typed_extension_protocol_options"] = json!({
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        });
    }
    cluster
}

/// A route sending every path (`prefix: /`) to `cluster`. Wrap routes with
/// [`route_config`].
pub fn route_to_cluster(cluster: &str) -> Value {
    json!({"match": {"prefix": "/"}, "route": {"cluster": cluster}})
}

/// A route sending every path (`prefix: /`) to the cluster named by request
/// header `header` (what the routing filter sets). Wrap with [`route_config`].
pub fn route_by_cluster_header(header: &str) -> Value {
    json!({"match": {"prefix": "/"}, "route": {"cluster_header": header}})
}

/// A route config (`local_route`) with one virtual host (`*`) holding
/// `routes` in order.
pub fn route_config(routes: Vec<Value>) -> Value {
    json!({
        "name": "local_route",
        "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
    })
}

/// The router filter (always last in an HTTP filter chain).
pub fn router_filter() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}})
}

/// The HTTP connection manager with `route_config` and `http_filters`
/// (the router is appended). `stat_prefix` = `stat_prefix`.
pub fn http_connection_manager(stat_prefix: &str, route_config: Value, mut http_filters: Vec<Value>) -> Value {
    http_filters.push(router_filter());
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": route_config,
            "http_filters": http_filters,
        },
    })
}

/// An HTTP listener on `127.0.0.1:0` named `name` (also the HCM stat prefix).
/// `http_filters` run in order, then the router.
pub fn http_listener(name: &str, route_config: Value, http_filters: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": loopback_address(0),
        "filter_chains": [{"filters": [http_connection_manager(name, route_config, http_filters)]}],
    })
}

/// Makes every HTTP connection manager in `listener` treat loopback clients as
/// internal (`use_remote_address` + `internal_address_config` 127.0.0.1/32), so
/// Envoy honours client-sent `x-envoy-retry-on`, `x-envoy-max-retries`,
/// `x-envoy-upstream-rq-timeout-ms`... Envoy 1.40 strips or ignores them from
/// external clients, and by default no address is internal. Headers a wasm
/// filter sets are not affected either way.
pub fn trust_loopback_clients(listener: &mut Value) {
    let Some(chains) = listener.get_mut("filter_chains").and_then(Value::as_array_mut) else {
        return;
    };
    for chain in chains {
        let Some(filters) = chain.get_mut("filters").and_then(Value::as_array_mut) else {
            continue;
        };
        for f in filters {
            if f["typed_config"]["@type"] == HCM_TYPE {
                f["typed_config"]["use_remote_address"] = json!(true);
                f["typed_config"]["internal_address_config"] =
                    json!({"cidr_ranges": [{"address_prefix": "127.0.0.1", "prefix_len": 32}]});
            }
        }
    }
}

/// A proxy-wasm `PluginConfig` (`envoy.extensions.wasm.v3.PluginConfig`):
/// V8 runtime, local module file, plugin configuration as a StringValue.
pub fn wasm_plugin_config(
    plugin_name: &str,
    module_path: &Path,
    root_id: &str,
    vm_id: &str,
    configuration: &str,
) -> Value {
    json!({
        "name": plugin_name,
        "root_id": root_id,
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": module_path.to_string_lossy()}},
        },
        "configuration": {"@type": STRING_VALUE_TYPE, "value": configuration},
    })
}

/// An HTTP wasm filter (`envoy.extensions.filters.http.wasm.v3.Wasm`).
/// `filter_name` names both the filter and the plugin (e.g. `switchyard.routing`);
/// `configuration` is the plugin's JSON text.
pub fn wasm_http_filter(
    filter_name: &str,
    module_path: &Path,
    root_id: &str,
    vm_id: &str,
    configuration: &str,
) -> Value {
    json!({
        "name": filter_name,
        "typed_config": {
            "@type": HTTP_WASM_TYPE,
            "config": wasm_plugin_config(filter_name, module_path, root_id, vm_id, configuration),
        },
    })
}

/// A network (L4) wasm filter (`envoy.extensions.filters.network.wasm.v3.Wasm`).
pub fn wasm_network_filter(
    filter_name: &str,
    module_path: &Path,
    root_id: &str,
    vm_id: &str,
    configuration: &str,
) -> Value {
    json!({
        "name": filter_name,
        "typed_config": {
            "@type": NETWORK_WASM_TYPE,
            "config": wasm_plugin_config(filter_name, module_path, root_id, vm_id, configuration),
        },
    })
}

/// The `tcp_proxy` network filter to `cluster` (stat prefix `stat_prefix`).
pub fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster},
    })
}

/// A TCP listener on `127.0.0.1:0`: `network_filters` then `tcp_proxy` to
/// `cluster`; `with_tls_inspector` adds the `tls_inspector` listener filter so
/// network filters can read the SNI (`connection.requested_server_name`).
pub fn tcp_proxy_listener(
    name: &str,
    cluster: &str,
    mut network_filters: Vec<Value>,
    with_tls_inspector: bool,
) -> Value {
    network_filters.push(tcp_proxy_filter(name, cluster));
    let mut listener = json!({
        "name": name,
        "address": loopback_address(0),
        "filter_chains": [{"filters": network_filters}],
    });
    if with_tls_inspector {
        listener["listener_filters"] = json!([{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": TLS_INSPECTOR_TYPE},
        }]);
    }
    listener
}

/// `<workspace root>/target/switchyard/<name>.wasm` (or `$SWITCHYARD_WASM_DIR/<name>.wasm`),
/// or an error telling to run `make build` if it is missing. `name` is e.g. `routing`.
pub fn module_path(name: &str) -> Result<PathBuf, HarnessError> {
    let dir = std::env::var_os("SWITCHYARD_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/switchyard"));
    let path = dir.join(format!("{name}.wasm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::ModuleMissing(path))
    }
}

/// An Envoy `node` as an Istio sidecar presents itself: `id`, `cluster` and
/// metadata `NAMESPACE`, `LABELS` (strings) and `WORKLOAD_NAME` (= `id`).
/// Put it at the bootstrap's `"node"`; xds-ext picks the workload's config by it.
pub fn istio_node(id: &str, namespace: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({
        "id": id,
        "cluster": labels.get("app").and_then(Value::as_str).unwrap_or(id),
        "metadata": {"NAMESPACE": namespace, "LABELS": labels, "WORKLOAD_NAME": id},
    })
}

/// A gRPC config source on cluster `xds_cluster` (state of the world, or
/// delta), reconnecting fast (0.1 s backoff, at most 1 s) when the server goes away.
pub fn ecds_config_source(xds_cluster: &str, delta: bool) -> Value {
    json!({
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {
                "cluster_name": xds_cluster,
                "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}},
            }}],
        },
    })
}

/// An HTTP wasm filter whose config comes over ECDS (resource `name`, e.g.
/// `switchyard.routing`) from `xds_cluster`. The listener warms until the
/// first config arrives (Envoy's default `initial_fetch_timeout`, 15 s).
pub fn ecds_http_filter(name: &str, xds_cluster: &str) -> Value {
    json!({
        "name": name,
        "config_discovery": {"config_source": ecds_config_source(xds_cluster, false), "type_urls": [HTTP_WASM_TYPE]},
    })
}

/// What a Switchyard HTTP filter declared over ECDS runs until its first
/// config arrives, as the manifests and example bootstraps declare it
/// (docs/xds-ext.md, "Before the first config"): a filter holding the
/// egress policy (`switchyard.http`, `switchyard.egress`) fails closed (RBAC
/// allowing nothing: 403), the others fail open (RBAC without rules: the
/// request passes unchanged and takes Envoy's own routes).
pub fn default_http_config(resource: &str) -> Value {
    let rbac = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
    match resource {
        "switchyard.http" | "switchyard.egress" => json!({"@type": rbac, "rules": {"action": "ALLOW"}}),
        _ => json!({"@type": rbac}),
    }
}

/// [`ecds_http_filter`] with its [`default_http_config`], which Envoy runs
/// once `initial_fetch_timeout` has passed without a config.
pub fn ecds_http_filter_with_default(name: &str, xds_cluster: &str, initial_fetch_timeout: &str) -> Value {
    let mut source = ecds_config_source(xds_cluster, false);
    source["initial_fetch_timeout"] = json!(initial_fetch_timeout);
    json!({
        "name": name,
        "config_discovery": {
            "config_source": source,
            "default_config": default_http_config(name),
            "type_urls": [HTTP_WASM_TYPE, "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"],
        },
    })
}

/// A network (L4) wasm filter whose config comes over ECDS from `xds_cluster`.
pub fn ecds_network_filter(name: &str, xds_cluster: &str) -> Value {
    json!({
        "name": name,
        "config_discovery": {"config_source": ecds_config_source(xds_cluster, false), "type_urls": [NETWORK_WASM_TYPE]},
    })
}

/// The `xds-ext` binary: `$SWITCHYARD_XDS_EXT`, else
/// `<workspace root>/target/debug/xds-ext`, or an error telling to build it.
pub fn xds_ext_binary() -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("SWITCHYARD_XDS_EXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/xds-ext"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Other(format!(
            "xds-ext not found at {}: run `make build` (or `cargo build -p xds-ext`)",
            path.display()
        )))
    }
}
