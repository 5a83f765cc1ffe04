//! Mirror stage: Istio `mirror` / `mirrors`. A share of requests is copied
//! to other clusters; the primary never waits for a shadow. A mirror with
//! `compare` has each shadow's answer compared with its primary's: counted
//! per rule and mirror, each mismatch logged (sampled) with what differed.
//!
//! A request with a body is copied as it streams through (the primary is not
//! paused); one larger than `max_body_bytes` is not mirrored. A request the
//! fault stage delays is copied when its delay ends, as Envoy's router would
//! mirror it then; one it aborts is not copied at all. A complete copy is
//! queued for the root context, which sends it from its next tick (why:
//! `shadows.rs`). Each mirror's shadows are bounded: at most
//! `max_in_flight` per worker (a copy beyond is skipped and counted), each
//! at most its `timeout` long.
//!
//! A comparison ([`Pair`]) takes the primary's half from the request's
//! response hooks and the shadow's from the root's `on_http_call_response`;
//! whichever comes last compares. Both halves must be in within the shadow's
//! timeout of its dispatch.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::types::{Bytes, LogLevel};
use switchyard_host::{calls, log, Counter, RequestHeaders};
use switchyard_policy::compare::{log_path, Answer, CompiledCompare, LogBudget, MismatchReason, Verdict};
use switchyard_policy::mirror::{CompiledMirror, MirrorDecision};
use switchyard_policy::{shadow_authority, Request};

use crate::root::now_nanos;
use crate::shadows::{Ready, Shadows};

#[derive(Clone, Copy)]
pub(crate) struct Stats {
    requests: Counter,
    pub mirrored: Counter,
    body_too_large: Counter,
    pub dispatch_failed: Counter,
    in_flight_overflow: Counter,
    pending_overflow: Counter,
}

pub(crate) struct MirrorStage {
    config: CompiledMirror,
    stats: Stats,
    /// One per mirror, in `CompiledMirror::targets()` order.
    targets: Vec<Rc<Target>>,
}

impl MirrorStage {
    pub fn new(config: CompiledMirror) -> Self {
        let targets = config
            .targets()
            .map(|(rule, target)| {
                Rc::new(Target {
                    cluster: target.cluster().to_owned(),
                    timeout: Duration::from_millis(target.timeout_ms()),
                    max_in_flight: target.max_in_flight(),
                    in_flight: Cell::new(0),
                    compare: target.compare().map(|spec| {
                        let at = format!("{}.{}.{}", rule.virtual_host, rule.rule, target.cluster());
                        let counter = |what: &str| Counter::define(&format!("switchyard_mirror_{what}_total.{at}"));
                        Compare {
                            spec: spec.clone(),
                            label: format!("{}/{} -> {}", rule.virtual_host, rule.rule, target.cluster()),
                            stats: CompareStats {
                                compared: counter("compared"),
                                matched: counter("matched"),
                                mismatched_status: counter("mismatched_status"),
                                mismatched_header: counter("mismatched_header"),
                                mismatched_body: counter("mismatched_body"),
                                not_compared_timeout: counter("not_compared_timeout"),
                                not_compared_failed: counter("not_compared_failed"),
                                not_compared_over_bound: counter("not_compared_over_bound"),
                                not_compared_primary_incomplete: counter("not_compared_primary_incomplete"),
                            },
                            log: RefCell::new(LogBudget::default()),
                        }
                    }),
                })
            })
            .collect();
        MirrorStage {
            config,
            stats: Stats {
                requests: Counter::define("switchyard_mirror_requests_total"),
                mirrored: Counter::define("switchyard_mirror_mirrored_total"),
                body_too_large: Counter::define("switchyard_mirror_body_too_large_total"),
                dispatch_failed: Counter::define("switchyard_mirror_dispatch_failed_total"),
                in_flight_overflow: Counter::define("switchyard_mirror_in_flight_overflow_total"),
                pending_overflow: Counter::define("switchyard_mirror_pending_overflow_total"),
            },
            targets,
        }
    }

