//! Reloading a config directory reads only the files whose stat changed
//! and parses only those whose content changed; the counts come from the
//! store's own report (what the server's metrics add up).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use xds_ext::config::dir::RACY_WINDOW;
use xds_ext::config::{ConfigStore, ReloadReport, MAX_FILE_BYTES};

fn vs(name: &str, version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{name}]
  http:
  - route:
    - destination: {{host: {name}, port: {{number: 9080}}}}
      headers: {{request: {{set: {{x-version: {version}}}}}}}
"
    )
}

/// Waits out the window in which a file's stat cannot be trusted yet, so
/// the counts below are exact (a file changed within it is read twice).
fn settle() {
    std::thread::sleep(RACY_WINDOW + Duration::from_millis(20));
}

fn counts(report: &ReloadReport) -> (usize, usize, bool) {
    (report.files_read, report.files_parsed, report.changed)
}

#[test]
fn only_changed_files_are_read_and_only_changed_content_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in ["reviews", "ratings", "details"] {
        fs::write(root.join(format!("{name}.yaml")), vs(name, "v1")).unwrap();
    }
    settle();
    let mut store = ConfigStore::new();
    assert_eq!(counts(&store.reload_dir(root)), (3, 3, true));
    assert_eq!(counts(&store.reload_dir(root)), (0, 0, false), "an unchanged directory is only scanned");

    fs::write(root.join("ratings.yaml"), vs("ratings", "v2")).unwrap();
    settle();
    assert_eq!(counts(&store.reload_dir(root)), (1, 1, true), "the edited file alone");

    // The same bytes again: a new stat, the same content.
    fs::write(root.join("ratings.yaml"), vs("ratings", "v2")).unwrap();
    settle();
    let report = store.reload_dir(root);
    assert_eq!(counts(&report), (1, 0, false), "read again, not parsed again");
    assert!(report.errors.is_empty() && report.warnings.is_empty(), "{report:?}");
    assert_eq!(store.documents().len(), 3);
}

#[test]
fn a_configmap_swap_reads_every_key_and_parses_only_the_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let project = |stamp: &str, reviews: &str| {
        fs::create_dir(root.join(stamp)).unwrap();
        fs::write(root.join(stamp).join("reviews.yaml"), vs("reviews", reviews)).unwrap();
        fs::write(root.join(stamp).join("ratings.yaml"), vs("ratings", "v1")).unwrap();
        symlink(stamp, root.join("..data_tmp")).unwrap();
        fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    };
    project("..2026_01_01", "v1");
    for key in ["reviews.yaml", "ratings.yaml"] {
        symlink(format!("..data/{key}"), root.join(key)).unwrap();
    }
    settle();
    let mut store = ConfigStore::new();
    assert_eq!(counts(&store.reload_dir(root)), (2, 2, true));

    project("..2026_01_02", "v2");
    settle();
    assert_eq!(counts(&store.reload_dir(root)), (2, 1, true), "kubelet writes every key anew");
}

#[test]
fn a_refused_oversized_file_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("reviews.yaml"), vs("reviews", "v1")).unwrap();
    let big = fs::File::create(root.join("big.yaml")).unwrap();
    big.set_len(MAX_FILE_BYTES + 1).unwrap();
    settle();
    let mut store = ConfigStore::new();
    let report = store.reload_dir(root);
    assert_eq!(counts(&report), (1, 1, true), "only reviews.yaml is read");
    let big_path = root.join("big.yaml").display().to_string();
    assert_eq!(
        report.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("{big_path}: file is {} bytes, over the {MAX_FILE_BYTES}-byte limit", MAX_FILE_BYTES + 1)]
    );

    fs::write(root.join("reviews.yaml"), vs("reviews", "v2")).unwrap();
    settle();
    let report = store.reload_dir(root);
    assert_eq!(counts(&report), (1, 1, true), "a valid edit next to it reads the edited file only");
    assert_eq!(report.errors.len(), 1, "still reported: {report:?}");

    fs::remove_file(root.join("big.yaml")).unwrap();
    let report = store.reload_dir(root);
    assert_eq!(counts(&report), (0, 0, false));
    assert!(report.errors.is_empty(), "{report:?}");
}

#[test]
fn an_edit_in_place_right_after_a_read_is_not_missed() {
    // The same size, the same inode, and possibly the same tick of the file
    // system's clock as the read before it: only the content tells.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reviews.yaml");
    let mut store = ConfigStore::new();
    fs::write(&path, vs("reviews", "v1")).unwrap();
    store.reload_dir(dir.path());
    fs::write(&path, vs("reviews", "v2")).unwrap();
    let report = store.reload_dir(dir.path());
    assert!(report.changed, "{report:?}");
    assert_eq!(report.files_parsed, 1);
    settle();
    let report = store.reload_dir(dir.path());
    assert_eq!((report.files_parsed, report.changed, report.recheck), (0, false, false), "checked by content");
    assert_eq!(counts(&store.reload_dir(dir.path())), (0, 0, false), "then trusted by its stat");
}

#[test]
fn a_shadowed_duplicate_takes_over_when_the_first_goes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("a.yaml"), vs("reviews", "v1")).unwrap();
    fs::write(root.join("b.yaml"), vs("reviews", "v2")).unwrap();
    settle();
    let mut store = ConfigStore::new();
    let report = store.reload_dir(root);
    assert_eq!(report.errors.len(), 1, "defined twice: {report:?}");
    let subset = |store: &ConfigStore| {
        let doc = &store.documents()[0];
        assert_eq!(store.documents().len(), 1);
        doc.file.file_name().unwrap().to_string_lossy().into_owned()
    };
    assert_eq!(subset(&store), "a.yaml", "the first by path wins");

    fs::remove_file(root.join("a.yaml")).unwrap();
    let report = store.reload_dir(root);
    assert!(report.changed && report.errors.is_empty(), "{report:?}");
    assert_eq!(report.files_read, 0, "b.yaml is unchanged: its document was kept, not read again");
    assert_eq!(subset(&store), "b.yaml");
}

#[test]
fn bad_entries_are_warnings_that_stay_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::write(root.join("reviews.yaml"), vs("reviews", "v1")).unwrap();
    symlink("gone.yaml", root.join("broken.yaml")).unwrap();
    let mut store = ConfigStore::new();
    let report = store.reload_dir(root);
    let broken = root.join("broken.yaml").display().to_string();
    assert_eq!(
        report.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!("warning: {broken}: a broken symlink (-> gone.yaml, which does not exist): skipped")]
    );
    fs::write(root.join("gone.yaml"), vs("ratings", "v1")).unwrap();
    let report = store.reload_dir(root);
    assert!(report.warnings.is_empty(), "{report:?}");
    assert!(report.changed);
    // Both names lead to the one file: read through each, so defined twice.
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].message.contains("defined twice"), "{report:?}");
}

#[test]
fn a_fifo_named_on_the_command_line_is_read() {
    // In a directory a FIFO is skipped (dir's tests); named on its own it is
    // what a pipe looks like: `kubectl get vs -o yaml | xds-ext validate /dev/stdin`.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("piped");
    let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || fs::write(path, vs("reviews", "v1")).unwrap())
    };
    let (store, problems) = ConfigStore::load_paths(&[path]);
    writer.join().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(store.documents().len(), 1);
}
