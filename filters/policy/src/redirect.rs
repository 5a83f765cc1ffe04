//! Answers the routing filter gives itself instead of forwarding: redirects
//! (Envoy's `RedirectAction` as Istio emits it for `HTTPRedirect`, and the
//! `require_tls` answer of a Gateway server with `tls.httpsRedirect`) and
//! direct responses (`DirectResponseAction`, Istio's `directResponse`).

use serde::{Deserialize, Serialize};

use crate::cluster_name::is_header_value;
use crate::error::{quote, Failed, Path};
use crate::json::decode_struct;
use crate::rewrite::{PathRewrite, UriRewrite};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Istio's `derivePort: FROM_REQUEST_PORT`: the port of the request
    /// (Istio's port, as `match.port` sees it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_from_request: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u16>,
    /// Envoy's `require_tls` answer (Istio's Gateway `tls.httpsRedirect`):
    /// 301 to `https://<authority as sent><path>`. Nothing else may be set;
    /// the route's match decides which requests get it (xds-ext matches
    /// `x-forwarded-proto` not `https`, Envoy's own test).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
}

decode_struct!(RedirectConfig {
    uri: default,
    prefix_rewrite: default,
    authority: default,
    scheme: default,
    port: default,
    port_from_request: default,
    redirect_code: default,
    https_redirect: default,
});

/// A fixed answer: `status` (200–599) and an optional body (Envoy adds
/// `content-type: text/plain` when there is one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

decode_struct!(DirectResponseConfig { status: required, body: default });

/// Direct response bodies above this are refused: a local reply stays
/// small (the whole config is limited to 4 MiB anyway).
pub const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PortRedirect {
    Keep,
    /// `:port`, rendered at configure time.
    Fixed(Box<str>),
    FromRequest,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathRedirect {
    Keep,
    /// Replaces the whole path; without `?` the request's query is kept.
    Replace(Box<str>),
    Rewrite(PathRewrite),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// Envoy's `require_tls`: `https://` + authority + path, unchanged.
    Https,
    To {
        status: u16,
        scheme: Option<Box<str>>,
        authority: Option<Box<str>>,
        port: PortRedirect,
        path: PathRedirect,
    },
}

impl Redirect {
    pub(crate) fn compile(config: &RedirectConfig, path: &Path) -> Result<Self, Failed> {
        if config.https_redirect {
            let others = [
                ("uri", config.uri.is_some()),
                ("prefix_rewrite", config.prefix_rewrite.is_some()),
                ("authority", config.authority.is_some()),
                ("scheme", config.scheme.is_some()),
                ("port", config.port.is_some()),
                ("port_from_request", config.port_from_request),
                ("redirect_code", config.redirect_code.is_some()),
            ];
            if let Some((field, _)) = others.iter().find(|(_, set)| *set) {
                return Err(path.field(field).error(format!("{field} cannot be combined with https_redirect")));
            }
            return Ok(Redirect::Https);
        }
        let status = config.redirect_code.unwrap_or(301);
        if ![301, 302, 303, 307, 308].contains(&status) {
            return Err(path
                .field("redirect_code")
                .error(format!("redirect_code {status} is not one of 301, 302, 303, 307, 308")));
        }
        let redirect_path = match (&config.uri, &config.prefix_rewrite) {
            (Some(_), Some(_)) => return Err(path.error("set uri or prefix_rewrite, not both")),
            (Some(uri), None) => {
                if !uri.starts_with('/') || !is_header_value(uri) {
                    return Err(path
                        .field("uri")
                        .error(format!("redirect uri {} must be a path starting with /", quote(uri))));
                }
                PathRedirect::Replace(uri.as_str().into())
            }
            (None, Some(prefix)) => {
                if !is_header_value(prefix) {
                    return Err(path
                        .field("prefix_rewrite")
                        .error(format!("invalid prefix_rewrite {}", quote(prefix))));
                }
                PathRedirect::Rewrite(PathRewrite::Prefix(prefix.as_str().into()))
            }
            (None, None) => PathRedirect::Keep,
        };
        if let Some(authority) = &config.authority {
            validate_authority(authority, &path.field("authority"))?;
        }
        if let Some(scheme) = &config.scheme {
            let valid = scheme.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
            if !valid {
                return Err(path.field("scheme").error(format!("invalid scheme {}", quote(scheme))));
            }
        }
        let port = match (config.port, config.port_from_request) {
            (Some(_), true) => return Err(path.error("set port or port_from_request, not both")),
            (Some(0), false) => return Err(path.field("port").error("port must be within 1..=65535")),
            (Some(port), false) => PortRedirect::Fixed(format!(":{port}").into()),
            (None, true) => PortRedirect::FromRequest,
            (None, false) => PortRedirect::Keep,
        };
        Ok(Redirect::To {
            status,
            scheme: config.scheme.as_ref().map(|s| s.to_ascii_lowercase().into()),
            authority: config.authority.as_deref().map(Box::from),
            port,
            path: redirect_path,
        })
    }

    pub(crate) fn status(&self) -> u16 {
        match self {
            Redirect::Https => 301,
            Redirect::To { status, .. } => *status,
        }
    }

    pub(crate) fn wants_request_port(&self) -> bool {
        matches!(self, Redirect::To { port: PortRedirect::FromRequest, .. })
    }
}

/// What a redirect needs of the request, besides its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RedirectRequest {
    /// Istio's port, for `port_from_request` (`None`: unknown, no port).
    pub(crate) port: Option<u16>,
    /// How much of `:path` the matched `uri.prefix` covers, for `prefix_rewrite`.
    pub(crate) prefix_len: Option<usize>,
}

