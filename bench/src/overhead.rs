//! Issue 15's view of a run: what the V8 floor costs above plain Envoy and
//! each module above its floor, the combined module against the chain of
//! four, host calls and instructions per request, the fault delay's error
//! inside Envoy, memory with 2 workers and over config pushes, and the
//! issue's targets with a verdict (and, where the floor puts a target out of
//! reach under V8, the target it can reach).

use std::fmt::Write as _;

use crate::report::{find, per_rep, verdict, ArmSummary, Comparison, Target};
use crate::stats::Spread;
use crate::RunData;

/// `(arm, its native counterpart, its floor)`: a single module's floor is one
/// no-op module, the four-module chain's is four (each its own VM, as the
/// chain's are), the combined module's is one.
pub const FLOOR_ROWS: [(&str, &str, &str); 8] = [
    ("switchyard-routing", "native-routing", "floor"),
    ("switchyard-combined-routing", "native-routing", "floor"),
    ("switchyard-fault", "native-fault", "floor"),
    ("switchyard-mirror", "native-mirror", "floor"),
    ("switchyard-egress", "native-egress", "floor"),
    ("switchyard-chain", "native-chain", "floor-4"),
    ("switchyard-combined-x4", "native-chain", "floor-4"),
    ("switchyard-combined", "native-chain", "floor"),
];

/// `(a, b, what a / b shows)`: one VM and one context against four.
const VM_PAIRS: [(&str, &str, &str); 5] = [
    ("switchyard-combined", "switchyard-chain", "the combined module (one VM, one context per request) / the chain of four modules (four VMs, four contexts)"),
    ("switchyard-combined-x4", "switchyard-chain", "the combined module loaded as four filters sharing one VM (four contexts) / the chain of four modules (four VMs)"),
    ("switchyard-combined", "switchyard-combined-x4", "one context per request / four contexts in the same VM"),
    ("switchyard-combined-routing", "switchyard-routing", "the combined module with only `routing` / routing.wasm"),
    ("floor-4", "floor", "four no-op modules / one"),
];

/// Pairs [`crate::report::comparisons`] adds for this view (where both arms ran).
pub fn pairs() -> Vec<(String, String)> {
    let mut out = vec![("floor".to_string(), "plain".to_string()), ("floor-4".into(), "plain".into())];
    for (arm, native, floor) in FLOOR_ROWS {
        for b in [native, floor, "plain"] {
            out.push((arm.into(), b.into()));
        }
        out.push((floor.into(), native.into()));
    }
    out.extend(VM_PAIRS.iter().map(|(a, b, _)| (a.to_string(), b.to_string())));
    out.push(("switchyard-combined-delay".into(), "native-delay".into()));
    out
}

fn main_series(data: &RunData) -> String {
    format!("{:.0}rps", data.meta.rate)
}

fn added(cs: &[Comparison], series: &str, a: &str, b: &str) -> Spread {
    find(cs, series, a, b).map(|c| c.cpu_added_us).unwrap_or(Spread::NONE)
}

fn ratio(cs: &[Comparison], series: &str, a: &str, b: &str) -> Spread {
    find(cs, series, a, b).map(|c| c.cpu_ratio).unwrap_or(Spread::NONE)
}

fn cpu(sums: &[ArmSummary], series: &str, arm: &str) -> Spread {
    sums.iter().find(|s| s.series == series && s.arm == arm).map(|s| s.cpu_us_per_req).unwrap_or(Spread::NONE)
}

fn rss(data: &RunData, arm: &str) -> Option<f64> {
    data.rss.iter().find(|r| r.arm == arm).map(|r| r.rss_mib)
}

const MIB_TO_MB: f64 = 1.048_576;

