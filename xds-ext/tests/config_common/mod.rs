//! Helpers shared by the config tests: documents in temp files, bookinfo
//! fixtures, workloads, rendered JSON.

#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::path::PathBuf;

use serde_json::Value;
use xds_ext::config::{ConfigStore, Problem, Severity};
use xds_ext::workload::Workload;

/// Loads documents given as (file name, YAML) from a temp dir.
pub fn load(files: &[(&str, &str)]) -> (ConfigStore, Vec<Problem>) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let (store, problems) = ConfigStore::load_paths(&paths);
    // Keep problem paths readable: strip the temp dir.
    let problems = problems
        .into_iter()
        .map(|mut p| {
            if let Ok(rel) = p.file.strip_prefix(dir.path()) {
                p.file = rel.to_path_buf();
            }
            p
        })
        .collect();
    (store, problems)
}

pub fn load_one(yaml: &str) -> (ConfigStore, Vec<Problem>) {
    load(&[("test.yaml", yaml)])
}

pub fn errors(problems: &[Problem]) -> Vec<String> {
    problems.iter().filter(|p| p.severity == Severity::Error).map(ToString::to_string).collect()
}

pub fn warnings(problems: &[Problem]) -> Vec<String> {
    problems.iter().filter(|p| p.severity == Severity::Warning).map(ToString::to_string).collect()
}

pub fn bookinfo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo")
}

/// Loads bookinfo fixture files; they must be free of errors and warnings.
pub fn bookinfo(files: &[&str]) -> ConfigStore {
    let paths: Vec<PathBuf> = files.iter().map(|f| bookinfo_dir().join(f)).collect();
    let (store, problems) = ConfigStore::load_paths(&paths);
    assert!(problems.is_empty(), "{problems:#?}");
    store
}

pub fn workload(namespace: &str, labels: &str) -> Workload {
    Workload {
        namespace: namespace.to_string(),
        labels: labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
    }
}

/// Renders and parses each resource's JSON.
pub fn render(store: &ConfigStore, w: &Workload) -> serde_json::Map<String, Value> {
    let rendered = store.render(w).unwrap_or_else(|p| panic!("render failed: {p:#?}"));
    rendered.resources.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect()
}

pub const SERVICES: &str = "services.yaml";
pub const RULES: &str = "destination-rule-all.yaml";
