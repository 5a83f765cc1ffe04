//! Mirror stage: Istio `mirror` / `mirrors`. A share of requests is copied,
//! fire and forget, to other clusters; the primary never waits for a shadow
//! and never sees its outcome.
//!
//! Shadows are dispatched with the root context as the effective context:
//! Envoy then tracks the call on the root, which outlives the request, so a
//! primary that finishes first cannot cancel its shadow. Shadow responses are
//! dropped; their outcome shows in Envoy's own stats of the shadow cluster
//! (`cluster.<name>.upstream_rq_*`). A request with a body is copied as it
//! streams through (the primary is not paused); one larger than
//! `max_body_bytes` is not mirrored. A request the fault stage delays is
//! copied when its delay ends, as Envoy's router would mirror it then; one it
//! aborts is not copied at all.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::types::LogLevel;
use switchyard_host::{calls, log, Counter, RequestHeaders};
use switchyard_policy::mirror::{CompiledMirror, MirrorDecision};
use switchyard_policy::{shadow_authority, Request};

const SHADOW_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy)]
struct Stats {
    requests: Counter,
    mirrored: Counter,
    body_too_large: Counter,
    dispatch_failed: Counter,
}

pub(crate) struct MirrorStage {
    config: CompiledMirror,
    stats: Stats,
}

impl MirrorStage {
    pub fn new(config: CompiledMirror) -> Self {
        MirrorStage {
            config,
            stats: Stats {
                requests: Counter::define("switchyard_mirror_requests_total"),
                mirrored: Counter::define("switchyard_mirror_mirrored_total"),
                body_too_large: Counter::define("switchyard_mirror_body_too_large_total"),
                dispatch_failed: Counter::define("switchyard_mirror_dispatch_failed_total"),
            },
        }
    }

    /// The shadow copy for this request, when one is due. `headers_changed`:
    /// an earlier stage rewrote headers, so the copy reads them again (the
    /// shadow gets the request as it goes upstream, as Envoy's mirror does).
    pub fn on_request(
        &self,
        headers: &RequestHeaders,
        request: &mut Request<'_, RequestHeaders>,
        random: u64,
        headers_changed: bool,
        root_context_id: u32,
    ) -> Option<Rc<RefCell<Shadow>>> {
        self.stats.requests.inc();
        let clusters: Vec<String> = match self.config.decide(request, random) {
            MirrorDecision::Mirror(selection) => selection.clusters().map(str::to_owned).collect(),
            MirrorDecision::Unmanaged | MirrorDecision::NoRoute { .. } => return None,
        };
        if clusters.is_empty() {
            return None;
        }
        let mut pairs = if headers_changed {
            calls::request_headers()
                .into_iter()
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect()
        } else {
            headers.pairs().to_vec()
        };
        for (name, value) in &mut pairs {
            // Envoy's `-shadow` authority suffix, as route mirror policies
            // add it, so the shadow upstream can tell copies from traffic.
            if name == ":authority" {
                *value = shadow_authority(value);
            }
        }
        Some(Rc::new(RefCell::new(Shadow {
            clusters,
            headers: pairs,
            body: Vec::new(),
            max_body_bytes: self.config.max_body_bytes(),
            complete: false,
            released: true,
            done: false,
            stats: self.stats,
            root_context_id,
        })))
    }
}

/// One request's copy. It goes out once it is both complete (the whole
/// body seen) and released (no delay holding the primary back).
pub(crate) struct Shadow {
    clusters: Vec<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_body_bytes: usize,
    complete: bool,
    released: bool,
    /// Sent, or given up on.
    done: bool,
    stats: Stats,
    root_context_id: u32,
}

impl Shadow {
    /// The request is held by a delay until [`Shadow::release`].
    pub fn hold(shadow: &Rc<RefCell<Shadow>>) {
        shadow.borrow_mut().released = false;
    }

    /// The headers are all there is (`end_of_stream` on the headers).
    pub fn headers_complete(shadow: &Rc<RefCell<Shadow>>, context_id: u32) {
        shadow.borrow_mut().complete = true;
        Self::try_send(shadow, context_id);
    }

    /// The body as the filter sees it now: a new chunk, or — `buffered`, while
    /// a delay holds the request and Envoy buffers it — everything so far.
    /// `end_of_stream` when it is the last.
    pub fn body(shadow: &Rc<RefCell<Shadow>>, size: usize, buffered: bool, end_of_stream: bool, context_id: u32) {
        {
            let mut s = shadow.borrow_mut();
            if s.done {
                return;
            }
            let total = if buffered { size } else { s.body.len() + size };
            if total > s.max_body_bytes {
                s.stats.body_too_large.inc();
                s.done = true;
                s.body = Vec::new();
                return;
            }
            if let Some(bytes) = calls::request_body(size) {
                if buffered {
                    s.body.clear();
                }
                s.body.extend_from_slice(&bytes);
            }
            s.complete = end_of_stream;
        }
        Self::try_send(shadow, context_id);
    }

    /// The delay holding the request is over.
    pub fn release(shadow: &Rc<RefCell<Shadow>>, context_id: u32) {
        shadow.borrow_mut().released = true;
        Self::try_send(shadow, context_id);
    }

    /// Sends the copy when it is ready; `context_id` is the effective
    /// context again afterwards.
    fn try_send(shadow: &Rc<RefCell<Shadow>>, context_id: u32) {
        let mut s = shadow.borrow_mut();
        if s.done || !s.complete || !s.released {
            return;
        }
        s.done = true;
        let headers: Vec<(&str, &str)> = s.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = (!s.body.is_empty()).then_some(s.body.as_slice());
        if !calls::set_effective_context(s.root_context_id) {
            s.stats.dispatch_failed.inc();
            return;
        }
        for cluster in &s.clusters {
            match calls::dispatch_http_call(cluster, headers.clone(), body, SHADOW_TIMEOUT) {
                Ok(_) => s.stats.mirrored.inc(),
                Err(status) => {
                    s.stats.dispatch_failed.inc();
                    log(LogLevel::Debug, &format!("switchyard.mirror: dispatch to {cluster} failed: {status:?}"));
                }
            }
        }
        calls::set_effective_context(context_id);
    }
}
