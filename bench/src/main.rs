//! `switchyard-bench`: Switchyard's filters against Envoy's native equivalents,
//! side by side in one run, reported as ratios with their spread.
//!
//! See `bench/README.md` for what each arm and scenario is and how to read the
//! report. `make bench` runs the full variant, `make bench-quick` the short one.

mod accesslog;
mod arms;
mod callgrind;
mod client;
mod envoy;
mod hostcalls;
mod load;
mod overhead;
mod plot;
mod profile;
mod pushes;
mod report;
mod stats;
mod sys;
mod wasm;
mod xds;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arms::Arm;
use crate::envoy::{EnvoyProc, Launcher};
use crate::load::{LoadResult, Oha, Shape};

const USAGE: &str = "\
switchyard-bench [--quick] [options]
switchyard-bench xds [--streams 1000,5000,10000] [options]

Runs every arm (plain, native, switchyard, chain) in its own identical Envoy
(--concurrency 1, pinned to one core; load and upstream on another), open loop
at a fixed rate with oha, and writes bench/results/<date>[-quick].{json,md}
plus SVG plots.

  --quick             the short variant (3 repetitions, 1.5 s windows; < 3 min)
  --reps N            repetitions per arm (full: 7, quick: 3)
  --window SECS       measured window per repetition (full: 4, quick: 1.5)
  --warmup SECS       discarded warm-up before each window (full: 1, quick: 0.3)
  --rate RPS          the fixed rate of the main series (1000)
  --connections N     keep-alive connections for rate runs (8)
  --delay-concurrency N  requests in flight in the fault delay test (500)
  --out DIR           results directory (bench/results)
  --name NAME         report file stem (default: <date> or <date>-quick)
  --only PART         run only `main` (the rate scenarios, RSS), `delay`,
                      `hostcalls`, `pushes`, `callgrind` or `xds` (the xds-ext
                      scale scenario; same as the `xds` subcommand)
  --host-call-requests N  requests per counting arm (1000; 0: no host-call counts)
  --pushes N          config pushes on the ECDS arms (100; 0: none)
  --callgrind ARMS    arms counted under callgrind, comma-separated, `all` or
                      `none` (full: all; quick: none)
  --callgrind-requests N  N of the N / N / 2N windows (1000)
  --callgrind-jobs N  Envoys under valgrind at a time (2)
  --xds-streams LIST  simulated ECDS streams per xds-ext point, comma-separated,
                      or `none` (full: 1000,5000,10000; quick: 1000); `--streams`
                      after `xds`
  --xds-rounds N      VirtualService edits per point (full: 4, quick: 2)
  --xds-per-conn N    streams multiplexed per HTTP/2 connection (100)
  --xds-label-sets N  distinct (app, version) label sets over the streams (50)
  --xds-timeout SECS  longest wait for one edit to reach every stream (30)
  --xds-ext PATH      the xds-ext binary (default target/release/xds-ext)
  --max-other PCT      repeat a window in which other processes used more than
                      PCT % of the Envoy core (25) ...
  --retries N         ... at most N times (full: 2, quick: 0), then keep it
  --no-pin            do not pin processes with taskset
  --no-profile        skip the perf profile (one extra window per scenario arm)
  --envoy PATH        Envoy binary (default $SWITCHYARD_ENVOY or .tools/bin/envoy)
  --oha PATH          oha binary (default $OHA or .tools/bin/oha or oha on PATH)
  --report-from JSON  measure nothing: rewrite the markdown and plots of a
                      saved <name>.json (into --out, default its directory)
";

#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub reps: usize,
    pub window: Duration,
    pub warmup: Duration,
    pub rate: f64,
    pub connections: usize,
    pub delay_concurrency: usize,
    pub out: Option<PathBuf>,
    pub name: Option<String>,
    pub pin: bool,
    pub envoy: Option<PathBuf>,
    pub oha: Option<PathBuf>,
    pub report_from: Option<PathBuf>,
    /// `main` or `delay`: run only that part.
    pub only: Option<String>,
    pub profile: bool,
    pub max_other_pct: f64,
    pub retries: u32,
    pub xds: xds::XdsOpts,
    pub host_call_requests: usize,
    pub pushes: usize,
    /// Arms to count under callgrind (`all` = every arm of [`CALLGRIND_ARMS`]).
    pub callgrind: Vec<String>,
    pub callgrind_requests: usize,
    pub callgrind_jobs: usize,
}

