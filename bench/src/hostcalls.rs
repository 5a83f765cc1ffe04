//! Host calls per request: the counting builds (`switchyard-host` with
//! `count-host-calls`) count every host call the filter code makes and add
//! them to the counter `switchyard_host_calls_total`, flushed from the root
//! context's tick. Each counted arm runs in its own Envoy; after a warm-up,
//! a fixed number of sequential requests, then the counter's growth over
//! Envoy's own count of completed requests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arms::{self, Arm};
use crate::client::Client;
use crate::envoy::{EnvoyProc, Launcher};

/// The counter the counting build adds each request's host calls to.
pub const METRIC: &str = "switchyard_host_calls_total";
const REQUESTS_STAT: &str = "http.bench.downstream_rq_completed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostCalls {
    pub arm: String,
    /// Requests Envoy completed between the two readings.
    pub requests: u64,
    /// The counter's growth over them.
    pub calls: u64,
    /// The counter's growth over a following idle second (ticks, timers): not
    /// requests' work; subtracted in proportion when not zero.
    pub idle_calls_per_s: f64,
    pub per_request: f64,
}

/// Counts host calls on each of `arms` (built from the counting modules),
/// `requests` sequential requests each.
pub fn run(launcher: &Launcher, arms: &[Arm], core: Option<usize>, requests: usize) -> Result<Vec<HostCalls>> {
    let pending = arms
        .iter()
        .map(|a| launcher.spawn(&format!("count-{}", a.name), &a.bootstrap, None, &[]))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (p, arm) in pending.into_iter().zip(arms) {
        let proc = p.ready(Duration::from_secs(120)).with_context(|| format!("starting counting arm {}", arm.name))?;
        if let Some(core) = core {
            crate::pin(proc.pid(), core)?;
        }
        let counted = count(&proc, arm, requests).with_context(|| format!("counting host calls of {}", arm.name))?;
        eprintln!("  {:<28} {:>6.1} host calls/request", arm.name, counted.per_request);
        out.push(counted);
    }
    Ok(out)
}

fn count(proc: &EnvoyProc, arm: &Arm, requests: usize) -> Result<HostCalls> {
    let mut client = Client::connect(proc.port, arms::HOST, arms::PATH, &arm.headers)?;
    client.run(requests.min(50)).context("warm-up")?;
    let m0 = settled(proc)?;
    let r0 = proc.stat(REQUESTS_STAT)?.unwrap_or(0);
    let t0 = Instant::now();
    client.run(requests)?;
    drop(client);
    let m1 = settled(proc)?;
    let r1 = proc.stat(REQUESTS_STAT)?.unwrap_or(0);
    let busy = t0.elapsed().as_secs_f64();
    let idle_start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let m2 = settled(proc)?;
    let idle_calls_per_s = (m2.saturating_sub(m1)) as f64 / idle_start.elapsed().as_secs_f64();
    let n = r1.saturating_sub(r0);
    if n == 0 {
        bail!("Envoy counted no completed requests");
    }
    let calls = m1.saturating_sub(m0);
    let per_request = (calls as f64 - idle_calls_per_s * busy).max(0.0) / n as f64;
    Ok(HostCalls { arm: arm.name.clone(), requests: n, calls, idle_calls_per_s, per_request })
}

/// The counter once two readings a flush period apart agree (the module
/// flushes it from its tick, so it shows up to one period late).
fn settled(proc: &EnvoyProc) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (status, body) = proc.admin_get(&format!("/stats?filter={METRIC}"))?;
        if status != 200 {
            bail!("/stats answered {status}");
        }
        if !body.contains(METRIC) {
            bail!("the counting build defines no {METRIC} (is count-host-calls in switchyard-host?)");
        }
        let now = proc.stat_sum(METRIC)?;
        if last == Some(now) || Instant::now() > deadline {
            return Ok(now);
        }
        last = Some(now);
    }
}
