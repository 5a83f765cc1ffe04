#!/usr/bin/env bash
# make run: the compose mesh (docs/compose.md) as processes on loopback, no
# Docker: two xds-ext replicas serving the Istio YAML of an editable copy of
# examples/compose/policy, an ingress gateway, a sidecar Envoy and an echo
# app per bookinfo pod (+ httpbin v1/v2 and sleep), an egress gateway and
# the "external" hosts. Each pod has its own loopback address
# ($SWITCHYARD_NET.N, Linux routes all of 127/8 to lo) and the Envoys run
# examples/compose/envoy/*.yaml with the compose names replaced by those
# addresses. Ctrl-C stops everything it started.
# Not modelled on loopback: the network only the egress gateway reaches, and
# ports below 1024 (TLS egress listens on 15443, so the SNI flow is compose's).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

INGRESS_PORT=${SWITCHYARD_PORT:-8080}
NET=${SWITCHYARD_NET:-127.0.10}
# name address-suffix: every process's address, as compose names them.
HOSTS=(
    "xds-ext-1 2" "xds-ext-2 3"
    "istio-ingressgateway 10" "istio-egressgateway 11"
    "productpage-v1 20" "details-v1 21" "reviews-v1 22" "reviews-v2 23" "reviews-v3 24"
    "ratings-v1 25" "httpbin-v1 26" "httpbin-v2 27" "sleep 28"
    "httpbin.org 40" "www.google.com 41"
)
# pod service version [calls]: a sidecar and (but for sleep) an echo app.
PODS=(
    "productpage-v1 productpage v1 http://details:9080/details/0 http://reviews:9080/reviews/0"
    "details-v1 details v1"
    "reviews-v1 reviews v1"
    "reviews-v2 reviews v2 http://ratings:9080/ratings/0"
    "reviews-v3 reviews v3 http://ratings:9080/ratings/0"
    "ratings-v1 ratings v1"
    "httpbin-v1 httpbin v1"
    "httpbin-v2 httpbin v2"
    "sleep sleep -"
)

ip_of() {
    local h
    for h in "${HOSTS[@]}"; do
        read -r name n <<<"$h"
        [ "$name" = "$1" ] && { echo "$NET.$n"; return; }
    done
    die "no address for $1"
}
port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
check_free() { port_free "$1" "$2" || die "port $2 on $1 is in use: stop what holds it (ss -ltnp 'sport = :$2'), or move the demo with SWITCHYARD_PORT (ingress) and SWITCHYARD_NET (the pods' 127.x.y network)"; }

check_envoy_version 1.40.0
for f in routing fault mirror egress switchyard; do
    [ -f target/switchyard/$f.wasm ] || die "target/switchyard/$f.wasm missing: run make build"
done
for b in xds-ext switchyard-echo; do
    [ -x target/debug/$b ] || die "target/debug/$b missing: run make build"
done
check_free 127.0.0.1 "$INGRESS_PORT"
for h in "${HOSTS[@]}"; do
    read -r name _ <<<"$h"
    for p in 15000 15001 15006 15443 8080 15012 15014; do check_free "$(ip_of "$name")" "$p"; done
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

