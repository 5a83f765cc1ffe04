//! The xds-ext scale scenario (issue 7): N simulated ECDS clients against the
//! real `xds-ext serve`, over the real gRPC protocol.
//!
//! Each simulated proxy opens one state-of-the-world `StreamExtensionConfigs`
//! stream (many streams multiplexed over one HTTP/2 connection per
//! `--xds-per-conn` streams), with a distinct node id and Istio metadata drawn
//! from a modest number of label sets, subscribes to `switchyard.routing` and
//! ACKs every response. Once all are synced, the bookinfo VirtualService is
//! edited (jason's subset v2 → v3 and back) and each stream's time from the
//! file write to receiving the new version and queueing its ACK is recorded.
//! xds-ext's directory watch (inotify, 100 ms of quiet before a reload) is
//! part of that latency.
//!
//! After the stream points, the policy-size scenario (issue 16): a fresh
//! xds-ext with one stream per label set, then a VirtualService of 10 000
//! rules, a refused over-limit file left in the directory, and a large file
//! refused after parsing that comes and goes. It measures RSS over the fixed
//! base against the policy's size, CPU while nothing changes, and the memory
//! left once the refused file is gone.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::load::f64_or_nan;
use crate::sys;

pub const RESOURCE: &str = "switchyard.routing";
pub const TYPE_URL: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
/// The bookinfo files in the served config directory; the last one is edited.
const BOOKINFO: [&str; 3] = ["services.yaml", "destination-rule-all.yaml", VIRTUAL_SERVICE];
const VIRTUAL_SERVICE: &str = "virtual-service-reviews-test-v2.yaml";
const APPS: [&str; 5] = ["productpage", "details", "ratings", "reviews", "httpbin"];

/// What to run.
#[derive(Debug, Clone)]
pub struct XdsOpts {
    /// Stream counts, one xds-ext process each.
    pub streams: Vec<usize>,
    /// VirtualService edits per stream count.
    pub rounds: usize,
    /// Streams per HTTP/2 connection.
    pub per_conn: usize,
    /// Distinct (app, version) label sets over the streams.
    pub label_sets: usize,
    /// Longest wait for all streams to sync or to see one change.
    pub timeout: Duration,
    pub xds_ext: Option<PathBuf>,
}

/// One VirtualService edit, over all streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XdsRound {
    pub round: usize,
    /// e.g. `jason v2 → v3`.
    pub change: String,
    /// Streams that received and ACKed the new version within the timeout.
    pub acked: usize,
    pub missing: usize,
    /// Responses received in the round beyond one per stream (0 expected).
    pub extra_pushes: usize,
    /// File write → response received and ACK queued, over the streams, ms.
    #[serde(deserialize_with = "f64_or_nan")]
    pub min_ms: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p50_ms: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p99_ms: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub max_ms: f64,
}

/// One stream count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XdsPoint {
    /// The xds-ext binary measured (a debug or a release build).
    #[serde(default)]
    pub xds_ext: String,
    pub streams: usize,
    pub connections: usize,
    pub label_sets: usize,
    /// First stream opened → every stream's first response ACKed, s.
    pub sync_s: f64,
    /// xds-ext CPU over the sync, s.
    pub sync_cpu_s: f64,
    pub rounds: Vec<XdsRound>,
    /// The measured window (all rounds, with their pauses), s.
    pub window_s: f64,
    /// xds-ext CPU over the window, s (schedstat, else /proc/<pid>/stat).
    pub cpu_s: f64,
    /// The same from /proc/<pid>/stat utime+stime.
    pub cpu_stat_s: f64,
    /// The bench's own CPU over the window (the simulated clients share the machine), s.
    pub client_cpu_s: f64,
    /// xds-ext VmRSS once all streams are synced, MiB.
    pub rss_synced_mib: f64,
    /// xds-ext VmRSS after the rounds, MiB.
    pub rss_mib: f64,
    /// xds-ext VmHWM after the rounds, MiB.
    pub hwm_mib: f64,
    /// The policy-size scenario, run once after the stream points (on the last point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySize>,
}

/// The policy-size scenario: what a large policy and large refused files
/// cost xds-ext in memory and CPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicySize {
    pub xds_ext: String,
    /// Streams, one per distinct workload (label set): each renders the policy.
    pub streams: usize,
    pub rules: usize,
    /// The policy file's size, bytes.
    pub policy_bytes: u64,
    /// VmRSS with bookinfo's policy and every stream synced, MiB.
    pub rss_base_mib: f64,
    /// VmRSS once every stream has the large policy, MiB (and VmHWM so far).
    pub rss_policy_mib: f64,
    pub hwm_policy_mib: f64,
    /// Policy written → every stream received its new version, s.
    pub push_s: f64,
    /// xds-ext CPU over an idle window with the large policy in force, s.
    pub idle_cpu_s: f64,
    pub idle_window_s: f64,
    /// A file over xds-ext's size limit left in the directory: its size, and
    /// xds-ext's CPU over an idle window while it sits there, s.
    pub oversized_bytes: u64,
    pub oversized_cpu_s: f64,
    /// A file under the limit that parses and is refused (an invalid rule at
    /// its end): its size, VmRSS while it is there and after it is removed, MiB.
    pub refused_bytes: u64,
    pub rss_refused_mib: f64,
    pub rss_after_refused_mib: f64,
    /// xds-ext's counters at the end: loads, files read, files parsed.
    pub reloads: u64,
    pub files_read: u64,
    pub files_parsed: u64,
}

