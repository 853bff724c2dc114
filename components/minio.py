"""MinIO: a data volume, generated root credentials, the S3 API and console, and a bucket job."""

from __future__ import annotations

import shlex

import pulumi

from berth.plan import minio as plan
from berth.plan.containers import docker_name
from components.common import (
    ContainerSpec,
    Placement,
    ServiceArgs,
    container,
    data_volume,
    password,
    setup_job,
)


class Minio(pulumi.ComponentResource):
    """MinIO on the data network: the API (9000) for apps; the console (9001) only if the proxy routes to it.

    Buckets are created by a one-shot `mc` container after MinIO is healthy; `mc mb --ignore-existing`
    makes that safe to run on every deploy.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:data:Minio", name, None, opts)
        settings = args.settings
        mn = settings.minio
        assert mn is not None
        self.volume = data_volume(f"{name}-data", settings, mn.volume, self)
        self.access_key = pulumi.Output.secret(mn.root_user)
        self.secret_key = password(f"{name}-root-password", self)
        networks = [args.data_network] + ([args.edge_network] if _console_routed(settings) else [])
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=mn.image,
            placement=Placement(networks=networks, aliases=["minio"]),
            env={"MINIO_ROOT_USER": mn.root_user},
            secret_env={"MINIO_ROOT_PASSWORD": self.secret_key},
            command=["server", "/data", "--address", f":{plan.API_PORT}", "--console-address", f":{plan.CONSOLE_PORT}"],
            health=(plan.healthcheck_test(), mn.healthcheck),
            resources=mn.resources,
            volumes={"/data": self.volume.name},
            fixed_name=docker_name(settings, "minio"),
            grace=mn.stop_grace,
        ), parent=self)
        self.ready: pulumi.Resource = self.container
        self.gate: pulumi.Output[str] | None = None
        if mn.buckets:
            target = self.secret_key.apply(lambda pw: plan.mc_host(mn.root_user, pw))
            script = " && ".join(f"mc mb --ignore-existing berth/{shlex.quote(b)}" for b in mn.buckets)
            self.buckets, self.gate = setup_job(
                f"{name}-buckets", args, self, self.container, ["/bin/sh"],
                image=mn.client_image, secret_env={"MC_HOST_berth": target}, command=["-c", script])
            self.ready = self.buckets
        self.refs = {"minio.access_key": self.access_key, "minio.secret_key": self.secret_key}
        self.register_outputs({"volume": self.volume.name})


def _console_routed(settings: object) -> bool:
    proxy = settings.proxy  # type: ignore[attr-defined]
    return bool(proxy and proxy.enabled and any(r.app == "minio-console" for s in proxy.sites for r in s.routes))
