//! Comparing a shadow's answer with its primary's, for a mirror with
//! `compare`: which parts count (the status, exactly or by class; chosen
//! response headers; the body up to a bound), the verdict, and the log line
//! that says what differed.
//!
//! Each side is reduced as it arrives to an [`Answer`]: its status, a hash
//! per compared header value, and one hash of the first `body_bytes` bytes
//! of the body. Neither side keeps a body nor a header value — except the
//! values of `log_headers`, kept shortened to be shown in the log line — so a
//! comparison waiting for its other half costs a few dozen bytes whatever
//! the answers hold. The hash (FNV-1a 64) only has to tell answers apart: a
//! difference it misses is a 1-in-2⁶⁴ chance per comparison.

use serde::{Deserialize, Serialize};

use crate::error::{quote, Failed, Path};
use crate::http_match::{header_name, path_only};
use crate::json::{decode_struct, Decode, Decoder};

/// The most response headers one mirror compares.
pub const MAX_COMPARED_HEADERS: usize = 32;
/// The most body bytes one mirror hashes per side.
pub const MAX_COMPARE_BODY_BYTES: u32 = 4 * 1024 * 1024;
/// Mismatch log lines per minute (per mirror, per worker) by default.
pub const DEFAULT_LOG_PER_MINUTE: u32 = 10;
/// What a log line shows of an allow-listed header value, and of the path.
const SHOWN_VALUE_CHARS: usize = 64;
const LOGGED_PATH_CHARS: usize = 200;
const LOG_WINDOW_NANOS: u128 = 60_000_000_000;

/// How statuses compare: `exact` (200 ≠ 201) or `class` (2xx = 2xx).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatusMatch {
    #[default]
    Exact,
    Class,
}

impl Decode for StatusMatch {
    fn blank() -> Self {
        StatusMatch::Exact
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        const VARIANTS: &[&str] = &["exact", "class"];
        let (index, object) = d.variant(at, VARIANTS, true)?;
        d.end_variant(at, VARIANTS, object)?;
        *self = if index == 0 { StatusMatch::Exact } else { StatusMatch::Class };
        Ok(())
    }
}

/// A mirror's `compare`: what of the shadow's answer must equal the
/// primary's. The status is always compared.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CompareConfig {
    /// Default `exact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusMatch>,
    /// Response headers whose values must be equal (a header absent on one
    /// side only differs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// The first this many bytes of the bodies must be equal; default 0,
    /// bodies are not compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u32>,
    /// Of `headers`, those whose values a mismatch log line may show; the
    /// others are named only, as their values may be secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_headers: Vec<String>,
    /// Mismatch log lines per minute, per worker (default 10; 0: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_per_minute: Option<u32>,
}

