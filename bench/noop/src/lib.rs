//! The bench's floor: a proxy-wasm module that does nothing. Its root context
//! accepts any configuration and creates HTTP contexts that override no hook,
//! so every hook is the SDK's default `Continue`. An Envoy with this module
//! pays only for loading a V8 VM and for entering it on each request hook:
//! the cost every Switchyard module pays before doing any work.
//!
//! Built by the bench harness (`bench/build-wasm.sh`) into
//! `target/bench-modules/noop.wasm`; never part of `make build`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopRequest))
    }
}

struct NoopRequest;

impl Context for NoopRequest {}

impl HttpContext for NoopRequest {}
