#!/usr/bin/env bash
# The whole kubezero CI test: tool checks, format, lints, then one build and one run of every test.
# Idempotent; run from anywhere. Prints how long each step took.
#
# Needs: cargo (with rustfmt and clippy; added through rustup when missing), kubectl (the manifest
# tests render config/ with `kubectl kustomize`). cargo-nextest is optional: NEXTEST=1 runs the
# tests with it when installed (doc tests still run through cargo test).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

die() {
  echo "test: error: $*" >&2
  exit 1
}

summary=()
step() {
  local name="$1"
  shift
  echo
  echo "==> ${name}: $*"
  local start end status=0
  start="$(date +%s.%N)"
  "$@" || status=$?
  end="$(date +%s.%N)"
  local took
  took="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')"
  summary+=("$(printf '%-10s %8ss  %s' "$name" "$took" "$([[ $status -eq 0 ]] && echo ok || echo FAILED)")")
  echo "==> ${name}: ${took}s"
  if ((status != 0)); then
    print_summary
    die "step '${name}' failed (exit ${status})"
  fi
}

print_summary() {
  echo
  printf '%-10s %9s  %s\n' step time result
  printf '%s\n' "${summary[@]}"
}

# --- tools -----------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH (install Rust with rustup)"
command -v kubectl >/dev/null 2>&1 \
  || die "kubectl not found in PATH; the manifest tests need 'kubectl kustomize' (kubectl >= 1.27)."
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "cargo ${component} missing and rustup not available"
    echo "test: installing rust component ${component}"
    rustup component add "$component"
  fi
done
use_nextest=false
if [[ "${NEXTEST:-0}" == 1 ]]; then
  if cargo nextest --version >/dev/null 2>&1; then
    use_nextest=true
  else
    echo "test: NEXTEST=1 but cargo-nextest is not installed; using cargo test"
  fi
fi
echo "test: $(cargo --version), $(kubectl version --client 2>/dev/null | head -n 1)"

# --- test world tools (moto, sushy-tools venv; shellcheck, cloud-init, busybox, wget) ----------
export KUBEZERO_VENV="${KUBEZERO_VENV:-${root}/.build/venv}"
step tools scripts/test-tools.sh

# --- checks ----------------------------------------------------------------------------------
# A CI build starts from nothing: incremental compilation data (gigabytes for the workspace crates)
# would only take disk. Set CARGO_INCREMENTAL=1 to keep it for repeated local runs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# One build of every target: the manager binaries (test/tests drive them as processes) and the test
# binaries. Built together they share one feature set (dev-dependencies enable features, e.g. tokio's
# test-util), so the dependencies are compiled once; `cargo build --bins` alone would compile them a
# second time, with twice the time and the disk.
step build cargo build --workspace --locked --all-targets
if "$use_nextest"; then
  step test cargo nextest run --workspace --locked
  step doctest cargo test --workspace --locked --doc
else
  step test cargo test --workspace --locked
fi
# The chaos suite (#[ignore]d above), once with its fixed size: the provider SIGKILLed at 52 seeded
# points of a cluster's life on moto (~1.5 min; bounded). `--workspace` reuses the build step's
# artifacts. KUBEZERO_CHAOS=0 skips it.
if [[ "${KUBEZERO_CHAOS:-1}" != 0 ]]; then
  step chaos timeout --kill-after=30s 900 \
    cargo test --workspace --locked --test suite -- --ignored chaos --nocapture
fi

# The e2e suites in real mode: against `mgmt-cluster` (the API emulator and the CAPI stand-in as
# a separate process that behaves as a management cluster with core installed) through
# KUBEZERO_E2E_KUBECONFIG, as against a real management cluster. A CI-sized subset (`e2e`, `churn`
# and `reachability`, ~3 min; bounded). KUBEZERO_REAL_MODE=0 skips it.
real_mode() {
  local dir bin pid status=0
  dir="$(mktemp -d)"
  bin="${CARGO_TARGET_DIR:-${root}/target}/debug/mgmt-cluster"
  [[ -x "$bin" ]] || die "$bin missing (the build step builds it)"
  "$bin" --kubeconfig "${dir}/kubeconfig" >"${dir}/mgmt-cluster.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [[ -f "${dir}/kubeconfig" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -f "${dir}/kubeconfig" ]]; then
    KUBEZERO_E2E_KUBECONFIG="${dir}/kubeconfig" timeout --kill-after=30s 600 \
      cargo test --workspace --locked --test suite -- e2e:: churn:: reachability:: hosts:: || status=$?
  else
    echo "test: mgmt-cluster did not start:" >&2
    status=1
  fi
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if ((status != 0)); then
    cat "${dir}/mgmt-cluster.log" >&2
  fi
  rm -rf "$dir"
  return "$status"
}
if [[ "${KUBEZERO_REAL_MODE:-1}" != 0 ]]; then
  step real-mode real_mode
fi

print_summary
echo
echo "test: all steps passed"
