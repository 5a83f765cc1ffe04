//! A YAML tree that remembers where each node is, so a problem can name the
//! line of the field at fault. Built from `yaml-rust2`'s event parser (plain
//! Rust, 1-based line marks); JSON files go through the same parser.
//!
//! Bounded on hostile input: nesting deeper than [`MAX_DEPTH`] and trees
//! larger than [`MAX_NODES`] (aliases count with their whole expansion, so
//! "billion laughs" is refused) are errors, never a stack overflow or an
//! out-of-memory.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Deepest nesting accepted (Istio documents need about 12).
pub const MAX_DEPTH: usize = 64;
/// Most nodes in one file, aliases expanded.
pub const MAX_NODES: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `null`, `~`, or nothing.
    Null,
    /// A scalar as written; `plain` is false when it was quoted or a block
    /// scalar (so `"true"` stays a string).
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_line: usize,
    pub value: Node,
}

/// One YAML document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based line where the document starts (its `---`, or its first node).
    pub line: usize,
    pub root: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            NodeKind::Null | NodeKind::Scalar { .. } => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            NodeKind::Map(entries) => 1 + entries.iter().map(|e| 1 + e.value.size()).sum::<usize>(),
        }
    }
}

enum Frame {
    Seq { line: usize, anchor: usize, items: Vec<Node> },
    Map { line: usize, anchor: usize, entries: Vec<Entry>, key: Option<(String, usize)> },
}

/// Parses every document of a YAML (or JSON) stream. Empty documents (only
/// comments, or a bare `---`) are returned with a `Null` root.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut documents = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut doc_line = 1;
    let mut nodes = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| YamlError {
            line: e.marker().line().max(1),
            message: format!("YAML syntax error: {}", e.info()),
        })?;
        let line = line_of(&mark);
        let node = match event {
            Event::StreamEnd => return Ok(documents),
            Event::DocumentStart => {
                doc_line = line;
                anchors.clear();
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                push_frame(&mut stack, Frame::Seq { line, anchor, items: Vec::new() }, line)?;
                continue;
            }
            Event::MappingStart(anchor, _) => {
                push_frame(&mut stack, Frame::Map { line, anchor, entries: Vec::new(), key: None }, line)?;
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { line, anchor, mut items }) => {
                    // Growth leaves room for 4 and doubles: a large file's tree is mostly slack.
                    items.shrink_to_fit();
                    remember(&mut anchors, anchor, Node { line, kind: NodeKind::Seq(items) })
                }
                _ => return Err(YamlError { line, message: "YAML structure error: unbalanced sequence".into() }),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { line, anchor, mut entries, .. }) => {
                    entries.shrink_to_fit();
                    remember(&mut anchors, anchor, Node { line, kind: NodeKind::Map(entries) })
                }
                _ => return Err(YamlError { line, message: "YAML structure error: unbalanced mapping".into() }),
            },
            Event::Scalar(value, style, anchor, _) => {
                let plain = style == TScalarStyle::Plain;
                let kind = if plain && matches!(value.as_str(), "~" | "null" | "Null" | "NULL" | "") {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar { value, plain }
                };
                remember(&mut anchors, anchor, Node { line, kind })
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some(target) => {
                    nodes += target.size();
                    if nodes > MAX_NODES {
                        return Err(too_big(line));
                    }
                    Node { line, kind: target.kind.clone() }
                }
                None => return Err(YamlError { line, message: "YAML alias refers to an unknown anchor".into() }),
            },
            Event::DocumentEnd | Event::StreamStart | Event::Nothing => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(too_big(line));
        }
        match stack.last_mut() {
            None => documents.push(Document { line: doc_line.min(node.line), root: node }),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => match node.kind {
                    NodeKind::Scalar { value, .. } => *key = Some((value, node.line)),
                    NodeKind::Null => *key = Some(("null".to_string(), node.line)),
                    _ => return Err(YamlError { line: node.line, message: "mapping keys must be scalars".into() }),
                },
                Some((name, key_line)) => {
                    if entries.iter().any(|e| e.key == name) {
                        return Err(YamlError { line: key_line, message: format!("duplicate key `{name}`") });
                    }
                    entries.push(Entry { key: name, key_line, value: node });
                }
            },
        }
    }
}

