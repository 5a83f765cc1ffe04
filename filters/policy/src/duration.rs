//! Durations as written in configs: `0.5s`, `7s`, `100ms`, `1m`, `1h2m3.5s`.
//!
//! Accepts protobuf-JSON durations (`"1.5s"`, what Istio YAML carries) and Go
//! style sequences of `<decimal><unit>` with units `h`, `m`, `s`, `ms`, `us`
//! (or `µs`) and `ns`. A bare `0` is zero. Signs, spaces, empty strings,
//! missing units and values above `u64::MAX` nanoseconds are refused.

use core::time::Duration;

use crate::error::{quote, Failed, Path};

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
    let too_large = || format!("duration {} is too large", quote(text));
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total_nanos: u64 = 0;
    while pos < bytes.len() {
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_digits = &bytes[int_start..pos];
        let mut frac_digits: &[u8] = &[];
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_digits = &bytes[frac_start..pos];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_digit() && bytes[pos] != b'.' {
            pos += 1;
        }
        // The unit in nanoseconds, as `factor` * 10^`zeros`.
        let (factor, zeros): (u64, usize) = match text.get(unit_start..pos).unwrap_or("") {
            "h" => (36, 11),
            "m" => (6, 10),
            "s" => (1, 9),
            "ms" => (1, 6),
            "us" | "µs" | "μs" => (1, 3),
            "ns" => (1, 0),
            "" => return Err(format!("duration {} is missing a unit (h, m, s, ms, us, ns)", quote(text))),
            other => return Err(format!("duration {} has unknown unit {}", quote(text), quote(other))),
        };
        // value = int + 0.frac, in units; nanos = floor(value * factor * 10^zeros).
        // The first `zeros` fraction digits are whole nanoseconds/factor:
        // fold them into the integer; the rest (below one nano/factor) is
        // scaled exactly as floor(factor * rest / 10^len(rest)). All in u64:
        // no 128-bit division (about 1.5 KB of wasm).
        let frac_digits = frac_digits.get(..MAX_FRACTION_DIGITS as usize).unwrap_or(frac_digits);
        let (whole_frac, rest) = frac_digits.split_at(zeros.min(frac_digits.len()));
        let mut scaled: u64 = 0;
        for &digit in int_digits.iter().chain(whole_frac) {
            scaled =
                scaled.checked_mul(10).and_then(|v| v.checked_add(u64::from(digit - b'0'))).ok_or_else(too_large)?;
        }
        for _ in whole_frac.len()..zeros {
            scaled = scaled.checked_mul(10).ok_or_else(too_large)?;
        }
        let mut rest_value: u64 = 0;
        let mut rest_scale: u64 = 1;
        for &digit in rest {
            rest_value = rest_value * 10 + u64::from(digit - b'0');
            rest_scale *= 10;
        }
        let part = scaled
            .checked_mul(factor)
            .and_then(|v| v.checked_add(rest_value * factor / rest_scale))
            .ok_or_else(too_large)?;
        total_nanos = total_nanos.checked_add(part).ok_or_else(too_large)?;
    }
    Ok(Duration::from_nanos(total_nanos))
}

/// A duration in whole milliseconds, the unit of Envoy's
/// `x-envoy-upstream-rq-timeout-ms`-style headers. Sub-millisecond remainders
/// are truncated as Envoy does; a non-zero duration below 1 ms is refused
/// (Istio's rule), because truncating it to 0 would mean "no timeout".
pub(crate) fn millis(path: &Path, text: &str, allow_zero: bool) -> Result<u64, Failed> {
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

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The straightforward version in 128-bit arithmetic, which
    /// `parse_duration` must agree with.
    fn reference(text: &str) -> Option<u64> {
        let mut total: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int, after) = rest.split_at(int_len);
            let (frac, after) = match after.strip_prefix('.') {
                Some(f) => f.split_at(f.bytes().take_while(u8::is_ascii_digit).count()),
                None => ("", after),
            };
            let unit_len = after.bytes().take_while(|b| !b.is_ascii_digit() && *b != b'.').count();
            let (unit, after) = after.split_at(unit_len);
            let nanos: u128 = match unit {
                "h" => 3_600_000_000_000,
                "m" => 60_000_000_000,
                "s" => 1_000_000_000,
                "ms" => 1_000_000,
                "us" => 1_000,
                "ns" => 1,
                _ => return None,
            };
            if int.is_empty() && frac.is_empty() {
                return None;
            }
            let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
            let frac = frac.get(..18).unwrap_or(frac);
            let scale = 10u128.pow(frac.len() as u32);
            let frac: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
            total += int.checked_mul(nanos)? + frac * nanos / scale;
            if total > u128::from(u64::MAX) {
                return None;
            }
            rest = after;
        }
        u64::try_from(total).ok()
    }

    proptest! {
        #[test]
        fn agrees_with_128_bit_arithmetic(text in "([0-9]{0,22}(\\.[0-9]{0,22})?(h|m|s|ms|us|ns)){1,3}") {
            let got = parse_duration(&text).ok().map(|d| d.as_nanos() as u64);
            prop_assert_eq!(got, reference(&text), "{}", text);
        }
    }
}
