//! The combined filter's configuration (`switchyard.wasm`, resource
//! `switchyard.http`): the four filters' configs side by side, each section
//! exactly the JSON its single-purpose module takes. A section left out is a
//! stage that does not run, so a workload with routing only pays for routing.
//!
//! ```json
//! {"version": 1, "egress": {...}, "routing": {...}, "fault": {...}, "mirror": {...}}
//! ```

use serde::{Deserialize, Serialize};

use crate::egress::{CompiledEgress, EgressConfig};
use crate::error::ConfigError;
use crate::fault::{CompiledFault, FaultConfig};
use crate::json::{decode, decode_struct, CONFIG_VERSION};
use crate::mirror::{CompiledMirror, MirrorConfig};
use crate::routing::{CompiledRouting, RoutingConfig};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorConfig>,
}

decode_struct!(ChainConfig { version: required, egress: default, routing: default, fault: default, mirror: default });

/// The stages of one request, in the order they run.
#[derive(Debug, Default)]
pub struct CompiledChain {
    pub egress: Option<CompiledEgress>,
    pub routing: Option<CompiledRouting>,
    pub fault: Option<CompiledFault>,
    pub mirror: Option<CompiledMirror>,
}

impl CompiledChain {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_config(&decode::<ChainConfig>(bytes)?)
    }

    /// Compiles every section present. Errors name the section
    /// (`routing.virtual_hosts[0].routes[1].timeout`), as the single
    /// filters' errors name their own fields.
    pub fn from_config(config: &ChainConfig) -> Result<Self, ConfigError> {
        Ok(CompiledChain {
            egress: section("egress", config.egress.as_ref(), |c| c.version, CompiledEgress::from_config)?,
            routing: section("routing", config.routing.as_ref(), |c| c.version, CompiledRouting::from_config)?,
            fault: section("fault", config.fault.as_ref(), |c| c.version, CompiledFault::from_config)?,
            mirror: section("mirror", config.mirror.as_ref(), |c| c.version, CompiledMirror::from_config)?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.egress.is_none() && self.routing.is_none() && self.fault.is_none() && self.mirror.is_none()
    }
}

fn section<C, T>(
    name: &str,
    config: Option<&C>,
    version: impl Fn(&C) -> u64,
    compile: impl Fn(&C) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let Some(config) = config else { return Ok(None) };
    // A section is a whole single-filter config, version included; the
    // top-level check covers only the outer object.
    let found = version(config);
    if found != CONFIG_VERSION {
        return Err(ConfigError::new(
            format!("{name}.version"),
            format!("unsupported config version {found} (this filter understands {CONFIG_VERSION})"),
        ));
    }
    compile(config).map(Some).map_err(|e| {
        let path = if e.path.is_empty() { name.to_owned() } else { format!("{name}.{}", e.path) };
        ConfigError::new(path, e.message)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn sections_are_optional() {
        let chain = CompiledChain::from_json(br#"{"version":1}"#).unwrap();
        assert!(chain.is_empty());
        let chain = CompiledChain::from_json(
            br#"{"version":1,"routing":{"version":1,"virtual_hosts":[]},"egress":{"version":1,"outbound_traffic_policy":"ALLOW_ANY"}}"#,
        )
        .unwrap();
        assert!(chain.routing.is_some() && chain.egress.is_some());
        assert!(chain.fault.is_none() && chain.mirror.is_none());
    }

    #[test]
    fn errors_name_the_section() {
        let err = CompiledChain::from_json(br#"{"version":1,"fault":{"version":1,"virtual_hosts":[{"name":"a"}]}}"#)
            .unwrap_err();
        assert!(err.path.starts_with("fault.virtual_hosts[0]"), "{err}");
        let err = CompiledChain::from_json(br#"{"version":1,"mirror":{"version":2,"virtual_hosts":[]}}"#).unwrap_err();
        assert_eq!(err.path, "mirror.version");
        let err = CompiledChain::from_json(br#"{"version":1,"router":{}}"#).unwrap_err();
        assert!(err.message.contains("unknown field `router`"), "{err}");
        let err = CompiledChain::from_json(br#"{"routing":{"version":1,"virtual_hosts":[]}}"#).unwrap_err();
        assert_eq!(err.path, "version");
    }

    // serde_json is a native-only dev-dependency.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn serde_and_the_wasm_decoder_agree() {
        let json = r#"{"version":1,"routing":{"version":1,"virtual_hosts":[]},"fault":{"version":1,"max_active_faults":3,"virtual_hosts":[]}}"#;
        let ours: ChainConfig = decode(json.as_bytes()).unwrap();
        let serde: ChainConfig = serde_json::from_str(json).unwrap();
        assert_eq!(ours, serde);
    }
}
