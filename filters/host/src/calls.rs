//! Every host call the filters make, in one place. A counting build
//! (`--features count-host-calls`, built by the bench harness) counts each
//! one, so the bench can report host calls per request per arm; the normal
//! build compiles the counting away.
//!
//! Results the filters cannot act on are dropped here, once, rather than
//! at every call site: a failed header write on a request Envoy has already
//! reset, say, leaves nothing to do.

use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, GrpcStatusCode, LogLevel, MapType, MetricType, Status};

#[cfg(feature = "count-host-calls")]
mod count {
    use std::cell::Cell;

    thread_local! {
        static CALLS: Cell<u64> = const { Cell::new(0) };
    }

    pub(crate) fn one() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    /// The calls counted since the last take.
    pub(crate) fn take() -> u64 {
        CALLS.with(|c| c.replace(0))
    }
}

#[inline(always)]
fn counted() {
    #[cfg(feature = "count-host-calls")]
    count::one();
}

/// Host calls counted since the last call (always 0 without the feature).
pub(crate) fn take_count() -> u64 {
    #[cfg(feature = "count-host-calls")]
    return count::take();
    #[cfg(not(feature = "count-host-calls"))]
    0
}

pub fn log(level: LogLevel, message: &str) {
    counted();
    let _ = hostcalls::log(level, message);
}

pub fn current_time() -> SystemTime {
    counted();
    hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
}

pub fn plugin_configuration() -> Result<Option<Bytes>, Status> {
    counted();
    hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
}

pub fn request_headers() -> Vec<(String, Bytes)> {
    counted();
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    counted();
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn add_request_header(name: &str, value: &str) {
    counted();
    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn set_response_header(name: &str, value: Option<&str>) {
    counted();
    let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
}

pub fn add_response_header(name: &str, value: &str) {
    counted();
    let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
}

pub fn request_body(size: usize) -> Option<Bytes> {
    counted();
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, size).ok().flatten()
}

/// One response header (the first value), in a response hook.
pub fn response_header(name: &str) -> Option<Bytes> {
    counted();
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name).ok().flatten()
}

/// The response body chunk of this `on_http_response_body`, up to `size`.
pub fn response_body(size: usize) -> Option<Bytes> {
    counted();
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpResponseBody, 0, size).ok().flatten()
}

/// One header of the answer to a dispatched call, in its
/// `on_http_call_response`; only when the answer has headers (the SDK
/// aborts the VM on the error the host returns otherwise).
pub fn call_response_header(name: &str) -> Option<Bytes> {
    counted();
    hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name).ok().flatten()
}

/// The first `size` bytes of the answer to a dispatched call.
pub fn call_response_body(size: usize) -> Option<Bytes> {
    counted();
    hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, size).ok().flatten()
}

pub fn property(path: &[&str]) -> Option<Bytes> {
    counted();
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

pub fn set_property(path: &[&str], value: Option<&[u8]>) -> Result<(), Status> {
    counted();
    hostcalls::set_property(path.to_vec(), value)
}

pub fn send_response(status: u32, headers: Vec<(&str, &str)>, body: Option<&[u8]>) -> Result<(), Status> {
    counted();
    hostcalls::send_http_response(status, headers, body)
}

pub fn send_grpc_response(status: GrpcStatusCode, message: Option<&str>) -> Result<(), Status> {
    counted();
    hostcalls::send_grpc_response(status, message, vec![])
}

pub fn resume_request() {
    counted();
    let _ = hostcalls::resume_http_request();
}

/// Makes `context_id` the one later host calls act on; false when the host
/// no longer knows it (a request reset while it waited).
pub fn set_effective_context(context_id: u32) -> bool {
    counted();
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn set_tick_period(period: Duration) {
    counted();
    let _ = hostcalls::set_tick_period(period);
}

pub fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u32, Status> {
    counted();
    hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout)
}

/// Tells Envoy a root context that asked to stay (`on_done` returned
/// false) has finished. Call it only then: the SDK panics on Envoy's
/// `NotFound` for any other root.
pub fn root_done() {
    counted();
    let _ = hostcalls::done();
}

pub fn close_downstream() {
    counted();
    let _ = hostcalls::close_downstream();
}

pub(crate) fn define_metric(name: &str) -> Result<u32, Status> {
    counted();
    hostcalls::define_metric(MetricType::Counter, name)
}

pub(crate) fn increment_metric(id: u32, by: u64) {
    counted();
    let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
}
