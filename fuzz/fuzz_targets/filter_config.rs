//! Each filter's config decode + compile on arbitrary bytes (the four
//! single-purpose filters and the combined one): what a filter's
//! `on_configure` runs on whatever ECDS hands it.
//!
//! Beyond "never panics": the crate's own JSON reader must accept exactly
//! what serde's derived decoders accept (`from_json` vs `serde_json` then
//! `from_config`), the property the filters rely on when xds-ext validates
//! with serde before pushing. Floats are the documented exception (the
//! reader may differ from serde in the last binary place past 15
//! significant digits, docs/policy.md "Limits and errors"), so inputs whose
//! numbers go beyond that are only checked for not panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use switchyard_policy::chain::{ChainConfig, CompiledChain};
use switchyard_policy::egress::{CompiledEgress, EgressConfig};
use switchyard_policy::fault::{CompiledFault, FaultConfig};
use switchyard_policy::mirror::{CompiledMirror, MirrorConfig};
use switchyard_policy::routing::{CompiledRouting, RoutingConfig};
use switchyard_policy::ConfigError;

fuzz_target!(|data: &[u8]| {
    let exact_numbers = numbers_are_exact(data);
    agree::<RoutingConfig, _>(data, exact_numbers, CompiledRouting::from_json, CompiledRouting::from_config);
    agree::<FaultConfig, _>(data, exact_numbers, CompiledFault::from_json, CompiledFault::from_config);
    agree::<MirrorConfig, _>(data, exact_numbers, CompiledMirror::from_json, CompiledMirror::from_config);
    agree::<EgressConfig, _>(data, exact_numbers, CompiledEgress::from_json, CompiledEgress::from_config);
    // The combined filter (switchyard.wasm): the four as optional sections.
    agree::<ChainConfig, _>(data, exact_numbers, CompiledChain::from_json, CompiledChain::from_config);
});

fn agree<T: DeserializeOwned, C>(
    data: &[u8],
    exact_numbers: bool,
    from_json: fn(&[u8]) -> Result<C, ConfigError>,
    from_config: fn(&T) -> Result<C, ConfigError>,
) {
    let ours = from_json(data);
    if !exact_numbers {
        return;
    }
    let theirs = with_serde::<T>(data).map(|config| from_config(&config));
    match (&ours, theirs) {
        (Ok(_), Some(Ok(_))) | (Err(_), None | Some(Err(_))) => {}
        (Ok(_), _) => panic!("only the crate's reader accepts {:?}", String::from_utf8_lossy(data)),
        (Err(e), Some(Ok(_))) => panic!("only serde accepts {:?} (the crate says {e})", String::from_utf8_lossy(data)),
    }
}

/// What `from_json` does with serde: an object, `version` 1 checked first
/// (a wrong version is refused before unknown fields), then the typed decode.
fn with_serde<T: DeserializeOwned>(data: &[u8]) -> Option<T> {
    #[derive(serde::Deserialize)]
    struct VersionProbe {
        version: Option<serde_json::Value>,
    }
    if data.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return None;
    }
    let probe: VersionProbe = serde_json::from_slice(data).ok()?;
    match probe.version {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(1) => serde_json::from_slice(data).ok(),
        _ => None,
    }
}

/// No run of more than 15 digits and no exponent: every number in the input
/// is read exactly by both decoders.
fn numbers_are_exact(data: &[u8]) -> bool {
    let mut digits = 0;
    let mut previous = 0u8;
    for &b in data {
        if b.is_ascii_digit() {
            digits += 1;
            if digits > 15 {
                return false;
            }
        } else {
            if matches!(b, b'e' | b'E') && previous.is_ascii_digit() {
                return false;
            }
            if b != b'.' {
                digits = 0;
            }
        }
        previous = b;
    }
    true
}
