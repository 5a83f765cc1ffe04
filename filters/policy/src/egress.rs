//! The egress filter's config and decision: may this workload reach a host?
//! (Istio `outboundTrafficPolicy` + `ServiceEntry` hosts.)
//!
//! - `REGISTRY_ONLY`: only listed hosts pass; others are denied (HTTP:
//!   `deny_status`, default 502 like Istio's block-all route; TLS: close).
//! - `ALLOW_ANY`: everything passes; a listed host is reported for stats.
//! - Hosts compare case-insensitively. `*.example.com` matches any name
//!   ending in `.example.com` (several labels deep too) but not
//!   `example.com` itself, as a ServiceEntry wildcard does.
//! - IP literals compare as addresses (`[::1]` = `0:0:0:0:0:0:0:1`).
//! - A host without `ports` allows every port. With `ports`, the request's
//!   port must be listed; an unknown port (TLS without a destination port)
//!   matches only hosts without `ports`.
//! - `dry_run`: decisions that would deny come back as `WouldDeny` so the
//!   filter can log and count them but let the request through.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::{quote, ConfigError, Failed, Path};
use crate::json::{decode, decode_struct, Decode, Decoder};
use crate::virtual_host::{longest_first, strip_port};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum OutboundTrafficPolicy {
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

impl Decode for OutboundTrafficPolicy {
    fn blank() -> Self {
        OutboundTrafficPolicy::RegistryOnly
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        const VARIANTS: &[&str] = &["REGISTRY_ONLY", "ALLOW_ANY"];
        let (index, object) = d.variant(at, VARIANTS, true)?;
        d.end_variant(at, VARIANTS, object)?;
        *self = if index == 0 { OutboundTrafficPolicy::RegistryOnly } else { OutboundTrafficPolicy::AllowAny };
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    pub version: u64,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    #[serde(default)]
    pub hosts: Vec<EgressHostConfig>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_status: Option<u16>,
}

decode_struct!(EgressConfig {
    version: required,
    outbound_traffic_policy: required,
    hosts: default,
    dry_run: default,
    deny_status: default,
});

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EgressHostConfig {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
}

decode_struct!(EgressHostConfig { host: required, ports: default });

pub const DEFAULT_DENY_STATUS: u16 = 502;

#[derive(Debug)]
struct HostEntry {
    /// As configured (lowercased), reported in decisions.
    host: String,
    /// Empty: every port.
    ports: Vec<u16>,
}

impl HostEntry {
    fn allows(&self, port: Option<u16>) -> bool {
        self.ports.is_empty() || port.is_some_and(|p| self.ports.contains(&p))
    }
}

#[derive(Debug)]
pub struct CompiledEgress {
    policy: OutboundTrafficPolicy,
    dry_run: bool,
    deny_status: u16,
    entries: Vec<HostEntry>,
    /// Normalized name or address → entry.
    exact: HashMap<String, usize>,
    /// (".example.com", entry), longest first.
    wildcards: Vec<(String, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressDecision<'a> {
    /// Let the request through. `host` is the matching entry, `None` when
    /// ALLOW_ANY let an unlisted host pass.
    Allow { host: Option<&'a str> },
    /// Refuse: answer `status` (HTTP) or close the connection (TLS).
    Deny { status: u16 },
    /// `dry_run`: would be denied; let it through and record it.
    WouldDeny { status: u16 },
}

impl CompiledEgress {
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_config(&decode::<EgressConfig>(bytes)?)
    }

    pub fn from_config(config: &EgressConfig) -> Result<Self, ConfigError> {
        Self::compile(config).map_err(|e| *e)
    }

    fn compile(config: &EgressConfig) -> Result<Self, Failed> {
        let root = Path::root();
        let deny_status = config.deny_status.unwrap_or(DEFAULT_DENY_STATUS);
        if !(200..=599).contains(&deny_status) {
            return Err(root.field("deny_status").error(format!("deny_status {deny_status} is not within 200..=599")));
        }
        let mut out = CompiledEgress {
            policy: config.outbound_traffic_policy,
            dry_run: config.dry_run,
            deny_status,
            entries: Vec::with_capacity(config.hosts.len()),
            exact: HashMap::new(),
            wildcards: Vec::new(),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, entry) in config.hosts.iter().enumerate() {
            let hosts_path = root.field("hosts");
            let path = hosts_path.index(i);
            let key = normalize_host_entry(&entry.host, &path.field("host"))?;
            if let Some(first) = seen.insert(key.clone(), i) {
                return Err(path
                    .field("host")
                    .error(format!("host {} is already listed in hosts[{first}]", quote(&entry.host))));
            }
            let mut ports = Vec::new();
            if let Some(list) = &entry.ports {
                if list.is_empty() {
                    return Err(path.field("ports").error("ports must not be empty when set (omit it for every port)"));
                }
                for (j, &port) in list.iter().enumerate() {
                    if port == 0 {
                        return Err(path.field("ports").index(j).error("port must be within 1..=65535"));
                    }
                    if ports.contains(&port) {
                        return Err(path.field("ports").index(j).error(format!("port {port} is listed twice")));
                    }
                    ports.push(port);
                }
            }
            let index = out.entries.len();
            out.entries.push(HostEntry { host: entry.host.to_ascii_lowercase(), ports });
            match key.strip_prefix('*') {
                Some(suffix) => out.wildcards.push((suffix.to_string(), index)),
                None => {
                    out.exact.insert(key, index);
                }
            }
        }
        longest_first(&mut out.wildcards);
        Ok(out)
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn deny_status(&self) -> u16 {
        self.deny_status
    }

    /// Decision for an HTTP request's `:authority` (or a CONNECT target).
    /// Without a port in the authority, 80 is assumed.
    pub fn decide_authority(&self, authority: &str) -> EgressDecision<'_> {
        self.decide_authority_with_default_port(authority, 80)
    }

    /// As `decide_authority`, with the port assumed when the authority has
    /// none (443 for a request known to be TLS-originated, say).
    pub fn decide_authority_with_default_port(&self, authority: &str, default_port: u16) -> EgressDecision<'_> {
        let (host, port) = match strip_port(authority) {
            Some(host) => {
                let port = authority.get(host.len() + 1..).and_then(|p| p.parse::<u16>().ok()).filter(|&p| p != 0);
                match port {
                    Some(port) => (host, Some(port)),
                    // Not a valid port: nothing can match it.
                    None => return self.unlisted(),
                }
            }
            None => (authority, Some(default_port)),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        self.decide_host(host, port)
    }

    /// Decision for a TLS connection's SNI; `port` is the destination port
    /// when known. No SNI is unlisted: denied under REGISTRY_ONLY.
    pub fn decide_sni(&self, sni: Option<&str>, port: Option<u16>) -> EgressDecision<'_> {
        match sni {
            Some(name) if !name.is_empty() => self.decide_host(name, port),
            _ => self.unlisted(),
        }
    }

    fn decide_host(&self, host: &str, port: Option<u16>) -> EgressDecision<'_> {
        match self.find(host, port) {
            Some(entry) => EgressDecision::Allow { host: Some(&entry.host) },
            None => self.unlisted(),
        }
    }

    fn unlisted(&self) -> EgressDecision<'_> {
        match (self.policy, self.dry_run) {
            (OutboundTrafficPolicy::AllowAny, _) => EgressDecision::Allow { host: None },
            (OutboundTrafficPolicy::RegistryOnly, false) => EgressDecision::Deny { status: self.deny_status },
            (OutboundTrafficPolicy::RegistryOnly, true) => EgressDecision::WouldDeny { status: self.deny_status },
        }
    }

    fn find(&self, host: &str, port: Option<u16>) -> Option<&HostEntry> {
        let key = normalize_request_host(host);
        if let Some(entry) = self.exact.get(&key).and_then(|&i| self.entries.get(i)) {
            if entry.allows(port) {
                return Some(entry);
            }
        }
        // Wildcards never match IP literals (their keys hold no ':' and a
        // dotted IPv4 cannot end in a DNS suffix with letters... but may with
        // digits, so check explicitly).
        if key.parse::<Ipv4Addr>().is_ok() || key.contains(':') {
            return None;
        }
        self.wildcards
            .iter()
            .filter(|(suffix, _)| key.len() > suffix.len() && key.ends_with(suffix.as_str()))
            .filter_map(|(_, i)| self.entries.get(*i))
            .find(|entry| entry.allows(port))
    }
}

