#!/usr/bin/env bash
# make images: the compose mesh's three images, built here without a
# registry (nothing is pulled): FROM scratch + one binary + the shared
# libraries `ldd` lists + the dynamic loader.
#   switchyard-envoy   Envoy 1.40 (.tools/bin/envoy) + the modules in /var/lib/switchyard/modules (where envoyfilter-manifests/base expects them)
#   switchyard-xds-ext xds-ext + the same modules (it serves and hashes them)
#   switchyard-echo    switchyard-echo, the bookinfo-shaped backend
# Each is tagged with the sha256 of its build context, so an unchanged image
# is not rebuilt and a changed binary always gets a new tag. The tags go to
# examples/compose/.env, which docker-compose reads for ${...} substitution.
# Debug builds of xds-ext and the echo (what `make build` made), stripped of
# debug info: no release build in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ENV_FILE=${SWITCHYARD_IMAGES_ENV:-examples/compose/.env}
MODULES=(routing fault mirror egress switchyard)

command -v docker >/dev/null || die "docker not found: make images needs a Docker engine"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed): start it, or check permissions on /var/run/docker.sock"
check_envoy_version 1.40.0
for m in "${MODULES[@]}"; do
    [ -f "target/switchyard/$m.wasm" ] || die "target/switchyard/$m.wasm missing: run make build"
done
for b in xds-ext switchyard-echo; do
    [ -x "target/debug/$b" ] || die "target/debug/$b missing: run make build"
done

work=$(mktemp -d /tmp/switchyard-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# add_binary CONTEXT SOURCE: SOURCE as /usr/local/bin/<name> (debug info
# stripped), plus every library ldd lists, at the same paths.
add_binary() {
    local ctx=$1 src=$2 name lib
    name=$(basename "$src")
    mkdir -p "$ctx/usr/local/bin"
    strip --strip-debug -o "$ctx/usr/local/bin/$name" "$src"
    for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx$(dirname "$lib")"
        cp -L "$lib" "$ctx$lib"
    done
}

add_modules() {
    mkdir -p "$1/var/lib/switchyard/modules"
    for m in "${MODULES[@]}"; do cp "target/switchyard/$m.wasm" "$1/var/lib/switchyard/modules/"; done
}

# build NAME CONTEXT: docker build unless NAME:<hash of CONTEXT> exists;
# prints the tag.
build() {
    local name=$1 ctx=$2 hash tag old
    hash=$(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$ctx" -cf - . | sha256sum | cut -c1-16)
    tag="$name:$hash"
    if docker image inspect "$tag" >/dev/null 2>&1; then
        echo "images: $tag up to date" >&2
    else
        echo "images: building $tag" >&2
        # The legacy builder's deprecation notice is noise; its errors are not.
        docker build -q --label "dev.switchyard.content=$hash" -t "$tag" "$ctx" >"$work/build.log" 2>&1 ||
            { cat "$work/build.log" >&2; die "docker build of $tag failed"; }
        # Older tags of this image go unless a container still uses them.
        for old in $(docker image ls --format '{{.Repository}}:{{.Tag}}' "$name"); do
            [ "$old" = "$tag" ] || docker rmi "$old" >/dev/null 2>&1 || true
        done
    fi
    echo "$tag"
}

mkdir -p "$work/envoy" "$work/xds-ext" "$work/echo"
add_binary "$work/envoy" "$(readlink -f .tools/bin/envoy)"
add_modules "$work/envoy"
cat >"$work/envoy/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/envoy"]
DOCKERFILE

add_binary "$work/xds-ext" target/debug/xds-ext
add_modules "$work/xds-ext"
cat >"$work/xds-ext/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/xds-ext"]
DOCKERFILE

add_binary "$work/echo" target/debug/switchyard-echo
cat >"$work/echo/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
ENV PATH=/usr/local/bin
ENTRYPOINT ["/usr/local/bin/switchyard-echo"]
DOCKERFILE

envoy=$(build switchyard-envoy "$work/envoy")
xds=$(build switchyard-xds-ext "$work/xds-ext")
echo_image=$(build switchyard-echo "$work/echo")
cat >"$ENV_FILE.tmp" <<ENV
# Written by scripts/images.sh (make images): content-hash tags of the
# locally built images, for docker-compose's variable substitution.
SWITCHYARD_ENVOY_IMAGE=$envoy
SWITCHYARD_XDS_EXT_IMAGE=$xds
SWITCHYARD_ECHO_IMAGE=$echo_image
ENV
mv "$ENV_FILE.tmp" "$ENV_FILE"
echo "images: tags in $ENV_FILE" >&2