/// A CPU ratio target, with what the floor leaves of it.
#[allow(clippy::too_many_arguments)]
fn cpu_target(
    cs: &[Comparison],
    sums: &[ArmSummary],
    series: &str,
    scenario: &str,
    target: &str,
    (sw, native, floor): (&str, &str, &str),
    limit: f64,
) -> Target {
    let floor_ratio = ratio(cs, series, floor, native);
    let native_us = cpu(sums, series, native);
    let mut note = String::new();
    if floor_ratio.is_some() && native_us.is_some() {
        let budget = (limit - 1.0) * native_us.median;
        let above = added(cs, series, sw, floor);
        if floor_ratio.median > limit {
            note = format!(
                "**out of reach under V8**: the no-op floor (`{floor}`) alone is {} native; proposed instead: the \
                 module ≤ {budget:.0} µs/req above the floor (the same {:.0} % of native's {:.0} µs/req), measured {} \
                 µs/req",
                floor_ratio.fmt(2, "×"),
                (limit - 1.0) * 100.0,
                native_us.median,
                above.fmt(1, "")
            );
        } else {
            note = format!(
                "floor (`{floor}`) {} native: {:.0} µs/req left for the module's own work; it takes {} µs/req",
                floor_ratio.fmt(2, "×"),
                limit * native_us.median - (floor_ratio.median * native_us.median),
                above.fmt(1, "")
            );
        }
    }
    let mut t = verdict(scenario, target, ratio(cs, series, sw, native), limit, 2, "×", &note);
    t.arms = Some((sw.into(), native.into()));
    t
}

fn not_built(scenario: &str, target: &str, limit: f64) -> Target {
    verdict(scenario, target, Spread::NONE, limit, 0, "", "`switchyard.wasm` not built in this run")
}

