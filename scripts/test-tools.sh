#!/usr/bin/env bash
# Installs the tools of kubezero's test world that do not come with cargo (see docs/testing.md):
#
# - a project-local Python venv at .build/venv (git-ignored) with pinned moto[server] (the AWS
#   emulator) and sushy-tools (the Redfish BMC emulator); the Rust fixtures in test/src/cloud/ start
#   their servers from it (KUBEZERO_VENV overrides the location);
# - the Debian packages the tests call: shellcheck and cloud-init (validators for rendered boot data),
#   busybox and wget (the bare-metal installer script runs under both, as in the Alpine live system).
#   xorriso, genisoimage (isoinfo), mtools and blkid (readers of the NoCloud cidata images).
#
# Idempotent and quick when everything is present: pip runs only when the stamp file in the venv does
# not record the pinned versions, apt only when a command is missing. Without apt (or not as root)
# missing Debian packages are a warning, not a failure: the tests that need them fail clearly.
# Prints what it installed and how long it took. Environment: KUBEZERO_VENV (venv location),
# PYTHON (the interpreter that creates the venv; default python3).
set -euo pipefail

# Pinned versions: bump together with the fixtures when upgrading.
MOTO_VERSION="5.2.5"
SUSHY_TOOLS_VERSION="2.2.0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KUBEZERO_VENV:-${root}/.build/venv}"
python="${PYTHON:-python3}"

start="$(date +%s.%N)"
installed=()

log() {
  echo "test-tools: $*"
}

die() {
  echo "test-tools: error: $*" >&2
  exit 1
}

# --- Python venv -------------------------------------------------------------------------------
pins=("moto[server]==${MOTO_VERSION}" "sushy-tools==${SUSHY_TOOLS_VERSION}")
stamp="${venv}/.kubezero-pins"
want_stamp="$(printf '%s\n' "${pins[@]}")"

if [[ ! -x "${venv}/bin/python" ]]; then
  command -v "$python" >/dev/null 2>&1 || die "${python} not found (needed for the moto and sushy-tools venv)"
  log "creating venv ${venv} with $("$python" --version 2>&1)"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" || die "'${python} -m venv ${venv}' failed (on Debian: apt-get install python3-venv)"
  installed+=("venv ${venv}")
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" \
  && -x "${venv}/bin/moto_server" && -x "${venv}/bin/sushy-emulator" ]]; then
  log "venv up to date: ${pins[*]}"
else
  log "pip install ${pins[*]}"
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  [[ -x "${venv}/bin/moto_server" ]] || die "moto_server missing from ${venv}/bin after pip install"
  [[ -x "${venv}/bin/sushy-emulator" ]] || die "sushy-emulator missing from ${venv}/bin after pip install"
  printf '%s\n' "$want_stamp" >"$stamp"
  installed+=("${pins[@]}")
fi

# --- Debian packages ---------------------------------------------------------------------------
# command -> package
declare -A debian=([shellcheck]=shellcheck [cloud-init]=cloud-init [busybox]=busybox [wget]=wget
  [xorriso]=xorriso [isoinfo]=genisoimage [mcopy]=mtools [blkid]=util-linux)
missing=()
for cmd in "${!debian[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${debian[$cmd]}")
done

if ((${#missing[@]} == 0)); then
  log "debian packages present: ${!debian[*]}"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "test-tools: warning: apt-get not available; install ${missing[*]} by hand (tests that need them will fail)" >&2
else
  sudo=()
  if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo -n)
    fi
  fi
  log "apt-get install ${missing[*]}"
  if "${sudo[@]}" apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    installed+=("${missing[@]}")
  else
    echo "test-tools: warning: could not install ${missing[*]} with apt-get (tests that need them will fail)" >&2
  fi
fi

end="$(date +%s.%N)"
took="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')"
if ((${#installed[@]} == 0)); then
  log "nothing to install (${took}s)"
else
  log "installed: ${installed[*]} (${took}s)"
fi