/// The arms `--callgrind all` counts.
const CALLGRIND_ARMS: [&str; 17] = [
    "plain",
    "floor",
    "floor-4",
    "native-routing",
    "switchyard-routing",
    "switchyard-combined-routing",
    "native-fault",
    "switchyard-fault",
    "native-mirror",
    "switchyard-mirror",
    "switchyard-mirror-compare",
    "native-egress",
    "switchyard-egress",
    "native-chain",
    "switchyard-chain",
    "switchyard-combined-x4",
    "switchyard-combined",
];

impl Opts {
    fn parse(args: impl Iterator<Item = String>) -> Result<Opts> {
        let mut args: Vec<String> = args.collect();
        let quick = args.iter().any(|a| a == "--quick");
        let xds_only = args.first().is_some_and(|a| a == "xds");
        if xds_only {
            args.remove(0);
        }
        let mut o = Opts {
            quick,
            reps: if quick { 3 } else { 7 },
            window: Duration::from_secs_f64(if quick { 1.5 } else { 4.0 }),
            warmup: Duration::from_secs_f64(if quick { 0.3 } else { 1.0 }),
            rate: 1000.0,
            connections: 8,
            delay_concurrency: 500,
            out: None,
            name: None,
            pin: true,
            envoy: None,
            oha: None,
            report_from: None,
            only: None,
            profile: true,
            max_other_pct: 25.0,
            retries: if quick { 0 } else { 2 },
            xds: xds::XdsOpts {
                streams: if quick { vec![1000] } else { vec![1000, 5000, 10000] },
                rounds: if quick { 2 } else { 4 },
                per_conn: 100,
                label_sets: 50,
                timeout: Duration::from_secs(30),
                xds_ext: None,
            },
            host_call_requests: 1000,
            pushes: 100,
            callgrind: if quick { Vec::new() } else { vec!["all".into()] },
            callgrind_requests: 1000,
            callgrind_jobs: 2,
        };
        if xds_only {
            o.only = Some("xds".into());
        }
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut val = |flag: &str| it.next().with_context(|| format!("{flag} needs a value"));
            match a.as_str() {
                "--quick" => {}
                "--no-pin" => o.pin = false,
                "--no-profile" => o.profile = false,
                "--max-other" => o.max_other_pct = val("--max-other")?.parse().context("--max-other")?,
                "--retries" => o.retries = val("--retries")?.parse().context("--retries")?,
                "--reps" => o.reps = val("--reps")?.parse().context("--reps")?,
                "--window" => o.window = secs(&val("--window")?)?,
                "--warmup" => o.warmup = secs(&val("--warmup")?)?,
                "--rate" => o.rate = val("--rate")?.parse().context("--rate")?,
                "--connections" => o.connections = val("--connections")?.parse().context("--connections")?,
                "--delay-concurrency" => {
                    o.delay_concurrency = val("--delay-concurrency")?.parse().context("--delay-concurrency")?
                }
                "--out" => o.out = Some(PathBuf::from(val("--out")?)),
                "--name" => o.name = Some(val("--name")?),
                "--envoy" => o.envoy = Some(PathBuf::from(val("--envoy")?)),
                "--oha" => o.oha = Some(PathBuf::from(val("--oha")?)),
                "--only" => o.only = Some(val("--only")?),
                "--xds-streams" | "--streams" => o.xds.streams = xds::parse_streams(&val("--xds-streams")?)?,
                "--xds-rounds" => o.xds.rounds = val("--xds-rounds")?.parse().context("--xds-rounds")?,
                "--xds-per-conn" => o.xds.per_conn = val("--xds-per-conn")?.parse().context("--xds-per-conn")?,
                "--xds-label-sets" => {
                    o.xds.label_sets = val("--xds-label-sets")?.parse().context("--xds-label-sets")?
                }
                "--xds-timeout" => o.xds.timeout = secs(&val("--xds-timeout")?)?,
                "--xds-ext" => o.xds.xds_ext = Some(PathBuf::from(val("--xds-ext")?)),
                "--report-from" => o.report_from = Some(PathBuf::from(val("--report-from")?)),
                "--host-call-requests" => {
                    o.host_call_requests = val("--host-call-requests")?.parse().context("--host-call-requests")?
                }
                "--pushes" => o.pushes = val("--pushes")?.parse().context("--pushes")?,
                "--callgrind" => {
                    o.callgrind = val("--callgrind")?
                        .split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty() && *a != "none")
                        .map(String::from)
                        .collect()
                }
                "--callgrind-requests" => {
                    o.callgrind_requests = val("--callgrind-requests")?.parse().context("--callgrind-requests")?
                }
                "--callgrind-jobs" => {
                    o.callgrind_jobs = val("--callgrind-jobs")?.parse().context("--callgrind-jobs")?
                }
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        if let Some(only) = &o.only {
            if !["main", "delay", "hostcalls", "pushes", "callgrind", "xds"].contains(&only.as_str()) {
                bail!("--only takes `main`, `delay`, `hostcalls`, `pushes`, `callgrind` or `xds`, not {only:?}");
            }
            if only == "callgrind" && o.callgrind.is_empty() {
                o.callgrind = vec!["all".into()];
            }
        }
        if o.xds.per_conn == 0 || o.xds.label_sets == 0 || o.xds.streams.contains(&0) {
            bail!("--xds-per-conn, --xds-label-sets and the stream counts must be positive");
        }
        if o.callgrind_requests == 0 || o.callgrind_jobs == 0 {
            bail!("--callgrind-requests and --callgrind-jobs must be positive");
        }
        if o.reps == 0 || o.connections == 0 || o.delay_concurrency == 0 || o.rate <= 0.0 {
            bail!("--reps, --connections, --delay-concurrency and --rate must be positive");
        }
        Ok(o)
    }
}

