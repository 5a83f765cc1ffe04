//! The documents in force, and the last-good rule that decides what a bad
//! edit leaves in force (docs/xds-ext.md, "Bad documents"):
//!
//! - a file that cannot be read or is not valid YAML keeps its previous good
//!   documents in force;
//! - in a file that parses, an invalid document is dropped, except that the
//!   last good version of the same document (kind, namespace, name) from
//!   that file stays in force;
//! - everything else applies at once; a file that disappears takes its
//!   documents with it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::decode::{decode_document, Decoded};
use super::model::{Doc, DocKey};
use super::problem::{Findings, Problem, Severity};
use super::render::{check_document, check_references, line_of, render_configs, Configs};
use super::yaml::parse_stream;
use crate::workload::{Rendered, Workload};

/// Deepest directory nesting read under a config directory.
const MAX_DIR_DEPTH: usize = 8;
/// Largest input file read (a Kubernetes ConfigMap holds at most 1 MiB).
const MAX_FILE_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, Default)]
pub struct ConfigStore {
    /// Per file, the documents in force from it.
    files: BTreeMap<PathBuf, Vec<Doc>>,
    /// Every document in force, sorted by key.
    docs: Vec<Doc>,
    problems: Vec<Problem>,
}

/// What a reload found. `errors` and `warnings` cover every file read,
/// not only what changed; `changed` says whether the documents in force
/// differ from before (if not, nothing needs re-rendering).
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub changed: bool,
}

impl ConfigStore {
    /// An empty store: every workload gets configs that manage nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every `*.yaml`, `*.yml` and `*.json` file under `dir`
    /// (recursively, skipping dot-files and dot-directories, following
    /// symlinks, so a mounted ConfigMap's `..data` layout is read once) and
    /// applies the last-good rule against what was in force.
    pub fn reload_dir(&mut self, dir: &Path) -> ReloadReport {
        let mut problems = Vec::new();
        let mut files = Vec::new();
        if let Err(message) = collect_files(dir, 0, &mut files) {
            problems.push(file_problem(dir, 0, message));
            // An unreadable directory changes nothing: keep serving.
            self.problems = problems.clone();
            return report(problems, false);
        }
        files.sort();
        self.apply(&files, problems)
    }