    /// The shadow copy for this request, when one is due. `routed_by`: the
    /// cluster header the routing stage just wrote, so the copy reads the
    /// headers again (the shadow gets the request as it goes upstream, as
    /// Envoy's mirror does) but leaves that header out: Envoy's route strips
    /// it from the primary, and it names a cluster of this proxy.
    pub fn on_request(
        &self,
        headers: &RequestHeaders,
        request: &mut Request<'_, RequestHeaders>,
        random: u64,
        routed_by: Option<&str>,
    ) -> Option<Rc<RefCell<Shadow>>> {
        self.stats.requests.inc();
        let targets: Vec<Rc<Target>> = match self.config.decide(request, random) {
            MirrorDecision::Mirror(selection) => {
                selection.targets().filter_map(|t| self.targets.get(t.index()).cloned()).collect()
            }
            MirrorDecision::Unmanaged | MirrorDecision::NoRoute { .. } => return None,
        };
        if targets.is_empty() {
            return None;
        }
        let mut pairs = if let Some(cluster_header) = routed_by {
            calls::request_headers()
                .into_iter()
                .filter(|(name, _)| name != cluster_header)
                .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                .collect()
        } else {
            headers.pairs().to_vec()
        };
        let mut path = String::new();
        for (name, value) in &mut pairs {
            // Envoy's `-shadow` authority suffix, as route mirror policies
            // add it, so the shadow upstream can tell copies from traffic.
            if name == ":authority" {
                *value = shadow_authority(value);
            } else if name == ":path" {
                path = log_path(value);
            }
        }
        let targets = targets
            .into_iter()
            .map(|target| {
                let pair = target.compare.as_ref().map(|compare| {
                    Rc::new(RefCell::new(Pair {
                        target: Rc::clone(&target),
                        path: path.clone(),
                        primary: compare.spec.answer(),
                        primary_done: false,
                        shadow: None,
                        sent: false,
                        token: None,
                        over: false,
                    }))
                });
                (target, pair)
            })
            .collect();
        Some(Rc::new(RefCell::new(Shadow {
            targets,
            headers: pairs,
            body: Vec::new(),
            max_body_bytes: self.config.max_body_bytes(),
            max_pending: self.config.max_pending() as usize,
            complete: false,
            released: true,
            done: false,
            stats: self.stats,
        })))
    }
}

/// One mirror of one rule, as a worker tracks it: where copies go, how many
/// are in flight, and its comparison. Shadows hold it, so after a config
/// push the shadows sent before end against the counts they started on.
pub(crate) struct Target {
    pub cluster: String,
    pub timeout: Duration,
    max_in_flight: u32,
    in_flight: Cell<u32>,
    compare: Option<Compare>,
}

impl Target {
    fn has_room(&self) -> bool {
        self.in_flight.get() < self.max_in_flight
    }

    fn start(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A shadow of this mirror is no longer in flight.
    pub fn end(&self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }
}

struct Compare {
    spec: CompiledCompare,
    /// `vhost/rule -> cluster`, for log lines.
    label: String,
    stats: CompareStats,
    log: RefCell<LogBudget>,
}

#[derive(Clone, Copy)]
struct CompareStats {
    compared: Counter,
    matched: Counter,
    mismatched_status: Counter,
    mismatched_header: Counter,
    mismatched_body: Counter,
    not_compared_timeout: Counter,
    not_compared_failed: Counter,
    not_compared_over_bound: Counter,
    not_compared_primary_incomplete: Counter,
}

/// Why a comparison did not happen.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NotCompared {
    /// The shadow did not answer within its timeout.
    Timeout,
    /// The shadow could not be sent, or its call ended without an answer.
    Failed,
    /// Skipped: the mirror's in-flight cap, the worker's pending cap, or a
    /// request body over `max_body_bytes`.
    OverBound,
    /// The primary's response did not complete (reset, or still going when
    /// the shadow's timeout ran out).
    PrimaryIncomplete,
}

pub(crate) type PairRef = Rc<RefCell<Pair>>;

/// One request's comparison with one mirror. The request holds it for the
/// primary's half, the root's in-flight entry for the shadow's; it is
/// counted once, as compared or not.
pub(crate) struct Pair {
    target: Rc<Target>,
    /// As a log line shows it.
    path: String,
    primary: Answer,
    primary_done: bool,
    shadow: Option<Answer>,
    /// Queued or skipped: from then on the request counts as mirrored. A
    /// copy never sent (an abort) counts nowhere.
    sent: bool,
    pub token: Option<u32>,
    over: bool,
}

impl Pair {
    pub fn is_over(&self) -> bool {
        self.over
    }

    pub fn not_compared(&mut self, reason: NotCompared) {
        if self.over {
            return;
        }
        self.over = true;
        let Some(compare) = &self.target.compare else { return };
        let s = &compare.stats;
        match reason {
            NotCompared::Timeout => s.not_compared_timeout,
            NotCompared::Failed => s.not_compared_failed,
            NotCompared::OverBound => s.not_compared_over_bound,
            NotCompared::PrimaryIncomplete => s.not_compared_primary_incomplete,
        }
        .inc();
    }

    pub fn shadow_answered(&mut self, answer: Answer) {
        self.shadow = Some(answer);
        self.try_compare();
    }