impl XdsPoint {
    /// The round with the highest p99 (the one a target is judged on).
    pub fn worst(&self) -> Option<&XdsRound> {
        self.rounds.iter().max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
    }
    pub fn missing(&self) -> usize {
        self.rounds.iter().map(|r| r.missing).sum()
    }
}

/// `1000,5000,10000` (or `none`) into stream counts.
pub fn parse_streams(s: &str) -> Result<Vec<usize>> {
    if s.is_empty() || s == "none" || s == "0" {
        return Ok(Vec::new());
    }
    s.split(',').map(|p| p.trim().parse::<usize>().with_context(|| format!("{p:?} is not a stream count"))).collect()
}

/// Raises the soft open-files limit to the hard one (children inherit it).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct passed, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Runs every stream count of `opts`, each against a fresh xds-ext.
pub fn run(opts: &XdsOpts, root: &Path, scratch: &Path) -> Result<Vec<XdsPoint>> {
    if opts.streams.is_empty() {
        return Ok(Vec::new());
    }
    let bin = opts.xds_ext.clone().unwrap_or_else(|| root.join("target/release/xds-ext"));
    if !sys::is_executable(&bin) {
        bail!(
            "{} not found: run `cargo build --release -p xds-ext` (make bench does), or pass --xds-ext",
            bin.display()
        );
    }
    let modules = root.join("target/switchyard");
    let nofile = raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let mut points = Vec::new();
    for &n in &opts.streams {
        let need = (n / opts.per_conn.max(1) + 64) as u64;
        if nofile < need {
            eprintln!("  note: open-files limit {nofile} may be too low for {n} streams");
        }
        eprintln!(
            "xds-ext scale: {n} ECDS streams, {} per connection, {} label sets, {} rounds …",
            opts.per_conn, opts.label_sets, opts.rounds
        );
        let dir = scratch.join(format!("xds-{n}"));
        let point = runtime.block_on(point(opts, n, &bin, &modules, root, &dir))?;
        for r in &point.rounds {
            eprintln!(
                "  [xds {n}] round {} ({}): p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  acked {}/{}{}",
                r.round + 1,
                r.change,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.acked,
                n,
                if r.extra_pushes > 0 { format!("  ({} extra pushes)", r.extra_pushes) } else { String::new() }
            );
        }
        eprintln!(
            "  [xds {n}] synced in {:.1} s; xds-ext CPU {:.2} s over {:.1} s; RSS {:.1} MiB (synced {:.1}, peak {:.1})",
            point.sync_s, point.cpu_s, point.window_s, point.rss_mib, point.rss_synced_mib, point.hwm_mib
        );
        points.push(point);
    }
    eprintln!("xds-ext policy size: {} streams, {POLICY_RULES} rules, refused files …", opts.label_sets);
    let policy = runtime.block_on(policy_size(opts, &bin, &modules, root, &scratch.join("xds-policy")))?;
    eprintln!(
        "  [xds policy] RSS {:.1} MiB base, {:.1} MiB with {:.2} MB of policy ({:.1}x its size over the base); \
         idle CPU {:.3} s over {:.0} s, {:.3} s beside a refused {:.0} MB file; RSS {:.1} MiB with a refused \
         {:.1} MB file, {:.1} MiB once it is gone",
        policy.rss_base_mib,
        policy.rss_policy_mib,
        policy.policy_bytes as f64 / 1e6,
        growth_ratio(&policy),
        policy.idle_cpu_s,
        policy.idle_window_s,
        policy.oversized_cpu_s,
        policy.oversized_bytes as f64 / 1e6,
        policy.rss_refused_mib,
        policy.refused_bytes as f64 / 1e6,
        policy.rss_after_refused_mib,
    );
    if let Some(last) = points.last_mut() {
        last.policy = Some(policy);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(points)
}

/// The xds-ext child: stopped (SIGTERM, then SIGKILL) when dropped; its
/// stderr is drained by a thread that keeps the last lines.
struct XdsExt {
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl XdsExt {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_tail(&self) -> String {
        self.tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default()
    }
}

impl Drop for XdsExt {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts xds-ext on free ports: the process, its gRPC and its admin address.
fn start_xds_ext(bin: &Path, config_dir: &Path, modules: &Path) -> Result<(XdsExt, String, String)> {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--config-dir")
        .arg(config_dir)
        .args(["--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--modules"])
        .arg(modules)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().context("xds-ext stderr")?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = std::sync::mpsc::channel::<(bool, String)>();
    let keep = tail.clone();
    std::thread::spawn(move || {
        // Every stream logs a line on connect: keep draining, keep the tail.
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            for (grpc, marker) in [(true, "grpc listening on "), (false, "admin listening on ")] {
                if let Some(addr) =
                    line.split_once(marker).and_then(|(_, a)| a.split_whitespace().next()).map(str::to_string)
                {
                    let _ = tx.send((grpc, addr));
                }
            }
            if let Ok(mut t) = keep.lock() {
                if t.len() == 30 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    });
    let proc = XdsExt { child, tail };
    let (mut grpc, mut admin) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while grpc.is_none() || admin.is_none() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok((true, addr)) => grpc = Some(addr),
            Ok((false, addr)) => admin = Some(addr),
            Err(_) => bail!("xds-ext printed no `grpc/admin listening on` lines in 30 s\n{}", proc.log_tail()),
        }
    }
    Ok((proc, grpc.unwrap_or_default(), admin.unwrap_or_default()))
}

fn node(i: usize, label_sets: usize) -> Node {
    let set = i % label_sets.max(1);
    let app = APPS[set % APPS.len()];
    let version = format!("v{}", set / APPS.len() + 1);
    let s = |v: &str| Value { kind: Some(Kind::StringValue(v.to_string())) };
    let labels = Struct { fields: [("app".to_string(), s(app)), ("version".to_string(), s(&version))].into() };
    let metadata = Struct {
        fields: [
            ("NAMESPACE".to_string(), s("default")),
            ("WORKLOAD_NAME".to_string(), s(&format!("{app}-{version}"))),
            ("LABELS".to_string(), Value { kind: Some(Kind::StructValue(labels)) }),
        ]
        .into(),
    };
    Node {
        id: format!(
            "sidecar~10.{}.{}.{}~{app}-{version}-{i}.default~default.svc.cluster.local",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ),
        cluster: format!("{app}.default"),
        metadata: Some(metadata),
        ..Default::default()
    }
}

enum Event {
    /// A response with resources arrived and its ACK was queued.
    Acked {
        idx: usize,
        version: String,
        at: Instant,
    },
    Failed {
        idx: usize,
        error: String,
    },
}

fn request(version: String, nonce: String) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version,
        response_nonce: nonce,
        resource_names: vec![RESOURCE.to_string()],
        type_url: TYPE_URL.to_string(),
        ..Default::default()
    }
}

