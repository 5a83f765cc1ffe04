#!/usr/bin/env bash
# make bench / bench-quick: install the bench-only tools (not part of make setup,
# so make test stays fast). Idempotent.
#   oha   open-loop HTTP load generator with latency correction (crates.io), into .tools/
#   perf  optional (Debian linux-perf): the report's "where the time goes" split
#   taskset  optional (util-linux): pinning; the harness runs unpinned without it
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

OHA_VERSION=1.16.0

step() { printf '==> %s\n' "$*"; }

command -v cargo >/dev/null || die "cargo not found: install Rust with rustup and re-run"
if [ "$(.tools/bin/oha --version 2>/dev/null | awk '{print $2}')" != "$OHA_VERSION" ]; then
    step "cargo install oha@$OHA_VERSION into .tools (several minutes, once)"
    # cargo install builds in a temporary dir of its own: the workspace's
    # target/ is untouched.
    cargo install -q --locked --root .tools oha --version "$OHA_VERSION"
fi
step "oha $(.tools/bin/oha --version | awk '{print $2}')"
if ! command -v perf >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "apt-get install linux-perf (optional: the report's profile split)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; } ||
            step "linux-perf not installed: the report will have no profile split"
    else
        step "perf not found: the report will have no profile split (apt-get install linux-perf)"
    fi
fi
command -v taskset >/dev/null && step "taskset: arms pinned (Envoy core 0, load + upstream core 1)" ||
    step "taskset not found: processes not pinned (apt-get install util-linux)"
