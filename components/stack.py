"""Stack: wires host, networks, images, data services, jobs, apps and the proxy by settings."""

from __future__ import annotations

from dataclasses import replace

import pulumi

from berth.plan.containers import stack_images
from berth.plan.nginx import site_urls
from berth.plan.order import start_order
from berth.settings import Settings
from components.app import AppService
from components.backup import Backup
from components.common import ServiceArgs, password
from components.elk import Elk
from components.host import DockerHost
from components.images import Images
from components.job import Job
from components.minio import Minio
from components.network import Networks
from components.postgres import Postgres
from components.provision import Provisioning
from components.proxy import NginxProxy
from components.rabbitmq import RabbitMQ
from components.redis import Redis
from components.volumes import Volumes


class Stack(pulumi.ComponentResource):
    """The whole environment on one Docker host. Start order is gated on health.

    Data services come first (each created only once healthy), then jobs and apps in dependency
    order (an app that needs a job starts after the job exited 0), then the proxy.
    """

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:stack:Stack", name, None, opts)
        # A provisioned host is made a Docker host first: the provider, and so every docker resource, waits.
        self.provisioning = (Provisioning("provision", settings, pulumi.ResourceOptions(parent=self))
                             if settings.host.provision.enabled else None)
        self.host = DockerHost("host", settings.host, settings.registries, pulumi.ResourceOptions(parent=self),
                               after=self.provisioning.steps if self.provisioning else ())
        # Every docker resource below inherits this provider through its parent: never the default one.
        on_host = pulumi.ResourceOptions(parent=self, provider=self.host.provider)
        self.networks = Networks("network", settings, on_host)
        self.images = Images("images", settings, stack_images(settings), on_host)
        args = ServiceArgs(settings=settings, images=self.images.ids, edge_network=self.networks.edge.name,
                           data_network=self.networks.data.name)
        self.services = self._data_services(args, on_host)
        self.volumes = Volumes("volumes", settings, on_host)
        self.secrets = self._secrets(settings)
        # Connection URLs for operators, exported as one secret.
        self.connections = {ref: value for ref, value in self.secrets.items() if ref.endswith(".url")}
        # A data service's setup job (databases, buckets) must have exited 0 before its dependents start.
        setups = (("postgres", self.postgres), ("minio", self.minio), ("elasticsearch", self.elk))
        gates = {name: component.gate for name, component in setups
                 if component is not None and component.gate is not None}
        args = replace(args, secrets=self.secrets, after=dict(self.services), volumes=self.volumes.names,
                       gates=gates)
        self.jobs: dict[str, Job] = {}
        self.apps: dict[str, AppService] = {}
        for kind, name_ in start_order(settings):
            if kind == "jobs":
                job = self.jobs[name_] = Job(name_, args, on_host)
                args = replace(args, after={**args.after, name_: job}, gates={**args.gates, name_: job.exit_gate})
            else:
                app = self.apps[name_] = AppService(name_, args, on_host)
                args = replace(args, after={**args.after, name_: app})
        self.proxy = NginxProxy("proxy", args, on_host) if settings.proxy and settings.proxy.enabled else None
        backups = settings.backups is not None and settings.backups.enabled
        self.backup = Backup("backup", args, self.images, on_host) if backups else None
        self.urls = site_urls(settings)
        self.register_outputs({"apps": list(self.apps), "services": list(self.services)})

    def _data_services(self, args: ServiceArgs, opts: pulumi.ResourceOptions) -> dict[str, pulumi.Resource]:
        """Create the enabled data services; returns what workloads wait for, by dependency name."""
        on = args.settings.service
        self.postgres = Postgres("postgres", args, opts) if on("postgres") else None
        self.redis = Redis("redis", args, opts) if on("redis") else None
        self.rabbitmq = RabbitMQ("rabbitmq", args, opts) if on("rabbitmq") else None
        self.minio = Minio("minio", args, opts) if on("minio") else None
        self.elk = Elk("elk", args, opts) if on("elasticsearch") else None
        services: dict[str, pulumi.Resource | None] = {
            "postgres": self.postgres, "redis": self.redis, "rabbitmq": self.rabbitmq,
            "minio": self.minio and self.minio.ready,  # apps wait for the buckets, not just the server
            # apps wait for the credentials job: `elastic` takes the current password there
            "elasticsearch": self.elk and self.elk.credentials_job, "logstash": self.elk and self.elk.logstash,
            "kibana": self.elk and self.elk.kibana,
        }
        return {name: resource for name, resource in services.items() if resource is not None}

    def _secrets(self, settings: Settings) -> dict[str, pulumi.Output[str]]:
        """Every value a workload may reference: user-declared secrets and each data service's refs."""
        book = {f"secrets.{name}": password(f"secret-{name}", self, spec.value, spec.length, spec.special)
                for name, spec in sorted(settings.secrets.items())}
        for component in (self.postgres, self.redis, self.rabbitmq, self.minio, self.elk):
            if component is not None:
                book |= component.refs
        return book
