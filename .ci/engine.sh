#!/usr/bin/env bash
# Local Docker engine + berth's real-engine test images (idempotent).
#
#   bash .ci/engine.sh
#
# 1. installs docker.io, debootstrap (and python3) from Debian if missing (postinst starts nothing),
# 2. starts dockerd in the background when `docker info` fails (log: /tmp/dockerd.log),
# 3. builds the berth-engine/* images (tests/engine/images/build.py; cached by content).
# Needs root. No registry is used: the base image comes from debootstrap.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

die() { echo "engine.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

install_packages() {
  local want=() p
  for p in docker.io debootstrap; do
    dpkg -s "$p" >/dev/null 2>&1 || want+=("$p")
  done
  command -v python3 >/dev/null || want+=(python3)
  [ ${#want[@]} -gt 0 ] || return 0
  echo "engine.sh: installing ${want[*]}"
  # Without an init system, postinst would try to start services: policy-rc.d says no.
  local prc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    prc=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}"
  [ $prc = 0 ] || rm -f /usr/sbin/policy-rc.d
}

ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  echo "engine.sh: starting dockerd (log: /tmp/dockerd.log)"
  nohup dockerd >>/tmp/dockerd.log 2>&1 </dev/null &
  local pid=$! _
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break   # dockerd exited: no point in waiting
    sleep 0.5
  done
  tail -5 /tmp/dockerd.log >&2 || true
  die "dockerd did not come up; see /tmp/dockerd.log"
}

install_packages
ensure_dockerd
exec python3 tests/engine/images/build.py "$@"
