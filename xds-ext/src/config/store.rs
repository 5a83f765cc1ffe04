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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::decode::{decode_document, Decoded};
use super::dir::{self, Scan, Stamp};
use super::model::{Doc, DocKey};
use super::problem::{Findings, Problem, Severity};
use super::render::{check_document, check_references, line_of, render_configs, Configs};
use super::tree::{expand_lists, Source, Tree};
use super::yaml::{parse_stream, Document};
use crate::workload::{Rendered, Workload};

/// Largest input file read (a Kubernetes ConfigMap holds at most 1 MiB).
pub const MAX_FILE_BYTES: u64 = 8 << 20;

/// The documents in force, and per file what its last read gave, so a
/// reload reads only the files whose stat changed and parses only those
/// whose content did.
#[derive(Debug, Clone, Default)]
pub struct ConfigStore {
    /// Per file, what reading it last gave.
    files: BTreeMap<PathBuf, FileState>,
    /// Every document in force, sorted by key (what rendering reads); each
    /// is held here only, its file's state names it by key.
    docs: Vec<Doc>,
    /// Beside each of `docs`, a number that changes when the document does:
    /// a reload changed the config if these pairs differ.
    serials: Vec<u64>,
    next_serial: u64,
    problems: Vec<Problem>,
    /// The directory as last scanned, to tell an unchanged one at a glance.
    scan: Option<Scan>,
}

#[derive(Debug, Clone)]
struct FileState {
    /// What the content read was, by stat; `None` to read it again on the
    /// next reload (it changed too recently to trust its stat).
    stamp: Option<Stamp>,
    /// sha256 of the content read; `None` when it could not be read.
    digest: Option<[u8; 32]>,
    /// What reading and decoding it found (checks across files come after).
    problems: Vec<Problem>,
    /// Documents decoded with errors: never served, still checked for references.
    rejected: Vec<Doc>,
    /// Its valid documents, in file order.
    docs: Vec<Slot>,
}

#[derive(Debug, Clone)]
enum Slot {
    /// In `ConfigStore::docs`.
    InForce(DocKey),
    /// Defined by an earlier file too: kept here, in force should that one go.
    Shadowed(Doc, u64),
}

/// What a reload found. `errors` and `warnings` cover every file read,
/// not only what changed; `changed` says whether the documents in force
/// differ from before (if not, nothing needs re-rendering).
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub changed: bool,
    /// Files read from disk by this reload (unchanged files are not).
    pub files_read: usize,
    /// Files parsed and decoded (a file read again with the same content is not).
    pub files_parsed: usize,
    /// A file changed too recently to trust its stat: reload again soon,
    /// even if nothing else changes, to read it once more.
    pub recheck: bool,
}

#[derive(Debug, Default)]
struct Counts {
    read: usize,
    parsed: usize,
}

impl ConfigStore {
    /// An empty store: every workload gets configs that manage nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every `*.yaml`, `*.yml` and `*.json` file under `dir`
    /// (recursively, skipping dot-files and dot-directories, following
    /// symlinks, so a mounted ConfigMap's `..data` layout is read once) and
    /// applies the last-good rule against what was in force. Only files
    /// whose stat changed are read, and only those whose content changed
    /// are parsed; an unchanged directory costs a scan.
    pub fn reload_dir(&mut self, dir: &Path) -> ReloadReport {
        let scan = match dir::scan(dir) {
            Ok(scan) => scan,
            Err(problem) => {
                // An unreadable directory changes nothing: keep serving.
                self.problems = vec![problem];
                self.scan = None;
                return report(self.problems.clone(), false, Counts::default(), false);
            }
        };
        let settled = self.files.values().all(|f| f.stamp.is_some());
        if settled && self.scan.as_ref() == Some(&scan) {
            return report(self.problems.clone(), false, Counts::default(), false);
        }
        let files = scan.files.iter().map(|f| (f.path.clone(), Some(f.stamp))).collect();
        let skipped = scan.skipped.clone();
        self.scan = Some(scan);
        self.apply(files, skipped)
    }

