//! Rendered resources per distinct workload, per config generation.
//!
//! Proxies with the same namespace and labels share one render. When the
//! config changes the generation goes up and each workload is re-rendered
//! once, on the first stream that asks. A workload whose render fails keeps
//! its last good resources (and the error, for status views).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use super::resources::{Built, Modules, Resources};
use crate::workload::{Rendered, Workload};

/// The config side, as the server sees it: a workload in, its filter JSON out.
/// An error is the problem text shown in status views and logs.
pub trait Render: Send + Sync + 'static {
    fn render(&self, workload: &Workload) -> Result<Rendered, String>;
}

/// One published config: its sequence number and when it was published (the
/// start of the push latency a metric measures).
#[derive(Debug, Clone, Copy)]
pub struct Generation {
    pub id: u64,
    pub at: Instant,
}

impl Generation {
    pub fn first() -> Self {
        Generation { id: 0, at: Instant::now() }
    }
}

/// What a workload receives now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub resources: Arc<Resources>,
    /// Why the latest render failed, if it did (the resources are then the last good ones).
    pub error: Option<String>,
}

struct Entry {
    generation: u64,
    snapshot: Snapshot,
}

pub struct Cache<R> {
    renderer: R,
    modules: Modules,
    entries: Mutex<HashMap<Workload, Entry>>,
    /// Every resource in use, by name and version: workloads whose resource
    /// is the same hold one copy of it (a large policy gives most workloads
    /// the same routing config).
    built: Mutex<Interned>,
    /// The generations, first to last, that render the same: each one after
    /// the first only brought new problems to show.
    same: Mutex<(u64, u64)>,
}

#[derive(Default)]
struct Interned {
    by_version: HashMap<(String, String), Weak<Built>>,
    /// Past this many entries, those no workload holds are dropped.
    prune_at: usize,
}

impl<R: Render> Cache<R> {
    pub fn new(renderer: R, modules: Modules) -> Self {
        Cache {
            renderer,
            modules,
            entries: Mutex::new(HashMap::new()),
            built: Mutex::default(),
            same: Mutex::default(),
        }
    }

    /// Says that `generation` renders as the one before it did (the config
    /// did not change): what was rendered for that one is served again.
    pub fn same_config(&self, generation: u64) {
        let mut same = self.same.lock().unwrap_or_else(PoisonError::into_inner);
        if same.1 + 1 != generation || same.1 == 0 {
            same.0 = generation.saturating_sub(1);
        }
        same.1 = generation;
    }

