# kubezero developer entry points. CI runs `make test` (via .ci/run).
CARGO ?= cargo
OUT ?= out

.PHONY: all test demo generate release release-manifests release-binaries fmt lint clean

all: test

## test: the whole CI test suite (fmt check, clippy, build and run all tests); see scripts/test.sh
test:
	scripts/test.sh

## generate: write the CRDs from the Rust types (a test fails when they drift)
generate:
	$(CARGO) run -q -p kubezero-provider --bin kubezero-provider -- crds --output-dir config/provider/crd/bases
	$(CARGO) run -q -p kubezero-bootstrap --bin kubezero-bootstrap -- crds --output-dir config/bootstrap/crd/bases

## release: release binaries + clusterctl local repository in $(OUT)/
release:
	scripts/release.sh $(OUT)

## release-manifests: only the clusterctl local repository (no cargo build)
release-manifests:
	scripts/release.sh --manifests-only $(OUT)

## release-binaries: only the optimised manager binaries (target/release/)
release-binaries:
	$(CARGO) build --release --locked -p kubezero-provider -p kubezero-bootstrap

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(OUT)

## demo: the whole flow on this machine (test world + moto + both managers): apply a Cluster from
## templates/, scale its workers to 5 with a live table, delete it, report what is left in moto
demo:
	scripts/test-tools.sh
	$(CARGO) build --workspace --bins
	$(CARGO) run -q -p kubezero-test --bin demo

## bench-scale: MachineDeployment 0 → 1000 → 0 on moto (AWS calls, times, provider RSS) and the provider's
## RSS with 10,000 KubeZeroMachines watched; release build (the in-process API emulator and CAPI stand-in
## are too slow in debug). Prints numbers, asserts nothing. Flags: BENCH_SCALE_ARGS="--machines 200 ..."
.PHONY: bench-scale
bench-scale:
	scripts/test-tools.sh
	$(CARGO) build --release -p kubezero-provider -p kubezero-bootstrap -p kubezero-test --bin kubezero-provider --bin kubezero-bootstrap --bin bench-scale
	target/release/bench-scale $(BENCH_SCALE_ARGS)
