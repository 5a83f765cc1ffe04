//! The host side every Switchyard filter shares. The filters' decisions live
//! in `switchyard-policy`, which knows nothing of proxy-wasm; this crate is the
//! thin adapter between the two: every host call ([`calls`], counted in the
//! bench's counting build), reading and compiling the plugin configuration,
//! request headers for the matchers, randomness from host time, and Envoy
//! counters flushed in batches.

pub mod calls;
mod counters;
mod headers;

use std::cell::Cell;
use std::time::UNIX_EPOCH;

use proxy_wasm::types::LogLevel;
use switchyard_policy::ConfigError;

pub use calls::log;
pub use counters::{flush as flush_counters, Counter, FLUSH_PERIOD};
pub use headers::{destination_port, RequestHeaders};

/// Logs at critical level before the abort that follows any panic, so a bug
/// shows its reason in Envoy's log instead of an opaque wasm trap.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("switchyard: panic: {info}"));
    }));
}

/// Reads the plugin configuration and compiles it. On failure the reason is
/// logged (Envoy's own NACK message is generic) and `None` tells the caller
/// to return false from `on_configure`, so Envoy keeps the last good config.
pub fn load_config<T>(filter: &str, compile: impl FnOnce(&[u8]) -> Result<T, ConfigError>) -> Option<T> {
    let bytes = match calls::plugin_configuration() {
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

/// wyrand, seeded from host time: wasm32-unknown-unknown has no OS entropy,
/// and weighted picks and percentages need speed, not secrecy.
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn from_host_time(salt: u32) -> Rng {
        let nanos = calls::current_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Rng(Cell::new(nanos ^ (u64::from(salt) << 32) ^ 0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&self) -> u64 {
        let state = self.0.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.0.set(state);
        let product = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
        (product >> 64) as u64 ^ product as u64
    }
}
