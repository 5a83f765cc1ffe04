//! The fault-delay arms' access log (`arms::ACCESS_LOG_FORMAT`): the delay as
//! Envoy saw it, without the client's side of the latency.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One window's requests as Envoy logged them (200s only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvoyDelay {
    pub entries: u64,
    /// (downstream start → end of the response sent) − (upstream request
    /// start → end of its response) − the configured delay, µs, per percentile
    /// (`p50` … `max`): the delay's error inside Envoy.
    pub error_us: BTreeMap<String, f64>,
    /// (downstream start → upstream request start) − the delay, µs.
    pub pre_upstream_error_us: BTreeMap<String, f64>,
}

/// The percentiles kept.
pub const KEYS: [(&str, f64); 5] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9), ("max", 100.0)];

/// The log's length now (where the next window's entries start).
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Waits until Envoy has flushed the log (its size stays put for a while;
/// the delay arms run with `--file-flush-interval-msec 100`), then reads the
/// entries after `from`.
pub fn read(path: &Path, from: u64, delay_us: f64) -> Result<EnvoyDelay> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = offset(path);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = offset(path);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(from))?;
    let mut text = String::new();
    f.read_to_string(&mut text).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse(&text, delay_us))
}

fn parse(text: &str, delay_us: f64) -> EnvoyDelay {
    let mut errors = Vec::new();
    let mut pre = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [code, total, upstream, before] = f[..] else { continue };
        let num = |s: &str| s.parse::<f64>().ok();
        if code != "200" {
            continue;
        }
        if let (Some(total), Some(upstream), Some(before)) = (num(total), num(upstream), num(before)) {
            errors.push(total - upstream - delay_us);
            pre.push(before - delay_us);
        }
    }
    EnvoyDelay { entries: errors.len() as u64, error_us: percentiles(errors), pre_upstream_error_us: percentiles(pre) }
}

fn percentiles(mut v: Vec<f64>) -> BTreeMap<String, f64> {
    v.sort_by(f64::total_cmp);
    let mut out = BTreeMap::new();
    if v.is_empty() {
        return out;
    }
    for (key, p) in KEYS {
        // Nearest rank.
        let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
        out.insert(key.to_string(), v[rank - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_error_is_total_minus_upstream_minus_delay() {
        let log = "200 100900 400 100450\n0 5000 - -\n200 101500 500 101000\n503 100 - -\n";
        let d = parse(log, 100_000.0);
        assert_eq!(d.entries, 2);
        assert_eq!(d.error_us["p50"], 500.0);
        assert_eq!(d.error_us["max"], 1000.0);
        assert_eq!(d.pre_upstream_error_us["p50"], 450.0);
    }
}
