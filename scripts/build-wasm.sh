#!/usr/bin/env bash
# make build (wasm half): compile the filter modules and place them at
# target/switchyard/<filter>.wasm, printing each size.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

FILTERS=(routing fault mirror egress)
pkgs=()
for f in "${FILTERS[@]}"; do pkgs+=(-p "switchyard-$f"); done

wasm_cargo build --profile wasm --lib "${pkgs[@]}"

mkdir -p target/switchyard
for f in "${FILTERS[@]}"; do
    cp target/wasm/wasm32-unknown-unknown/wasm/"$f".wasm target/switchyard/"$f".wasm
    printf '%-12s %7d bytes  target/switchyard/%s.wasm\n' "$f" "$(stat -c %s target/switchyard/"$f".wasm)" "$f"
done