/// The request's side of the `location` Envoy computes (`Utility::newUri`).
pub struct RedirectTarget<'h> {
    /// `:scheme` (Envoy keeps it unless the redirect sets one).
    pub scheme: &'h str,
    /// `x-forwarded-proto`: decides whether a default port is dropped.
    pub forwarded_proto: &'h str,
    pub authority: &'h str,
    /// `:path` with its query string.
    pub path: &'h str,
}

pub(crate) fn location(redirect: &Redirect, request: RedirectRequest, target: &RedirectTarget<'_>) -> String {
    let (scheme, authority, port, path) = match redirect {
        Redirect::Https => return format!("https://{}{}", target.authority, target.path),
        Redirect::To { scheme, authority, port, path, .. } => (scheme, authority, port, path),
    };
    let scheme = scheme.as_deref().unwrap_or(target.scheme);
    let from_request;
    let port: &str = match port {
        PortRedirect::Keep => "",
        PortRedirect::Fixed(port) => port,
        PortRedirect::FromRequest => match request.port {
            Some(p) => {
                from_request = format!(":{p}");
                &from_request
            }
            None => "",
        },
    };
    let host = match authority {
        Some(authority) => authority,
        None => request_host(target.authority, target.forwarded_proto, scheme, !port.is_empty()),
    };
    let new_path = match path {
        PathRedirect::Keep => target.path.to_string(),
        PathRedirect::Replace(new) if new.contains('?') => new.to_string(),
        PathRedirect::Replace(new) => {
            let query = target.path.find('?').and_then(|at| target.path.get(at..)).unwrap_or("");
            format!("{new}{query}")
        }
        PathRedirect::Rewrite(rewrite) => UriRewrite::new(rewrite, request.prefix_len).apply(target.path),
    };
    let slash = if new_path.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}{port}{slash}{new_path}")
}

/// Envoy's `processRequestHost`: the request's authority without its port
/// when the redirect sets a port, or when the scheme changes and the port is
/// the default of the request's protocol (`x-forwarded-proto`).
fn request_host<'a>(authority: &'a str, forwarded_proto: &str, new_scheme: &str, new_port: bool) -> &'a str {
    let host_end =
        if authority.starts_with('[') { authority.rfind("]:").map(|at| at + 1) } else { authority.rfind(':') };
    let Some(host_end) = host_end else { return authority };
    let request_port = authority.get(host_end..).unwrap_or("");
    let mut remove = new_port;
    if new_scheme != forwarded_proto {
        remove |= forwarded_proto.eq_ignore_ascii_case("https") && request_port == ":443";
        remove |= forwarded_proto.eq_ignore_ascii_case("http") && request_port == ":80";
    }
    if remove {
        authority.get(..host_end).unwrap_or(authority)
    } else {
        authority
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DirectResponse {
    pub(crate) status: u16,
    pub(crate) body: Option<Box<str>>,
}

impl DirectResponse {
    pub(crate) fn compile(config: &DirectResponseConfig, path: &Path) -> Result<Self, Failed> {
        if !(200..=599).contains(&config.status) {
            return Err(path.field("status").error(format!("status {} is not within 200..=599", config.status)));
        }
        if let Some(body) = &config.body {
            if body.len() > MAX_DIRECT_RESPONSE_BODY {
                return Err(path
                    .field("body")
                    .error(format!("body is {} bytes, over the {MAX_DIRECT_RESPONSE_BODY}-byte limit", body.len())));
            }
        }
        Ok(DirectResponse { status: config.status, body: config.body.as_deref().map(Box::from) })
    }
}

pub(crate) fn validate_authority(authority: &str, path: &Path) -> Result<(), Failed> {
    let valid = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:[]!$&'()*+,;=%".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(path.error(format!("invalid authority {}", quote(authority))))
    }
}
