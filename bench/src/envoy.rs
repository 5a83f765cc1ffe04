//! Envoy processes for the bench: one per arm, plus the upstream.
//!
//! Each process gets its own directory (bootstrap, log, admin address) under
//! the run's scratch dir, `--concurrency 1`, and is pinned with `taskset` when
//! the harness was asked to pin. Listener and admin ports are `0`; the real
//! ones are read back from the admin interface, as the test harness does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// How to start an Envoy: binary, pinning, scratch space.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub envoy: PathBuf,
    pub scratch: PathBuf,
    /// Pin processes with `taskset -c <core>` (when a core is given).
    pub taskset: bool,
}

/// A running Envoy. Dropping it kills the process.
pub struct EnvoyProc {
    name: String,
    child: Child,
    dir: PathBuf,
    admin: String,
    pub port: u16,
}

impl Launcher {
    /// Spawns an Envoy without waiting for it (see [`Pending::ready`]).
    /// `extra` may set `--concurrency` (else 1).
    pub fn spawn(&self, name: &str, bootstrap: &Value, core: Option<usize>, extra: &[String]) -> Result<Pending> {
        self.spawn_wrapped(name, bootstrap, core, &[], extra)
    }

    /// The directory an Envoy named `name` runs in (bootstrap, logs).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    /// [`Launcher::spawn`], with Envoy run by `wrapper` (e.g. valgrind and its options).
    pub fn spawn_wrapped(
        &self,
        name: &str,
        bootstrap: &Value,
        core: Option<usize>,
        wrapper: &[String],
        extra: &[String],
    ) -> Result<Pending> {
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("bootstrap.json");
        std::fs::write(&config, serde_json::to_vec_pretty(bootstrap)?)
            .with_context(|| format!("writing {}", config.display()))?;
        let admin_path = dir.join("admin.txt");
        let _ = std::fs::remove_file(&admin_path);
        let log = std::fs::File::create(dir.join("envoy.log")).context("creating envoy.log")?;
        let out = std::fs::File::create(dir.join("stdout.log")).context("creating stdout.log")?;

        let mut program: Vec<std::ffi::OsString> = Vec::new();
        if let Some(c) = core.filter(|_| self.taskset) {
            program.extend(["taskset".into(), "-c".into(), c.to_string().into()]);
        }
        program.extend(wrapper.iter().map(Into::into));
        program.push(self.envoy.clone().into_os_string());
        let mut cmd = Command::new(&program[0]);
        cmd.args(&program[1..]);
        if !extra.iter().any(|a| a == "--concurrency") {
            cmd.arg("--concurrency").arg("1");
        }
        cmd.arg("-c")
            .arg(&config)
            .arg("--disable-hot-restart")
            .arg("-l")
            .arg("warning")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(extra)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {}", self.envoy.display()))?;
        Ok(Pending { name: name.to_string(), child: Some(child), dir, admin_path })
    }

    /// Spawns and waits until ready.
    pub fn start(&self, name: &str, bootstrap: &Value, core: Option<usize>) -> Result<EnvoyProc> {
        self.spawn(name, bootstrap, core, &[])?.ready(Duration::from_secs(60))
    }
}

/// Kills the child when the harness dies (the harness is single-threaded, so
/// the forking thread lives as long as the process).
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure only makes async-signal-safe libc calls.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// An Envoy that has been spawned but may not be ready yet.
pub struct Pending {
    name: String,
    child: Option<Child>,
    dir: PathBuf,
    admin_path: PathBuf,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Pending {
    /// Waits for `/ready` == LIVE and the `bench` (or `upstream`) listener's port.
    pub fn ready(mut self, timeout: Duration) -> Result<EnvoyProc> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().context("child already taken")?;
            if let Some(status) = child.try_wait()? {
                bail!("envoy {} exited with {status} before becoming ready:\n{}", self.name, log_tail(&self.dir, 30));
            }
            if let Ok(admin) = std::fs::read_to_string(&self.admin_path) {
                let admin = admin.trim().to_string();
                if !admin.is_empty() {
                    if let Ok((200, body)) = http_get(&admin, "/ready") {
                        if body.trim() == "LIVE" {
                            if let Some(port) = listener_port(&admin)? {
                                let child = self.child.take().context("child already taken")?;
                                return Ok(EnvoyProc {
                                    name: self.name.clone(),
                                    child,
                                    dir: self.dir.clone(),
                                    admin,
                                    port,
                                });
                            }
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("envoy {} not ready after {timeout:?}:\n{}", self.name, log_tail(&self.dir, 30));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn listener_port(admin: &str) -> Result<Option<u16>> {
    let (status, body) = http_get(admin, "/listeners?format=json")?;
    if status != 200 {
        return Ok(None);
    }
    let json: Value = serde_json::from_str(&body).context("parsing /listeners?format=json")?;
    let port = json
        .get("listener_statuses")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|l| l.pointer("/local_address/socket_address/port_value"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok(u16::try_from(port).ok().filter(|p| *p != 0))
}

impl EnvoyProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    /// GET an admin path; `(status, body)`.
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&self.admin, path)
    }
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.dir, n)
    }
    /// The directory it runs in (its current directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The sum of every counter whose name contains `part` (a wasm metric is
    /// `wasmcustom.<name>`, once per VM that defines it).
    pub fn stat_sum(&self, part: &str) -> Result<u64> {
        Ok(self
            .stats_json(&regex_escape(part))?
            .iter()
            .filter(|s| s.get("name").and_then(Value::as_str).is_some_and(|n| n.contains(part)))
            .filter_map(|s| s.get("value").and_then(Value::as_u64))
            .sum())
    }
    /// A counter or gauge from `/stats?format=json` (`None` if absent).
    pub fn stat(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .stats_json(&format!("^{}$", regex_escape(name)))?
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|s| s.get("value"))
            .and_then(Value::as_u64))
    }
    /// The entries of `/stats?format=json&filter=FILTER` (a regex).
    fn stats_json(&self, filter: &str) -> Result<Vec<Value>> {
        let (status, body) = self.admin_get(&format!("/stats?format=json&filter={filter}"))?;
        if status != 200 {
            bail!("{}: /stats answered {status}", self.name);
        }
        let mut json: Value = serde_json::from_str(&body).context("parsing /stats?format=json")?;
        Ok(match json.get_mut("stats").map(Value::take) {
            Some(Value::Array(stats)) => stats,
            _ => Vec::new(),
        })
    }
}

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn log_tail(dir: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A minimal HTTP/1.1 GET with `Connection: close` (Envoy refuses HTTP/1.0 unless told to accept it).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let sock: std::net::SocketAddr = addr.parse().with_context(|| format!("admin address {addr:?}"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, Duration::from_secs(2)).with_context(|| format!("connecting {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).with_context(|| format!("reading GET {path} from {addr}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("GET {path}: no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("GET {path}: bad status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
}

/// Decodes a chunked body (sizes in hex, each chunk followed by CRLF).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunks() {
        assert_eq!(super::dechunk("4\r\nLIVE\r\n3\r\n ok\r\n0\r\n\r\n"), "LIVE ok");
    }
}