async fn stream(channel: Channel, idx: usize, node: Node, events: mpsc::UnboundedSender<Event>) {
    let fail = |error: String| {
        let _ = events.send(Event::Failed { idx, error });
    };
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(4);
    let mut first = request(String::new(), String::new());
    first.node = Some(node);
    if tx.send(first).await.is_err() {
        return;
    }
    let mut client = ExtensionConfigDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut inbound = match client.stream_extension_configs(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return fail(format!("opening: {e}")),
    };
    loop {
        match inbound.message().await {
            Ok(Some(r)) => {
                let empty = r.resources.is_empty();
                let version = r.version_info.clone();
                if tx.send(request(r.version_info, r.nonce)).await.is_err() {
                    return;
                }
                let at = Instant::now();
                if empty {
                    return fail("a response without resources".into());
                }
                let _ = events.send(Event::Acked { idx, version, at });
            }
            Ok(None) => return fail("the server ended the stream".into()),
            Err(e) => return fail(format!("{e}")),
        }
    }
}

/// Nearest-rank percentile of sorted `v`, ms.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

async fn point(opts: &XdsOpts, n: usize, bin: &Path, modules: &Path, root: &Path, dir: &Path) -> Result<XdsPoint> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in BOOKINFO {
        let from = root.join("examples/bookinfo").join(f);
        std::fs::copy(&from, dir.join(f)).with_context(|| format!("copying {}", from.display()))?;
    }
    let vs_path = dir.join(VIRTUAL_SERVICE);
    let original = std::fs::read_to_string(&vs_path)?;
    if !original.contains("subset: v2") {
        bail!("{VIRTUAL_SERVICE} has no `subset: v2` to edit");
    }
    let (xds, addr, _admin) = start_xds_ext(bin, dir, modules)?;
    let pid = xds.pid();

    let per_conn = opts.per_conn.max(1);
    let conns = n.div_ceil(per_conn);
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to xds-ext at {addr}"))?;
        channels.push(ch);
    }

    let (etx, mut erx) = mpsc::unbounded_channel::<Event>();
    let mut tasks = tokio::task::JoinSet::new();
    let c_sync = sys::cpu(pid)?;
    let t_sync = Instant::now();
    for i in 0..n {
        tasks.spawn(stream(channels[i / per_conn].clone(), i, node(i, opts.label_sets), etx.clone()));
    }
    drop(etx);
    let mut latest: Vec<Option<String>> = vec![None; n];
    let mut synced = 0;
    let deadline = t_sync + opts.timeout.max(Duration::from_secs(60));
    while synced < n {
        let ev = tokio::time::timeout_at(deadline.into(), erx.recv()).await;
        match ev {
            Ok(Some(Event::Acked { idx, version, .. })) => {
                if latest[idx].is_none() {
                    synced += 1;
                }
                latest[idx] = Some(version);
            }
            Ok(Some(Event::Failed { idx, error })) => {
                bail!("stream {idx}: {error}\n--- xds-ext log ---\n{}", xds.log_tail())
            }
            Ok(None) => bail!("all streams ended"),
            Err(_) => bail!("only {synced} of {n} streams synced in {:?}\n{}", opts.timeout, xds.log_tail()),
        }
    }
    let sync_s = t_sync.elapsed().as_secs_f64();
    let sync_cpu_s = c_sync.secs_until(&sys::cpu(pid)?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_synced, _) = sys::rss_kib(pid)?;

    let c0 = sys::cpu(pid)?;
    let me0 = sys::cpu(std::process::id())?;
    let t0 = Instant::now();
    let mut rounds = Vec::new();
    for round in 0..opts.rounds {
        // Let the previous round's stragglers and the watcher settle.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(ev) = erx.try_recv() {
            if let Event::Acked { idx, version, .. } = ev {
                latest[idx] = Some(version);
            }
        }
        let (from, to) = if round % 2 == 0 { ("v2", "v3") } else { ("v3", "v2") };
        let text = if round % 2 == 0 { original.replacen("subset: v2", "subset: v3", 1) } else { original.clone() };
        let before = latest.clone();
        let mut done: Vec<Option<f64>> = vec![None; n];
        let mut acked = 0;
        let mut extra = 0;
        let start = Instant::now();
        std::fs::write(&vs_path, &text).with_context(|| format!("writing {}", vs_path.display()))?;
        let deadline = start + opts.timeout;
        while acked < n {
            match tokio::time::timeout_at(deadline.into(), erx.recv()).await {
                Ok(Some(Event::Acked { idx, version, at })) => {
                    if done[idx].is_none() && Some(&version) != before[idx].as_ref() {
                        done[idx] = Some(at.duration_since(start).as_secs_f64() * 1e3);
                        acked += 1;
                    } else {
                        extra += 1;
                    }
                    latest[idx] = Some(version);
                }
                Ok(Some(Event::Failed { idx, error })) => {
                    bail!("stream {idx}: {error}\n--- xds-ext log ---\n{}", xds.log_tail())
                }
                Ok(None) => bail!("all streams ended"),
                Err(_) => break,
            }
        }
        let mut ms: Vec<f64> = done.iter().flatten().copied().collect();
        ms.sort_by(f64::total_cmp);
        rounds.push(XdsRound {
            round,
            change: format!("jason {from} → {to}"),
            acked,
            missing: n - acked,
            extra_pushes: extra,
            min_ms: pct(&ms, 0.0),
            p50_ms: pct(&ms, 50.0),
            p99_ms: pct(&ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        });
    }
    let window_s = t0.elapsed().as_secs_f64();
    let c1 = sys::cpu(pid)?;
    let me1 = sys::cpu(std::process::id())?;
    let (rss, hwm) = sys::rss_kib(pid)?;
    std::fs::write(&vs_path, &original)?;
    tasks.abort_all();
    drop(channels);
    drop(xds);
    let shown = bin.strip_prefix(root).unwrap_or(bin).display().to_string();
    Ok(XdsPoint {
        xds_ext: shown,
        streams: n,
        connections: conns,
        label_sets: opts.label_sets.min(n),
        sync_s,
        sync_cpu_s,
        rounds,
        window_s,
        cpu_s: c0.secs_until(&c1),
        cpu_stat_s: c0.stat_secs_until(&c1),
        client_cpu_s: me0.secs_until(&me1),
        rss_synced_mib: rss_synced as f64 / 1024.0,
        rss_mib: rss as f64 / 1024.0,
        hwm_mib: hwm as f64 / 1024.0,
        policy: None,
    })
}

