"""Stack: wires host, networks, images, data services, jobs, apps and the proxy by settings."""

from __future__ import annotations

from dataclasses import replace

import pulumi

from berth.plan.containers import stack_images
from berth.plan.nginx import site_urls
from berth.plan.order import start_order
from berth.settings import Settings
from components.app import AppService
from components.common import ServiceArgs, password
from components.elk import Elk
from components.host import DockerHost
from components.images import Images
from components.job import Job
from components.minio import Minio
from components.network import Networks
from components.postgres import Postgres
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
        self.host = DockerHost("host", settings.host, settings.registries, pulumi.ResourceOptions(parent=self))
        # Every docker resource below inherits this provider through its parent: never the default one.
        on_host = pulumi.ResourceOptions(parent=self, provider=self.host.provider)
        self.networks = Networks("network", settings, on_host)
        self.images = Images("images", settings, stack_images(settings), on_host)
        args = ServiceArgs(settings=settings, images=self.images.ids, edge_network=self.networks.edge.name,
                           data_network=self.networks.data.name)
        self.services = self._data_services(args, on_host)
        self.volumes = Volumes("volumes", settings, on_host)
        book = self._secrets(settings)
        # Connection URLs for operators, exported as one secret.
        self.connections = {ref: value for ref, value in book.items() if ref.endswith(".url")}
        args = replace(args, secrets=book, after=dict(self.services), volumes=self.volumes.names)
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
        self.urls = site_urls(settings)
        self.register_outputs({"apps": list(self.apps), "services": list(self.services)})

    def _data_services(self, args: ServiceArgs, opts: pulumi.ResourceOptions) -> dict[str, pulumi.Resource]:
        settings = args.settings
        services: dict[str, pulumi.Resource] = {}
        if settings.service("postgres"):
            services["postgres"] = self.postgres = Postgres("postgres", args, opts)
        if settings.service("redis"):
            services["redis"] = self.redis = Redis("redis", args, opts)
        if settings.service("rabbitmq"):
            services["rabbitmq"] = self.rabbitmq = RabbitMQ("rabbitmq", args, opts)
        if settings.service("minio"):
            self.minio = Minio("minio", args, opts)
            services["minio"] = self.minio.ready
        if settings.service("elasticsearch"):
            self.elk = Elk("elk", args, opts)
            services |= {"elasticsearch": self.elk.elasticsearch, "logstash": self.elk.logstash,
                         "kibana": self.elk.kibana}
        return services

    def _secrets(self, settings: Settings) -> dict[str, pulumi.Output[str]]:
        book: dict[str, pulumi.Output[str]] = {}
        for name, spec in sorted(settings.secrets.items()):
            book[f"secrets.{name}"] = password(f"secret-{name}", self, spec.value, spec.length, spec.special)
        if "postgres" in self.services:
            book["postgres.password"], book["postgres.url"] = self.postgres.password, self.postgres.url
            for db in self.postgres.database_urls:
                book[f"postgres.databases.{db}.password"] = self.postgres.database_passwords[db]
                book[f"postgres.databases.{db}.url"] = self.postgres.database_urls[db]
        if "redis" in self.services:
            book["redis.password"], book["redis.url"] = self.redis.password, self.redis.url
        if "rabbitmq" in self.services:
            admin = settings.rabbitmq.admin_user  # type: ignore[union-attr]
            book["rabbitmq.admin_password"] = self.rabbitmq.passwords[admin]
            book["rabbitmq.url"] = self.rabbitmq.urls[admin]
            for user in settings.rabbitmq.users:  # type: ignore[union-attr]
                book[f"rabbitmq.users.{user}.password"] = self.rabbitmq.passwords[user]
                book[f"rabbitmq.users.{user}.url"] = self.rabbitmq.urls[user]
        if "minio" in self.services:
            book["minio.access_key"], book["minio.secret_key"] = self.minio.access_key, self.minio.secret_key
        if "elasticsearch" in self.services:
            book["elasticsearch.password"], book["elasticsearch.url"] = self.elk.elastic_password, self.elk.url
        return book
