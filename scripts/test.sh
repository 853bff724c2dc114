#!/usr/bin/env bash
# Everything the tests need on a fresh Debian machine, then every test tier (no skips), independent
# tiers in parallel:
#   phase 1: settings, plan, components (Pulumi mocks), render (real nginx, PostgreSQL, RabbitMQ)
#            || engine (every blueprint on the real Docker engine; one test restarts dockerd, so
#            nothing else that uses the engine runs beside it)
#   phase 2: the real-system tiers, each on its own servers: preflight (real sshd, a TLS dockerd),
#            promote (two stacks on the engine and a real registry), acme (Pebble against the
#            stack's real nginx), provision (a Debian system over real SSH),
#            backup (restic round trips, an SFTP server, a real MinIO server go-installed beside phase 1), ...
# usage: bash scripts/test.sh [pytest args...]   (the args go to every tier's pytest)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"

apt_install nginx postgresql rabbitmq-server redis-server curl openssl ca-certificates openssh-server openssh-client \
  docker-registry busybox iproute2
python_env requirements-dev.txt
# tests/acme: Pebble, Let's Encrypt's test CA, and its DNS, from the Go module proxy (Go >= 1.25).
go_install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.3 \
  github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv@v2.10.3
docker_engine
bash .ci/engine.sh   # local images for the engine tier (cached by Dockerfile content)

log "ruff"
"$VENV/bin/ruff" check berth components tests bench demo policy __main__.py
log "mypy (the product's code)"
"$VENV/bin/mypy" berth components __main__.py

LOGS=$(mktemp -d /tmp/berth-tests.XXXXXX)
PASSED=0 FAILED=0 BROKEN=()

# tests/backup: a real MinIO server, built from the commit tests/engine/images/build.py pins. The
# build (minutes of CPU) runs beside phase 1 and must have succeeded before phase 2 starts.
MINIO_MODULE=$("$VENV/bin/python" -c 'import runpy; print(runpy.run_path("tests/engine/images/build.py")["MINIO_MODULE"])')
log "go install $MINIO_MODULE (in the background, beside phase 1)"
( start=$(date +%s); go_install "$MINIO_MODULE"; echo "go install minio: $(($(date +%s) - start))s" ) \
  >"$LOGS/minio-install.log" 2>&1 &
MINIO_INSTALL=$!

# tiers NAME=PATHS... : one pytest per tier, all at once; each log printed whole when all are done.
tiers() {
  local spec name pids=() names=()
  for spec in "$@"; do
    name=${spec%%=*}
    # shellcheck disable=SC2086 # PATHS is a word list
    "$VENV/bin/python" -m pytest ${spec#*=} "${PYTEST_ARGS[@]}" >"$LOGS/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
  done
  local i code summary count
  for i in "${!pids[@]}"; do
    code=0; wait "${pids[$i]}" || code=$?
    name=${names[$i]}
    log "pytest: $name (exit $code)"
    cat "$LOGS/$name.log"
    summary=$(tail -n 1 "$LOGS/$name.log")
    for count in $(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+'); do PASSED=$((PASSED + count)); done
    for count in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$summary" | grep -oE '[0-9]+'); do FAILED=$((FAILED + count)); done
    # Exit 5 is "no tests collected": a tier that ran nothing fails, unless the args chose a subset.
    if [ "$code" -ne 0 ] && { [ "$code" -ne 5 ] || [ "$SUBSET" = 0 ]; }; then
      BROKEN+=("$name")
    fi
  done
}

PHASE1=("unit=tests/settings tests/plan tests/components tests/render tests/policy" "engine=tests/engine")
# The promotion tier shares the engine; it runs once the engine tier (which restarts dockerd) is done.
PHASE2=("preflight=tests/preflight" "promote=tests/promote" "acme=tests/acme" "provision=tests/provision" "backup=tests/backup")
# Every test directory is in a tier: a new one left out would pass by never running.
for dir in $(find tests -name 'test_*.py' -printf '%h\n' | sort -u); do
  case " ${PHASE1[*]#*=} ${PHASE2[*]#*=} " in *" ${dir} "*) ;; *) echo "scripts/test.sh: $dir is in no tier" >&2; exit 1 ;; esac
done
SUBSET=0
for arg in "$@"; do [ "$arg" = -q ] || SUBSET=1; done
PYTEST_ARGS=("$@")
log "pytest phase 1 (in parallel): unit tiers || engine tier"
tiers "${PHASE1[@]}"
if ! wait "$MINIO_INSTALL"; then
  cat "$LOGS/minio-install.log" >&2
  echo "scripts/test.sh: go install $MINIO_MODULE failed: the backup tier cannot run its MinIO server" >&2
  exit 1
fi
tail -n 1 "$LOGS/minio-install.log"
log "pytest phase 2 (in parallel): real-system tiers"
tiers "${PHASE2[@]}"
rm -rf "$LOGS"
echo
echo "${PASSED} passed, ${FAILED} failed"
if [ ${#BROKEN[@]} -gt 0 ]; then
  echo "failed tiers: ${BROKEN[*]}" >&2
  exit 1
fi