/// A request host as a lookup key: lowercase; IPv6 in canonical form.
fn normalize_request_host(host: &str) -> String {
    if host.contains(':') {
        if let Ok(v6) = host.parse::<Ipv6Addr>() {
            return v6.to_string();
        }
    }
    host.to_ascii_lowercase()
}

/// Validates a configured host: an IPv4 or IPv6 literal, a DNS name of
/// RFC 1123 labels, or `*.` followed by one. Returns its lookup key.
fn normalize_host_entry(raw: &str, path: &Path) -> Result<String, Failed> {
    if let Ok(v4) = raw.parse::<Ipv4Addr>() {
        return Ok(v4.to_string());
    }
    let unbracketed = raw.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(raw);
    if let Ok(v6) = unbracketed.parse::<Ipv6Addr>() {
        return Ok(v6.to_string());
    }
    let lower = raw.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let invalid = |why: &str| path.error(format!("invalid host {}: {why}", quote(raw)));
    if name.is_empty() {
        return Err(invalid("empty name"));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label == "*" {
            return Err(invalid("a wildcard is allowed only as the whole first label (*.example.com)"));
        }
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each label must be 1 to 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("labels hold only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label must not start or end with '-'"));
        }
    }
    Ok(if wildcard { format!("*.{name}") } else { name.to_string() })
}
