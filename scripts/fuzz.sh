#!/usr/bin/env bash
# make fuzz / make test-fuzz: build the cargo-fuzz targets in fuzz/ and run
# each for SECONDS (first argument, default 300), one after the other.
# FUZZ_PROFILE=release (default: optimized, what `make fuzz` reports) or dev
# (unoptimized: builds in less than half the time and runs ~10x slower, enough
# for make test's smoke run, whose job is to keep the targets building and
# their seeds passing). FUZZ_TARGETS picks targets (default: all four).
#
# The corpus each run grows is kept in target/fuzz/corpus/<target> (so later
# runs start where earlier ones stopped) and seeded read-only from the repo
# (fuzz/configs, examples/bookinfo). A crash stops the script with exit 1 and
# the input that triggered it in target/fuzz/artifacts/<target>/: reproduce
# with `target/fuzz/x86_64-unknown-linux-gnu/<release|debug>/<target> <that file>`,
# then make it a regression test (docs/security.md, "Fuzzing").
#
# The targets need nightly compiler flags (sanitizer coverage, ASan): the
# rustup stable toolchain accepts them with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

seconds=${1:-300}
targets=${FUZZ_TARGETS:-filter_config request_match istio_yaml ecds_stream}
profile=${FUZZ_PROFILE:-release}
cargo_fuzz=.tools/bin/cargo-fuzz
[ -x "$cargo_fuzz" ] || die "cargo-fuzz not found in .tools/bin: run make setup"

out=target/fuzz
case $profile in
    # cargo-fuzz's default: optimized, with debug assertions and overflow
    # checks (an explicit --release would drop them). 16 codegen units: its
    # default of 1 makes envoy-types alone take over 5 minutes to compile.
    release) build=(--codegen-units 16); bin=$out/x86_64-unknown-linux-gnu/release ;;
    dev) build=(--dev); bin=$out/x86_64-unknown-linux-gnu/debug ;;
    *) die "FUZZ_PROFILE=$profile: release or dev" ;;
esac
printf '==> cargo fuzz build --%s (fuzz/, into %s)\n' "$profile" "$out"
RUSTC_BOOTSTRAP=1 "$cargo_fuzz" build --fuzz-dir fuzz --target-dir "$out" "${build[@]}"

seeds_of() {
    case $1 in
        filter_config) echo fuzz/configs ;;
        istio_yaml) echo examples/bookinfo ;;
    esac
}

for target in $targets; do
    corpus=$out/corpus/$target
    artifacts=$out/artifacts/$target
    log=$out/logs/$target.log
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    dict=()
    [ -f "fuzz/dicts/$target.dict" ] && dict=(-dict="fuzz/dicts/$target.dict")
    printf '==> fuzz %s for %ss\n' "$target" "$seconds"
    # -rss_limit_mb: a leak or a blow-up fails as a crash, not an OOM kill.
    # -close_fd_mask=1: the targets' stdout is noise; libFuzzer reports on stderr.
    # xds-ext logs every stream on stderr, so the log goes to a file.
    status=0
    "$bin/$target" -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        -close_fd_mask=1 -artifact_prefix="$artifacts/" "${dict[@]}" \
        "$corpus" $(seeds_of "$target") >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    units=$(find "$corpus" -type f | wc -l)
    if [ "$status" != 0 ]; then
        grep -a -v '^xds-ext: ' "$log" | grep -a -E -A40 'panicked at|ERROR: |SUMMARY: ' | head -80 >&2 || tail -40 "$log" >&2
        die "fuzz target $target failed after ${runs:-?} executions; input in $artifacts/, full log $log"
    fi
    printf '    %s: %s executions in %ss (%s/s), corpus %s inputs, no crash\n' \
        "$target" "${runs:-?}" "$seconds" "$(( ${runs:-0} / seconds ))" "$units"
done
