//! Fault filter: Istio `fault` (delay and abort, by percentage, per route)
//! inside stock Envoy.
//!
//! A delayed request is paused in `on_http_request_headers`; its deadline goes
//! into a heap owned by the root context (one per worker VM), which ticks
//! every millisecond only while delays are pending and resumes (or aborts)
//! each request when its deadline passes. Envoy gives one tick period per root
//! context, so one heap serves all in-flight delays.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, GrpcStatusCode, LogLevel};
use switchyard_host::{load_config, log, Counter, HostRequestHeaders, Rng};
use switchyard_policy::fault::{Abort, CompiledFault, FaultDecision};
use switchyard_policy::Request;

proxy_wasm::main! {{
    switchyard_host::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(FaultRoot { context_id, shared: None })
    });
}}

const TICK: Duration = Duration::from_millis(1);

#[derive(Clone, Copy)]
struct Stats {
    requests: Counter,
    delays_injected: Counter,
    aborts_injected: Counter,
    faults_overflow: Counter,
}

/// A paused request, ordered by deadline (earliest first in the heap).
struct Delayed {
    deadline_nanos: u128,
    context_id: u32,
    then_abort: Option<Abort>,
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

/// State shared by the root context and its HTTP contexts. A new config
/// replaces `config` only, so delays in flight keep their deadlines.
struct Shared {
    config: RefCell<Rc<CompiledFault>>,
    stats: Stats,
    rng: Rng,
    delayed: RefCell<BinaryHeap<Reverse<Delayed>>>,
    active_faults: Cell<u32>,
    ticking: Cell<bool>,
}

struct FaultRoot {
    context_id: u32,
    shared: Option<Rc<Shared>>,
}

impl Context for FaultRoot {}

impl RootContext for FaultRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(config) = load_config("fault", CompiledFault::from_json) else {
            return false;
        };
        match &self.shared {
            Some(shared) => *shared.config.borrow_mut() = Rc::new(config),
            None => {
                self.shared = Some(Rc::new(Shared {
                    config: RefCell::new(Rc::new(config)),
                    stats: Stats {
                        requests: Counter::define("switchyard_fault_requests_total"),
                        delays_injected: Counter::define("switchyard_fault_delays_injected_total"),
                        aborts_injected: Counter::define("switchyard_fault_aborts_injected_total"),
                        faults_overflow: Counter::define("switchyard_fault_faults_overflow_total"),
                    },
                    rng: Rng::from_host_time(self.context_id),
                    delayed: RefCell::new(BinaryHeap::new()),
                    active_faults: Cell::new(0),
                    ticking: Cell::new(false),
                }))
            }
        }
        true
    }

    fn on_tick(&mut self) {
        let Some(shared) = &self.shared else { return };
        let now = now_nanos(self.get_current_time());
        loop {
            let due = {
                let mut delayed = shared.delayed.borrow_mut();
                match delayed.peek() {
                    Some(Reverse(next)) if next.deadline_nanos <= now => delayed.pop(),
                    _ => None,
                }
            };
            let Some(Reverse(due)) = due else { break };
            // The request may be gone (client reset during the delay): the
            // host then refuses the context switch and there is nothing to do.
            if hostcalls::set_effective_context(due.context_id).is_err() {
                continue;
            }
            match due.then_abort {
                Some(abort) => send_abort(&shared.stats, abort),
                None => {
                    let _ = hostcalls::resume_http_request();
                }
            }
        }
        if shared.delayed.borrow().is_empty() {
            let _ = hostcalls::set_effective_context(self.context_id);
            let _ = hostcalls::set_tick_period(Duration::ZERO);
            shared.ticking.set(false);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(FaultHttp { context_id, root_context_id: self.context_id, shared, counted: false }))
    }
}

fn now_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Answers the current effective context's request as Envoy's fault filter
/// does: the HTTP status with body "fault filter abort", or for gRPC a
/// trailers-only response whose `grpc-status` Envoy itself writes.
fn send_abort(stats: &Stats, abort: Abort) {
    stats.aborts_injected.inc();
    let result = match abort {
        Abort::Http(status) => hostcalls::send_http_response(
            u32::from(status),
            vec![("content-type", "text/plain")],
            Some(b"fault filter abort"),
        ),
        Abort::Grpc(code) => hostcalls::send_grpc_response(grpc_status(code), Some("fault filter abort"), vec![]),
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

struct FaultHttp {
    context_id: u32,
    root_context_id: u32,
    shared: Rc<Shared>,
    /// Whether this request holds one of `max_active_faults`.
    counted: bool,
}

impl FaultHttp {
    fn start_ticking(&self) {
        if self.shared.ticking.replace(true) {
            return;
        }
        // The tick period belongs to the root context.
        if hostcalls::set_effective_context(self.root_context_id).is_ok() {
            let _ = hostcalls::set_tick_period(TICK);
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }
}

impl Context for FaultHttp {}

impl HttpContext for FaultHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        shared.stats.requests.inc();
        let config = Rc::clone(&shared.config.borrow());
        let source = HostRequestHeaders;
        let mut request = Request::new(&source);
        let (delay_ms, abort) = match config.decide(&mut request, shared.rng.next_u64()) {
            FaultDecision::Fault(action) if !action.is_noop() => (action.delay_ms, action.abort),
            _ => return Action::Continue,
        };
        if config.max_active_faults().is_some_and(|max| shared.active_faults.get() >= max) {
            shared.stats.faults_overflow.inc();
            return Action::Continue;
        }
        shared.active_faults.set(shared.active_faults.get() + 1);
        self.counted = true;
        if let Some(delay_ms) = delay_ms {
            shared.stats.delays_injected.inc();
            let deadline_nanos = now_nanos(self.get_current_time()) + u128::from(delay_ms) * 1_000_000;
            shared.delayed.borrow_mut().push(Reverse(Delayed {
                deadline_nanos,
                context_id: self.context_id,
                then_abort: abort,
            }));
            self.start_ticking();
            return Action::Pause;
        }
        if let Some(abort) = abort {
            send_abort(&shared.stats, abort);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.counted {
            let active = self.shared.active_faults.get();
            self.shared.active_faults.set(active.saturating_sub(1));
        }
    }
}