    /// Loads files and directories (for the CLI verbs) into a new store.
    /// Files named directly are read whatever they are (`/dev/stdin` too).
    pub fn load_paths(paths: &[PathBuf]) -> (ConfigStore, Vec<Problem>) {
        let mut store = ConfigStore::new();
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                match dir::scan(path) {
                    Ok(scan) => {
                        if scan.files.is_empty() {
                            problems.push(file_problem(path, 0, "no *.yaml, *.yml or *.json files here".into()));
                        }
                        files.extend(scan.files.into_iter().map(|f| (f.path, Some(f.stamp))));
                        problems.extend(scan.skipped);
                    }
                    Err(problem) => problems.push(problem),
                }
            } else {
                files.push((path.clone(), None));
            }
        }
        let mut seen = BTreeSet::new();
        files.retain(|(f, _)| seen.insert(f.clone()));
        store.apply(files, problems);
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

    /// Loads `files` in order (a stamp: found in a directory, with what its
    /// stat said; `None`: named on the command line) against what was in
    /// force, and makes the result the documents in force.
    fn apply(&mut self, files: Vec<(PathBuf, Option<Stamp>)>, mut problems: Vec<Problem>) -> ReloadReport {
        let before: Vec<(DocKey, u64)> =
            self.docs.iter().map(|d| d.key.clone()).zip(self.serials.iter().copied()).collect();
        // Every document in force goes back to the file that holds it; the
        // documents of files that are gone go with the pool.
        let mut pool: HashMap<DocKey, (Doc, u64)> = std::mem::take(&mut self.docs)
            .into_iter()
            .zip(std::mem::take(&mut self.serials))
            .map(|(doc, serial)| (doc.key.clone(), (doc, serial)))
            .collect();
        let mut old_files = std::mem::take(&mut self.files);
        let mut counts = Counts::default();
        let mut loaded = Vec::with_capacity(files.len());
        for (path, stamp) in files {
            let previous = old_files.remove(&path).map(|state| state.take_docs(&mut pool));
            let (state, docs) = self.load_file(&path, stamp, previous, &mut counts);
            loaded.push((path, state, docs));
        }
        drop(pool);

        // One document per key, as in Kubernetes: the first (by path) wins.
        let mut in_force: BTreeMap<DocKey, (Doc, u64)> = BTreeMap::new();
        let mut order = Vec::with_capacity(loaded.len());
        for (path, mut state, docs) in loaded {
            problems.extend(state.problems.iter().cloned());
            for (doc, serial) in docs {
                if let Some((first, _)) = in_force.get(&doc.key) {
                    problems.push(Problem {
                        file: doc.file.clone(),
                        line: name_line(&doc),
                        document: doc.key.to_string(),
                        field: "metadata.name".into(),
                        message: format!(
                            "defined twice, here and at {}:{} (Kubernetes holds one object per kind, namespace and \
                             name): the one at {0}:{1} is used until one of them is removed",
                            first.file.display(),
                            name_line(first)
                        ),
                        severity: Severity::Error,
                    });
                    state.docs.push(Slot::Shadowed(doc, serial));
                } else {
                    state.docs.push(Slot::InForce(doc.key.clone()));
                    in_force.insert(doc.key.clone(), (doc, serial));
                }
            }
            order.push(path.clone());
            self.files.insert(path, state);
        }
        let (mut docs, serials): (Vec<Doc>, Vec<u64>) = in_force.into_values().unzip();

        // References are checked over the rejected documents too (so one
        // pass of `validate` reports every error); lent by their files.
        let served = docs.len();
        let mut lent = Vec::with_capacity(order.len());
        for path in &order {
            if let Some(state) = self.files.get_mut(path) {
                lent.push(state.rejected.len());
                docs.append(&mut state.rejected);
            }
        }
        problems.extend(check_references(&docs));
        let mut rejected = docs.split_off(served);
        for (path, n) in order.iter().zip(lent).rev() {
            if let Some(state) = self.files.get_mut(path) {
                state.rejected = rejected.split_off(rejected.len() - n);
            }
        }

        problems.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        let changed = !docs.iter().map(|d| &d.key).zip(&serials).eq(before.iter().map(|(k, s)| (k, s)));
        let recheck = self.files.values().any(|f| f.stamp.is_none());
        self.docs = docs;
        self.serials = serials;
        self.problems = problems.clone();
        report(problems, changed, counts, recheck)
    }

    /// One file against its previous state (and documents): not read when
    /// its stamp is unchanged, not parsed when its content is.
    fn load_file(
        &mut self,
        path: &Path,
        stamp: Option<Stamp>,
        previous: Option<(FileState, Vec<(Doc, u64)>)>,
        counts: &mut Counts,
    ) -> (FileState, Vec<(Doc, u64)>) {
        let (state, prev_docs) = match previous {
            Some((state, docs)) => (Some(state), docs),
            None => (None, Vec::new()),
        };
        let state = match state {
            Some(state) if stamp.is_some() && state.stamp == stamp => return (state, prev_docs),
            other => other,
        };
        let failed = |line: usize, message: String, stamp: Option<Stamp>, prev_docs: Vec<(Doc, u64)>| {
            let mut problems = vec![file_problem(path, line, message)];
            keep_previous(path, &prev_docs, &mut problems);
            (FileState { stamp, digest: None, problems, rejected: Vec::new(), docs: Vec::new() }, prev_docs)
        };
        if let Some(size) = stamp.map(|s| s.size()).filter(|size| *size > MAX_FILE_BYTES) {
            return failed(0, over_limit(size), stamp, prev_docs);
        }
        counts.read += 1;
        let read_at = SystemTime::now();
        let read = match stamp {
            Some(_) => read_found(path),
            None => read_named(path),
        };
        let (bytes, read_stamp) = match read {
            Ok(read) => read,
            // Unreadable as of this stamp: tried again once the stat changes.
            Err(message) => return failed(0, message, stamp, prev_docs),
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let stamp = read_stamp.filter(|s| !s.is_racy(read_at));
        if let Some(mut state) = state.filter(|s| s.digest == Some(digest)) {
            state.stamp = stamp;
            return (state, prev_docs);
        }
        counts.parsed += 1;
        let mut problems = Vec::new();
        let mut rejected = Vec::new();
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let line = line_at(&e.as_bytes()[..at]);
                return failed(line, format!("not UTF-8 text (byte {at})"), stamp, prev_docs);
            }
        };
        if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            let line = line_at(&text.as_bytes()[..at]);
            let message = format!("control character {:?} (byte {at}): binary data, not YAML or JSON", c);
            return failed(line, message, stamp, prev_docs);
        }
        let docs = match parse_stream(&text) {
            Err(e) => {
                problems.push(file_problem(path, e.line, e.message));
                keep_previous(path, &prev_docs, &mut problems);
                prev_docs
            }
            Ok(yaml) => {
                let source = Source::new(text);
                let decoded = decode_file(path, &source, yaml, &prev_docs, &mut problems, &mut rejected);
                // The documents stay as long as they are in force, but were
                // built among the parse's short-lived allocations, pinning
                // the pages those leave free. Copied now, they lie together.
                let docs: Vec<Doc> = decoded.to_vec();
                drop(decoded);
                // A document as it was keeps its serial: nothing changed for it.
                let before: HashMap<&DocKey, &(Doc, u64)> = prev_docs.iter().map(|d| (&d.0.key, d)).collect();
                docs.into_iter()
                    .map(|doc| {
                        let serial = match before.get(&doc.key) {
                            Some((old, serial)) if *old == doc => *serial,
                            _ => self.serial(),
                        };
                        (doc, serial)
                    })
                    .collect()
            }
        };
        (FileState { stamp, digest: Some(digest), problems, rejected, docs: Vec::new() }, docs)
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}

