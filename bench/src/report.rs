//! From the measured windows to the report: per-arm summaries, paired ratios,
//! the issue-7 targets with a verdict, markdown, JSON and plots.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::Spread;
use crate::{plot, RunData, Window};

/// The arm pairs each rate scenario compares: `(scenario, native arm, switchyard arm)`.
pub const SCENARIOS: [(&str, &str, &str); 8] = [
    ("routing", "native-routing", "switchyard-routing"),
    ("fault (none applied)", "native-fault", "switchyard-fault"),
    ("mirror", "native-mirror", "switchyard-mirror"),
    ("mirror with comparison", "native-mirror", "switchyard-mirror-compare"),
    ("egress", "native-egress", "switchyard-egress"),
    ("chain of four", "native-chain", "switchyard-chain"),
    ("combined chain (switchyard.wasm)", "native-chain", "switchyard-combined"),
    ("combined, routing only", "native-routing", "switchyard-combined-routing"),
];

/// Latency percentiles the tables show: `(oha key, column title)`.
const SHOWN: [(&str, &str); 4] = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p99.9")];

#[derive(Debug, Clone, Serialize)]
pub struct ArmSummary {
    pub series: String,
    pub arm: String,
    pub cpu_us_per_req: Spread,
    pub cpu_us_per_req_stat: Spread,
    pub latency_us: Vec<(String, Spread)>,
    pub rps: Spread,
    pub responses: u64,
    pub non_200: u64,
    pub errors: u64,
    pub core_other_pct: Spread,
}

impl ArmSummary {
    pub fn lat(&self, key: &str) -> Spread {
        self.latency_us.iter().find(|(k, _)| k == key).map(|(_, s)| *s).unwrap_or(Spread::NONE)
    }
}

/// `a` against `b` in one series, repetition by repetition.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub series: String,
    pub a: String,
    pub b: String,
    /// CPU per request, a / b.
    pub cpu_ratio: Spread,
    /// CPU per request, a − b (µs).
    pub cpu_added_us: Spread,
    /// p50 and p99 latency, a − b (µs).
    pub p50_added_us: Spread,
    pub p99_added_us: Spread,
}

#[derive(Debug, Clone, Serialize)]
pub struct DelayAccuracy {
    pub arm: String,
    /// Latency minus the configured delay, ms, per percentile.
    pub error_ms: Vec<(String, Spread)>,
    pub max_error_ms: Spread,
    pub rps: Spread,
    pub non_200: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: String,
    pub target: String,
    pub measured: String,
    pub limit: f64,
    pub value: Option<f64>,
    /// `met`, `MISSED` or `not measured`.
    pub verdict: String,
    pub note: String,
    /// The switchyard and native arm a CPU or latency target compares.
    pub arms: Option<(String, String)>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    data: &'a RunData,
    summaries: &'a [ArmSummary],
    comparisons: &'a [Comparison],
    delay_accuracy: &'a [DelayAccuracy],
    targets: &'a [Target],
    targets_issue15: &'a [Target],
}

pub struct Written {
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub summary: String,
}

/// Values of `f` for `arm` in `series`, indexed by repetition (NaN where missing).
pub(crate) fn per_rep(data: &RunData, series: &str, arm: &str, f: impl Fn(&Window) -> f64) -> Vec<f64> {
    let mut out = vec![f64::NAN; data.meta.reps];
    for w in data.windows.iter().filter(|w| w.series == series && w.arm == arm) {
        if let Some(slot) = out.get_mut(w.rep) {
            *slot = f(w);
        }
    }
    out
}

