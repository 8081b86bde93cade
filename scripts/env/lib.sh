# shellcheck shell=bash
# scripts/env/lib.sh: helpers shared by the environment scripts (sourced, not run).
#
# Every script under scripts/env/ and tests/env/ sources this file, so each one
# runs on its own from any working directory.

SLIPWAY_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export SLIPWAY_REPO
# Where downloaded and generated inputs are kept between runs (rootfs tarballs, .debs, wheels).
SLIPWAY_ENV_CACHE=${SLIPWAY_ENV_CACHE:-/var/cache/slipway-env}
export DEBIAN_FRONTEND=noninteractive

log() { printf '[%s] %s\n' "${SLIPWAY_LOG_TAG:-env}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# sha256 of all arguments and of stdin, as one hex string.
hash_of() { { printf '%s\n' "$@"; cat; } | sha256sum | cut -c1-64; }

# Seconds since the epoch with milliseconds, for timings.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Is the Docker daemon answering? (The CLI may be missing or newer than the daemon; the socket is what counts.)
docker_ping() {
  curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1 \
    || docker info >/dev/null 2>&1
}

# retry COMMAND...: run COMMAND up to $SLIPWAY_RETRIES times (default 3), 5 s apart: for downloads,
# which the machine's network proxy now and then drops.
retry() {
  local n max=${SLIPWAY_RETRIES:-3}
  for ((n = 1; ; n++)); do
    "$@" && return 0
    ((n < max)) || return 1
    log "failed ($n/$max), retrying in 5 s: $*"
    sleep 5
  done
}

# apt-get update, unless one of these scripts did it in the last hour.
apt_update_once() {
  local stamp=$SLIPWAY_ENV_CACHE/apt-updated
  [[ -n $(find "$stamp" -mmin -60 2>/dev/null) ]] && return 0
  log "apt-get update"
  retry apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  mkdir -p "$SLIPWAY_ENV_CACHE" && touch "$stamp"
}

# apt_install PKG...: install the Debian packages that are not installed yet.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  apt_update_once
  log "apt-get install ${missing[*]}"
  retry apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Flags that stand in for --privileged on these hosts (--privileged fails: the daemon lacks
# CAP_SYS_RESOURCE), plus what a node needs: tmpfs on /tmp and /run.
NODE_RUN_FLAGS=(
  --cap-add ALL --cap-drop SYS_RESOURCE
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined
  --security-opt systempaths=unconfined
  --device-cgroup-rule='a *:* rwm'
  --tmpfs /tmp --tmpfs /run
)

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds, or fail after SECONDS.
wait_for() {
  local timeout=$1 what=$2 start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= timeout )); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# ensure_image NAME TAG: build one of scripts/env/images' images when it is missing.
ensure_image() {
  docker image inspect "$2" >/dev/null 2>&1 || "$SLIPWAY_REPO/scripts/env/images" "$1"
}

# container_running NAME
container_running() {
  [[ $(docker container inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]
}
