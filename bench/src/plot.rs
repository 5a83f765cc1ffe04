//! SVG plots (plotters, SVG backend only): CPU per request as bars with the
//! min–max spread, and latency percentile curves per scenario.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::load::PERCENTILES;
use crate::report::{ArmSummary, SCENARIOS};
use crate::RunData;

const PLAIN: RGBColor = RGBColor(120, 120, 120);
const NATIVE: RGBColor = RGBColor(31, 119, 180);
const SWITCHYARD: RGBColor = RGBColor(230, 120, 20);
/// Line colours for several arms of one kind in a plot.
const EXTRA: [RGBColor; 4] =
    [RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(214, 39, 40), RGBColor(140, 86, 75)];

fn colour(arm: &str) -> RGBColor {
    if arm == "plain" {
        PLAIN
    } else if arm.starts_with("native") {
        NATIVE
    } else {
        SWITCHYARD
    }
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// Horizontal bars: median Envoy CPU per request of each arm of the main
/// series, whiskers from the fastest to the slowest repetition.
pub fn cpu_bars(data: &RunData, sums: &[ArmSummary], path: &Path) -> Result<()> {
    let main = format!("{:.0}rps", data.meta.rate);
    let rows: Vec<&ArmSummary> = sums.iter().filter(|s| s.series == main && s.cpu_us_per_req.is_some()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let xmax = rows.iter().map(|r| r.cpu_us_per_req.max).fold(0.0, f64::max) * 1.1;
    let height = 80 + 28 * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<String> = rows.iter().map(|r| r.arm.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Envoy CPU per request at {main}: median, min–max over {} reps", data.meta.reps),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(170)
        // A segmented range over 0..n draws an empty n-th row; 0..n-1 gives exactly n rows.
        .build_cartesian_2d(0f64..xmax, (0..rows.len() - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("µs of Envoy CPU per request")
        .y_labels(rows.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (r.cpu_us_per_req.median, SegmentValue::Exact(i + 1))],
                colour(&r.arm).mix(0.75).filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(err)?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            PathElement::new(
                vec![
                    (r.cpu_us_per_req.min, SegmentValue::CenterOf(i)),
                    (r.cpu_us_per_req.max, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The latency plots the report links: `(title, file name)`.
pub fn latency_plot_names(data: &RunData) -> Vec<(String, String)> {
    plot_groups(data).into_iter().map(|(title, file, _, _)| (title, file)).collect()
}

/// `(title, file, series, arms)` of each latency plot.
fn plot_groups(data: &RunData) -> Vec<(String, String, String, Vec<String>)> {
    let main = format!("{:.0}rps", data.meta.rate);
    let mut out = Vec::new();
    let Some(series) = data.series.iter().find(|s| s.name == main) else {
        return out;
    };
    let has = |a: &str| series.arms.iter().any(|x| x == a);
    for (scenario, native, sw) in SCENARIOS {
        let arms: Vec<String> = ["plain", native, sw].iter().filter(|a| has(a)).map(|a| a.to_string()).collect();
        let key = sw.trim_start_matches("switchyard-");
        out.push((format!("Latency, {scenario}, {main}"), format!("latency-{key}.svg"), main.clone(), arms));
    }
    let matcher: Vec<String> = std::iter::once("plain".to_string())
        .chain(series.arms.iter().filter(|a| a.contains("-match-")).cloned())
        .filter(|a| has(a))
        .collect();
    if matcher.len() > 1 {
        out.push((format!("Latency, matcher scaling, {main}"), "latency-matcher.svg".into(), main.clone(), matcher));
    }
    if let Some(d) = data.series.iter().find(|s| s.name == "delay") {
        out.push((
            format!("Latency, {} ms fault delay, {} in flight", data.meta.delay_ms, data.meta.delay_concurrency),
            "latency-delay.svg".into(),
            "delay".into(),
            d.arms.clone(),
        ));
    }
    out
}

/// x of a percentile on the "nines" axis: 90 → 1, 99 → 2, 99.9 → 3.
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).log10()
}

fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if (x - x.round()).abs() > 1e-6 {
        return String::new();
    }
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// One plot per scenario: each arm's latency at each percentile (median over
/// repetitions), percentiles spaced by their nines.
pub fn latency_plots(data: &RunData, sums: &[ArmSummary], dir: &Path) -> Result<()> {
    for (title, file, series, arms) in plot_groups(data) {
        let curves: Vec<(String, Vec<(f64, f64)>)> = arms
            .iter()
            .filter_map(|arm| {
                let s = sums.iter().find(|s| s.series == series && &s.arm == arm)?;
                let pts: Vec<(f64, f64)> = PERCENTILES
                    .iter()
                    .map(|(p, key)| (nines(*p), s.lat(key).median))
                    .filter(|(_, y)| y.is_finite() && *y > 0.0)
                    .collect();
                (!pts.is_empty()).then(|| (arm.clone(), pts))
            })
            .collect();
        if curves.is_empty() {
            continue;
        }
        let ys = curves.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
        let (lo, hi) = ys.fold((f64::MAX, 0.0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let path = dir.join(&file);
        let root = SVGBackend::new(&path, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&title, ("sans-serif", 18))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..4f64, (lo * 0.8..hi * 1.25).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(5)
            .y_labels(12)
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|x| nines_label(*x))
            .x_desc("percentile (median over repetitions)")
            .y_desc("latency, µs (log)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        let mut extra = EXTRA.iter().cycle();
        let mut used_kinds: Vec<RGBColor> = Vec::new();
        for (arm, pts) in curves {
            let mut c = colour(&arm);
            if used_kinds.contains(&c) {
                c = *extra.next().unwrap_or(&BLACK);
            }
            used_kinds.push(c);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(arm)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
        assert_eq!(nines_label(1.5), "");
    }
}
