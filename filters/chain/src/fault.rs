//! Fault stage: Istio `fault` (delay and abort, by percentage, per route).
//!
//! A delayed request is paused; its deadline goes into a heap owned by the
//! root context (one per worker VM), whose tick comes at the earliest
//! deadline and resumes (or aborts) every request then due. One heap serves
//! all in-flight delays: Envoy gives one timer per root context.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

use proxy_wasm::types::{GrpcStatusCode, LogLevel};
use switchyard_host::{calls, log, Counter, RequestHeaders};
use switchyard_policy::fault::{Abort, CompiledFault, FaultDecision};
use switchyard_policy::Request;

use crate::mirror::Shadow;
use crate::root::{now_nanos, Shared};
use crate::shadows::Shadows;

#[derive(Clone, Copy)]
struct Stats {
    requests: Counter,
    delays_injected: Counter,
    aborts_injected: Counter,
    faults_overflow: Counter,
}

pub(crate) struct FaultStage {
    config: CompiledFault,
    stats: Stats,
}

impl FaultStage {
    pub fn new(config: CompiledFault) -> Self {
        FaultStage {
            config,
            stats: Stats {
                requests: Counter::define("switchyard_fault_requests_total"),
                delays_injected: Counter::define("switchyard_fault_delays_injected_total"),
                aborts_injected: Counter::define("switchyard_fault_aborts_injected_total"),
                faults_overflow: Counter::define("switchyard_fault_faults_overflow_total"),
            },
        }
    }
}

/// What the stage did to the request.
pub(crate) enum Faulted {
    No,
    /// Answered: nothing after this stage runs.
    Aborted,
    /// Paused until its deadline; `shadow` waits with it.
    Delayed,
}

/// A request counted against `max_active_faults` until its log.
pub(crate) struct Held;

impl FaultStage {
    /// `shadow`: the mirror stage's copy, released when the request goes on;
    /// `waiting` is set while a delay holds the request.
    pub fn on_request(
        &self,
        shared: &Shared,
        request: &mut Request<'_, RequestHeaders>,
        context_id: u32,
        shadow: Option<&Rc<RefCell<Shadow>>>,
        waiting: &Rc<Cell<bool>>,
    ) -> (Faulted, Option<Held>) {
        self.stats.requests.inc();
        let (delay_ms, abort) = match self.config.decide(request, shared.rng.next_u64()) {
            FaultDecision::Fault(action) if !action.is_noop() => (action.delay_ms, action.abort),
            _ => return (Faulted::No, None),
        };
        let delays = &shared.delays;
        if self.config.max_active_faults().is_some_and(|max| delays.active.get() >= max) {
            self.stats.faults_overflow.inc();
            return (Faulted::No, None);
        }
        delays.active.set(delays.active.get() + 1);
        if let Some(delay_ms) = delay_ms {
            self.stats.delays_injected.inc();
            let now = now_nanos(calls::current_time());
            let deadline_nanos = now + u128::from(delay_ms) * 1_000_000;
            delays.heap.borrow_mut().push(Reverse(Delayed {
                deadline_nanos,
                context_id,
                then_abort: abort.map(|abort| (abort, self.stats.aborts_injected)),
                shadow: shadow.cloned(),
                waiting: Rc::clone(waiting),
            }));
            waiting.set(true);
            shared.wake_by(deadline_nanos, now, context_id);
            return (Faulted::Delayed, Some(Held));
        }
        if let Some(abort) = abort {
            send_abort(self.stats.aborts_injected, abort);
            return (Faulted::Aborted, Some(Held));
        }
        (Faulted::No, Some(Held))
    }
}

/// A paused request, ordered by deadline (earliest first in the heap).
struct Delayed {
    deadline_nanos: u128,
    context_id: u32,
    then_abort: Option<(Abort, Counter)>,
    shadow: Option<Rc<RefCell<Shadow>>>,
    waiting: Rc<Cell<bool>>,
}

impl Delayed {
    fn key(&self) -> (u128, u32) {
        (self.deadline_nanos, self.context_id)
    }
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The root's delayed requests and its count of faults in progress.
#[derive(Default)]
pub(crate) struct Delays {
    heap: RefCell<BinaryHeap<Reverse<Delayed>>>,
    active: Cell<u32>,
}

impl Delays {
    pub fn next_deadline(&self) -> Option<u128> {
        self.heap.borrow().peek().map(|Reverse(next)| next.deadline_nanos)
    }

    /// Resumes, or aborts, every request whose deadline has passed, leaving
    /// the effective context on the last one. A resumed request's shadow
    /// copy goes to `shadows`' queue.
    pub fn resume_due(&self, now: u128, shadows: &Shadows) {
        loop {
            let due = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse(next)) if next.deadline_nanos <= now => heap.pop(),
                    _ => None,
                }
            };
            let Some(Reverse(due)) = due else { break };
            due.waiting.set(false);
            // A request reset during its delay is gone: the host refuses the
            // switch and there is nothing left to do.
            if !calls::set_effective_context(due.context_id) {
                continue;
            }
            match due.then_abort {
                Some((abort, counter)) => send_abort(counter, abort),
                None => {
                    if let Some(shadow) = &due.shadow {
                        Shadow::release(shadow, shadows);
                    }
                    calls::resume_request();
                }
            }
        }
    }

    pub fn release(&self, _held: Held) {
        self.active.set(self.active.get().saturating_sub(1));
    }
}

/// Answers the current effective context's request as Envoy's fault filter
/// does: the HTTP status with body "fault filter abort", or for gRPC a
/// trailers-only response whose `grpc-status` Envoy itself writes.
fn send_abort(counter: Counter, abort: Abort) {
    counter.inc();
    let result = match abort {
        Abort::Http(status) => {
            calls::send_response(u32::from(status), vec![("content-type", "text/plain")], Some(b"fault filter abort"))
        }
        Abort::Grpc(code) => calls::send_grpc_response(grpc_status(code), Some("fault filter abort")),
    };
    if let Err(status) = result {
        log(LogLevel::Warn, &format!("switchyard.fault: cannot send abort: {status:?}"));
    }
}

/// The policy crate accepts only codes 0..=16, so `Unknown` is unreachable
/// in practice and merely keeps this total.
fn grpc_status(code: u32) -> GrpcStatusCode {
    use GrpcStatusCode::*;
    const CODES: [GrpcStatusCode; 17] = [
        Ok,
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ];
    usize::try_from(code).ok().and_then(|i| CODES.get(i).copied()).unwrap_or(Unknown)
}
