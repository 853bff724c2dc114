"""Shared building blocks of the settings models: the strict base model and the field types."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from berth.settings.reading import UNDECRYPTED, MultiLine
from berth.units import parse_bytes, parse_duration


class BerthModel(BaseModel):
    """Strict, frozen, and unknown keys are errors."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


def in_range(low: int, high: int):
    """A validator that keeps an int in low..high, with the rule in the message."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{value} is not in {low}..{high}")
        return value

    return check


def matching(pattern: str, rule: str):
    """A validator that requires a full regex match, with the rule in the message.

    ASCII only: without re.ASCII, the classes d, w and s match other scripts' digits,
    letters and spaces too, which none of the programs berth writes for reads the same way.
    """
    compiled = re.compile(pattern, re.ASCII)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not {rule}")
        return value

    return check


def _at_least(minimum: timedelta):
    def check(value: timedelta) -> timedelta:
        if value < minimum:
            raise ValueError(f"{value.total_seconds():g}s is shorter than {minimum.total_seconds():g}s")
        return value

    return check


Port = Annotated[int, AfterValidator(in_range(1, 65535))]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Grace = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_at_least(timedelta(seconds=30)))]
ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
Cpus = Annotated[float, BeforeValidator(lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v),
                 Field(gt=0, le=1024)]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _non_blank_secret(value: SecretStr) -> SecretStr:
    # An empty requirepass switches Redis authentication off; no service should get a blank secret.
    text = value.get_secret_value()
    if not text.strip():
        raise ValueError("a secret may not be empty or blank")
    # A newline would start a new directive in redis.conf; a NUL ends the string in initdb and libpq.
    if _CONTROL.search(text):
        raise ValueError("a secret may not hold control characters (newline, NUL, ...)")
    if len(text) > 1024:
        raise ValueError("a secret may be at most 1024 characters")
    return value


Secret = Annotated[SecretStr, BeforeValidator(lambda v: SecretStr(v) if isinstance(v, str) else v),
                   AfterValidator(_non_blank_secret)]

_PEM = re.compile(r"\s*(-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n(?:[A-Za-z0-9+/=:, -]{0,128}\r?\n){1,2000}"
                  r"-----END \2-----\s*)+", re.ASCII)


def _pem(value: SecretStr) -> SecretStr:
    # Offline synth cannot decrypt a secure: value; under `pulumi up` the decrypted PEM is checked.
    if value.get_secret_value() != UNDECRYPTED and not _PEM.fullmatch(value.get_secret_value()):
        raise ValueError("is not PEM text (-----BEGIN ...----- base64 lines -----END ...-----)")
    return value


# Certificates and keys: multi-line PEM text, secret end to end (berth.settings.reading.MultiLine).
Pem = Annotated[SecretStr, BeforeValidator(lambda v: SecretStr(v) if isinstance(v, str) else v), MultiLine(),
                AfterValidator(_pem)]

# A service name is also its DNS alias on the stack's networks.
Name = Annotated[str, AfterValidator(matching(r"[a-z](?:[a-z0-9-]{0,39}[a-z0-9])?",
                                              "a name of a-z, 0-9 and '-' starting with a letter, not ending "
                                              "with '-'"))]
# A docker volume name as written in settings (prefixed with the stack's name on the host).
VolumeName = Annotated[str, AfterValidator(matching(r"[a-z][a-z0-9_.-]{0,60}",
                                                    "a volume name of a-z, 0-9, '_', '.' and '-'"))]
EnvName = Annotated[str, AfterValidator(matching(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name"))]
def _abs_path(path: str) -> str:
    if not re.fullmatch(r"/[A-Za-z0-9._@%+=~,/-]{0,4095}", path, re.ASCII):
        raise ValueError(f"{path!r} is not an absolute path of letters, digits and ._@%+=~,/-")
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"{path!r} has a '.' or '..' segment")
    return path


def _not_root(path: str) -> str:
    if path.rstrip("/") == "":
        raise ValueError("a mount at / would hide the container's whole file system")
    return path


AbsPath = Annotated[str, AfterValidator(_abs_path)]
# Where a volume or tmpfs is mounted inside a container.
MountPath = Annotated[str, AfterValidator(_abs_path), AfterValidator(_not_root)]
# name[:tag][@sha256:<64 hex>], as `docker pull` accepts it.
ImageRef = Annotated[str, AfterValidator(matching(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?",
    "an image reference like repo/name:tag or repo/name@sha256:<64 hex>"))]


class Cadence(BerthModel):
    """How often and how patiently docker runs a healthcheck.

    ``start_interval`` (Docker Engine 25 or later, as in compose) probes that often during
    ``start_period`` until the first success, so a service ready in 3 s is healthy in about 3 s
    instead of one whole ``interval`` later. It is opt-in: older engines (Debian 12's docker.io is
    20.10) drop the field, and the provider would then read back a value that differs.
    """

    interval: Duration = timedelta(seconds=10)
    timeout: Duration = timedelta(seconds=5)
    retries: Annotated[int, AfterValidator(in_range(1, 100))] = 3
    start_period: Duration = timedelta(seconds=30)
    start_interval: Duration | None = None

    @model_validator(mode="after")
    def _start_interval_fits(self) -> Cadence:
        given = self.start_interval
        if given is not None and not timedelta(milliseconds=1) <= given <= self.interval:
            raise ValueError(f"start_interval ({given.total_seconds():g}s) is not between 1ms and "
                             f"interval ({self.interval.total_seconds():g}s)")
        return self


class ResourceAmounts(BerthModel):
    """CPUs and memory, as a limit or a reservation."""

    cpus: Cpus | None = None
    memory: ByteSize | None = None


class Resources(BerthModel):
    """CPU and memory limits and reservations, as in compose's deploy.resources."""

    limits: ResourceAmounts = ResourceAmounts()
    reservations: ResourceAmounts = ResourceAmounts()

    @model_validator(mode="after")
    def _reservations_fit(self) -> Resources:
        for field in ("cpus", "memory"):
            limit, reserved = getattr(self.limits, field), getattr(self.reservations, field)
            if limit is not None and reserved is not None and reserved > limit:
                raise ValueError(f"reservations.{field} ({reserved}) is above limits.{field} ({limit})")
        return self


# The options docker's --tmpfs takes (moby's mount.ParseTmpfsOptions): size and mode with a value,
# and the mount flags.
_TMPFS_FLAGS = ("rw", "ro", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime", "diratime",
                "nodiratime", "relatime", "norelatime", "strictatime", "nostrictatime")
_TMPFS_OPTION = re.compile(r"size=[0-9]{1,15}[kmg]?|mode=[0-7]{3,4}|uid=[0-9]{1,10}|gid=[0-9]{1,10}"
                           r"|nr_inodes=[0-9]{1,15}[kmg]?", re.ASCII)


def _tmpfs_options(text: str) -> str:
    for option in text.split(",") if text else []:
        if option not in _TMPFS_FLAGS and not _TMPFS_OPTION.fullmatch(option):
            raise ValueError(f"{option!r} is not a tmpfs option (size=64m, mode=1777, uid=, gid=, or a flag like "
                             "noexec, exec, nosuid, ro)")
    return text


TmpfsOptions = Annotated[str, AfterValidator(_tmpfs_options)]
