//! Egress stage (HTTP): which external hosts a workload may reach, decided
//! on `:authority` (for CONNECT that is the tunnel target). A denied request
//! is answered here, so nothing reaches the router.

use proxy_wasm::types::LogLevel;
use switchyard_host::{calls, log, Counter, RequestHeaders};
use switchyard_policy::egress::{CompiledEgress, EgressDecision};
use switchyard_policy::Request;

#[derive(Clone, Copy)]
pub(crate) struct Stats {
    allowed: Counter,
    denied: Counter,
    dry_run_denied: Counter,
}

impl Stats {
    /// `kind`: `http` or `tls`, the two filters' counters.
    pub fn define(kind: &str) -> Stats {
        Stats {
            allowed: Counter::define(&format!("switchyard_egress_{kind}_allowed_total")),
            denied: Counter::define(&format!("switchyard_egress_{kind}_denied_total")),
            dry_run_denied: Counter::define(&format!("switchyard_egress_{kind}_dry_run_denied_total")),
        }
    }

    /// Counts and logs a decision; the status to refuse with when the
    /// traffic must be stopped.
    pub fn enforce(self, decision: EgressDecision<'_>, what: &str) -> Option<u16> {
        match decision {
            EgressDecision::Allow { .. } => {
                self.allowed.inc();
                None
            }
            EgressDecision::WouldDeny { .. } => {
                self.dry_run_denied.inc();
                log(LogLevel::Info, &format!("switchyard.egress: dry-run: would deny {what}"));
                None
            }
            EgressDecision::Deny { status } => {
                self.denied.inc();
                log(LogLevel::Debug, &format!("switchyard.egress: denied {what}"));
                Some(status)
            }
        }
    }
}

pub(crate) struct EgressStage {
    config: CompiledEgress,
    stats: Stats,
}

impl EgressStage {
    pub fn new(config: CompiledEgress, kind: &str) -> Self {
        EgressStage { config, stats: Stats::define(kind) }
    }

    /// True when the request was refused (and answered).
    pub fn on_request(&self, request: &mut Request<'_, RequestHeaders>) -> bool {
        // An authority without a port means the scheme's default port.
        let default_port = match request.header(":scheme") {
            Some("https") => 443,
            _ => 80,
        };
        let authority = request.header(":authority").unwrap_or_default();
        let decision = self.config.decide_authority_with_default_port(authority, default_port);
        let Some(status) = self.stats.enforce(decision, authority) else { return false };
        let _ = calls::send_response(
            u32::from(status),
            vec![("content-type", "text/plain"), ("x-switchyard-egress", "denied")],
            Some(b"switchyard egress: destination not allowed by outbound traffic policy\n"),
        );
        true
    }
}