    /// Compares when both halves are in; true when it did.
    fn try_compare(&mut self) -> bool {
        if self.over || !self.primary_done {
            return false;
        }
        let (Some(shadow), Some(compare)) = (&self.shadow, &self.target.compare) else { return false };
        self.over = true;
        let s = &compare.stats;
        s.compared.inc();
        let mismatch = match compare.spec.verdict(&self.primary, shadow) {
            Verdict::Matched => {
                s.matched.inc();
                return true;
            }
            Verdict::Mismatched(mismatch) => mismatch,
        };
        match mismatch.reason {
            MismatchReason::Status => s.mismatched_status,
            MismatchReason::Header => s.mismatched_header,
            MismatchReason::Body => s.mismatched_body,
        }
        .inc();
        let now = now_nanos(calls::current_time());
        if let Some(held_back) = compare.log.borrow_mut().allow(compare.spec.log_per_minute(), now) {
            let mut line = format!(
                "switchyard.mirror: mismatch {}: {}",
                compare.label,
                compare.spec.describe(&self.path, &self.primary, shadow, &mismatch)
            );
            if held_back > 0 {
                line.push_str(&format!(" ({held_back} more mismatches not logged this past minute)"));
            }
            log(LogLevel::Info, &line);
        }
        true
    }
}

/// The primary's response headers, for each comparison of the request.
pub(crate) fn primary_headers(pairs: &[PairRef], end_of_stream: bool, shadows: &Shadows) {
    let status = calls::response_header(":status").and_then(status_code).unwrap_or(0);
    for pair in pairs {
        let mut p = pair.borrow_mut();
        if p.over {
            continue;
        }
        let target = Rc::clone(&p.target);
        let Some(compare) = &target.compare else { continue };
        p.primary.set_status(status);
        for (i, name) in compare.spec.headers().iter().enumerate() {
            p.primary.set_header(&compare.spec, i, calls::response_header(name).as_deref());
        }
    }
    if end_of_stream {
        primary_done(pairs, shadows);
    }
}

/// A chunk of the primary's response body: read only as far as a
/// comparison still looks.
pub(crate) fn primary_body(pairs: &[PairRef], size: usize, end_of_stream: bool, shadows: &Shadows) {
    let wanted = pairs
        .iter()
        .map(|pair| {
            let p = pair.borrow();
            if p.over {
                0
            } else {
                p.primary.body_wanted()
            }
        })
        .max()
        .unwrap_or(0);
    if wanted > 0 && size > 0 {
        if let Some(bytes) = calls::response_body(size.min(wanted)) {
            for pair in pairs {
                pair.borrow_mut().primary.add_body(&bytes);
            }
        }
    }
    if end_of_stream {
        primary_done(pairs, shadows);
    }
}

/// The primary's response is complete: compare where the shadow's is in.
pub(crate) fn primary_done(pairs: &[PairRef], shadows: &Shadows) {
    for pair in pairs {
        let token = {
            let mut p = pair.borrow_mut();
            if p.over || p.primary_done {
                continue;
            }
            p.primary_done = true;
            if !p.try_compare() {
                continue;
            }
            p.token
        };
        if let Some(token) = token {
            shadows.forget(token);
        }
    }
}

/// The request is over (its log): a comparison whose primary never
/// completed cannot happen.
pub(crate) fn primary_ended(pairs: &[PairRef], shadows: &Shadows) {
    for pair in pairs {
        let token = {
            let mut p = pair.borrow_mut();
            if p.over || !p.sent || p.primary_done {
                continue;
            }
            p.not_compared(NotCompared::PrimaryIncomplete);
            // An answered shadow's entry only waited for this primary.
            if p.shadow.is_some() {
                p.token
            } else {
                None
            }
        };
        if let Some(token) = token {
            shadows.forget(token);
        }
    }
}

/// The shadow's half, read from the answer to its call (in the root's
/// `on_http_call_response`, which has headers); `None` for a mirror that
/// does not compare; `Err` when the answer is Envoy's own for a call it
/// could not complete.
pub(crate) fn shadow_answer(target: &Target, body_size: usize) -> Option<Result<Answer, NotCompared>> {
    let spec = &target.compare.as_ref()?.spec;
    let status = calls::call_response_header(":status").and_then(status_code).unwrap_or(0);
    if let Some(reason) = envoy_failure(status, body_size) {
        return Some(Err(reason));
    }
    let mut answer = spec.answer();
    answer.set_status(status);
    for (i, name) in spec.headers().iter().enumerate() {
        answer.set_header(spec, i, calls::call_response_header(name).as_deref());
    }
    let wanted = answer.body_wanted().min(body_size);
    if wanted > 0 {
        if let Some(body) = calls::call_response_body(wanted) {
            answer.add_body(&body);
        }
    }
    Some(Ok(answer))
}

