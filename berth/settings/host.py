"""Where the stack runs: the Docker host, registries, image overrides and log rotation."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from berth.settings.base import BerthModel, ByteSize, ImageRef, Secret
from berth.settings.provision import ProvisionSettings


class HostSettings(BerthModel):
    """The Docker engine: ``unix://`` socket, ``ssh://user@host[:port]`` or ``tcp://host:port`` with TLS."""

    url: str = "unix:///var/run/docker.sock"
    ssh_opts: list[str] = []
    ca: Secret | None = None
    cert: Secret | None = None
    key: Secret | None = None
    # Make a bare VPS a hardened Docker host first (berth/settings/provision.py); off by default.
    provision: ProvisionSettings = ProvisionSettings()

    @model_validator(mode="after")
    def _consistent(self) -> HostSettings:
        scheme = self.url.split("://", 1)[0] if "://" in self.url else ""
        if scheme not in ("unix", "ssh", "tcp"):
            raise ValueError(f"url {self.url!r} must start with unix://, ssh:// or tcp://")
        if scheme == "ssh" and "@" not in self.url:
            raise ValueError(f"url {self.url!r} must name the user: ssh://user@host[:port]")
        if self.ssh_opts and scheme != "ssh":
            raise ValueError("ssh_opts is only for an ssh:// url")
        tls = [name for name in ("ca", "cert", "key") if getattr(self, name) is not None]
        if tls and scheme != "tcp":
            raise ValueError(f"{', '.join(tls)} is only for a tcp:// url")
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        # Without a CA the provider would connect with cert+key and skip server verification.
        if self.cert is not None and self.ca is None:
            raise ValueError("cert and key need ca too, or the server's certificate goes unverified")
        return self

    @property
    def is_local(self) -> bool:
        """True for a unix socket on this machine."""
        return self.url.startswith("unix://")


class Registry(BerthModel):
    """Credentials for a private registry such as ghcr.io."""

    address: str
    username: str
    password: Secret


class LogSettings(BerthModel):
    """The docker log driver of every container: json-file rotation by default."""

    driver: Literal["json-file", "local", "gelf", "syslog"] = "json-file"
    max_size: ByteSize = 10 * 1024 * 1024
    max_file: int = 3
    # Where gelf/syslog send to, e.g. udp://127.0.0.1:12201; the docker daemon dials it from the host.
    address: str | None = None

    @model_validator(mode="after")
    def _address_for_remote(self) -> LogSettings:
        # gelf without an address goes to the stack's own Logstash; Settings checks there is one.
        if self.driver == "syslog" and not self.address:
            raise ValueError("driver syslog needs an address, e.g. udp://127.0.0.1:514")
        if self.driver in ("json-file", "local") and self.address:
            raise ValueError(f"address is only for gelf or syslog, not {self.driver}")
        return self


ImageOverrides = dict[ImageRef, ImageRef]
