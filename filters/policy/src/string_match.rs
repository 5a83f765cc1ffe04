//! Istio `StringMatch` (`exact` / `prefix` / `regex`) compiled once.

use regex_lite::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{quote, ConfigError, Path};

/// `{"exact": s}`, `{"prefix": s}` or `{"regex": s}`; `{}` means "present"
/// (Istio turns an empty match into Envoy's `present_match`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StringMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Bounds regex compilation so a hostile config cannot stall `on_configure`
/// or balloon the VM's memory; far above what routing rules need.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_NEST_LIMIT: u32 = 64;

#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    Present,
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Box<Regex>),
}

impl StringMatcher {
    pub(crate) fn compile(spec: &StringMatch, path: &Path) -> Result<Self, ConfigError> {
        match (&spec.exact, &spec.prefix, &spec.regex) {
            (None, None, None) => Ok(StringMatcher::Present),
            (Some(exact), None, None) => Ok(StringMatcher::Exact(exact.as_str().into())),
            (None, Some(prefix), None) => {
                if prefix.is_empty() {
                    // Envoy's StringMatcher.prefix has min_len 1: Istio would be NACKed.
                    return Err(path
                        .field("prefix")
                        .error("prefix must not be empty (use {} to match any value)"));
                }
                Ok(StringMatcher::Prefix(prefix.as_str().into()))
            }
            // Istio compiles the regex "*" (not valid RE2) to present_match (istio#20629).
            (None, None, Some(regex)) if regex == "*" => Ok(StringMatcher::Present),
            (None, None, Some(regex)) => Ok(StringMatcher::Regex(Box::new(compile_full_match(
                regex,
                &path.field("regex"),
            )?))),
            _ => Err(path.error("set exactly one of exact, prefix, regex (or none for \"present\")")),
        }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StringMatcher::Present => true,
            StringMatcher::Exact(exact) => value == &**exact,
            StringMatcher::Prefix(prefix) => value.starts_with(&**prefix),
            StringMatcher::Regex(regex) => regex.is_match(value),
        }
    }

    pub(crate) fn exact_value(&self) -> Option<&str> {
        match self {
            StringMatcher::Exact(exact) => Some(exact),
            _ => None,
        }
    }
}

/// Compiles an RE2-syntax regex for a full match, as Envoy's `safe_regex`
/// does (`^(?:...)$`). The pattern is first compiled alone so that a pattern
/// like `a)|(b` is refused instead of being silently rebalanced by the
/// wrapper. regex-lite implements RE2's syntax minus Unicode classes
/// (`\pL`) and Unicode-aware `(?i)`; those are refused with its message.
pub(crate) fn compile_full_match(pattern: &str, path: &Path) -> Result<Regex, ConfigError> {
    if pattern.is_empty() {
        // Envoy's RegexMatcher.regex has min_len 1.
        return Err(path.error("regex must not be empty"));
    }
    let build = |p: &str| {
        RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
    };
    let invalid = |e: regex_lite::Error| {
        let reason = e.to_string().replace('\n', " ");
        path.error(format!("invalid regex {}: {}", quote(pattern), reason.trim()))
    };
    build(pattern).map_err(invalid)?;
    build(&format!("^(?:{pattern})$")).map_err(invalid)
}
