//! Path rewrites as Envoy performs them for the routes Istio generates:
//! `prefix_rewrite` (Istio `rewrite.uri`, and `redirect.prefixRewrite`) and
//! `regex_rewrite` (Istio `rewrite.uriRegexRewrite`).

use regex_lite::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::http_match::path_only;
use crate::json::decode_struct;
use crate::string_match::compile_search;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex: Option<RegexRewriteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

decode_struct!(RewriteConfig { uri: default, uri_regex: default, authority: default });

/// Envoy's `regex_rewrite`: every match of `pattern` in the path (without
/// the query string) is replaced by `substitution`, where `\1`…`\9` insert
/// capture groups, `\0` the whole match and `\\` a backslash (RE2's
/// `GlobalReplace`). The query string is kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegexRewriteConfig {
    pub pattern: String,
    pub substitution: String,
}

decode_struct!(RegexRewriteConfig { pattern: required, substitution: required });

/// A compiled path rewrite.
#[derive(Debug)]
pub(crate) enum PathRewrite {
    /// Replaces the matched prefix (see [`UriRewrite`]).
    Prefix(Box<str>),
    Regex(Box<RegexRewrite>),
}

#[derive(Debug)]
pub(crate) struct RegexRewrite {
    regex: Regex,
    pieces: Vec<Piece>,
}

#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Literal(Box<str>),
    Group(usize),
}

impl PartialEq for PathRewrite {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathRewrite::Prefix(a), PathRewrite::Prefix(b)) => a == b,
            (PathRewrite::Regex(a), PathRewrite::Regex(b)) => {
                a.regex.as_str() == b.regex.as_str() && a.pieces == b.pieces
            }
            _ => false,
        }
    }
}

impl Eq for PathRewrite {}

impl RegexRewrite {
    pub(crate) fn compile(config: &RegexRewriteConfig, path: &Path) -> Result<Self, Failed> {
        let regex = compile_search(&config.pattern, &path.field("pattern"))?;
        let groups = regex.captures_len();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = config.substitution.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                literal.push(c);
                continue;
            }
            match chars.next() {
                Some('\\') => literal.push('\\'),
                Some(d) if d.is_ascii_digit() => {
                    let group = usize::from(d as u8 - b'0');
                    if group >= groups {
                        return Err(path.field("substitution").error(format!(
                            "substitution {} refers to group \\{group}, but the pattern has {} group(s)",
                            quote(&config.substitution),
                            groups - 1
                        )));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(Piece::Group(group));
                }
                _ => {
                    return Err(path.field("substitution").error(format!(
                        "invalid substitution {}: a backslash must be followed by a digit or another backslash (RE2)",
                        quote(&config.substitution)
                    )))
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal.into()));
        }
        Ok(RegexRewrite { regex, pieces })
    }

    fn apply(&self, full_path: &str) -> String {
        let path = path_only(full_path);
        let rest = full_path.get(path.len()..).unwrap_or("");
        let mut out = String::with_capacity(full_path.len() + 16);
        let mut last = 0;
        for captures in self.regex.captures_iter(path) {
            let Some(whole) = captures.get(0) else { continue };
            out.push_str(path.get(last..whole.start()).unwrap_or(""));
            for piece in &self.pieces {
                match piece {
                    Piece::Literal(text) => out.push_str(text),
                    Piece::Group(group) => out.push_str(captures.get(*group).map_or("", |m| m.as_str())),
                }
            }
            last = whole.end();
        }
        out.push_str(path.get(last..).unwrap_or(""));
        out.push_str(rest);
        out
    }
}

/// A path rewrite decided for one request. For a prefix rewrite (Envoy's
/// `prefix_rewrite`, what Istio emits for `rewrite.uri`): replaces the
/// matched prefix, or the whole path (keeping the query string) when the
/// block matched the uri exactly or by regex; a block without `uri` is
/// Istio's `prefix: "/"`, so only the leading `/` is replaced. For a regex
/// rewrite: see [`RegexRewriteConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriRewrite<'a> {
    rewrite: &'a PathRewrite,
    /// Bytes of `:path` a prefix rewrite replaces; `None`: the whole path
    /// before `?`/`#`.
    prefix_len: Option<usize>,
}

impl<'a> UriRewrite<'a> {
    pub(crate) fn new(rewrite: &'a PathRewrite, prefix_len: Option<usize>) -> Self {
        UriRewrite { rewrite, prefix_len }
    }

    /// The new `:path` for the request's current `:path`.
    pub fn apply(&self, full_path: &str) -> String {
        let replacement = match self.rewrite {
            PathRewrite::Regex(regex) => return regex.apply(full_path),
            PathRewrite::Prefix(replacement) => replacement,
        };
        let rest = match self.prefix_len {
            Some(len) => full_path.get(len..).unwrap_or(""),
            None => full_path.get(path_only(full_path).len()..).unwrap_or(""),
        };
        let mut out = String::with_capacity(replacement.len() + rest.len());
        out.push_str(replacement);
        out.push_str(rest);
        out
    }
}
