//! Rendered resources per distinct workload, per config generation.
//!
//! Proxies with the same namespace and labels share one render. When the
//! config changes the generation goes up and each workload is re-rendered
//! once, on the first stream that asks. A workload whose render fails keeps
//! its last good resources (and the error, for status views).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use super::resources::{Modules, Resources};
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
}

impl<R: Render> Cache<R> {
    pub fn new(renderer: R, modules: Modules) -> Self {
        Cache { renderer, modules, entries: Mutex::new(HashMap::new()) }
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
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(workload) {
            if entry.generation == generation {
                return entry.snapshot.clone();
            }
        }
        let rendered = self.renderer.render(workload).and_then(|r| self.build(&r));
        let previous = entries.get(workload).map(|e| e.snapshot.resources.clone()).unwrap_or_default();
        let snapshot = match rendered {
            Ok(resources) => Snapshot { resources: Arc::new(resources), error: None },
            Err(error) => Snapshot { resources: previous, error: Some(error) },
        };
        entries.insert(workload.clone(), Entry { generation, snapshot: snapshot.clone() });
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
            .map(|(name, json)| Ok((name.clone(), Arc::new(self.modules.build(name, json)?))))
            .collect()
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