/// Issue 15's targets.
pub fn targets(data: &RunData, sums: &[ArmSummary], cs: &[Comparison]) -> Vec<Target> {
    let main = main_series(data);
    let ran = |arm: &str| data.series.iter().any(|s| s.arms.iter().any(|a| a == arm));
    let combined = ran("switchyard-combined");
    let mut t = Vec::new();
    for series in [main.as_str(), "knee"] {
        if !data.series.iter().any(|s| s.name == series) {
            continue;
        }
        let at = if series == "knee" { "at the knee".to_string() } else { format!("at {series}") };
        let scenario = format!("combined chain vs native chain, {at}");
        if combined {
            t.push(cpu_target(
                cs,
                sums,
                series,
                &scenario,
                "CPU/request ≤ 1.30×",
                ("switchyard-combined", "native-chain", "floor"),
                1.30,
            ));
        } else {
            t.push(not_built(&scenario, "CPU/request ≤ 1.30×", 1.30));
        }
    }
    for (scenario, arms, limit) in [
        ("routing vs native route match", ("switchyard-routing", "native-routing", "floor"), 1.15),
        (
            "combined, routing only, vs native route match",
            ("switchyard-combined-routing", "native-routing", "floor"),
            1.15,
        ),
        ("fault (none applied) vs native fault filter", ("switchyard-fault", "native-fault", "floor"), 1.10),
        ("mirror vs native mirror", ("switchyard-mirror", "native-mirror", "floor"), 1.15),
        ("egress vs native RBAC", ("switchyard-egress", "native-egress", "floor"), 1.10),
    ] {
        let target = format!("CPU/request ≤ {limit:.2}×");
        if arms.0.contains("combined") && !combined {
            t.push(not_built(scenario, &target, limit));
        } else {
            t.push(cpu_target(cs, sums, &main, scenario, &target, arms, limit));
        }
    }
    for sw in ["switchyard-routing", "switchyard-combined-routing"] {
        if sw.contains("combined") && !combined {
            continue;
        }
        let what = if sw.contains("combined") { "combined, routing only" } else { "routing" };
        t.push(verdict(
            &format!("{what} above the no-op floor"),
            "≤ 10 µs/request",
            added(cs, &main, sw, "floor"),
            10.0,
            1,
            " µs",
            "CPU/request, module − floor, paired per repetition",
        ));
    }
    // Fault delay: against the native filter beside it, at the client and inside Envoy.
    let client = find(cs, "delay", "switchyard-delay", "native-delay").map(|c| c.p99_added_us);
    let client = client.map(|s| Spread { median: s.median / 1000.0, min: s.min / 1000.0, max: s.max / 1000.0, n: s.n });
    let scenario = format!("fault delay, {} ms × {} in flight", data.meta.delay_ms, data.meta.delay_concurrency);
    t.push(verdict(
        &format!("{scenario}, at the client"),
        "p99 error ≤ native's + 2 ms",
        client.unwrap_or(Spread::NONE),
        2.0,
        2,
        " ms",
        "switchyard − native p99 latency, paired per repetition",
    ));
    t.push(verdict(
        &format!("{scenario}, inside Envoy"),
        "p99 error ≤ native's + 2 ms",
        envoy_delay_diff(data, "switchyard-delay", "native-delay", "p99"),
        2.0,
        2,
        " ms",
        "access log: (request duration − upstream time) − delay, switchyard − native p99, paired per repetition",
    ));
    // Memory.
    let mem_target = "≤ 25 MB";
    match (rss(data, "switchyard-combined-2w"), rss(data, "plain-2w")) {
        (Some(c), Some(p)) => {
            let mb = (c - p) * MIB_TO_MB;
            let s = Spread { median: mb, min: mb, max: mb, n: 1 };
            let mut v = verdict("Envoy RSS added by the combined module, 2 workers", mem_target, s, 25.0, 1, " MB", "");
            let chain = rss(data, "switchyard-chain-2w").map(|x| (x - p) * MIB_TO_MB);
            let floor = rss(data, "floor-2w").map(|x| (x - p) * MIB_TO_MB);
            v.note = format!(
                "VmRSS after a short load, vs plain Envoy with 2 workers; the chain of four modules adds {}, the no-op \
                 floor {}",
                chain.map(|x| format!("{x:.1} MB")).unwrap_or_else(|| "n/a".into()),
                floor.map(|x| format!("{x:.1} MB")).unwrap_or_else(|| "n/a".into())
            );
            t.push(v);
        }
        _ => t.push(not_built("Envoy RSS added by the combined module, 2 workers", mem_target, 25.0)),
    }
    let pushes = data.pushes.iter().find(|p| p.arm == "push-switchyard-combined");
    let scenario =
        format!("RSS growth over {} config pushes, combined module", pushes.map(|p| p.pushes).unwrap_or(100));
    match pushes {
        Some(p) => {
            let mb = p.growth_mib() * MIB_TO_MB;
            let s = Spread { median: mb, min: mb, max: mb, n: 1 };
            let routing = data.pushes.iter().find(|p| p.arm == "push-switchyard-routing");
            let note = format!(
                "{} workers, ECDS from a watched file; routing.wasm alone: {}",
                p.workers,
                routing.map(|r| format!("{:+.1} MB", r.growth_mib() * MIB_TO_MB)).unwrap_or_else(|| "n/a".into())
            );
            t.push(verdict(&scenario, "≤ 5 MB", s, 5.0, 1, " MB", &note));
        }
        None => t.push(not_built(&scenario, "≤ 5 MB", 5.0)),
    }
    match data.wasm_bytes.iter().find(|(m, _)| m == crate::arms::COMBINED) {
        Some((_, bytes)) => {
            let kb = *bytes as f64 / 1000.0;
            let mut v = verdict(
                "switchyard.wasm size",
                "≤ 350 KB",
                Spread { median: kb, min: kb, max: kb, n: 1 },
                350.0,
                1,
                " KB",
                "",
            );
            v.measured = format!("{kb:.1} KB ({bytes} bytes)");
            t.push(v);
        }
        None => t.push(not_built("switchyard.wasm size", "≤ 350 KB", 350.0)),
    }
    t
}

/// Per repetition, the in-Envoy delay error at `key` of `a` − `b`, in ms.
fn envoy_delay_diff(data: &RunData, a: &str, b: &str, key: &str) -> Spread {
    let get = |arm: &str| {
        per_rep(data, "delay", arm, |w| {
            w.envoy_delay.as_ref().and_then(|d| d.error_us.get(key)).copied().unwrap_or(f64::NAN) / 1000.0
        })
    };
    Spread::paired(&get(a), &get(b), |x, y| x - y)
}

