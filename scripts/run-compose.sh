#!/usr/bin/env bash
# make run-compose: the docker-compose mesh of examples/compose (images from
# make images, a copy of its policy directory to edit live), curl commands
# to try, Ctrl-C takes it all down (containers, networks, volumes).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PROJECT=${SWITCHYARD_COMPOSE_PROJECT:-switchyard}
INGRESS_PORT=${SWITCHYARD_INGRESS_PORT:-8080}

command -v docker >/dev/null || die "docker not found: make run-compose needs a Docker engine (make run needs none)"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed): start it, or use make run (no Docker)"
if docker-compose version >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    die "neither docker-compose nor docker compose works: install one (Debian: apt-get install docker-compose)"
fi
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free "$INGRESS_PORT" || die "port $INGRESS_PORT on 127.0.0.1 (the ingress gateway) is in use: stop what holds it (ss -ltnp 'sport = :$INGRESS_PORT'), or pick another with SWITCHYARD_INGRESS_PORT"

scripts/images.sh
work=$(mktemp -d /tmp/switchyard-compose.XXXXXX)
mkdir "$work/policy"
cp examples/compose/policy/*.yaml "$work/policy/"
export SWITCHYARD_POLICY_DIR="$work/policy" SWITCHYARD_INGRESS_PORT="$INGRESS_PORT"
compose=("${compose_cmd[@]}" -f examples/compose/compose.yaml -p "$PROJECT")

cleanup() {
    trap - INT TERM EXIT
    echo
    "${compose[@]}" logs --no-color --timestamps >"$work/containers.log" 2>&1 || true
    "${compose[@]}" down --remove-orphans --volumes --timeout 2 >/dev/null 2>&1 || true
    echo "mesh $PROJECT taken down; every container's log in $work/containers.log"
}
trap cleanup INT TERM EXIT
echo "starting the mesh (project $PROJECT)..."
"${compose[@]}" up -d --no-build --remove-orphans >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; die "${compose[*]} up failed (above)"; }

url="http://127.0.0.1:$INGRESS_PORT"
ready() { curl -s -m 2 -H 'end-user: jason' "$url/productpage" 2>/dev/null | grep -q '"version":"v2"'; }
for _ in $(seq 1 120); do ready && break; sleep 0.5; done
ready || die "the mesh did not answer through $url within 60 s: ${compose[*]} logs"
sleep_http=$("${compose[@]}" port sleep 15001)
c="${compose_cmd[*]} -f examples/compose/compose.yaml -p $PROJECT"

cat <<MSG

The Switchyard compose mesh is up (project $PROJECT; topology: docs/compose.md).
Ingress gateway $url; the sleep pod's sidecar at $sleep_http (as kubectl exec sleep -- curl).
Policy (Istio YAML, read by both xds-ext replicas; edit it and behaviour changes live): $work/policy
Try:

  curl -s -H 'end-user: jason' $url/productpage     # calls: details v1, reviews v2 -> ratings v1
  curl -s $url/productpage                          # calls: details v1, reviews v1
  cp examples/bookinfo/virtual-service-reviews-50-v3.yaml $work/policy/virtual-service-reviews.yaml   # then: half v1, half v3
  curl -s -H 'host: httpbin:8000' http://$sleep_http/headers    # httpbin v1; v2 gets a mirrored copy
  curl -s -H 'host: httpbin.org' http://$sleep_http/get         # out through the egress gateway: httpbin.org external
  curl -s -i -H 'host: evil.example.com' http://$sleep_http/    # 502, x-switchyard-egress: denied
  $c exec -T xds-ext-1 xds-ext status --admin 127.0.0.1:15014
  curl -s http://\$($c port reviews-v2 15000)/stats/prometheus | grep ^switchyard_

Ctrl-C takes the mesh down.
MSG
sleep infinity &
wait $!
