//! Watching the config directory (a mounted ConfigMap in Kubernetes).
//!
//! Polls every 100 ms and fingerprints the files' names and contents, so
//! edits in place, new files, removals and a ConfigMap's `..data` symlink
//! swap all count, and an unchanged directory costs a few small reads.
//! Changes are debounced as istiod does: load once the directory has been
//! quiet for 100 ms, or 10 s after the first change at the latest. A load
//! that changed anything publishes a new generation; every stream then
//! re-reads its workload's resources and pushes what differs.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::cache::{Generation, Render};
use super::ecds::Shared;
use super::log;
use super::registry::ProblemView;

pub const POLL: Duration = Duration::from_millis(100);
pub const QUIET: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// The config side as the watcher sees it: load a directory, list its problems.
pub trait ConfigSource: Render {
    fn reload(&self, dir: &Path) -> Reload;
}

/// What a load found.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// Every problem (errors and warnings) of the directory now.
    pub problems: Vec<ProblemView>,
    /// Whether the config any workload could receive changed.
    pub changed: bool,
}

/// Loads `dir` once (the first load, before serving) and publishes the result.
pub async fn load<S: ConfigSource>(dir: &Path, shared: &Arc<Shared<S>>, publish: &watch::Sender<Generation>) {
    let reload = {
        let shared = shared.clone();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || shared.cache.renderer().reload(&dir)).await
    };
    let reload = match reload {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("loading {} failed: {e}", dir.display()));
            return;
        }
    };
    let metrics = &shared.metrics;
    metrics.reloads.fetch_add(1, Ordering::Relaxed);
    let errors = reload.problems.iter().filter(|p| p.severity == "error").count();
    if errors > 0 {
        metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
    }
    for p in &reload.problems {
        log(format_args!("config {}: {}", p.severity, p.text));
    }
    log(format_args!(
        "loaded {}: {errors} error(s), {} warning(s){}",
        dir.display(),
        reload.problems.len() - errors,
        if reload.changed { ", config changed" } else { "" }
    ));
    let problems_changed = metrics.problems() != reload.problems;
    metrics.set_problems(reload.problems);
    // New problems change what status views show even when no config changed.
    publish.send_if_modified(|generation| {
        if reload.changed || problems_changed {
            *generation = Generation { id: generation.id + 1, at: Instant::now() };
            true
        } else {
            false
        }
    });
    metrics.ready.store(true, Ordering::Relaxed);
}

/// Watches `dir` (whose content last loaded had fingerprint `loaded`) until `shutdown` turns true, loading after each debounced change.
pub async fn watch_dir<S: ConfigSource>(
    dir: PathBuf,
    shared: Arc<Shared<S>>,
    publish: watch::Sender<Generation>,
    mut loaded: String,
    mut shutdown: watch::Receiver<bool>,
) {
    // (fingerprint, first change seen, last change seen)
    let mut pending: Option<(String, Instant, Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = Instant::now();
        let current = fingerprint_blocking(&dir).await;
        pending = match pending {
            _ if current == loaded => None,
            None => Some((current, now, now)),
            Some((seen, first, _)) if seen != current => Some((current, first, now)),
            same => same,
        };
        if let Some((fingerprint, first, last)) = &pending {
            if now.duration_since(*last) >= QUIET || now.duration_since(*first) >= MAX_DELAY {
                loaded = fingerprint.clone();
                pending = None;
                load(&dir, &shared, &publish).await;
            }
        }
    }
}

pub async fn fingerprint_blocking(dir: &Path) -> String {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || fingerprint(&dir)).await.unwrap_or_default()
}

/// A hash of every file's path and content under `dir`, following symlinks
/// and skipping hidden entries (a ConfigMap's `..data` and `..<timestamp>`
/// directories are reached through the visible symlinks). An unreadable
/// directory has a fingerprint too, so its loss is a change.
pub fn fingerprint(dir: &Path) -> String {
    let mut hasher = Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let mut entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect::<Vec<_>>(),
            Err(e) => {
                hasher.update(format!("error {}: {}\n", path.display(), e.kind()).as_bytes());
                continue;
            }
        };
        entries.sort();
        for entry in entries {
            let hidden = entry.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if entry.is_dir() {
                stack.push(entry);
                continue;
            }
            hasher.update(entry.to_string_lossy().as_bytes());
            match std::fs::read(&entry) {
                Ok(bytes) => {
                    hasher.update((bytes.len() as u64).to_le_bytes());
                    hasher.update(&bytes);
                }
                Err(e) => hasher.update(format!("unreadable: {}\n", e.kind()).as_bytes()),
            }
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_content_and_configmap_symlink_swaps() {
        let root = &std::env::temp_dir().join(format!("xds-ext-watch-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir(root).unwrap();
        std::fs::create_dir(root.join("..2024_01")).unwrap();
        std::fs::write(root.join("..2024_01/vs.yaml"), "a: 1\n").unwrap();
        std::os::unix::fs::symlink("..2024_01", root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/vs.yaml", root.join("vs.yaml")).unwrap();
        let first = fingerprint(root);
        assert_eq!(first, fingerprint(root));

        // kubelet's update: a new timestamped dir, then `..data` swapped atomically.
        std::fs::create_dir(root.join("..2024_02")).unwrap();
        std::fs::write(root.join("..2024_02/vs.yaml"), "a: 2\n").unwrap();
        std::os::unix::fs::symlink("..2024_02", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        let second = fingerprint(root);
        assert_ne!(first, second);

        std::fs::write(root.join("extra.yaml"), "").unwrap();
        assert_ne!(second, fingerprint(root));
        assert_ne!(fingerprint(&root.join("missing")), fingerprint(root));
        std::fs::remove_dir_all(root).unwrap();
    }
}
