//! Durations as written in configs: `0.5s`, `7s`, `100ms`, `1m`, `1h2m3.5s`.
//!
//! Accepts protobuf-JSON durations (`"1.5s"`, what Istio YAML carries) and Go
//! style sequences of `<decimal><unit>` with units `h`, `m`, `s`, `ms`, `us`
//! (or `µs`) and `ns`. A bare `0` is zero. Signs, spaces, empty strings,
//! missing units and values above `u64::MAX` nanoseconds are refused.

use core::time::Duration;

use crate::error::{quote, Path};

/// Fraction digits beyond this are ignored: 18 digits already resolve a
/// nanosecond of an hour, and the bound keeps the arithmetic in `u128`.
const MAX_FRACTION_DIGITS: u32 = 18;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {}", quote(text));
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_nanos: u128 = 0;
    while pos < bytes.len() {
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &text[int_start..pos];
        let mut frac_digits = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &text[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() && bytes[pos] != b'.' {
            pos += 1;
        }
        let unit_nanos: u128 = match &text[unit_start..pos] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            "" => return Err(format!("duration {} is missing a unit (h, m, s, ms, us, ns)", quote(text))),
            other => return Err(format!("duration {} has unknown unit {}", quote(text), quote(other))),
        };
        let too_large = || format!("duration {} is too large", quote(text));
        let mut int_value: u128 = 0;
        for digit in int_digits.bytes() {
            int_value = int_value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit - b'0')))
                .filter(|&v| v <= u128::from(u64::MAX))
                .ok_or_else(too_large)?;
        }
        let mut frac_value: u128 = 0;
        let mut scale: u128 = 1;
        for digit in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
            frac_value = frac_value * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        let part = int_value
            .checked_mul(unit_nanos)
            .and_then(|v| v.checked_add(frac_value * unit_nanos / scale))
            .ok_or_else(too_large)?;
        total_nanos = total_nanos.checked_add(part).ok_or_else(too_large)?;
        if total_nanos > u128::from(u64::MAX) {
            return Err(too_large());
        }
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| invalid())?;
    Ok(Duration::from_nanos(nanos))
}

/// A duration in whole milliseconds, the unit of Envoy's
/// `x-envoy-upstream-rq-timeout-ms`-style headers. Sub-millisecond remainders
/// are truncated as Envoy does; a non-zero duration below 1 ms is refused
/// (Istio's rule), because truncating it to 0 would mean "no timeout".
pub(crate) fn millis(path: &Path, text: &str, allow_zero: bool) -> Result<u64, crate::ConfigError> {
    let duration = parse_duration(text).map_err(|e| path.error(e))?;
    if duration.is_zero() {
        if allow_zero {
            return Ok(0);
        }
        return Err(path.error(format!("duration {} must be at least 1ms", quote(text))));
    }
    if duration < Duration::from_millis(1) {
        return Err(path.error(format!("duration {} must be at least 1ms", quote(text))));
    }
    u64::try_from(duration.as_millis()).map_err(|_| path.error(format!("duration {} is too large", quote(text))))
}
