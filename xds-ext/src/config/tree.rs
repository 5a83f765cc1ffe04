//! A document's YAML tree, to find the line of the field a problem names.
//!
//! Only problems need lines, and a tree is about 15 times the size of its
//! text: a document keeps its file's text instead and the file is parsed
//! again, once, the first time a line is asked for. The same parser on the
//! same text gives the same tree the document was decoded from.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use super::yaml::{parse_stream, Document, Node, NodeKind};

/// The text of one file, and its documents' trees once parsed again.
pub struct Source {
    text: String,
    roots: OnceLock<Vec<Node>>,
}

impl Source {
    pub fn new(text: String) -> Arc<Source> {
        Arc::new(Source { text, roots: OnceLock::new() })
    }

    fn roots(&self) -> &[Node] {
        self.roots.get_or_init(|| match parse_stream(&self.text) {
            Ok(documents) => expand_lists(documents).into_iter().map(|d| d.root).collect(),
            Err(_) => Vec::new(),
        })
    }
}

/// The tree of the `index`-th document of a file (after `kind: List`
/// documents are expanded into their items).
#[derive(Clone)]
pub struct Tree {
    source: Arc<Source>,
    index: usize,
}

static EMPTY: Node = Node { line: 0, kind: NodeKind::Null };

impl Tree {
    pub fn new(source: &Arc<Source>, index: usize) -> Tree {
        Tree { source: source.clone(), index }
    }
}

impl Deref for Tree {
    type Target = Node;

    fn deref(&self) -> &Node {
        self.source.roots().get(self.index).unwrap_or(&EMPTY)
    }
}

/// The same text and place: the same tree (nothing is parsed to tell).
impl PartialEq for Tree {
    fn eq(&self, other: &Tree) -> bool {
        self.index == other.index && (Arc::ptr_eq(&self.source, &other.source) || self.source.text == other.source.text)
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tree(document {} of {} bytes)", self.index, self.source.text.len())
    }
}

/// `kind: List` documents (what `kubectl get -o yaml` writes) become their
/// `items`, each a document of its own with its own lines.
pub fn expand_lists(yaml: Vec<Document>) -> Vec<Document> {
    let mut out = Vec::with_capacity(yaml.len());
    for doc in yaml {
        let NodeKind::Map(entries) = &doc.root.kind else {
            out.push(doc);
            continue;
        };
        let is_list = entries
            .iter()
            .any(|e| e.key == "kind" && matches!(&e.value.kind, NodeKind::Scalar { value, .. } if value == "List"));
        let items = entries.iter().position(|e| e.key == "items" && matches!(e.value.kind, NodeKind::Seq(_)));
        match (is_list, items, doc.root.kind) {
            (true, Some(index), NodeKind::Map(mut entries)) => {
                if let NodeKind::Seq(items) = entries.swap_remove(index).value.kind {
                    out.extend(items.into_iter().map(|item| Document { line: item.line, root: item }));
                }
            }
            (_, _, kind) => out.push(Document { line: doc.line, root: Node { line: doc.root.line, kind } }),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_parsed_again_from_its_text_with_lists_expanded() {
        let text = "a: 1\n---\nkind: List\nitems:\n- b: 2\n- c:\n    d: 3\n";
        let source = Source::new(text.to_owned());
        let trees: Vec<Tree> = (0..3).map(|i| Tree::new(&source, i)).collect();
        assert!(source.roots.get().is_none(), "nothing parsed before a line is asked for");
        let NodeKind::Map(entries) = &trees[2].kind else { panic!("{:?}", trees[2].kind) };
        assert_eq!((entries[0].key.as_str(), entries[0].key_line), ("c", 6));
        assert_eq!(Tree::new(&source, 3).kind, NodeKind::Null);
        assert_eq!(trees[1], Tree::new(&Source::new(text.to_owned()), 1), "same text, same place");
        assert_ne!(trees[1], trees[2]);
    }
}
