#!/usr/bin/env bash
# Regenerates the route patches of envoyfilter-manifests/components/*/routes.yaml
# from the bookinfo policy with `xds-ext manifests` (`make manifests`).
# --check: regenerate into a temp dir and fail, naming the file, when a
# committed file differs (tests/tests/istio_manifests.rs runs this).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# The policy the manifests are generated from: the one envoyfilter-manifests/base
# puts in xds-ext's ConfigMap (bookinfo's files: jason -> reviews v2, the
# ratings abort, REGISTRY_ONLY egress, the ingress and egress gateways).
POLICY=(envoyfilter-manifests/base/policy)
TARGETS=(sidecars ingress-gateway egress-gateway)
XDS_EXT=${XDS_EXT:-target/debug/xds-ext}
[ -x "$XDS_EXT" ] || die "$XDS_EXT not found: run make build"

check=false
[ "${1:-}" = "--check" ] && check=true
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for target in "${TARGETS[@]}"; do
    "$XDS_EXT" manifests "${POLICY[@]}" --for "$target" >"$out/$target.yaml" 2>"$out/$target.log" ||
        { cat "$out/$target.log" >&2; die "xds-ext manifests --for $target failed"; }
done
stale=0
for target in "${TARGETS[@]}"; do
    file=envoyfilter-manifests/components/$target/routes.yaml
    if $check; then
        if ! cmp -s "$out/$target.yaml" "$file"; then
            echo "$file is stale: run make manifests (diff below)" >&2
            diff -u "$file" "$out/$target.yaml" >&2 || true
            stale=1
        fi
    else
        cp "$out/$target.yaml" "$file"
        echo "==> $file: $(tail -1 "$out/$target.log")"
    fi
done
exit $stale
