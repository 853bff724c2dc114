"""Backups: schedule, retention, what is backed up, and where (restic repositories)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from croniter import croniter  # type: ignore[import-untyped]
from pydantic import AfterValidator, model_validator

from berth.settings.base import (
    BerthModel,
    Cadence,
    Duration,
    EnvName,
    ImageRef,
    Name,
    Pem,
    Resources,
    Secret,
    VolumeName,
    in_range,
    matching,
)

if TYPE_CHECKING:
    from berth.settings.root import Settings

# What berth knows how to back up; each is one kind of restic snapshot (see berth/plan/backups.py).
ITEMS = ("postgres", "redis", "rabbitmq", "minio", "volumes")
Item = Literal["postgres", "redis", "rabbitmq", "minio", "volumes"]
# restic backends berth can drive. A stack's own MinIO is never one of them: it is not off-host.
SCHEMES = ("sftp", "s3", "rest")
# How many fire times are sampled to find a schedule's longest gap (its period, for the health check).
_PERIOD_SAMPLES = 400


def _cron(expression: str) -> str:
    # croniter, not a regex: it knows ranges, steps, names and the day-of-month/day-of-week rules.
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a 5-field cron expression (minute hour day month weekday)")
    return expression


Cron = Annotated[str, AfterValidator(_cron)]
Keep = Annotated[int, AfterValidator(in_range(1, 100000))]
# restic's --keep-within duration: years, months, days, hours, e.g. 30d or 1y6m.
Within = Annotated[str, AfterValidator(matching(r"(\d+[ymdh])+", "a restic duration like 30d, 12h or 1y6m"))]
Percent = Annotated[str, AfterValidator(matching(r"(100|[1-9]?\d)(\.\d+)?%", "a percentage like 5%"))]


def period(expression: str) -> timedelta:
    """The longest gap between two consecutive fire times of a cron expression (UTC)."""
    times = croniter(expression, datetime(2026, 1, 1, tzinfo=UTC))
    fires = [times.get_next(datetime) for _ in range(_PERIOD_SAMPLES)]
    return max(b - a for a, b in zip(fires, fires[1:], strict=False))


class Retention(BerthModel):
    """restic's `forget` policy: how many snapshots of each kind stay, per item."""

    last: Keep | None = None
    hourly: Keep | None = None
    daily: Keep | None = None
    weekly: Keep | None = None
    monthly: Keep | None = None
    within: Within | None = None

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError("keeps nothing: set at least one of last, hourly, daily, weekly, monthly, within")
        return self


class Repository(BerthModel):
    """An off-host restic repository.

    ``sftp://user@host[:port]/path``, ``s3:https://host/bucket[/path]`` or ``rest:https://[user:pass@]host[:port]/path``.
    """

    url: str
    # Backend credentials as restic reads them from its environment, e.g. AWS_ACCESS_KEY_ID.
    env: dict[EnvName, Secret] = {}
    # sftp: the private key restic's ssh logs in with, and the server's host key line(s).
    ssh_key: Pem | None = None  # an OpenSSH or PEM private key, multi-line
    known_hosts: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> Repository:
        scheme = self.scheme
        if scheme not in SCHEMES:
            raise ValueError(f"url {self.url!r} has scheme {scheme!r}; supported: "
                             + ", ".join(f"{s}:" for s in SCHEMES))
        if scheme == "sftp":
            parts = urlsplit(self.url)
            if not parts.username or not parts.hostname or not parts.path.strip("/"):
                raise ValueError(f"url {self.url!r} must be sftp://user@host[:port]/path")
            if self.ssh_key is None or not self.known_hosts:
                raise ValueError("an sftp repository needs ssh_key and known_hosts (the server's host key)")
        elif self.ssh_key is not None or self.known_hosts:
            raise ValueError("ssh_key and known_hosts are only for an sftp repository")
        return self

    @property
    def scheme(self) -> str:
        """sftp, s3 or rest (whatever precedes the first ':')."""
        return self.url.split(":", 1)[0] if ":" in self.url else ""


class BackupSettings(BerthModel):
    """Scheduled restic backups of the stack's data, run by a long-running backup container."""

    enabled: bool = True
    schedule: Cron = "0 2 * * *"
    # An item may run on a schedule of its own, e.g. RabbitMQ's definitions weekly.
    schedules: dict[Item, Cron] = {}
    retention: Retention = Retention(daily=7)
    # `restic check --read-data-subset`: on its own schedule, reading this much of the packs.
    check_schedule: Cron = "30 4 * * 0"
    check_subset: Percent = "5%"
    # None: everything in the stack that holds data.
    include: list[Item] | None = None
    # The repository on the host: a retained volume (like every data volume).
    volume: VolumeName = "backups"
    repositories: dict[Name, Repository] = {}
    # The image the backup image is built from when the stack has no Postgres (with one, it is
    # built from the stack's own Postgres image, so pg_dump is the server's version).
    base_image: ImageRef = "debian:bookworm-slim"
    # The container's health is backup freshness and the last check, so probing once a minute is plenty.
    healthcheck: Cadence = Cadence(interval=timedelta(seconds=60), timeout=timedelta(seconds=10), retries=2,
                                   start_period=timedelta(seconds=30))
    # pg_dump, redis-cli and restic (whose index grows with the repository) in one container.
    resources: Resources = Resources.model_validate({"limits": {"memory": 1024**3}})
    # A run in progress when the container stops is cut; the next run starts over.
    stop_grace: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _consistent(self) -> BackupSettings:
        if self.include is not None:
            seen: set[str] = set()
            for i, item in enumerate(self.include):
                if item in seen:
                    raise ValueError(f"include[{i}]: {item!r} is listed twice")
                seen.add(item)
        if "local" in self.repositories:
            raise ValueError("repositories.local: 'local' is the repository on the host; name the off-host one")
        return self


def available_items(settings: Settings) -> list[str]:
    """What in this stack holds data, in ITEMS order: enabled services, and app/job volumes."""
    found = [name for name in ("postgres", "redis", "rabbitmq", "minio") if settings.service(name)]
    if workload_volumes(settings):
        found.append("volumes")
    return found


def workload_volumes(settings: Settings) -> list[str]:
    """Every named volume an enabled app or job mounts, sorted."""
    workloads = (*settings.enabled_apps.values(), *settings.enabled_jobs.values())
    return sorted({volume for workload in workloads for volume in workload.volumes})


def check_backups(settings: Settings) -> None:
    """The rules that need the rest of the stack: what is included exists, the repository volume is free."""
    backups = settings.backups
    if backups is None or not backups.enabled:
        return
    available = available_items(settings)
    for i, item in enumerate(backups.include or []):
        if item not in available:
            raise ValueError(f"backups.include[{i}]: {item!r} holds no data in this stack (it has {available})")
    items = backups.include if backups.include is not None else available
    for item in backups.schedules:
        if item not in items:
            raise ValueError(f"backups.schedules.{item}: {item!r} is not backed up (backed up: {list(items)})")
    if backups.volume in workload_volumes(settings) or backups.volume in {
            getattr(settings.service(name), "volume", None) for name in ("postgres", "redis", "rabbitmq", "minio")}:
        raise ValueError(f"backups.volume: {backups.volume!r} is already a volume of the stack")
