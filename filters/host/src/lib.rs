//! The host side every Switchyard filter shares. The filters' decisions live
//! in `switchyard-policy`, which knows nothing of proxy-wasm; this crate is the
//! thin adapter between the two: reading and compiling the plugin
//! configuration, handing request headers to the matchers, randomness from
//! host data, and Envoy stats counters.

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};
use switchyard_policy::{ConfigError, HeaderSource};

/// Logs at critical level before the abort that follows any panic, so a bug
/// shows its reason in Envoy's log instead of an opaque wasm trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("switchyard: panic: {info}"));
    }));
}

pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Reads the plugin configuration and compiles it. On failure the reason is
/// logged (Envoy's own NACK message is generic) and `None` tells the caller
/// to return false from `on_configure`, so Envoy keeps the last good config.
pub fn load_config<T>(filter: &str, compile: impl FnOnce(&[u8]) -> Result<T, ConfigError>) -> Option<T> {
    let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
        Ok(Some(bytes)) if !bytes.is_empty() => bytes,
        Ok(_) => {
            log(
                LogLevel::Error,
                &format!("switchyard.{filter}: rejected configuration: no plugin configuration given"),
            );
            return None;
        }
        Err(status) => {
            log(LogLevel::Error, &format!("switchyard.{filter}: cannot read plugin configuration: {status:?}"));
            return None;
        }
    };
    match compile(&bytes) {
        Ok(config) => {
            log(LogLevel::Info, &format!("switchyard.{filter}: configuration accepted ({} bytes)", bytes.len()));
            Some(config)
        }
        Err(error) => {
            log(LogLevel::Error, &format!("switchyard.{filter}: rejected configuration: {error}"));
            None
        }
    }
}

/// One request header, or `None`. Values that are not UTF-8 (HTTP allows
/// obs-text bytes) are converted lossily: the SDK's own string getters
/// unwrap the conversion and would panic on them.
pub fn request_header(name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()?;
    Some(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// All request headers, values converted as in [`request_header`].
pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| {
            (name, String::from_utf8(value).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        })
        .collect()
}

/// Request headers read straight from the host, one call per header the
/// matchers ask for (`switchyard_policy::Request` memoizes them).
pub struct HostRequestHeaders;

impl HeaderSource for HostRequestHeaders {
    fn header(&self, name: &str) -> Option<String> {
        request_header(name)
    }

    /// Istio's port for `match.port`: the `:port` of the virtual host istiod
    /// names `host:port` (the service port on a sidecar, the Gateway server
    /// port on a gateway, where the pod listens on its target port, 8080 for
    /// 80); else, outside an Istio-shaped route table, the port the
    /// connection was made to.
    fn port(&self) -> Option<u16> {
        let vhost = hostcalls::get_property(vec!["xds", "virtual_host_name"]).ok().flatten();
        let from_vhost = vhost.as_deref().and_then(|name| {
            let name = std::str::from_utf8(name).ok()?;
            name.rsplit_once(':')?.1.parse::<u16>().ok()
        });
        from_vhost.or_else(|| {
            // `destination.port` is an int64, little-endian.
            let bytes = hostcalls::get_property(vec!["destination", "port"]).ok().flatten()?;
            let bytes: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
            u16::try_from(i64::from_le_bytes(bytes)).ok()
        })
    }
}

/// wyrand, seeded from host time: wasm32-unknown-unknown has no OS entropy,
/// and weighted picks and percentages need speed, not secrecy.
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn from_host_time(salt: u32) -> Rng {
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(Cell::new(nanos ^ (u64::from(salt) << 32) ^ 0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&self) -> u64 {
        let state = self.0.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.0.set(state);
        let product = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        (product >> 64) as u64 ^ product as u64
    }
}

/// An Envoy counter. Custom wasm metrics appear in `/stats/prometheus` under
/// their own name (Envoy strips its `wasmcustom.` namespace there). A metric
/// the host refuses is logged once and then counts nothing, rather than
/// failing requests.
#[derive(Clone, Copy, Debug)]
pub struct Counter(Option<u32>);

impl Counter {
    pub fn define(name: &str) -> Counter {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Counter(Some(id)),
            Err(status) => {
                log(LogLevel::Warn, &format!("switchyard: cannot define metric {name}: {status:?}"));
                Counter(None)
            }
        }
    }

    pub fn inc(self) {
        if let Some(id) = self.0 {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
