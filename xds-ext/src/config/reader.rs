//! Typed reading of a positioned YAML tree. Each accessor records a finding
//! (with the field's line and path) and returns `None` when the value has the
//! wrong shape; mappings remember which keys were read, so every key left
//! over is reported by name instead of being dropped silently.

use std::collections::BTreeMap;

use super::problem::Findings;
use super::yaml::{Entry, Node, NodeKind};

/// A node and the path that led to it.
#[derive(Debug, Clone)]
pub(crate) struct At<'a> {
    pub node: &'a Node,
    pub path: String,
    /// The line of the key that holds the node (its own line for list items).
    pub line: usize,
}

/// A list item (same as [`At`]).
pub(crate) type Field<'a> = At<'a>;

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `path["key"]`, for user-chosen keys (header names, labels).
pub(crate) fn keyed(path: &str, key: &str) -> String {
    format!("{path}[{key:?}]")
}

impl<'a> At<'a> {
    pub(crate) fn new(node: &'a Node, path: impl Into<String>) -> Self {
        At { node, path: path.into(), line: node.line }
    }

    pub(crate) fn at(&self) -> At<'a> {
        self.clone()
    }

    pub(crate) fn line(&self) -> usize {
        self.line
    }

    fn wrong(&self, f: &mut Findings, expected: &str) {
        f.error(self.line, &self.path, format!("expected {expected}, found {}", self.node.type_name()));
    }

    /// A string; plain numbers and booleans are accepted as written.
    pub(crate) fn string(&self, f: &mut Findings) -> Option<String> {
        match &self.node.kind {
            NodeKind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.wrong(f, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    pub(crate) fn name(&self, f: &mut Findings) -> Option<String> {
        let value = self.string(f)?;
        if value.is_empty() {
            f.error(self.line, &self.path, "must not be empty");
            return None;
        }
        Some(value)
    }

    fn plain_scalar(&self, f: &mut Findings, expected: &str) -> Option<&'a str> {
        match &self.node.kind {
            NodeKind::Scalar { value, plain: true } => Some(value),
            _ => {
                self.wrong(f, expected);
                None
            }
        }
    }

    pub(crate) fn integer<T>(&self, f: &mut Findings, min: T, max: T) -> Option<T>
    where
        T: TryFrom<i128> + Into<i128> + Copy + std::fmt::Display,
    {
        let text = self.plain_scalar(f, "an integer")?;
        let value = text.parse::<i128>().ok().filter(|v| min.into() <= *v && *v <= max.into());
        match value.and_then(|v| T::try_from(v).ok()) {
            Some(value) => Some(value),
            None => {
                f.error(self.line, &self.path, format!("expected an integer from {min} to {max}, found {text:?}"));
                None
            }
        }
    }

    pub(crate) fn number(&self, f: &mut Findings) -> Option<f64> {
        let text = self.plain_scalar(f, "a number")?;
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                f.error(self.line, &self.path, format!("expected a number, found {text:?}"));
                None
            }
        }
    }

    pub(crate) fn boolean(&self, f: &mut Findings) -> Option<bool> {
        match self.plain_scalar(f, "true or false")? {
            "true" | "True" | "TRUE" => Some(true),
            "false" | "False" | "FALSE" => Some(false),
            other => {
                f.error(self.line, &self.path, format!("expected true or false, found {other:?}"));
                None
            }
        }
    }

    /// The items of a list with their paths (`null` is an empty list).
    pub(crate) fn list(&self, f: &mut Findings) -> Option<Vec<Field<'a>>> {
        match &self.node.kind {
            NodeKind::Null => Some(Vec::new()),
            NodeKind::Seq(items) => {
                Some(items.iter().enumerate().map(|(i, node)| At::new(node, format!("{}[{i}]", self.path))).collect())
            }
            _ => {
                self.wrong(f, "a list");
                None
            }
        }
    }

    pub(crate) fn strings(&self, f: &mut Findings) -> Option<Vec<String>> {
        let items = self.list(f)?;
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in &items {
            match item.at().string(f) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn object(&self, f: &mut Findings) -> Option<Obj<'a>> {
        match &self.node.kind {
            NodeKind::Null => Some(Obj::new(&self.path, self.line, &[])),
            NodeKind::Map(entries) => Some(Obj::new(&self.path, self.line, entries)),
            _ => {
                self.wrong(f, "a mapping");
                None
            }
        }
    }

    /// A mapping of strings to strings (labels, selectors), sorted by key.
    pub(crate) fn string_map(&self, f: &mut Findings) -> Option<BTreeMap<String, String>> {
        let obj = self.object(f)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for entry in obj.entries {
            match At::new(&entry.value, keyed(&self.path, &entry.key)).string(f) {
                Some(value) => {
                    out.insert(entry.key.clone(), value);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// A mapping being read field by field.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    pub path: String,
    line: usize,
    pub entries: &'a [Entry],
    used: Vec<bool>,
    paths: Vec<String>,
}

impl<'a> Obj<'a> {
    fn new(path: &str, line: usize, entries: &'a [Entry]) -> Self {
        let paths = entries.iter().map(|e| join(path, &e.key)).collect();
        Obj { path: path.to_string(), line, entries, used: vec![false; entries.len()], paths }
    }

    pub(crate) fn line(&self) -> usize {
        self.line
    }

    /// The value of `key`, marking it read; `None` when absent or `null`.
    pub(crate) fn take(&mut self, key: &str) -> Option<At<'a>> {
        let index = self.entries.iter().position(|e| e.key == key)?;
        self.used[index] = true;
        let entry = &self.entries[index];
        if entry.value.kind == NodeKind::Null {
            return None;
        }
        Some(At { node: &entry.value, path: self.paths[index].clone(), line: entry.key_line })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key && e.value.kind != NodeKind::Null)
    }

    pub(crate) fn string(&mut self, key: &str, f: &mut Findings) -> Option<String> {
        self.take(key).and_then(|at| at.string(f))
    }

    pub(crate) fn strings(&mut self, key: &str, f: &mut Findings) -> Vec<String> {
        self.take(key).and_then(|at| at.strings(f)).unwrap_or_default()
    }

    /// Reports `key`, if present, as accepted but not applied.
    pub(crate) fn unapplied(&mut self, key: &str, why: &str, f: &mut Findings) {
        if let Some(at) = self.take(key) {
            f.warning(at.line(), &at.path, format!("{key} is not applied: {why}"));
        }
    }

    /// Refuses `key`, if present: a field whose absence in Envoy would change
    /// where a request goes or what it gets must not be dropped.
    pub(crate) fn refused(&mut self, key: &str, why: &str, f: &mut Findings) {
        if let Some(at) = self.take(key) {
            f.error(at.line(), &at.path, format!("{key} is not supported: {why}"));
        }
    }

    /// Reports every key not read as unknown (and ignored).
    pub(crate) fn finish(self, f: &mut Findings) {
        for (i, entry) in self.entries.iter().enumerate() {
            if !self.used[i] {
                f.warning(entry.key_line, &self.paths[i], format!("unknown field `{}` is ignored", entry.key));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod tests {
    use super::super::yaml::parse_stream;
    use super::*;

    #[test]
    fn unknown_keys_are_reported_by_name() {
        let docs = parse_stream("a: 1\nb: x\nc: [1]\n").unwrap();
        let mut f = Findings::default();
        let root = At::new(&docs[0].root, "spec");
        let mut obj = root.object(&mut f).unwrap();
        assert_eq!(obj.take("a").unwrap().integer::<u32>(&mut f, 0, 10), Some(1));
        obj.finish(&mut f);
        assert_eq!(f.0.len(), 2);
        assert_eq!(f.0[0].field, "spec.b");
        assert_eq!(f.0[0].line, 2);
        assert!(f.0[1].message.contains("`c`"));
    }

    #[test]
    fn integers_are_range_checked_and_quoted_numbers_refused() {
        let docs = parse_stream("a: 70000\nb: \"5\"\nc: -1\n").unwrap();
        let mut f = Findings::default();
        let root = At::new(&docs[0].root, "");
        let mut obj = root.object(&mut f).unwrap();
        assert_eq!(obj.take("a").unwrap().integer::<u16>(&mut f, 1, 65535), None);
        assert_eq!(obj.take("b").unwrap().integer::<u32>(&mut f, 0, 100), None);
        assert_eq!(obj.take("c").unwrap().integer::<u32>(&mut f, 0, 100), None);
        assert_eq!(f.0.len(), 3);
        assert!(f.0[0].message.contains("from 1 to 65535"), "{:?}", f.0);
    }
}
