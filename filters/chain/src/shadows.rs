//! The root side of mirroring: copies ready to send, and shadows in flight.
//!
//! Why the root sends them. proxy-wasm-rust-sdk 0.2 files each dispatched
//! call under the context whose hook is running when it is made — whatever
//! `set_effective_context` says — and hands the answer to that context's
//! `on_http_call_response`, or drops it silently once that context is gone.
//! A shadow sent from a request's hook would lose its answer whenever the
//! primary finishes first (the usual case), and with it its comparison and
//! the end of its in-flight count. So a request only queues its complete
//! copy, and the root sends the queue from its next tick, armed 1 ms ahead
//! (Envoy's tick granularity) when the queue fills: every answer then comes
//! to the root (`ChainRoot::on_http_call_response`, by token), and since
//! Envoy tracks the call on the root, a primary that finishes first cannot
//! cancel it either. The price: a shadow leaves up to ~1 ms later (never the
//! primary), and one tick per millisecond while copies keep coming. The
//! alternatives are worse: calling `proxy_http_call` directly skips the
//! SDK's token map, whose lookup aborts the VM on a token it does not know;
//! a request's context cannot outlive its request in the ABI; a shared
//! queue's wake-up crosses Envoy's dispatcher for the same effect.
//!
//! Everything here is bounded: the queue and the in-flight table together
//! hold at most `max_pending` entries (`MirrorConfig::max_pending`), each
//! in-flight entry expires with its shadow's timeout, and a comparison holds
//! digests, never bodies.
//!
//! A shadow stays in flight until Envoy answers its call, which it does by
//! the call's timeout at the latest (with its own 504), so the in-flight
//! count is Envoy's. That answer, not a clock, says the shadow timed out:
//! Envoy's timers run from its event loop's cached time and may fire a few
//! milliseconds before a deadline the module computes, so a deadline check
//! would call some timeouts answers. The module's own expiry, a little
//! after, only catches a call Envoy never answered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::types::LogLevel;
use switchyard_host::{calls, log};

use crate::mirror::{shadow_answer, Copy, NotCompared, PairRef, Stats, Target};

/// A complete copy for one mirror, waiting for the root's tick.
pub(crate) struct Ready {
    pub target: Rc<Target>,
    pub copy: Rc<Copy>,
    pub pair: Option<PairRef>,
    pub stats: Stats,
}

/// A dispatched shadow, until its answer (and, for a comparison, the
/// primary's) is in, or its timeout.
struct InFlight {
    target: Rc<Target>,
    pair: Option<PairRef>,
    /// Dispatch + the shadow's timeout: how long a comparison waits.
    timeout_at: u128,
    /// When the entry is dropped whatever happened: `timeout_at` once the
    /// shadow answered, a grace later until then.
    deadline: u128,
    /// The shadow answered: the entry only waits for the primary.
    answered: bool,
}

/// How long after a call's timeout its entry waits for Envoy's answer.
const ANSWER_GRACE_NANOS: u128 = 1_000_000_000;

#[derive(Default)]
pub(crate) struct Shadows {
    queue: RefCell<Vec<Ready>>,
    in_flight: RefCell<HashMap<u32, InFlight>>,
    /// No entry expires before this (ns; 0 when there is none).
    next_expiry: Cell<u128>,
}

impl Shadows {
    /// Entries held now, against `max_pending`.
    pub fn tracked(&self) -> usize {
        self.queue.borrow().len() + self.in_flight.borrow().len()
    }

    /// Queues a copy; true when the queue was empty (the tick must be woken).
    pub fn push(&self, ready: Ready) -> bool {
        let mut queue = self.queue.borrow_mut();
        queue.push(ready);
        queue.len() == 1
    }

