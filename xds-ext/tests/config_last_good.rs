//! Reloading a config directory: the last-good rule, ConfigMap layouts,
//! and what `changed` reports.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod config_common;

use std::fs;
use std::path::Path;

use config_common::workload;
use xds_ext::config::ConfigStore;

fn vs(name: &str, subset_weight: (u32, u32)) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - route:
    - {{destination: {{host: {name}, port: {{number: 9080}}}}, weight: {}}}
    - {{destination: {{host: {name}-canary, port: {{number: 9080}}}}, weight: {}}}
",
        subset_weight.0, subset_weight.1
    )
}

fn weights(store: &ConfigStore, host: &str) -> Vec<u64> {
    let configs = store.render_configs(&workload("default", "app=x")).unwrap();
    let vh = configs.routing.virtual_hosts.iter().find(|v| v.name.starts_with(host)).unwrap();
    vh.routes[0].route.as_ref().unwrap().iter().map(|d| u64::from(d.weight.unwrap())).collect()
}

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

#[test]
fn a_valid_edit_applies_and_reports_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    write(dir.path(), "reviews.yaml", &vs("reviews", (90, 10)));
    let report = store.reload_dir(dir.path());
    assert!(report.errors.is_empty() && report.changed, "{report:?}");
    assert_eq!(weights(&store, "reviews"), [90, 10]);

    let report = store.reload_dir(dir.path());
    assert!(!report.changed, "nothing changed on disk");

    write(dir.path(), "reviews.yaml", &vs("reviews", (50, 50)));
    let report = store.reload_dir(dir.path());
    assert!(report.changed);
    assert_eq!(weights(&store, "reviews"), [50, 50]);
}

#[test]
fn a_file_that_does_not_parse_keeps_its_last_good_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    write(dir.path(), "reviews.yaml", &vs("reviews", (90, 10)));
    store.reload_dir(dir.path());

    write(dir.path(), "reviews.yaml", "apiVersion: [unclosed\n");
    let report = store.reload_dir(dir.path());
    assert!(!report.changed);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].to_string().contains("reviews.yaml:2: YAML syntax error"), "{}", report.errors[0]);
    assert!(report.warnings.iter().any(|w| w.message.contains("last good 1 document(s) stay in force")));
    assert_eq!(weights(&store, "reviews"), [90, 10]);
    assert_eq!(store.problems().len(), 2);

    // Fixing the file recovers, and the problems go away.
    write(dir.path(), "reviews.yaml", &vs("reviews", (70, 30)));
    let report = store.reload_dir(dir.path());
    assert!(report.errors.is_empty() && report.changed);
    assert_eq!(weights(&store, "reviews"), [70, 30]);
    assert!(store.problems().is_empty());
}

#[test]
fn an_invalid_document_keeps_its_last_good_version_and_others_apply() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    write(dir.path(), "all.yaml", &format!("{}---\n{}", vs("reviews", (90, 10)), vs("ratings", (90, 10))));
    store.reload_dir(dir.path());

    // reviews breaks (both weights 0), ratings changes validly.
    write(dir.path(), "all.yaml", &format!("{}---\n{}", vs("reviews", (0, 0)), vs("ratings", (60, 40))));
    let report = store.reload_dir(dir.path());
    assert!(report.changed);
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert_eq!(
        report.errors[0].to_string(),
        format!(
            "{}:7: VirtualService default/reviews: spec.http[0].route: every destination has weight 0 (or none): give at least one a weight above 0 (Istio refuses a total of 0)",
            dir.path().join("all.yaml").display()
        )
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.document == "VirtualService default/reviews"
                && w.message == "its last good version stays in force")
    );
    assert_eq!(weights(&store, "reviews"), [90, 10], "last good reviews");
    assert_eq!(weights(&store, "ratings"), [60, 40], "ratings applies at once");
}

#[test]
fn a_new_invalid_document_is_simply_dropped_and_a_removed_file_takes_its_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    write(dir.path(), "a.yaml", &vs("reviews", (90, 10)));
    write(dir.path(), "b.yaml", &vs("ratings", (0, 0)));
    let report = store.reload_dir(dir.path());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(store.documents().len(), 1);

    fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let report = store.reload_dir(dir.path());
    assert!(report.changed);
    assert!(store.documents().is_empty());
}

#[test]
fn a_mounted_configmap_is_read_once_through_its_symlinks() {
    // kubelet's layout: ..2024_01_01/file.yaml, ..data -> ..2024_01_01, file.yaml -> ..data/file.yaml
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("..2024_01_01_00_00_00.1");
    fs::create_dir(&version).unwrap();
    write(&version, "reviews.yaml", &vs("reviews", (90, 10)));
    write(&version, "notes.txt", "not config");
    std::os::unix::fs::symlink(&version, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/reviews.yaml", dir.path().join("reviews.yaml")).unwrap();
    std::os::unix::fs::symlink("..data/notes.txt", dir.path().join("notes.txt")).unwrap();
    fs::create_dir(dir.path().join("nested")).unwrap();
    write(&dir.path().join("nested"), "ratings.yml", &vs("ratings", (80, 20)));
    write(dir.path(), ".hidden.yaml", "not: [valid");

    let mut store = ConfigStore::new();
    let report = store.reload_dir(dir.path());
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(store.documents().len(), 2);
    assert_eq!(weights(&store, "ratings"), [80, 20]);

    // An atomic ConfigMap update swaps ..data.
    let next = dir.path().join("..2024_01_01_00_00_01.2");
    fs::create_dir(&next).unwrap();
    write(&next, "reviews.yaml", &vs("reviews", (10, 90)));
    fs::remove_file(dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink(&next, dir.path().join("..data")).unwrap();
    let report = store.reload_dir(dir.path());
    assert!(report.changed && report.errors.is_empty(), "{report:?}");
    assert_eq!(weights(&store, "reviews"), [10, 90]);
}

#[test]
fn an_unreadable_directory_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = ConfigStore::new();
    write(dir.path(), "a.yaml", &vs("reviews", (90, 10)));
    store.reload_dir(dir.path());
    let report = store.reload_dir(&dir.path().join("missing"));
    assert!(!report.changed);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(store.documents().len(), 1);
}

#[test]
fn an_empty_store_renders_configs_that_manage_nothing() {
    let store = ConfigStore::default();
    let rendered = store.render(&workload("default", "app=x")).unwrap();
    assert_eq!(rendered.resources.len(), 6);
    assert_eq!(rendered.resources["switchyard.routing"], r#"{"version":1,"virtual_hosts":[]}"#);
    assert_eq!(rendered.resources["switchyard.fault"], r#"{"version":1,"virtual_hosts":[]}"#);
    assert_eq!(rendered.resources["switchyard.mirror"], r#"{"version":1,"virtual_hosts":[]}"#);
    assert_eq!(
        rendered.resources["switchyard.egress"],
        r#"{"version":1,"outbound_traffic_policy":"ALLOW_ANY","hosts":[]}"#
    );
    assert_eq!(rendered.resources["switchyard.egress"], rendered.resources["switchyard.egress-tls"]);
    // The combined config keeps routing only: it still strips a client's
    // cluster header; ALLOW_ANY egress and empty fault and mirror do nothing.
    assert_eq!(rendered.resources["switchyard.http"], r#"{"version":1,"routing":{"version":1,"virtual_hosts":[]}}"#);
}
