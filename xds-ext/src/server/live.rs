//! The real config side behind the server's traits: a [`ConfigStore`] that
//! the watcher reloads and the streams render from.

use std::path::Path;
use std::sync::{PoisonError, RwLock};

use super::cache::Render;
use super::registry::ProblemView;
use super::watch::{ConfigSource, Reload};
use crate::config::{ConfigStore, Problem, Severity};
use crate::workload::{Rendered, Workload};

pub struct LiveConfig {
    store: RwLock<ConfigStore>,
}

impl LiveConfig {
    pub fn new() -> Self {
        LiveConfig { store: RwLock::new(ConfigStore::new()) }
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl Render for LiveConfig {
    fn render(&self, workload: &Workload) -> Result<Rendered, String> {
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        store
            .render(workload)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }
}

impl ConfigSource for LiveConfig {
    fn reload(&self, dir: &Path) -> Reload {
        let mut store = self.store.write().unwrap_or_else(PoisonError::into_inner);
        let report = store.reload_dir(dir);
        drop(store);
        if report.files_parsed > 0 {
            // Parsing a large file leaves freed memory glibc keeps for itself.
            super::memory::release();
        }
        let problems = report.errors.iter().chain(&report.warnings).map(view).collect();
        Reload {
            problems,
            changed: report.changed,
            files_read: report.files_read,
            files_parsed: report.files_parsed,
            recheck: report.recheck,
        }
    }
}

fn view(problem: &Problem) -> ProblemView {
    ProblemView {
        file: problem.file.display().to_string(),
        line: problem.line,
        document: problem.document.clone(),
        field: problem.field.clone(),
        message: problem.message.clone(),
        severity: match problem.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        },
        text: problem.to_string(),
    }
}
