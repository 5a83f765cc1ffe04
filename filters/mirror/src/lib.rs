//! `mirror.wasm`: Istio `mirror` / `mirrors` inside stock Envoy — the chain
//! filter of `switchyard-chain` built with its mirror stage only.

proxy_wasm::main! {{
    switchyard_chain::start::<switchyard_chain::MirrorOnly>();
}}
