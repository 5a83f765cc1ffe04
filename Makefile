# Switchyard: the verbs. `make run` and `make test` are the two a user needs;
# both run `setup` first, which installs whatever this machine lacks.
.PHONY: setup build build-wasm build-native lint test test-native test-wasm test-fuzz fuzz run run-compose images manifests bench bench-quick clean help

CARGO ?= cargo
# make fuzz: seconds per fuzz target (make test runs each for FUZZ_SMOKE_SECONDS).
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 30

help:
	@echo "make run     the bookinfo mesh on loopback: gateways, sidecars, two xds-ext replicas (Istio YAML over ECDS)"
	@echo "make test    install what is missing, build, lint, run every test (real Envoy)"
	@echo "make setup   install toolchain pieces, Envoy $(shell sed -n 's/^ENVOY_VERSION=//p' scripts/setup.sh) and test tools (idempotent)"
	@echo "make build   build target/switchyard/*.wasm and the native binaries"
	@echo "make manifests  regenerate envoyfilter-manifests/components/*/routes.yaml (xds-ext manifests)"
	@echo "make run-compose  the docker-compose mesh: gateways, sidecars, two xds-ext replicas (docs/compose.md)"
	@echo "make images  build the docker-compose mesh's images locally (no registry), tags in examples/compose/.env"
	@echo "make bench   the bench harness, full (~20 min; not part of make test); make bench-quick: < 3 min"
	@echo "make fuzz    each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 300); make test runs each for 30 s"
	@echo "make clean   remove build output (keeps .venv and .tools)"

setup:
	@scripts/setup.sh

build: setup build-wasm build-native

build-wasm:
	@scripts/build-wasm.sh

build-native:
	$(CARGO) build --workspace --exclude switchyard-routing --exclude switchyard-fault \
		--exclude switchyard-mirror --exclude switchyard-egress --exclude switchyard-module --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -q -- -D warnings

test: build lint test-native test-wasm test-fuzz

test-native:
	$(CARGO) test --workspace

# The policy crate's pure-logic tests again, compiled to wasm32 and run by
# wasm-bindgen-test-runner under Node: the code the filters actually ship.
test-wasm:
	@scripts/test-wasm.sh

# Each fuzz target for a short while, so they keep building and the seeds
# keep passing (docs/security.md); `make fuzz` is the long, optimized run.
test-fuzz:
	@FUZZ_PROFILE=dev scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

fuzz: setup
	@scripts/fuzz.sh $(FUZZ_SECONDS)

run: build
	@scripts/run.sh

# The docker-compose mesh (examples/compose, docs/compose.md); Ctrl-C takes it down.
run-compose: build
	@scripts/run-compose.sh

# The route patches of envoyfilter-manifests/ that depend on the policy,
# regenerated with `xds-ext manifests`; make test fails when they are stale.
manifests: build-native
	@scripts/manifests.sh

# The compose mesh's images (Envoy + modules, xds-ext, echo), built locally
# FROM scratch, tagged by content hash into examples/compose/.env.
images: build
	@scripts/images.sh

# The bench harness (issue 7): every arm in its own pinned Envoy, open-loop
# load with oha (installed into .tools by scripts/bench-setup.sh, only here),
# report in bench/results/. Not part of `make test`.
# xds-ext's scale scenario measures a release build, as deployed.
bench: build
	@scripts/bench-setup.sh
	$(CARGO) build -q --release -p xds-ext
	$(CARGO) run -q -p switchyard-bench -- $(BENCH_ARGS)

bench-quick: build
	@scripts/bench-setup.sh
	$(CARGO) build -q --release -p xds-ext
	$(CARGO) run -q -p switchyard-bench -- --quick $(BENCH_ARGS)

clean:
	$(CARGO) clean
