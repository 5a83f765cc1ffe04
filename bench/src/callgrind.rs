//! Instructions per request under `valgrind --tool=callgrind`: a count, not
//! a time, so it does not move with the machine's noise.
//!
//! Each arm's Envoy runs under callgrind with instrumentation off while it
//! starts (V8 under valgrind starts ~10× faster that way) and warms up
//! (V8 tiers the wasm code up), then on. Its counters are dumped with
//! `callgrind_control -d` around windows of sequential requests on one
//! keep-alive connection: an idle window, N requests, N again, 2N. A dump
//! counts every thread of the process since the previous one, so per request
//! = (2N window − N window) / N, in which the fixed cost of a window (the
//! dump itself, the pause before it) cancels; what Envoy does per second
//! regardless of requests (timers, the modules' ticks) is measured in the
//! idle window and subtracted for the extra time the 2N window took. The two
//! N windows are the repeatability check.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::arms::{self, Arm};
use crate::client::Client;
use crate::envoy::{EnvoyProc, Launcher};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstrCount {
    pub arm: String,
    /// N: requests in each of the two single windows (the double one has 2N).
    pub requests: usize,
    /// Instructions counted in the idle window, per second.
    pub idle_per_s: f64,
    /// Instructions in the first and second N-request windows and the 2N one.
    pub first: u64,
    pub second: u64,
    pub double: u64,
    /// Wall-clock seconds of those three windows.
    pub secs: [f64; 3],
    /// Per request from (2N − first N) and from (2N − second N), idle-corrected.
    pub per_request_first: f64,
    pub per_request_second: f64,
    /// Their mean.
    pub per_request: f64,
}

impl InstrCount {
    /// How far the two per-request figures are apart, % of their mean.
    pub fn repeat_pct(&self) -> f64 {
        (self.per_request_first - self.per_request_second).abs() / self.per_request * 100.0
    }
}

/// Whether valgrind and callgrind_control are installed.
pub fn available() -> bool {
    crate::sys::on_path("valgrind") && crate::sys::on_path("callgrind_control")
}

/// Counts `arms`, `jobs` at a time (each valgrind runs Envoy's threads one at
/// a time, so one per CPU), `requests` = N. An arm that fails is reported and
/// left out.
pub fn run(launcher: &Launcher, arms: &[Arm], requests: usize, jobs: usize) -> Vec<InstrCount> {
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = {
                    let Ok(mut n) = next.lock() else { return };
                    *n += 1;
                    *n - 1
                };
                let Some(arm) = arms.get(i) else { return };
                let started = Instant::now();
                match count(launcher, arm, requests) {
                    Ok(c) => {
                        eprintln!(
                            "  {:<28} {:>9.0} instructions/request ({:.2} % apart over two windows; {:.0} s)",
                            arm.name,
                            c.per_request,
                            c.repeat_pct(),
                            started.elapsed().as_secs_f64()
                        );
                        if let Ok(mut r) = results.lock() {
                            r.push((i, c));
                        }
                    }
                    Err(e) => eprintln!("  callgrind of {}: {e:#}", arm.name),
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, c)| c).collect()
}

fn count(launcher: &Launcher, arm: &Arm, requests: usize) -> Result<InstrCount> {
    let name = format!("callgrind-{}", arm.name);
    let dir = launcher.dir(&name);
    let out_file = dir.join("callgrind.out");
    let wrapper: Vec<String> = [
        "valgrind",
        "-q",
        "--tool=callgrind",
        // V8 writes the code it runs: valgrind must notice (only outside files).
        "--smc-check=all-non-file",
        "--instr-atstart=no",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(format!("--callgrind-out-file={}", out_file.display())))
    .collect();
    // Fewer timers: the stats flush (5 s by default) is work per second, not per request.
    let mut bootstrap = arm.bootstrap.clone();
    bootstrap["stats_flush_interval"] = json!("290s");
    let proc = launcher
        .spawn_wrapped(&name, &bootstrap, None, &wrapper, &[])?
        .ready(Duration::from_secs(900))
        .context("starting Envoy under callgrind")?;
    let mut dumps = Dumps { proc: &proc, file: &out_file, n: 0 };
    let mut client = Client::connect(proc.port, arms::HOST, arms::PATH, &arm.headers)?;
    // Uninstrumented warm-up: V8 compiles the hot wasm functions again, optimised.
    client.run(requests.clamp(100, 500))?;
    control(&proc, &["-i", "on"])?;
    client.run(200)?;
    dumps.take()?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let idle = dumps.take()?;
    let idle_per_s = idle as f64 / t.elapsed().as_secs_f64();
    let mut window = |n: usize| -> Result<(u64, f64)> {
        let t = Instant::now();
        client.run(n)?;
        // Mirrored requests finish after the response: let them land.
        std::thread::sleep(Duration::from_millis(300));
        let ir = dumps.take()?;
        Ok((ir, t.elapsed().as_secs_f64()))
    };
    let (first, t1) = window(requests)?;
    let (second, t2) = window(requests)?;
    let (double, t3) = window(2 * requests)?;
    let per = |single: u64, ts: f64| (double as f64 - single as f64 - idle_per_s * (t3 - ts)) / requests as f64;
    let (per_request_first, per_request_second) = (per(first, t1), per(second, t2));
    Ok(InstrCount {
        arm: arm.name.clone(),
        requests,
        idle_per_s,
        first,
        second,
        double,
        secs: [t1, t2, t3],
        per_request_first,
        per_request_second,
        per_request: (per_request_first + per_request_second) / 2.0,
    })
}

fn control(proc: &EnvoyProc, args: &[&str]) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(proc.pid().to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running callgrind_control")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("OK") {
        bail!("callgrind_control {} {}: {}", args.join(" "), proc.pid(), text.trim());
    }
    Ok(())
}

/// The numbered dump files `callgrind_control -d` makes (`<file>.1`, `.2`, ...).
struct Dumps<'a> {
    proc: &'a EnvoyProc,
    file: &'a Path,
    n: usize,
}

impl Dumps<'_> {
    /// Dumps and returns the instructions counted since the previous dump.
    fn take(&mut self) -> Result<u64> {
        control(self.proc, &["-d"])?;
        self.n += 1;
        let path = self.file.with_file_name(format!(
            "{}.{}",
            self.file.file_name().and_then(|f| f.to_str()).unwrap_or("callgrind.out"),
            self.n
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                // The totals line comes last: its presence means the dump is complete.
                if let Some(ir) = text.lines().rev().find_map(|l| l.strip_prefix("totals:")) {
                    let ir = ir.split_whitespace().next().unwrap_or("");
                    return ir.parse().with_context(|| format!("{}: totals {ir:?}", path.display()));
                }
            }
            if Instant::now() > deadline {
                bail!("no complete dump at {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
