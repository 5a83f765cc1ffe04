//! One request through the chain: egress → routing → fault → mirror, each
//! stage present in the config running in turn, all reading one fetch of the
//! request headers. A stage that answers the request (a denial, a redirect,
//! an abort) ends it there, as a filter answering in Envoy's chain would.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use switchyard_host::RequestHeaders;
use switchyard_policy::Request;

use crate::fault::{Faulted, Held};
use crate::mirror::{primary_body, primary_done, primary_ended, primary_headers, PairRef, Shadow};
use crate::module::Module;
use crate::root::{Shared, Stages};
use crate::routing::Routed;

pub(crate) struct ChainHttp<M> {
    context_id: u32,
    shared: Rc<Shared>,
    /// The config the request started with.
    stages: Rc<Stages>,
    /// Routing's (rule, destination) with response header operations.
    response_ops: Option<(usize, usize)>,
    /// A fault in progress, counted against `max_active_faults`.
    held: Option<Held>,
    /// Set while a fault delay holds the request.
    waiting: Rc<Cell<bool>>,
    /// Whether the body is being buffered (a delay paused it).
    buffering: bool,
    shadow: Option<Rc<RefCell<Shadow>>>,
    /// The shadow's comparisons, fed the primary's response.
    pairs: Vec<PairRef>,
    module: PhantomData<M>,
}

impl<M: Module> ChainHttp<M> {
    pub fn new(context_id: u32, shared: Rc<Shared>) -> Self {
        let stages = Rc::clone(&shared.stages.borrow());
        ChainHttp {
            context_id,
            shared,
            stages,
            response_ops: None,
            held: None,
            waiting: Rc::new(Cell::new(false)),
            buffering: false,
            shadow: None,
            pairs: Vec::new(),
            module: PhantomData,
        }
    }
}

impl<M: Module> Context for ChainHttp<M> {}

impl<M: Module> HttpContext for ChainHttp<M> {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let stages = Rc::clone(&self.stages);
        let shared = Rc::clone(&self.shared);
        let headers = RequestHeaders::default();
        let mut request = Request::new(&headers);
        if M::EGRESS {
            if let Some(egress) = &stages.egress {
                if egress.on_request(&mut request) {
                    return Action::Pause;
                }
            }
        }
        let mut routed_by = None;
        if M::ROUTING {
            if let Some(routing) = &stages.routing {
                match routing.on_request(&headers, &mut request, shared.rng.next_u64()) {
                    Routed::Answered => return Action::Pause,
                    Routed::Forwarded { response_ops } => {
                        self.response_ops = response_ops;
                        routed_by = Some(routing.cluster_header());
                    }
                    Routed::Passed => {}
                }
            }
        }
        // The mirror decides before the fault stage so that a delay can hold
        // the copy back with the request; an abort drops it unsent.
        let shadow = if M::MIRROR {
            stages
                .mirror
                .as_ref()
                .and_then(|mirror| mirror.on_request(&headers, &mut request, shared.rng.next_u64(), routed_by))
        } else {
            None
        };
        if M::FAULT {
            if let Some(fault) = &stages.fault {
                let (faulted, held) =
                    fault.on_request(&shared, &mut request, self.context_id, shadow.as_ref(), &self.waiting);
                self.held = held;
                match faulted {
                    Faulted::Aborted => return Action::Pause,
                    Faulted::Delayed => {
                        if let Some(shadow) = &shadow {
                            Shadow::hold(shadow);
                            self.pairs = Shadow::pairs(shadow);
                            if end_of_stream {
                                // Held: it goes out when the delay ends.
                                Shadow::headers_complete(shadow, &shared.shadows);
                            }
                        }
                        self.shadow = shadow;
                        return Action::Pause;
                    }
                    Faulted::No => {}
                }
            }
        }
        if let Some(shadow) = &shadow {
            self.pairs = Shadow::pairs(shadow);
            if end_of_stream && Shadow::headers_complete(shadow, &shared.shadows) {
                shared.wake_soon(self.context_id);
            }
        }
        self.shadow = shadow;
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // While a delay holds the request, its body must wait too: going on
        // from here would let Envoy continue the whole request.
        let waiting = M::FAULT && self.waiting.get();
        if M::MIRROR {
            if let Some(shadow) = &self.shadow {
                if Shadow::body(shadow, body_size, self.buffering, end_of_stream, &self.shared.shadows) {
                    self.shared.wake_soon(self.context_id);
                }
            }
        }
        if waiting {
            self.buffering = true;
            return Action::Pause;
        }
        self.buffering = false;
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Before routing's header operations: the comparison sees the
        // response as the upstream sent it, as it sees the shadow's.
        if M::MIRROR && !self.pairs.is_empty() {
            primary_headers(&self.pairs, end_of_stream, &self.shared.shadows);
        }
        if M::ROUTING {
            if let (Some(ops), Some(routing)) = (self.response_ops, &self.stages.routing) {
                routing.on_response(ops);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if M::MIRROR && !self.pairs.is_empty() {
            primary_body(&self.pairs, body_size, end_of_stream, &self.shared.shadows);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if M::MIRROR && !self.pairs.is_empty() {
            primary_done(&self.pairs, &self.shared.shadows);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(held) = self.held.take() {
            self.shared.delays.release(held);
        }
        if M::MIRROR && !self.pairs.is_empty() {
            primary_ended(&self.pairs, &self.shared.shadows);
        }
    }
}
