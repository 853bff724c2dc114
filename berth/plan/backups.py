"""Backup plan: the backup container's scripts, schedule and secret files, rendered from settings.

Pure functions: no pulumi import. The scripts are POSIX sh; every value from settings reaches them
through `shlex.quote` in one config block (`lib_sh`) or as a positional argument, never spliced raw.
Secrets (the restic password, database and broker credentials, off-host keys) never enter the
container's environment or command line: they are files under SECRETS_DIR that the scripts read.

Layout inside the backup container:
  /berth/*.sh                 the scripts (lib.sh holds the config, the others source it)
  /berth/schedule.json        what the scheduler (images/backup/scheduler.py) runs, and when
  /backups/repo               the restic repository on the host (a retained volume)
  /backups/state              last success per schedule, last check result, the run lock
  /volumes/<name>             every backed-up app volume, mounted read-only
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from berth.plan.containers import docker_name
from berth.plan.rabbitmq import MANAGEMENT_PORT
from berth.settings import Settings
from berth.settings.backups import BackupSettings, Repository, Retention, available_items, period, workload_volumes

SCRIPTS_DIR = "/berth"
SECRETS_DIR = "/run/berth"
BACKUPS_DIR = "/backups"
LOCAL_REPO = f"{BACKUPS_DIR}/repo"
STATE_DIR = f"{BACKUPS_DIR}/state"
VOLUMES_DIR = "/volumes"
# ssh refuses a key file others may read; lib.sh copies the uploaded keys here with mode 600.
SSH_DIR = "/tmp/berth-ssh"
PASSWORD_FILE = f"{SECRETS_DIR}/restic-password"
SERVICES_ENV = f"{SECRETS_DIR}/services.env"
CURLRC = f"{SECRETS_DIR}/rabbitmq.curlrc"
IMAGE_CONTEXT = "images/backup"
LOCAL = "local"
# restic's own tag on every snapshot berth makes; retention and listings only look at these.
TAG = "berth"
# The health check fails when the last success is older than this many periods of its schedule.
HEALTH_PERIODS = 2
# A volume is read again when a file changed while it was read, at most this many times.
STABLE_ATTEMPTS = 3


def backups(settings: Settings) -> BackupSettings | None:
    """The enabled backups section, or None."""
    section = settings.backups
    return section if section is not None and section.enabled else None


def items(settings: Settings) -> list[str]:
    """What is backed up: the settings' include, or everything in the stack that holds data."""
    section = backups(settings)
    if section is None:
        return []
    return list(section.include) if section.include is not None else available_items(settings)


def volumes(settings: Settings) -> list[str]:
    """The app volumes backed up (mounted read-only at /volumes/<name>)."""
    return workload_volumes(settings) if "volumes" in items(settings) else []


def host_tag(settings: Settings) -> str:
    """restic's --host of every snapshot: the stack, not the container's changing hostname."""
    return docker_name(settings, "backup")


def schedules(settings: Settings) -> list[dict[str, object]]:
    """The scheduler's jobs: one backup job per distinct cron expression, and the check."""
    section = backups(settings)
    assert section is not None
    by_cron: dict[str, list[str]] = {}
    for item in items(settings):
        by_cron.setdefault(section.schedules.get(item, section.schedule), []).append(item)  # type: ignore[call-overload]
    jobs: list[dict[str, object]] = []
    for i, (cron, its) in enumerate(by_cron.items()):
        name = "backup" if i == 0 else f"backup-{'-'.join(its)}"
        jobs.append({"name": name, "cron": cron, "period_seconds": int(period(cron).total_seconds()),
                     "command": ["sh", f"{SCRIPTS_DIR}/backup.sh", "--schedule", name, *its]})
    jobs.append({"name": "check", "cron": section.check_schedule,
                 "period_seconds": int(period(section.check_schedule).total_seconds()),
                 "command": ["sh", f"{SCRIPTS_DIR}/check.sh"]})
    return jobs


def schedule_json(settings: Settings) -> str:
    """/berth/schedule.json: the jobs the scheduler loop runs (UTC)."""
    return json.dumps({"jobs": schedules(settings)}, indent=2, sort_keys=True) + "\n"


def forget_args(retention: Retention) -> list[str]:
    """restic forget's --keep-* flags for a retention policy."""
    args: list[str] = []
    for field in ("last", "hourly", "daily", "weekly", "monthly"):
        value = getattr(retention, field)
        if value is not None:
            args += [f"--keep-{field}", str(value)]
    if retention.within is not None:
        args += ["--keep-within", retention.within]
    return args


