"""DockerHost: the stack's explicit docker.Provider, so no resource can land on another host.

On a provisioned host the provider waits for provisioning (so every docker resource does), and its
ssh trusts only the configured host key.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_docker as docker

from berth.plan.provision import provider_ssh_opts
from berth.settings.host import HostSettings, Registry


class DockerHost(pulumi.ComponentResource):
    """Creates the docker.Provider for the configured host, with TLS material and registry credentials."""

    def __init__(self, name: str, host: HostSettings, registries: list[Registry],
                 opts: pulumi.ResourceOptions | None = None, after: Sequence[pulumi.Resource] = ()) -> None:
        super().__init__("berth:host:DockerHost", name, None, opts)
        self.provider = docker.Provider(
            f"{name}-docker",
            host=host.url,
            ssh_opts=provider_ssh_opts(host) or None,
            ca_material=_secret(host.ca),
            cert_material=_secret(host.cert),
            key_material=_secret(host.key),
            registry_auth=[
                docker.ProviderRegistryAuthArgs(
                    address=registry.address,
                    username=registry.username,
                    password=pulumi.Output.secret(registry.password.get_secret_value()),
                )
                for registry in registries
            ] or None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        self.register_outputs({"url": host.url})


def _secret(value: object | None) -> pulumi.Output[str] | None:
    return None if value is None else pulumi.Output.secret(value.get_secret_value())  # type: ignore[attr-defined]
