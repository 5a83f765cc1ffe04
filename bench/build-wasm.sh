#!/usr/bin/env bash
# The bench harness's own wasm modules, never shipped and never in
# target/switchyard/ (make build's output). The harness runs this before
# measuring; both parts build the way scripts/build-wasm.sh builds the
# filters (lib.sh's wasm_cargo, the `wasm` profile), but in a target dir of
# their own, so they never overwrite what make build copies.
#
#   bench/build-wasm.sh floor     target/bench-modules/noop.wasm: every hook
#                                 returns Continue (the V8 floor arm)
#   bench/build-wasm.sh counting  target/bench-modules/counting/<module>.wasm:
#                                 the shipped modules with switchyard-host's
#                                 `count-host-calls` feature on
#
# Prints one line per module: `<module> <bytes> <path>`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export WASM_TARGET_DIR=target/bench-wasm
OUT=target/bench-modules
built_dir=$WASM_TARGET_DIR/wasm32-unknown-unknown/wasm
mkdir -p "$OUT"

# The shipped modules: `<cargo package>:<module name>`, as scripts/build-wasm.sh
# builds them.
MODULES=(switchyard-routing:routing switchyard-fault:fault switchyard-mirror:mirror switchyard-egress:egress
    switchyard-module:switchyard)

case "${1:-}" in
floor)
    wasm_cargo build -q --profile wasm --lib -p switchyard-bench-noop
    out=$OUT/noop.wasm
    # The same post-optimisation as the shipped modules (scripts/build-wasm.sh).
    if [ "${SWITCHYARD_WASM_OPT:-1}" != 0 ] && command -v wasm-opt >/dev/null &&
        wasm-opt --enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int \
            --enable-bulk-memory --enable-reference-types --enable-multivalue \
            -Oz "$built_dir/noop.wasm" -o "$out.tmp" 2>/dev/null; then
        mv "$out.tmp" "$out"
    else
        rm -f "$out.tmp"
        cp "$built_dir/noop.wasm" "$out"
    fi
    echo "noop $(stat -c %s "$out") $out"
    ;;
counting)
    # switchyard-host is selected too: the modules reach it through
    # switchyard-chain, and cargo takes `--features` only for selected
    # packages; features are unified, so every module links the counting one.
    pkgs=(-p switchyard-host)
    for m in "${MODULES[@]}"; do pkgs+=(-p "${m%%:*}"); done
    wasm_cargo build -q --profile wasm --lib "${pkgs[@]}" --features switchyard-host/count-host-calls
    mkdir -p "$OUT/counting"
    for m in "${MODULES[@]}"; do
        name=${m##*:}
        cp "$built_dir/$name.wasm" "$OUT/counting/$name.wasm"
        echo "$name $(stat -c %s "$OUT/counting/$name.wasm") $OUT/counting/$name.wasm"
    done
    ;;
*)
    die "usage: bench/build-wasm.sh floor|counting"
    ;;
esac
