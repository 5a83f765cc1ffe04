//! The load generator: `oha`, open loop at a fixed rate with latency
//! correction (each request's latency counts from when it was due, not from
//! when a free connection sent it), or closed loop at a fixed concurrency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envoy::die_with_parent;

/// The latency percentiles oha reports, as `(percentile, key)`.
pub const PERCENTILES: [(f64, &str); 9] = [
    (10.0, "p10"),
    (25.0, "p25"),
    (50.0, "p50"),
    (75.0, "p75"),
    (90.0, "p90"),
    (95.0, "p95"),
    (99.0, "p99"),
    (99.9, "p99.9"),
    (99.99, "p99.99"),
];

#[derive(Debug, Clone)]
pub struct Oha {
    pub bin: PathBuf,
    /// Core to pin oha to (`taskset -c`), if pinning.
    pub core: Option<usize>,
}

/// How to load an arm.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Open loop: `rate` requests per second over `connections` keep-alive
    /// connections; `corrected`: latency counts from when a request was due
    /// (`--latency-correction`), else from when it was sent.
    Rate { rate: f64, connections: usize, corrected: bool },
    /// Closed loop: `connections` connections, each sending as fast as answers come.
    Closed { connections: usize },
}

/// What one oha run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Responses received (any status).
    pub responses: u64,
    /// Responses with a status other than 200.
    pub non_200: u64,
    /// Requests that failed without a response (oha's error distribution),
    /// except those cut off by the deadline.
    pub errors: u64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub elapsed_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub rps: f64,
    /// Latency percentiles in microseconds, keyed `p50`, `p99.9`, ... (empty
    /// when no request completed in the window).
    pub latency_us: BTreeMap<String, f64>,
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_max_us: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub latency_mean_us: f64,
}

/// JSON has no NaN: serde_json writes it as `null`; read `null` back as NaN.
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl LoadResult {
    pub fn pct(&self, key: &str) -> f64 {
        self.latency_us.get(key).copied().unwrap_or(f64::NAN)
    }
}

impl Oha {
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Runs oha against `url` for `duration` and parses its JSON summary.
    pub fn run(
        &self,
        url: &str,
        host: &str,
        headers: &[(String, String)],
        shape: Shape,
        duration: Duration,
    ) -> Result<LoadResult> {
        let mut cmd = match self.core {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c.to_string()).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.args(["--no-tui", "--output-format", "json", "--worker-threads", "1", "--host", host])
            .arg("-z")
            .arg(format!("{}ms", duration.as_millis()));
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        match shape {
            Shape::Rate { rate, connections, corrected } => {
                cmd.arg("-q").arg(format!("{rate}")).arg("-c").arg(connections.to_string());
                if corrected {
                    cmd.arg("--latency-correction");
                }
            }
            Shape::Closed { connections } => {
                cmd.arg("-c").arg(connections.to_string());
            }
        }
        cmd.arg(url).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let out = cmd.output().with_context(|| format!("running {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("oha exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        let json: Value = serde_json::from_slice(&out.stdout).context("parsing oha's JSON output")?;
        parse(&json)
    }
}

fn parse(json: &Value) -> Result<LoadResult> {
    let num = |ptr: &str| json.pointer(ptr).and_then(Value::as_f64);
    let mut responses = 0u64;
    let mut non_200 = 0u64;
    if let Some(codes) = json.get("statusCodeDistribution").and_then(Value::as_object) {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            responses += n;
            if code != "200" {
                non_200 += n;
            }
        }
    }
    let mut errors = 0u64;
    if let Some(errs) = json.get("errorDistribution").and_then(Value::as_object) {
        for (what, n) in errs {
            if !what.contains("deadline") {
                errors += n.as_u64().unwrap_or(0);
            }
        }
    }
    let mut latency_us = BTreeMap::new();
    if let Some(p) = json.get("latencyPercentiles").and_then(Value::as_object) {
        for (k, v) in p {
            if let Some(secs) = v.as_f64() {
                latency_us.insert(k.clone(), secs * 1e6);
            }
        }
    }
    let elapsed_s = num("/summary/total").unwrap_or(f64::NAN);
    Ok(LoadResult {
        responses,
        non_200,
        errors,
        elapsed_s,
        rps: responses as f64 / elapsed_s,
        latency_us,
        latency_max_us: num("/summary/slowest").unwrap_or(f64::NAN) * 1e6,
        latency_mean_us: num("/summary/average").unwrap_or(f64::NAN) * 1e6,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oha_json() -> Result<()> {
        let json = serde_json::json!({
            "summary": {"successRate": 1.0, "total": 2.0, "slowest": 0.002, "fastest": 0.0001, "average": 0.0003},
            "latencyPercentiles": {"p50": 0.00025, "p99": 0.001, "p99.9": 0.0015},
            "statusCodeDistribution": {"200": 1990, "503": 10},
            "errorDistribution": {"aborted due to deadline": 3, "connection refused": 1}
        });
        let r = parse(&json)?;
        assert_eq!((r.responses, r.non_200, r.errors), (2000, 10, 1));
        assert!((r.pct("p50") - 250.0).abs() < 1e-6);
        assert!((r.rps - 1000.0).abs() < 1e-9);
        Ok(())
    }
}