def _q(words: Iterable[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


def sftp_command(repo: Repository, name: str) -> str:
    """restic's -o sftp.command: ssh with the repository's own key and pinned host key."""
    parts = urlsplit(repo.url)
    ssh = ["ssh", "-i", f"{SSH_DIR}/{name}.key", "-o", f"UserKnownHostsFile={SECRETS_DIR}/{name}.known_hosts",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=30"]
    if parts.port:
        ssh += ["-p", str(parts.port)]
    return " ".join([*ssh, f"{parts.username}@{parts.hostname}", "-s", "sftp"])


def restic_url(repo: Repository) -> str:
    """The repository as restic names it; sftp://user@host:port/path becomes sftp:user@host:/path."""
    if repo.scheme != "sftp":
        return repo.url
    parts = urlsplit(repo.url)
    return f"sftp:{parts.username}@{parts.hostname}:{parts.path}"


def _repo_case(section: BackupSettings) -> list[str]:
    lines = ["repo_args() {  # NAME: set REPO_URL and REPO_OPTS for a repository", '  case "$1" in',
             f"    {LOCAL}) REPO_URL={shlex.quote(LOCAL_REPO)}; REPO_OPTS='' ;;"]
    for name, repo in sorted(section.repositories.items()):
        opts = shlex.quote(f"sftp.command={sftp_command(repo, name)}") if repo.scheme == "sftp" else "''"
        lines.append(f"    {name}) REPO_URL={shlex.quote(restic_url(repo))}; REPO_OPTS={opts} ;;")
    lines += ['    *) echo "berth-backup: no repository $1 (known: $REPOSITORIES)" >&2; return 2 ;;', "  esac", "}"]
    return lines


def lib_sh(settings: Settings) -> str:
    """/berth/lib.sh: the stack's backup config and the functions every script shares."""
    section = backups(settings)
    assert section is not None
    pg, redis = settings.service("postgres"), settings.service("redis")
    config = {
        "HOST_TAG": host_tag(settings),
        "ITEMS": " ".join(items(settings)),
        "VOLUMES": " ".join(volumes(settings)),
        "REPOSITORIES": " ".join([LOCAL, *sorted(section.repositories)]),
        "FORGET_ARGS": _q(forget_args(section.retention)),
        "CHECK_SUBSET": section.check_subset,
        "PGHOST": "postgres" if pg else "",
        "PGUSER": getattr(pg, "user", ""),
        "PGDATABASE": getattr(pg, "database", ""),
        "REDIS_HOST": "redis" if redis else "",
        "RABBITMQ_API": f"http://rabbitmq:{MANAGEMENT_PORT}/api" if settings.service("rabbitmq") else "",
    }
    lines = ["# Generated by berth: the backup container's config. Sourced by the other scripts.", "set -u",
             *(f"{key}={shlex.quote(value)}" for key, value in config.items()),
             "export PGHOST PGUSER PGDATABASE",
             f"export RESTIC_PASSWORD_FILE={shlex.quote(PASSWORD_FILE)} RESTIC_CACHE_DIR=/backups/cache",
             f"[ -r {SERVICES_ENV} ] && . {SERVICES_ENV}", *_repo_case(section), _LIB_FUNCTIONS]
    return "\n".join(lines) + "\n"


_LIB_FUNCTIONS = r"""
STATE=/backups/state
mkdir -p "$STATE"
for key in /run/berth/*.key; do
  [ -e "$key" ] || continue
  (umask 077; mkdir -p /tmp/berth-ssh; cp "$key" /tmp/berth-ssh/)
done
log() { echo "berth-backup: $*"; }
now() { date -u +%s; }

# restic against one repository: rr NAME restic-args...; its credentials are read in a subshell.
rr() {
  repo_args "$1" || return 2
  name=$1; shift
  (
    if [ -r "/run/berth/$name.env" ]; then set -a; . "/run/berth/$name.env"; set +a; fi
    if [ -n "$REPO_OPTS" ]; then exec restic -r "$REPO_URL" -o "$REPO_OPTS" "$@"; fi
    exec restic -r "$REPO_URL" "$@"
  )
}

# The run lock: a scheduled run, an operator's `now`, a check and a restore never overlap.
locked() { exec 9>"$STATE/lock"; flock 9; }

ensure_repo() {  # NAME: create the repository on first use (off-host ones copy the local chunker)
  rr "$1" cat config >/dev/null 2>&1 && return 0
  if [ "$1" = local ]; then
    rr local init --repository-version 2 >/dev/null
  else
    rr "$1" init --repository-version 2 --copy-chunker-params --from-repo /backups/repo \
      --from-password-file "$RESTIC_PASSWORD_FILE" >/dev/null
  fi
}

human() { awk -v b="$1" 'BEGIN { split("B KiB MiB GiB TiB", u); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ }
  printf (i == 1 ? "%d%s" : "%.1f%s"), b, u[i] }'; }

# snapshot ID of `latest` or a given ID, for one tag: snap REPO WHAT ID|latest
snap() {
  if [ "$3" != latest ]; then echo "$3"; return 0; fi
  id=$(rr "$1" snapshots --json --host "$HOST_TAG" --tag "$TAG,$2" --latest 1 | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
  [ -n "$id" ] || { echo "berth-backup: no snapshot of $2 in repository $1" >&2; return 1; }
  echo "$id"
}
"""
_LIB_FUNCTIONS = _LIB_FUNCTIONS.replace("$TAG", TAG)


BACKUP_SH = r"""#!/bin/sh
# Generated by berth: back up ITEMS (default: every item), apply retention, copy off-host.
# usage: backup.sh [--schedule NAME] [ITEM ...]; one summary line per run, exit 1 if anything failed.
. /berth/lib.sh
schedule=manual
if [ "${1:-}" = --schedule ]; then schedule=$2; shift 2; fi
[ $# -gt 0 ] || set -- $ITEMS
locked
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
start=$(now); added=0; done_items=''; failed=''
ensure_repo local || { log "FAILED schedule=$schedule: the local repository cannot be opened"; exit 1; }

fail() { failed="$failed $1"; log "$1: $2" >&2; }
took() {  # TAG: add the summary of the last restic backup (in $work/out)
  bytes=$(sed -n 's/.*"message_type":"summary".*"data_added":\([0-9]*\).*/\1/p' "$work/out" | tail -n 1)
  added=$((added + ${bytes:-0})); done_items="$done_items,$1"
}
snapshot_of() { sed -n 's/.*"message_type":"summary".*"snapshot_id":"\([0-9a-f]*\)".*/\1/p' "$work/out" | tail -n 1; }

stream() {  # TAG FILENAME COMMAND...: COMMAND's stdout becomes one snapshot; kept only if COMMAND succeeded
  tag=$1 file=$2; shift 2
  rm -f "$work/fifo"; mkfifo "$work/fifo"
  "$@" >"$work/fifo" 2>"$work/err" &
  pid=$!
  rr local backup --json --host "$HOST_TAG" --tag "berth,$tag" --stdin --stdin-filename "$file" <"$work/fifo" >"$work/out" 2>>"$work/err"
  rc=$?
  wait "$pid"; src=$?
  if [ "$src" -ne 0 ] || [ "$rc" -ne 0 ]; then
    id=$(snapshot_of); [ -n "$id" ] && rr local forget "$id" >/dev/null 2>&1
    fail "$tag" "$(tail -n 3 "$work/err" | tr '\n' ' ')"; return 1
  fi
  took "$tag"
}

backup_postgres() {
  psql -XAtq -d "$PGDATABASE" -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1" \
    >"$work/dbs" 2>"$work/err" || { fail postgres "$(tail -n 3 "$work/err" | tr '\n' ' ')"; return 1; }
  stream postgres.globals postgres/globals.sql pg_dumpall --globals-only -l "$PGDATABASE"
  while IFS= read -r db <&3; do
    # -Z0: restic compresses and deduplicates; a compressed dump would hide unchanged data from it.
    stream "postgres.databases.$db" "postgres/$db.dump" pg_dump -Fc -Z0 -d "$db"
  done 3<"$work/dbs"
}

backup_redis() {
  # --rdb asks the server for a fresh RDB over the replication protocol: a consistent point in time.
  redis-cli -h "$REDIS_HOST" --rdb "$work/dump.rdb" >"$work/err" 2>&1 || { fail redis "$(tail -n 3 "$work/err")"; return 1; }
  stream redis redis/dump.rdb cat "$work/dump.rdb"
  rm -f "$work/dump.rdb"
}

backup_rabbitmq() {
  stream rabbitmq rabbitmq/definitions.json curl -fsS --max-time 60 -K /run/berth/rabbitmq.curlrc "$RABBITMQ_API/definitions"
}

backup_volumes() {
  for volume in $VOLUMES; do
    # A single writer's file (e.g. db.json) is consistent when nothing in the volume changed while
    # restic read it: a snapshot read across a write is dropped and the volume read again.
    attempt=1
    while :; do
      touch "$work/mark"
      if ! rr local backup --json --host "$HOST_TAG" --tag "berth,volumes.$volume" "/volumes/$volume" >"$work/out" 2>"$work/err"; then
        fail "volumes.$volume" "$(tail -n 3 "$work/err" | tr '\n' ' ')"; break
      fi
      changed=$(find "/volumes/$volume" -newer "$work/mark" -print 2>/dev/null | head -n 1)
      if [ -z "$changed" ]; then took "volumes.$volume"; break; fi
      rr local forget "$(snapshot_of)" >/dev/null 2>&1
      if [ "$attempt" -ge 3 ]; then fail "volumes.$volume" "$changed kept changing while it was read"; break; fi
      log "volumes.$volume: $changed changed while it was read; reading it again"
      attempt=$((attempt + 1))
    done
  done
}

for item in "$@"; do
  case " $ITEMS " in *" $item "*) ;; *) fail "$item" "not backed up in this stack (items: $ITEMS)"; continue ;; esac
  "backup_$item"
done

rr local forget --prune --host "$HOST_TAG" --tag berth --group-by host,tags $FORGET_ARGS >"$work/forget" 2>&1 \
  || fail retention "$(tail -n 3 "$work/forget" | tr '\n' ' ')"
copied=local
for repo in $REPOSITORIES; do
  [ "$repo" = local ] && continue
  if ensure_repo "$repo" 2>"$work/err" \
      && rr "$repo" copy --from-repo /backups/repo --from-password-file "$RESTIC_PASSWORD_FILE" --host "$HOST_TAG" --tag berth >"$work/copy" 2>&1 \
      && rr "$repo" forget --prune --host "$HOST_TAG" --tag berth --group-by host,tags $FORGET_ARGS >"$work/copy" 2>&1; then
    copied="$copied,$repo"
  else
    fail "repository.$repo" "$(cat "$work/err" "$work/copy" 2>/dev/null | tail -n 3 | tr '\n' ' ')"
  fi
done

summary="schedule=$schedule items=${done_items#,} added=$(human "$added") duration=$(($(now) - start))s repositories=$copied"
if [ -n "$failed" ]; then
  log "FAILED $summary failed=$(echo $failed | tr ' ' ',')"
  exit 1
fi
now >"$STATE/last-success-$schedule"
log "ok $summary"
"""

CHECK_SH = r"""#!/bin/sh
# Generated by berth: restic check of every repository, reading CHECK_SUBSET of the data.
# The result is kept in /backups/state/check-failed (read by health.sh); exit 1 on any error.
. /berth/lib.sh
locked
start=$(now); failed=''
for repo in $REPOSITORIES; do
  if ! out=$(rr "$repo" check --read-data-subset "$CHECK_SUBSET" 2>&1); then
    failed="$failed $repo"
    echo "$out" | tail -n 20 >&2
  fi
done
if [ -n "$failed" ]; then
  echo "$failed" >"$STATE/check-failed"
  log "check FAILED repositories=$(echo $failed | tr ' ' ',') subset=$CHECK_SUBSET duration=$(($(now) - start))s"
  exit 1
fi
rm -f "$STATE/check-failed"
now >"$STATE/last-check"
log "check ok repositories=$(echo $REPOSITORIES | tr ' ' ',') subset=$CHECK_SUBSET duration=$(($(now) - start))s"
"""

HEALTH_SH = r"""#!/bin/sh
# Generated by berth: unhealthy when a schedule's last success is older than twice its period
# (counted from the scheduler's start before the first one), or when the last check failed.
. /berth/lib.sh
if [ -s "$STATE/check-failed" ]; then echo "last check failed: $(cat "$STATE/check-failed")"; exit 1; fi
started=$(cat "$STATE/started" 2>/dev/null || now)
status=0
while read -r name seconds; do
  last=$(cat "$STATE/last-success-$name" 2>/dev/null || echo "$started")
  age=$(($(now) - last))
  if [ "$age" -gt $((seconds * HEALTH_PERIODS)) ]; then echo "$name: last success ${age}s ago"; status=1; fi
done </berth/periods
exit "$status"
""".replace("HEALTH_PERIODS", str(HEALTH_PERIODS))

RESTORE_SH = r"""#!/bin/sh
# Generated by berth: the parts of a restore that run inside the backup container.
# usage: restore.sh REPO SNAPSHOT|latest postgres DB TARGET OWNER new|replace
#          restore DB's dump into database TARGET: a new one (refused if it exists), or replacing it
#        restore.sh REPO SNAPSHOT|latest dump WHAT                  write WHAT's snapshot to stdout (a tar for volumes)
#        restore.sh REPO SNAPSHOT|latest rabbitmq                   import the definitions into the broker
#        restore.sh REPO SNAPSHOT|latest globals                    print pg_dumpall --globals-only
. /berth/lib.sh
repo=$1 want=$2 kind=$3; shift 3
locked
case $kind in
  postgres)
    db=$1 target=$2 owner=$3 mode=$4
    id=$(snap "$repo" "postgres.databases.$db" "$want") || exit 1
    exists=$(psql -XAtq -v db="$target" -d postgres <<'SQL'
SELECT count(*) FROM pg_database WHERE datname = :'db';
SQL
)
    if [ "$mode" = new ] && [ "$exists" != 0 ]; then echo "berth-backup: database $target exists; not overwritten" >&2; exit 1; fi
    # The target is (re)created as berth's provisioning leaves a database: owned by its role, closed to PUBLIC.
    psql -XAtq -v ON_ERROR_STOP=1 -v db="$target" -v owner="$owner" -d postgres <<'SQL' >/dev/null || exit 1
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'db' AND pid <> pg_backend_pid();
SELECT format('DROP DATABASE IF EXISTS %I', :'db') \gexec
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0', :'db', :'owner') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'owner') \gexec
SQL
    rr "$repo" dump "$id" "/postgres/$db.dump" | pg_restore --exit-on-error --single-transaction -d "$target" || exit 1
    log "restored postgres.databases.$db (snapshot $id, repository $repo) into database $target"
    ;;
  dump)
    what=$1
    id=$(snap "$repo" "$what" "$want") || exit 1
    case $what in
      redis) path=/redis/dump.rdb ;;
      rabbitmq) path=/rabbitmq/definitions.json ;;
      postgres.globals) path=/postgres/globals.sql ;;
      volumes.*) path="/volumes/${what#volumes.}" ;;
      *) echo "berth-backup: cannot dump $what" >&2; exit 2 ;;
    esac
    echo "berth-backup: $what from snapshot $id (repository $repo)" >&2
    rr "$repo" dump "$id" "$path"
    ;;
  rabbitmq)
    id=$(snap "$repo" rabbitmq "$want") || exit 1
    rr "$repo" dump "$id" /rabbitmq/definitions.json >/tmp/definitions.json || exit 1
    curl -fsS --max-time 120 -K /run/berth/rabbitmq.curlrc -H 'content-type: application/json' \
      -X POST --data-binary @/tmp/definitions.json "$RABBITMQ_API/definitions" >/dev/null || exit 1
    rm -f /tmp/definitions.json
    log "imported rabbitmq definitions (snapshot $id, repository $repo)"
    ;;
  *) echo "berth-backup: unknown restore kind $kind" >&2; exit 2 ;;
esac
"""


RESTIC_SH = r"""#!/bin/sh
# Generated by berth: restic against one of the stack's repositories, e.g. `restic.sh local snapshots`.
. /berth/lib.sh
repo=$1; shift
rr "$repo" "$@"
"""

# A restore into a live volume is staged first: the stream lands in STAGING on the target volume,
# and only once it arrived whole does `swap` replace the volume's contents with it.
STAGING = ".berth-restore"

# Run by the CLI in a one-shot container with the target volume at /target: stage|swap|discard.
VOLUME_RESTORE_SH = r"""set -eu
staging=/target/STAGING
case $1 in
  stage)
    rm -rf "$staging"; mkdir "$staging"
    # restic dump names entries volumes/<name>/...: strip those two levels.
    tar -x -C "$staging" --strip-components=2 --numeric-owner -f - ;;
  swap)
    find /target -mindepth 1 -maxdepth 1 ! -name STAGING -exec rm -rf {} +
    find "$staging" -mindepth 1 -maxdepth 1 -exec mv {} /target/ \;
    rmdir "$staging" ;;
  discard) rm -rf "$staging" ;;
esac
""".replace("STAGING", STAGING)

# Run in a one-shot container of the stack's Redis image on Redis's volume (Redis stopped for swap):
# stage|swap|discard, with Redis's persistence mode as $2. With appendonly on, Redis loads its AOF
# and ignores an RDB, so the RDB is loaded once by a private server (unix socket only) that
# rewrites it as the AOF, then shuts down cleanly.
REDIS_RESTORE_SH = r"""set -eu
cd /data
staged=STAGING.rdb
case $1 in
  stage) cat >"$staged"; [ -s "$staged" ] || { echo "empty RDB" >&2; rm -f "$staged"; exit 1; } ;;
  discard) rm -f "$staged" ;;
  swap)
    rm -rf appendonlydir appendonly.aof temp-*.rdb dump.rdb
    mv "$staged" dump.rdb
    if [ "$2" = aof ]; then
      redis-server --dir /data --port 0 --unixsocket /tmp/restore.sock --appendonly no --save '' &
      until redis-cli -s /tmp/restore.sock ping 2>/dev/null | grep -q PONG; do sleep 0.2; done
      redis-cli -s /tmp/restore.sock config set appendonly yes >/dev/null
      until redis-cli -s /tmp/restore.sock info persistence | tr -d '\r' | grep -q '^aof_rewrite_in_progress:0$' \
         && redis-cli -s /tmp/restore.sock info persistence | tr -d '\r' | grep -q '^aof_rewrite_scheduled:0$' \
         && [ -d appendonlydir ]; do sleep 0.2; done
      redis-cli -s /tmp/restore.sock shutdown >/dev/null 2>&1 || true
      wait
    fi ;;
esac
""".replace("STAGING", STAGING)


def periods(settings: Settings) -> str:
    """/berth/periods read by health.sh: each backup schedule's name and period in seconds."""
    return "".join(f"{job['name']} {job['period_seconds']}\n" for job in schedules(settings)
                   if job["name"] != "check")


def scripts(settings: Settings) -> dict[str, str]:
    """Every file of /berth (not secret): path -> content."""
    return {f"{SCRIPTS_DIR}/lib.sh": lib_sh(settings), f"{SCRIPTS_DIR}/backup.sh": BACKUP_SH,
            f"{SCRIPTS_DIR}/check.sh": CHECK_SH, f"{SCRIPTS_DIR}/health.sh": HEALTH_SH,
            f"{SCRIPTS_DIR}/restore.sh": RESTORE_SH, f"{SCRIPTS_DIR}/restic.sh": RESTIC_SH, f"{SCRIPTS_DIR}/schedule.json": schedule_json(settings),
            f"{SCRIPTS_DIR}/periods": periods(settings)}


def env_file(values: Mapping[str, str]) -> str:
    """A file the scripts source: ``KEY='value'`` lines, each value shell-quoted."""
    return "".join(f"{key}={shlex.quote(values[key])}\n" for key in sorted(values))


def services_env(settings: Settings, postgres_password: str | None, redis_password: str | None) -> str:
    """The data services' credentials as the client tools read them (PGPASSWORD, REDISCLI_AUTH)."""
    values = {}
    if postgres_password is not None:
        values["PGPASSWORD"] = postgres_password
    if redis_password is not None:
        values["REDISCLI_AUTH"] = redis_password
    return "".join(f"export {line}" for line in env_file(values).splitlines(keepends=True))


def curlrc(user: str, password: str) -> str:
    """A curl config file holding the management API's login (quoted as curl's config syntax wants)."""
    login = f"{user}:{password}".replace("\\", "\\\\").replace('"', '\\"')
    return f'user = "{login}"\n'


def healthcheck_test() -> list[str]:
    """The container's healthcheck: health.sh (last success within twice the period, last check ok)."""
    return ["CMD", "sh", f"{SCRIPTS_DIR}/health.sh"]


def image_base(settings: Settings) -> str:
    """The image the backup image is built FROM: the stack's Postgres image (pg_dump of the server's
    own version), else the settings' base image."""
    pg = settings.service("postgres")
    section = backups(settings)
    assert section is not None
    return pg.image if pg is not None else section.base_image  # type: ignore[attr-defined]


def image_tag(context: Path, base: str) -> str:
    """A tag that changes with the build context's files and the base image, so a change replaces the container."""
    digest = hashlib.sha256(base.encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(b"\0" + str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
