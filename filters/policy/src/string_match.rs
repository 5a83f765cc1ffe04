//! Istio `StringMatch` (`exact` / `prefix` / `regex`) compiled once.

use regex_lite::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::json::decode_struct;

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

decode_struct!(StringMatch { exact: default, prefix: default, regex: default });

/// Bounds on regex compilation, so a hostile or careless config cannot stall
/// `on_configure` or balloon the VM's memory. Envoy itself refuses RE2
/// programs above 100 instructions by default (`re2.max_program_size.error_level`),
/// so real Istio regexes sit far below these.
const REGEX_SIZE_LIMIT: usize = 256 << 10;
const REGEX_NEST_LIMIT: u32 = 64;
/// Per regex, in estimated program instructions (see `program_size_estimate`).
pub const MAX_REGEX_PROGRAM_SIZE: usize = 1_000;
/// Per config, summed over all regexes: compiling this much takes well under
/// a second even in a wasm VM.
pub const MAX_TOTAL_REGEX_PROGRAM_SIZE: usize = 500_000;

#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    Present,
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Box<FullMatchRegex>),
}

impl StringMatcher {
    pub(crate) fn compile(spec: &StringMatch, path: &Path) -> Result<Self, Failed> {
        match (&spec.exact, &spec.prefix, &spec.regex) {
            (None, None, None) => Ok(StringMatcher::Present),
            (Some(exact), None, None) => Ok(StringMatcher::Exact(exact.as_str().into())),
            (None, Some(prefix), None) => {
                if prefix.is_empty() {
                    // Envoy's StringMatcher.prefix has min_len 1: Istio would be NACKed.
                    return Err(path.field("prefix").error("prefix must not be empty (use {} to match any value)"));
                }
                Ok(StringMatcher::Prefix(prefix.as_str().into()))
            }
            // Istio compiles the regex "*" (not valid RE2) to present_match (istio#20629).
            (None, None, Some(regex)) if regex == "*" => Ok(StringMatcher::Present),
            (None, None, Some(regex)) => {
                Ok(StringMatcher::Regex(Box::new(compile_full_match(regex, &path.field("regex"))?)))
            }
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
pub(crate) fn compile_full_match(pattern: &str, path: &Path) -> Result<FullMatchRegex, Failed> {
    compile_search(pattern, path)?;
    let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| invalid_regex(pattern, &e, path))?;
    Ok(FullMatchRegex { regex, literal_prefix: literal_prefix(pattern).into() })
}

/// Compiles an RE2-syntax regex that finds matches anywhere (Envoy's
/// `regex_rewrite`), under the same limits as a matcher's regex.
pub(crate) fn compile_search(pattern: &str, path: &Path) -> Result<Regex, Failed> {
    if pattern.is_empty() {
        return Err(path.error("regex must not be empty"));
    }
    let size = program_size_estimate(pattern);
    if size > MAX_REGEX_PROGRAM_SIZE {
        return Err(path.error(format!(
            "regex {} is too complex (about {size} instructions, limit {MAX_REGEX_PROGRAM_SIZE}; Envoy's own limit is 100)",
            quote(pattern)
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| invalid_regex(pattern, &e, path))
}

fn invalid_regex(pattern: &str, error: &regex_lite::Error, path: &Path) -> Failed {
    let reason = error.to_string().replace('\n', " ");
    path.error(format!("invalid regex {}: {}", quote(pattern), reason.trim()))
}

/// A regex anchored at both ends, with the literal text every match must
/// start with checked first: a `starts_with` rejects most non-matching
/// values (`user7-[a-z]+` against `user3-abc`) for a fraction of what
/// regex-lite's matcher costs.
#[derive(Debug, Clone)]
pub(crate) struct FullMatchRegex {
    regex: Regex,
    literal_prefix: Box<str>,
}

impl FullMatchRegex {
    pub(crate) fn is_match(&self, value: &str) -> bool {
        value.starts_with(&*self.literal_prefix) && self.regex.is_match(value)
    }
}

/// The literal characters a pattern starts with, which every full match
/// must start with too. Conservative: empty when the pattern has a `|`
/// anywhere (a top-level alternative could start differently), and a
/// literal followed by a quantifier is left out (it may repeat zero times).
fn literal_prefix(pattern: &str) -> &str {
    if pattern.contains('|') {
        return "";
    }
    // Bytes, not chars: the metacharacters are ASCII, and `str::contains`
    // with a variable `char` would link core's substring searcher.
    let end = pattern.bytes().position(|b| b"\\.+*?()[]{}^$".contains(&b)).unwrap_or(pattern.len());
    let prefix = pattern.get(..end).unwrap_or("");
    match pattern.get(end..).and_then(|rest| rest.chars().next()) {
        Some('*' | '?' | '{' | '+') => match prefix.char_indices().last() {
            Some((last, _)) => prefix.get(..last).unwrap_or(""),
            None => "",
        },
        _ => prefix,
    }
}

/// A cheap upper estimate of a regex's compiled size, in the spirit of
/// RE2's program size: one unit per atom, counted repetitions multiply what
/// they repeat (`(a{100}){100}` is 10 000, though its text is 13 bytes),
/// alternatives add up. Used to refuse costly patterns before compiling
/// them. Saturates instead of overflowing.
pub(crate) fn program_size_estimate(pattern: &str) -> usize {
    struct Frame {
        done: usize,
        branch: usize,
        last: usize,
    }
    let bytes = pattern.as_bytes();
    let mut stack = vec![Frame { done: 0, branch: 0, last: 0 }];
    let mut i = 0;
    while i < bytes.len() {
        let Some(top) = stack.last_mut() else { break };
        match bytes[i] {
            b'\\' => {
                i += 1;
                top.branch = top.branch.saturating_add(1);
                top.last = 1;
            }
            b'[' => {
                // Skip to the closing bracket: `[]a]` and `[^]a]` hold a literal `]`.
                i += 1;
                if bytes.get(i) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i) == Some(&b']') {
                    i += 1;
                }
                while i < bytes.len() && bytes[i] != b']' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                top.branch = top.branch.saturating_add(1);
                top.last = 1;
            }
            b'(' => stack.push(Frame { done: 0, branch: 0, last: 0 }),
            b')' => {
                if stack.len() > 1 {
                    if let Some(frame) = stack.pop() {
                        let group = frame.done.saturating_add(frame.branch).saturating_add(1);
                        if let Some(parent) = stack.last_mut() {
                            parent.branch = parent.branch.saturating_add(group);
                            parent.last = group;
                        }
                    }
                }
            }
            b'|' => {
                top.done = top.done.saturating_add(top.branch).saturating_add(1);
                top.branch = 0;
                top.last = 0;
            }
            b'*' | b'+' | b'?' => top.branch = top.branch.saturating_add(1),
            b'{' => match counted_repetition(&bytes[i..]) {
                Some((max, len)) => {
                    let extra = top.last.saturating_mul(max.saturating_sub(1));
                    top.branch = top.branch.saturating_add(extra).saturating_add(1);
                    top.last = top.last.saturating_mul(max);
                    i += len - 1;
                }
                None => {
                    top.branch = top.branch.saturating_add(1);
                    top.last = 1;
                }
            },
            _ => {
                top.branch = top.branch.saturating_add(1);
                top.last = 1;
            }
        }
        i += 1;
    }
    stack.iter().fold(0usize, |sum, f| sum.saturating_add(f.done).saturating_add(f.branch))
}

/// `{n}`, `{n,}` or `{n,m}` at the start of `bytes`: (largest count, length).
/// `{n,}` counts as n + 1 (the unbounded tail is a loop, not copies).
fn counted_repetition(bytes: &[u8]) -> Option<(usize, usize)> {
    let close = bytes.iter().position(|&b| b == b'}')?;
    let inner = std::str::from_utf8(bytes.get(1..close)?).ok()?;
    let number = |s: &str| -> Option<usize> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<usize>().unwrap_or(usize::MAX))
    };
    let max = match inner.split_once(',') {
        None => number(inner)?,
        Some((low, "")) => number(low)?.saturating_add(1),
        Some((low, high)) => number(low)?.max(number(high)?),
    };
    Some((max, close + 1))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // The literal-prefix shortcut never changes a regex's answer.
        #[test]
        fn literal_prefix_shortcut_agrees_with_the_regex(
            pattern in "[ab.|*?+(){}0-9,]{1,10}",
            value in "[ab]{0,8}",
        ) {
            let Ok(compiled) = compile_full_match(&pattern, &Path::root()) else { return Ok(()) };
            let Ok(plain) = Regex::new(&format!("^(?:{pattern})$")) else { return Ok(()) };
            prop_assert_eq!(compiled.is_match(&value), plain.is_match(&value), "pattern {:?}", pattern);
        }
    }

    #[test]
    fn literal_prefix_stops_before_quantified_literals() {
        assert_eq!(literal_prefix("user7-[a-z]+"), "user7-");
        assert_eq!(literal_prefix("/api/v[0-9]+"), "/api/v");
        assert_eq!(literal_prefix("abc*"), "ab");
        assert_eq!(literal_prefix("a{0}b"), "");
        assert_eq!(literal_prefix("abc|x"), "");
        assert_eq!(literal_prefix("(?i)abc"), "");
        assert_eq!(literal_prefix("plain"), "plain");
    }

    #[test]
    fn program_size_grows_with_counted_repetition() {
        assert_eq!(program_size_estimate("abc"), 3);
        assert!(program_size_estimate("(a{100}){100}") > 10_000);
        assert!(program_size_estimate("[a-z]{20}") <= 21);
        assert!(program_size_estimate("a{99999999999999999999999}") > MAX_REGEX_PROGRAM_SIZE);
    }
}