impl FileState {
    /// Takes the file's documents back: those in force from `pool`.
    fn take_docs(mut self, pool: &mut HashMap<DocKey, (Doc, u64)>) -> (FileState, Vec<(Doc, u64)>) {
        let docs = std::mem::take(&mut self.docs)
            .into_iter()
            .filter_map(|slot| match slot {
                Slot::InForce(key) => pool.remove(&key),
                Slot::Shadowed(doc, serial) => Some((doc, serial)),
            })
            .collect();
        (self, docs)
    }
}

fn report(problems: Vec<Problem>, changed: bool, counts: Counts, recheck: bool) -> ReloadReport {
    let (errors, warnings) = problems.into_iter().partition(Problem::is_error);
    ReloadReport { errors, warnings, changed, files_read: counts.read, files_parsed: counts.parsed, recheck }
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

/// The warning that a file's previous documents stay in force.
fn keep_previous(file: &Path, previous: &[(Doc, u64)], problems: &mut Vec<Problem>) {
    if !previous.is_empty() {
        problems.push(Problem {
            severity: Severity::Warning,
            ..file_problem(file, 0, format!("its last good {} document(s) stay in force", previous.len()))
        });
    }
}

/// The 1-based line that the byte after `before` is on.
fn line_at(before: &[u8]) -> usize {
    1 + before.iter().filter(|b| **b == b'\n').count()
}

fn over_limit(size: u64) -> String {
    format!("file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")
}

/// A file found in a config directory. Opened without blocking and refused
/// unless regular (it may have become a FIFO since the scan); its stat is
/// taken from the open file, so it describes exactly what was read.
fn read_found(file: &Path) -> Result<(Vec<u8>, Option<Stamp>), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = opened.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    Ok((read_bounded(opened, meta.len())?, Some(Stamp::of(&meta))))
}

