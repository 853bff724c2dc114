"""Redis: a data volume, a generated password, persistence, and the container."""

from __future__ import annotations

import pulumi

from berth.plan.containers import docker_name
from berth.plan.redis import CONF_PATH, healthcheck_test, redis_conf, redis_url
from components.common import ContainerSpec, Placement, ServiceArgs, container, data_volume, password, upload


class Redis(pulumi.ComponentResource):
    """Redis on the data network with requirepass and AOF/RDB persistence on its volume.

    The password lives in an uploaded config file and in REDISCLI_AUTH (for the healthcheck),
    never on the command line, which `docker inspect` and the Pulumi state would show.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:data:Redis", name, None, opts)
        settings = args.settings
        rd = settings.redis
        assert rd is not None
        self.volume = data_volume(f"{name}-data", settings, rd.volume, self)
        self.password = password(f"{name}-password", self, rd.password)
        self.url: pulumi.Output[str] = pulumi.Output.secret(self.password.apply(lambda pw: redis_url(pw, "redis")))
        conf = self.password.apply(lambda pw: redis_conf(rd, pw))
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=rd.image,
            placement=Placement(networks=[args.data_network], aliases=["redis"]),
            secret_env={"REDISCLI_AUTH": self.password},
            command=["redis-server", CONF_PATH],
            health=(healthcheck_test(), rd.healthcheck),
            resources=rd.resources,
            volumes={"/data": self.volume.name},
            uploads=[upload(CONF_PATH, conf, secret=True)],
            fixed_name=docker_name(settings, "redis"),
            grace=rd.stop_grace,
        ), parent=self)
        self.refs = {"redis.password": self.password, "redis.url": self.url}
        self.register_outputs({"volume": self.volume.name, "url": self.url})