fn secs(s: &str) -> Result<Duration> {
    let v: f64 = s.parse().with_context(|| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).with_context(|| format!("{s:?} is not a duration"))
}

/// One measured window of one arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    pub series: String,
    pub arm: String,
    pub rep: usize,
    /// Envoy CPU time per response, µs (schedstat when available, else /proc/<pid>/stat).
    #[serde(deserialize_with = "load::f64_or_nan")]
    pub cpu_us_per_req: f64,
    /// The same from `/proc/<pid>/stat` utime+stime (clock-tick resolution).
    #[serde(deserialize_with = "load::f64_or_nan")]
    pub cpu_us_per_req_stat: f64,
    /// Share of the Envoy core used by other processes during the window, %.
    pub core_other_pct: Option<f64>,
    /// How often the window was repeated because others used the core.
    #[serde(default)]
    pub retried: u32,
    pub load: LoadResult,
    /// The delay arms: the window's requests as Envoy's access log timed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_delay: Option<accesslog::EnvoyDelay>,
}

/// A series: the same shape of load over some arms, repeated and interleaved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub name: String,
    pub description: String,
    pub arms: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssRow {
    pub arm: String,
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub variant: String,
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub reps: usize,
    pub window_s: f64,
    pub warmup_s: f64,
    pub rate: f64,
    pub connections: usize,
    pub delay_concurrency: usize,
    pub delay_ms: u64,
    pub pinned: bool,
    pub envoy_core: Option<usize>,
    pub load_core: Option<usize>,
    pub cpus: usize,
    pub envoy_version: String,
    pub oha_version: String,
    pub kernel: String,
    #[serde(deserialize_with = "load::f64_or_nan")]
    pub loadavg_start: f64,
    #[serde(deserialize_with = "load::f64_or_nan")]
    pub loadavg_end: f64,
    pub cpu_source: String,
    pub git_commit: String,
    #[serde(default = "default_max_other")]
    pub max_other_pct: f64,
    #[serde(default)]
    pub retries: u32,
}

/// Everything a run measured: the JSON report holds this plus the summaries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunData {
    pub meta: Meta,
    pub series: Vec<SeriesInfo>,
    pub windows: Vec<Window>,
    pub rss: Vec<RssRow>,
    pub wasm_bytes: Vec<(String, u64)>,
    /// perf's split of one window per scenario arm (empty without perf).
    #[serde(default)]
    pub profiles: Vec<profile::Profile>,
    /// The xds-ext scale scenario: one point per stream count.
    #[serde(default)]
    pub xds: Vec<xds::XdsPoint>,
    /// Host calls per request of the counting builds.
    #[serde(default)]
    pub host_calls: Vec<hostcalls::HostCalls>,
    /// Instructions per request under callgrind.
    #[serde(default)]
    pub instructions: Vec<callgrind::InstrCount>,
    /// Envoy RSS over config pushes.
    #[serde(default)]
    pub pushes: Vec<pushes::PushResult>,
    /// The floor module's size (`noop.wasm`, not shipped).
    #[serde(default)]
    pub floor_bytes: Option<u64>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn default_max_other() -> f64 {
    25.0
}

/// The run's scratch dir (bootstraps, Envoy logs), removed when the run ends.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn find_tool(given: Option<PathBuf>, env: &str, local: PathBuf, on_path: &str, hint: &str) -> Result<PathBuf> {
    if let Some(p) = given.or_else(|| std::env::var_os(env).map(PathBuf::from)) {
        if sys::is_executable(&p) {
            return Ok(p);
        }
        bail!("{} is not an executable file", p.display());
    }
    if sys::is_executable(&local) {
        return Ok(local);
    }
    if !on_path.is_empty() && sys::on_path(on_path) {
        return Ok(PathBuf::from(on_path));
    }
    bail!("{} not found: {hint}", local.display())
}

