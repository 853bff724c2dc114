"""``host.provision``: turning a bare Debian or Ubuntu VPS into a hardened Docker host over SSH.

Off by default. The SSH target is the host of ``host.url`` (``ssh://deploy@host:port``); the
url's user becomes the deploy user the docker provider connects as afterwards. Each step can be
switched off on its own. The rules that need the rest of the stack (the url, the proxy's ports,
Elasticsearch) are in ``check_provision``, called from the root model.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from pydantic import AfterValidator, field_validator, model_validator

from berth.settings.base import BerthModel, Duration, Pem, Port, Secret, in_range, matching
from berth.settings.proxy import ProxySettings

if TYPE_CHECKING:
    from berth.settings.root import Settings

# Elasticsearch refuses to start below this (its bootstrap check); seed 002 set it by hand.
ELASTICSEARCH_MAX_MAP_COUNT = 262144
# The provisioned host keeps at most this many rotated json-file logs of this size per container,
# for containers whose own log settings do not say otherwise (berth's own containers always do).
DAEMON_LOG_MAX_SIZE = "10m"
DAEMON_LOG_MAX_FILE = 3


def _public_key(value: str) -> str:
    """One OpenSSH public key line, ``<type> <base64> [comment]``."""
    try:
        load_ssh_public_key(value.strip().encode())
    except (ValueError, TypeError, IndexError):
        raise ValueError("is not an OpenSSH public key like 'ssh-ed25519 AAAA...'") from None
    return " ".join(value.split()[:2])


PublicKey = Annotated[str, AfterValidator(_public_key)]
SysctlKey = Annotated[str, AfterValidator(matching(r"[a-z0-9_]+(\.[a-z0-9_*-]+)+",
                                                   "a sysctl name like net.core.somaxconn"))]
SysctlValue = Annotated[str, AfterValidator(matching(r"[A-Za-z0-9_. :/-]{1,200}", "a sysctl value of letters, digits, "
                                                                                  "spaces and ._:/-"))]
UnixUser = Annotated[str, AfterValidator(matching(r"[a-z_][a-z0-9_-]{0,31}", "a user name of a-z, 0-9, '_' and '-'"))]
Clock = Annotated[str, AfterValidator(matching(r"([01]\d|2[0-3]):[0-5]\d", "a time of day like 04:30"))]


class SshConnection(BerthModel):
    """How berth reaches the host to provision it: the bootstrap user (root or a sudoer) and its key.

    ``private_key`` may be left out: the connection then uses the operator's ssh-agent
    (``SSH_AUTH_SOCK``), as the docker provider does.
    """

    user: UnixUser = "root"
    private_key: Pem | None = None
    host_key: PublicKey | None = None
    sudo_password: Secret | None = None

    @field_validator("private_key")
    @classmethod
    def _openssh_private_key(cls, value: Secret | None) -> Secret | None:
        from berth.settings.loader import UNDECRYPTED  # offline synth cannot decrypt `secure:` values

        text = value.get_secret_value() if value is not None else UNDECRYPTED
        if text != UNDECRYPTED:
            try:
                load_ssh_private_key(text.encode(), password=None)
            except (ValueError, TypeError, IndexError):
                # Never echo the value: it is a private key, or meant to be one.
                raise ValueError("is not an unencrypted OpenSSH private key "
                                 "(-----BEGIN OPENSSH PRIVATE KEY-----)") from None
        return value

    @model_validator(mode="after")
    def _sudo_only_for_sudoers(self) -> SshConnection:
        if self.sudo_password is not None and self.user == "root":
            raise ValueError("sudo_password: root needs no sudo; leave it out or connect as a sudoer")
        return self


class Step(BerthModel):
    """A provisioning step that can be switched off."""

    enabled: bool = True


class DockerStep(Step):
    """Docker Engine: Debian's/Ubuntu's ``docker.io``, or Docker's own apt repository."""

    source: Literal["distro", "docker-apt"] = "distro"


class DeployUserStep(Step):
    """The deploy user (``host.url``'s user) in the docker group.

    ``authorized_keys`` empty: the deploy user gets the provisioning user's own authorized keys.
    """

    authorized_keys: list[PublicKey] = []


class FirewallStep(Step):
    """UFW: deny incoming, allow SSH, the proxy's ports and these extras (Docker-published ones too)."""

    allow_tcp: list[Port] = []
    allow_udp: list[Port] = []

    @field_validator("allow_tcp", "allow_udp")
    @classmethod
    def _no_repeats(cls, ports: list[int]) -> list[int]:
        repeated = sorted({port for port in ports if ports.count(port) > 1})
        if repeated:
            raise ValueError(f"{repeated} listed more than once")
        return ports


