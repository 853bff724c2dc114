"""Where the stack runs: the Docker host, registries, image overrides and log rotation."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from berth.settings import grammar
from berth.settings.base import BerthModel, ByteSize, ImageRef, Pem, Secret, in_range
from berth.settings.provision import ProvisionSettings

# ssh options that run a command on the operator's machine: a stack file must not carry them.
_COMMAND_OPTIONS = re.compile(r"(?:^|-o\s*)(proxycommand|localcommand|permitlocalcommand|knownhostscommand)\b",
                              re.IGNORECASE | re.ASCII)
_SSH_OPT = re.compile(r"[A-Za-z0-9._=/:@%+,~-]+( [A-Za-z0-9._=/:@%+,~-]+)*", re.ASCII)


def _host_url(url: str) -> str:
    grammar.docker_host_url(url)
    return url


def _ssh_opts(opts: list[str]) -> list[str]:
    for opt in opts:
        if not _SSH_OPT.fullmatch(opt):
            raise ValueError(f"{opt!r} is not an ssh option word (letters, digits and ._=/:@%+,~-)")
        if _COMMAND_OPTIONS.search(opt):
            raise ValueError(f"{opt!r} runs a command on the operator's machine; configure it in ~/.ssh/config")
    return opts


def _registry_address(address: str) -> str:
    problem = grammar.host_port(address, port_required=False)
    if problem:
        raise ValueError(f"registry address {address!r}: {problem}")
    return address


def _log_address(address: str) -> str:
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("udp", "tcp", "tcp+tls"):
        raise ValueError(f"{address!r} is not udp://host:port, tcp://host:port or tcp+tls://host:port")
    problem = grammar.host_port(rest, port_required=True)
    if problem:
        raise ValueError(f"{address!r}: {problem}")
    return address


def _at_least_one_mib(size: int) -> int:
    # max-size is written in whole MiB, rounded up (berth.units.mebibytes); 0 would mean no rotation.
    if size < 1:
        raise ValueError("0 is no size; log files need a max_size of at least 1 byte (written as 1m)")
    return size


HostUrl = Annotated[str, AfterValidator(_host_url)]


class HostSettings(BerthModel):
    """The Docker engine: ``unix://`` socket, ``ssh://user@host[:port]`` or ``tcp://host:port`` with TLS."""

    url: HostUrl = "unix:///var/run/docker.sock"
    ssh_opts: Annotated[list[str], AfterValidator(_ssh_opts)] = []
    ca: Pem | None = None
    cert: Pem | None = None
    key: Pem | None = None
    # A private key for ssh://, on the machine that runs pulumi: the provider and the preflight get
    # `-i <path> -o IdentitiesOnly=yes`, so neither depends on an agent or on ~/.ssh/config.
    ssh_key: str | None = None
    # Reach the host before any resource is registered (berth/preflight.py); false for offline review.
    preflight: bool = True
    # Make a bare VPS a hardened Docker host first (berth/settings/provision.py); off by default.
    provision: ProvisionSettings = ProvisionSettings()

    @model_validator(mode="after")
    def _consistent(self) -> HostSettings:
        scheme = self.url.split("://", 1)[0]
        if self.ssh_opts and scheme != "ssh":
            raise ValueError("ssh_opts is only for an ssh:// url")
        if self.ssh_key is not None and scheme != "ssh":
            raise ValueError("ssh_key is only for an ssh:// url")
        if self.ssh_key is not None and not self.ssh_key.startswith(("/", "~/")):
            # Relative, it would name a different file for each directory pulumi is run from.
            raise ValueError(f"ssh_key {self.ssh_key!r} must be an absolute path or start with ~/")
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
    def ssh_args(self) -> list[str]:
        """The ssh options the provider runs ssh with: ssh_opts, then ssh_key as `-i` with IdentitiesOnly."""
        key = ["-i", self.ssh_key, "-o", "IdentitiesOnly=yes"] if self.ssh_key else []
        return [*self.ssh_opts, *key]

    @property
    def is_local(self) -> bool:
        """True for a unix socket on this machine."""
        return self.url.startswith("unix://")


class Registry(BerthModel):
    """Credentials for a private registry such as ghcr.io."""

    address: Annotated[str, AfterValidator(_registry_address)]
    username: Annotated[str, Field(min_length=1, max_length=255)]
    password: Secret


class LogSettings(BerthModel):
    """The docker log driver of every container: json-file rotation by default."""

    driver: Literal["json-file", "local", "gelf", "syslog"] = "json-file"
    max_size: Annotated[ByteSize, AfterValidator(_at_least_one_mib)] = 10 * 1024 * 1024
    # json-file keeps max_file files of max_size each; Docker refuses less than 1.
    max_file: Annotated[int, AfterValidator(in_range(1, 100))] = 3
    # Where gelf/syslog send to, e.g. udp://127.0.0.1:12201; the docker daemon dials it from the host.
    address: Annotated[str, AfterValidator(_log_address)] | None = None

    @model_validator(mode="after")
    def _address_for_remote(self) -> LogSettings:
        # gelf without an address goes to the stack's own Logstash; Settings checks there is one.
        if self.driver == "syslog" and not self.address:
            raise ValueError("driver syslog needs an address, e.g. udp://127.0.0.1:514")
        if self.driver in ("json-file", "local") and self.address:
            raise ValueError(f"address is only for gelf or syslog, not {self.driver}")
        return self


ImageOverrides = dict[ImageRef, ImageRef]
