//! Egress filter: which external hosts a workload may reach.
//!
//! One module, two filter kinds, chosen by the plugin's `root_id`:
//! - `egress` (any other id too): HTTP filter, decides on `:authority`
//!   (for CONNECT that is the tunnel target) and answers denied requests
//!   itself, so nothing reaches the router;
//! - `egress-tls`: network filter placed before `tcp_proxy` with a
//!   `tls_inspector` listener filter, decides on the TLS SNI and closes denied
//!   connections before any upstream connection is made.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, PeerType};
use switchyard_host::{load_config, log, request_header, Counter};
use switchyard_policy::egress::{CompiledEgress, EgressDecision};

const TLS_ROOT_ID: &str = "egress-tls";

proxy_wasm::main! {{
    switchyard_host::install_panic_hook();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EgressRoot::default()) });
}}

#[derive(Clone, Copy)]
struct Stats {
    allowed: Counter,
    denied: Counter,
    dry_run_denied: Counter,
}

impl Stats {
    fn define(kind: &str) -> Stats {
        Stats {
            allowed: Counter::define(&format!("switchyard_egress_{kind}_allowed_total")),
            denied: Counter::define(&format!("switchyard_egress_{kind}_denied_total")),
            dry_run_denied: Counter::define(&format!("switchyard_egress_{kind}_dry_run_denied_total")),
        }
    }
}

#[derive(Default)]
struct EgressRoot {
    config: Option<Rc<CompiledEgress>>,
    stats: Option<Stats>,
    tls: bool,
}

impl Context for EgressRoot {}

impl RootContext for EgressRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.tls = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .is_some_and(|id| id == TLS_ROOT_ID.as_bytes());
        let Some(config) = load_config("egress", CompiledEgress::from_json) else {
            return false;
        };
        self.config = Some(Rc::new(config));
        self.stats = Some(Stats::define(if self.tls { "tls" } else { "http" }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(if self.tls { ContextType::StreamContext } else { ContextType::HttpContext })
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EgressHttp { config: self.config.clone()?, stats: self.stats? }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(EgressTls { config: self.config.clone()?, stats: self.stats? }))
    }
}

/// Counts and logs a decision; the status to refuse with when the traffic
/// must be stopped.
fn enforce(stats: Stats, decision: EgressDecision<'_>, what: &str) -> Option<u16> {
    match decision {
        EgressDecision::Allow { .. } => {
            stats.allowed.inc();
            None
        }
        EgressDecision::WouldDeny { .. } => {
            stats.dry_run_denied.inc();
            log(LogLevel::Info, &format!("switchyard.egress: dry-run: would deny {what}"));
            None
        }
        EgressDecision::Deny { status } => {
            stats.denied.inc();
            log(LogLevel::Debug, &format!("switchyard.egress: denied {what}"));
            Some(status)
        }
    }
}

struct EgressHttp {
    config: Rc<CompiledEgress>,
    stats: Stats,
}

impl Context for EgressHttp {}

impl HttpContext for EgressHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let authority = request_header(":authority").unwrap_or_default();
        // An authority without a port means the scheme's default port.
        let default_port = match request_header(":scheme").as_deref() {
            Some("https") => 443,
            _ => 80,
        };
        let decision = self.config.decide_authority_with_default_port(&authority, default_port);
        let Some(status) = enforce(self.stats, decision, &authority) else {
            return Action::Continue;
        };
        self.send_http_response(
            u32::from(status),
            vec![("content-type", "text/plain"), ("x-switchyard-egress", "denied")],
            Some(b"switchyard egress: destination not allowed by outbound traffic policy\n"),
        );
        Action::Pause
    }
}

struct EgressTls {
    config: Rc<CompiledEgress>,
    stats: Stats,
}

impl Context for EgressTls {}

impl StreamContext for EgressTls {
    fn on_new_connection(&mut self) -> Action {
        let sni = self
            .get_property(vec!["connection", "requested_server_name"])
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|sni| !sni.is_empty());
        let port = self
            .get_property(vec!["destination", "port"])
            .and_then(|bytes| bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()))
            .and_then(|b| u16::try_from(i64::from_le_bytes(b)).ok());
        let decision = self.config.decide_sni(sni.as_deref(), port);
        let what = sni.as_deref().unwrap_or("<no SNI>");
        if enforce(self.stats, decision, what).is_none() {
            return Action::Continue;
        }
        let _ = hostcalls::close_downstream();
        Action::Pause
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}