class Fail2banStep(Step):
    """fail2ban's sshd jail."""

    max_retry: Annotated[int, AfterValidator(in_range(1, 100))] = 5
    find_time: Duration = timedelta(minutes=10)
    ban_time: Duration = timedelta(hours=1)


class UpgradesStep(Step):
    """unattended-upgrades for security updates; an optional reboot when one needs it."""

    reboot: bool = False
    reboot_time: Clock = "04:00"


class SysctlStep(Step):
    """Kernel settings persisted in /etc/sysctl.d (vm.max_map_count is added for Elasticsearch)."""

    values: dict[SysctlKey, SysctlValue] = {}


class ProvisionSettings(BerthModel):
    """Everything berth sets up on the host before any container, each step switchable."""

    enabled: bool = False
    ssh: SshConnection = SshConnection()
    docker: DockerStep = DockerStep()
    deploy_user: DeployUserStep = DeployUserStep()
    ssh_hardening: Step = Step()
    firewall: FirewallStep = FirewallStep()
    fail2ban: Fail2banStep = Fail2banStep()
    upgrades: UpgradesStep = UpgradesStep()
    sysctls: SysctlStep = SysctlStep()


class Target(BerthModel):
    """Where provisioning connects: host and port from ``host.url``, the deploy user from its user."""

    host: str
    port: Port
    deploy_user: UnixUser


_SSH_URL = re.compile(r"ssh://(?P<user>[^@/]+)@(?P<host>\[[0-9a-fA-F:]+\]|[^:/\[\]]+)(?::(?P<port>\d+))?/?")
_PREFIX = "host.provision"


def target(url: str) -> Target:
    """The SSH target of an ``ssh://user@host[:port]`` url."""
    match = _SSH_URL.fullmatch(url)
    if match is None:
        raise ValueError(f"host.url: provisioning needs an ssh://user@host[:port] url, not {url!r}")
    return Target(host=match["host"].strip("[]"), port=int(match["port"] or 22), deploy_user=match["user"])


def check_provision(settings: Settings) -> None:
    """The cross-section rules of host.provision; raises ValueError('<path>: <rule>')."""
    provision = settings.host.provision
    if not provision.enabled:
        return
    url = settings.host.url
    if url.startswith("unix://"):
        raise ValueError(f"{_PREFIX}.enabled: a unix:// host ({url}) is this machine; provisioning is for a "
                         "remote host reached as ssh://deploy@host[:port]")
    if url.startswith("tcp://"):
        raise ValueError(f"{_PREFIX}.enabled: the docker provider of a provisioned host connects as the deploy "
                         f"user over SSH; use host.url ssh://deploy@host[:port], not {url}")
    where = target(url)
    if where.deploy_user == "root" and provision.deploy_user.enabled:
        raise ValueError("host.url: provisioning makes a deploy user for the docker provider; "
                         "name one other than root, e.g. ssh://deploy@host")
    if provision.ssh.host_key is None and settings.environment != "dev":
        raise ValueError(f"{_PREFIX}.ssh.host_key: is required outside dev (environment {settings.environment!r}); "
                         "take it from the provider's console or `ssh-keyscan`, and check its fingerprint")
    proxy_ports = proxy_ports_of(settings)
    if where.port in proxy_ports:
        raise ValueError(f"host.url: SSH port {where.port} is also the proxy's {proxy_ports[where.port]}")
    for i, port in enumerate(provision.firewall.allow_tcp):
        if port == where.port:
            raise ValueError(f"{_PREFIX}.firewall.allow_tcp[{i}]: {port} is the SSH port, which is always allowed")
        if port in proxy_ports:
            raise ValueError(f"{_PREFIX}.firewall.allow_tcp[{i}]: {port} is the proxy's {proxy_ports[port]}, "
                             "which is always allowed")
    if settings.service("elasticsearch") and provision.sysctls.enabled:
        given = provision.sysctls.values.get("vm.max_map_count")
        if given is not None and (not given.isdigit() or int(given) < ELASTICSEARCH_MAX_MAP_COUNT):
            raise ValueError(f"{_PREFIX}.sysctls.values.vm.max_map_count: {given} is below "
                             f"{ELASTICSEARCH_MAX_MAP_COUNT}, which Elasticsearch needs")


def proxy_ports_of(settings: Settings) -> dict[int, str]:
    """The web ports the firewall opens: the proxy's, or 80 and 443 without one; port -> setting."""
    proxy = settings.proxy if settings.proxy is not None and settings.proxy.enabled else ProxySettings()
    return {proxy.http_port: "proxy.http_port", proxy.https_port: "proxy.https_port"}