// --- policy size ------------------------------------------------------------

/// Rules of the large VirtualService.
const POLICY_RULES: usize = 10_000;
/// The large policy's file, next to bookinfo's.
const POLICY_FILE: &str = "ratings-scale.yaml";
/// Over xds-ext's 8 MiB file limit: refused by its stat, never read.
const OVERSIZED_BYTES: usize = 10 << 20;
/// Under the limit: read, parsed, then refused for its last rule.
const REFUSED_BYTES: usize = 7_500_000;
/// About the size of one rule of [`scale_policy`] (with five-digit numbers).
const RULE_BYTES: usize = 160;
/// How long CPU is watched while nothing changes.
const IDLE_WINDOW: Duration = Duration::from_secs(3);

/// A VirtualService for `host` with `rules` header-and-prefix rules (~160
/// bytes each), then a catch-all; `bad_last`: the last rule has a negative
/// timeout, so the whole document is refused after it was parsed.
fn scale_policy(name: &str, host: &str, rules: usize, bad_last: bool) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts:\n  \
         - {host}\n  http:\n"
    );
    for i in 0..rules {
        let _ = write!(
            s,
            "  - name: r{i}\n    match:\n    - uri: {{prefix: /p{i}/}}\n      headers: {{end-user: {{exact: user{i}}}}}\n    \
             route:\n    - destination: {{host: {host}, subset: v1}}\n"
        );
    }
    if bad_last {
        s.push_str("    timeout: -1s\n");
    }
    let _ = write!(s, "  - route:\n    - destination: {{host: {host}, subset: v1}}\n");
    s
}

