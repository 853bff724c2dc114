#!/usr/bin/env bash
# Local Docker engine + berth's real-engine test images (idempotent).
#
#   bash .ci/engine.sh [NAME ...]
#
# Installs docker.io and debootstrap from Debian if missing and starts dockerd when `docker info`
# fails (both through scripts/setup.sh, as the test and deploy scripts do), then builds the
# berth-engine/* images (tests/engine/images/build.py; cached by content). Needs root. No registry
# is used: the base image comes from debootstrap.
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/../scripts/setup.sh"
cd "$ROOT"

[ "$(id -u)" = 0 ] || { echo "engine.sh: must run as root" >&2; exit 1; }
apt_install docker.io debootstrap python3
docker_engine
exec python3 tests/engine/images/build.py "$@"
