"""Application containers and one-shot jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, model_validator

from berth.errors import Problems
from berth.settings.base import (
    AbsPath,
    BerthModel,
    Cadence,
    EnvName,
    Grace,
    ImageRef,
    MountPath,
    Name,
    Port,
    Resources,
    TmpfsOptions,
    VolumeName,
    in_range,
    matching,
)

UserSpec = Annotated[str, AfterValidator(matching(r"[a-z0-9_][a-z0-9_-]*(:[a-z0-9_][a-z0-9_-]*)?", "user[:group]"))]
HttpPath = Annotated[str, AfterValidator(matching(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*", "an HTTP path starting with /"))]


class Healthcheck(Cadence):
    """An app healthcheck: a command (exec form, or one string for a shell) or an HTTP path."""

    command: list[str] | str | None = None
    http: HttpPath | None = None

    @model_validator(mode="after")
    def _one_probe(self) -> Healthcheck:
        if (self.command is None) == (self.http is None):
            raise ValueError("give exactly one of command or http")
        return self


class Workload(BerthModel):
    """What apps and jobs share: the image, how it runs, its environment, secrets and volumes."""

    enabled: bool = True
    image: ImageRef
    command: list[str] | None = None
    env: dict[EnvName, str] = {}
    # ENV_NAME -> a generated secret, e.g. DATABASE_URL: postgres.databases.app.url
    secrets: dict[EnvName, str] = {}
    resources: Resources = Resources()
    user: UserSpec | None = None
    read_only: bool = False
    tmpfs: dict[MountPath, TmpfsOptions] = {}
    volumes: dict[VolumeName, MountPath] = {}
    depends_on: list[Name] = []
    working_dir: AbsPath | None = None

    @model_validator(mode="after")
    def _env_and_secrets_apart(self) -> Workload:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} is in both env and secrets")
        paths = list(self.volumes.values()) + list(self.tmpfs)
        for path in paths:
            if paths.count(path) > 1:
                raise ValueError(f"{path} is mounted twice")
        return self


class AppSettings(Workload):
    """A long-running application container, replicated behind one network alias."""

    replicas: Annotated[int, AfterValidator(in_range(1, 32))] = 1
    port: Port
    extra_ports: list[Port] = []
    healthcheck: Healthcheck | None = None
    restart: Literal["unless-stopped", "always", "on-failure"] = "unless-stopped"
    # How long the old container drains after its replacement is healthy.
    grace: Grace = timedelta(seconds=30)
    # start-first: the new container is healthy before the old one stops (no downtime). stop-first:
    # the old one stops before the new one starts, for a single writer of its volume's files (a
    # JSON-file or SQLite database), which two processes at once would corrupt. As in compose's
    # deploy.update_config.order.
    update_order: Literal["start-first", "stop-first"] = "start-first"
    # How long `pulumi up` waits for a new container to turn healthy.
    wait_timeout: Annotated[int, AfterValidator(in_range(10, 3600))] = 300

    @model_validator(mode="after")
    def _consistent(self) -> AppSettings:
        found: list[tuple[str, str]] = []
        ports = (self.port, *self.extra_ports)
        if len(set(ports)) != len(ports):
            found.append(("", f"ports {list(ports)} repeat a port"))
        given = self.env.get("PORT")
        if given is not None and given != str(self.port):
            found.append(("env.PORT", f"{given!r} is not the app's port {self.port}: the app would listen where "
                                      "nothing routes"))
        if self.update_order == "stop-first" and self.replicas > 1:
            found.append(("replicas", f"{self.replicas} replicas of a single writer (update_order stop-first); "
                                      "two processes would write its files at once"))
        if self.healthcheck is not None:
            first = (self.healthcheck.start_interval or self.healthcheck.interval) + self.healthcheck.timeout
            if self.wait_timeout < first.total_seconds():
                cadence = "healthcheck.start_interval" if self.healthcheck.start_interval else "healthcheck.interval"
                found.append(("wait_timeout", f"{self.wait_timeout}s is shorter than the first healthcheck can take "
                                              f"({first.total_seconds():g}s: {cadence} plus healthcheck.timeout)"))
        Problems.check(found)
        return self


class JobSettings(Workload):
    """A one-shot container that must exit 0 (e.g. migrations); apps can depend on it."""

    timeout: Annotated[int, AfterValidator(in_range(1, 86400))] = 600
