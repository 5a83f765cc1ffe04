//! Weighted picks, percentages and sticky hashes: exact values that must
//! be identical on wasm32 and native.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use switchyard_policy::{pick_weighted, sticky_hash, Percentage};

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn weighted_pick_maps_the_draw_onto_cumulative_weights() {
    let weights = [50, 0, 30, 20];
    let at = |fraction: f64| pick_weighted(&weights, (fraction * u64::MAX as f64) as u64);
    assert_eq!(at(0.0), 0);
    assert_eq!(at(0.49), 0);
    assert_eq!(at(0.51), 2);
    assert_eq!(at(0.79), 2);
    assert_eq!(at(0.81), 3);
    assert_eq!(pick_weighted(&weights, u64::MAX), 3);
    assert_eq!(pick_weighted(&[], 7), 0);
    assert_eq!(pick_weighted(&[0, 0], 7), 0);
    assert_eq!(pick_weighted(&[u32::MAX, u32::MAX], u64::MAX), 1);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn sticky_hash_values_are_pinned() {
    // Changing these moves every sticky client: only with a release note.
    assert_eq!(sticky_hash(b""), 0xc381_7c01_6ba4_ff30);
    assert_eq!(sticky_hash(b"jason"), 0xbb53_f136_4244_e145);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn percentages_follow_istio_per_million_truncation() {
    let p = |v: f64| match Percentage::new(v) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(p(0.0).per_million(), 0);
    assert_eq!(p(0.00005).per_million(), 0);
    assert_eq!(p(0.0001).per_million(), 1);
    assert_eq!(p(12.5).per_million(), 125_000);
    assert_eq!(p(100.0).per_million(), 1_000_000);
    assert!(!p(0.0).hit(0));
    assert!(!p(0.0).hit(u64::MAX));
    assert!(p(100.0).hit(u64::MAX));
    assert!(p(100.0).hit(0));
    assert!(p(50.0).hit(u64::MAX / 2 - 1_000_000_000_000));
    assert!(!p(50.0).hit(u64::MAX / 2 + 1_000_000_000_000));
    for bad in [-0.1, 100.01, f64::NAN, f64::INFINITY] {
        assert!(Percentage::new(bad).is_err(), "{bad}");
    }
}