pub fn summarize(data: &RunData) -> Vec<ArmSummary> {
    let mut out = Vec::new();
    for s in &data.series {
        for arm in &s.arms {
            let ws: Vec<&Window> = data.windows.iter().filter(|w| w.series == s.name && &w.arm == arm).collect();
            let spread = |f: &dyn Fn(&Window) -> f64| Spread::of(&ws.iter().map(|w| f(w)).collect::<Vec<_>>());
            let latency_us = crate::load::PERCENTILES
                .iter()
                .map(|(_, key)| (key.to_string(), spread(&|w: &Window| w.load.pct(key))))
                .collect();
            out.push(ArmSummary {
                series: s.name.clone(),
                arm: arm.clone(),
                cpu_us_per_req: spread(&|w| w.cpu_us_per_req),
                cpu_us_per_req_stat: spread(&|w| w.cpu_us_per_req_stat),
                latency_us,
                rps: spread(&|w| w.load.rps),
                responses: ws.iter().map(|w| w.load.responses).sum(),
                non_200: ws.iter().map(|w| w.load.non_200).sum(),
                errors: ws.iter().map(|w| w.load.errors).sum(),
                core_other_pct: spread(&|w| w.core_other_pct.unwrap_or(f64::NAN)),
            });
        }
    }
    out
}

fn compare(data: &RunData, series: &str, a: &str, b: &str) -> Comparison {
    let cpu_a = per_rep(data, series, a, |w| w.cpu_us_per_req);
    let cpu_b = per_rep(data, series, b, |w| w.cpu_us_per_req);
    let p = |key: &'static str| {
        Spread::paired(
            &per_rep(data, series, a, |w| w.load.pct(key)),
            &per_rep(data, series, b, |w| w.load.pct(key)),
            |x, y| x - y,
        )
    };
    Comparison {
        series: series.into(),
        a: a.into(),
        b: b.into(),
        cpu_ratio: Spread::paired(&cpu_a, &cpu_b, |x, y| x / y),
        cpu_added_us: Spread::paired(&cpu_a, &cpu_b, |x, y| x - y),
        p50_added_us: p("p50"),
        p99_added_us: p("p99"),
    }
}

pub fn comparisons(data: &RunData) -> Vec<Comparison> {
    let mut out = Vec::new();
    for s in &data.series {
        let has = |arm: &str| s.arms.iter().any(|a| a == arm);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (_, native, sw) in SCENARIOS {
            if has(native) && has(sw) {
                pairs.push((sw.into(), native.into()));
            }
            for arm in [sw, native] {
                if has(arm) && has("plain") {
                    pairs.push((arm.into(), "plain".into()));
                }
            }
        }
        let sizes: Vec<String> =
            s.arms.iter().filter_map(|a| a.strip_prefix("switchyard-match-").map(String::from)).collect();
        for n in &sizes {
            pairs.push((format!("switchyard-match-{n}"), format!("native-match-{n}")));
            pairs.push((format!("switchyard-match-{n}"), "plain".into()));
            pairs.push((format!("native-match-{n}"), "plain".into()));
        }
        if let (Some(small), Some(large)) = (sizes.first(), sizes.last()) {
            if small != large {
                pairs.push((format!("switchyard-match-{large}"), format!("switchyard-match-{small}")));
                pairs.push((format!("native-match-{large}"), format!("native-match-{small}")));
            }
        }
        if has("switchyard-delay") && has("native-delay") {
            pairs.push(("switchyard-delay".into(), "native-delay".into()));
        }
        for pair in crate::overhead::pairs() {
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
        for (a, b) in pairs {
            if has(&a) && has(&b) {
                out.push(compare(data, &s.name, &a, &b));
            }
        }
    }
    out
}

pub fn delay_accuracy(data: &RunData) -> Vec<DelayAccuracy> {
    let delay_us = data.meta.delay_ms as f64 * 1000.0;
    let Some(series) = data.series.iter().find(|s| s.name == "delay") else {
        return Vec::new();
    };
    series
        .arms
        .iter()
        .map(|arm| {
            let ws: Vec<&Window> = data.windows.iter().filter(|w| w.series == "delay" && &w.arm == arm).collect();
            let err = |f: &dyn Fn(&Window) -> f64| {
                Spread::of(&ws.iter().map(|w| (f(w) - delay_us) / 1000.0).collect::<Vec<_>>())
            };
            DelayAccuracy {
                arm: arm.clone(),
                error_ms: ["p50", "p99", "p99.9"].iter().map(|k| (k.to_string(), err(&|w| w.load.pct(k)))).collect(),
                max_error_ms: err(&|w| w.load.latency_max_us),
                rps: Spread::of(&ws.iter().map(|w| w.load.rps).collect::<Vec<_>>()),
                non_200: ws.iter().map(|w| w.load.non_200).sum(),
                errors: ws.iter().map(|w| w.load.errors).sum(),
            }
        })
        .collect()
}

pub(crate) fn find<'a>(cs: &'a [Comparison], series: &str, a: &str, b: &str) -> Option<&'a Comparison> {
    cs.iter().find(|c| c.series == series && c.a == a && c.b == b)
}