/// GET on xds-ext's admin address (HTTP/1.0: the server closes when done).
fn admin_get(admin: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(admin).with_context(|| format!("connecting to admin {admin}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).with_context(|| format!("reading admin {path}"))?;
    Ok(reply.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
}

/// A counter from xds-ext's `/metrics`.
fn admin_counter(admin: &str, name: &str) -> Result<u64> {
    let text = admin_get(admin, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("no {name} in xds-ext's /metrics"))
}

/// Waits until `/debug/config` does (or does not) mention `text`.
async fn wait_config(admin: &str, text: &str, present: bool, timeout: Duration, xds: &XdsExt) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let config = || admin_get(admin, "/debug/config").with_context(|| format!("xds-ext's log:\n{}", xds.log_tail()));
    while config()?.contains(text) != present {
        if Instant::now() > deadline {
            let what = if present { "to report" } else { "to stop reporting" };
            bail!("xds-ext did not come {what} {text:?} within {timeout:?}\n{}", xds.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Waits until every stream received a version other than the one in
/// `latest` (updated as responses arrive); the seconds it took from `start`.
async fn wait_all_new(
    erx: &mut mpsc::UnboundedReceiver<Event>,
    latest: &mut [Option<String>],
    start: Instant,
    timeout: Duration,
    xds: &XdsExt,
) -> Result<f64> {
    let before = latest.to_vec();
    let mut left = latest.len();
    let mut done = vec![false; latest.len()];
    let deadline = start + timeout;
    while left > 0 {
        match tokio::time::timeout_at(deadline.into(), erx.recv()).await {
            Ok(Some(Event::Acked { idx, version, .. })) => {
                if !done[idx] && Some(&version) != before[idx].as_ref() {
                    done[idx] = true;
                    left -= 1;
                }
                latest[idx] = Some(version);
            }
            Ok(Some(Event::Failed { idx, error })) => bail!("stream {idx}: {error}\n{}", xds.log_tail()),
            Ok(None) => bail!("all streams ended"),
            Err(_) => bail!("{left} streams did not receive a new version in {timeout:?}\n{}", xds.log_tail()),
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// xds-ext's CPU over `window` of nothing changing, s.
async fn idle_cpu(pid: u32, window: Duration) -> Result<f64> {
    let c0 = sys::cpu(pid)?;
    tokio::time::sleep(window).await;
    Ok(c0.secs_until(&sys::cpu(pid)?))
}

async fn policy_size(opts: &XdsOpts, bin: &Path, modules: &Path, root: &Path, dir: &Path) -> Result<PolicySize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for f in BOOKINFO {
        let from = root.join("examples/bookinfo").join(f);
        std::fs::copy(&from, dir.join(f)).with_context(|| format!("copying {}", from.display()))?;
    }
    let (xds, addr, admin) = start_xds_ext(bin, dir, modules)?;
    let pid = xds.pid();
    let n = opts.label_sets.max(1);
    let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
    let (etx, mut erx) = mpsc::unbounded_channel::<Event>();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        tasks.spawn(stream(channel.clone(), i, node(i, n), etx.clone()));
    }
    drop(etx);
    let mut latest: Vec<Option<String>> = vec![None; n];
    wait_all_new(&mut erx, &mut latest, Instant::now(), opts.timeout.max(Duration::from_secs(60)), &xds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_base, _) = sys::rss_kib(pid)?;

    let policy = scale_policy("ratings-scale", "ratings", POLICY_RULES, false);
    let start = Instant::now();
    std::fs::write(dir.join(POLICY_FILE), &policy)?;
    let push_s = wait_all_new(&mut erx, &mut latest, start, opts.timeout.max(Duration::from_secs(120)), &xds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_policy, hwm_policy) = sys::rss_kib(pid)?;
    let idle_cpu_s = idle_cpu(pid, IDLE_WINDOW).await?;

    // Refused by its size, and left there.
    let oversized = dir.join("oversized.yaml");
    std::fs::write(&oversized, "# padding\n".repeat(OVERSIZED_BYTES / 10))?;
    wait_config(&admin, "over the 8388608-byte limit", true, opts.timeout, &xds).await?;
    let oversized_cpu_s = idle_cpu(pid, IDLE_WINDOW).await?;
    std::fs::remove_file(&oversized)?;
    wait_config(&admin, "oversized.yaml", false, opts.timeout, &xds).await?;

    // Refused after parsing, then removed.
    let rules = REFUSED_BYTES / RULE_BYTES;
    let refused_text = scale_policy("details-refused", "details", rules, true);
    let refused = dir.join("refused.yaml");
    std::fs::write(&refused, &refused_text)?;
    wait_config(&admin, "refused.yaml", true, opts.timeout.max(Duration::from_secs(60)), &xds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_refused, _) = sys::rss_kib(pid)?;
    std::fs::remove_file(&refused)?;
    wait_config(&admin, "refused.yaml", false, opts.timeout, &xds).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_after, _) = sys::rss_kib(pid)?;

    let reloads = admin_counter(&admin, "xds_ext_config_reloads_total")?;
    let files_read = admin_counter(&admin, "xds_ext_config_files_read_total")?;
    let files_parsed = admin_counter(&admin, "xds_ext_config_files_parsed_total")?;
    tasks.abort_all();
    drop(xds);
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(PolicySize {
        xds_ext: bin.strip_prefix(root).unwrap_or(bin).display().to_string(),
        streams: n,
        rules: POLICY_RULES,
        policy_bytes: policy.len() as u64,
        rss_base_mib: mib(rss_base),
        rss_policy_mib: mib(rss_policy),
        hwm_policy_mib: mib(hwm_policy),
        push_s,
        idle_cpu_s,
        idle_window_s: IDLE_WINDOW.as_secs_f64(),
        oversized_bytes: OVERSIZED_BYTES as u64,
        oversized_cpu_s,
        refused_bytes: refused_text.len() as u64,
        rss_refused_mib: mib(rss_refused),
        rss_after_refused_mib: mib(rss_after),
        reloads,
        files_read,
        files_parsed,
    })
}

/// RSS over the fixed base, in units of the policy's size.
fn growth_ratio(p: &PolicySize) -> f64 {
    (p.rss_policy_mib - p.rss_base_mib) * 1_048_576.0 / p.policy_bytes.max(1) as f64
}

// --- report -----------------------------------------------------------------

/// 150 MB (10^6 bytes), the RSS limit.
const RSS_LIMIT_MB: f64 = 150.0;
const P99_LIMIT_MS: f64 = 1000.0;
const MIB_TO_MB: f64 = 1.048_576;

/// Issue 7's row: at 10 000 streams, the worst round's p99 ≤ 1 s with every
/// stream ACKing, and xds-ext's peak RSS (VmHWM) ≤ 150 MB.
pub fn target(points: &[XdsPoint]) -> crate::report::Target {
    let mut t = crate::report::Target {
        scenario: "xds-ext, 10 000 ECDS streams".into(),
        target: "change → all ACKed p99 ≤ 1 s, RSS ≤ 150 MB".into(),
        measured: "n/a".into(),
        limit: P99_LIMIT_MS,
        value: None,
        verdict: "not measured".into(),
        note: match points.iter().map(|p| p.streams).max() {
            Some(m) => format!("largest point measured: {m} streams"),
            None => "run `switchyard-bench xds` (or the full `make bench`)".into(),
        },
        arms: None,
    };
    let Some(p) = points.iter().find(|p| p.streams == 10_000) else {
        return t;
    };
    let Some(w) = p.worst() else {
        return t;
    };
    let peak_mb = p.hwm_mib * MIB_TO_MB;
    let missing = p.missing();
    t.measured = format!(
        "p99 {:.0} ms (worst of {} rounds), peak RSS {:.0} MB{}",
        w.p99_ms,
        p.rounds.len(),
        peak_mb,
        if missing > 0 { format!(", {missing} stream-rounds never ACKed") } else { String::new() }
    );
    t.value = Some(w.p99_ms);
    let met = missing == 0 && w.p99_ms <= P99_LIMIT_MS && peak_mb <= RSS_LIMIT_MB;
    t.verdict = if met { "met" } else { "MISSED" }.into();
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    t.note = format!(
        "latency {}, RSS {}{}; latency includes xds-ext's 100 ms watch debounce; xds-ext: `{}`",
        ok(w.p99_ms <= P99_LIMIT_MS),
        ok(peak_mb <= RSS_LIMIT_MB),
        if missing > 0 { ", not every stream ACKed" } else { "" },
        p.xds_ext
    );
    t
}

/// The markdown section (empty without points).
pub fn markdown(points: &[XdsPoint]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    if points.is_empty() {
        return o;
    }
    let _ = writeln!(o, "## xds-ext scale: simulated ECDS streams\n");
    let _ = writeln!(
        o,
        "The real `xds-ext serve` (`{}`{}) over the bookinfo config (services, \
         destination rules, `{VIRTUAL_SERVICE}`), a fresh process per point. The bench opens N state-of-the-world \
         `StreamExtensionConfigs` streams over tonic ({} per HTTP/2 connection), each with its own node id and Istio \
         metadata (`NAMESPACE: default`, `LABELS: {{app, version}}`) from {} distinct label sets, subscribed to \
         `{RESOURCE}`, ACKing every response. Each round edits the VirtualService (jason's subset v2 ↔ v3); a \
         stream's latency is the time from the file write to it receiving the new version and queueing its ACK. \
         **xds-ext's directory watch is part of that latency**: inotify tells it of the write, and it reloads \
         after 100 ms without further change, so ~100 ms of every figure is the debounce. The simulated clients run in the \
         bench process on the same 2 cores as xds-ext (their CPU is in the last column). CPU is xds-ext's \
         (`/proc/<pid>/task/*/schedstat`, utime+stime alongside in the JSON) over the rounds, including the 300 ms \
         pause before each; RSS is VmRSS once synced / after the rounds / VmHWM.\n",
        points.first().map_or("", |p| p.xds_ext.as_str()),
        match points.first().map(|p| p.xds_ext.as_str()) {
            Some(b) if b.contains("/debug/") => ", a debug build: unoptimized, slower than a release build",
            Some(b) if b.contains("/release/") => ", a release build",
            _ => "",
        },
        points.first().map_or(0, |p| p.streams.div_ceil(p.connections.max(1))),
        points.first().map_or(0, |p| p.label_sets),
    );
    let _ = writeln!(
        o,
        "| streams | conns | sync | worst round p50 / p99 / max | never ACKed | xds-ext CPU (rounds) | CPU per \
         stream-push | RSS synced / after / peak | peak RSS per stream | bench CPU |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---|---:|---:|---:|---|---:|---:|");
    for p in points {
        let pushes = p.rounds.iter().map(|r| r.acked).sum::<usize>().max(1);
        let (p50, p99, max) = p.worst().map_or((f64::NAN, f64::NAN, f64::NAN), |w| (w.p50_ms, w.p99_ms, w.max_ms));
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} s ({:.1} s CPU) | {:.0} / {:.0} / {:.0} ms | {} | {:.2} s over {:.1} s | {:.0} µs | \
             {:.1} / {:.1} / {:.1} MiB | {:.1} KiB | {:.2} s |",
            p.streams,
            p.connections,
            p.sync_s,
            p.sync_cpu_s,
            p50,
            p99,
            max,
            p.missing(),
            p.cpu_s,
            p.window_s,
            p.cpu_s / pushes as f64 * 1e6,
            p.rss_synced_mib,
            p.rss_mib,
            p.hwm_mib,
            p.hwm_mib * 1024.0 / p.streams.max(1) as f64,
            p.client_cpu_s,
        );
    }
    let _ = writeln!(o, "\nPer round (file write → new version received and ACK queued, over the streams):\n");
    let _ = writeln!(o, "| streams | round | change | min | p50 | p99 | max | ACKed | extra pushes |");
    let _ = writeln!(o, "|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for p in points {
        for r in &p.rounds {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {}/{} | {} |",
                p.streams,
                r.round + 1,
                r.change,
                r.min_ms,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.acked,
                p.streams,
                r.extra_pushes
            );
        }
    }
    o.push_str(&istiod_comparison(points));
    if let Some(p) = points.iter().find_map(|p| p.policy.as_ref()) {
        o.push_str(&policy_markdown(p));
    }
    o
}

/// Issue 16's bounds: RSS over the base within 20x the policy's size; the
/// memory a refused file took given back once it is gone (what is left
/// within a tenth of its size); no CPU while nothing changes.
const GROWTH_LIMIT: f64 = 20.0;
const KEPT_LIMIT: f64 = 0.1;
const IDLE_CPU_LIMIT: f64 = 0.01;

fn policy_markdown(p: &PolicySize) -> String {
    let ok = |b: bool| if b { "met" } else { "MISSED" };
    let growth = growth_ratio(p);
    let kept_mib = (p.rss_after_refused_mib - p.rss_policy_mib).max(0.0);
    let kept = kept_mib * 1_048_576.0 / p.refused_bytes.max(1) as f64;
    let idle = p.idle_cpu_s.max(p.oversized_cpu_s) / p.idle_window_s.max(1e-9);
    format!(
        "\n## xds-ext policy size\n\n\
         A fresh `xds-ext serve` (`{}`) with bookinfo's policy and {} streams, one per label set (each a workload \
         of its own, so each renders the policy). Then `{POLICY_FILE}`: a VirtualService of {} rules (a prefix and \
         a header match each), {:.2} MB; then a file over the 8 MiB limit ({:.1} MB) left in the directory; then \
         a {:.1} MB VirtualService refused after parsing (an invalid timeout in its last rule), which is then \
         removed. RSS is VmRSS 1 s after each step; CPU is xds-ext's over {:.0} s of nothing changing.\n\n\
         | | value | bound | verdict |\n|---|---:|---|---|\n\
         | RSS: base / with the policy (peak so far) | {:.1} / {:.1} ({:.1}) MiB | | |\n\
         | RSS over the base per byte of policy | {growth:.1}x | <= {GROWTH_LIMIT:.0}x | {} |\n\
         | policy written -> all {} streams have it | {:.2} s | | |\n\
         | CPU idle with the policy / beside the over-limit file | {:.3} / {:.3} s | <= {:.0}% of the window | {} |\n\
         | RSS with the refused file / after it went | {:.1} / {:.1} MiB | kept <= {:.0}% of its size | {} |\n\
         | xds-ext counters: loads / files read / files parsed | {} / {} / {} | | |\n",
        p.xds_ext,
        p.streams,
        p.rules,
        p.policy_bytes as f64 / 1e6,
        p.oversized_bytes as f64 / 1e6,
        p.refused_bytes as f64 / 1e6,
        p.idle_window_s,
        p.rss_base_mib,
        p.rss_policy_mib,
        p.hwm_policy_mib,
        ok(growth <= GROWTH_LIMIT),
        p.streams,
        p.push_s,
        p.idle_cpu_s,
        p.oversized_cpu_s,
        IDLE_CPU_LIMIT * 100.0,
        ok(idle <= IDLE_CPU_LIMIT),
        p.rss_refused_mib,
        p.rss_after_refused_mib,
        KEPT_LIMIT * 100.0,
        ok(kept <= KEPT_LIMIT),
        p.reloads,
        p.files_read,
        p.files_parsed,
    )
}

/// istiod's published figure (Istio 1.12–1.16 "Performance and scalability":
/// 1 000 services, 2 000 sidecars, 70 000 mesh-wide rps; istiod "uses 1
/// vCPU and 1.5 GB of memory").
const ISTIOD_MB: f64 = 1500.0;
const ISTIOD_SIDECARS: f64 = 2000.0;
const ISTIOD_SOURCE: &str = "https://istio.io/v1.16/docs/ops/deployment/performance-and-scalability/";
/// An Envoy with all Switchyard filters opens one ECDS stream per filter
/// (Envoy 1.40 does not share a stream between ECDS subscriptions).
const STREAMS_PER_PROXY: f64 = 5.0;

/// Memory per proxy, xds-ext against istiod, from the largest point.
fn istiod_comparison(points: &[XdsPoint]) -> String {
    let Some(p) = points.iter().max_by_key(|p| p.streams) else { return String::new() };
    let per_stream_mb = p.hwm_mib * 1.048_576 / p.streams.max(1) as f64;
    let per_proxy_kb = per_stream_mb * STREAMS_PER_PROXY * 1000.0;
    let istiod_kb = ISTIOD_MB / ISTIOD_SIDECARS * 1000.0;
    format!(
        "\n**Compared with istiod.** Istio's published figure ([Performance and scalability]({ISTIOD_SOURCE}), \
         Istio 1.12–1.16): istiod uses 1 vCPU and 1.5 GB for a mesh of 1 000 services and 2 000 sidecars, \
         {istiod_kb:.0} KB per sidecar. Here: {:.1} KB per stream at {} streams (peak RSS over streams, the process's \
         fixed part included); a sidecar with all five Switchyard filters opens five ECDS streams, so \
         **{per_proxy_kb:.0} KB per proxy, {:.0}× less than istiod's per-sidecar figure**. Not like for like: \
         istiod builds and serves the whole xDS (listeners, routes, clusters, endpoints of 1 000 services) under \
         continuous churn; xds-ext serves five small ECDS resources rendered per workload. The ratio says xds-ext \
         adds little next to the control plane a mesh already runs, not that it would do istiod's job for less.\n",
        per_stream_mb * 1000.0,
        p.streams,
        istiod_kb / per_proxy_kb,
    )
}