decode_struct!(CompareConfig {
    status: default,
    headers: default,
    body_bytes: default,
    log_headers: default,
    log_per_minute: default,
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledCompare {
    status: StatusMatch,
    /// Lowercase.
    headers: Vec<String>,
    /// Per header: whether its values may be logged.
    shown: Vec<bool>,
    body_bytes: usize,
    log_per_minute: u32,
}

impl CompiledCompare {
    pub(crate) fn compile(config: &CompareConfig, path: &Path) -> Result<Self, Failed> {
        let headers_path = path.field("headers");
        if config.headers.len() > MAX_COMPARED_HEADERS {
            return Err(headers_path.error(format!(
                "{} headers, more than the {MAX_COMPARED_HEADERS} a mirror may compare",
                config.headers.len()
            )));
        }
        let mut headers: Vec<String> = Vec::with_capacity(config.headers.len());
        for (i, raw) in config.headers.iter().enumerate() {
            let at = headers_path.index(i);
            let name = header_name(raw, &at)?;
            if name.starts_with(':') {
                return Err(at.error(format!(
                    "{} is a pseudo-header: the status is always compared, other pseudo-headers are not answers",
                    quote(raw)
                )));
            }
            if let Some(first) = headers.iter().position(|h| *h == name) {
                return Err(at.error(format!("header {} is already listed at headers[{first}]", quote(raw))));
            }
            headers.push(name);
        }
        let mut shown = vec![false; headers.len()];
        let log_path = path.field("log_headers");
        for (i, raw) in config.log_headers.iter().enumerate() {
            let at = log_path.index(i);
            let name = header_name(raw, &at)?;
            match headers.iter().position(|h| *h == name) {
                Some(k) => shown[k] = true,
                None => {
                    return Err(at.error(format!(
                        "{} is not in headers: a log line shows values of compared headers only",
                        quote(raw)
                    )))
                }
            }
        }
        let body_bytes = config.body_bytes.unwrap_or(0);
        if body_bytes > MAX_COMPARE_BODY_BYTES {
            return Err(path
                .field("body_bytes")
                .error(format!("{body_bytes} is above the limit of {MAX_COMPARE_BODY_BYTES} bytes")));
        }
        Ok(CompiledCompare {
            status: config.status.unwrap_or_default(),
            headers,
            shown,
            body_bytes: body_bytes as usize,
            log_per_minute: config.log_per_minute.unwrap_or(DEFAULT_LOG_PER_MINUTE),
        })
    }

    pub fn status_match(&self) -> StatusMatch {
        self.status
    }

    /// The compared response headers, lowercase, in config order.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Body bytes compared (0: bodies are not).
    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    pub fn log_per_minute(&self) -> u32 {
        self.log_per_minute
    }

    /// An answer to fill in as it arrives.
    pub fn answer(&self) -> Answer {
        Answer {
            status: 0,
            headers: vec![None; self.headers.len()],
            shown: vec![None; self.headers.len()],
            body: BodyHash::default(),
            body_limit: self.body_bytes,
        }
    }

    pub fn verdict(&self, primary: &Answer, shadow: &Answer) -> Verdict {
        let status = match self.status {
            StatusMatch::Exact => primary.status != shadow.status,
            StatusMatch::Class => primary.status / 100 != shadow.status / 100,
        };
        let headers: Vec<usize> =
            (0..self.headers.len()).filter(|&i| primary.headers.get(i) != shadow.headers.get(i)).collect();
        let body = self.body_bytes > 0 && primary.body != shadow.body;
        let reason = if status {
            MismatchReason::Status
        } else if !headers.is_empty() {
            MismatchReason::Header
        } else if body {
            MismatchReason::Body
        } else {
            return Verdict::Matched;
        };
        Verdict::Mismatched(Mismatch { reason, status, headers, body })
    }

    /// The log line of a mismatch: the path (without its query, which may
    /// carry secrets), both statuses and everything that differed; header
    /// values only of `log_headers`, bodies never.
    pub fn describe(&self, path: &str, primary: &Answer, shadow: &Answer, mismatch: &Mismatch) -> String {
        let mut line = format!("{}: primary {}, shadow {}", log_path(path), primary.status, shadow.status);
        let mut differs: Vec<String> = Vec::new();
        if mismatch.status {
            differs.push(match self.status {
                StatusMatch::Exact => "status".to_string(),
                StatusMatch::Class => "status class".to_string(),
            });
        }
        for &i in &mismatch.headers {
            let Some(name) = self.headers.get(i) else { continue };
            if self.shown.get(i).copied().unwrap_or(false) {
                let show = |answer: &Answer| match answer.shown.get(i).and_then(Option::as_deref) {
                    Some(value) => quote(value),
                    None => "absent".to_string(),
                };
                differs.push(format!("header {name} {} vs {}", show(primary), show(shadow)));
            } else {
                differs.push(format!("header {name}"));
            }
        }
        if mismatch.body {
            differs.push(format!("body (first {} bytes)", self.body_bytes));
        }
        line.push_str("; differs: ");
        line.push_str(&differs.join(", "));
        line
    }

    /// `status exact, headers [content-type], body first 4096 bytes, log 10/min`.
    pub fn summary(&self) -> String {
        let status = match self.status {
            StatusMatch::Exact => "status exact",
            StatusMatch::Class => "status class",
        };
        let mut parts = vec![status.to_string()];
        if !self.headers.is_empty() {
            let shown: Vec<&str> =
                self.headers.iter().zip(&self.shown).filter(|(_, s)| **s).map(|(h, _)| h.as_str()).collect();
            let mut headers = format!("headers [{}]", self.headers.join(", "));
            if !shown.is_empty() {
                headers.push_str(&format!(" (values logged: {})", shown.join(", ")));
            }
            parts.push(headers);
        }
        parts.push(if self.body_bytes > 0 {
            format!("body first {} bytes", self.body_bytes)
        } else {
            "body not compared".to_string()
        });
        parts.push(format!("mismatches logged at most {}/min", self.log_per_minute));
        parts.join(", ")
    }
}

/// One side's answer, as far as the comparison looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    status: u16,
    /// Per compared header: a hash of its value, `None` when absent.
    headers: Vec<Option<u64>>,
    /// Per compared header: its value, shortened, when it may be logged.
    shown: Vec<Option<String>>,
    body: BodyHash,
    body_limit: usize,
}

impl Answer {
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The value of `spec.headers()[index]` (`None`: absent).
    pub fn set_header(&mut self, spec: &CompiledCompare, index: usize, value: Option<&[u8]>) {
        if let Some(slot) = self.headers.get_mut(index) {
            *slot = value.map(fnv1a);
        }
        if spec.shown.get(index).copied().unwrap_or(false) {
            if let Some(slot) = self.shown.get_mut(index) {
                *slot = value.map(|v| shorten(&String::from_utf8_lossy(v), SHOWN_VALUE_CHARS));
            }
        }
    }

    /// How many more body bytes the comparison looks at.
    pub fn body_wanted(&self) -> usize {
        self.body_limit.saturating_sub(self.body.len)
    }

    /// The next body bytes; anything past the bound is ignored.
    pub fn add_body(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.body_wanted());
        if let Some(bytes) = bytes.get(..take) {
            self.body.add(bytes);
        }
    }
}