fn envoy_delay_of(data: &RunData, arm: &str, key: &str, pre: bool) -> Spread {
    Spread::of(&per_rep(data, "delay", arm, |w| {
        let d = w.envoy_delay.as_ref();
        let m = d.map(|d| if pre { &d.pre_upstream_error_us } else { &d.error_us });
        m.and_then(|m| m.get(key)).copied().unwrap_or(f64::NAN) / 1000.0
    }))
}

pub fn markdown(data: &RunData, sums: &[ArmSummary], cs: &[Comparison]) -> String {
    let mut o = String::new();
    let main = main_series(data);
    let ran = |arm: &str| data.series.iter().any(|s| s.name == main && s.arms.iter().any(|a| a == arm));
    if ran("floor") {
        let _ = writeln!(o, "## The V8 floor and the combined module ({main})\n");
        let _ = writeln!(
            o,
            "`floor` is a no-op proxy-wasm module (every hook returns Continue; built by the harness, {}): what any \
             module costs before it does anything — loading a V8 VM, creating a context per request, entering V8 \
             for each hook. `floor-4` is four of them, each its own VM, the floor of the chain of four modules. \
             \"Over its floor\" is a module's own cost: its code and its host calls. The combined module \
             (`switchyard.wasm`) runs the chain in one VM and one context per request; `switchyard-combined-x4` is \
             the same module loaded as four filters sharing that VM (four contexts per request). Differences and \
             ratios are paired per repetition.\n",
            data.floor_bytes.map(|b| format!("{b} bytes")).unwrap_or_else(|| "size unknown".into())
        );
        let _ = writeln!(
            o,
            "| arm | CPU µs/req | over plain µs/req | over its floor µs/req | / native | / its floor |\n|---|---|---|---|---|---|"
        );
        for floor in ["floor", "floor-4"] {
            if ran(floor) {
                let _ = writeln!(
                    o,
                    "| {floor} | {} | {} | – | – | – |",
                    cpu(sums, &main, floor).fmt(1, ""),
                    added(cs, &main, floor, "plain").fmt(1, "")
                );
            }
        }
        for (arm, native, floor) in FLOOR_ROWS {
            if !ran(arm) {
                continue;
            }
            let _ = writeln!(
                o,
                "| {arm} | {} | {} | {} (`{floor}`) | {} (`{native}`) | {} |",
                cpu(sums, &main, arm).fmt(1, ""),
                added(cs, &main, arm, "plain").fmt(1, ""),
                added(cs, &main, arm, floor).fmt(1, ""),
                ratio(cs, &main, arm, native).fmt(2, "×"),
                ratio(cs, &main, arm, floor).fmt(2, "×")
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "- The floor against Envoy's native filters: {}.",
            FLOOR_ROWS
                .iter()
                .filter(|(_, n, f)| *f == "floor" && ran(n))
                .map(|(_, n, _)| *n)
                .fold(Vec::<&str>::new(), |mut v, n| {
                    if !v.contains(&n) {
                        v.push(n);
                    }
                    v
                })
                .iter()
                .map(|n| format!("{} `{n}`", ratio(cs, &main, "floor", n).fmt(2, "×")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (a, b, what) in VM_PAIRS {
            if ran(a) && ran(b) {
                let _ = writeln!(
                    o,
                    "- {what}: CPU/request {} ({} µs/req).",
                    ratio(cs, &main, a, b).fmt(2, "×"),
                    added(cs, &main, a, b).fmt(1, "")
                );
            }
        }
        let _ = writeln!(o);
    }

    if !data.host_calls.is_empty() {
        let _ = writeln!(o, "## Host calls per request\n");
        let _ = writeln!(
            o,
            "The counting builds (`switchyard-host` with `count-host-calls`, built by the harness into \
             `target/bench-modules/counting/`) count every host call the filter code makes and add them to the \
             counter `{}`, flushed from the root context's tick. Each arm ran in its own Envoy: sequential requests \
             on one connection after a warm-up; per request = the counter's growth / Envoy's completed requests \
             (`http.bench.downstream_rq_completed`). A count is exact, not a sample. `floor` makes none.\n",
            crate::hostcalls::METRIC
        );
        let _ = writeln!(
            o,
            "| arm | host calls / request | requests | counted calls | idle calls/s |\n|---|---|---|---|---|"
        );
        for h in &data.host_calls {
            let _ = writeln!(
                o,
                "| {} | {:.1} | {} | {} | {:.1} |",
                h.arm, h.per_request, h.requests, h.calls, h.idle_calls_per_s
            );
        }
        let _ = writeln!(o);
    }

    if !data.instructions.is_empty() {
        let _ = writeln!(o, "## Instructions per request (callgrind)\n");
        let n = data.instructions.first().map(|c| c.requests).unwrap_or(0);
        let _ = writeln!(
            o,
            "`valgrind --tool=callgrind --smc-check=all-non-file` on each arm's Envoy (`--concurrency 1`, its stats \
             flush at 290 s), instrumentation switched on after start-up and an uninstrumented warm-up; then, with \
             `callgrind_control -d` between them, an idle 2 s window and windows of {n}, {n} and {} sequential \
             requests on one keep-alive connection. Per request = (the {} window − a {n} window − the idle rate × \
             the extra time) / {n}, every thread of the process counted, start-up and each window's fixed cost \
             cancelled. Instructions are a count, not a time: they do not move with the machine's load, but they \
             weigh a cache miss and an add alike.\n",
            2 * n,
            2 * n
        );
        let get = |arm: &str| data.instructions.iter().find(|c| c.arm == arm).map(|c| c.per_request);
        let plain = get("plain");
        let _ = writeln!(
            o,
            "| arm | instructions / request | over plain | over its floor | × plain | × native | two windows apart |\n|---|---|---|---|---|---|---|"
        );
        for c in &data.instructions {
            let row = FLOOR_ROWS.iter().find(|(a, _, _)| *a == c.arm);
            let over_floor = row
                .and_then(|(_, _, f)| {
                    get(f).map(|f| format!("{:+.0} (`{}`)", c.per_request - f, row.map(|r| r.2).unwrap_or("")))
                })
                .unwrap_or_else(|| "–".into());
            let native = row
                .and_then(|(_, n, _)| get(n).map(|x| format!("{:.2}×", c.per_request / x)))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                o,
                "| {} | {:.0} | {} | {over_floor} | {} | {native} | {:.2} % |",
                c.arm,
                c.per_request,
                plain.map(|p| format!("{:+.0}", c.per_request - p)).unwrap_or_else(|| "–".into()),
                plain.map(|p| format!("{:.2}×", c.per_request / p)).unwrap_or_else(|| "–".into()),
                c.repeat_pct()
            );
        }
        let worst = data.instructions.iter().max_by(|a, b| a.repeat_pct().total_cmp(&b.repeat_pct()));
        if let Some(w) = worst {
            let _ = writeln!(
                o,
                "\nRepeatability: the two {n}-request windows give per-request counts at most {:.2} % apart (`{}`: \
                 {:.0} and {:.0}); `idle` Envoy work ran at {:.0}–{:.0} instructions/s.\n",
                w.repeat_pct(),
                w.arm,
                w.per_request_first,
                w.per_request_second,
                data.instructions.iter().map(|c| c.idle_per_s).fold(f64::INFINITY, f64::min),
                data.instructions.iter().map(|c| c.idle_per_s).fold(0.0, f64::max)
            );
        }
    }

    let delay_arms: Vec<&String> = data
        .series
        .iter()
        .filter(|s| s.name == "delay")
        .flat_map(|s| &s.arms)
        .filter(|a| data.windows.iter().any(|w| &w.arm == *a && w.envoy_delay.is_some()))
        .collect();
    if !delay_arms.is_empty() {
        let _ = writeln!(o, "## Fault delay inside Envoy\n");
        let _ = writeln!(
            o,
            "From each delay arm's access log, per request answered 200: error = (downstream request start → last \
             byte sent downstream) − (upstream request start → end of the upstream response) − {} ms, in µs \
             (`%COMMON_DURATION(…:us)%`); \"before upstream\" = downstream start → upstream request start − the \
             delay. Without the client's and the kernel's share of the latency, this is the module's (or the native \
             filter's) own error.\n",
            data.meta.delay_ms
        );
        let _ = writeln!(
            o,
            "| arm | error p50 ms | error p99 ms | error p99.9 ms | max ms | before upstream p99 ms | requests logged |\n|---|---|---|---|---|---|---|"
        );
        for arm in &delay_arms {
            let entries: u64 = data
                .windows
                .iter()
                .filter(|w| w.series == "delay" && &&w.arm == arm)
                .filter_map(|w| w.envoy_delay.as_ref().map(|d| d.entries))
                .sum();
            let _ = writeln!(
                o,
                "| {arm} | {} | {} | {} | {} | {} | {entries} |",
                envoy_delay_of(data, arm, "p50", false).fmt(2, ""),
                envoy_delay_of(data, arm, "p99", false).fmt(2, ""),
                envoy_delay_of(data, arm, "p99.9", false).fmt(2, ""),
                envoy_delay_of(data, arm, "max", false).fmt(2, ""),
                envoy_delay_of(data, arm, "p99", true).fmt(2, "")
            );
        }
        for arm in ["switchyard-delay", "switchyard-combined-delay"] {
            if delay_arms.iter().any(|a| *a == arm) {
                let _ = writeln!(
                    o,
                    "\n- `{arm}` − `native-delay`, p99 error inside Envoy: {}; at the client: {}.",
                    envoy_delay_diff(data, arm, "native-delay", "p99").fmt(2, " ms"),
                    find(cs, "delay", arm, "native-delay")
                        .map(|c| Spread {
                            median: c.p99_added_us.median / 1000.0,
                            min: c.p99_added_us.min / 1000.0,
                            max: c.p99_added_us.max / 1000.0,
                            n: c.p99_added_us.n
                        })
                        .unwrap_or(Spread::NONE)
                        .fmt(2, " ms")
                );
            }
        }
        let _ = writeln!(o);
    }

    let two: Vec<_> = data.rss.iter().filter(|r| r.arm.ends_with("-2w")).collect();
    if !two.is_empty() || !data.pushes.is_empty() {
        let _ = writeln!(o, "## Memory with 2 workers and over config pushes\n");
    }
    if !two.is_empty() {
        let plain = rss(data, "plain-2w");
        let _ = writeln!(
            o,
            "Envoy with `--concurrency 2` (each worker has its own copy of every VM), VmRSS after a short load.\n"
        );
        let _ = writeln!(o, "| Envoy, 2 workers | RSS MiB | peak MiB | vs plain-2w |\n|---|---|---|---|");
        for r in &two {
            let vs = plain.map(|p| format!("{:+.1} MiB ({:+.1} MB)", r.rss_mib - p, (r.rss_mib - p) * MIB_TO_MB));
            let _ = writeln!(o, "| {} | {:.1} | {:.1} | {} |", r.arm, r.rss_mib, r.hwm_mib, vs.unwrap_or_default());
        }
        let _ = writeln!(o);
    }
    if !data.pushes.is_empty() {
        let _ = writeln!(
            o,
            "Config pushes: the filter's config over ECDS from a watched file (`path_config_source`), replaced \
             atomically {} times, each applied (`config_reload`) before the next, {} requests on a new connection \
             after each. The routing split is `1 + n % 99` / the rest on push n, so every push is a configuration Envoy has not seen before.\n",
            data.pushes.first().map(|p| p.pushes).unwrap_or(0),
            20
        );
        let _ = writeln!(
            o,
            "| Envoy | workers | pushes | RSS before → after MiB | growth | peak MiB | V8 VMs created / active | seconds |\n|---|---|---|---|---|---|---|---|"
        );
        for p in &data.pushes {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.1} → {:.1} | {:+.1} MiB ({:+.1} MB) | {:.1} | {} / {} | {:.1} |",
                p.arm,
                p.workers,
                p.pushes,
                p.rss_start_mib,
                p.rss_end_mib,
                p.growth_mib(),
                p.growth_mib() * MIB_TO_MB,
                p.hwm_end_mib,
                p.vms_created,
                p.vms_active,
                p.seconds
            );
        }
        let _ = writeln!(o);
    }
    o
}