    pub fn renderer(&self) -> &R {
        &self.renderer
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The resources of `workload` at `generation`, rendering if this
    /// generation has not been rendered for it yet.
    pub fn get(&self, workload: &Workload, generation: u64) -> Snapshot {
        let (first, last) = *self.same.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |g: u64| first <= g && g <= last;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(workload) {
            if entry.generation == generation || (same(entry.generation) && same(generation)) {
                return entry.snapshot.clone();
            }
        }
        // On a thread of its own, so in a malloc arena of its own: a render
        // frees far more than it keeps, and the few small blocks the cache
        // keeps (below) would otherwise pin the pages of that garbage.
        let rendered = std::thread::scope(|scope| {
            let render = std::thread::Builder::new()
                .name("render".into())
                .spawn_scoped(scope, || self.renderer.render(workload));
            match render.map(|thread| thread.join()) {
                Ok(Ok(rendered)) => rendered,
                Ok(Err(_)) => Err("rendering panicked".to_owned()),
                Err(e) => Err(format!("starting a render thread: {e}")),
            }
        });
        let rendered = rendered.and_then(|r| self.build(&r));
        let previous = entries.get(workload).map(|e| e.snapshot.resources.clone()).unwrap_or_default();
        let snapshot = match rendered {
            Ok(resources) => Snapshot { resources: Arc::new(resources), error: None },
            Err(error) => Snapshot { resources: previous, error: Some(error) },
        };
        entries.insert(workload.clone(), Entry { generation, snapshot: snapshot.clone() });
        drop(entries);
        // Rendering a large policy frees more than it keeps.
        super::memory::release();
        snapshot
    }

    /// Forgets a workload no proxy asks for any more.
    pub fn forget(&self, workload: &Workload) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).remove(workload);
    }

    fn build(&self, rendered: &Rendered) -> Result<Resources, String> {
        rendered
            .resources
            .iter()
            .map(|(name, json)| Ok((name.clone(), self.intern(self.modules.build(name, json)?))))
            .collect()
    }

    /// The copy of `built` already in use, if any.
    fn intern(&self, built: Built) -> Arc<Built> {
        let mut interned = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (built.name.clone(), built.version.clone());
        if let Some(known) = interned.by_version.get(&key).and_then(Weak::upgrade) {
            if known.resource == built.resource {
                return known;
            }
        }
        let built = Arc::new(built);
        interned.by_version.insert(key, Arc::downgrade(&built));
        if interned.by_version.len() > interned.prune_at {
            interned.by_version.retain(|_, known| known.strong_count() > 0);
            interned.prune_at = (interned.by_version.len() * 2).max(64);
        }
        built
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod fake {
    //! A renderer for tests: a JSON document per resource, the same for
    //! every workload except where a label `app` picks an override.
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::workload::RESOURCES;

    #[derive(Default)]
    pub struct FakeRenderer {
        pub by_app: Mutex<BTreeMap<String, Result<String, String>>>,
        pub renders: std::sync::atomic::AtomicUsize,
    }

    impl FakeRenderer {
        pub fn set(&self, app: &str, result: Result<&str, &str>) {
            self.by_app.lock().unwrap().insert(app.into(), result.map(str::to_owned).map_err(str::to_owned));
        }
    }

    impl Render for FakeRenderer {
        fn render(&self, workload: &Workload) -> Result<Rendered, String> {
            self.renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let app = workload.labels.get("app").cloned().unwrap_or_default();
            let json = self.by_app.lock().unwrap().get(&app).cloned().unwrap_or_else(|| Ok("{}".into()))?;
            Ok(Rendered { resources: RESOURCES.iter().map(|r| (r.to_string(), json.clone())).collect() })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::fake::FakeRenderer;
    use super::*;
    use crate::workload::RESOURCES;
    use std::path::Path;
    use std::sync::atomic::Ordering;

    fn workload(app: &str) -> Workload {
        Workload { namespace: "default".into(), labels: [("app".to_owned(), app.to_owned())].into() }
    }

    #[test]
    fn one_render_per_workload_and_generation() {
        let cache = Cache::new(FakeRenderer::default(), Modules::local(Path::new("/m")));
        let a = cache.get(&workload("a"), 1);
        let again = cache.get(&workload("a"), 1);
        assert!(Arc::ptr_eq(&a.resources, &again.resources));
        cache.get(&workload("b"), 1);
        assert_eq!(cache.renderer().renders.load(Ordering::SeqCst), 2);
        cache.get(&workload("a"), 2);
        assert_eq!(cache.renderer().renders.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_generation_with_the_same_config_renders_nothing_again() {
        let cache = Cache::new(FakeRenderer::default(), Modules::local(Path::new("/m")));
        cache.get(&workload("a"), 1);
        cache.same_config(2);
        cache.same_config(3);
        cache.get(&workload("a"), 3);
        assert_eq!(cache.renderer().renders.load(Ordering::SeqCst), 1);
        cache.get(&workload("a"), 4);
        assert_eq!(cache.renderer().renders.load(Ordering::SeqCst), 2, "4 may differ");
        cache.same_config(5);
        cache.get(&workload("a"), 5);
        cache.get(&workload("b"), 5);
        assert_eq!(cache.renderer().renders.load(Ordering::SeqCst), 3, "only b is new");
    }

    #[test]
    fn workloads_with_the_same_config_share_one_copy_of_it() {
        let cache = Cache::new(FakeRenderer::default(), Modules::local(Path::new("/m")));
        cache.renderer().set("b", Ok("{\"v\":2}"));
        let a = cache.get(&workload("a"), 1);
        let c = cache.get(&workload("c"), 1);
        let b = cache.get(&workload("b"), 1);
        let routing = "switchyard.routing";
        assert!(Arc::ptr_eq(&a.resources[routing], &c.resources[routing]), "a and c render the same: one copy");
        assert!(!Arc::ptr_eq(&a.resources[routing], &b.resources[routing]));
        assert_ne!(a.resources[routing].version, b.resources[routing].version);
    }

    #[test]
    fn a_failed_render_keeps_the_last_good_resources() {
        let cache = Cache::new(FakeRenderer::default(), Modules::local(Path::new("/m")));
        cache.renderer().set("a", Ok("{\"v\":1}"));
        let good = cache.get(&workload("a"), 1);
        assert_eq!(good.resources.len(), RESOURCES.len());
        cache.renderer().set("a", Err("vs.yaml:3: VirtualService/reviews: spec.http: bad"));
        let after = cache.get(&workload("a"), 2);
        assert_eq!(after.resources, good.resources);
        assert_eq!(after.error.as_deref(), Some("vs.yaml:3: VirtualService/reviews: spec.http: bad"));
    }
}
