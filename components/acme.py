"""Certbot: tls.mode letsencrypt's ACME client, a long-running container beside the proxy.

Creates the ``letsencrypt`` volume (ACME account, certificates, renewal config: retained like data,
so a replaced container never orders again), the ``acme`` volume it shares with nginx (the HTTP-01
webroot and the certificate nginx serves; retained as well), and the certbot container running berth/plan/files/acme.py.
"""

from __future__ import annotations

from datetime import timedelta

import pulumi

from berth.plan.acme import (
    CA_BUNDLE_PATH,
    LETSENCRYPT_DIR,
    SCRIPT_PATH,
    SHARED_DIR,
    SHARED_VOLUME,
    STATE_VOLUME,
    certbot_env,
    certbot_health,
    certbot_script,
)
from berth.plan.containers import docker_name
from components.common import ContainerSpec, Placement, ServiceArgs, container, data_volume, password, upload

# certbot holds no connection worth draining: a stop is immediate.
GRACE = timedelta(seconds=10)


class Certbot(pulumi.ComponentResource):
    """The volumes and the certbot container; nginx mounts ``shared`` read-only (components/proxy.py).

    The container has a fixed name, so it is replaced delete-before-replace: two certbots never
    work on the same account and lineage at once.
    """

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("berth:acme:Certbot", name, None, opts)
        settings = args.settings
        assert settings.proxy is not None and settings.proxy.tls.acme is not None
        acme = settings.proxy.tls.acme
        self.state = data_volume(f"{name}-state", settings, STATE_VOLUME, self)
        # Retained too: after a lost state nginx finds the certificate there before certbot has run.
        self.shared = data_volume(f"{name}-shared", settings, SHARED_VOLUME, self)
        uploads = [upload(SCRIPT_PATH, certbot_script(), secret=False)]
        if acme.ca_bundle is not None:
            uploads.append(upload(CA_BUNDLE_PATH, acme.ca_bundle, secret=False))
        secret_env = {}
        if acme.eab is not None:
            secret_env["BERTH_ACME_EAB_HMAC_KEY"] = password(f"{name}-eab", self, acme.eab.hmac_key)
        self.container = container(f"{name}-container", args, ContainerSpec(
            image=acme.image,
            placement=Placement(networks=[args.edge_network], aliases=[]),
            env=certbot_env(settings),
            secret_env=secret_env,
            command=["run"],
            health=(certbot_health(), acme.healthcheck),
            resources=acme.resources,
            volumes={LETSENCRYPT_DIR: self.state.name, SHARED_DIR: self.shared.name},
            uploads=uploads,
            fixed_name=docker_name(settings, "certbot"),
            grace=GRACE,
            extra={"entrypoints": ["python3", SCRIPT_PATH]},
        ), parent=self)
        self.register_outputs({"container": self.container.name, "volume": self.state.name})
