"""Grammars of the names and addresses settings hand to other programs: hosts, ports, URLs, paths.

Each is ASCII only (Python's digit and word classes match other scripts too; every pattern here uses
explicit classes), and each follows the grammar of the program that reads it: RFC 1123 host names
(63 per label, 253 in all, no label starting or ending with '-'), IPv4 octets 0-255, ports 1-65535.
A host name that starts with '-' is refused everywhere: the docker CLI hands an ssh host to ssh,
which would read ``-oProxyCommand=...`` as an option and run it on the operator's machine.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}", re.ASCII)
_SOCKET = re.compile(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", re.ASCII)


def hostname(text: str) -> bool:
    """An RFC 1123 host name (labels of 1-63, 253 in all)."""
    return len(text.rstrip(".")) <= 253 and bool(HOSTNAME.fullmatch(text))


def ipv4(text: str) -> bool:
    """A dotted-quad IPv4 address, ASCII digits, each octet 0-255, no leading zeros."""
    if not re.fullmatch(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", text, re.ASCII):
        return False
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def host(text: str) -> bool:
    """A host name, an IPv4 address, or an IPv6 address in brackets."""
    if text.startswith("[") and text.endswith("]"):
        try:
            ipaddress.IPv6Address(text[1:-1])
        except ValueError:
            return False
        return text[1:-1].isascii()
    if re.fullmatch(r"[0-9.]+", text, re.ASCII):
        return ipv4(text)
    return hostname(text)


def port(text: str) -> bool:
    """A TCP/UDP port 1-65535 in ASCII digits."""
    return bool(_PORT.fullmatch(text)) and 1 <= int(text) <= 65535


def host_port(text: str, port_required: bool) -> str | None:
    """Why ``host[:port]`` is not one, or None when it is."""
    if text.startswith("["):
        name, _, rest = text.partition("]")
        name += "]"
        given_port = rest[1:] if rest.startswith(":") else None
        if rest and given_port is None:
            return f"{text!r} is not [ipv6]:port"
    else:
        name, sep, given_port_text = text.rpartition(":") if ":" in text else (text, "", "")
        given_port = given_port_text if sep else None
    if not name:
        return "names no host"
    if name.startswith("-"):
        return f"host {name!r} starts with '-', which ssh and docker would read as an option"
    if not host(name):
        return f"host {name!r} is not a host name (RFC 1123), an IPv4 address or [an IPv6 address]"
    if given_port is None and port_required:
        return f"{text!r} names no port (the engine's TLS port is usually 2376)"
    if given_port is not None and not port(given_port):
        return f"port {given_port!r} is not in 1..65535"
    return None


def docker_host_url(url: str) -> str:
    """Check a Docker host URL; its scheme. ValueError with the rule otherwise.

    ``unix:///absolute/socket``, ``ssh://user@host[:port][/remote/socket]`` or ``tcp://host:port``,
    as the docker provider and CLI accept them.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("unix", "ssh", "tcp"):
        raise ValueError(f"url {url!r} must start with unix://, ssh:// or tcp://")
    if scheme == "unix":
        if not _SOCKET.fullmatch(rest):
            raise ValueError(f"url {url!r} must name an absolute socket path, like unix:///var/run/docker.sock")
        return scheme
    if "?" in rest or "#" in rest:
        raise ValueError(f"url {url!r} may not have a query or fragment")
    rest, slash, socket = rest.partition("/")
    if scheme == "ssh":
        # ssh://user@host[:port]/path/to/docker.sock names the engine's socket on the remote host.
        if slash and socket and not _SOCKET.fullmatch("/" + socket):
            raise ValueError(f"url {url!r}: '/{socket}' is not an absolute socket path on the host")
        user, at, address = rest.rpartition("@")
        if not at or not user:
            raise ValueError(f"url {url!r} must name the user: ssh://user@host[:port]")
        if not _USER.fullmatch(user):
            raise ValueError(f"url {url!r}: user {user!r} is not a user name (a-z, 0-9, '_', '.', '-', not "
                             "starting with '-')")
        problem = host_port(address, port_required=False)
    else:
        if socket:
            raise ValueError(f"url {url!r} may not have a path")
        problem = host_port(rest, port_required=True)
    if problem:
        raise ValueError(f"url {url!r}: {problem}")
    return scheme
