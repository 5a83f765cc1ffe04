//! Watching the config directory (a mounted ConfigMap in Kubernetes).
//!
//! inotify (the `notify` crate, recursive, symlinks not followed) says when
//! anything under the directory changes; a stat-only scan every second
//! backs it up (a symlinked file outside the directory, a watch lost when
//! the directory itself is replaced), and stands in for it every 100 ms
//! where inotify is unavailable (no instances left, a file system without
//! it). A scan reads no file: it lists the config files with what `stat`
//! says of each, so edits in place, new files, removals and a ConfigMap's
//! `..data` symlink swap (which gives every key a new inode) all count.
//! Changes are debounced as istiod does: load once the directory has been
//! quiet for 100 ms, or 10 s after the first change at the latest. A load
//! reads only the files whose stat changed and parses only those whose
//! content did ([`crate::config::ConfigStore::reload_dir`]); one that
//! changed anything publishes a new generation, and every stream then
//! re-reads its workload's resources and pushes what differs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::{watch, Notify};

use super::cache::{Generation, Render};
use super::ecds::Shared;
use super::log;
use super::registry::ProblemView;
use crate::config::dir::{self, Scan};
use crate::config::Problem;

/// The stat-only scan where inotify is unavailable.
pub const POLL: Duration = Duration::from_millis(100);
/// The stat-only scan beside inotify.
pub const BACKSTOP: Duration = Duration::from_secs(1);
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
    /// Files read from disk, and files parsed, by this load.
    pub files_read: usize,
    pub files_parsed: usize,
    /// Load again soon even without a change: a file changed too recently
    /// for its stat to be trusted.
    pub recheck: bool,
}

/// Loads `dir` once and publishes the result; the first load completes
/// before any proxy is served. Returns whether to load again soon.
pub async fn load<S: ConfigSource>(dir: &Path, shared: &Arc<Shared<S>>, publish: &watch::Sender<Generation>) -> bool {
    let reload = {
        let shared = shared.clone();
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || shared.cache.renderer().reload(&dir)).await
    };
    let reload = match reload {
        Ok(r) => r,
        Err(e) => {
            log(format_args!("loading {} failed: {e}", dir.display()));
            return false;
        }
    };
    let metrics = &shared.metrics;
    metrics.reloads.fetch_add(1, Ordering::Relaxed);
    metrics.files_read.fetch_add(reload.files_read as u64, Ordering::Relaxed);
    metrics.files_parsed.fetch_add(reload.files_parsed as u64, Ordering::Relaxed);
    let previous = metrics.problems();
    // A problem still there from the last load is neither logged nor
    // counted again (its line may move as the file around it is edited).
    let known: HashSet<_> = previous.iter().map(identity).collect();
    let new: Vec<&ProblemView> = reload.problems.iter().filter(|p| !known.contains(&identity(p))).collect();
    let new_errors = new.iter().filter(|p| p.severity == "error").count();
    metrics.errors_found.fetch_add(new_errors as u64, Ordering::Relaxed);
    for p in &new {
        // A warning's text says so itself.
        let error = if p.severity == "error" { "error: " } else { "" };
        log(format_args!("config {error}{}", p.text));
    }
    let errors = reload.problems.iter().filter(|p| p.severity == "error").count();
    log(format_args!(
        "loaded {}: {errors} error(s), {} warning(s) ({} new); {} file(s) read, {} parsed{}",
        dir.display(),
        reload.problems.len() - errors,
        new.len(),
        reload.files_read,
        reload.files_parsed,
        if reload.changed { "; config changed" } else { "" }
    ));
    let problems_changed = previous != reload.problems;
    metrics.set_problems(reload.problems);
    // New problems change what status views show even when no config changed.
    publish.send_if_modified(|generation| {
        if reload.changed || problems_changed {
            *generation = Generation { id: generation.id + 1, at: Instant::now() };
            if !reload.changed {
                // Only the problems changed: nothing to render again.
                shared.cache.same_config(generation.id);
            }
            true
        } else {
            false
        }
    });
    metrics.ready.store(true, Ordering::Relaxed);
    reload.recheck
}

/// What makes two problems the same one across loads: all but the line.
fn identity(p: &ProblemView) -> (&str, &str, &str, &str, &str) {
    (p.severity, &p.file, &p.document, &p.field, &p.message)
}

/// The watch on a config directory, set up before its first load so no
/// change after that load's scan can go unseen.
pub struct DirWatch {
    dir: PathBuf,
    wake: Arc<Notify>,
    /// `None` where inotify is unavailable: the scans stand in for it.
    inotify: Option<notify::RecommendedWatcher>,
    /// The directory as scanned just before the last load.
    seen: Result<Scan, Problem>,
}

