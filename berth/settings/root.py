"""The whole stack's settings, and the cross-section rules that tie the sections together."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from berth.errors import Problems
from berth.settings.apps import AppSettings, JobSettings
from berth.settings.backups import BackupSettings, check_backups
from berth.settings.base import BerthModel, Name, Secret, VolumeName, in_range, matching
from berth.settings.guardrails import AllowInsecure
from berth.settings.host import HostSettings, ImageOverrides, LogSettings, Registry
from berth.settings.provision import check_provision
from berth.settings.proxy import ProxySettings
from berth.settings.release import (
    DEFAULT_RELEASE_HISTORY,
    PromoteFromField,
    ReleaseHistory,
    ReleaseId,
    check_promotion,
)
from berth.settings.services import (
    DataService,
    ElkSettings,
    MinioSettings,
    PostgresSettings,
    RabbitMQSettings,
    RedisSettings,
)
from berth.settings.tls import check_tls

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
    # Releases (berth/settings/release.py): run another stack's exact images, or an earlier release's.
    promote_from: PromoteFromField | None = None
    rollback: ReleaseId | None = None
    release_history: ReleaseHistory = DEFAULT_RELEASE_HISTORY
    # Opt-outs of the prod/staging guardrails, each with its reason (berth/settings/guardrails.py).
    allow_insecure: AllowInsecure = {}
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
        found: list[tuple[str, str]] = []
        refs, known = self.secret_refs(), self.dependency_names()
        for kind, workloads in (("apps", self.enabled_apps), ("jobs", self.enabled_jobs)):
            for name, workload in workloads.items():
                found += self._check_workload(kind, name, workload, refs, known)
        if self.proxy is not None and self.proxy.enabled:
            found += self._check_routes(self.proxy)
        volumes: dict[str, str] = {}
        for service, volume in self._service_volume_owners():
            if volume in volumes:
                found.append((f"{service}.volume", f"{volume!r} is already {volumes[volume]}.volume; "
                                                   "each data service needs its own volume"))
            volumes.setdefault(volume, service)
        if self.logging.driver == "gelf" and not self.logging.address and not self.service("logstash"):
            found.append(("logging.address", "driver gelf needs an address, or elk in the stack to send to"))
        found += self._no_cycles()
        for check in (check_promotion, check_tls, check_provision, check_backups):  # each stops at its first problem
            try:
                check(self)
            except ValueError as error:
                path, _, rule = str(error).partition(": ")
                found.append((path, rule))
        Problems.check(found)
        return self

    def _check_routes(self, proxy: ProxySettings) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        routable = set(self.enabled_apps) | {c for c in CONSOLES if self._console_enabled(c)}
        for i, site in enumerate(proxy.sites):
            for j, route in enumerate(site.routes):
                where = f"proxy.sites[{i}].routes[{j}]"
                if route.app not in routable:
                    found.append((f"{where}.app",
                                  f"{route.app!r} (route {route.path}) is not one of {sorted(routable)}"))
                elif route.port is not None and route.app in self.enabled_apps:
                    app = self.enabled_apps[route.app]
                    if route.port not in (app.port, *app.extra_ports):
                        found.append((f"{where}.port", f"app {route.app} listens on {[app.port, *app.extra_ports]}, "
                                                       f"not {route.port}"))
        # Compared once {domain} is filled in: nginx would ignore the second and misroute its routes.
        seen: dict[str, str] = {}
        for name in (n for site in proxy.sites for n in site.server_names):
            host = name.replace("{domain}", self.domain)
            if seen.get(host) == name:
                found.append(("proxy.sites", f"server name {name!r} is in more than one site"))
            elif host in seen:
                found.append(("proxy.sites", f"server names {seen[host]!r} and {name!r} are both {host!r} "
                                             f"with domain {self.domain!r}"))
            elif len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
                found.append(("proxy.sites", f"server name {name!r} is {host!r} with domain {self.domain!r}, "
                                             "longer than DNS allows (63 per label, 253 in all)"))
            seen.setdefault(host, name)
        # The self-signed certificate's subject CN is the first name served (or the domain), and X.509
        # caps a CN at 64 characters (RFC 5280 ub-common-name); pulumi-tls would fail mid-deploy.
        named = [(f"proxy.sites[{i}].server_names[{j}]", n.replace("{domain}", self.domain))
                 for i, site in enumerate(proxy.sites) for j, n in enumerate(site.server_names) if n != "_"]
        where, common_name = named[0] if named else ("domain", self.domain)
        if proxy.tls.mode == "self-signed" and len(common_name) > 64:
            found.append((where, f"{common_name!r} is longer than 64 characters, the most a certificate's subject "
                                 "name (CN) may hold; put a shorter name first"))
        return found

    def _no_cycles(self) -> list[tuple[str, str]]:
        """A depends_on cycle, found without recursion (a ring of thousands of apps is still one line)."""
        kinds = {**{n: "apps" for n in self.enabled_apps}, **{n: "jobs" for n in self.enabled_jobs}}
        graph = {name: w.depends_on for name, w in {**self.enabled_apps, **self.enabled_jobs}.items()}
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in graph:
            if state.get(root):
                continue
            path: list[str] = [root]
            todo: list[list[str]] = [list(graph[root])]
            state[root] = 1
            while todo:
                if not todo[-1]:
                    state[path.pop()] = 2
                    todo.pop()
                    continue
                dep = todo[-1].pop(0)
                if state.get(dep) == 1:
                    ring = path[path.index(dep):]
                    shown = ring if len(ring) <= 8 else [*ring[:3], f"... ({len(ring) - 6} more)", *ring[-3:]]
                    cycle = " -> ".join((*shown, dep))
                    return [(f"{kinds[dep]}.{dep}.depends_on", f"{cycle} is a cycle")]
                if dep in graph and not state.get(dep):
                    state[dep] = 1
                    path.append(dep)
                    todo.append(list(graph[dep]))
        return []

    def _check_workload(self, kind: str, name: str, workload: AppSettings | JobSettings, refs: set[str],
                        known: set[str]) -> list[tuple[str, str]]:
        where = f"{kind}.{name}"
        if name in SERVICE_NAMES or name in RESERVED_NAMES:
            owner = "data service" if name in SERVICE_NAMES else "component"
            return [(where, f"{name!r} is taken by berth's own {owner}")]
        if kind == "jobs" and name in self.apps:
            return [(where, f"{name!r} is also an app")]
        found: list[tuple[str, str]] = []
        for env, ref in workload.secrets.items():
            if ref not in refs:
                found.append((f"{where}.secrets.{env}", f"{ref!r} is not one of {sorted(refs)}"))
        for dep in workload.depends_on:
            if dep == name or dep not in known:
                found.append((f"{where}.depends_on", f"{dep!r} is not one of {sorted(known - {name})}"))
        service_volumes = self._service_volumes() if workload.volumes else set()
        for volume in workload.volumes:
            if volume in service_volumes:
                found.append((f"{where}.volumes", f"{volume!r} is a data service's volume"))
        return found

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
