# Shared shell helpers for scripts/*.sh. Sourced, not run.

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# True when rustup can build wasm32 directly (a normal developer laptop).
wasm_mode_rustup() {
    command -v rustup >/dev/null && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown
}

# Directory holding a wasm linker: rustup's bundled rust-lld, else Debian's lld.
find_rust_lld_dir() {
    local sysroot
    if command -v rustc >/dev/null; then
        sysroot=$(rustc --print sysroot 2>/dev/null || true)
        for d in "$sysroot"/lib/rustlib/*/bin; do
            [ -x "$d/rust-lld" ] && { echo "$d"; return 0; }
        done
    fi
    command -v rust-lld >/dev/null && { dirname "$(command -v rust-lld)"; return 0; }
    return 1
}

check_envoy_version() {
    local want=$1 got
    [ -x .tools/bin/envoy ] || die "envoy not found at .tools/bin/envoy: run make setup"
    got=$(.tools/bin/envoy --version 2>/dev/null | grep -o '/[0-9]*\.[0-9]*\.[0-9]*/' | tr -d / | head -1)
    [ "$got" = "$want" ] || die "envoy at .tools/bin/envoy is '$got', Switchyard needs $want: rm -rf .venv .tools/bin/envoy && make setup"
}

# wasm-bindgen version pinned in Cargo.lock (the test runner must equal it).
wasm_bindgen_lock_version() {
    awk '/^name = "wasm-bindgen"$/ {getline; sub(/^version = "/, ""); sub(/"$/, ""); print; exit}' Cargo.lock 2>/dev/null
}

# Run cargo for the wasm32 target: rustup's target when installed, otherwise
# Debian's version-matched compiler building std from source (TOOLCHAIN.md).
# A separate target dir keeps the two compilers from invalidating each
# other's native build artefacts; WASM_TARGET_DIR picks another one (the
# bench's counting builds must not overwrite the modules make build copies).
wasm_cargo() {
    if wasm_mode_rustup; then
        CARGO_TARGET_DIR=${WASM_TARGET_DIR:-target/wasm} cargo "$@" --target wasm32-unknown-unknown
    else
        local lld_dir
        lld_dir=$(find_rust_lld_dir) || die "no rust-lld found: run make setup"
        [ -x /usr/bin/cargo ] && [ -d /usr/lib/rustlib/src/rust/library ] ||
            die "wasm32 target missing and Debian rustc-web/cargo-web/rust-web-src not installed: run make setup"
        RUSTC_BOOTSTRAP=1 PATH="$lld_dir:/usr/bin:$PATH" CARGO_TARGET_DIR=${WASM_TARGET_DIR:-target/wasm} \
            RUSTC=/usr/bin/rustc /usr/bin/cargo "$@" -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown
    fi
}