pub(crate) fn verdict(
    scenario: &str,
    target: &str,
    s: Spread,
    limit: f64,
    decimals: usize,
    unit: &str,
    note: &str,
) -> Target {
    if !s.is_some() {
        return Target {
            scenario: scenario.into(),
            target: target.into(),
            measured: "n/a".into(),
            limit,
            value: None,
            verdict: "not measured".into(),
            note: note.into(),
            arms: None,
        };
    }
    let met = s.median <= limit;
    let mut note = note.to_string();
    if s.min <= limit && limit <= s.max {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str("spread crosses the limit: undecided at this noise level");
    }
    Target {
        scenario: scenario.into(),
        target: target.into(),
        measured: s.fmt(decimals, unit),
        limit,
        value: Some(s.median),
        verdict: if met { "met" } else { "MISSED" }.into(),
        note,
        arms: None,
    }
}

pub fn targets(data: &RunData, cs: &[Comparison], delay: &[DelayAccuracy]) -> Vec<Target> {
    let main = format!("{:.0}rps", data.meta.rate);
    let at_rate = if (data.meta.rate - 1000.0).abs() < 0.5 {
        String::new()
    } else {
        format!("measured at {:.0} rps, not 1 000", data.meta.rate)
    };
    let ratio = |a: &str, b: &str| find(cs, &main, a, b).map(|c| c.cpu_ratio).unwrap_or(Spread::NONE);
    let p99 = |a: &str, b: &str| find(cs, &main, a, b).map(|c| c.p99_added_us).unwrap_or(Spread::NONE);
    let mut t = vec![
        verdict(
            "routing vs native route match",
            "CPU/request ≤ 1.15×",
            ratio("switchyard-routing", "native-routing"),
            1.15,
            2,
            "×",
            "",
        ),
        verdict(
            "routing vs native route match",
            "p99 added ≤ 50 µs at 1 000 rps",
            p99("switchyard-routing", "native-routing"),
            50.0,
            0,
            " µs",
            &at_rate,
        ),
        verdict(
            "fault (no fault applied) vs native fault filter",
            "CPU/request ≤ 1.10×",
            ratio("switchyard-fault", "native-fault"),
            1.10,
            2,
            "×",
            "",
        ),
    ];
    let sw_delay = delay.iter().find(|d| d.arm == "switchyard-delay");
    let native_delay = delay.iter().find(|d| d.arm == "native-delay");
    let err99 = |d: Option<&DelayAccuracy>| {
        d.and_then(|d| d.error_ms.iter().find(|(k, _)| k == "p99").map(|(_, s)| *s)).unwrap_or(Spread::NONE)
    };
    let native_note = format!(
        "native fault filter beside it: p99 error {}; {} in flight",
        err99(native_delay).fmt(2, " ms"),
        data.meta.delay_concurrency
    );
    t.push(verdict(
        &format!("fault delay accuracy, {} ms × {} concurrent", data.meta.delay_ms, data.meta.delay_concurrency),
        "p99 error ≤ 2 ms",
        err99(sw_delay),
        2.0,
        2,
        " ms",
        &native_note,
    ));
    t.push(verdict(
        "mirror vs native mirror",
        "CPU/request ≤ 1.15×",
        ratio("switchyard-mirror", "native-mirror"),
        1.15,
        2,
        "×",
        "",
    ));
    t.push(verdict(
        "mirror vs native mirror",
        "primary p99 added ≤ 50 µs",
        p99("switchyard-mirror", "native-mirror"),
        50.0,
        0,
        " µs",
        &at_rate,
    ));
    t.push(verdict(
        "mirror with comparison vs native mirror (issue 14)",
        "CPU/request ≤ 1.25×",
        ratio("switchyard-mirror-compare", "native-mirror"),
        1.25,
        2,
        "×",
        "",
    ));
    t.push(verdict(
        "mirror with comparison vs native mirror (issue 14)",
        "primary p99 added ≤ 50 µs",
        p99("switchyard-mirror-compare", "native-mirror"),
        50.0,
        0,
        " µs",
        &at_rate,
    ));
    t.push(verdict(
        "egress vs native RBAC",
        "CPU/request ≤ 1.15×",
        ratio("switchyard-egress", "native-egress"),
        1.15,
        2,
        "×",
        "",
    ));
    t.push(verdict(
        "chain of four vs native equivalents",
        "CPU/request ≤ 1.30×",
        ratio("switchyard-chain", "native-chain"),
        1.30,
        2,
        "×",
        "",
    ));
    let native_scaling = ratio("native-match-1000", "native-match-10");
    t.push(verdict(
        "matcher 1 000 vs 10 exact-header rules",
        "≤ 2× per-request cost",
        ratio("switchyard-match-1000", "switchyard-match-10"),
        2.0,
        2,
        "×",
        &format!("Envoy CPU/request, switchyard-match-1000 / -10; native route table: {}", native_scaling.fmt(2, "×")),
    ));
    // CPU and latency targets name the arms they compare (for the profile section).
    for t in t.iter_mut().filter(|t| !t.scenario.starts_with("fault delay")) {
        for (_, native, sw) in SCENARIOS {
            if t.scenario.starts_with(sw.trim_start_matches("switchyard-")) {
                t.arms = Some((sw.into(), native.into()));
            }
        }
    }
    // switchyard.wasm's budget is issue 15's (350 KB).
    for (module, bytes) in data.wasm_bytes.iter().filter(|(m, _)| m != crate::arms::COMBINED) {
        let kb = *bytes as f64 / 1000.0;
        let s = Spread { median: kb, min: kb, max: kb, n: 1 };
        let mut v = verdict(&format!("{module}.wasm size"), "≤ 250 KB", s, 250.0, 1, " KB", "");
        v.measured = format!("{kb:.1} KB ({bytes} bytes)");
        t.push(v);
    }
    t.push(crate::xds::target(&data.xds));
    t
}