    /// Loads files and directories (for the CLI verbs) into a new store.
    pub fn load_paths(paths: &[PathBuf]) -> (ConfigStore, Vec<Problem>) {
        let mut store = ConfigStore::new();
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut found = Vec::new();
                match collect_files(path, 0, &mut found) {
                    Ok(()) if found.is_empty() => {
                        problems.push(file_problem(path, 0, "no *.yaml, *.yml or *.json files here".into()))
                    }
                    Ok(()) => {
                        found.sort();
                        files.extend(found);
                    }
                    Err(message) => problems.push(file_problem(path, 0, message)),
                }
            } else {
                files.push(path.clone());
            }
        }
        let mut seen = BTreeSet::new();
        files.retain(|f| seen.insert(f.clone()));
        store.apply(&files, problems);
        let problems = store.problems.clone();
        (store, problems)
    }

    /// The five filter configs of `workload`, validated by the filters' own code.
    pub fn render(&self, workload: &Workload) -> Result<Rendered, Vec<Problem>> {
        self.render_configs(workload)?.to_rendered()
    }

    /// The typed configs of `workload` (what `render` serializes).
    pub fn render_configs(&self, workload: &Workload) -> Result<Configs, Vec<Problem>> {
        render_configs(&self.docs, workload)
    }

    /// What rendering finds for the workloads the documents name: a plain
    /// sidecar in every namespace, and the selectors of every Gateway,
    /// Sidecar and TrafficPolicy. `validate` adds these to the load's
    /// problems, so one pass shows the errors only the filters' own
    /// validation catches (a bad regex, a rule the filter refuses).
    pub fn render_problems(&self) -> Vec<Problem> {
        use super::model::Spec;
        let mut workloads = BTreeSet::new();
        workloads.insert(Workload { namespace: "default".into(), labels: BTreeMap::new() });
        for doc in &self.docs {
            let namespace = doc.key.namespace.clone();
            let selector = match &doc.spec {
                Spec::Gateway(g) => Some(g.selector.clone()),
                Spec::Sidecar(s) => s.selector.clone(),
                Spec::TrafficPolicy(t) => t.selector.clone(),
                _ => None,
            };
            if let Some(labels) = selector.filter(|l| !l.is_empty()) {
                workloads.insert(Workload { namespace: namespace.clone(), labels });
            }
            workloads.insert(Workload { namespace, labels: BTreeMap::new() });
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for workload in &workloads {
            if let Err(problems) = self.render(workload) {
                out.extend(problems.into_iter().filter(|p| seen.insert(p.to_string())));
            }
        }
        out
    }

    /// Errors and warnings of the last load.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The documents in force, sorted by kind, namespace and name.
    pub fn documents(&self) -> &[Doc] {
        &self.docs
    }

    fn apply(&mut self, files: &[PathBuf], mut problems: Vec<Problem>) -> ReloadReport {
        let mut new_files = BTreeMap::new();
        let mut rejected = Vec::new();
        for file in files {
            let previous = self.files.get(file);
            let keep_previous = |problems: &mut Vec<Problem>| {
                if let Some(docs) = previous {
                    if !docs.is_empty() {
                        problems.push(Problem {
                            severity: Severity::Warning,
                            ..file_problem(file, 0, format!("its last good {} document(s) stay in force", docs.len()))
                        });
                    }
                }
                previous.cloned()
            };
            let text = match read_file(file) {
                Ok(text) => text,
                Err(message) => {
                    problems.push(file_problem(file, 0, message));
                    if let Some(docs) = keep_previous(&mut problems) {
                        new_files.insert(file.clone(), docs);
                    }
                    continue;
                }
            };
            match parse_stream(&text) {
                Ok(yaml) => {
                    let previous = previous.map(Vec::as_slice).unwrap_or(&[]);
                    let docs = decode_file(file, &yaml, previous, &mut problems, &mut rejected);
                    new_files.insert(file.clone(), docs);
                }
                Err(e) => {
                    problems.push(file_problem(file, e.line, e.message));
                    if let Some(docs) = keep_previous(&mut problems) {
                        new_files.insert(file.clone(), docs);
                    }
                }
            }
        }
        // One document per key, as in Kubernetes: the first (by path) wins.
        let mut by_key: BTreeMap<DocKey, Doc> = BTreeMap::new();
        for docs in new_files.values() {
            for doc in docs {
                match by_key.get(&doc.key) {
                    Some(first) => problems.push(Problem {
                        file: doc.file.clone(),
                        line: name_line(doc),
                        document: doc.key.to_string(),
                        field: "metadata.name".into(),
                        message: format!(
                            "defined twice, here and at {}:{} (Kubernetes holds one object per kind, namespace and \
                             name): the one at {0}:{1} is used until one of them is removed",
                            first.file.display(),
                            name_line(first)
                        ),
                        severity: Severity::Error,
                    }),
                    None => {
                        by_key.insert(doc.key.clone(), doc.clone());
                    }
                }
            }
        }
        let docs: Vec<Doc> = by_key.into_values().collect();
        let mut checked = docs.clone();
        checked.extend(rejected);
        problems.extend(check_references(&checked));
        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        let changed = docs != self.docs;
        self.files = new_files;
        self.docs = docs;
        self.problems = problems.clone();
        report(problems, changed)
    }
}

fn report(problems: Vec<Problem>, changed: bool) -> ReloadReport {
    let (errors, warnings) = problems.into_iter().partition(Problem::is_error);
    ReloadReport { errors, warnings, changed }
}

fn file_problem(file: &Path, line: usize, message: String) -> Problem {
    Problem {
        file: file.to_path_buf(),
        line,
        document: String::new(),
        field: String::new(),
        message,
        severity: Severity::Error,
    }
}

