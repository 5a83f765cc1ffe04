//! Connected proxies and what each runs (the `/debug/proxies` and `status`
//! view), and the server's counters (the `/metrics` view).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::small_map::SmallMap;
use super::state::{Nack, ResourceView, SyncStatus};
use crate::workload::Workload;

/// Who a proxy is, from its xDS `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyIdentity {
    pub node_id: String,
    pub cluster: String,
    pub workload_name: String,
    /// Its `NAMESPACE` and `LABELS`, all its config depends on; one value
    /// shared by every stream of the workload once registered.
    #[serde(flatten)]
    pub workload: Arc<Workload>,
}

/// One stream, as `/debug/proxies` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyView {
    #[serde(flatten)]
    pub identity: Arc<ProxyIdentity>,
    /// `sotw` or `delta`.
    pub protocol: &'static str,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Why this workload's latest render failed (it keeps its last good config).
    pub render_error: Option<String>,
    pub resources: SmallMap<ResourceView>,
}

/// At most this many (node, resource) rejections are remembered; past it
/// the memory starts afresh (a proxy then may get a rejected version again).
const MAX_REMEMBERED_REJECTIONS: usize = 100_000;

#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    streams: Mutex<Streams>,
    /// (node id, resource) → the NACKs of that proxy, across its streams.
    rejections: Mutex<HashMap<(String, String), Vec<Nack>>>,
}

#[derive(Default)]
struct Streams {
    proxies: BTreeMap<u64, ProxyView>,
    /// Open streams per workload: its cached config goes with the last one.
    per_workload: HashMap<Arc<Workload>, usize>,
}

impl Registry {
    /// Registers a stream: the id updates and removes it; the identity
    /// shares its workload with the workload's other streams.
    pub fn connect(&self, mut identity: ProxyIdentity, protocol: &'static str) -> (u64, Arc<ProxyIdentity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connected_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut streams = self.lock();
        if let Some((known, _)) = streams.per_workload.get_key_value(&*identity.workload) {
            identity.workload = known.clone();
        }
        *streams.per_workload.entry(identity.workload.clone()).or_default() += 1;
        let identity = Arc::new(identity);
        let view = ProxyView {
            identity: identity.clone(),
            protocol,
            connected_at,
            render_error: None,
            resources: SmallMap::default(),
        };
        streams.proxies.insert(id, view);
        (id, identity)
    }

    pub fn update(&self, id: u64, render_error: Option<String>, resources: SmallMap<ResourceView>) {
        if let Some(view) = self.lock().proxies.get_mut(&id) {
            view.render_error = render_error;
            view.resources = resources;
        }
    }

    /// Removes a stream; true if no other stream of the same workload remains.
    pub fn disconnect(&self, id: u64) -> Option<(Arc<Workload>, bool)> {
        let mut streams = self.lock();
        let view = streams.proxies.remove(&id)?;
        let workload = view.identity.workload.clone();
        let left = streams.per_workload.get_mut(&workload).map(|n| {
            *n -= 1;
            *n
        });
        if left == Some(0) {
            streams.per_workload.remove(&workload);
        }
        Some((workload, left.unwrap_or(0) == 0))
    }

    /// Remembers that proxy `node_id` rejected a version of `resource`.
    pub fn remember_rejection(&self, node_id: &str, resource: &str, nack: Nack) {
        let mut rejections = self.rejections.lock().unwrap_or_else(PoisonError::into_inner);
        if rejections.len() >= MAX_REMEMBERED_REJECTIONS {
            rejections.clear();
        }
        let list = rejections.entry((node_id.to_owned(), resource.to_owned())).or_default();
        list.retain(|n| n.version != nack.version);
        list.push(nack);
    }

    /// Every rejection proxy `node_id` made, oldest first per resource.
    pub fn rejections(&self, node_id: &str) -> Vec<(String, Nack)> {
        let rejections = self.rejections.lock().unwrap_or_else(PoisonError::into_inner);
        rejections
            .iter()
            .filter(|((node, _), _)| node == node_id)
            .flat_map(|((_, resource), nacks)| nacks.iter().map(|n| (resource.clone(), n.clone())))
            .collect()
    }

    pub fn proxies(&self) -> Vec<ProxyView> {
        self.lock().proxies.values().cloned().collect()
    }

    /// Open streams, and their subscribed resources by sync status.
    pub fn status_counts(&self) -> (u64, BTreeMap<&'static str, u64>) {
        let mut by_status: BTreeMap<&str, u64> =
            [SyncStatus::Synced, SyncStatus::Stale, SyncStatus::NotSent, SyncStatus::Nacked]
                .iter()
                .map(|s| (s.as_str(), 0))
                .collect();
        let streams = self.lock();
        for (_, view) in streams.proxies.values().flat_map(|p| p.resources.iter()) {
            *by_status.entry(view.status.as_str()).or_default() += 1;
        }
        (streams.proxies.len() as u64, by_status)
    }