// --- markdown ---------------------------------------------------------------

fn fmt_spread(s: Spread, d: usize) -> String {
    s.fmt(d, "")
}

fn summary_of<'a>(sums: &'a [ArmSummary], series: &str, arm: &str) -> Option<&'a ArmSummary> {
    sums.iter().find(|s| s.series == series && s.arm == arm)
}

fn markdown(
    data: &RunData,
    sums: &[ArmSummary],
    cs: &[Comparison],
    delay: &[DelayAccuracy],
    targets: &[Target],
    targets15: &[Target],
) -> String {
    let m = &data.meta;
    let main = format!("{:.0}rps", m.rate);
    let mut o = String::new();
    let _ = writeln!(o, "# Switchyard bench: {}\n", m.name);
    if data.windows.is_empty() && !data.xds.is_empty() {
        // `switchyard-bench xds`: no Envoy arms, only the xds-ext scale scenario.
        let _ = writeln!(
            o,
            "xds-ext scale run, {} → {} ({:.0} s), commit `{}`, kernel {}, {} CPUs. Load average {:.1} at the \
             start, {:.1} at the end (other work on the machine slows both xds-ext and the simulated clients).\n",
            m.started, m.finished, m.duration_s, m.git_commit, m.kernel, m.cpus, m.loadavg_start, m.loadavg_end
        );
        let _ = writeln!(o, "## Target (issue 7)\n");
        let _ = writeln!(o, "| scenario | target | measured | verdict | note |\n|---|---|---|---|---|");
        for t in targets.iter().filter(|t| t.scenario.starts_with("xds-ext")) {
            let v = if t.verdict == "MISSED" { "**MISSED**".to_string() } else { t.verdict.clone() };
            let _ = writeln!(o, "| {} | {} | {} | {} | {} |", t.scenario, t.target, t.measured, v, t.note);
        }
        let _ = writeln!(o);
        o.push_str(&crate::xds::markdown(&data.xds));
        let _ = writeln!(
            o,
            "---\nRaw figures: [`{}.json`]({}.json). How to run and read this: [bench/README.md](../README.md).",
            m.name, m.name
        );
        return o;
    }
    let _ = writeln!(
        o,
        "{} run, {} → {} ({:.0} s), commit `{}`. Envoy `{}`, {}, kernel {}, {} CPUs.\n",
        m.variant, m.started, m.finished, m.duration_s, m.git_commit, m.envoy_version, m.oha_version, m.kernel, m.cpus
    );
    let pin = match (m.envoy_core, m.load_core) {
        (Some(e), Some(l)) => format!(
            "pinned with `taskset`: every arm's Envoy on cpu {e}; oha and the upstream (an Envoy answering from a \
             `direct_response` route) on cpu {l}"
        ),
        _ => "not pinned".into(),
    };
    let _ = writeln!(
        o,
        "Each arm is its own Envoy process (same binary, `--concurrency 1`), {pin}. Per arm and repetition: \
         {:.1} s warm-up (discarded), then a {:.1} s window, open loop at a fixed rate with latency correction \
         (`oha -q RATE --latency-correction`, {} keep-alive connections). {} repetitions, arms interleaved \
         (forward, then backward). CPU per request = Envoy CPU time over the window / responses, from {}. \
         Figures are **median (min–max)** over repetitions; ratios and differences are taken per repetition \
         between arms measured back to back, then median (min–max).\n",
        m.warmup_s, m.window_s, m.connections, m.reps, m.cpu_source
    );
    let others: Vec<f64> = data.windows.iter().filter_map(|w| w.core_other_pct).collect();
    let other = Spread::of(&others);
    let disturbed = others.iter().filter(|o| **o > m.max_other_pct).count();
    let repeated: u32 = data.windows.iter().map(|w| w.retried).sum();
    let _ = writeln!(
        o,
        "> **Noise.** Load average {:.1} at the start, {:.1} at the end; other processes used {} % of the Envoy \
         core during the windows (median (min–max)). On this machine class the same arm varies about ±25 % \
         between short runs, more on a busy machine: a ratio whose spread crosses its target is undecided, not \
         met or missed. {disturbed} of {} windows had others using more than {:.0} % of the core{}. {}\n",
        m.loadavg_start,
        m.loadavg_end,
        fmt_spread(other, 0),
        data.windows.len(),
        m.max_other_pct,
        if m.retries > 0 {
            format!(" after repeating such windows up to {} times ({repeated} repeats)", m.retries)
        } else {
            " (not repeated in this variant)".into()
        },
        if m.variant == "quick" {
            "This is the quick variant (few, short repetitions): re-run `make bench` on an idle machine before \
             trusting a verdict."
        } else {
            ""
        }
    );

    let _ = writeln!(o, "## Targets (issue 7)\n");
    let _ = writeln!(o, "| scenario | target | measured | verdict | note |\n|---|---|---|---|---|");
    for t in targets {
        let v = if t.verdict == "MISSED" { "**MISSED**".to_string() } else { t.verdict.clone() };
        let _ = writeln!(o, "| {} | {} | {} | {} | {} |", t.scenario, t.target, t.measured, v, t.note);
    }
    let _ = writeln!(o);
    if !targets15.is_empty() {
        let _ = writeln!(o, "## Targets (issue 15: one module, the V8 floor, host calls)\n");
        let _ = writeln!(o, "| scenario | target | measured | verdict | note |\n|---|---|---|---|---|");
        for t in targets15 {
            let v = if t.verdict == "MISSED" { "**MISSED**".to_string() } else { t.verdict.clone() };
            let _ = writeln!(o, "| {} | {} | {} | {} | {} |", t.scenario, t.target, t.measured, v, t.note);
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Ratios per scenario ({main})\n");
    let _ = writeln!(
        o,
        "| scenario | switchyard / native CPU | switchyard / plain CPU | native / plain CPU | CPU added over plain, native → switchyard (µs/req) | p99 switchyard − native (µs) |\n|---|---|---|---|---|---|"
    );
    let mut rows: Vec<(String, String, String)> =
        SCENARIOS.iter().map(|(s, n, w)| (s.to_string(), n.to_string(), w.to_string())).collect();
    for s in data.series.iter().filter(|s| s.name == main) {
        for a in s.arms.iter().filter_map(|a| a.strip_prefix("switchyard-match-")) {
            rows.push((format!("matcher, {a} rules"), format!("native-match-{a}"), format!("switchyard-match-{a}")));
        }
    }
    for (scenario, native, sw) in &rows {
        let sn = find(cs, &main, sw, native);
        let sp = find(cs, &main, sw, "plain");
        let np = find(cs, &main, native, "plain");
        let (Some(sn), Some(sp), Some(np)) = (sn, sp, np) else { continue };
        let _ = writeln!(
            o,
            "| {scenario} | {} | {} | {} | {} → {} | {} |",
            sn.cpu_ratio.fmt(2, "×"),
            sp.cpu_ratio.fmt(2, "×"),
            np.cpu_ratio.fmt(2, "×"),
            np.cpu_added_us.fmt(1, ""),
            sp.cpu_added_us.fmt(1, ""),
            sn.p99_added_us.fmt(0, "")
        );
    }
    let _ = writeln!(o);
    for (a, b, label) in [
        ("switchyard-match-1000", "switchyard-match-10", "Switchyard, 1 000 vs 10 exact-header rules"),
        ("native-match-1000", "native-match-10", "native route table, 1 000 vs 10 header-matched routes"),
    ] {
        if let Some(c) = find(cs, &main, a, b) {
            let _ = writeln!(
                o,
                "- {label}: CPU/request {} (adds {} µs/req), p99 {} µs.",
                c.cpu_ratio.fmt(2, "×"),
                c.cpu_added_us.fmt(1, ""),
                c.p99_added_us.fmt(0, "")
            );
        }
    }
    let _ = writeln!(o);

    for s in &data.series {
        if s.name == "delay" {
            continue;
        }
        let _ = writeln!(o, "## Per arm: {} ({})\n", s.name, s.description);
        let _ = write!(o, "| arm | Envoy CPU µs/req | ×plain |");
        for (_, title) in SHOWN {
            let _ = write!(o, " {title} µs |");
        }
        let _ = writeln!(o, " rps | non-200 / errors |");
        let _ = writeln!(o, "|---|---|---|{}---|---|", "---|".repeat(SHOWN.len()));
        for arm in &s.arms {
            let Some(a) = summary_of(sums, &s.name, arm) else { continue };
            let vs_plain =
                find(cs, &s.name, arm, "plain").map(|c| c.cpu_ratio.fmt(2, "×")).unwrap_or_else(|| "–".into());
            let _ = write!(o, "| {arm} | {} | {vs_plain} |", fmt_spread(a.cpu_us_per_req, 1));
            for (key, _) in SHOWN {
                let _ = write!(o, " {} |", fmt_spread(a.lat(key), 0));
            }
            let _ = writeln!(o, " {} | {} / {} |", fmt_spread(a.rps, 0), a.non_200, a.errors);
        }
        let _ = writeln!(o);
    }

    if !delay.is_empty() {
        let _ = writeln!(
            o,
            "## Fault delay accuracy ({} ms on every request, {} in flight)\n",
            m.delay_ms, m.delay_concurrency
        );
        let _ = writeln!(
            o,
            "Error = observed latency − {} ms, as the client sees it (so it includes Envoy's and the upstream's own \
             latency at that load, the same for both arms).\n",
            m.delay_ms
        );
        let _ = writeln!(o, "| arm | error p50 ms | error p99 ms | error p99.9 ms | max ms | rps | non-200 / errors |\n|---|---|---|---|---|---|---|");
        for d in delay {
            let e =
                |k: &str| d.error_ms.iter().find(|(x, _)| x == k).map(|(_, s)| fmt_spread(*s, 2)).unwrap_or_default();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} / {} |",
                d.arm,
                e("p50"),
                e("p99"),
                e("p99.9"),
                fmt_spread(d.max_error_ms, 2),
                fmt_spread(d.rps, 0),
                d.non_200,
                d.errors
            );
        }
        let _ = writeln!(o);
    }

    o.push_str(&crate::overhead::markdown(data, sums, cs));

    let _ = writeln!(o, "## Memory (Envoy RSS after its load)\n");
    let plain_rss = data.rss.iter().find(|r| r.arm == "plain").map(|r| r.rss_mib);
    let _ = writeln!(o, "| Envoy | RSS MiB | peak (VmHWM) MiB | vs plain |\n|---|---|---|---|");
    // The 2-worker arms are in their own table, against plain-2w.
    for r in data.rss.iter().filter(|r| !r.arm.ends_with("-2w")) {
        let vs = plain_rss.map(|p| format!("{:+.1} MiB", r.rss_mib - p)).unwrap_or_default();
        let _ = writeln!(o, "| {} | {:.1} | {:.1} | {vs} |", r.arm, r.rss_mib, r.hwm_mib);
    }
    let _ = writeln!(
        o,
        "\n`switchyard-routing-1-rule` and `switchyard-match-1000` are the routing module with 1 and 1 000 rules; \
         `switchyard-chain` loads all four modules.\n"
    );

    let _ = writeln!(o, "## Module sizes\n\n| module | bytes | KB |\n|---|---|---|");
    for (module, bytes) in &data.wasm_bytes {
        let _ = writeln!(o, "| {module}.wasm | {bytes} | {:.1} |", *bytes as f64 / 1000.0);
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Plots\n");
    let _ = writeln!(o, "![CPU per request]({}/cpu.svg)\n", m.name);
    for (title, file) in plot::latency_plot_names(data) {
        let _ = writeln!(o, "![{title}]({}/{file})\n", m.name);
    }

    if !data.profiles.is_empty() {
        let _ = writeln!(o, "## Where the time goes (perf, one extra window per arm)\n");
        let _ = writeln!(
            o,
            "`perf record -e cpu-clock` on the arm's Envoy during one more {:.1} s window at {main}, split by where \
             the sampled code lives, in µs of CPU per request (share × that window's CPU per request). The Envoy \
             binary is stripped, so symbols would say little: `envoy` includes V8's runtime and the proxy-wasm host \
             calls linked into it; `wasm JIT code` is the filters' own compiled wasm; `kernel` is mostly socket I/O.\n",
            m.window_s
        );
        let _ = write!(o, "| arm | CPU µs/req |");
        for c in crate::profile::COMPONENTS {
            let _ = write!(o, " {c} |");
        }
        let _ = writeln!(o, " samples |\n|---|---|{}---|", "---|".repeat(crate::profile::COMPONENTS.len()));
        for p in &data.profiles {
            let _ = write!(o, "| {} | {:.1} |", p.arm, p.cpu_us_per_req);
            for c in crate::profile::COMPONENTS {
                let _ = write!(o, " {:.1} |", p.us(c));
            }
            let _ = writeln!(o, " {} |", p.samples);
        }
        let _ = writeln!(o);
    }

    let missed: Vec<&Target> = targets.iter().filter(|t| t.verdict == "MISSED").collect();
    if !missed.is_empty() {
        let _ = writeln!(o, "## Missed targets: where the difference is\n");
        let mut explained: Vec<&String> = Vec::new();
        for (sw, native) in missed.iter().filter_map(|t| t.arms.as_ref()) {
            if explained.contains(&sw) {
                continue;
            }
            explained.push(sw);
            let Some(sn) = find(cs, &main, sw, native) else { continue };
            let scenario = sw.trim_start_matches("switchyard-");
            let sp = find(cs, &main, sw, "plain").map(|c| c.cpu_added_us).unwrap_or(Spread::NONE);
            let np = find(cs, &main, native, "plain").map(|c| c.cpu_added_us).unwrap_or(Spread::NONE);
            let _ = write!(
                o,
                "- **{scenario}**: over the plain router, native adds {} µs/req and Switchyard {} µs/req, so the \
                 module path costs {} µs/req more than the native filter.",
                np.fmt(1, ""),
                sp.fmt(1, ""),
                sn.cpu_added_us.fmt(1, "")
            );
            let prof = |arm: &str| data.profiles.iter().find(|p| p.arm == arm);
            if let (Some(ps), Some(pn)) = (prof(sw), prof(native)) {
                let _ = write!(
                    o,
                    " In the perf window: wasm JIT code {:.1} µs/req; Envoy (with V8 runtime and host calls) {:.1} \
                     vs {:.1} µs/req native; kernel {:.1} vs {:.1}.",
                    ps.us("wasm JIT code"),
                    ps.us("envoy"),
                    pn.us("envoy"),
                    ps.us("kernel"),
                    pn.us("kernel")
                );
            }
            let _ = writeln!(o);
        }
        for t in &missed {
            if t.scenario.ends_with(".wasm size") {
                let _ = writeln!(
                    o,
                    "- **{}**: {} (serde's derived decoders, serde_json and regex-lite make up most of a module, \
                     see docs/policy.md § Performance and size).",
                    t.scenario, t.measured
                );
            } else if t.scenario.starts_with("fault delay") {
                let _ = writeln!(
                    o,
                    "- **{}**: {}; the native fault filter's is in the note beside it. The module resumes delayed \
                     requests from a 1 ms root-context tick, so its error includes up to one tick period plus the \
                     resumes queued at that tick; under the same load, the difference to the native filter is the \
                     module's share.",
                    t.scenario, t.measured
                );
            }
        }
        let _ = writeln!(o);
    }

    o.push_str(&crate::xds::markdown(&data.xds));

    let _ = writeln!(
        o,
        "---\nRaw windows, summaries and targets: [`{}.json`]({}.json). How to run and read this: \
         [bench/README.md](../README.md).",
        m.name, m.name
    );
    o
}

fn plain_summary(targets: &[Target], targets15: &[Target], xds_only: bool) -> String {
    let mut o = String::from("targets (issue 7):\n");
    for t in targets.iter().filter(|t| !xds_only || t.scenario.starts_with("xds-ext")) {
        let _ = writeln!(o, "  {:<13} {} — {}: {}", t.verdict, t.scenario, t.target, t.measured);
    }
    if !xds_only && !targets15.is_empty() {
        o.push_str("targets (issue 15):\n");
        for t in targets15 {
            let _ = writeln!(o, "  {:<13} {} — {}: {}", t.verdict, t.scenario, t.target, t.measured);
        }
    }
    o
}

pub fn write(data: &RunData, out: &Path) -> Result<Written> {
    let sums = summarize(data);
    let cs = comparisons(data);
    let delay = delay_accuracy(data);
    let targets = targets(data, &cs, &delay);
    // An xds-only run has no Envoy arms: no issue-15 targets to judge.
    let targets15 = if data.windows.is_empty() { Vec::new() } else { crate::overhead::targets(data, &sums, &cs) };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let name = &data.meta.name;
    let json_path = out.join(format!("{name}.json"));
    let report = JsonReport {
        data,
        summaries: &sums,
        comparisons: &cs,
        delay_accuracy: &delay,
        targets: &targets,
        targets_issue15: &targets15,
    };
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    // An xds-only run (`switchyard-bench xds`) has no Envoy windows to plot.
    let arms_run = !data.windows.is_empty();
    if arms_run {
        let plots = out.join(name);
        std::fs::create_dir_all(&plots).with_context(|| format!("creating {}", plots.display()))?;
        plot::cpu_bars(data, &sums, &plots.join("cpu.svg"))?;
        plot::latency_plots(data, &sums, &plots)?;
    }
    let md = markdown(data, &sums, &cs, &delay, &targets, &targets15);
    let md_path = out.join(format!("{name}.md"));
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    // The newest report under a stable name (links from the README).
    if arms_run {
        std::fs::write(out.join("latest.md"), &md).context("writing latest.md")?;
    }
    Ok(Written { markdown: md_path, json: json_path, summary: plain_summary(&targets, &targets15, !arms_run) })
}
