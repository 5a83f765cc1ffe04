#!/usr/bin/env bash
# Runs switchyard-policy's tests on wasm32 under wasm-bindgen-test-runner.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ -x .tools/bin/wasm-bindgen-test-runner ] || die "wasm-bindgen-test-runner missing: run make setup"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$PWD/.tools/bin/wasm-bindgen-test-runner"
wasm_cargo test -p switchyard-policy --lib --tests
