//! `switchyard.wasm`: the whole chain in one module and one VM. Root id
//! `egress-tls` makes a plugin the TLS egress network filter; any other
//! (`switchyard` by convention) the HTTP filter that runs egress → routing →
//! fault → mirror per request from one `switchyard_policy::chain` config.
//! Filters loading it with the same `vm_id` share one VM per worker.

proxy_wasm::main! {{
    switchyard_chain::start::<switchyard_chain::Combined>();
}}