fn command_text(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Pins every thread of `pid` to `core`.
fn pin(pid: u32, core: usize) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("running taskset")?;
    if !status.success() {
        bail!("taskset -a -p -c {core} {pid} failed: {status}");
    }
    Ok(())
}

/// The module file a counted arm loads first (`switchyard-match-10` → `routing.wasm`).
fn module_of(arm: &str) -> String {
    let module = match arm.trim_start_matches("switchyard-") {
        a if a.starts_with("combined") => arms::COMBINED,
        a if a.starts_with("match") || a.starts_with("chain") => "routing",
        a => a,
    };
    format!("{module}.wasm")
}

/// One request through an arm, to fail early and clearly on a broken config.
fn probe(envoy: &EnvoyProc, arm: &Arm) -> Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).context("connecting to the arm")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", arms::PATH, arms::HOST);
    for (k, v) in &arm.headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).context("reading the probe's response")?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        bail!(
            "arm {}: probe request answered {:?}, not 200\n--- envoy log ---\n{}",
            arm.name,
            text.lines().next().unwrap_or(""),
            envoy.log_tail(30)
        );
    }
    Ok(())
}

struct Harness {
    opts: Opts,
    launcher: Launcher,
    oha: Oha,
    envoy_core: Option<usize>,
    windows: Vec<Window>,
    series: Vec<SeriesInfo>,
}

impl Harness {
    /// Starts the arms (concurrently, unpinned so startup is quick), waits for
    /// each, pins it to the Envoy core and sends one probe request through it.
    fn start_arms(&self, arms: &[Arm]) -> Result<Vec<EnvoyProc>> {
        let pending = arms
            .iter()
            .map(|a| {
                let mut extra = vec!["--concurrency".to_string(), a.workers.to_string()];
                if a.access_log {
                    extra.extend(["--file-flush-interval-msec".to_string(), "100".to_string()]);
                }
                self.launcher.spawn(&a.name, &a.bootstrap, None, &extra)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut procs = Vec::new();
        for (p, arm) in pending.into_iter().zip(arms) {
            let proc = p.ready(Duration::from_secs(120)).with_context(|| format!("starting arm {}", arm.name))?;
            if let Some(core) = self.envoy_core {
                pin(proc.pid(), core)?;
            }
            probe(&proc, arm)?;
            procs.push(proc);
        }
        Ok(procs)
    }

    /// Runs `reps` interleaved repetitions of `shape` over `arms` (forward on
    /// even repetitions, backward on odd ones, so no arm always goes first and
    /// each switchyard/native pair stays adjacent in time).
    fn run_series(&mut self, name: &str, description: &str, arms: &[(&Arm, &EnvoyProc)], shape: Shape) -> Result<()> {
        self.series.push(SeriesInfo {
            name: name.into(),
            description: description.into(),
            arms: arms.iter().map(|(a, _)| a.name.clone()).collect(),
        });
        let reps = self.opts.reps;
        for rep in 0..reps {
            let order: Vec<usize> =
                if rep % 2 == 0 { (0..arms.len()).collect() } else { (0..arms.len()).rev().collect() };
            for i in order {
                let (arm, proc) = &arms[i];
                let w = self.measure(name, rep, arm, proc, shape)?;
                eprintln!(
                    "  [{name} {}/{reps}] {:<24} {:>7.1} µs/req  p50 {:>7.0} µs  p99 {:>7.0} µs  {:>6.0} rps{}",
                    rep + 1,
                    arm.name,
                    w.cpu_us_per_req,
                    w.load.pct("p50"),
                    w.load.pct("p99"),
                    w.load.rps,
                    match w.core_other_pct {
                        Some(o) if o > 5.0 => format!("  (core shared: others used {o:.0}%)"),
                        _ => String::new(),
                    }
                );
                self.windows.push(w);
            }
        }
        Ok(())
    }

    /// One more window on `arm` with `perf record` attached.
    fn profile(&self, arm: &Arm, proc: &EnvoyProc, shape: Shape, scratch: &Path) -> Result<profile::Profile> {
        let file = scratch.join(format!("perf-{}.data", arm.name));
        let pid = proc.pid();
        let c0 = sys::cpu(pid)?;
        let mut perf = profile::start(pid, self.opts.window.as_secs_f64(), &file)?;
        let load = self.oha.run(&proc.url(arms::PATH), arms::HOST, &arm.headers, shape, self.opts.window)?;
        let c1 = sys::cpu(pid)?;
        perf.wait().context("waiting for perf record")?;
        let per_req = c0.secs_until(&c1) / load.responses.max(1) as f64 * 1e6;
        profile::read(&arm.name, &file, per_req)
    }

    fn measure(&self, series: &str, rep: usize, arm: &Arm, proc: &EnvoyProc, shape: Shape) -> Result<Window> {
        let url = proc.url(arms::PATH);
        let pid = proc.pid();
        // The warm-up's numbers are discarded, and so is a warm-up that a
        // stalled machine kept from completing anything.
        if !self.opts.warmup.is_zero() {
            self.oha
                .run(&url, arms::HOST, &arm.headers, shape, self.opts.warmup)
                .with_context(|| format!("warm-up of {}", arm.name))?;
        }
        // A window in which nothing completed is retried (a busy machine can
        // stall a pinned Envoy for a while), and so is one in which other
        // processes took more than --max-other % of the Envoy core, up to
        // --retries times; after that the last window is kept as it is.
        let mut empty = 0;
        let mut retried = 0;
        let log = proc.dir().join(arms::ACCESS_LOG);
        loop {
            let log_from = accesslog::offset(&log);
            let c0 = sys::cpu(pid)?;
            let j0 = self.envoy_core.and_then(sys::core_jiffies);
            let load = self
                .oha
                .run(&url, arms::HOST, &arm.headers, shape, self.opts.window)
                .with_context(|| format!("load on {}", arm.name))?;
            let c1 = sys::cpu(pid)?;
            let j1 = self.envoy_core.and_then(sys::core_jiffies);
            if load.responses == 0 || load.latency_us.is_empty() {
                empty += 1;
                if empty == 3 {
                    bail!("arm {}: no responses in three windows\n{}", arm.name, proc.log_tail(20));
                }
                eprintln!("  {}: no responses in the window, retrying", arm.name);
                continue;
            }
            let n = load.responses as f64;
            let cpu = c0.secs_until(&c1);
            let core_other_pct = match (j0, j1) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                    let tick = sys::tick_secs();
                    let busy = (b1 - b0) as f64 * tick;
                    Some(((busy - cpu) / ((t1 - t0) as f64 * tick) * 100.0).clamp(0.0, 100.0))
                }
                _ => None,
            };
            if let Some(other) = core_other_pct.filter(|o| *o > self.opts.max_other_pct) {
                if retried < self.opts.retries {
                    retried += 1;
                    eprintln!("  {}: others used {other:.0}% of the Envoy core, repeating the window", arm.name);
                    continue;
                }
            }
            let envoy_delay = if arm.access_log {
                Some(accesslog::read(&log, log_from, arms::DELAY_MS as f64 * 1000.0)?)
            } else {
                None
            };
            return Ok(Window {
                series: series.into(),
                arm: arm.name.clone(),
                rep,
                cpu_us_per_req: cpu / n * 1e6,
                cpu_us_per_req_stat: c0.stat_secs_until(&c1) / n * 1e6,
                core_other_pct,
                retried,
                load,
                envoy_delay,
            });
        }
    }
}

