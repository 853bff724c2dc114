"""The whole stack's settings, and the cross-section rules that tie the sections together."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from berth.settings.apps import AppSettings, JobSettings
from berth.settings.backups import BackupSettings, check_backups
from berth.settings.base import BerthModel, Name, Secret, VolumeName, in_range, matching
from berth.settings.host import HostSettings, ImageOverrides, LogSettings, Registry
from berth.settings.proxy import ProxySettings
from berth.settings.services import (
    DataService,
    ElkSettings,
    MinioSettings,
    PostgresSettings,
    RabbitMQSettings,
    RedisSettings,
)

Domain = Annotated[str, AfterValidator(matching(
    r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*", "a domain name like example.com"))]

# Names of the data services: each is also a DNS alias on the data network, so apps may not take them.
SERVICE_NAMES = ("postgres", "redis", "rabbitmq", "minio", "elasticsearch", "logstash", "kibana")
# Web consoles the proxy may route to when asked: name -> port inside the stack.
CONSOLES = {"kibana": 5601, "minio-console": 9001}


SecretName = Annotated[str, AfterValidator(matching(r"[a-z][a-z0-9_-]{0,62}", "a name of a-z, 0-9, '_' and '-'"))]
# Names the stack's own components take; an app or job may not take them too.
RESERVED_NAMES = ("host", "network", "images", "volumes", "proxy", "backup")


class GeneratedSecret(BerthModel):
    """A secret apps reference as ``secrets.<name>``: given (an API key) or generated with pulumi-random."""

    value: Secret | None = None
    length: Annotated[int, AfterValidator(in_range(16, 256))] = 32
    special: bool = False


class Settings(BerthModel):
    """Everything one stack deploys, validated once and frozen."""

    name: Name = "berth"
    environment: Name
    blueprint: Name | None = None
    domain: Domain = "localhost"
    protect_data: bool = False
    host: HostSettings = HostSettings()
    images: ImageOverrides = {}
    registries: list[Registry] = []
    logging: LogSettings = LogSettings()
    secrets: dict[SecretName, GeneratedSecret] = {}
    postgres: PostgresSettings | None = None
    redis: RedisSettings | None = None
    rabbitmq: RabbitMQSettings | None = None
    minio: MinioSettings | None = None
    elk: ElkSettings | None = None
    apps: dict[Name, AppSettings] = Field(default_factory=dict)
    jobs: dict[Name, JobSettings] = Field(default_factory=dict)
    proxy: ProxySettings | None = None
    backups: BackupSettings | None = None

    # -- derived views, used by validation and by the plan ------------------------------------

    def service(self, name: str) -> object | None:
        """The enabled settings section of a data service, or None."""
        section = self.elk if name in ("elasticsearch", "logstash", "kibana") else getattr(self, name, None)
        return section if section is not None and section.enabled else None

    @property
    def enabled_apps(self) -> dict[str, AppSettings]:
        """Apps switched on in this stack."""
        return {name: app for name, app in self.apps.items() if app.enabled}

    @property
    def enabled_jobs(self) -> dict[str, JobSettings]:
        """Jobs switched on in this stack."""
        return {name: job for name, job in self.jobs.items() if job.enabled}

    def secret_refs(self) -> set[str]:
        """Every generated value an app or job may take into its environment as a secret."""
        refs = {f"secrets.{name}" for name in self.secrets}
        if pg := self.service("postgres"):
            refs |= {"postgres.password", "postgres.url"}
            for db in pg.databases:  # type: ignore[attr-defined]
                refs |= {f"postgres.databases.{db}.password", f"postgres.databases.{db}.url"}
        if self.service("redis"):
            refs |= {"redis.password", "redis.url"}
        if mq := self.service("rabbitmq"):
            refs |= {"rabbitmq.admin_password", "rabbitmq.url"}
            for user in mq.users:  # type: ignore[attr-defined]
                refs |= {f"rabbitmq.users.{user}.password", f"rabbitmq.users.{user}.url"}
        if self.service("minio"):
            refs |= {"minio.access_key", "minio.secret_key"}
        if self.service("elasticsearch"):
            refs |= {"elasticsearch.password", "elasticsearch.url"}
        return refs

    def dependency_names(self) -> set[str]:
        """Everything a workload may name in depends_on."""
        services = {name for name in SERVICE_NAMES if self.service(name)}
        return services | set(self.enabled_apps) | set(self.enabled_jobs)

    # -- cross-section rules ------------------------------------------------------------------

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        for kind, workloads in (("apps", self.enabled_apps), ("jobs", self.enabled_jobs)):
            for name, workload in workloads.items():
                self._check_workload(kind, name, workload)
        if self.proxy is not None and self.proxy.enabled:
            routable = set(self.enabled_apps) | {c for c in CONSOLES if self._console_enabled(c)}
            for i, site in enumerate(self.proxy.sites):
                for j, route in enumerate(site.routes):
                    if route.app not in routable:
                        raise ValueError(f"proxy.sites[{i}].routes[{j}].app: {route.app!r} (route {route.path}) "
                                         f"is not one of {sorted(routable)}")
        if self.proxy is not None and self.proxy.enabled:
            # Compared once {domain} is filled in: nginx would ignore the second and misroute its routes.
            seen: dict[str, str] = {}
            for name in (n for site in self.proxy.sites for n in site.server_names):
                host = name.replace("{domain}", self.domain)
                if seen.get(host) == name:
                    raise ValueError(f"proxy.sites: server name {name!r} is in more than one site")
                if host in seen:
                    raise ValueError(f"proxy.sites: server names {seen[host]!r} and {name!r} are both {host!r} "
                                     f"with domain {self.domain!r}")
                seen[host] = name
        volumes: dict[str, str] = {}
        for service, volume in self._service_volume_owners():
            if volume in volumes:
                raise ValueError(f"{service}.volume: {volume!r} is already {volumes[volume]}.volume; "
                                 "each data service needs its own volume")
            volumes[volume] = service
        if self.logging.driver == "gelf" and not self.logging.address and not self.service("logstash"):
            raise ValueError("logging.address: driver gelf needs an address, or elk in the stack to send to")
        self._no_cycles()
        check_backups(self)
        return self

    def _no_cycles(self) -> None:
        kinds = {**{n: "apps" for n in self.enabled_apps}, **{n: "jobs" for n in self.enabled_jobs}}
        graph = {name: w.depends_on for name, w in {**self.enabled_apps, **self.enabled_jobs}.items()}
        done: set[str] = set()

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                start = path[path.index(name)]
                cycle = " -> ".join((*path[path.index(name):], name))
                raise ValueError(f"{kinds[start]}.{start}.depends_on: {cycle} is a cycle")
            if name not in done:
                for dep in graph.get(name, ()):
                    visit(dep, (*path, name))
                done.add(name)

        for name in graph:
            visit(name, ())

    def _check_workload(self, kind: str, name: str, workload: AppSettings | JobSettings) -> None:
        where = f"{kind}.{name}"
        if name in SERVICE_NAMES or name in RESERVED_NAMES:
            owner = "data service" if name in SERVICE_NAMES else "component"
            raise ValueError(f"{where}: {name!r} is taken by berth's own {owner}")
        if kind == "jobs" and name in self.apps:
            raise ValueError(f"{where}: {name!r} is also an app")
        refs = self.secret_refs()
        for env, ref in workload.secrets.items():
            if ref not in refs:
                raise ValueError(f"{where}.secrets.{env}: {ref!r} is not one of {sorted(refs)}")
        known = self.dependency_names()
        for dep in workload.depends_on:
            if dep == name or dep not in known:
                raise ValueError(f"{where}.depends_on: {dep!r} is not one of {sorted(known - {name})}")
        for volume in workload.volumes:
            if volume in self._service_volumes():
                raise ValueError(f"{where}.volumes: {volume!r} is a data service's volume")

    def _service_volumes(self) -> set[VolumeName]:
        return {volume for _, volume in self._service_volume_owners()}

    def _service_volume_owners(self) -> list[tuple[str, VolumeName]]:
        """(config key of the service, its volume) for every enabled data service."""
        sections = {name: self.service(name) for name in ("postgres", "redis", "rabbitmq", "minio")}
        owners = [(name, section.volume) for name, section in sections.items()
                  if isinstance(section, DataService)]
        if self.service("elasticsearch") and self.elk is not None:
            owners.append(("elk.elasticsearch", self.elk.elasticsearch.volume))
        return owners

    def _console_enabled(self, console: str) -> bool:
        return self.service("kibana" if console == "kibana" else "minio") is not None
