#!/usr/bin/env bash
# make run: demo backends + xds-ext serving Istio YAML from an editable policy
# directory + Envoy 1.40 whose four Switchyard filters get their configuration
# from xds-ext over ECDS. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

LISTENER_PORT=${SWITCHYARD_PORT:-10000}
ADMIN_PORT=${SWITCHYARD_ADMIN_PORT:-9901}
XDS_PORT=${SWITCHYARD_XDS_PORT:-15012}
XDS_ADMIN_PORT=${SWITCHYARD_XDS_ADMIN_PORT:-15014}
# The example policy: Istio's bookinfo YAML, as users apply it today.
POLICY=(services.yaml destination-rule-all.yaml virtual-service-reviews-test-v2.yaml
    virtual-service-ratings-test-abort.yaml service-entry-httpbin-org.yaml sidecar-registry-only.yaml)
# name version port: bookinfo-shaped services, each an echo server that
# answers with its name and version. Ports match examples/local/envoy.yaml.
BACKENDS=(
    "productpage v1 18080"
    "reviews v1 18081"
    "reviews v2 18082"
    "reviews v3 18083"
    "ratings v1 18084"
    "httpbin.org external 18085"
    "details v1 18086"
)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$LISTENER_PORT" "$ADMIN_PORT" "$XDS_PORT" "$XDS_ADMIN_PORT" 18080 18081 18082 18083 18084 18085 18086; do
    port_free "$p" || die "port $p on 127.0.0.1 is in use: stop what holds it (ss -ltnp 'sport = :$p'), or move the demo with SWITCHYARD_PORT, SWITCHYARD_ADMIN_PORT, SWITCHYARD_XDS_PORT, SWITCHYARD_XDS_ADMIN_PORT"
done
check_envoy_version 1.40.0
for f in routing fault mirror egress; do
    [ -f target/switchyard/$f.wasm ] || die "target/switchyard/$f.wasm missing: run make build"
done
for b in xds-ext switchyard-echo; do
    [ -x target/debug/$b ] || die "target/debug/$b missing: run make build"
done

logdir=$(mktemp -d /tmp/switchyard-run.XXXXXX)
pids=()
cleanup() {
    trap - INT TERM EXIT
    [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
    echo "stopped; logs kept in $logdir"
}
trap cleanup INT TERM EXIT

for b in "${BACKENDS[@]}"; do
    read -r name version port <<<"$b"
    target/debug/switchyard-echo --listen "127.0.0.1:$port" --service "$name" --version "$version" \
        >"$logdir/echo-$name-$version.log" 2>&1 &
    pids+=($!)
done

policy_dir="$logdir/policy"
mkdir -p "$policy_dir"
for f in "${POLICY[@]}"; do cp "examples/bookinfo/$f" "$policy_dir/"; done
target/debug/xds-ext serve --config-dir "$policy_dir" --grpc "127.0.0.1:$XDS_PORT" \
    --admin "127.0.0.1:$XDS_ADMIN_PORT" --modules target/switchyard >"$logdir/xds-ext.log" 2>&1 &
pids+=($!)

sed -e "s/{{LISTENER_PORT}}/$LISTENER_PORT/; s/{{ADMIN_PORT}}/$ADMIN_PORT/; s/{{XDS_PORT}}/$XDS_PORT/" \
    examples/local/envoy.yaml >"$logdir/envoy.yaml"
.tools/bin/envoy -c "$logdir/envoy.yaml" --concurrency 2 --disable-hot-restart \
    --log-path "$logdir/envoy.log" &
envoy_pid=$!
pids+=("$envoy_pid")

ready() { [ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = LIVE ]; }
for _ in $(seq 1 200); do
    kill -0 "$envoy_pid" 2>/dev/null || {
        tail -20 "$logdir/envoy.log" >&2
        die "envoy exited during start-up (log above, full log in $logdir/envoy.log)"
    }
    ready && break
    sleep 0.1
done
ready || die "envoy not ready after 20 s (its filters wait for xds-ext): see $logdir/envoy.log and $logdir/xds-ext.log"

url="http://127.0.0.1:$LISTENER_PORT"
cat <<MSG

Switchyard demo is up: a productpage sidecar Envoy at $url (admin http://127.0.0.1:$ADMIN_PORT),
its filters fed by xds-ext (admin http://127.0.0.1:$XDS_ADMIN_PORT). Logs in $logdir.
Policy (Istio YAML; edit it and behaviour changes live): $policy_dir
Try:

  curl -s -H 'host: reviews:9080' -H 'end-user: jason' $url/reviews/1     # -> reviews v2
  curl -s -H 'host: reviews:9080' $url/reviews/1                          # -> reviews v1
  curl -s -H 'host: details:9080' $url/details/1                          # -> details v1 (no VirtualService: Istio's default route)
  curl -s -i -H 'host: ratings:9080' -H 'end-user: jason' $url/ratings/1  # -> 500 fault abort
  curl -s -i -H 'host: evil.example.com' $url/                            # -> 502 egress denied
  curl -s -H 'host: httpbin.org' $url/get                                 # -> allowed by a ServiceEntry
  target/debug/xds-ext status --admin 127.0.0.1:$XDS_ADMIN_PORT
  target/debug/xds-ext explain $policy_dir --namespace default --labels app=productpage -- GET http://reviews:9080/ -H 'end-user: jason'
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep ^switchyard_

Ctrl-C stops everything.
MSG
wait "$envoy_pid"
