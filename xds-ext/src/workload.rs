//! Who is asking: the identity of an Envoy, as Istio proxies present it in
//! their xDS `Node` metadata. Rendering depends only on this.

use std::collections::BTreeMap;

use serde::Serialize;

/// A workload's identity for config selection. Two Envoys with the same
/// namespace and labels receive the same configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Workload {
    /// Istio `NAMESPACE` node metadata; `default` when absent.
    pub namespace: String,
    /// Istio `LABELS` node metadata (e.g. `app=reviews`, `version=v1`,
    /// `istio=ingressgateway`).
    pub labels: BTreeMap<String, String>,
}

/// The ECDS resource names xds-ext serves: one per single-purpose filter,
/// and `switchyard.http`, the combined filter (`switchyard.wasm`) running
/// egress → routing → fault → mirror in one HTTP filter. An Envoy picks
/// by what it subscribes to: the four single HTTP filters, or the combined one.
pub const RESOURCE_ROUTING: &str = "switchyard.routing";
pub const RESOURCE_FAULT: &str = "switchyard.fault";
pub const RESOURCE_MIRROR: &str = "switchyard.mirror";
pub const RESOURCE_EGRESS: &str = "switchyard.egress";
pub const RESOURCE_EGRESS_TLS: &str = "switchyard.egress-tls";
pub const RESOURCE_HTTP: &str = "switchyard.http";
pub const RESOURCES: [&str; 6] =
    [RESOURCE_ROUTING, RESOURCE_FAULT, RESOURCE_MIRROR, RESOURCE_EGRESS, RESOURCE_EGRESS_TLS, RESOURCE_HTTP];

/// What one workload receives: the plugin configuration JSON of every filter,
/// keyed by resource name (all six are always present; a filter with nothing
/// to do for this workload gets a config that manages nothing, and the
/// combined config leaves out the stages that would do nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    pub resources: BTreeMap<String, String>,
}
