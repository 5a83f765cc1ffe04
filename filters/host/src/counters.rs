//! Envoy counters, added up in the module and flushed by the root
//! context's tick: a request costs no host call for its counters, where an
//! `increment_metric` per counter per request was several. Custom wasm
//! metrics appear in `/stats/prometheus` under their own name (Envoy strips
//! its `wasmcustom.` namespace there), at most [`FLUSH_PERIOD`] late.
//!
//! The registry is per VM and keyed by name, so the per-rule counters a new
//! config defines again on every push reuse their metric instead of adding
//! one each time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::types::LogLevel;

use crate::calls;

/// How late a counter may show in Envoy's stats.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(100);

#[cfg(feature = "count-host-calls")]
const HOST_CALLS_METRIC: &str = "switchyard_host_calls_total";

struct Slot {
    /// `None`: the host refused the metric; it counts nothing.
    id: Option<u32>,
    pending: u64,
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, usize>,
    slots: Vec<Slot>,
}

thread_local! {
    static REGISTRY: RefCell<Registry> = RefCell::new(Registry::default());
}

/// An Envoy counter; copying it is free, counting is a memory write.
#[derive(Clone, Copy, Debug)]
pub struct Counter(usize);

impl Counter {
    pub fn define(name: &str) -> Counter {
        REGISTRY.with(|registry| {
            let mut registry = registry.borrow_mut();
            if let Some(&index) = registry.by_name.get(name) {
                return Counter(index);
            }
            let id = match calls::define_metric(name) {
                Ok(id) => Some(id),
                Err(status) => {
                    calls::log(LogLevel::Warn, &format!("switchyard: cannot define metric {name}: {status:?}"));
                    None
                }
            };
            let index = registry.slots.len();
            registry.slots.push(Slot { id, pending: 0 });
            registry.by_name.insert(name.to_owned(), index);
            Counter(index)
        })
    }

    pub fn inc(self) {
        REGISTRY.with(|registry| {
            if let Some(slot) = registry.borrow_mut().slots.get_mut(self.0) {
                slot.pending += 1;
            }
        });
    }
}

/// Hands every counted increment to Envoy. The root contexts call it from
/// their tick; any of them flushes the whole VM's counters.
pub fn flush() {
    #[cfg(feature = "count-host-calls")]
    let host_calls = Counter::define(HOST_CALLS_METRIC);
    REGISTRY.with(|registry| {
        let mut registry = registry.borrow_mut();
        #[cfg(feature = "count-host-calls")]
        if let Some(slot) = registry.slots.get_mut(host_calls.0) {
            slot.pending += calls::take_count();
        }
        for slot in &mut registry.slots {
            if slot.pending > 0 {
                if let Some(id) = slot.id {
                    calls::increment_metric(id, slot.pending);
                }
                slot.pending = 0;
            }
        }
    });
    // The flush's own calls are not the requests' cost.
    let _ = calls::take_count();
}
