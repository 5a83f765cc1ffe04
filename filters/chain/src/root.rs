//! The root context: one per plugin config per worker VM. It compiles the
//! config into stages, creates the per-request contexts, and owns the one
//! timer Envoy gives it: the tick resumes delayed requests at their
//! deadlines, sends queued shadow copies and expires those in flight, and
//! flushes the counters. Shadows' answers come to it (`shadows.rs`).

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::ContextType;
use switchyard_host::{calls, flush_counters, load_config, Rng, FLUSH_PERIOD};
use switchyard_policy::chain::CompiledChain;
use switchyard_policy::egress::CompiledEgress;

use crate::egress::EgressStage;
use crate::fault::{Delays, FaultStage};
use crate::http::ChainHttp;
use crate::mirror::MirrorStage;
use crate::module::Module;
use crate::routing::RoutingStage;
use crate::shadows::Shadows;
use crate::tls::{EgressTls, TlsStats};

const TLS_ROOT_ID: &str = "egress-tls";

/// A config's stages, ready to run. Requests hold the one they started
/// with, so a push never changes a request halfway.
pub(crate) struct Stages {
    pub egress: Option<EgressStage>,
    pub routing: Option<RoutingStage>,
    pub fault: Option<FaultStage>,
    pub mirror: Option<MirrorStage>,
}

impl Stages {
    fn new<M: Module>(chain: CompiledChain) -> Stages {
        Stages {
            egress: chain.egress.filter(|_| M::EGRESS).map(|c| EgressStage::new(c, "http")),
            routing: chain.routing.filter(|_| M::ROUTING).map(RoutingStage::new),
            fault: chain.fault.filter(|_| M::FAULT).map(FaultStage::new),
            mirror: chain.mirror.filter(|_| M::MIRROR).map(MirrorStage::new),
        }
    }
}

/// What a root context and its requests share; it outlives config pushes,
/// so requests delayed under the old config keep their deadlines.
pub(crate) struct Shared {
    pub stages: RefCell<Rc<Stages>>,
    pub rng: Rng,
    pub root_context_id: u32,
    pub delays: Delays,
    pub shadows: Shadows,
    timer: Timer,
}

impl Shared {
    /// Makes the tick come no later than `at` (ns since the epoch). Called
    /// from a request's context, which is the effective one again after.
    pub fn wake_by(&self, at: u128, now: u128, context_id: u32) {
        if at >= self.timer.wake_at.get() {
            return;
        }
        if calls::set_effective_context(self.root_context_id) {
            self.timer.arm(at, now);
        }
        calls::set_effective_context(context_id);
    }

    /// Makes the tick come at once (in 1 ms, Envoy's granularity) to send
    /// the shadow copies just queued.
    pub fn wake_soon(&self, context_id: u32) {
        let now = now_nanos(calls::current_time());
        self.wake_by(now, now, context_id);
    }
}

/// The root's timer, re-armed at each tick for the earliest thing due: the
/// next delay deadline, or the next counter flush.
struct Timer {
    wake_at: Cell<u128>,
    period: Cell<Duration>,
}

impl Timer {
    fn arm(&self, at: u128, now: u128) {
        // Envoy's tick period is in whole milliseconds; round up so the
        // tick never comes before the deadline.
        let ms = at.saturating_sub(now).div_ceil(1_000_000).clamp(1, u128::from(u32::MAX)) as u64;
        let period = Duration::from_millis(ms);
        if period != self.period.get() {
            calls::set_tick_period(period);
            self.period.set(period);
        }
        self.wake_at.set(now + u128::from(ms) * 1_000_000);
    }
}

