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
  /backups/mirror/minio/<b>   rclone's mirror of each MinIO bucket (a cache restic reads as /minio/<b>)
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
# rclone mirrors MinIO's buckets here; restic reads them from this directory as minio/<bucket>.
MIRROR_DIR = f"{BACKUPS_DIR}/mirror"
# rclone is configured by its environment alone (no config file): a remote named `minio`.
RCLONE_REMOTE = {"RCLONE_CONFIG_MINIO_TYPE": "s3", "RCLONE_CONFIG_MINIO_PROVIDER": "Minio",
                 "RCLONE_CONFIG_MINIO_ENDPOINT": "http://minio:9000", "RCLONE_CONFIG": "/dev/null"}
# A restored bucket's name: <bucket>-restored-<UTC stamp>, within S3's 63 characters.
BUCKET_MAX = 63
# ssh refuses a key file others may read; lib.sh copies the uploaded keys here with mode 600.
SSH_DIR = "/tmp/berth-ssh"
PASSWORD_FILE = f"{SECRETS_DIR}/restic-password"
SERVICES_ENV = f"{SECRETS_DIR}/services.env"
CURLRC = f"{SECRETS_DIR}/rabbitmq.curlrc"
IMAGE_CONTEXT = "images/backup"
SCRIPT_SOURCES = Path(__file__).resolve().parent / "scripts"
LOCAL = "local"
# restic's own tag on every snapshot berth makes; retention and listings only look at these.
TAG = "berth"


def _script(name: str) -> str:
    """A script of berth/plan/scripts (constants substituted at render time are in lib.sh)."""
    return (SCRIPT_SOURCES / name).read_text()


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
    """Restic's --host of every snapshot: the stack, not the container's changing hostname."""
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
    """Restic forget's --keep-* flags for a retention policy."""
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
    """Restic's -o sftp.command: ssh with the repository's own key and pinned host key."""
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
        "MINIO_MIRROR": MIRROR_DIR,
    }
    rclone = RCLONE_REMOTE if settings.service("minio") else {}
    lines = ["# Generated by berth: the backup container's config. Sourced by the other scripts.", "set -u",
             *(f"{key}={shlex.quote(value)}" for key, value in config.items()),
             *(f"{key}={shlex.quote(value)}" for key, value in rclone.items()),
             " ".join(["export PGHOST PGUSER PGDATABASE", *rclone]),
             f"export RESTIC_PASSWORD_FILE={shlex.quote(PASSWORD_FILE)} RESTIC_CACHE_DIR=/backups/cache",
             f"[ -r {SERVICES_ENV} ] && . {SERVICES_ENV}", *_repo_case(section), _LIB_FUNCTIONS]
    return "\n".join(lines) + "\n"


# The scripts (berth/plan/scripts): they take every stack-specific value from lib.sh or their arguments.
_LIB_FUNCTIONS = _script("lib-functions.sh")
BACKUP_SH = _script("backup.sh")  # back up, forget --prune, copy off-host, one summary line
CHECK_SH = _script("check.sh")  # restic check --read-data-subset of every repository
HEALTH_SH = _script("health.sh")  # last success within twice the period, last check not failed
RESTORE_SH = _script("restore.sh")  # the parts of a restore that run in the backup container
RESTIC_SH = _script("restic.sh")  # restic against one repository, for operators and `backup list`
# Run by the CLI in one-shot containers on a target volume, the restore stream on stdin: a restore
# into a live volume is staged on it first (.berth-restore) and swapped in only once it arrived whole.
VOLUME_RESTORE_SH = _script("volume-restore.sh")
# The same for Redis's RDB, in the stack's Redis image: with appendonly on, Redis loads its AOF and
# ignores an RDB, so the swap loads the RDB once in a private server that rewrites it as the AOF.
REDIS_RESTORE_SH = _script("redis-restore.sh")


def periods(settings: Settings) -> str:
    """/berth/periods, read by health.sh and backup.sh: each backup schedule's name, period (s) and items."""
    return "".join(f"{job['name']} {job['period_seconds']} {' '.join(job['command'][4:])}\n"  # type: ignore[index]
                   for job in schedules(settings) if job["name"] != "check")


def scripts(settings: Settings) -> dict[str, str]:
    """Every file of /berth (not secret): path -> content."""
    return {f"{SCRIPTS_DIR}/lib.sh": lib_sh(settings), f"{SCRIPTS_DIR}/backup.sh": BACKUP_SH,
            f"{SCRIPTS_DIR}/check.sh": CHECK_SH, f"{SCRIPTS_DIR}/health.sh": HEALTH_SH,
            f"{SCRIPTS_DIR}/restore.sh": RESTORE_SH, f"{SCRIPTS_DIR}/restic.sh": RESTIC_SH,
            f"{SCRIPTS_DIR}/schedule.json": schedule_json(settings),
            f"{SCRIPTS_DIR}/periods": periods(settings)}


def env_file(values: Mapping[str, str]) -> str:
    """A file the scripts source: ``KEY='value'`` lines, each value shell-quoted."""
    return "".join(f"{key}={shlex.quote(values[key])}\n" for key in sorted(values))


def services_env(settings: Settings, postgres_password: str | None, redis_password: str | None,
                 minio_keys: tuple[str, str] | None = None) -> str:
    """The data services' credentials as the client tools read them (PGPASSWORD, REDISCLI_AUTH, rclone's keys)."""
    values = {}
    if postgres_password is not None:
        values["PGPASSWORD"] = postgres_password
    if redis_password is not None:
        values["REDISCLI_AUTH"] = redis_password
    if minio_keys is not None:
        values["RCLONE_CONFIG_MINIO_ACCESS_KEY_ID"], values["RCLONE_CONFIG_MINIO_SECRET_ACCESS_KEY"] = minio_keys
    return "".join(f"export {line}" for line in env_file(values).splitlines(keepends=True))


def restored_bucket(bucket: str, stamp: str) -> str:
    """A new bucket for a restore: ``<bucket>-restored-<stamp>``, the bucket cut so the name fits S3's 63."""
    suffix = f"-restored-{stamp}"
    return bucket[:BUCKET_MAX - len(suffix)].rstrip(".-") + suffix


def curlrc(user: str, password: str) -> str:
    """A curl config file holding the management API's login (quoted as curl's config syntax wants)."""
    login = f"{user}:{password}".replace("\\", "\\\\").replace('"', '\\"')
    return f'user = "{login}"\n'


def healthcheck_test() -> list[str]:
    """The container's healthcheck: health.sh (last success within twice the period, last check ok)."""
    return ["CMD", "sh", f"{SCRIPTS_DIR}/health.sh"]


def image_base(settings: Settings) -> str:
    """The image the backup image is built FROM.

    The stack's Postgres image (pg_dump of the server's own version), else the settings' base image.
    """
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
