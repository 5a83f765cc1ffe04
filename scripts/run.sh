#!/usr/bin/env bash
# make run: demo backends + Envoy 1.40 with the four Switchyard filters and the
# example policy in examples/local/. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

LISTENER_PORT=${SWITCHYARD_PORT:-10000}
ADMIN_PORT=${SWITCHYARD_ADMIN_PORT:-9901}
# name version port: bookinfo-shaped services, each an echo server that
# answers with its name and version.
BACKENDS=(
    "productpage v1 18080"
    "reviews v1 18081"
    "reviews v2 18082"
    "reviews v3 18083"
    "ratings v1 18084"
    "httpbin.org external 18085"
)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$LISTENER_PORT" "$ADMIN_PORT" 18080 18081 18082 18083 18084 18085; do
    port_free "$p" || die "port $p on 127.0.0.1 is in use: stop what holds it (ss -ltnp 'sport = :$p') or set SWITCHYARD_PORT / SWITCHYARD_ADMIN_PORT"
done
check_envoy_version 1.40.0
for f in routing fault mirror egress; do
    [ -f target/switchyard/$f.wasm ] || die "target/switchyard/$f.wasm missing: run make build"
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

sed -e "s/{{LISTENER_PORT}}/$LISTENER_PORT/; s/{{ADMIN_PORT}}/$ADMIN_PORT/" \
    examples/local/envoy.yaml >"$logdir/envoy.yaml"
.tools/bin/envoy -c "$logdir/envoy.yaml" --concurrency 2 --disable-hot-restart \
    --log-path "$logdir/envoy.log" &
envoy_pid=$!
pids+=("$envoy_pid")

for _ in $(seq 1 100); do
    kill -0 "$envoy_pid" 2>/dev/null || { tail -20 "$logdir/envoy.log" >&2; die "envoy exited during start-up (log above, full log in $logdir/envoy.log)"; }
    [ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = LIVE ] && break
    sleep 0.1
done
[ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready")" = LIVE ] || die "envoy not ready after 10 s: see $logdir/envoy.log"

url="http://127.0.0.1:$LISTENER_PORT"
cat <<MSG

Switchyard demo is up: Envoy at $url (admin http://127.0.0.1:$ADMIN_PORT), logs in $logdir
Example policy: examples/local/ (routing, fault, mirror, egress). Try:

  curl -s -H 'host: reviews' -H 'end-user: jason' $url/reviews/1      # -> reviews v2
  curl -s -H 'host: reviews' $url/reviews/1                           # -> reviews v1 (mirrored to v3)
  curl -s -i -H 'host: ratings' -H 'end-user: jason' $url/ratings/1   # -> 500 fault abort
  curl -s -i -H 'host: evil.example.com' $url/                        # -> 502 egress denied
  curl -s http://127.0.0.1:$ADMIN_PORT/stats/prometheus | grep switchyard_

Ctrl-C stops everything.
MSG
wait "$envoy_pid"