/// FNV-1a 64 of the body's first bytes, and how many there were: a body
/// shorter than the bound differs from a longer one with the same start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BodyHash {
    hash: u64,
    len: usize,
}

impl Default for BodyHash {
    fn default() -> Self {
        BodyHash { hash: FNV_OFFSET, len: 0 }
    }
}

impl BodyHash {
    fn add(&mut self, bytes: &[u8]) {
        self.hash = fnv1a_from(self.hash, bytes);
        self.len += bytes.len();
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

fn fnv1a_from(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Matched,
    Mismatched(Mismatch),
}

/// What differed. `reason` is the first of status, header, body that did:
/// each mismatch is counted once, under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub reason: MismatchReason,
    pub status: bool,
    /// Indexes into `CompiledCompare::headers()`.
    pub headers: Vec<usize>,
    pub body: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchReason {
    Status,
    Header,
    Body,
}

/// The path as a log line shows it: without query or fragment, shortened,
/// control characters replaced.
pub fn log_path(full_path: &str) -> String {
    let path = path_only(full_path);
    let mut shown = shorten(path, LOGGED_PATH_CHARS);
    if path.len() < full_path.len() {
        shown.push_str("?…");
    }
    shown
}

fn shorten(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push('…');
    }
    out
}

/// At most `per_minute` log lines in any fixed minute window; the lines held
/// back are counted and reported with the next one allowed.
#[derive(Debug, Clone, Default)]
pub struct LogBudget {
    window_start: u128,
    used: u32,
    held_back: u64,
}

impl LogBudget {
    /// `now`: nanoseconds. `Some(n)`: log, and say `n` lines were held back
    /// since the last one; `None`: do not log.
    pub fn allow(&mut self, per_minute: u32, now: u128) -> Option<u64> {
        if now.saturating_sub(self.window_start) >= LOG_WINDOW_NANOS {
            self.window_start = now;
            self.used = 0;
        }
        if self.used >= per_minute {
            self.held_back += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used)] // tests fail by panicking
mod tests {
    use super::*;

    fn config(status: Option<StatusMatch>, headers: &[&str], body_bytes: Option<u32>, log: &[&str]) -> CompareConfig {
        let names = |list: &[&str]| list.iter().map(|h| h.to_string()).collect();
        CompareConfig { status, headers: names(headers), body_bytes, log_headers: names(log), log_per_minute: None }
    }

    fn spec(config: CompareConfig) -> CompiledCompare {
        CompiledCompare::compile(&config, &Path::root()).unwrap()
    }

