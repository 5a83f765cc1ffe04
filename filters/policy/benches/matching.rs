//! Cost of `CompiledRouting::decide` as rules grow: exact-header rules (the
//! indexed shape) and regex rules (checked in order). The request matches
//! the last rule, the worst case for first-match-wins.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // benches fail by panicking

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_policy::routing::{CompiledRouting, RoutingDecision};
use switchyard_policy::{Request, StaticHeaders};

fn config(rules: usize, matcher: impl Fn(usize) -> String) -> CompiledRouting {
    let routes: Vec<String> = (0..rules)
        .map(|i| {
            format!(
                r#"{{"name": "r{i}", "match": [{}], "route": [{{"destination": {{"host": "reviews", "subset": "v{i}", "port": 9080}}}}]}}"#,
                matcher(i)
            )
        })
        .collect();
    let json = format!(
        r#"{{"version": 1, "virtual_hosts": [{{"name": "reviews", "domains": ["reviews", "reviews:9080"], "routes": [{}]}}]}}"#,
        routes.join(",")
    );
    CompiledRouting::from_json(json.as_bytes()).unwrap()
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing_decide");
    for rules in [1usize, 10, 100, 1000] {
        let exact = config(rules, |i| format!(r#"{{"headers": {{"end-user": {{"exact": "user{i}"}}}}}}"#));
        let regex = config(rules, |i| format!(r#"{{"headers": {{"end-user": {{"regex": "user{i}-[a-z]+"}}}}}}"#));
        let last = rules - 1;
        let exact_req =
            StaticHeaders::new([(":authority", "reviews:9080".to_string()), ("end-user", format!("user{last}"))]);
        let regex_req =
            StaticHeaders::new([(":authority", "reviews:9080".to_string()), ("end-user", format!("user{last}-abc"))]);
        for (name, compiled, source) in [("exact_header", &exact, &exact_req), ("regex_header", &regex, &regex_req)] {
            group.bench_with_input(BenchmarkId::new(name, rules), &rules, |b, _| {
                b.iter(|| {
                    let mut req = Request::new(black_box(source));
                    match compiled.decide(&mut req, black_box(42)) {
                        RoutingDecision::Route(route) => black_box(route.cluster.len()),
                        other => panic!("{other:?}"),
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_decide);
criterion_main!(benches);