    /// Nothing queued, nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.tracked() == 0
    }

    pub fn has_queued(&self) -> bool {
        !self.queue.borrow().is_empty()
    }

    /// Sends every queued copy. Runs in the root's tick: the root is the
    /// SDK's active context, so each answer comes back to the root.
    pub fn dispatch(&self, now: u128) {
        let ready = std::mem::take(&mut *self.queue.borrow_mut());
        for r in ready {
            let headers: Vec<(&str, &str)> = r.copy.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = (!r.copy.body.is_empty()).then_some(r.copy.body.as_slice());
            match calls::dispatch_http_call(&r.target.cluster, headers, body, r.target.timeout) {
                Ok(token) => {
                    r.stats.mirrored.inc();
                    let timeout_at = now + r.target.timeout.as_nanos();
                    let deadline = timeout_at + ANSWER_GRACE_NANOS;
                    if let Some(pair) = &r.pair {
                        pair.borrow_mut().token = Some(token);
                    }
                    let entry = InFlight { target: r.target, pair: r.pair, timeout_at, deadline, answered: false };
                    self.in_flight.borrow_mut().insert(token, entry);
                    let next = self.next_expiry.get();
                    if next == 0 || deadline < next {
                        self.next_expiry.set(deadline);
                    }
                }
                Err(status) => {
                    r.stats.dispatch_failed.inc();
                    r.target.end();
                    if let Some(pair) = &r.pair {
                        pair.borrow_mut().not_compared(NotCompared::Failed);
                    }
                    log(
                        LogLevel::Debug,
                        &format!("switchyard.mirror: dispatch to {} failed: {status:?}", r.target.cluster),
                    );
                }
            }
        }
    }

    /// A shadow's answer (`num_headers` 0: the call failed without one).
    pub fn on_response(&self, token: u32, num_headers: usize, body_size: usize) {
        let Some(mut entry) = self.in_flight.borrow_mut().remove(&token) else {
            // Expired already, or forgotten: nothing waits for it.
            return;
        };
        entry.target.end();
        let Some(pair) = entry.pair.clone() else { return };
        if pair.borrow().is_over() {
            return;
        }
        if num_headers == 0 {
            pair.borrow_mut().not_compared(NotCompared::Failed);
            return;
        }
        let answer = match shadow_answer(&entry.target, body_size) {
            Some(Ok(answer)) => answer,
            Some(Err(reason)) => {
                pair.borrow_mut().not_compared(reason);
                return;
            }
            None => return,
        };
        let waits = {
            let mut p = pair.borrow_mut();
            p.shadow_answered(answer);
            !p.is_over()
        };
        if waits {
            entry.answered = true;
            entry.deadline = entry.timeout_at;
            let deadline = entry.deadline;
            self.in_flight.borrow_mut().insert(token, entry);
            let next = self.next_expiry.get();
            if next == 0 || deadline < next {
                self.next_expiry.set(deadline);
            }
        }
    }

    /// Drops the entry of a comparison the request side completed.
    pub fn forget(&self, token: u32) {
        self.in_flight.borrow_mut().remove(&token);
    }

    /// Ends every entry whose deadline has passed: a shadow that has not
    /// answered timed out; a comparison still waiting for its primary gives
    /// up on it.
    pub fn expire(&self, now: u128) {
        let next = self.next_expiry.get();
        if next == 0 || now < next {
            return;
        }
        let mut next = 0;
        self.in_flight.borrow_mut().retain(|_, entry| {
            if entry.deadline > now {
                if next == 0 || entry.deadline < next {
                    next = entry.deadline;
                }
                return true;
            }
            if !entry.answered {
                entry.target.end();
            }
            if let Some(pair) = &entry.pair {
                let reason = if entry.answered { NotCompared::PrimaryIncomplete } else { NotCompared::Timeout };
                pair.borrow_mut().not_compared(reason);
            }
            false
        });
        self.next_expiry.set(next);
    }

    /// When the tick must come next for these shadows (ns), if ever.
    pub fn next_deadline(&self, now: u128) -> Option<u128> {
        if self.has_queued() {
            return Some(now);
        }
        Some(self.next_expiry.get()).filter(|&n| n != 0)
    }
}
