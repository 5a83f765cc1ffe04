//! The fault filter's config and decision: delay and/or abort a share of
//! matching requests (Istio `HTTPFaultInjection`).
//!
//! `percentage` is required: with neither `percentage` nor the deprecated
//! `percent`, Istio translates a fault to 0 % (nothing is injected), a
//! common surprise; xds-ext writes the share it means explicitly. When both
//! delay and abort are drawn, delay first, then abort (Envoy's fault filter
//! order). The two draws are independent.

use serde::{Deserialize, Serialize};

use crate::duration::millis;
use crate::error::{ConfigError, Failed, Path};
use crate::http_match::HttpMatchRequest;
use crate::json::{decode, decode_struct};
use crate::request::{HeaderSource, Request};
use crate::virtual_host::{Lookup, RouteSpec, RuleId, VirtualHostConfig, VirtualHosts};
use crate::weighted::{mix64, Percentage};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    pub version: u64,
    /// Envoy's `max_active_faults`: beyond this many requests being faulted
    /// at once, new faults are skipped (and counted as overflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_faults: Option<u32>,
    pub virtual_hosts: Vec<VirtualHostConfig<FaultRouteConfig>>,
}

decode_struct!(FaultConfig { version: required, max_active_faults: default, virtual_hosts: required });

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRouteConfig {
    pub name: String,
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<HttpMatchRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortConfig>,
}

decode_struct!(FaultRouteConfig { name: required, match_ = "match": default, delay: default, abort: default });

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    pub fixed_delay: String,
    pub percentage: f64,
}

decode_struct!(DelayConfig { fixed_delay: required, percentage: required });

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AbortConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    pub percentage: f64,
}

decode_struct!(AbortConfig { http_status: default, grpc_status: default, percentage: required });

impl RouteSpec for FaultRouteConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn match_blocks(&self) -> &[HttpMatchRequest] {
        &self.match_
    }
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// An HTTP response with this status.
    Http(u16),
    /// A gRPC error: HTTP 200 with `grpc-status` set to this code (what
    /// Envoy's fault filter sends for `grpc_status`).
    Grpc(u32),
}

#[derive(Debug)]
struct FaultRule {
    delay: Option<(u64, Percentage)>,
    abort: Option<(Abort, Percentage)>,
}

#[derive(Debug)]
pub struct CompiledFault {
    max_active_faults: Option<u32>,
    hosts: VirtualHosts<FaultRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultDecision<'a> {
    Unmanaged,
    NoRoute {
        virtual_host: &'a str,
    },
    /// A rule matched; `delay_ms` / `abort` are set when their draw hit
    /// (both `None`: the request passes this time).
    Fault(FaultAction<'a>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultAction<'a> {
    pub virtual_host: &'a str,
    pub rule: &'a str,
    /// Index into `CompiledFault::rule_names()`.
    pub rule_index: usize,
    pub delay_ms: Option<u64>,
    pub abort: Option<Abort>,
}

impl FaultAction<'_> {
    /// True when the draw selected neither delay nor abort.
    pub fn is_noop(&self) -> bool {
        self.delay_ms.is_none() && self.abort.is_none()
    }
}

impl CompiledFault {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_config(&decode::<FaultConfig>(bytes)?)
    }

    pub fn from_config(config: &FaultConfig) -> Result<Self, ConfigError> {
        Self::compile(config).map_err(|e| *e)
    }

    fn compile(config: &FaultConfig) -> Result<Self, Failed> {
        let hosts = VirtualHosts::compile(&config.virtual_hosts, &Path::root().field("virtual_hosts"), compile_rule)?;
        Ok(CompiledFault { max_active_faults: config.max_active_faults, hosts })
    }

    pub fn max_active_faults(&self) -> Option<u32> {
        self.max_active_faults
    }

    pub fn rule_names(&self) -> &[RuleId] {
        self.hosts.rule_ids()
    }

    /// `random`: one uniformly random `u64` per request.
    pub fn decide<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>, random: u64) -> FaultDecision<'_> {
        match self.hosts.lookup(req) {
            Lookup::Unmanaged => FaultDecision::Unmanaged,
            Lookup::NoRoute { virtual_host } => FaultDecision::NoRoute { virtual_host },
            Lookup::Matched { virtual_host, hit } => {
                let rule = &hit.rule.action;
                FaultDecision::Fault(FaultAction {
                    virtual_host,
                    rule: &hit.rule.name,
                    rule_index: hit.rule.global_index,
                    delay_ms: rule.delay.and_then(|(ms, p)| p.hit(random).then_some(ms)),
                    abort: rule.abort.and_then(|(abort, p)| p.hit(mix64(random)).then_some(abort)),
                })
            }
        }
    }
}

fn compile_rule(route: &FaultRouteConfig, path: &Path) -> Result<FaultRule, Failed> {
    if route.delay.is_none() && route.abort.is_none() {
        return Err(path.error("a fault rule needs delay, abort or both"));
    }
    let delay = match &route.delay {
        None => None,
        Some(delay) => {
            let delay_path = path.field("delay");
            let ms = millis(&delay_path.field("fixed_delay"), &delay.fixed_delay, false)?;
            Some((ms, percentage(delay.percentage, &delay_path)?))
        }
    };
    let abort = match &route.abort {
        None => None,
        Some(abort) => {
            let abort_path = path.field("abort");
            let kind = match (abort.http_status, abort.grpc_status) {
                (Some(status), None) => {
                    if !(200..=599).contains(&status) {
                        return Err(abort_path
                            .field("http_status")
                            .error(format!("http_status {status} is not within 200..=599")));
                    }
                    Abort::Http(status as u16)
                }
                (None, Some(code)) => {
                    if code > 16 {
                        return Err(abort_path
                            .field("grpc_status")
                            .error(format!("grpc_status {code} is not a gRPC status code (0..=16)")));
                    }
                    Abort::Grpc(code)
                }
                _ => return Err(abort_path.error("set exactly one of http_status, grpc_status")),
            };
            Some((kind, percentage(abort.percentage, &abort_path)?))
        }
    };
    Ok(FaultRule { delay, abort })
}

pub(crate) fn percentage(value: f64, path: &Path) -> Result<Percentage, Failed> {
    Percentage::new(value).map_err(|e| path.field("percentage").error(e))
}

/// gRPC status codes by their canonical names (`"UNAVAILABLE"` → 14), for
/// Istio's `grpcStatus`, which is a name.
pub fn grpc_status_from_name(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.iter().position(|n| *n == name).map(|i| i as u32)
}
