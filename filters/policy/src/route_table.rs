//! Ordered rules, first match wins, with an index for runs of exact-header
//! rules.
//!
//! A run of at least `MIN_INDEXED_RUN` consecutive rules whose only
//! condition is one `exact` match on the same header (one match block, no
//! uri/query/port) is served by a hash map from value to the first rule of
//! the run with that value. Within such a run a request can only match
//! rules carrying its header value, and the map keeps the earliest, so
//! first-match-wins is preserved; rules outside runs are checked in order.
//! A thousand `end-user: <name>` rules cost one header fetch and one lookup.

use std::collections::HashMap;

use crate::http_match::CompiledMatch;
use crate::request::{HeaderSource, Request};

/// Shorter runs are checked linearly: a few string comparisons cost less
/// than hashing.
pub const MIN_INDEXED_RUN: usize = 4;

#[derive(Debug)]
pub(crate) struct Rule<T> {
    pub(crate) name: String,
    /// Index over all rules of the config, for per-rule stats.
    pub(crate) global_index: usize,
    /// Empty: matches every request.
    pub(crate) matches: Vec<CompiledMatch>,
    pub(crate) action: T,
}

#[derive(Debug)]
enum Step {
    Rule(usize),
    ExactHeader { header: Box<str>, by_value: HashMap<String, usize>, run_len: usize },
}

#[derive(Debug)]
pub(crate) struct RouteTable<T> {
    rules: Vec<Rule<T>>,
    steps: Vec<Step>,
}

/// A matched rule and the match block that matched (None: the rule has no
/// match blocks).
pub(crate) struct Hit<'a, T> {
    pub(crate) rule: &'a Rule<T>,
    pub(crate) block: Option<&'a CompiledMatch>,
}

impl<T> RouteTable<T> {
    pub(crate) fn new(rules: Vec<Rule<T>>) -> Self {
        let mut steps = Vec::new();
        let mut i = 0;
        while i < rules.len() {
            let Some((header, _)) = indexable(&rules[i]) else {
                steps.push(Step::Rule(i));
                i += 1;
                continue;
            };
            let mut end = i + 1;
            while end < rules.len() && indexable(&rules[end]).is_some_and(|(h, _)| h == header) {
                end += 1;
            }
            if end - i < MIN_INDEXED_RUN {
                steps.extend((i..end).map(Step::Rule));
            } else {
                let mut by_value = HashMap::with_capacity(end - i);
                for (index, rule) in rules.iter().enumerate().take(end).skip(i) {
                    if let Some((_, value)) = indexable(rule) {
                        // The earliest rule with this value wins.
                        if !by_value.contains_key(value) {
                            by_value.insert(value.to_string(), index);
                        }
                    }
                }
                steps.push(Step::ExactHeader { header: header.into(), by_value, run_len: end - i });
            }
            i = end;
        }
        RouteTable { rules, steps }
    }

    pub(crate) fn rule(&self, index: usize) -> Option<&Rule<T>> {
        self.rules.get(index)
    }

    /// How many rules are served by the exact-header index (for tests and docs).
    pub(crate) fn indexed_rule_count(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Rule(_) => 0,
                Step::ExactHeader { run_len, .. } => *run_len,
            })
            .sum()
    }

    pub(crate) fn find<S: HeaderSource + ?Sized>(&self, req: &mut Request<'_, S>) -> Option<Hit<'_, T>> {
        for step in &self.steps {
            match step {
                Step::Rule(index) => {
                    let rule = self.rules.get(*index)?;
                    if rule.matches.is_empty() {
                        return Some(Hit { rule, block: None });
                    }
                    if let Some(block) = rule.matches.iter().find(|m| m.matches(req)) {
                        return Some(Hit { rule, block: Some(block) });
                    }
                }
                Step::ExactHeader { header, by_value, .. } => {
                    let hit = req.header(header).and_then(|v| by_value.get(v)).copied();
                    if let Some(index) = hit {
                        let rule = self.rules.get(index)?;
                        return Some(Hit { rule, block: rule.matches.first() });
                    }
                }
            }
        }
        None
    }
}

fn indexable<T>(rule: &Rule<T>) -> Option<(&str, &str)> {
    match rule.matches.as_slice() {
        [only] => only.single_exact_header(),
        _ => None,
    }
}
