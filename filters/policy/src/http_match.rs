//! Istio `HTTPMatchRequest`, compiled to what Istio would hand Envoy and
//! evaluated with Envoy's semantics.
//!
//! - `uri`: exact and regex see the path without query string (and
//!   fragment), prefix sees the whole `:path`, as Envoy's route matchers do;
//!   `ignore_uri_case` makes exact/prefix ASCII case-insensitive, not regex.
//! - `method`, `authority`, `scheme`: header matchers on `:method`,
//!   `:authority`, `:scheme`.
//! - `headers`: a missing header never matches (not even `exact: ""`).
//! - `without_headers`: Istio sets `invert_match` and, unless the match is
//!   "present", `treat_missing_header_as_empty`; so a missing header is
//!   matched as "" and the result inverted (`{exact: "x"}` → matches,
//!   `{regex: ".*"}` → does not), and `{}` means "header absent".
//! - `query_params`: Envoy's route matcher reads the raw query string
//!   without percent-decoding, and the first value of a repeated key.
//! - `port`: compared with the port given by `Request::with_port`.

use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::json::{decode_struct, KeyedList};
use crate::request::{HeaderSource, Request};
use crate::string_match::{compile_full_match, FullMatchRegex, StringMatch, StringMatcher};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpMatchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "KeyedList::is_empty")]
    pub headers: KeyedList<StringMatch>,
    #[serde(default, skip_serializing_if = "KeyedList::is_empty")]
    pub without_headers: KeyedList<StringMatch>,
    #[serde(default, skip_serializing_if = "KeyedList::is_empty")]
    pub query_params: KeyedList<StringMatch>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

decode_struct!(HttpMatchRequest {
    name: default,
    uri: default,
    scheme: default,
    method: default,
    authority: default,
    headers: default,
    without_headers: default,
    query_params: default,
    ignore_uri_case: default,
    port: default,
});

impl HttpMatchRequest {
    /// Every regex pattern in the block.
    pub(crate) fn regexes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for m in [&self.uri, &self.scheme, &self.method, &self.authority] {
            if let Some(StringMatch { regex: Some(regex), .. }) = m {
                out.push(regex.as_str());
            }
        }
        for list in [&self.headers, &self.without_headers, &self.query_params] {
            for (_, m) in &list.0 {
                if let Some(regex) = &m.regex {
                    out.push(regex.as_str());
                }
            }
        }
        out
    }
}

/// How the `uri` condition matched, which decides what a `rewrite.uri`
/// replaces (Envoy's `prefix_rewrite` semantics).
#[derive(Debug, Clone)]
pub(crate) enum UriMatcher {
    /// No `uri`: Istio emits `prefix: "/"`.
    Any,
    Exact {
        path: Box<str>,
        ignore_case: bool,
    },
    Prefix {
        prefix: Box<str>,
        ignore_case: bool,
    },
    Regex(Box<FullMatchRegex>),
}

#[derive(Debug, Clone)]
pub(crate) enum HeaderCondition {
    Must(StringMatcher),
    MustNot(StringMatcher),
}

#[derive(Debug, Clone)]
pub(crate) struct HeaderRule {
    pub(crate) name: Box<str>,
    pub(crate) condition: HeaderCondition,
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledMatch {
    pub(crate) name: Option<Box<str>>,
    pub(crate) uri: UriMatcher,
    pub(crate) headers: Vec<HeaderRule>,
    pub(crate) query: Vec<(Box<str>, StringMatcher)>,
    pub(crate) port: Option<u16>,
}

impl CompiledMatch {
    pub(crate) fn compile(spec: &HttpMatchRequest, path: &Path) -> Result<Self, Failed> {
        let uri = match &spec.uri {
            None => UriMatcher::Any,
            Some(uri) => compile_uri(uri, spec.ignore_uri_case, &path.field("uri"))?,
        };
        let mut headers = Vec::new();
        for (field, name, spec) in [
            ("method", ":method", &spec.method),
            ("authority", ":authority", &spec.authority),
            ("scheme", ":scheme", &spec.scheme),
        ] {
            if let Some(m) = spec {
                headers.push(HeaderRule {
                    name: name.into(),
                    condition: HeaderCondition::Must(StringMatcher::compile(m, &path.field(field))?),
                });
            }
        }
        let mut seen: Vec<String> = Vec::new();
        for (field, negate, list) in
            [("headers", false, &spec.headers), ("without_headers", true, &spec.without_headers)]
        {
            for (raw_name, m) in list.iter() {
                let field_path = path.field(field);
                let key_path = field_path.key(raw_name);
                let name = header_name(raw_name, &key_path)?;
                if seen.contains(&name) {
                    return Err(key_path.error(format!(
                        "header {} is matched twice in this block (names are case-insensitive)",
                        quote(&name)
                    )));
                }
                let matcher = StringMatcher::compile(m, &key_path)?;
                seen.push(name.clone());
                headers.push(HeaderRule {
                    name: name.into(),
                    condition: if negate { HeaderCondition::MustNot(matcher) } else { HeaderCondition::Must(matcher) },
                });
            }
        }
        let mut query = Vec::new();
        for (name, m) in spec.query_params.iter() {
            let query_path = path.field("query_params");
            let key_path = query_path.key(name);
            if name.is_empty() {
                return Err(key_path.error("query parameter name must not be empty"));
            }
            query.push((name.into(), StringMatcher::compile(m, &key_path)?));
        }
        if spec.port == Some(0) {
            return Err(path.field("port").error("port must be within 1..=65535"));
        }
        if let Some(name) = &spec.name {
            if name.is_empty() {
                return Err(path.field("name").error("name must not be empty when set"));
            }
        }
        Ok(CompiledMatch { name: spec.name.as_deref().map(Box::from), uri, headers, query, port: spec.port })
    }

