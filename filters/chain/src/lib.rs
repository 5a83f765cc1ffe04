//! The proxy-wasm layer of every Switchyard module. One HTTP filter runs the
//! stages its config holds, egress → routing → fault → mirror, in a single
//! context per request: the combined module (`switchyard.wasm`) runs all
//! four from one config, and each single-purpose module (`routing.wasm`...)
//! is the same filter built with one stage. A request therefore pays one
//! context, one header fetch and one entry into the VM per hook, however many
//! stages it passes.
//!
//! Which stages a module contains is fixed at compile time by its
//! [`Module`]; a single-purpose module's binary holds no code of the others.
//! The decisions are `switchyard-policy`'s; this crate only moves them in and
//! out of Envoy.

mod egress;
mod fault;
mod http;
mod mirror;
mod module;
mod root;
mod routing;
mod shadows;
mod tls;

pub use module::{Combined, EgressOnly, FaultOnly, MirrorOnly, Module, RoutingOnly};

/// The body of a module's `proxy_wasm::main!`.
pub fn start<M: Module>() {
    switchyard_host::install_panic_hook();
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::ChainRoot::<M>::new(context_id))
    });
}
