//! A real Envoy process for one test.
//!
//! Every address in a harness bootstrap is `127.0.0.1:0`; Envoy writes its real
//! admin address to a file, and each listener's real port is read back from
//! admin `/listeners?format=json`. Each instance lives in its own temp dir
//! (bootstrap, log, admin address), so tests run in parallel without clashes.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{workspace_root, HarnessError};

/// How many log lines an error or a failing test shows.
const LOG_TAIL_LINES: usize = 40;
/// The Envoy version this project targets (checked against `--version`).
const ENVOY_VERSION_MARK: &str = "/1.40.";

/// The filters' counter flush period (100 ms) with room for a busy machine.
const WASM_COUNTER_FLUSH: Duration = Duration::from_millis(300);

#[derive(Clone)]
enum Located {
    Ok(PathBuf),
    NotFound(PathBuf),
    Wrong(PathBuf, String),
    Io(String),
}

/// The Envoy binary: `$SWITCHYARD_ENVOY`, else `<workspace root>/.tools/bin/envoy`.
/// Checked once per test process to be Envoy 1.40.x.
pub fn envoy_binary() -> Result<PathBuf, HarnessError> {
    static LOCATED: OnceLock<Located> = OnceLock::new();
    let located = LOCATED.get_or_init(|| {
        let path = std::env::var_os("SWITCHYARD_ENVOY")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(".tools/bin/envoy"));
        if !path.is_file() {
            return Located::NotFound(path);
        }
        match Command::new(&path).arg("--version").output() {
            Err(e) => Located::Io(format!("running `{} --version`: {e}", path.display())),
            Ok(out) => {
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                if text.contains(ENVOY_VERSION_MARK) {
                    Located::Ok(path)
                } else {
                    Located::Wrong(path, text)
                }
            }
        }
    });
    match located.clone() {
        Located::Ok(p) => Ok(p),
        Located::NotFound(p) => Err(HarnessError::EnvoyNotFound(p)),
        Located::Wrong(path, found) => Err(HarnessError::WrongEnvoyVersion { path, found }),
        Located::Io(m) => Err(HarnessError::Other(m)),
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns children from one long-lived thread. `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked the child exits, so forking from a tokio worker or
/// a test thread could kill Envoy early; this thread lives as long as the test
/// process, so Envoy dies exactly when the test process does.
fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("switchyard-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap_or_else(|e| panic!("starting the spawner thread: {e}"));
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner.send((cmd, reply_tx)).map_err(|_| std::io::Error::other("spawner thread gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Options for starting an Envoy. `Envoy::builder(bootstrap)`.
#[derive(Debug, Clone)]
pub struct EnvoyBuilder {
    bootstrap: Value,
    concurrency: u32,
    log_level: String,
    component_log_level: Option<String>,
    extra_args: Vec<String>,
    ready_timeout: Duration,
}

impl EnvoyBuilder {
    pub fn new(bootstrap: Value) -> Self {
        EnvoyBuilder {
            bootstrap,
            concurrency: 1,
            log_level: std::env::var("SWITCHYARD_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            component_log_level: None,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(20),
        }
    }
    /// Worker threads (`--concurrency`), default 1.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }
    /// `-l`, default `info` (or `$SWITCHYARD_ENVOY_LOG_LEVEL`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.into();
        self
    }
    /// `--component-log-level`, e.g. `"wasm:debug,ext_config:debug"`.
    pub fn component_log_level(mut self, spec: &str) -> Self {
        self.component_log_level = Some(spec.into());
        self
    }
    /// Any further command-line argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.into());
        self
    }
    /// How long to wait for `/ready` == LIVE (or, expecting failure, for the exit). Default 20 s.
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = t;
        self
    }

    /// Starts Envoy and waits until it is LIVE and every listener has its port.
    pub async fn start(self) -> Result<Envoy, HarnessError> {
        let timeout = self.ready_timeout;
        let mut envoy = self.spawn()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = envoy.try_wait() {
                return Err(HarnessError::EnvoyStartup {
                    reason: format!("envoy exited with {status} before becoming ready"),
                    log_tail: envoy.log_tail(LOG_TAIL_LINES),
                });
            }
            if envoy.poll_ready().await {
                match envoy.read_listener_ports().await {
                    Ok(Some(ports)) => {
                        envoy.listeners = ports;
                        return Ok(envoy);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        return Err(HarnessError::EnvoyStartup {
                            reason: e.to_string(),
                            log_tail: envoy.log_tail(LOG_TAIL_LINES),
                        })
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::EnvoyStartup {
                    reason: format!("not ready (admin /ready != LIVE) after {timeout:?}"),
                    log_tail: envoy.log_tail(LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts Envoy expecting it to refuse the config and exit. Returns the
    /// exit status and the whole log; an error if Envoy became ready instead
    /// or did not exit within the timeout.
    pub async fn start_expect_failure(self) -> Result<(ExitStatus, String), HarnessError> {
        let timeout = self.ready_timeout;
        let mut envoy = self.spawn()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = envoy.try_wait() {
                return Ok((status, envoy.log()));
            }
            if envoy.poll_ready().await {
                return Err(HarnessError::EnvoyUnexpectedlyStarted { log_tail: envoy.log_tail(LOG_TAIL_LINES) });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::EnvoyStartup {
                    reason: format!("expected envoy to exit, still running after {timeout:?}"),
                    log_tail: envoy.log_tail(LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn spawn(self) -> Result<Envoy, HarnessError> {
        let binary = envoy_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("switchyard-envoy-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating the envoy temp dir", e))?;
        let root = dir.path().to_path_buf();
        let config = root.join("bootstrap.json");
        let text = serde_json::to_string_pretty(&self.bootstrap)
            .map_err(|e| HarnessError::Other(format!("serializing the bootstrap: {e}")))?;
        std::fs::write(&config, text).map_err(|e| HarnessError::io(format!("writing {}", config.display()), e))?;

        // Envoy logs to stderr, flushed line by line; `--log-path` would buffer
        // (flushed every 10 s) and lose the tail on SIGKILL or a crash.
        let stdout =
            std::fs::File::create(root.join("stdout.log")).map_err(|e| HarnessError::io("creating stdout.log", e))?;
        let stderr =
            std::fs::File::create(root.join("envoy.log")).map_err(|e| HarnessError::io("creating envoy.log", e))?;

        let mut cmd = Command::new(&binary);
        cmd.arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .arg("--concurrency")
            .arg(self.concurrency.to_string())
            .arg("-l")
            .arg(&self.log_level)
            .arg("--admin-address-path")
            .arg(root.join("admin.txt"));
        if let Some(spec) = &self.component_log_level {
            cmd.arg("--component-log-level").arg(spec);
        }
        cmd.args(&self.extra_args).current_dir(&root).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // SAFETY: the closure only makes async-signal-safe libc calls.
        let parent = unsafe { libc::getpid() };
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The test process died between fork and prctl: do not outlive it.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = spawn_child(cmd).map_err(|e| HarnessError::io(format!("starting {}", binary.display()), e))?;
        Ok(Envoy {
            child: Some(child),
            dir: Some(dir),
            root,
            admin: None,
            listeners: HashMap::new(),
            client: crate::http_client(),
        })
    }
}

/// A running Envoy. Dropping it kills the process (and so does the test
/// process dying). If the test is panicking, the drop prints Envoy's last log
/// lines to stderr.
pub struct Envoy {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    admin: Option<String>,
    listeners: HashMap<String, u16>,
    client: reqwest::Client,
}

impl Envoy {
    /// Starts Envoy with default options (1 worker, log level info).
    pub async fn start(bootstrap: Value) -> Result<Envoy, HarnessError> {
        EnvoyBuilder::new(bootstrap).start().await
    }

    /// A builder for non-default options.
    pub fn builder(bootstrap: Value) -> EnvoyBuilder {
        EnvoyBuilder::new(bootstrap)
    }

    /// Starts Envoy expecting it to refuse the config; `(exit status, log)`.
    pub async fn start_expect_failure(bootstrap: Value) -> Result<(ExitStatus, String), HarnessError> {
        EnvoyBuilder::new(bootstrap).start_expect_failure().await
    }

    /// `http://127.0.0.1:PORT` of the named listener. Panics on an unknown name.
    pub fn listener_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.listener_port(name))
    }

    /// The real port of the named listener. Panics on an unknown name.
    pub fn listener_port(&self, name: &str) -> u16 {
        match self.listeners.get(name) {
            Some(p) => *p,
            None => {
                let mut known: Vec<_> = self.listeners.keys().cloned().collect();
                known.sort();
                panic!("no listener named {name:?}; envoy has {known:?}")
            }
        }
    }

    /// All listeners: name → port.
    pub fn listener_ports(&self) -> &HashMap<String, u16> {
        &self.listeners
    }

    /// `http://127.0.0.1:PORT` of the admin interface.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin.as_deref().unwrap_or("127.0.0.1:0"))
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory (`VmRSS` of /proc/PID/status) in KiB; `None` once the
    /// process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        line.trim().trim_end_matches("kB").trim().parse().ok()
    }

    /// This instance's temp dir (bootstrap.json, envoy.log, admin.txt, ...).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Envoy's whole log so far (its stderr; plus stdout, if anything went there).
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(self.root.join("envoy.log")).unwrap_or_default();
        let stdout = std::fs::read_to_string(self.root.join("stdout.log")).unwrap_or_default();
        if !stdout.trim().is_empty() {
            log.push_str("\n--- stdout ---\n");
            log.push_str(&stdout);
        }
        log
    }

    /// The last `n` lines of [`Envoy::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// GET an admin path (e.g. `/clusters`), returning the body; errors on non-2xx.
    pub async fn admin_get(&self, path: &str) -> Result<String, HarnessError> {
        self.admin_call(reqwest::Method::GET, path).await
    }

    /// POST an admin path (e.g. `/logging?wasm=debug`, `/reset_counters`).
    pub async fn admin_post(&self, path: &str) -> Result<String, HarnessError> {
        self.admin_call(reqwest::Method::POST, path).await
    }

    async fn admin_call(&self, method: reqwest::Method, path: &str) -> Result<String, HarnessError> {
        let url = format!("{}{}", self.admin_url(), path);
        let resp = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| HarnessError::Admin(format!("{url}: {e}")))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| HarnessError::Admin(format!("{url}: reading body: {e}")))?;
        if !status.is_success() {
            return Err(HarnessError::Admin(format!("{url}: {status}: {body}")));
        }
        Ok(body)
    }

    /// Counters and gauges from `/stats?format=json` (histograms and text
    /// readouts skipped). Panics if the admin call fails.
    pub async fn stats(&self) -> HashMap<String, u64> {
        match self.try_stats().await {
            Ok(s) => s,
            Err(e) => panic!("{e}\n--- envoy log (last lines) ---\n{}", self.log_tail(LOG_TAIL_LINES)),
        }
    }

    /// [`Envoy::stats`] without the panic. Waits out the filters' counter
    /// flush first: they add up their counters in the module and hand them to
    /// Envoy every 100 ms (`switchyard_host::FLUSH_PERIOD`), so a request
    /// just answered shows in the stats only after the next flush.
    pub async fn try_stats(&self) -> Result<HashMap<String, u64>, HarnessError> {
        tokio::time::sleep(WASM_COUNTER_FLUSH).await;
        let body = self.admin_get("/stats?format=json").await?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| HarnessError::Admin(format!("/stats?format=json: {e}")))?;
        let mut out = HashMap::new();
        if let Some(stats) = json.get("stats").and_then(Value::as_array) {
            for s in stats {
                if let (Some(name), Some(value)) = (s.get("name").and_then(Value::as_str), s.get("value")) {
                    if let Some(v) = value.as_u64() {
                        out.insert(name.to_string(), v);
                    }
                }
            }
        }
        Ok(out)
    }

    /// One counter or gauge; 0 if Envoy has not created it (yet).
    pub async fn counter(&self, name: &str) -> u64 {
        self.stats().await.get(name).copied().unwrap_or(0)
    }

    /// One counter or gauge; `None` if Envoy does not have it.
    pub async fn stat(&self, name: &str) -> Option<u64> {
        self.stats().await.get(name).copied()
    }

    /// Polls until the counter/gauge `name` is `>= at_least`; returns its value.
    /// Panics (with the log tail) after `timeout`.
    pub async fn wait_for_counter(&self, name: &str, at_least: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.counter(name).await;
            if v >= at_least {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "stat {name} = {v}, wanted >= {at_least} within {timeout:?}\n--- envoy log (last lines) ---\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/stats/prometheus`. Panics if the admin call fails.
    pub async fn prometheus(&self) -> String {
        match self.admin_get("/stats/prometheus").await {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Waits up to `timeout` for Envoy to exit; its status, or `None` if still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Kills Envoy now (SIGKILL) and reaps it. Also what `Drop` does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// One readiness probe: reads the admin address file if not yet known,
    /// then asks `/ready`.
    async fn poll_ready(&mut self) -> bool {
        if self.admin.is_none() {
            match std::fs::read_to_string(self.root.join("admin.txt")) {
                Ok(s) if s.trim().contains(':') && !s.trim().ends_with(":0") => self.admin = Some(s.trim().to_string()),
                _ => return false,
            }
        }
        let url = format!("{}/ready", self.admin_url());
        match self.client.get(&url).timeout(Duration::from_secs(1)).send().await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                ok && resp.text().await.map(|b| b.trim() == "LIVE").unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// name → port from `/listeners?format=json`; `None` while some port is still 0.
    async fn read_listener_ports(&self) -> Result<Option<HashMap<String, u16>>, HarnessError> {
        let body = self.admin_get("/listeners?format=json").await?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| HarnessError::Admin(format!("/listeners?format=json: {e}")))?;
        let mut out = HashMap::new();
        for l in json.get("listener_statuses").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = l.get("name").and_then(Value::as_str) else {
                continue;
            };
            let port = l.pointer("/local_address/socket_address/port_value").and_then(Value::as_u64).unwrap_or(0);
            if port == 0 {
                return Ok(None);
            }
            let port = u16::try_from(port).map_err(|_| HarnessError::Admin(format!("listener {name}: port {port}")))?;
            out.insert(name.to_string(), port);
        }
        Ok(Some(out))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ({}; last {} lines) ---\n{}\n--- end of envoy log ---",
                self.root.display(),
                LOG_TAIL_LINES * 2,
                self.log_tail(LOG_TAIL_LINES * 2)
            );
        }
        if std::env::var_os("SWITCHYARD_KEEP_TMP").is_some() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("switchyard: kept envoy dir {}", kept.display());
            }
        }
    }
}