fn line_of(mark: &Marker) -> usize {
    mark.line().max(1)
}

fn too_big(line: usize) -> YamlError {
    YamlError { line, message: format!("document too large (over {MAX_NODES} nodes with aliases expanded)") }
}

fn push_frame(stack: &mut Vec<Frame>, frame: Frame, line: usize) -> Result<(), YamlError> {
    if stack.len() >= MAX_DEPTH {
        return Err(YamlError { line, message: format!("nesting deeper than {MAX_DEPTH} levels") });
    }
    stack.push(frame);
    Ok(())
}

fn remember(anchors: &mut HashMap<usize, Node>, anchor: usize, node: Node) -> Node {
    if anchor > 0 {
        anchors.insert(anchor, node.clone());
    }
    node
}

/// JSON value → YAML text (for `-o yaml`).
pub fn to_yaml(value: &serde_json::Value) -> Result<String, String> {
    let mut out = String::new();
    let mut emitter = yaml_rust2::YamlEmitter::new(&mut out);
    emitter.dump(&json_to_yaml(value)).map_err(|e| format!("{e:?}"))?;
    Ok(out.strip_prefix("---\n").unwrap_or(&out).to_string())
}

fn json_to_yaml(value: &serde_json::Value) -> yaml_rust2::Yaml {
    use yaml_rust2::Yaml;
    match value {
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Bool(b) => Yaml::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        serde_json::Value::String(s) => Yaml::String(s.clone()),
        serde_json::Value::Array(items) => Yaml::Array(items.iter().map(json_to_yaml).collect()),
        serde_json::Value::Object(map) => {
            let mut hash = yaml_rust2::yaml::Hash::new();
            for (k, v) in map {
                hash.insert(Yaml::String(k.clone()), json_to_yaml(v));
            }
            Yaml::Hash(hash)
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
mod tests {
    use super::*;

    #[test]
    fn documents_and_lines_are_kept() {
        let docs = parse_stream("a: 1\n---\n# c\nb:\n  - x\n  - 'y'\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 1);
        let NodeKind::Map(entries) = &docs[1].root.kind else { panic!() };
        assert_eq!(entries[0].key, "b");
        assert_eq!(entries[0].key_line, 4);
        let NodeKind::Seq(items) = &entries[0].value.kind else { panic!() };
        assert_eq!(items[1].line, 6);
        assert_eq!(items[1].kind, NodeKind::Scalar { value: "y".into(), plain: false });
    }

    #[test]
    fn json_parses_too() {
        let docs = parse_stream("{\"a\": [1, 2], \"b\": null}").unwrap();
        let NodeKind::Map(entries) = &docs[0].root.kind else { panic!() };
        assert_eq!(entries[1].value.kind, NodeKind::Null);
    }

    #[test]
    fn syntax_errors_have_lines() {
        let err = parse_stream("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let err = parse_stream("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("duplicate key"));
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused() {
        let deep = "[".repeat(10_000);
        assert!(parse_stream(&deep).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..9 {
            let prev = if i == 0 { "a".to_string() } else { format!("a{i}") };
            bomb.push_str(&format!("a{}: &a{} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n", i + 1, i + 1));
        }
        let err = parse_stream(&bomb).unwrap_err();
        assert!(err.message.contains("too large"), "{err:?}");
    }

    #[test]
    fn aliases_expand() {
        let docs = parse_stream("a: &x {k: v}\nb: *x\n").unwrap();
        let NodeKind::Map(entries) = &docs[0].root.kind else { panic!() };
        assert_eq!(entries[0].value.kind, entries[1].value.kind);
    }
}
