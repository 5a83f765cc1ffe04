//! Egress for TLS: a network filter placed before `tcp_proxy` with a
//! `tls_inspector` listener filter. It decides on the SNI and closes denied
//! connections before any upstream connection is made.

use std::rc::Rc;

use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};
use switchyard_host::{calls, destination_port};
use switchyard_policy::egress::CompiledEgress;

use crate::egress::Stats;

pub(crate) struct TlsStats(Stats);

impl TlsStats {
    pub fn define() -> Self {
        TlsStats(Stats::define("tls"))
    }
}

pub(crate) struct EgressTls {
    config: Rc<(CompiledEgress, TlsStats)>,
}

impl EgressTls {
    pub fn new(config: Rc<(CompiledEgress, TlsStats)>) -> Self {
        EgressTls { config }
    }
}

impl Context for EgressTls {}

impl StreamContext for EgressTls {
    fn on_new_connection(&mut self) -> Action {
        let (config, stats) = &*self.config;
        let sni = calls::property(&["connection", "requested_server_name"])
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|sni| !sni.is_empty());
        let decision = config.decide_sni(sni.as_deref(), destination_port());
        if stats.0.enforce(decision, sni.as_deref().unwrap_or("<no SNI>")).is_none() {
            return Action::Continue;
        }
        calls::close_downstream();
        Action::Pause
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {}
}