pub(crate) fn now_nanos(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

enum Role {
    /// Not configured yet (or every config so far was refused).
    Unconfigured,
    Http(Rc<Shared>),
    Tls(Rc<(CompiledEgress, TlsStats)>),
}

pub(crate) struct ChainRoot<M> {
    context_id: u32,
    role: Role,
    next_flush: u128,
    /// Envoy is done with this root but it stays for shadows in flight.
    closing: bool,
    module: PhantomData<M>,
}

impl<M: Module> ChainRoot<M> {
    pub fn new(context_id: u32) -> Self {
        ChainRoot { context_id, role: Role::Unconfigured, next_flush: 0, closing: false, module: PhantomData }
    }

    fn is_tls_root() -> bool {
        M::TLS && calls::property(&["plugin_root_id"]).is_some_and(|id| id == TLS_ROOT_ID.as_bytes())
    }

    fn configure_tls(&mut self) -> bool {
        let Some(config) = load_config(TLS_ROOT_ID, CompiledEgress::from_json) else { return false };
        self.role = Role::Tls(Rc::new((config, TlsStats::define())));
        true
    }

    fn configure_http(&mut self) -> bool {
        let Some(chain) = load_config(M::NAME, M::compile) else { return false };
        let stages = Rc::new(Stages::new::<M>(chain));
        match &self.role {
            Role::Http(shared) => *shared.stages.borrow_mut() = stages,
            _ => {
                let now = now_nanos(calls::current_time());
                let shared = Rc::new(Shared {
                    stages: RefCell::new(stages),
                    rng: Rng::from_host_time(self.context_id),
                    root_context_id: self.context_id,
                    delays: Delays::default(),
                    shadows: Shadows::default(),
                    timer: Timer { wake_at: Cell::new(u128::MAX), period: Cell::new(Duration::ZERO) },
                });
                shared.timer.arm(now + FLUSH_PERIOD.as_nanos(), now);
                self.next_flush = now + FLUSH_PERIOD.as_nanos();
                self.role = Role::Http(shared);
            }
        }
        true
    }

    /// A closing root whose last shadow is over lets Envoy delete it.
    fn finish_closing(&mut self) {
        if let (true, Role::Http(shared)) = (self.closing, &self.role) {
            if shared.shadows.is_idle() {
                self.closing = false;
                flush_counters();
                calls::root_done();
            }
        }
    }
}

impl<M: Module> Context for ChainRoot<M> {
    /// A shadow's answer: every shadow is sent from this root's tick, so
    /// the SDK hands each answer here, by token.
    fn on_http_call_response(&mut self, token_id: u32, num_headers: usize, body_size: usize, _num_trailers: usize) {
        if let (true, Role::Http(shared)) = (M::MIRROR, &self.role) {
            shared.shadows.on_response(token_id, num_headers, body_size);
        }
        self.finish_closing();
    }

    /// Envoy is done with this root: a config push replaced its plugin (once
    /// the last request under it ended), or the listener went. Copies still
    /// queued are sent now, and the root stays (Envoy keeps it, its tick
    /// and its calls) until each shadow in flight has its answer or timed
    /// out: Envoy cancels the calls of a root it deletes, so returning true
    /// here would drop them, and with them the copies of requests that
    /// finished just before a push.
    fn on_done(&mut self) -> bool {
        flush_counters();
        let Role::Http(shared) = &self.role else { return true };
        if !M::MIRROR {
            return true;
        }
        shared.shadows.dispatch(now_nanos(calls::current_time()));
        self.closing = !shared.shadows.is_idle();
        !self.closing
    }
}

impl<M: Module> RootContext for ChainRoot<M> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        if Self::is_tls_root() {
            let configured = self.configure_tls();
            if configured {
                // Its tick only flushes counters.
                calls::set_tick_period(FLUSH_PERIOD);
            }
            return configured;
        }
        self.configure_http()
    }

    fn on_tick(&mut self) {
        let now = now_nanos(calls::current_time());
        let Role::Http(shared) = &self.role else {
            flush_counters();
            return;
        };
        if M::FAULT {
            shared.delays.resume_due(now, &shared.shadows);
            // Resuming switched the effective context to each request.
            calls::set_effective_context(self.context_id);
        }
        if M::MIRROR {
            // After the delays: a delay that ended released its copy.
            shared.shadows.dispatch(now);
            shared.shadows.expire(now);
        }
        if now >= self.next_flush {
            flush_counters();
            self.next_flush = now + FLUSH_PERIOD.as_nanos();
        }
        let mut next = self.next_flush;
        if let Some(deadline) = M::FAULT.then(|| shared.delays.next_deadline()).flatten() {
            next = next.min(deadline);
        }
        if let Some(deadline) = M::MIRROR.then(|| shared.shadows.next_deadline(now)).flatten() {
            next = next.min(deadline);
        }
        shared.timer.arm(next, now);
        self.finish_closing();
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if matches!(self.role, Role::Tls(_)) { ContextType::StreamContext } else { ContextType::HttpContext })
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let Role::Http(shared) = &self.role else { return None };
        Some(Box::new(ChainHttp::<M>::new(context_id, Rc::clone(shared))))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        let Role::Tls(config) = &self.role else { return None };
        Some(Box::new(EgressTls::new(Rc::clone(config))))
    }
}
