#!/usr/bin/env bash
# make build (wasm half): compile the filter modules (the four filters and
# the combined switchyard.wasm) and place them at
# target/switchyard/<filter>.wasm, printing each size.
#
# When binaryen's wasm-opt is installed (make setup installs it), each module
# is also run through `wasm-opt -Oz`, about 19% smaller (docs/policy.md,
# "Module size"). Without it the modules are still valid and within the size
# budget, only larger; SWITCHYARD_WASM_OPT=0 skips it on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# The four single-purpose modules, and switchyard.wasm, all four in one
# (crate switchyard-module).
FILTERS=(routing fault mirror egress switchyard)
pkgs=(-p switchyard-routing -p switchyard-fault -p switchyard-mirror -p switchyard-egress -p switchyard-module)

wasm_cargo build --profile wasm --lib "${pkgs[@]}"

# The wasm features rustc's default wasm32 target uses (the shipped modules
# are stripped of their target_features section, so binaryen is told).
WASM_OPT_FEATURES=(--enable-sign-ext --enable-mutable-globals --enable-nontrapping-float-to-int
    --enable-bulk-memory --enable-reference-types --enable-multivalue)
use_wasm_opt=false
if [ "${SWITCHYARD_WASM_OPT:-1}" = 0 ]; then
    echo "note: SWITCHYARD_WASM_OPT=0: modules are not post-optimized with wasm-opt"
elif command -v wasm-opt >/dev/null; then
    use_wasm_opt=true
else
    echo "note: wasm-opt (binaryen) not found: modules are not post-optimized (about 19% larger, still within budget); make setup installs it"
fi

mkdir -p target/switchyard
for f in "${FILTERS[@]}"; do
    built=target/wasm/wasm32-unknown-unknown/wasm/"$f".wasm
    out=target/switchyard/"$f".wasm
    how="cargo"
    if $use_wasm_opt; then
        if wasm-opt "${WASM_OPT_FEATURES[@]}" -Oz "$built" -o "$out.tmp" 2>"$out.wasm-opt.log"; then
            mv "$out.tmp" "$out"
            rm -f "$out.wasm-opt.log"
            how="cargo + wasm-opt -Oz, from $(stat -c %s "$built")"
        else
            echo "warning: wasm-opt failed on $f.wasm (see $out.wasm-opt.log); using the module as cargo built it" >&2
            rm -f "$out.tmp"
            cp "$built" "$out"
        fi
    else
        cp "$built" "$out"
    fi
    printf '%-12s %7d bytes  %s  (%s)\n' "$f" "$(stat -c %s "$out")" "$out" "$how"
done
