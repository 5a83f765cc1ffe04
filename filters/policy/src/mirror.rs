//! The mirror filter's config and decision: which mirror clusters get a
//! shadow copy of a request (Istio `mirrors` / `mirror` +
//! `mirrorPercentage`).
//!
//! Each mirror is drawn independently. `percentage` defaults to 100 like
//! Istio's; 0 never mirrors. The shadow request's `:authority` gets the
//! `-shadow` suffix on its host part (`reviews:9080` → `reviews-shadow:9080`),
//! as Envoy's `request_mirror_policies` do: see [`shadow_authority`].

use serde::{Deserialize, Serialize};

use crate::cluster_name::{ClusterNameTemplate, Destination};
use crate::error::{ConfigError, Failed, Path};
use crate::fault::percentage;
use crate::http_match::HttpMatchRequest;
use crate::json::{decode, decode_struct};
use crate::request::{HeaderSource, Request};
use crate::virtual_host::{strip_port, Lookup, RouteSpec, RuleId, VirtualHostConfig, VirtualHosts};
use crate::weighted::{mix64, Percentage};

/// A route mirrors to at most this many clusters: the decision is a 64-bit
/// mask, and each mirror is a full extra upstream request.
pub const MAX_MIRRORS_PER_ROUTE: usize = 64;

/// Request bodies up to this size are copied to the shadow by default;
/// larger ones are not mirrored (a truncated copy would be a wrong request).
pub const DEFAULT_MAX_BODY_BYTES: u32 = 64 * 1024;
/// The most a config may ask to buffer per mirrored request.
pub const MAX_BODY_BYTES_LIMIT: u32 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name_template: Option<String>,
    /// Largest request body copied to shadows (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    pub virtual_hosts: Vec<VirtualHostConfig<MirrorRouteConfig>>,
}

decode_struct!(MirrorConfig {
    version: required,
    cluster_name_template: default,
    max_body_bytes: default,
    virtual_hosts: required,
});

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorRouteConfig {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    pub mirrors: Vec<MirrorPolicyConfig>,
}

decode_struct!(MirrorRouteConfig { name: required, match_ = "match": default, mirrors: required });

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorPolicyConfig {
    pub destination: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

decode_struct!(MirrorPolicyConfig { destination: required, percentage: default });

impl RouteSpec for MirrorRouteConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn match_blocks(&self) -> &[HttpMatchRequest] {
        &self.match_
    }
}

/// One mirror of a rule: where shadow copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    cluster: String,
    host: String,
    percentage: Percentage,
}

impl MirrorTarget {
    /// The cluster to `dispatch_http_call` to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The destination host as configured.
    pub fn host(&self) -> &str {
        &self.host
    }
}

#[derive(Debug)]
pub struct CompiledMirror {
    hosts: VirtualHosts<Vec<MirrorTarget>>,
    max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorDecision<'a> {
    Unmanaged,
    NoRoute {
        virtual_host: &'a str,
    },
    /// A rule matched; `selection` holds the mirrors drawn for this request
    /// (possibly none).
    Mirror(MirrorSelection<'a>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSelection<'a> {
    pub virtual_host: &'a str,
    pub rule: &'a str,
    /// Index into `CompiledMirror::rule_names()`.
    pub rule_index: usize,
    targets: &'a [MirrorTarget],
    chosen: u64,
}

impl<'a> MirrorSelection<'a> {
    /// The mirrors this request is copied to, in config order.
    pub fn targets(&self) -> impl Iterator<Item = &'a MirrorTarget> + '_ {
        let chosen = self.chosen;
        self.targets.iter().enumerate().filter(move |(i, _)| chosen & (1u64 << i) != 0).map(|(_, t)| t)
    }

    /// Cluster names of the chosen mirrors.
    pub fn clusters(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.targets().map(MirrorTarget::cluster)
    }

    pub fn is_empty(&self) -> bool {
        self.chosen == 0
    }
}

impl CompiledMirror {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_config(&decode::<MirrorConfig>(bytes)?)
    }

    pub fn from_config(config: &MirrorConfig) -> Result<Self, ConfigError> {
        Self::compile(config).map_err(|e| *e)
    }

    fn compile(config: &MirrorConfig) -> Result<Self, Failed> {
        let root = Path::root();
        let template =
            ClusterNameTemplate::parse(config.cluster_name_template.as_deref(), &root.field("cluster_name_template"))?;
        let max_body_bytes = config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(root
                .field("max_body_bytes")
                .error(format!("{max_body_bytes} is above the limit of {MAX_BODY_BYTES_LIMIT} bytes")));
        }
        let hosts = VirtualHosts::compile(&config.virtual_hosts, &root.field("virtual_hosts"), |route, path| {
            compile_mirrors(route, path, &template)
        })?;
        Ok(CompiledMirror { hosts, max_body_bytes: max_body_bytes as usize })
    }