    /// The header and value when the block is exactly one `exact` header
    /// match, the shape the exact-header index serves.
    pub(crate) fn single_exact_header(&self) -> Option<(&str, &str)> {
        if !matches!(self.uri, UriMatcher::Any) || !self.query.is_empty() || self.port.is_some() {
            return None;
        }
        match self.headers.as_slice() {
            [HeaderRule { name, condition: HeaderCondition::Must(m) }] => m.exact_value().map(|v| (&**name, v)),
            _ => None,
        }
    }

    pub(crate) fn matches<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>) -> bool {
        if let Some(port) = self.port {
            if req.port() != Some(port) {
                return false;
            }
        }
        if !self.uri_matches(req) {
            return false;
        }
        for rule in &self.headers {
            let value = req.header(&rule.name);
            let ok = match (&rule.condition, value) {
                (HeaderCondition::Must(m), Some(v)) => m.matches(v),
                (HeaderCondition::Must(_), None) => false,
                (HeaderCondition::MustNot(StringMatcher::Present), v) => v.is_none(),
                (HeaderCondition::MustNot(m), v) => !m.matches(v.unwrap_or("")),
            };
            if !ok {
                return false;
            }
        }
        if !self.query.is_empty() {
            let Some(full_path) = req.header(":path") else {
                return false;
            };
            let query = query_string(full_path);
            for (name, m) in &self.query {
                match first_query_value(query, name) {
                    Some(value) if m.matches(value) => {}
                    _ => return false,
                }
            }
        }
        true
    }

    fn uri_matches<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>) -> bool {
        if matches!(self.uri, UriMatcher::Any) {
            return true;
        }
        let Some(full_path) = req.header(":path") else {
            return false;
        };
        match &self.uri {
            UriMatcher::Any => true,
            UriMatcher::Exact { path, ignore_case } => {
                let p = path_only(full_path);
                if *ignore_case {
                    p.eq_ignore_ascii_case(path)
                } else {
                    p == &**path
                }
            }
            UriMatcher::Prefix { prefix, ignore_case } => {
                if *ignore_case {
                    full_path
                        .as_bytes()
                        .get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
                } else {
                    full_path.starts_with(&**prefix)
                }
            }
            UriMatcher::Regex(regex) => regex.is_match(path_only(full_path)),
        }
    }
}

fn compile_uri(spec: &StringMatch, ignore_case: bool, path: &Path) -> Result<UriMatcher, Failed> {
    match (&spec.exact, &spec.prefix, &spec.regex) {
        // `{}` leaves Istio's default `prefix: "/"`.
        (None, None, None) => Ok(UriMatcher::Any),
        (Some(exact), None, None) => Ok(UriMatcher::Exact { path: exact.as_str().into(), ignore_case }),
        (None, Some(prefix), None) => Ok(UriMatcher::Prefix { prefix: prefix.as_str().into(), ignore_case }),
        (None, None, Some(regex)) => Ok(UriMatcher::Regex(Box::new(compile_full_match(regex, &path.field("regex"))?))),
        _ => Err(path.error("set exactly one of exact, prefix, regex")),
    }
}

/// Lowercases and checks a header name (an HTTP token, or a pseudo-header).
pub(crate) fn header_name(raw: &str, path: &Path) -> Result<String, Failed> {
    let body = raw.strip_prefix(':').unwrap_or(raw);
    let valid = !body.is_empty() && body.bytes().all(is_token_byte);
    if !valid {
        return Err(path.error(format!("invalid header name {}", quote(raw))));
    }
    Ok(raw.to_ascii_lowercase())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `:path` without query string and fragment.
pub(crate) fn path_only(full_path: &str) -> &str {
    match full_path.find(['?', '#']) {
        Some(end) => full_path.get(..end).unwrap_or(full_path),
        None => full_path,
    }
}

fn query_string(full_path: &str) -> &str {
    match full_path.find('?') {
        Some(start) => full_path.get(start + 1..).unwrap_or(""),
        None => "",
    }
}

/// Envoy's `QueryParamsMulti::parseQueryString` + `getFirstValue`: split on
/// `&`, key up to the first `=`, no `=` means an empty value, no decoding.
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter(|p| !p.is_empty()).find_map(|param| {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        (key == name).then_some(value)
    })
}
