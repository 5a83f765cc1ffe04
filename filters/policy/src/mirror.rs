//! The mirror filter's config and decision: which mirror clusters get a
//! shadow copy of a request (Istio `mirrors` / `mirror` +
//! `mirrorPercentage`).
//!
//! Each mirror is drawn independently. `percentage` defaults to 100 like
//! Istio's; 0 never mirrors. The shadow request's `:authority` gets the
//! `-shadow` suffix on its host part (`reviews:9080` → `reviews-shadow:9080`),
//! as Envoy's `request_mirror_policies` do: see [`shadow_authority`].
//!
//! Shadows are bounded: each mirror has a `timeout` (default 5 s) and a
//! per-worker `max_in_flight` (default 1024) above which a copy is skipped;
//! the whole config a per-worker `max_pending`, the shadows and comparisons
//! one worker tracks at once. A mirror with `compare` has each shadow's
//! answer compared with its primary's ([`crate::compare`]).

use serde::{Deserialize, Serialize};

use crate::cluster_name::{ClusterNameTemplate, Destination};
use crate::compare::{CompareConfig, CompiledCompare};
use crate::duration::millis;
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

/// How long a shadow may take by default (Envoy's call timeout).
pub const DEFAULT_SHADOW_TIMEOUT_MS: u64 = 5_000;
/// The longest shadow timeout a config may set.
pub const MAX_SHADOW_TIMEOUT_MS: u64 = 3_600_000;
/// Shadows one mirror may have in flight per worker by default: Envoy's
/// default `max_requests` circuit breaker of a cluster.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;
/// Shadows plus comparisons one worker tracks at once, by default.
pub const DEFAULT_MAX_PENDING: u32 = 4096;
/// The highest `max_in_flight` / `max_pending` a config may set.
pub const MAX_PENDING_LIMIT: u32 = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name_template: Option<String>,
    /// Largest request body copied to shadows (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    /// Per worker: the most shadows in flight plus comparisons waiting for
    /// their primary, over all mirrors (default 4096); beyond it a shadow is
    /// skipped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending: Option<u32>,
    pub virtual_hosts: Vec<VirtualHostConfig<MirrorRouteConfig>>,
}

decode_struct!(MirrorConfig {
    version: required,
    cluster_name_template: default,
    max_body_bytes: default,
    max_pending: default,
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
    /// How long a shadow may take (default 5 s); a comparison waits as long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Per worker: the most shadows to this mirror in flight at once
    /// (default 1024); beyond it a copy is skipped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Compare each shadow's answer with the primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareConfig>,
}

decode_struct!(MirrorPolicyConfig {
    destination: required,
    percentage: default,
    timeout: default,
    max_in_flight: default,
    compare: default,
});

impl RouteSpec for MirrorRouteConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn match_blocks(&self) -> &[HttpMatchRequest] {
        &self.match_
    }
}

/// One mirror of a rule: where shadow copies go, and how they are bounded
/// and compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorTarget {
    /// Position in `CompiledMirror::targets()`.
    index: usize,
    cluster: String,
    host: String,
    percentage: Percentage,
    timeout_ms: u64,
    max_in_flight: u32,
    compare: Option<CompiledCompare>,
}

impl MirrorTarget {
    /// Position in [`CompiledMirror::targets`], for per-mirror state.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The cluster to `dispatch_http_call` to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The destination host as configured.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The shadow's timeout, in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Shadows to this mirror one worker may have in flight.
    pub fn max_in_flight(&self) -> u32 {
        self.max_in_flight
    }

    pub fn compare(&self) -> Option<&CompiledCompare> {
        self.compare.as_ref()
    }
}

#[derive(Debug)]
pub struct CompiledMirror {
    hosts: VirtualHosts<Vec<MirrorTarget>>,
    max_body_bytes: usize,
    max_pending: u32,
    /// Per target, in index order: (rule's global index, position in the rule).
    target_locations: Vec<(usize, usize)>,
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
        let max_pending = bounded_count(config.max_pending, DEFAULT_MAX_PENDING, &root.field("max_pending"))?;
        let mut target_locations = Vec::new();
        let mut rules = 0;
        let hosts = VirtualHosts::compile(&config.virtual_hosts, &root.field("virtual_hosts"), |route, path| {
            let targets = compile_mirrors(route, path, &template, target_locations.len())?;
            target_locations.extend((0..targets.len()).map(|k| (rules, k)));
            rules += 1;
            Ok(targets)
        })?;
        Ok(CompiledMirror { hosts, max_body_bytes: max_body_bytes as usize, max_pending, target_locations })
    }

    /// Largest request body copied to shadows.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Shadows plus comparisons one worker tracks at once.
    pub fn max_pending(&self) -> u32 {
        self.max_pending
    }

    /// Every mirror of every rule with the rule it belongs to, in
    /// [`MirrorTarget::index`] order.
    pub fn targets(&self) -> impl Iterator<Item = (&RuleId, &MirrorTarget)> + '_ {
        self.target_locations
            .iter()
            .filter_map(|&(rule, k)| Some((self.hosts.rule_ids().get(rule)?, self.hosts.rule(rule)?.action.get(k)?)))
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

/// `first_index`: the index of this rule's first mirror among all targets.
fn compile_mirrors(
    route: &MirrorRouteConfig,
    path: &Path,
    template: &ClusterNameTemplate,
    first_index: usize,
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
            let timeout_path = mirror_path.field("timeout");
            let timeout_ms = match &mirror.timeout {
                Some(text) => millis(&timeout_path, text, false)?,
                None => DEFAULT_SHADOW_TIMEOUT_MS,
            };
            if timeout_ms > MAX_SHADOW_TIMEOUT_MS {
                return Err(timeout_path
                    .error(format!("{timeout_ms} ms is above the limit of {MAX_SHADOW_TIMEOUT_MS} ms (1h)")));
            }
            Ok(MirrorTarget {
                index: first_index + i,
                cluster: template.render(&mirror.destination, &mirror_path.field("destination"))?,
                host: mirror.destination.host.clone(),
                percentage: match mirror.percentage {
                    Some(value) => percentage(value, &mirror_path)?,
                    None => Percentage::new(100.0).map_err(|e| mirror_path.error(e))?,
                },
                timeout_ms,
                max_in_flight: bounded_count(
                    mirror.max_in_flight,
                    DEFAULT_MAX_IN_FLIGHT,
                    &mirror_path.field("max_in_flight"),
                )?,
                compare: match &mirror.compare {
                    Some(compare) => Some(CompiledCompare::compile(compare, &mirror_path.field("compare"))?),
                    None => None,
                },
            })
        })
        .collect()
}

/// A per-worker cap: at least 1 (a mirror that must send nothing has
/// `percentage` 0), at most [`MAX_PENDING_LIMIT`].
fn bounded_count(value: Option<u32>, default: u32, path: &Path) -> Result<u32, Failed> {
    match value {
        None => Ok(default),
        Some(0) => Err(path.error("must be at least 1 (percentage 0 turns a mirror off)")),
        Some(n) if n > MAX_PENDING_LIMIT => Err(path.error(format!("{n} is above the limit of {MAX_PENDING_LIMIT}"))),
        Some(n) => Ok(n),
    }
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