    fn answer(spec: &CompiledCompare, status: u16, headers: &[Option<&str>], body: &[&str]) -> Answer {
        let mut a = spec.answer();
        a.set_status(status);
        for (i, v) in headers.iter().enumerate() {
            a.set_header(spec, i, v.map(str::as_bytes));
        }
        for chunk in body {
            a.add_body(chunk.as_bytes());
        }
        a
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn status_exact_or_by_class() {
        let exact = spec(CompareConfig::default());
        let class = spec(config(Some(StatusMatch::Class), &[], None, &[]));
        for (s, a, b, same) in [(&exact, 200, 200, true), (&exact, 200, 201, false), (&class, 200, 204, true)] {
            let v = s.verdict(&answer(s, a, &[], &[]), &answer(s, b, &[], &[]));
            assert_eq!(v == Verdict::Matched, same, "{a} vs {b}");
        }
        let Verdict::Mismatched(m) = class.verdict(&answer(&class, 200, &[], &[]), &answer(&class, 500, &[], &[]))
        else {
            panic!()
        };
        assert_eq!(m.reason, MismatchReason::Status);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn the_body_counts_up_to_the_bound_whatever_the_chunks() {
        let s = spec(config(None, &[], Some(5), &[]));
        let primary = answer(&s, 200, &[], &["hel", "lo world"]);
        assert_eq!(s.verdict(&primary, &answer(&s, 200, &[], &["hello there"])), Verdict::Matched);
        let Verdict::Mismatched(m) = s.verdict(&primary, &answer(&s, 200, &[], &["help"])) else { panic!() };
        assert_eq!(m.reason, MismatchReason::Body);
        // Bodies are not compared without body_bytes.
        let s = spec(CompareConfig::default());
        assert_eq!(s.verdict(&answer(&s, 200, &[], &["a"]), &answer(&s, 200, &[], &["b"])), Verdict::Matched);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_log_line_shows_values_of_allow_listed_headers_only() {
        let s = spec(config(None, &["X-Token", "content-type"], Some(4), &["content-type"]));
        let p = answer(&s, 200, &[Some("secret-1"), Some("text/plain")], &["abcd"]);
        let q = answer(&s, 500, &[Some("secret-2"), None], &["abce"]);
        let Verdict::Mismatched(m) = s.verdict(&p, &q) else { panic!() };
        assert_eq!((m.reason, m.headers.clone(), m.body), (MismatchReason::Status, vec![0, 1], true));
        let line = s.describe("/api/items?token=abc", &p, &q, &m);
        assert_eq!(
            line,
            "/api/items?…: primary 200, shadow 500; differs: status, header x-token, \
             header content-type \"text/plain\" vs absent, body (first 4 bytes)"
        );
        assert!(!line.contains("secret") && !line.contains("abc"), "{line}");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn bad_compare_configs_name_the_field() {
        let err = |config: CompareConfig| {
            CompiledCompare::compile(&config, &Path::root().field("compare")).unwrap_err().to_string()
        };
        let headers = |names: &[&str]| config(None, names, None, &[]);
        assert_eq!(err(headers(&["a", "A"])), "compare.headers[1]: header \"A\" is already listed at headers[0]");
        assert_eq!(err(headers(&["a b"])), "compare.headers[0]: invalid header name \"a b\"");
        assert!(err(headers(&[":status"])).starts_with("compare.headers[0]: \":status\" is a pseudo-header"));
        assert_eq!(
            err(config(None, &["a"], None, &["b"])),
            "compare.log_headers[0]: \"b\" is not in headers: a log line shows values of compared headers only"
        );
        assert_eq!(
            err(config(None, &[], Some(4_194_305), &[])),
            "compare.body_bytes: 4194305 is above the limit of 4194304 bytes"
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn log_lines_are_limited_per_minute_and_say_how_many_were_held_back() {
        let mut budget = LogBudget::default();
        let minute = LOG_WINDOW_NANOS;
        let t0 = 5 * minute;
        assert_eq!(budget.allow(2, t0), Some(0));
        assert_eq!(budget.allow(2, t0 + 1), Some(0));
        assert_eq!(budget.allow(2, t0 + 2), None);
        assert_eq!(budget.allow(2, t0 + 3), None);
        assert_eq!(budget.allow(2, t0 + minute), Some(2));
        assert_eq!(budget.allow(0, t0 + 3 * minute), None);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn logged_paths_lose_their_query_and_control_characters() {
        assert_eq!(log_path("/a/b"), "/a/b");
        assert_eq!(log_path("/a?x=1"), "/a?…");
        assert_eq!(log_path("/a\u{1b}[31m"), "/a\u{fffd}[31m");
        assert_eq!(log_path(&"x".repeat(300)).chars().count(), LOGGED_PATH_CHARS + 1);
    }
}
