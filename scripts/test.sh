#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, then every test tier (no skips):
# settings, plan, components (Pulumi mocks), render (real nginx, PostgreSQL, RabbitMQ), engine (real Docker).
# usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

apt_install nginx postgresql rabbitmq-server redis-server curl openssl ca-certificates openssh-client
python_env requirements-dev.txt
docker_engine
bash .ci/engine.sh   # local images for the engine tier (cached by Dockerfile content)

log "ruff"
"$VENV/bin/ruff" check berth components tests bench __main__.py
log "mypy (the product's code)"
"$VENV/bin/mypy" berth components __main__.py
log "pytest"
exec "$VENV/bin/python" -m pytest "$@"