    pub fn len(&self) -> usize {
        self.lock().proxies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Upper bounds (seconds) of the push latency histogram.
const LATENCY_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One problem of the loaded config, as metrics label it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProblemView {
    pub file: String,
    pub line: usize,
    pub document: String,
    pub field: String,
    pub message: String,
    /// `error` or `warning`.
    pub severity: &'static str,
    /// The whole line, `FILE:LINE: Kind/name: field.path: message`.
    pub text: String,
}

#[derive(Default)]
pub struct Metrics {
    pub pushes: AtomicU64,
    pub resources_sent: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub streams_refused: AtomicU64,
    /// Streams ended with PERMISSION_DENIED: a client certificate that does not name the node.
    pub streams_denied: AtomicU64,
    pub reloads: AtomicU64,
    /// Errors found by loads, each counted when it first appears.
    pub errors_found: AtomicU64,
    pub files_read: AtomicU64,
    pub files_parsed: AtomicU64,
    pub ready: AtomicBool,
    latency: Mutex<Histogram>,
    problems: Mutex<Vec<ProblemView>>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// At most this many problems become labelled metric series.
const MAX_PROBLEM_SERIES: usize = 100;

impl Metrics {
    /// A push reached the stream `latency` after its config was published.
    pub fn observe_push(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for (count, bound) in h.counts.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    pub fn set_problems(&self, problems: Vec<ProblemView>) {
        *self.problems.lock().unwrap_or_else(PoisonError::into_inner) = problems;
    }

    pub fn problems(&self) -> Vec<ProblemView> {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Prometheus text exposition.
    pub fn render(&self, registry: &Registry) -> String {
        let mut out = String::new();
        let (streams, by_status) = registry.status_counts();
        gauge(&mut out, "xds_ext_connected_proxies", "ECDS streams open now.", streams);
        header(&mut out, "xds_ext_proxy_resources", "gauge", "Subscribed resources on open streams, by sync status.");
        for (status, n) in by_status {
            let _ = writeln!(out, "xds_ext_proxy_resources{{status=\"{status}\"}} {n}");
        }

        counter(&mut out, "xds_ext_pushes_total", "DiscoveryResponses sent.", &self.pushes);
        counter(
            &mut out,
            "xds_ext_resources_sent_total",
            "Resources sent in DiscoveryResponses.",
            &self.resources_sent,
        );
        counter(&mut out, "xds_ext_acks_total", "Responses proxies accepted.", &self.acks);
        counter(&mut out, "xds_ext_nacks_total", "Responses proxies rejected.", &self.nacks);
        counter(&mut out, "xds_ext_streams_refused_total", "Streams refused over the limit.", &self.streams_refused);
        counter(
            &mut out,
            "xds_ext_streams_denied_total",
            "Streams refused because the client certificate does not name the node's namespace or service account.",
            &self.streams_denied,
        );
        counter(&mut out, "xds_ext_config_reloads_total", "Loads of the config directory.", &self.reloads);
        counter(
            &mut out,
            "xds_ext_config_reload_errors_total",
            "Errors found in the config directory, each counted once: when a load first finds it.",
            &self.errors_found,
        );
        counter(
            &mut out,
            "xds_ext_config_files_read_total",
            "Config files read by loads (a file whose stat is unchanged is not read again).",
            &self.files_read,
        );
        counter(
            &mut out,
            "xds_ext_config_files_parsed_total",
            "Config files parsed by loads (a file read again with the same content is not parsed again).",
            &self.files_parsed,
        );

        {
            let h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
            header(
                &mut out,
                "xds_ext_push_duration_seconds",
                "histogram",
                "From a config change being published to its response being sent on a stream.",
            );
            for (count, bound) in h.counts.iter().zip(LATENCY_BUCKETS) {
                let _ = writeln!(out, "xds_ext_push_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "xds_ext_push_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "xds_ext_push_duration_seconds_sum {}", h.sum);
            let _ = writeln!(out, "xds_ext_push_duration_seconds_count {}", h.count);
        }

        let problems = self.problems();
        let errors = problems.iter().filter(|p| p.severity == "error").count() as u64;
        gauge(&mut out, "xds_ext_config_errors", "Errors in the config directory now.", errors);
        gauge(
            &mut out,
            "xds_ext_config_warnings",
            "Warnings in the config directory now.",
            problems.len() as u64 - errors,
        );
        header(&mut out, "xds_ext_config_problem", "gauge", "One series per config problem (first 100), naming it.");
        for p in problems.iter().take(MAX_PROBLEM_SERIES) {
            let _ = writeln!(
                out,
                "xds_ext_config_problem{{severity=\"{}\",file=\"{}\",line=\"{}\",document=\"{}\",field=\"{}\",message=\"{}\"}} 1",
                p.severity,
                escape(&p.file),
                p.line,
                escape(&p.document),
                escape(&p.field),
                escape(&p.message)
            );
        }
        gauge(
            &mut out,
            "xds_ext_ready",
            "1 once the config directory was loaded.",
            u64::from(self.ready.load(Ordering::Relaxed)),
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    header(out, name, "counter", help);
    let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn problems_become_labelled_series_and_error_counts() {
        let metrics = Metrics::default();
        metrics.set_problems(vec![ProblemView {
            file: "vs.yaml".into(),
            line: 3,
            document: "VirtualService/reviews".into(),
            field: "spec.http[0].timeout".into(),
            message: "bad \"duration\"".into(),
            severity: "error",
            text: String::new(),
        }]);
        metrics.observe_push(Duration::from_millis(30));
        let text = metrics.render(&Registry::default());
        assert!(text.contains("xds_ext_config_errors 1\n"), "{text}");
        assert!(text.contains("xds_ext_config_warnings 0\n"), "{text}");
        assert!(text.contains(r#"field="spec.http[0].timeout",message="bad \"duration\""} 1"#), "{text}");
        assert!(text.contains("xds_ext_push_duration_seconds_bucket{le=\"0.05\"} 1\n"), "{text}");
        assert!(text.contains("xds_ext_push_duration_seconds_bucket{le=\"0.025\"} 0\n"), "{text}");
    }
}
