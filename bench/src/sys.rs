//! What the harness reads from `/proc`: a process's CPU time, its memory, the
//! machine's load. Linux only.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// CPU time a process has used so far, two ways.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    /// utime + stime from `/proc/<pid>/stat`, in seconds (clock-tick resolution, usually 10 ms).
    pub stat_secs: f64,
    /// Sum of the first field of `/proc/<pid>/task/*/schedstat`: on-CPU time in
    /// nanoseconds, exact. `None` when the kernel has no schedstat.
    pub sched_ns: Option<u64>,
}

impl CpuSample {
    /// CPU seconds used between `self` and a later sample: schedstat when both have it, else stat.
    pub fn secs_until(&self, later: &CpuSample) -> f64 {
        match (self.sched_ns, later.sched_ns) {
            (Some(a), Some(b)) if b >= a => (b - a) as f64 / 1e9,
            _ => (later.stat_secs - self.stat_secs).max(0.0),
        }
    }
    /// The same interval from `/proc/<pid>/stat` only.
    pub fn stat_secs_until(&self, later: &CpuSample) -> f64 {
        (later.stat_secs - self.stat_secs).max(0.0)
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Reads the CPU time of `pid` (all its threads).
pub fn cpu(pid: u32) -> Result<CpuSample> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the `(comm)`, which may itself contain spaces and parentheses.
    let after = text.rsplit_once(')').map(|(_, rest)| rest).context("no ')' in /proc/<pid>/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ')' field 0 is state (field 3 of the man page); utime is field 14, stime 15.
    let (Some(ut), Some(st)) = (fields.get(11), fields.get(12)) else {
        bail!("{path}: too few fields");
    };
    let ticks: u64 = ut.parse::<u64>().context("utime")? + st.parse::<u64>().context("stime")?;
    Ok(CpuSample { stat_secs: ticks as f64 / clock_ticks_per_sec(), sched_ns: schedstat_ns(pid) })
}

fn schedstat_ns(pid: u32) -> Option<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).ok()? {
        let p = entry.ok()?.path().join("schedstat");
        // A thread may exit between read_dir and the read: skip it.
        if let Ok(text) = std::fs::read_to_string(&p) {
            total += text.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(total)
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Ok((field("VmRSS:").context("no VmRSS")?, field("VmHWM:").context("no VmHWM")?))
}

/// Busy and total jiffies of one CPU from `/proc/stat` (`None` if absent).
pub fn core_jiffies(core: usize) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let label = format!("cpu{core}");
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(label.as_str()))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Seconds of one clock tick (`/proc/stat` jiffies).
pub fn tick_secs() -> f64 {
    1.0 / clock_ticks_per_sec()
}

/// `/proc/loadavg`'s 1-minute figure.
pub fn loadavg1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// CPUs this process may run on (from `/proc/self/status` `Cpus_allowed_list`).
pub fn allowed_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(list) = text.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<usize>().ok()),
        }
    }
    out
}

/// Whether an executable named `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(name)))).unwrap_or(false)
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Today's date (UTC) as `YYYY-MM-DD`, without a date crate.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Now (UTC) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// Howard Hinnant's days-since-epoch to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn reads_own_cpu_and_rss() -> Result<()> {
        let pid = std::process::id();
        let a = cpu(pid)?;
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = cpu(pid)?;
        assert!(a.secs_until(&b) >= 0.0);
        let (rss, hwm) = rss_kib(pid)?;
        assert!(rss > 0 && hwm >= rss);
        Ok(())
    }
}