/// A file named on the command line: whatever it is (a pipe, `/dev/stdin`).
fn read_named(file: &Path) -> Result<(Vec<u8>, Option<Stamp>), String> {
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let meta = opened.metadata().map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_file() && meta.len() > MAX_FILE_BYTES {
        return Err(over_limit(meta.len()));
    }
    Ok((read_bounded(opened, meta.len())?, meta.is_file().then(|| Stamp::of(&meta))))
}

/// At most [`MAX_FILE_BYTES`] (a file may grow while it is read).
fn read_bounded(file: std::fs::File, size: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::with_capacity(usize::try_from(size.min(MAX_FILE_BYTES)).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("file is over the {MAX_FILE_BYTES}-byte limit"));
    }
    Ok(bytes)
}

/// Decodes the documents of one file that parsed, applying the last-good
/// rule per document against `previous` (what was in force from the file).
/// The valid documents of a file, plus (in `rejected`) those decoded with
/// errors: not served, but still checked for references, so one pass of
/// `validate` reports every error.
fn decode_file(
    file: &Path,
    source: &Arc<Source>,
    yaml: Vec<Document>,
    previous: &[(Doc, u64)],
    problems: &mut Vec<Problem>,
    rejected: &mut Vec<Doc>,
) -> Vec<Doc> {
    let mut docs: Vec<Doc> = Vec::new();
    for (index, y) in expand_lists(yaml).into_iter().enumerate() {
        let mut findings = Findings::default();
        let mut label = String::new();
        let tree = Tree::new(source, index);
        let decoded = match decode_document(&y.root, tree, y.line, file, &mut findings, &mut label) {
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
                if let Some((last_good, _)) = previous.iter().find(|(d, _)| d.key == key) {
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

fn name_line(doc: &Doc) -> usize {
    line_of(&doc.tree, "metadata.name").unwrap_or(doc.line)
}