policy_dir="$logdir/policy"
mkdir -p "$policy_dir"
cp examples/compose/policy/*.yaml "$policy_dir/"
for r in xds-ext-1 xds-ext-2; do
    ip=$(ip_of $r)
    target/debug/xds-ext serve --config-dir "$policy_dir" --grpc "$ip:15012" --admin "$ip:15014" \
        --modules target/switchyard >"$logdir/$r.log" 2>&1 &
    pids+=($!)
done

# The compose bootstrap of a role after the role's own sed script, with
# this process's address for 0.0.0.0, every compose name replaced by its
# address, and ports below 1024 moved.
names=()
for h in "${HOSTS[@]}"; do
    read -r name n <<<"$h"
    names+=(-e "s/address: ${name//./\\.},/address: $NET.$n,/g")
done
bootstrap() { # role ip [sed args...]
    local role=$1 ip=$2
    shift 2
    sed -e "$@" -e "s/port_value: 443}}/port_value: 15443}}/" \
        -e "s/address: 0\.0\.0\.0/address: $ip/" "${names[@]}" "examples/compose/envoy/$role.yaml"
}
envoy() { # name role namespace labels sed-script
    local name=$1 role=$2 ns=$3 labels=$4 ip
    ip=$(ip_of "$name")
    bootstrap "$role" "$ip" "$5" >"$logdir/$name.yaml"
    .tools/bin/envoy -c "$logdir/$name.yaml" --concurrency 1 --disable-hot-restart --log-level warning \
        --config-yaml "node: {id: $name.$ns, cluster: ${name%-v[0-9]}.$ns, metadata: {NAMESPACE: $ns, WORKLOAD_NAME: $name, LABELS: {$labels}}}" \
        --log-path "$logdir/$name.log" &
    pids+=($!)
}
echo_app() { # listen-address service version [switchyard-echo args...]
    local listen=$1 service=$2 version=$3
    shift 3
    target/debug/switchyard-echo --listen "$listen" --service "$service" --version "$version" "$@" \
        >"$logdir/app-$service-$version.log" 2>&1 &
    pids+=($!)
}

envoy istio-ingressgateway ingress-gateway istio-system "app: istio-ingressgateway, istio: ingressgateway" \
    "s/address: 0\.0\.0\.0, port_value: 8080/address: 127.0.0.1, port_value: $INGRESS_PORT/"
envoy istio-egressgateway egress-gateway istio-system "app: istio-egressgateway, istio: egressgateway" \
    "s/address: httpbin\.org, port_value: 80}/address: $(ip_of httpbin.org), port_value: 8080}/; s/address: www\.google\.com, port_value: 443}/address: $(ip_of www.google.com), port_value: 8443}/"
echo_app "$(ip_of httpbin.org):8080" httpbin.org external
echo_app "$(ip_of www.google.com):8443" www.google.com external
for pod in "${PODS[@]}"; do
    read -r name service version calls <<<"$pod"
    if [ "$version" = - ]; then labels="app: $service"; else labels="app: $service, version: $version"; fi
    # The app listens on the pod's address, not 127.0.0.1: pods share lo here.
    envoy "$name" sidecar default "$labels" "s/address: 127\.0\.0\.1, port_value: 8080/address: $(ip_of "$name"), port_value: 8080/"
    [ "$version" = - ] && continue
    args=(--via "$(ip_of "$name"):15001")
    for c in $calls; do args+=(--call "$c"); done
    echo_app "$(ip_of "$name"):8080" "$service" "$version" "${args[@]}"
done

url="http://127.0.0.1:$INGRESS_PORT"
ready() { curl -s -m 2 -H 'end-user: jason' "$url/productpage" 2>/dev/null | grep -q '"version":"v2","duration_ms":[0-9]*,"calls"'; }
for _ in $(seq 1 600); do
    ready && break
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a process exited during start-up: see the logs in $logdir"; done
    sleep 0.1
done
ready || die "the mesh did not answer through $url within 60 s: see the logs in $logdir"
sleep_pod="http://$(ip_of sleep):15001"
xds1=$(ip_of xds-ext-1):15014

cat <<MSG

Switchyard mesh on loopback is up: ingress gateway $url, sidecars and gateways on $NET.x
(the topology of docs/compose.md, as processes). Logs in $logdir.
Policy (Istio YAML, read by both xds-ext replicas; edit it and behaviour changes live): $policy_dir
The sleep pod's sidecar $sleep_pod is where \`kubectl exec sleep -- curl\` would send. Try:

  curl -s -H 'end-user: jason' $url/productpage   # calls: details v1, reviews v2 -> ratings v1
  curl -s $url/productpage   # calls: details v1, reviews v1
  curl -s -H 'host: httpbin:8000' $sleep_pod/headers   # httpbin v1 (and a mirrored copy to v2)
  curl -s -H 'host: httpbin.org' $sleep_pod/get   # httpbin.org external (through the egress gateway)
  curl -s -i -H 'host: evil.example.com' $sleep_pod/   # 502 (egress denied: REGISTRY_ONLY)
  target/debug/xds-ext status --admin $xds1   # SYNCED, every stream this replica serves
  target/debug/xds-ext explain $policy_dir --namespace default --labels app=productpage -- GET http://reviews:9080/ -H 'end-user: jason'   # cluster outbound|9080|v2|reviews.default.svc.cluster.local
  curl -s http://$(ip_of reviews-v2):15000/stats/prometheus | grep ^switchyard_routing   # switchyard_routing_requests_total

Ctrl-C stops everything.
MSG
wait "${pids[0]}"