/// Envoy answers a call it could not complete itself: 504 `upstream
/// request timeout` when the shadow's timeout ran out, 503 when it could
/// not reach the shadow's cluster. (An Envoy in front of the shadow's
/// service says the same for the same reasons.)
fn envoy_failure(status: u16, body_size: usize) -> Option<NotCompared> {
    let reason = match status {
        504 => NotCompared::Timeout,
        503 => NotCompared::Failed,
        _ => return None,
    };
    if body_size == 0 || body_size > 256 {
        return None;
    }
    let body = calls::call_response_body(body_size)?;
    let envoys = match reason {
        NotCompared::Timeout => body == b"upstream request timeout",
        _ => {
            body.starts_with(b"upstream connect error or disconnect/reset before headers")
                || body == b"no healthy upstream"
        }
    };
    envoys.then_some(reason)
}

fn status_code(bytes: Bytes) -> Option<u16> {
    std::str::from_utf8(&bytes).ok()?.parse().ok()
}

/// What a shadow sends: the request's headers (authority suffixed) and body.
pub(crate) struct Copy {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One request's copy. It goes out once it is both complete (the whole
/// body seen) and released (no delay holding the primary back).
pub(crate) struct Shadow {
    targets: Vec<(Rc<Target>, Option<PairRef>)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_body_bytes: usize,
    max_pending: usize,
    complete: bool,
    released: bool,
    /// Queued, or given up on.
    done: bool,
    stats: Stats,
}

impl Shadow {
    /// The request's comparisons, for its response hooks.
    pub fn pairs(shadow: &Rc<RefCell<Shadow>>) -> Vec<PairRef> {
        shadow.borrow().targets.iter().filter_map(|(_, pair)| pair.clone()).collect()
    }

    /// The request is held by a delay until [`Shadow::release`].
    pub fn hold(shadow: &Rc<RefCell<Shadow>>) {
        shadow.borrow_mut().released = false;
    }

    /// The headers are all there is (`end_of_stream` on the headers). True
    /// when the root's tick must be woken to send the copy.
    pub fn headers_complete(shadow: &Rc<RefCell<Shadow>>, shadows: &Shadows) -> bool {
        shadow.borrow_mut().complete = true;
        Self::try_send(shadow, shadows)
    }

    /// The body as the filter sees it now: a new chunk, or — `buffered`, while
    /// a delay holds the request and Envoy buffers it — everything so far.
    /// `end_of_stream` when it is the last. True as for `headers_complete`.
    pub fn body(
        shadow: &Rc<RefCell<Shadow>>,
        size: usize,
        buffered: bool,
        end_of_stream: bool,
        shadows: &Shadows,
    ) -> bool {
        {
            let mut s = shadow.borrow_mut();
            if s.done {
                return false;
            }
            let total = if buffered { size } else { s.body.len() + size };
            if total > s.max_body_bytes {
                s.stats.body_too_large.inc();
                s.done = true;
                s.body = Vec::new();
                for (_, pair) in &s.targets {
                    if let Some(pair) = pair {
                        let mut p = pair.borrow_mut();
                        p.sent = true;
                        p.not_compared(NotCompared::OverBound);
                    }
                }
                return false;
            }
            if let Some(bytes) = calls::request_body(size) {
                if buffered {
                    s.body.clear();
                }
                s.body.extend_from_slice(&bytes);
            }
            s.complete = end_of_stream;
        }
        Self::try_send(shadow, shadows)
    }

    /// The delay holding the request is over (in the root's tick, which
    /// sends the queue next).
    pub fn release(shadow: &Rc<RefCell<Shadow>>, shadows: &Shadows) {
        shadow.borrow_mut().released = true;
        Self::try_send(shadow, shadows);
    }

    /// Queues the copy for each mirror with room, once it is ready. True
    /// when the queue was empty before.
    fn try_send(shadow: &Rc<RefCell<Shadow>>, shadows: &Shadows) -> bool {
        let mut s = shadow.borrow_mut();
        if s.done || !s.complete || !s.released {
            return false;
        }
        s.done = true;
        let copy = Rc::new(Copy { headers: std::mem::take(&mut s.headers), body: std::mem::take(&mut s.body) });
        let mut wake = false;
        for (target, pair) in std::mem::take(&mut s.targets) {
            if let Some(pair) = &pair {
                pair.borrow_mut().sent = true;
            }
            let skipped = if !target.has_room() {
                Some(s.stats.in_flight_overflow)
            } else if shadows.tracked() >= s.max_pending {
                Some(s.stats.pending_overflow)
            } else {
                None
            };
            if let Some(counter) = skipped {
                counter.inc();
                if let Some(pair) = &pair {
                    pair.borrow_mut().not_compared(NotCompared::OverBound);
                }
                continue;
            }
            target.start();
            wake |= shadows.push(Ready { target, copy: Rc::clone(&copy), pair, stats: s.stats });
        }
        wake
    }
}
