//! `routing.wasm`: Istio VirtualService `http` routes inside stock Envoy —
//! the chain filter of `switchyard-chain` built with its routing stage only
//! (see that crate's `routing` module for what it does to a request).

proxy_wasm::main! {{
    switchyard_chain::start::<switchyard_chain::RoutingOnly>();
}}
