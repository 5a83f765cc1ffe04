//! Envoy's memory under config churn: an Envoy (2 workers) whose Switchyard
//! filter comes over ECDS from a watched file gets `pushes` new configs, one
//! after the other (each applied before the next, with a few requests in
//! between so the old config's contexts go away), and its RSS is compared
//! before and after.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arms::{self, PushArm};
use crate::client::Client;
use crate::envoy::{EnvoyProc, Launcher};
use crate::sys;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushResult {
    pub arm: String,
    pub workers: usize,
    pub pushes: usize,
    /// VmRSS after the first config and a warm-up, and after the last push.
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub hwm_end_mib: f64,
    /// Envoy's V8 VM counters (`wasm.envoy.wasm.runtime.v8.created` / `.active`), after.
    pub vms_created: u64,
    pub vms_active: u64,
    pub seconds: f64,
    /// Of those, waiting for Envoy to apply each push (write → `config_reload`),
    /// and the requests after each, slowest single one.
    #[serde(default)]
    pub apply_s: f64,
    #[serde(default)]
    pub requests_s: f64,
    #[serde(default)]
    pub slowest_apply_ms: f64,
}

impl PushResult {
    pub fn growth_mib(&self) -> f64 {
        self.rss_end_mib - self.rss_start_mib
    }
}

/// Requests between two pushes and around the series.
const BETWEEN: usize = 20;

pub fn run(launcher: &Launcher, arms: &[PushArm], core: Option<usize>, pushes: usize) -> Result<Vec<PushResult>> {
    let mut out = Vec::new();
    for p in arms {
        let r = push(launcher, p, core, pushes).with_context(|| format!("config pushes on {}", p.arm.name))?;
        eprintln!(
            "  {:<28} {pushes} pushes in {:.1} s (applying {:.1} s, slowest {:.0} ms; requests {:.1} s): RSS {:.1} → \
             {:.1} MiB ({:+.1}), V8 VMs created {} / active {}",
            p.arm.name,
            r.seconds,
            r.apply_s,
            r.slowest_apply_ms,
            r.requests_s,
            r.rss_start_mib,
            r.rss_end_mib,
            r.growth_mib(),
            r.vms_created,
            r.vms_active
        );
        out.push(r);
    }
    Ok(out)
}

fn push(launcher: &Launcher, p: &PushArm, core: Option<usize>, pushes: usize) -> Result<PushResult> {
    let dir = launcher.dir(&p.arm.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write(p, 0)?;
    let extra = ["--concurrency".to_string(), p.arm.workers.to_string()];
    let proc = launcher.spawn(&p.arm.name, &p.arm.bootstrap, None, &extra)?.ready(Duration::from_secs(120))?;
    if let Some(core) = core {
        crate::pin(proc.pid(), core)?;
    }
    let reloads = format!("extension_config_discovery.http_filter.{}.config_reload", p.resource);
    let mut client = Client::connect(proc.port, arms::HOST, arms::PATH, &p.arm.headers)?;
    client.run(10 * BETWEEN).context("warm-up")?;
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, _) = sys::rss_kib(proc.pid())?;
    let base = proc.stat(&reloads)?.unwrap_or(0);
    let started = Instant::now();
    let (mut apply_s, mut requests_s, mut slowest_apply_ms) = (0.0, 0.0, 0.0f64);
    for n in 1..=pushes {
        let t = Instant::now();
        write(p, n)?;
        wait_for(&proc, &reloads, base + n as u64)?;
        let applied = t.elapsed().as_secs_f64();
        apply_s += applied;
        slowest_apply_ms = slowest_apply_ms.max(applied * 1000.0);
        let t = Instant::now();
        // A new connection each time: the old one's streams may hold the old config.
        client = Client::connect(proc.port, arms::HOST, arms::PATH, &p.arm.headers)?;
        client.run(BETWEEN).with_context(|| format!("requests after push {n}"))?;
        requests_s += t.elapsed().as_secs_f64();
    }
    let seconds = started.elapsed().as_secs_f64();
    client.run(10 * BETWEEN)?;
    drop(client);
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, hwm1) = sys::rss_kib(proc.pid())?;
    Ok(PushResult {
        arm: p.arm.name.clone(),
        workers: p.arm.workers,
        pushes,
        rss_start_mib: rss0 as f64 / 1024.0,
        rss_end_mib: rss1 as f64 / 1024.0,
        hwm_end_mib: hwm1 as f64 / 1024.0,
        vms_created: proc.stat_sum("wasm.envoy.wasm.runtime.v8.created")?,
        vms_active: proc.stat_sum("wasm.envoy.wasm.runtime.v8.active")?,
        seconds,
        apply_s,
        requests_s,
        slowest_apply_ms,
    })
}

/// Replaces the watched file atomically (write, then rename over it).
fn write(p: &PushArm, n: usize) -> Result<()> {
    let tmp = p.file.with_file_name(".ecds.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&p.discovery_response(n))?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &p.file).with_context(|| format!("renaming onto {}", p.file.display()))
}

fn wait_for(proc: &EnvoyProc, stat: &str, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = proc.stat(stat)?.unwrap_or(0);
        if now >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{stat} is {now} after 10 s, waiting for {want}\n{}", proc.log_tail(10));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