fn run() -> Result<()> {
    let opts = Opts::parse(std::env::args().skip(1))?;
    if let Some(json) = &opts.report_from {
        let text = std::fs::read(json).with_context(|| format!("reading {}", json.display()))?;
        let data: RunData = serde_json::from_slice(&text).with_context(|| format!("parsing {}", json.display()))?;
        let out = opts.out.clone().or_else(|| json.parent().map(Path::to_path_buf)).unwrap_or_default();
        let written = report::write(&data, &out)?;
        eprintln!("{}report: {}", written.summary, written.markdown.display());
        return Ok(());
    }
    let started_at = Instant::now();
    let started = sys::now_utc();
    let loadavg_start = sys::loadavg1();
    let root = workspace_root();
    if opts.only.as_deref() == Some("xds") {
        return run_xds_only(&opts, &root, started_at, started, loadavg_start);
    }

    let envoy_bin =
        find_tool(opts.envoy.clone(), "SWITCHYARD_ENVOY", root.join(".tools/bin/envoy"), "", "run `make setup`")?;
    let oha_bin =
        find_tool(opts.oha.clone(), "OHA", root.join(".tools/bin/oha"), "oha", "run `scripts/bench-setup.sh`")?;
    let mut modules = arms::Modules { dir: root.join("target/switchyard"), floor: None };
    for f in ["routing", "fault", "mirror", "egress"] {
        let p = modules.dir.join(format!("{f}.wasm"));
        if !p.is_file() {
            bail!("{} missing: run `make build`", p.display());
        }
    }
    if !modules.has_combined() {
        eprintln!("  note: target/switchyard/switchyard.wasm not built: no combined-module arms");
    }
    let mut floor_bytes = None;
    if ["main", "callgrind"].iter().any(|p| opts.only.as_deref().is_none_or(|o| o == *p)) {
        eprintln!("building the floor module (bench/build-wasm.sh floor) …");
        match wasm::floor(&root) {
            Ok((path, bytes)) => {
                modules.floor = Some(path);
                floor_bytes = Some(bytes);
            }
            Err(e) => eprintln!("  no floor arm: {e:#}"),
        }
    }

    let cpus = sys::allowed_cpus();
    let pinned = opts.pin && cpus.len() >= 2 && sys::on_path("taskset");
    let (envoy_core, load_core) = if pinned { (Some(cpus[0]), Some(cpus[1])) } else { (None, None) };
    let scratch = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    // Removed last, after every Envoy (declared later, dropped earlier) is gone.
    let _scratch_guard = ScratchDir(scratch.clone());
    let launcher = Launcher { envoy: envoy_bin.clone(), scratch: scratch.clone(), taskset: pinned };
    let oha = Oha { bin: oha_bin, core: load_core };
    // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy_version = command_text(&envoy_bin, &["--version"])
        .split_whitespace()
        .find(|w| w.matches('/').count() >= 3 && !w.starts_with('/'))
        .unwrap_or("")
        .to_string();
    eprintln!(
        "switchyard-bench ({}): {} reps × {:.1} s windows, {} rps, Envoy {envoy_version}, {}; pinning {}",
        if opts.quick { "quick" } else { "full" },
        opts.reps,
        opts.window.as_secs_f64(),
        opts.rate,
        oha.version(),
        match (envoy_core, load_core) {
            (Some(e), Some(l)) => format!("Envoy arms → cpu {e}, load + upstream → cpu {l}"),
            _ => "off".into(),
        }
    );
    if loadavg_start > 1.0 {
        eprintln!("  note: load average {loadavg_start:.1} at start: other work on this machine adds noise");
    }

    let upstream = launcher.start("upstream", &arms::upstream_bootstrap(), None).context("starting the upstream")?;
    if let Some(core) = load_core {
        pin(upstream.pid(), core)?;
    }

    let mut h = Harness { opts: opts.clone(), launcher, oha, envoy_core, windows: Vec::new(), series: Vec::new() };
    let rate_shape = Shape::Rate { rate: opts.rate, connections: opts.connections, corrected: true };
    let mut rss = Vec::new();
    let mut profiles = Vec::new();

    let part = |p: &str| opts.only.as_deref().is_none_or(|o| o == p);
    // --- the rate-driven scenarios, all arms in one interleaved series ----
    if part("main") {
        let main_arms = arms::main_arms(&modules, upstream.port, &[10, 1000]);
        let rss_arms = arms::rss_arms(&modules, upstream.port);
        eprintln!("starting {} Envoy arms …", main_arms.len() + rss_arms.len());
        let procs = h.start_arms(&main_arms)?;
        let rss_procs = h.start_arms(&rss_arms)?;
        {
            let pairs: Vec<(&Arm, &EnvoyProc)> = main_arms.iter().zip(procs.iter()).collect();
            let rate = opts.rate;
            h.run_series(
                &format!("{rate:.0}rps"),
                &format!("open loop at {rate:.0} rps, {} connections, latency-corrected", opts.connections),
                &pairs,
                rate_shape,
            )?;
        }
        if !opts.quick {
            let sweep = [
                "plain",
                "floor",
                "native-routing",
                "switchyard-routing",
                "native-chain",
                "switchyard-chain",
                "switchyard-combined",
            ];
            for rate in [500.0, 2000.0] {
                let pairs: Vec<(&Arm, &EnvoyProc)> =
                    main_arms.iter().zip(procs.iter()).filter(|(a, _)| sweep.contains(&a.name.as_str())).collect();
                h.run_series(
                    &format!("{rate:.0}rps"),
                    &format!("open loop at {rate:.0} rps, {} connections, latency-corrected", opts.connections),
                    &pairs,
                    Shape::Rate { rate, connections: opts.connections, corrected: true },
                )?;
            }
            let pairs: Vec<(&Arm, &EnvoyProc)> =
                main_arms.iter().zip(procs.iter()).filter(|(a, _)| sweep.contains(&a.name.as_str())).collect();
            h.run_series(
                "knee",
                "closed loop, 32 connections: the most the arm serves",
                &pairs,
                Shape::Closed { connections: 32 },
            )?;
        }
        // The mirror arms must really have mirrored: count what reached v3.
        for (arm, proc) in main_arms.iter().zip(&procs).filter(|(a, _)| arms::mirrors(&a.name)) {
            let shadowed = proc.stat("cluster.outbound|9080|v3|reviews.upstream_rq_total")?.unwrap_or(0);
            let sent: u64 = h.windows.iter().filter(|w| w.arm == arm.name).map(|w| w.load.responses).sum();
            if shadowed < sent {
                bail!("arm {}: only {shadowed} mirrored requests for {sent} measured ones", arm.name);
            }
        }
        if opts.profile {
            if profile::available() {
                eprintln!("profiling one window per scenario arm with perf …");
                let wanted: Vec<&str> = ["plain", "floor"]
                    .into_iter()
                    .chain(report::SCENARIOS.iter().flat_map(|(_, n, s)| [*n, *s]))
                    .collect();
                for (arm, proc) in main_arms.iter().zip(&procs).filter(|(a, _)| wanted.contains(&a.name.as_str())) {
                    match h.profile(arm, proc, rate_shape, &scratch) {
                        Ok(p) => profiles.push(p),
                        Err(e) => eprintln!("  profile of {}: {e:#}", arm.name),
                    }
                }
            } else {
                eprintln!("perf record does not work here: no profile (install linux-perf, or pass --no-profile)");
            }
        }
        // Memory after the load: the RSS-only arms get a short load first.
        for (arm, proc) in rss_arms.iter().zip(&rss_procs) {
            h.oha.run(&proc.url(arms::PATH), arms::HOST, &arm.headers, rate_shape, opts.warmup.max(opts.window / 2))?;
        }
        for (arm, proc) in main_arms.iter().zip(&procs).chain(rss_arms.iter().zip(&rss_procs)) {
            let (rss_kib, hwm_kib) = sys::rss_kib(proc.pid())?;
            rss.push(RssRow {
                arm: arm.name.clone(),
                rss_mib: rss_kib as f64 / 1024.0,
                hwm_mib: hwm_kib as f64 / 1024.0,
            });
        }
        if let Ok(up) = sys::rss_kib(upstream.pid()) {
            rss.push(RssRow { arm: "upstream".into(), rss_mib: up.0 as f64 / 1024.0, hwm_mib: up.1 as f64 / 1024.0 });
        }
    }

    // --- fault delay accuracy ---------------------------------------------
    if part("delay") {
        let delay_arms = arms::delay_arms(&modules, upstream.port);
        eprintln!("starting the fault-delay arms …");
        let procs = h.start_arms(&delay_arms)?;
        let pairs: Vec<(&Arm, &EnvoyProc)> = delay_arms.iter().zip(procs.iter()).collect();
        let c = opts.delay_concurrency;
        let rate = c as f64 * 1000.0 / arms::DELAY_MS as f64;
        h.run_series(
            "delay",
            &format!(
                "{} ms delay on every request, {c} in flight ({rate:.0} rps open loop, {} connections; latency from \
                 when each request was sent, so client-side lag is not counted as delay error)",
                arms::DELAY_MS,
                c * 3 / 2
            ),
            &pairs,
            Shape::Rate { rate, connections: c * 3 / 2, corrected: false },
        )?;
    }

    // --- host calls per request (the counting builds) -----------------------
    let mut host_calls = Vec::new();
    if part("hostcalls") && opts.host_call_requests > 0 {
        eprintln!("counting host calls (bench/build-wasm.sh counting) …");
        match wasm::counting(&root) {
            Ok(dir) => {
                let counting = arms::Modules { dir, floor: None };
                let counted: Vec<Arm> = arms::main_arms(&counting, upstream.port, &[10, 1000])
                    .into_iter()
                    .filter(|a| a.name.starts_with("switchyard-") && counting.dir.join(module_of(&a.name)).is_file())
                    .collect();
                host_calls = hostcalls::run(&h.launcher, &counted, envoy_core, opts.host_call_requests)?;
            }
            Err(e) => eprintln!("  no host-call counts: {e:#}"),
        }
    }

    // --- Envoy memory over config pushes ---------------------------------
    let mut push_results = Vec::new();
    if part("pushes") && opts.pushes > 0 {
        eprintln!("{} config pushes per ECDS arm …", opts.pushes);
        let push_arms = arms::push_arms(&modules, upstream.port, |name| h.launcher.dir(name));
        push_results = pushes::run(&h.launcher, &push_arms, envoy_core, opts.pushes)?;
    }

    // --- instructions per request under callgrind --------------------------
    let mut instructions = Vec::new();
    if part("callgrind") && !opts.callgrind.is_empty() {
        if callgrind::available() {
            let all = opts.callgrind.iter().any(|a| a == "all");
            let wanted: Vec<Arm> = arms::main_arms(&modules, upstream.port, &[])
                .into_iter()
                .filter(
                    |a| if all { CALLGRIND_ARMS.contains(&a.name.as_str()) } else { opts.callgrind.contains(&a.name) },
                )
                .collect();
            eprintln!(
                "counting instructions under callgrind: {} arms, {} requests per window, {} at a time …",
                wanted.len(),
                opts.callgrind_requests,
                opts.callgrind_jobs
            );
            instructions = callgrind::run(&h.launcher, &wanted, opts.callgrind_requests, opts.callgrind_jobs);
        } else {
            eprintln!("valgrind / callgrind_control not installed: no instruction counts (apt-get install valgrind)");
        }
    }
    drop(upstream);

    // --- xds-ext scale: simulated ECDS streams ------------------------------
    let xds_points = if part("xds") { xds::run(&opts.xds, &root, &scratch)? } else { Vec::new() };

    let finished = sys::now_utc();
    let name = opts.name.clone().unwrap_or_else(|| {
        let date = sys::today_utc();
        if opts.quick {
            format!("{date}-quick")
        } else {
            date
        }
    });
    let data = RunData {
        meta: Meta {
            name: name.clone(),
            variant: if opts.quick { "quick" } else { "full" }.into(),
            started,
            finished,
            duration_s: started_at.elapsed().as_secs_f64(),
            reps: opts.reps,
            window_s: opts.window.as_secs_f64(),
            warmup_s: opts.warmup.as_secs_f64(),
            rate: opts.rate,
            connections: opts.connections,
            delay_concurrency: opts.delay_concurrency,
            delay_ms: arms::DELAY_MS,
            pinned,
            envoy_core,
            load_core,
            cpus: cpus.len(),
            envoy_version,
            oha_version: h.oha.version(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            loadavg_start,
            loadavg_end: sys::loadavg1(),
            cpu_source: if sys::cpu(std::process::id())?.sched_ns.is_some() {
                "/proc/<pid>/task/*/schedstat (ns); /proc/<pid>/stat utime+stime kept alongside".into()
            } else {
                "/proc/<pid>/stat utime+stime".into()
            },
            max_other_pct: opts.max_other_pct,
            retries: opts.retries,
            git_commit: command_text(
                Path::new("git"),
                &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"],
            ),
        },
        series: h.series,
        windows: h.windows,
        rss,
        wasm_bytes: arms::wasm_sizes(&modules.dir),
        profiles,
        xds: xds_points,
        host_calls,
        instructions,
        pushes: push_results,
        floor_bytes,
    };
    let out = opts.out.clone().unwrap_or_else(|| root.join("bench/results"));
    let written = report::write(&data, &out)?;
    eprintln!("\n{}", written.summary);
    eprintln!("report: {}\n        {}", written.markdown.display(), written.json.display());
    Ok(())
}

/// `switchyard-bench xds`: only the xds-ext scale scenario (no Envoy, no oha).
fn run_xds_only(opts: &Opts, root: &Path, started_at: Instant, started: String, loadavg_start: f64) -> Result<()> {
    let scratch = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let _scratch_guard = ScratchDir(scratch.clone());
    let points = xds::run(&opts.xds, root, &scratch)?;
    let name = opts.name.clone().unwrap_or_else(|| format!("{}-xds", sys::today_utc()));
    let data = RunData {
        meta: Meta {
            name,
            variant: "xds".into(),
            started,
            finished: sys::now_utc(),
            duration_s: started_at.elapsed().as_secs_f64(),
            reps: 0,
            window_s: 0.0,
            warmup_s: 0.0,
            rate: opts.rate,
            connections: 0,
            delay_concurrency: 0,
            delay_ms: arms::DELAY_MS,
            pinned: false,
            envoy_core: None,
            load_core: None,
            cpus: sys::allowed_cpus().len(),
            envoy_version: String::new(),
            oha_version: String::new(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            loadavg_start,
            loadavg_end: sys::loadavg1(),
            cpu_source: "/proc/<pid>/task/*/schedstat (ns); /proc/<pid>/stat utime+stime kept alongside".into(),
            git_commit: command_text(
                Path::new("git"),
                &["-C", &root.display().to_string(), "rev-parse", "--short", "HEAD"],
            ),
            max_other_pct: opts.max_other_pct,
            retries: 0,
        },
        series: Vec::new(),
        windows: Vec::new(),
        rss: Vec::new(),
        wasm_bytes: Vec::new(),
        profiles: Vec::new(),
        xds: points,
        host_calls: Vec::new(),
        instructions: Vec::new(),
        pushes: Vec::new(),
        floor_bytes: None,
    };
    let out = opts.out.clone().unwrap_or_else(|| root.join("bench/results"));
    let written = report::write(&data, &out)?;
    eprintln!("\n{}", written.summary);
    eprintln!("report: {}\n        {}", written.markdown.display(), written.json.display());
    Ok(())
}
