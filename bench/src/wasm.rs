//! The bench's own modules, built by `bench/build-wasm.sh` before measuring:
//! the no-op floor and the counting builds (the shipped modules with
//! `switchyard-host/count-host-calls`). Neither lands in `target/switchyard/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Runs `bench/build-wasm.sh <part>`; the `(module, bytes, path)` lines it prints.
fn build(root: &Path, part: &str) -> Result<Vec<(String, u64, PathBuf)>> {
    let out = Command::new(root.join("bench/build-wasm.sh"))
        .arg(part)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running bench/build-wasm.sh {part}"))?;
    if !out.status.success() {
        bail!("bench/build-wasm.sh {part} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut built = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some(module), Some(bytes), Some(path)) = (f.next(), f.next(), f.next()) {
            built.push((module.to_string(), bytes.parse().unwrap_or(0), root.join(path)));
        }
    }
    if built.is_empty() {
        bail!("bench/build-wasm.sh {part} built nothing");
    }
    Ok(built)
}

/// `target/bench-modules/noop.wasm` and its size.
pub fn floor(root: &Path) -> Result<(PathBuf, u64)> {
    let built = build(root, "floor")?;
    let (_, bytes, path) = built.into_iter().next().context("no floor module")?;
    Ok((path, bytes))
}

/// The directory of the counting builds (`<module>.wasm` each).
pub fn counting(root: &Path) -> Result<PathBuf> {
    let built = build(root, "counting")?;
    let (_, _, path) = built.first().context("no counting module")?;
    path.parent().map(Path::to_path_buf).context("counting module without a directory")
}
