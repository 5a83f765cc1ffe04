//! A coarse profile of an arm: `perf record -e cpu-clock` (a software event,
//! so it works without hardware counters) on the arm's Envoy during one
//! window, split by where the code lives. The Envoy binary is stripped, so
//! symbols would say little; the split still shows how much time is spent in
//! V8-compiled wasm code, in Envoy itself (which links V8's runtime and the
//! host calls), in the kernel (sockets) and in libc.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::envoy::die_with_parent;

/// One arm's profile: share of samples per component, and the CPU per request
/// of the profiled window, so shares convert to µs per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub arm: String,
    pub samples: u64,
    #[serde(deserialize_with = "crate::load::f64_or_nan")]
    pub cpu_us_per_req: f64,
    /// `(component, percent of samples)`, components as in [`COMPONENTS`].
    pub shares: Vec<(String, f64)>,
}

impl Profile {
    pub fn us(&self, component: &str) -> f64 {
        self.shares.iter().find(|(c, _)| c == component).map(|(_, s)| s / 100.0 * self.cpu_us_per_req).unwrap_or(0.0)
    }
}

pub const COMPONENTS: [&str; 5] = ["envoy", "wasm JIT code", "kernel", "libc", "other"];

/// Whether `perf record` works here (installed and allowed to sample).
pub fn available() -> bool {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts sampling `pid` for `secs` seconds into `out`; wait on the child.
pub fn start(pid: u32, secs: f64, out: &Path) -> Result<std::process::Child> {
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-e", "cpu-clock", "-F", "4999", "-p", &pid.to_string(), "-o"])
        .arg(out)
        .args(["--", "sleep", &format!("{secs:.3}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut cmd);
    cmd.spawn().context("starting perf record")
}

/// `perf report --sort dso` of `data`, grouped into [`COMPONENTS`].
pub fn read(arm: &str, data: &Path, cpu_us_per_req: f64) -> Result<Profile> {
    let out = Command::new("perf")
        .args(["report", "--stdio", "-q", "--sort", "dso", "-F", "overhead,sample,dso", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .context("running perf report")?;
    if !out.status.success() {
        bail!("perf report failed on {}", data.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut shares: Vec<(String, f64)> = COMPONENTS.iter().map(|c| (c.to_string(), 0.0)).collect();
    let mut samples = 0u64;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(pct), Some(n)) = (f.next(), f.next()) else { continue };
        let Ok(pct) = pct.trim_end_matches('%').parse::<f64>() else { continue };
        samples += n.parse::<u64>().unwrap_or(0);
        let dso = f.collect::<Vec<_>>().join(" ");
        let component = classify(&dso);
        if let Some(slot) = shares.iter_mut().find(|(c, _)| c == component) {
            slot.1 += pct;
        }
    }
    Ok(Profile { arm: arm.into(), samples, cpu_us_per_req, shares })
}

fn classify(dso: &str) -> &'static str {
    if dso == "envoy" || dso.ends_with("/envoy") {
        "envoy"
    } else if dso.contains("kernel") || dso.starts_with("[vdso]") {
        "kernel"
    } else if dso.starts_with("libc")
        || dso.starts_with("libm")
        || dso.starts_with("libpthread")
        || dso.starts_with("ld-linux")
    {
        "libc"
    } else if dso.contains("unknown") || dso.contains("JIT") || dso.contains("anon") || dso.starts_with("perf-") {
        "wasm JIT code"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_dsos() {
        assert_eq!(classify("envoy"), "envoy");
        assert_eq!(classify("[kernel.kallsyms]"), "kernel");
        assert_eq!(classify("libc.so.6"), "libc");
        assert_eq!(classify("[unknown]"), "wasm JIT code");
        assert_eq!(classify("[JIT] tid 123"), "wasm JIT code");
        assert_eq!(classify("libstdc++.so.6"), "other");
    }
}
