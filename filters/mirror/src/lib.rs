//! Mirror filter: Istio `mirror` / `mirrors` inside stock Envoy. A share of
//! requests is copied, fire and forget, to another cluster; the primary
//! request never waits for the shadow and never sees its outcome.
//!
//! Shadows are dispatched with the root context as the effective context:
//! Envoy then tracks the call on the root, which outlives the request, so a
//! primary that finishes first cannot cancel its shadow. Shadow responses are
//! dropped; their outcome shows in Envoy's own stats of the shadow cluster
//! (`cluster.<name>.upstream_rq_*`). (The SDK hands a call's response to the
//! context that was active in the SDK's own bookkeeping, the HTTP context,
//! and drops it once that context is gone — so counting responses here
//! would undercount.)
//! Requests with a body are copied as it streams through (the primary is not
//! paused); a body larger than `max_body_bytes` is not mirrored.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use switchyard_host::{load_config, log, request_headers, Counter, HostRequestHeaders, Rng};
use switchyard_policy::mirror::{CompiledMirror, MirrorDecision};
use switchyard_policy::shadow_authority;
use switchyard_policy::Request;

proxy_wasm::main! {{
    switchyard_host::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(MirrorRoot { context_id, shared: None })
    });
}}

const SHADOW_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Stats {
    requests: Counter,
    mirrored: Counter,
    body_too_large: Counter,
    dispatch_failed: Counter,
}

struct Shared {
    config: Rc<CompiledMirror>,
    stats: Stats,
    rng: Rng,
    root_context_id: u32,
}

struct MirrorRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Context for MirrorRoot {}

impl RootContext for MirrorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(config) = load_config("mirror", CompiledMirror::from_json) else {
            return false;
        };
        self.shared = Some(Rc::new(Shared {
            config: Rc::new(config),
            stats: Stats {
                requests: Counter::define("switchyard_mirror_requests_total"),
                mirrored: Counter::define("switchyard_mirror_mirrored_total"),
                body_too_large: Counter::define("switchyard_mirror_body_too_large_total"),
                dispatch_failed: Counter::define("switchyard_mirror_dispatch_failed_total"),
            },
            rng: Rng::from_host_time(self.context_id),
            root_context_id: self.context_id,
        }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(MirrorHttp { context_id, shared: self.shared.clone()?, pending: None }))
    }
}

/// A request chosen for mirroring whose body is still streaming.
struct Pending {
    clusters: Vec<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct MirrorHttp {
    context_id: u32,
    shared: Rc<Shared>,
    pending: Option<Pending>,
}

impl MirrorHttp {
    fn dispatch(&self, pending: &Pending) {
        let shared = &self.shared;
        let headers: Vec<(&str, &str)> = pending.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = (!pending.body.is_empty()).then_some(pending.body.as_slice());
        if hostcalls::set_effective_context(shared.root_context_id).is_err() {
            shared.stats.dispatch_failed.inc();
            return;
        }
        for cluster in &pending.clusters {
            match hostcalls::dispatch_http_call(cluster, headers.clone(), body, vec![], SHADOW_TIMEOUT) {
                Ok(_) => shared.stats.mirrored.inc(),
                Err(status) => {
                    shared.stats.dispatch_failed.inc();
                    log(LogLevel::Debug, &format!("switchyard.mirror: dispatch to {cluster} failed: {status:?}"));
                }
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

/// The shadow's headers: the primary's, with Envoy's `-shadow` authority
/// suffix (as route `request_mirror_policies` do) so the shadow upstream and
/// its logs can tell copies from real traffic.
fn shadow_headers(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    for (name, value) in &mut headers {
        if name == ":authority" {
            *value = shadow_authority(value);
        }
    }
    headers
}

impl Context for MirrorHttp {}

impl HttpContext for MirrorHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        shared.stats.requests.inc();
        let source = HostRequestHeaders;
        let mut request = Request::new(&source);
        let clusters: Vec<String> = match shared.config.decide(&mut request, shared.rng.next_u64()) {
            MirrorDecision::Mirror(selection) => selection.clusters().map(str::to_owned).collect(),
            MirrorDecision::Unmanaged | MirrorDecision::NoRoute { .. } => return Action::Continue,
        };
        if clusters.is_empty() {
            return Action::Continue;
        }
        let pending = Pending { clusters, headers: shadow_headers(request_headers()), body: Vec::new() };
        if end_of_stream {
            self.dispatch(&pending);
        } else {
            self.pending = Some(pending);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(mut pending) = self.pending.take() else {
            return Action::Continue;
        };
        if pending.body.len() + body_size > self.shared.config.max_body_bytes() {
            self.shared.stats.body_too_large.inc();
            return Action::Continue;
        }
        if let Some(chunk) = self.get_http_request_body(0, body_size) {
            pending.body.extend_from_slice(&chunk);
        }
        if end_of_stream {
            self.dispatch(&pending);
        } else {
            self.pending = Some(pending);
        }
        Action::Continue
    }
}
