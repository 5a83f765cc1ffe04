//! Property tests: fair weighted picks, stable sticky hashes, and config
//! decoding that never panics whatever the bytes (config-shaped JSON is
//! generated next to the decoder, in src/json.rs). Native only (proptest).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use proptest::prelude::*;
use switchyard_policy::egress::CompiledEgress;
use switchyard_policy::fault::CompiledFault;
use switchyard_policy::mirror::CompiledMirror;
use switchyard_policy::routing::CompiledRouting;
use switchyard_policy::{mix64, parse_duration, pick_weighted, sticky_hash, Percentage, Request, StaticHeaders};

const DRAWS: u64 = 100_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn weighted_pick_matches_the_weights(weights in prop::collection::vec(0u32..100, 1..6), seed in any::<u64>()) {
        prop_assume!(weights.iter().any(|&w| w > 0));
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut counts = vec![0u64; weights.len()];
        let mut state = seed;
        for _ in 0..DRAWS {
            state = mix64(state);
            counts[pick_weighted(&weights, state)] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let p = w as f64 / total as f64;
            let expected = p * DRAWS as f64;
            // Five standard deviations, plus one for rounding.
            let tolerance = 5.0 * (DRAWS as f64 * p * (1.0 - p)).sqrt() + 1.0;
            prop_assert!((counts[i] as f64 - expected).abs() <= tolerance,
                "weight {} of {:?}: {} draws, expected {:.0} ± {:.0}", w, weights, counts[i], expected, tolerance);
            if w == 0 {
                prop_assert_eq!(counts[i], 0);
            }
        }
    }

    #[test]
    fn percentage_hits_its_share(value in 0.0f64..=100.0, seed in any::<u64>()) {
        let percentage = Percentage::new(value).map_err(TestCaseError::fail)?;
        let mut state = seed;
        let mut hits = 0u64;
        for _ in 0..DRAWS {
            state = mix64(state);
            hits += u64::from(percentage.hit(state));
        }
        let p = f64::from(percentage.per_million()) / 1e6;
        let tolerance = 5.0 * (DRAWS as f64 * p * (1.0 - p)).sqrt() + 1.0;
        prop_assert!((hits as f64 - p * DRAWS as f64).abs() <= tolerance);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sticky_hash_is_a_pure_function(key in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(sticky_hash(&key), sticky_hash(&key.clone()));
    }

    #[test]
    fn from_json_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = CompiledRouting::from_json(&bytes);
        let _ = CompiledFault::from_json(&bytes);
        let _ = CompiledMirror::from_json(&bytes);
        let _ = CompiledEgress::from_json(&bytes);
    }

    #[test]
    fn parse_duration_never_panics(text in "[0-9.hmsuµn -]{0,24}") {
        let _ = parse_duration(&text);
    }

    #[test]
    fn decide_never_panics_on_any_request(
        authority in "[a-zA-Z0-9.:\\[\\]-]{0,30}",
        path in "[/a-zA-Z0-9?&=%#+.]{0,40}",
        user in "\\PC{0,12}",
        random in any::<u64>(),
    ) {
        let config = rich_routing();
        let source = StaticHeaders::new([(":authority", authority.clone()), (":path", path), ("end-user", user),
            ("cookie", "session=abc".to_string())]);
        let _ = config.decide(&mut Request::new(&source), random);
        let egress = CompiledEgress::from_json(br#"{"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY",
            "hosts": [{"host": "*.example.com", "ports": [443]}, {"host": "::1"}]}"#).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = egress.decide_authority(&authority);
        let _ = egress.decide_sni(Some(&authority), None);
    }
}

fn rich_routing() -> CompiledRouting {
    let json = r#"{"version": 1, "virtual_hosts": [{"name": "v", "domains": ["*", "*.a.com", "b.*", "c.com:80"], "routes": [
      {"name": "q", "match": [{"query_params": {"x": {"regex": "[0-9]+"}}, "uri": {"prefix": "/Q", "exact": null}, "ignore_uri_case": true}],
       "route": [{"destination": {"host": "a", "port": 1}}], "rewrite": {"uri": "/"}},
      {"name": "u", "match": [{"without_headers": {"end-user": {"regex": "j.*"}}, "uri": {"regex": "/[a-z]+"}}],
       "route": [{"destination": {"host": "a", "port": 1}, "weight": 0}, {"destination": {"host": "b", "port": 1}, "weight": 100}],
       "sticky": {"cookie": "session"}},
      {"name": "r", "redirect": {"uri": "/x"}}]}]}"#;
    match CompiledRouting::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}