impl DirWatch {
    pub async fn start(dir: &Path) -> DirWatch {
        let wake = Arc::new(Notify::new());
        let inotify = match start_inotify(dir, wake.clone()) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                log(format_args!(
                    "watching {}: inotify unavailable ({e}); scanning every {} ms instead",
                    dir.display(),
                    POLL.as_millis()
                ));
                None
            }
        };
        let seen = scan_blocking(dir).await;
        DirWatch { dir: dir.to_path_buf(), wake, inotify, seen }
    }

    /// Loads after each debounced change until `shutdown` turns true. `recheck`:
    /// the first load asked to load again soon.
    pub async fn run<S: ConfigSource>(
        mut self,
        shared: Arc<Shared<S>>,
        publish: watch::Sender<Generation>,
        recheck: bool,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let period = if self.inotify.is_some() { BACKSTOP } else { POLL };
        let mut scans = tokio::time::interval(period);
        scans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        scans.tick().await;
        // (first change seen, last change seen)
        let now = Instant::now();
        let mut pending: Option<(Instant, Instant)> = recheck.then_some((now, now));
        loop {
            let due = pending.map(|(first, last)| (last + QUIET).min(first + MAX_DELAY));
            let woken = tokio::select! {
                _ = self.wake.notified() => Woken::Event,
                _ = scans.tick() => Woken::Scan,
                _ = sleep_until(due) => Woken::Due,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let changed = match woken {
                Woken::Event => true,
                Woken::Due => false,
                Woken::Scan => {
                    let scan = scan_blocking(&self.dir).await;
                    let changed = scan != self.seen;
                    self.seen = scan;
                    changed
                }
            };
            let now = Instant::now();
            if changed {
                pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
            }
            let Some((first, last)) = pending else { continue };
            if now.duration_since(last) < QUIET && now.duration_since(first) < MAX_DELAY {
                continue;
            }
            pending = None;
            self.seen = scan_blocking(&self.dir).await;
            if load(&self.dir, &shared, &publish).await {
                pending = Some((now, now));
            }
            if self.inotify.is_none() {
                // inotify may be back (instances freed); a directory that
                // was missing may exist now.
                self.inotify = start_inotify(&self.dir, self.wake.clone()).ok();
            }
        }
    }
}

enum Woken {
    Event,
    Scan,
    Due,
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

fn start_inotify(dir: &Path, wake: Arc<Notify>) -> notify::Result<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        // Opening and reading (ours included) are not changes; an error
        // (the event queue overflowed) may hide one.
        let matters = match &event {
            Ok(event) => match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            },
            Err(_) => true,
        };
        if matters {
            wake.notify_one();
        }
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = notify::RecommendedWatcher::new(handler, config)?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

pub async fn scan_blocking(dir: &Path) -> Result<Scan, Problem> {
    let dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || dir::scan(&dir)).await {
        Ok(scan) => scan,
        Err(e) => Err(Problem {
            file: PathBuf::new(),
            line: 0,
            document: String::new(),
            field: String::new(),
            message: format!("scanning failed: {e}"),
            severity: crate::config::Severity::Error,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::server::cache::Cache;
    use crate::server::live::LiveConfig;
    use crate::server::resources::Modules;
    use std::os::unix::fs::symlink;

    fn vs(subset: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  \
             hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, port: {{number: 9080}}}}\n      \
             headers: {{request: {{set: {{x-subset: {subset}}}}}}}\n"
        )
    }

    /// kubelet's update of a ConfigMap volume holding `vs.yaml`.
    fn project(root: &Path, stamp: &str, text: &str) {
        std::fs::create_dir(root.join(stamp)).unwrap();
        std::fs::write(root.join(stamp).join("vs.yaml"), text).unwrap();
        symlink(stamp, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A ConfigMap swap is loaded once, through inotify or through the scans
    /// alone; the loads' own reads do not count as changes.
    async fn a_configmap_swap_is_loaded_once(inotify: bool) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        project(root, "..v1", &vs("v1"));
        symlink("..data/vs.yaml", root.join("vs.yaml")).unwrap();
        let (publish, generation) = watch::channel(Generation::first());
        let (stop, stopped) = watch::channel(false);
        let cache = Cache::new(LiveConfig::new(), Modules::local(Path::new("/m")));
        let shared = Arc::new(Shared::new(cache, generation.clone(), stopped.clone(), 10));
        let mut watcher = DirWatch::start(root).await;
        if !inotify {
            watcher.inotify = None;
        }
        assert_eq!(watcher.inotify.is_some(), inotify);
        let recheck = load(root, &shared, &publish).await;
        let task = tokio::spawn(watcher.run(shared.clone(), publish, recheck, stopped));
        let reloads = || shared.metrics.reloads.load(Ordering::Relaxed);
        // A file read within the racy window is read again once: settle.
        tokio::time::sleep(QUIET * 3 + BACKSTOP.min(POLL * 3)).await;
        let settled = reloads();
        let read = shared.metrics.files_read.load(Ordering::Relaxed);

        project(root, "..v2", &vs("v2"));
        wait_for("the swap loaded", || generation.borrow().id > 1).await;
        let after_swap = reloads();
        assert!(after_swap > settled);
        assert!(shared.metrics.files_read.load(Ordering::Relaxed) > read);
        // Longer than a scan period and the debounce: nothing more happens.
        tokio::time::sleep(QUIET * 3 + if inotify { BACKSTOP } else { POLL * 3 }).await;
        // (The swap's files were written a debounce before their read: not racy.)
        assert_eq!(reloads(), after_swap, "loads without a change");
        let _ = stop.send(true);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn inotify_sees_a_configmap_swap() {
        a_configmap_swap_is_loaded_once(true).await;
    }

    #[tokio::test]
    async fn the_scans_alone_see_a_configmap_swap() {
        a_configmap_swap_is_loaded_once(false).await;
    }
}