fn read_file(file: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot read: {e}"))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file is {} bytes, over the {MAX_FILE_BYTES}-byte limit", meta.len()));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Decodes the documents of one file that parsed, applying the last-good
/// rule per document against `previous` (what was in force from the file).
/// The valid documents of a file, plus (in `rejected`) those decoded with
/// errors: not served, but still checked for references, so one pass of
/// `validate` reports every error.
fn decode_file(
    file: &Path,
    yaml: &[super::yaml::Document],
    previous: &[Doc],
    problems: &mut Vec<Problem>,
    rejected: &mut Vec<Doc>,
) -> Vec<Doc> {
    let mut docs: Vec<Doc> = Vec::new();
    for y in &expand_lists(yaml) {
        let mut findings = Findings::default();
        let mut label = String::new();
        let decoded = match decode_document(&y.root, y.line, file, &mut findings, &mut label) {
            Decoded::Valid(doc) => {
                check_document(&doc, &mut findings);
                if findings.has_errors() {
                    Decoded::Rejected(doc)
                } else {
                    Decoded::Valid(doc)
                }
            }
            other => other,
        };
        let decoded = match decoded {
            Decoded::Rejected(doc) => {
                let key = doc.key.clone();
                rejected.push(doc);
                Decoded::Invalid { key: Some(key) }
            }
            other => other,
        };
        problems.extend(findings.0.into_iter().map(|f| f.into_problem(file, &label)));
        match decoded {
            Decoded::Valid(doc) => {
                if let Some(first) = docs.iter().find(|d| d.key == doc.key) {
                    problems.push(Problem {
                        file: file.to_path_buf(),
                        line: name_line(&doc),
                        document: label,
                        field: "metadata.name".into(),
                        message: format!(
                            "defined twice in this file, here and at line {} (Kubernetes holds one object per kind, \
                             namespace and name): the one at line {0} is used until one of them is removed",
                            name_line(first)
                        ),
                        severity: Severity::Error,
                    });
                } else {
                    docs.push(doc);
                }
            }
            Decoded::Invalid { key: Some(key) } => {
                if let Some(last_good) = previous.iter().find(|d| d.key == key) {
                    problems.push(Problem {
                        file: file.to_path_buf(),
                        line: y.line,
                        document: label,
                        field: String::new(),
                        message: "its last good version stays in force".into(),
                        severity: Severity::Warning,
                    });
                    if !docs.iter().any(|d| d.key == key) {
                        docs.push(last_good.clone());
                    }
                }
            }
            Decoded::Invalid { key: None } | Decoded::Ignored | Decoded::Rejected(_) => {}
        }
    }
    docs
}

/// `kind: List` documents (what `kubectl get -o yaml` writes) become their
/// `items`, each a document of its own with its own lines.
fn expand_lists(yaml: &[super::yaml::Document]) -> Vec<super::yaml::Document> {
    use super::yaml::{Document, NodeKind};
    let mut out = Vec::with_capacity(yaml.len());
    for doc in yaml {
        let NodeKind::Map(entries) = &doc.root.kind else {
            out.push(doc.clone());
            continue;
        };
        let scalar = |key: &str| {
            entries.iter().find(|e| e.key == key).and_then(|e| match &e.value.kind {
                NodeKind::Scalar { value, .. } => Some(value.as_str()),
                _ => None,
            })
        };
        let items = entries.iter().find(|e| e.key == "items").map(|e| &e.value.kind);
        match (scalar("kind"), items) {
            (Some("List"), Some(NodeKind::Seq(items))) => {
                out.extend(items.iter().map(|item| Document { line: item.line, root: item.clone() }))
            }
            _ => out.push(doc.clone()),
        }
    }
    out
}

fn name_line(doc: &Doc) -> usize {
    line_of(&doc.tree, "metadata.name").unwrap_or(doc.line)
}

fn collect_files(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read directory: {e}"))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks: a ConfigMap's `file.yaml -> ..data/file.yaml`.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            if depth < MAX_DIR_DEPTH {
                collect_files(&path, depth + 1, out)?;
            }
        } else if meta.is_file() && is_config_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_config_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}
