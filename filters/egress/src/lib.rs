//! `egress.wasm`: which external hosts a workload may reach. One module, two
//! filter kinds, chosen by the plugin's `root_id`:
//! - `egress` (any other id too): HTTP filter, decides on `:authority`
//!   (for CONNECT that is the tunnel target) and answers denied requests
//!   itself, so nothing reaches the router;
//! - `egress-tls`: network filter placed before `tcp_proxy` with a
//!   `tls_inspector` listener filter, decides on the TLS SNI and closes denied
//!   connections before any upstream connection is made.

proxy_wasm::main! {{
    switchyard_chain::start::<switchyard_chain::EgressOnly>();
}}
