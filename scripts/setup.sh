#!/usr/bin/env bash
# Shared setup for scripts/test.sh, scripts/deploy-dev.sh and .ci/engine.sh: Debian packages, the venv,
# a Docker engine.
# Idempotent, and written for a fresh Debian machine where we are root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv

log() { printf '== %s\n' "$*"; }

# Debian packages. Without an init system, postinst scripts would try to start nginx, postgres and
# rabbitmq on their default ports; policy-rc.d tells them not to (the tests start their own).
apt_install() {
  local want=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || want+=("$p"); done
  [ ${#want[@]} -eq 0 ] && return 0
  log "apt-get install ${want[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/tmp/berth-apt.log 2>&1 \
    || { tail -30 /tmp/berth-apt.log >&2; exit 1; }
  [ $made_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
}

python_env() {
  local python=${PYTHON:-python3}
  if [ ! -x "$VENV/bin/python" ]; then
    log "python venv $VENV"
    "$python" -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; "$python" -m venv "$VENV"; }
  fi
  log "pip install -r $1"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/$1"
}

docker_engine() {
  apt_install docker.io
  docker info >/dev/null 2>&1 && return 0
  log "starting dockerd (log: /tmp/dockerd.log)"
  nohup dockerd >>/tmp/dockerd.log 2>&1 </dev/null &
  local pid=$! _
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break   # dockerd exited: no point in waiting
    sleep 0.5
  done
  tail -5 /tmp/dockerd.log >&2 || true
  echo "dockerd did not come up; see /tmp/dockerd.log" >&2; exit 1
}

# Go tools into $(go env GOPATH)/bin (where tests look for them), each unless it is there already.
go_install() {
  local go gobin module module_path
  go=$(command -v go || echo /usr/local/go/bin/go)
  [ -x "$go" ] || { echo "Go >= 1.25 is needed (on PATH or in /usr/local/go) to install: $*" >&2; exit 1; }
  gobin=$("$go" env GOPATH)/bin
  for module in "$@"; do
    module_path=${module%@*}
    [ -x "$gobin/${module_path##*/}" ] && continue
    log "go install $module"
    "$go" install "$module"
  done
}
