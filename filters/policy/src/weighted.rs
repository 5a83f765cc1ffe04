//! Random draws: weighted picks, percentages and sticky hashing.
//!
//! The filters pass one uniformly random `u64` per request (from the host or
//! a PRNG seeded there); nothing here draws randomness itself, so the crate
//! needs no `getrandom` on wasm32 and every decision is reproducible in tests.

/// Picks an index with probability `weights[i] / sum(weights)`.
///
/// `random` is mapped onto `0..total` with a widening multiply
/// (`(random * total) >> 64`) rather than `random % total`: each bucket then
/// receives either ⌊2⁶⁴/total⌋ or ⌈2⁶⁴/total⌉ of the 2⁶⁴ inputs, so the
/// relative bias of any outcome is below `total / 2⁶⁴` (about 5·10⁻¹⁸ for
/// weights summing to 100, far below anything measurable).
/// Zero weights are never picked. An empty slice or all-zero weights return 0
/// (config validation never produces either).
pub fn pick_weighted(weights: &[u32], random: u64) -> usize {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return 0;
    }
    let mut point = ((u128::from(random) * u128::from(total)) >> 64) as u64;
    for (index, &weight) in weights.iter().enumerate() {
        let weight = u64::from(weight);
        if point < weight {
            return index;
        }
        point -= weight;
    }
    // Unreachable: point < total. Fall back to the last non-zero weight.
    weights.iter().rposition(|&w| w > 0).unwrap_or(0)
}

/// A stable 64-bit hash for sticky routing: FNV-1a 64 over the bytes, then
/// the splitmix64 finalizer. FNV alone leaves the high bits (which
/// `pick_weighted` uses) poorly mixed for short keys; the finalizer spreads
/// every input bit over all output bits. Pure integer arithmetic: the same
/// value on wasm32 and native, across releases.
pub fn sticky_hash(key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    mix64(hash)
}

/// splitmix64's output function: a bijection with full avalanche. Used to
/// derive further independent-looking draws from the one random value a
/// request gets (abort after delay, one draw per mirror).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A percentage compiled the way Istio hands it to Envoy: `value * 10000`
/// truncated to parts per million (`FractionalPercent{denominator: MILLION}`),
/// so 0.00005 % rounds down to 0 exactly as in Istio. 0 never hits, 100
/// always hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentage {
    per_million: u32,
}

impl Percentage {
    pub const MILLION: u32 = 1_000_000;

    /// `value` must be finite and within 0..=100.
    pub fn new(value: f64) -> Result<Self, String> {
        if !value.is_finite() || !(0.0..=100.0).contains(&value) {
            return Err(format!("percentage {} is not within 0..=100", decimal(value)));
        }
        // `as` saturates and value*10000 <= 1e6 anyway.
        Ok(Percentage { per_million: (value * 10_000.0) as u32 })
    }

    pub fn per_million(&self) -> u32 {
        self.per_million
    }

    /// Whether a request with this random draw is selected. Uses the same
    /// widening multiply as `pick_weighted`, so the share is exact to within
    /// 10⁶/2⁶⁴.
    pub fn hit(&self, random: u64) -> bool {
        let bucket = (u128::from(random) * u128::from(Self::MILLION)) >> 64;
        bucket < u128::from(self.per_million)
    }
}

/// `value` for a message, without core's float formatting (about 11 KB of
/// every module that formats an `f64`): up to nine decimals, trailing zeros
/// dropped (`101`, `-0.5`, `0.123456789`); beyond 10^15 in `1.5e300` form.
pub(crate) fn decimal(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    let mut out = String::new();
    if value < 0.0 {
        out.push('-');
    }
    let mut magnitude = value.abs();
    if magnitude.is_infinite() {
        out.push_str("inf");
        return out;
    }
    let mut exponent = 0;
    while magnitude >= 1e15 {
        magnitude /= 10.0;
        exponent += 1;
    }
    let scaled = (magnitude * 1e9 + 0.5) as u64;
    out.push_str(&(scaled / 1_000_000_000).to_string());
    let fraction = scaled % 1_000_000_000;
    if fraction != 0 {
        let digits = format!("{:09}", fraction);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    if exponent != 0 {
        out.push('e');
        out.push_str(&exponent.to_string());
    }
    out
}
