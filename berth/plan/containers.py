"""Pure values every container shares: docker names, images, env, healthchecks, resources, logging.

Nothing here imports pulumi_docker; components plug these values into resources.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from berth.settings import SERVICE_NAMES, Cadence, Resources, Settings
from berth.settings.apps import AppSettings, Workload
from berth.settings.host import LogSettings
from berth.settings.release import SERVICE_IMAGES, service_images
from berth.units import go_duration, mebibytes

# Docker's restart policy for data services: back after a crash or a daemon restart, not after `docker stop`.
SERVICE_RESTART = "unless-stopped"
# The docker engine weighs CPU shares against 1024 per CPU; a reservation becomes that weight.
CPU_SHARES_PER_CPU = 1024
# A probe that works in Debian, Alpine (busybox wget) and Python images alike: the first tool present decides.
_HTTP_PROBE = (
    "curl -fsS -o /dev/null --max-time {t} {url} 2>/dev/null"
    " || wget -q -O /dev/null -T {t} {url} 2>/dev/null"
    " || python3 -c 'import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout={t})' {url}"
)


def docker_name(settings: Settings, *parts: str) -> str:
    """The name of a docker object on the host: ``<system>-<environment>-<part>``."""
    return "-".join((settings.name, settings.environment, *parts))


def resolve_image(ref: str, overrides: Mapping[str, str]) -> str:
    """Apply the stack's image overrides.

    An exact reference wins. Else a repository key moves the image to another repository and keeps
    its tag or digest, unless the replacement names its own tag or digest, which then wins whole.
    """
    if ref in overrides:
        return overrides[ref]
    repository, suffix = split_image(ref)
    if repository in overrides:
        replacement = overrides[repository]
        return replacement if split_image(replacement)[1] else replacement + suffix
    return ref


def split_image(ref: str) -> tuple[str, str]:
    """``repo:tag@digest`` -> (``repo``, ``:tag@digest``); a registry port is part of the repository."""
    name, at, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = name.rsplit(":", 1)
        return repository, f":{tag}{at}{digest}"
    return name, f"{at}{digest}"


def env_list(env: Mapping[str, str]) -> list[str]:
    """``KEY=value`` lines in key order, so a reordered mapping never shows a diff."""
    return [f"{key}={env[key]}" for key in sorted(env)]


def workload_env(settings: Settings, workload: Workload) -> dict[str, str]:
    """A workload's plain environment, with {domain} and {environment} filled in.

    An app is also told its port as PORT, unless its env already sets it.
    """
    env = {"PORT": str(workload.port)} if isinstance(workload, AppSettings) else {}
    for key, value in workload.env.items():
        env[key] = value.replace("{domain}", settings.domain).replace("{environment}", settings.environment)
    return env


def healthcheck(test: list[str], cadence: Cadence) -> dict[str, Any]:
    """Healthcheck inputs with durations in Go form.

    The provider reads durations back as Go's time.Duration.String() ("1m0s"), so any other
    spelling ("60s") is a diff on every preview (pulumi/pulumi-docker#1411 discusses these fields).
    start_interval is left out unless set: docker engines before 25 know no such field.
    """
    check: dict[str, Any] = {
        "tests": test,
        "interval": go_duration(cadence.interval),
        "timeout": go_duration(cadence.timeout),
        "start_period": go_duration(cadence.start_period),
        "retries": cadence.retries,
    }
    if cadence.start_interval is not None:
        check["start_interval"] = go_duration(cadence.start_interval)
    return check


def http_probe(port: int, path: str, timeout: timedelta) -> list[str]:
    """A CMD-SHELL healthcheck that GETs ``http://127.0.0.1:<port><path>`` and fails on non-2xx."""
    url = shlex.quote(f"http://127.0.0.1:{port}{path}")
    seconds = max(1, int(timeout.total_seconds()))
    return ["CMD-SHELL", _HTTP_PROBE.format(t=seconds, url=url)]


def app_healthcheck_test(app: AppSettings) -> list[str] | None:
    """The docker healthcheck test of an app: its command, or an HTTP probe on its own port."""
    check = app.healthcheck
    if check is None:
        return None
    if check.http is not None:
        return http_probe(app.port, check.http, check.timeout)
    if isinstance(check.command, str):
        return ["CMD-SHELL", check.command]
    return ["CMD", *(check.command or [])]


def resource_args(resources: Resources) -> dict[str, object]:
    """Limits and reservations as docker container inputs (memory in MiB, CPUs as a string)."""
    args: dict[str, object] = {}
    if resources.limits.cpus is not None:
        args["cpus"] = f"{resources.limits.cpus:g}"
    if resources.limits.memory is not None:
        args["memory"] = mebibytes(resources.limits.memory)
    if resources.reservations.cpus is not None:
        args["cpu_shares"] = round(resources.reservations.cpus * CPU_SHARES_PER_CPU)
    if resources.reservations.memory is not None:
        args["memory_reservation"] = mebibytes(resources.reservations.memory)
    return args


def effective_logging(settings: Settings, local: bool = False) -> LogSettings:
    """The log settings a container runs with.

    ``local`` containers (the ELK services themselves) keep json-file rotation, so Logstash never
    logs to itself; gelf without an address goes to the stack's Logstash on the host's loopback.
    """
    logging = settings.logging
    if local:
        return LogSettings(max_size=logging.max_size, max_file=logging.max_file)
    if logging.driver == "gelf" and not logging.address and settings.elk is not None:
        return logging.model_copy(update={"address": f"udp://127.0.0.1:{settings.elk.logstash.gelf_port}"})
    return logging


def log_args(logging: LogSettings, tag: str) -> dict[str, object]:
    """The log driver and its options; every value a string, as the engine reports them back.

    Always both, on every container: options the daemon fills in from its own defaults are read back
    and force a replacement on every apply (kreuzwerker/terraform-provider-docker#473, #873).
    """
    if logging.driver in ("json-file", "local"):
        opts = {"max-size": f"{mebibytes(logging.max_size)}m", "max-file": str(logging.max_file)}
    else:
        opts = {f"{logging.driver}-address": logging.address or "", "tag": tag}
    return {"log_driver": logging.driver, "log_opts": opts}


def seconds(value: timedelta) -> int:
    """Whole seconds, for the provider's integer timeouts."""
    return int(value.total_seconds())


def waits_for(workload: Workload) -> list[str]:
    """What a workload starts after: its depends_on, and every data service it takes a secret from.

    An app given ``postgres.databases.shop.url`` needs that database to exist when it starts, whether
    or not its settings also say ``depends_on: [postgres]``.
    """
    services = {ref.split(".", 1)[0] for ref in workload.secrets.values()} & set(SERVICE_NAMES)
    return sorted(set(workload.depends_on) | services)


def needs_data_network(workload: Workload) -> bool:
    """A workload joins the internal data network only if it waits for a data service."""
    return bool(set(waits_for(workload)) & set(SERVICE_NAMES))


def stack_images(settings: Settings) -> set[str]:
    """Every image reference the stack runs, before overrides."""
    return set(image_fields(settings).values())


def image_fields(settings: Settings) -> dict[str, str]:
    """Config path -> image reference, for every image the stack runs (before overrides)."""
    fields = {".".join(SERVICE_IMAGES[key]): ref for key, ref in service_images(settings).items()}
    fields |= {f"apps.{name}.image": app.image for name, app in settings.enabled_apps.items()}
    fields |= {f"jobs.{name}.image": job.image for name, job in settings.enabled_jobs.items()}
    return fields


def image_slug(ref: str) -> str:
    """The part of an image's Pulumi resource name that comes from its reference."""
    return re.sub(r"[^a-z0-9]+", "-", ref.split("@sha256:")[0].lower()).strip("-") + (
        "-" + ref.split("@sha256:")[1][:12] if "@sha256:" in ref else "")


def image_name_collisions(settings: Settings) -> list[tuple[str, str]]:
    """Two different images whose Pulumi resource names would be one (``web:2.0`` and ``web-2:0``).

    The slug is kept as it is, because renaming would replace every stack's image resources; the
    rare pair that collides is refused instead, naming the second reference's key.
    """
    seen: dict[str, tuple[str, str]] = {}
    found: list[tuple[str, str]] = []
    for path, ref in image_fields(settings).items():
        resolved = resolve_image(ref, settings.images)
        slug = image_slug(resolved)
        first = seen.setdefault(slug, (path, resolved))
        if first[1] != resolved:
            found.append((path, f"image {resolved!r} and {first[1]!r} ({first[0]}) would both be the resource "
                                f"images-{slug}; use a reference that differs in more than punctuation"))
    return found
