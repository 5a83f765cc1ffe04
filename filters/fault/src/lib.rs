//! `fault.wasm`: Istio `fault` (delay and abort, by percentage, per route)
//! inside stock Envoy — the chain filter of `switchyard-chain` built with
//! its fault stage only.

proxy_wasm::main! {{
    switchyard_chain::start::<switchyard_chain::FaultOnly>();
}}
