"""Networks: the edge network (proxy <-> apps) and the internal data network (apps <-> data services)."""

from __future__ import annotations

import pulumi
import pulumi_docker as docker

from berth.plan.containers import docker_name
from berth.settings import Settings


class Networks(pulumi.ComponentResource):
    """Creates the edge bridge and the `internal: true` data network, which has no route out."""

    def __init__(self, name: str, settings: Settings, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:network:Networks", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = [docker.NetworkLabelArgs(label="berth.environment", value=settings.environment)]
        self.edge = docker.Network(f"{name}-edge", name=docker_name(settings, "edge"), driver="bridge",
                                   labels=labels, opts=child)
        self.data = docker.Network(f"{name}-data", name=docker_name(settings, "data"), driver="bridge",
                                   internal=True, labels=labels, opts=child)
        self.register_outputs({"edge": self.edge.name, "data": self.data.name})
