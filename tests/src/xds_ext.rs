//! A running `xds-ext serve` for tests: the real binary on kernel-chosen
//! ports with a temp config directory, and helpers to edit that directory
//! and read xds-ext's admin views.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bootstrap::{module_path, xds_ext_binary};
use crate::{http_client, workspace_root};

/// A file of `examples/bookinfo/`.
pub fn bookinfo(file: &str) -> String {
    let path = workspace_root().join("examples/bookinfo").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A running `xds-ext serve`, killed on drop; its log is in its temp dir.
pub struct XdsExt {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub grpc_port: u16,
    pub admin_port: u16,
}

impl XdsExt {
    /// A temp config dir holding bookinfo's Services and DestinationRules
    /// plus `files` (name, YAML).
    pub fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix("switchyard-xds-config-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(dir.path(), "services.yaml", &bookinfo("services.yaml"));
        write(dir.path(), "destination-rule-all.yaml", &bookinfo("destination-rule-all.yaml"));
        for (name, text) in files {
            write(dir.path(), name, text);
        }
        dir
    }

    /// Starts xds-ext on `grpc` (e.g. `127.0.0.1:0`) serving `config_dir`
    /// with the modules of `make build`; waits for the bound ports and `/readyz`.
    pub async fn start(config_dir: &Path, grpc: &str) -> XdsExt {
        let routing = module_path("routing").unwrap_or_else(|e| panic!("{e}"));
        Self::start_with_modules(config_dir, grpc, routing.parent().unwrap_or_else(|| Path::new("."))).await
    }

    pub async fn start_with_modules(config_dir: &Path, grpc: &str, modules: &Path) -> XdsExt {
        Self::start_with_args(config_dir, grpc, modules, &[]).await
    }

    pub async fn start_with_args(config_dir: &Path, grpc: &str, modules: &Path, extra: &[&str]) -> XdsExt {
        Self::start_as(config_dir, grpc, modules, extra, None).await
    }

    /// The same, run as user (and group) `uid` when given: a test that runs
    /// as root has xds-ext run as an unprivileged user, for whom file
    /// permissions mean something.
    pub async fn start_as(config_dir: &Path, grpc: &str, modules: &Path, extra: &[&str], uid: Option<u32>) -> XdsExt {
        let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new().prefix("switchyard-xds-ext-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(dir.path().join("xds-ext.log")).unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(&binary);
        cmd.arg("serve")
            .arg("--config-dir")
            .arg(config_dir)
            .args(["--grpc", grpc, "--admin", "127.0.0.1:0", "--modules"])
            .arg(modules)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        // SAFETY: prctl is async-signal-safe. Spawned from the test's own
        // thread, which outlives the child (dropped at the end of the test).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut xds = XdsExt { child: Some(child), dir, grpc_port: 0, admin_port: 0 };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = xds.log();
            xds.grpc_port = port_after(&log, "grpc listening on ");
            xds.admin_port = port_after(&log, "admin listening on ");
            if xds.grpc_port != 0 && xds.admin_port != 0 && xds.get("/readyz").await.is_some() {
                return xds;
            }
            if let Some(Ok(Some(status))) = xds.child.as_mut().map(Child::try_wait) {
                panic!("xds-ext exited with {status}:\n{log}");
            }
            assert!(Instant::now() < deadline, "xds-ext not ready within 10 s:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("xds-ext.log")).unwrap_or_default()
    }

    pub fn admin(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    /// GET on the admin endpoint; `None` unless 2xx.
    pub async fn get(&self, path: &str) -> Option<String> {
        let url = format!("http://{}{path}", self.admin());
        let response = http_client().get(url).timeout(Duration::from_secs(2)).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    pub async fn json(&self, path: &str) -> Value {
        let text = self.get(path).await.unwrap_or_else(|| panic!("admin {path} failed:\n{}", self.log()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// The `/debug/proxies` entry of `node_id` for `resource`.
    pub async fn resource(&self, node_id: &str, resource: &str) -> Value {
        let proxies = self.json("/debug/proxies").await;
        let all = proxies.as_array().cloned().unwrap_or_default();
        all.iter()
            .filter(|p| p["node_id"] == node_id)
            .map(|p| p["resources"][resource].clone())
            .find(|r| !r.is_null())
            .unwrap_or(Value::Null)
    }

    /// Waits until `node_id`'s `resource` has `status`; returns its entry.
    pub async fn wait_status(&self, node_id: &str, resource: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entry = self.resource(node_id, resource).await;
            if entry["status"] == status {
                return entry;
            }
            assert!(Instant::now() < deadline, "{node_id} {resource}: {entry} never {status}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until xds-ext's config generation (`/debug/config`) passes
    /// `after`; returns it.
    pub async fn wait_generation(&self, after: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let generation = self.json("/debug/config").await["generation"].as_u64().unwrap_or(0);
            if generation > after {
                return generation;
            }
            assert!(Instant::now() < deadline, "generation still {generation}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One sample of `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// `xds-ext status --admin ADDR` (table) output.
    pub fn status_cli(&self) -> String {
        self.status_cli_with(&[])
    }

    /// `xds-ext status --admin ADDR ARGS...` output.
    pub fn status_cli_with(&self, args: &[&str]) -> String {
        let binary = xds_ext_binary().unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(binary)
            .args(["status", "--admin", &self.admin()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("xds-ext status: {e}"));
        assert!(out.status.success(), "xds-ext status failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit: its
    /// exit status, or `None` if it was still running (then it is killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for XdsExt {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- xds-ext log ---\n{}\n--- end of xds-ext log ---", self.log());
        }
    }
}

fn port_after(log: &str, marker: &str) -> u16 {
    log.lines()
        .filter_map(|l| l.split_once(marker))
        // The address may be followed by words: `127.0.0.1:15012 (tls)`.
        .filter_map(|(_, rest)| rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// Writes a file the way editors and kubelet do: a temp file renamed over it.
pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
}
