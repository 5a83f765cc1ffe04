//! Cluster names from a template, rendered once per destination at
//! configure time (Istio's `outbound|<port>|<subset>|<fqdn>` by default).

use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::json::decode_struct;

pub const DEFAULT_CLUSTER_NAME_TEMPLATE: &str = "outbound|{port}|{subset}|{host}";

/// Istio's `Destination`: a service host, an optional subset (from a
/// DestinationRule) and an optional port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

decode_struct!(Destination { host: required, subset: default, port: default });

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Host,
    Port,
    Subset,
}

#[derive(Debug, Clone)]
pub(crate) struct ClusterNameTemplate {
    text: String,
    parts: Vec<Part>,
}

impl ClusterNameTemplate {
    pub(crate) fn parse(template: Option<&str>, path: &Path) -> Result<Self, Failed> {
        let text = template.unwrap_or(DEFAULT_CLUSTER_NAME_TEMPLATE);
        if text.is_empty() {
            return Err(path.error("cluster_name_template must not be empty"));
        }
        if !is_header_value(text) {
            return Err(path.error("cluster_name_template must not contain control characters"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
                Some(at) if rest[at..].starts_with('}') => {
                    return Err(path.error(format!("unbalanced '}}' in cluster_name_template {}", quote(text))));
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(Part::Literal(rest[..at].to_string()));
                    }
                    let after = &rest[at + 1..];
                    let Some(close) = after.find('}') else {
                        return Err(path.error(format!("unclosed '{{' in cluster_name_template {}", quote(text))));
                    };
                    parts.push(match &after[..close] {
                        "host" => Part::Host,
                        "port" => Part::Port,
                        "subset" => Part::Subset,
                        other => {
                            return Err(path.error(format!(
                                "unknown placeholder {{{other}}} in cluster_name_template (known: {{host}}, {{port}}, {{subset}})"
                            )))
                        }
                    });
                    rest = &after[close + 1..];
                }
            }
        }
        Ok(ClusterNameTemplate { text: text.to_string(), parts })
    }

    /// Validates the destination and renders its cluster name.
    pub(crate) fn render(&self, destination: &Destination, path: &Path) -> Result<String, Failed> {
        validate_destination(destination, path)?;
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Host => out.push_str(&destination.host),
                Part::Subset => out.push_str(destination.subset.as_deref().unwrap_or("")),
                Part::Port => match destination.port {
                    Some(port) => out.push_str(&port.to_string()),
                    None => {
                        return Err(path.field("port").error(format!(
                            "cluster_name_template {} uses {{port}} but destination {} has no port",
                            quote(&self.text),
                            quote(&destination.host)
                        )))
                    }
                },
            }
        }
        Ok(out)
    }
}

fn validate_destination(destination: &Destination, path: &Path) -> Result<(), Failed> {
    let name_like = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'))
    };
    if !name_like(&destination.host) {
        return Err(path.field("host").error(format!("invalid destination host {}", quote(&destination.host))));
    }
    if let Some(subset) = &destination.subset {
        if !name_like(subset) {
            return Err(path.field("subset").error(format!("invalid subset {}", quote(subset))));
        }
    }
    if destination.port == Some(0) {
        return Err(path.field("port").error("port must be within 1..=65535"));
    }
    Ok(())
}

/// A value Envoy accepts in a header (no CR, LF, NUL or other controls
/// except tab).
pub(crate) fn is_header_value(text: &str) -> bool {
    text.bytes().all(|b| b == b'\t' || !b.is_ascii_control())
}