    /// Largest request body copied to shadows.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub fn rule_names(&self) -> &[RuleId] {
        self.hosts.rule_ids()
    }

    /// `random`: one uniformly random `u64` per request; each mirror gets
    /// its own draw derived from it.
    pub fn decide<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>, random: u64) -> MirrorDecision<'_> {
        match self.hosts.lookup(req) {
            Lookup::Unmanaged => MirrorDecision::Unmanaged,
            Lookup::NoRoute { virtual_host } => MirrorDecision::NoRoute { virtual_host },
            Lookup::Matched { virtual_host, hit } => {
                let targets = hit.rule.action.as_slice();
                let mut chosen = 0u64;
                let mut draw = random;
                for (i, target) in targets.iter().enumerate().take(MAX_MIRRORS_PER_ROUTE) {
                    if target.percentage.hit(draw) {
                        chosen |= 1u64 << i;
                    }
                    draw = mix64(draw);
                }
                MirrorDecision::Mirror(MirrorSelection {
                    virtual_host,
                    rule: &hit.rule.name,
                    rule_index: hit.rule.global_index,
                    targets,
                    chosen,
                })
            }
        }
    }
}

fn compile_mirrors(
    route: &MirrorRouteConfig,
    path: &Path,
    template: &ClusterNameTemplate,
) -> Result<Vec<MirrorTarget>, Failed> {
    let mirrors_path = path.field("mirrors");
    if route.mirrors.is_empty() {
        return Err(mirrors_path.error("at least one mirror is required"));
    }
    if route.mirrors.len() > MAX_MIRRORS_PER_ROUTE {
        return Err(mirrors_path.error(format!(
            "{} mirrors, more than the {MAX_MIRRORS_PER_ROUTE} allowed per route",
            route.mirrors.len()
        )));
    }
    route
        .mirrors
        .iter()
        .enumerate()
        .map(|(i, mirror)| {
            let mirror_path = mirrors_path.index(i);
            Ok(MirrorTarget {
                cluster: template.render(&mirror.destination, &mirror_path.field("destination"))?,
                host: mirror.destination.host.clone(),
                percentage: match mirror.percentage {
                    Some(value) => percentage(value, &mirror_path)?,
                    None => Percentage::new(100.0).map_err(|e| mirror_path.error(e))?,
                },
            })
        })
        .collect()
}

/// The authority Envoy gives a shadow request: `-shadow` appended to the
/// host, before any port (`reviews:9080` → `reviews-shadow:9080`,
/// `[::1]:80` → `[::1]-shadow:80`, as Envoy's `shadowAppendedHost`).
pub fn shadow_authority(authority: &str) -> String {
    match strip_port(authority) {
        Some(host) => {
            let port = authority.get(host.len()..).unwrap_or("");
            format!("{host}-shadow{port}")
        }
        None => format!("{authority}-shadow"),
    }
}
