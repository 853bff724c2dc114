"""Host preflight: reach the Docker host as the provider will, before any docker resource is registered.

The provider's own errors drop the cause (``failed to connect to any docker daemon`` from Configure,
pulumi/pulumi-docker#1106), and for an ``ssh://`` host pulumi-docker does not connect during a
preview at all (berth issue 10). So ``__main__.py`` runs this first, in ``preview`` and ``up`` alike,
with the same URL, ssh options and TLS material as components/host.py gives the provider:

- ``ssh://``: the system ``ssh`` with the provider's arguments (docker/cli's connhelper:
  ``ssh <ssh_opts> -o ConnectTimeout=… -T [-l user] [-p port] -- host docker system dial-stdio``),
  plus ``BatchMode=yes`` so that nothing prompts: host key known and matching, the user
  authenticates, ``docker`` answers on the other side;
- ``tcp://``: with cert and key, a TLS handshake verified against ``host.ca`` (and the URL's host name,
  as Go's client does) with the client certificate; without them plain HTTP, as the provider does;
- ``unix://``: the socket exists and answers.

Over the connection: ``GET /_ping`` and ``GET /version``. Each failure is one problem
``(config path, cause)``; ``check()`` returns them with the engine found, ``preflight()`` logs and
raises ``pulumi.RunError`` (one line per problem, no traceback).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from berth.errors import ConfigError
from berth.plan.provision import provider_ssh_opts
from berth.settings import Settings
from berth.settings.base import Cadence
from berth.settings.host import HostSettings
from berth.settings.loader import UNDECRYPTED

# Docker 20.10 (API 1.41) is the oldest engine berth's engine tier runs on; older ones are end of life.
MIN_API = (1, 41)
MIN_DOCKER = "20.10"
# healthcheck start_interval: Docker Engine 25 (API 1.44); older engines drop the field silently.
START_INTERVAL_API = (1, 44)
# Seconds for connecting, the TLS handshake or ssh, and the answers (the provider waits 30 s to connect).
TIMEOUT = 10.0
_REQUESTS = (b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n"
             b"GET /version HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")

# Skipped while synth runs the program offline, unless its --preflight flag asks for it.
_skip = False


@dataclass(frozen=True)
class Engine:
    """What the host's engine says about itself in ``GET /version``."""

    version: str
    api: str

    @property
    def api_tuple(self) -> tuple[int, int]:
        """"1.41" -> (1, 41)."""
        major, _, minor = self.api.partition(".")
        return int(major), int(minor or 0)


@dataclass
class Report:
    """The outcome of one preflight: the engine found, problems (path, cause), warnings, and time taken."""

    engine: Engine | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


class HostProblem(Exception):
    """One cause, at one config path, that stops the provider from reaching the host."""

    def __init__(self, path: str, cause: str) -> None:
        super().__init__(cause)
        self.path, self.cause = path, cause


# -- entry points -------------------------------------------------------------------------------


def preflight(settings: Settings) -> None:
    """Check the host as __main__.py's first step; log the engine, raise pulumi.RunError on a problem."""
    import pulumi

    if _skip:
        return
    if not settings.host.preflight:
        pulumi.log.info("berth: host preflight is off (host.preflight: false)")
        return
    if settings.host.provision.enabled:
        # A bare VPS has no Docker (nor deploy user) yet: this update installs them. The provisioning
        # commands verify the host key themselves (host.provision.ssh.host_key).
        pulumi.log.info(f"berth: host preflight skipped: host.provision sets up Docker on {settings.host.url} "
                        "in this update")
        return
    report = check(settings)
    for warning in report.warnings:
        pulumi.log.warn(warning)
    if report.engine is not None:
        mode = "preview" if pulumi.runtime.is_dry_run() else "up"
        pulumi.log.info(f"berth: host {settings.host.url}: Docker {report.engine.version}, API {report.engine.api} "
                        f"(preflight for {mode}, {report.seconds * 1000:.0f} ms)")
    if report.problems:
        raise pulumi.RunError(str(ConfigError(report.problems)))


@contextlib.contextmanager
def skipped() -> Iterator[None]:
    """Within this block preflight() does nothing: synth's offline default."""
    global _skip
    before, _skip = _skip, True
    try:
        yield
    finally:
        _skip = before


def check(settings: Settings, timeout: float = TIMEOUT) -> Report:
    """The host check plus what the stack's features need from the engine found."""
    report = check_host(settings.host, timeout)
    if report.engine is not None and report.engine.api_tuple < START_INTERVAL_API:
        for path in start_interval_paths(settings):
            report.warnings.append(
                f"berth:{path}.start_interval: Docker {report.engine.version} (API {report.engine.api}) ignores "
                f"start_interval; it needs Docker 25 (API 1.44) or later")
    return report


def check_host(host: HostSettings, timeout: float = TIMEOUT) -> Report:
    """Reach the engine as the provider would; the engine's version, or the problem that stopped us."""
    started = time.monotonic()
    report = Report()
    report.warnings += _tcp_warnings(host)
    try:
        scheme = host.url.split("://", 1)[0]
        answer = {"ssh": _over_ssh, "tcp": _over_tcp, "unix": _over_unix}[scheme](host, timeout)
        report.engine = _engine(answer)
        if report.engine.api_tuple < MIN_API:
            raise HostProblem("host.url", f"Docker {report.engine.version} (API {report.engine.api}) is older than "
                                          f"berth supports: Docker {MIN_DOCKER} (API 1.41) or later")
    except HostProblem as problem:
        report.problems.append((problem.path, problem.cause))
    report.seconds = time.monotonic() - started
    return report


def start_interval_paths(settings: Settings) -> list[str]:
    """Config paths of every healthcheck that sets start_interval (apps and data services alike)."""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Cadence):
            if value.start_interval is not None:
                found.append(path)
        elif hasattr(type(value), "model_fields"):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(settings, "")
    return found


# -- the three transports ------------------------------------------------------------------------


def _over_unix(host: HostSettings, timeout: float) -> bytes:
    path = host.url.removeprefix("unix://")
    where = f"docker socket {path}"
    if not os.path.exists(path):
        raise HostProblem("host.url", f"{where} does not exist (is dockerd running?)")
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise HostProblem("host.url", f"{where} is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return _exchange(sock)
        except PermissionError:
            raise HostProblem("host.url", f"{where}: permission denied (is this user in the docker group?)") from None
        except ConnectionRefusedError:
            raise HostProblem("host.url", f"{where}: connection refused (is dockerd running?)") from None
        except TimeoutError:
            raise HostProblem("host.url", f"{where}: no answer within {timeout:g}s") from None


def _over_tcp(host: HostSettings, timeout: float) -> bytes:
    parts = urlsplit(host.url)
    name, port = parts.hostname or "", parts.port
    if port is None:  # the provider's Go client dials host:port and has no default
        raise HostProblem("host.url", f"{host.url} names no port (the engine's TLS port is usually 2376)")
    where = f"{name}:{port}"
    try:
        raw = socket.create_connection((name, port), timeout=timeout)
    except ConnectionRefusedError:
        raise HostProblem("host.url", f"{where}: connection refused (nothing listens on that port)") from None
    except TimeoutError:
        raise HostProblem("host.url",
                          f"{where}: no answer within {timeout:g}s (a firewall, or the wrong address?)") from None
    except socket.gaierror as error:
        raise HostProblem("host.url", f"{name}: the name does not resolve ({error.strerror})") from None
    except OSError as error:
        raise HostProblem("host.url", f"{where}: {_os_cause(error)}") from None
    with raw:
        if host.cert is None or host.key is None:
            return _plain_http(raw, where)
        return _tls_exchange(host, _tls_context(host), raw, name, where)


def _over_ssh(host: HostSettings, timeout: float) -> bytes:
    parts = urlsplit(host.url)
    where = f"{parts.hostname}:{parts.port or 22}"
    if host.ssh_key is not None:
        _check_key_file(host.ssh_key)
    try:
        run = subprocess.run(ssh_command(host, timeout), input=_REQUESTS, capture_output=True,
                             timeout=timeout * 2, check=False)
    except FileNotFoundError:
        raise HostProblem("host.url", "the ssh client is not installed here (Debian: openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise HostProblem("host.url", f"ssh to {where}: no answer within {timeout * 2:g}s") from None
    if run.returncode == 0 and run.stdout:
        return run.stdout
    raise HostProblem(*_ssh_cause(run.stderr.decode(errors="replace"), parts.username or "", where))


def ssh_command(host: HostSettings, timeout: float = TIMEOUT) -> list[str]:
    """The provider's ssh command line (docker/cli connhelper), in batch mode: nothing may prompt.

    BatchMode comes first because ssh keeps the first value it is given for an option.
    """
    parts = urlsplit(host.url)
    flags = ["-o", "BatchMode=yes", *provider_ssh_opts(host)]
    if not any("connecttimeout" in flag.lower() for flag in flags):
        flags += ["-o", f"ConnectTimeout={max(1, round(timeout))}"]
    flags.append("-T")
    if parts.username:
        flags += ["-l", parts.username]
    if parts.port:
        flags += ["-p", str(parts.port)]
    remote = ["docker", *([f"--host=unix://{parts.path}"] if parts.path.strip("/") else []), "system", "dial-stdio"]
    return ["ssh", *flags, "--", parts.hostname or "", *remote]


# -- ssh: from ssh's stderr to one cause ----------------------------------------------------------

_SSH_CAUSES: tuple[tuple[str, str, str], ...] = (
    # (text in ssh's or the remote side's stderr, config path, cause); {where} and {user} are filled in.
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "host.url",
     "ssh host key for {where} does not match known_hosts (the host was reinstalled, or this is not it)"),
    ("host key is known for", "host.url",
     "ssh host key for {where} is not in known_hosts (add it: ssh-keyscan -p <port> <host> >> ~/.ssh/known_hosts)"),
    ("Host key verification failed", "host.url",
     "ssh host key for {where} is not in known_hosts (add it: ssh-keyscan -p <port> <host> >> ~/.ssh/known_hosts)"),
    ("Permission denied (", "host.url", "ssh refused user {user} at {where}: none of our keys is authorized "
                                        "(set host.ssh_key, or add the public key to ~{user}/.ssh/authorized_keys)"),
    ("Connection refused", "host.url", "ssh to {where}: connection refused (is sshd listening on that port?)"),
    ("timed out", "host.url", "ssh to {where}: no answer (timed out; firewall, or a wrong address?)"),
    ("Could not resolve hostname", "host.url", "ssh to {where}: the host name does not resolve"),
    ("No route to host", "host.url", "ssh to {where}: no route to host"),
    ("Connection closed by", "host.url", "ssh to {where}: the server closed the connection (sshd refused us?)"),
    ("docker: command not found", "host.url", "docker is not installed for {user} on {where} (not on its PATH)"),
    ("docker: not found", "host.url", "docker is not installed for {user} on {where} (not on its PATH)"),
    # dial-stdio: "failed to open the raw stream connection: dial unix <socket>: connect: <errno text>"
    ("connect: permission denied", "host.url",
     "{user} on {where} may not use the docker socket (add it to the docker group)"),
    ("connect: no such file or directory", "host.url",
     "docker answers on {where}, but its engine is not running (no socket)"),
    ("failed to open the raw stream connection", "host.url",
     "docker answers on {where}, but its engine is not running"),
    ("Is the docker daemon running", "host.url", "docker answers on {where}, but its engine is not running"),
    ("unknown command \"dial-stdio\"", "host.url", "the docker CLI on {where} is older than 18.09 (no dial-stdio)"),
)


def _ssh_cause(stderr: str, user: str, where: str) -> tuple[str, str]:
    for text, path, cause in _SSH_CAUSES:
        if text in stderr:
            return path, cause.format(where=where, user=user)
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@")]
    return "host.url", f"ssh to {where} failed: {lines[-1] if lines else 'no output from ssh'}"


def _check_key_file(path: str) -> None:
    key = Path(path).expanduser()
    if not key.is_file():
        raise HostProblem("host.ssh_key", f"{path} is not a file here")
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        raise HostProblem("host.ssh_key", f"{path} is readable by others (mode {mode:04o}) and ssh ignores it: "
                                          f"chmod 600 {path}")
    if not os.access(key, os.R_OK):
        raise HostProblem("host.ssh_key", f"{path} is not readable by this user")


# -- tcp: TLS as the provider builds it -----------------------------------------------------------


def _tls_context(host: HostSettings) -> ssl.SSLContext:
    """ca, cert and key from settings; ssl reads the client pair from files only: 0600, removed after."""
    assert host.ca is not None and host.cert is not None and host.key is not None  # settings: cert needs ca
    for name in ("ca", "cert", "key"):
        if getattr(host, name).get_secret_value() == UNDECRYPTED:
            raise HostProblem(f"host.{name}", "is encrypted in the stack file and synth cannot decrypt it; "
                                              "`pulumi preview` runs the preflight with it")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=host.ca.get_secret_value())
    except ssl.SSLError:
        raise HostProblem("host.ca", "is not a PEM certificate") from None
    with tempfile.TemporaryDirectory(prefix="berth-preflight-") as folder:
        files = {name: os.path.join(folder, f"{name}.pem") for name in ("cert", "key")}
        for name, secret in (("cert", host.cert), ("key", host.key)):
            with os.fdopen(os.open(files[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(secret.get_secret_value())
        try:
            context.load_cert_chain(files["cert"], files["key"])
        except ssl.SSLError as error:
            if "KEY_VALUES_MISMATCH" in str(error):
                raise HostProblem("host.key", "does not belong to host.cert (a key from another pair)") from None
            raise HostProblem("host.cert", f"cert and key do not load as a PEM pair ({error.reason})") from None
    return context


def _tls_exchange(host: HostSettings, context: ssl.SSLContext, raw: socket.socket, name: str, where: str) -> bytes:
    try:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            return _exchange(tls)
    except ssl.SSLCertVerificationError as error:
        raise HostProblem(*_server_cert_cause(error, name, where)) from None
    except ssl.SSLError as error:
        # The server's alert: with TLS 1.3 a refused client certificate shows on the first read.
        if error.reason and ("ALERT" in error.reason or "CERTIFICATE_REQUIRED" in error.reason):
            raise HostProblem("host.cert", _client_cert_cause(host, error.reason)) from None
        if error.reason == "WRONG_VERSION_NUMBER":
            raise HostProblem("host.url", f"{where} does not speak TLS (plain HTTP? then drop ca, cert and key)"
                              ) from None
        raise HostProblem("host.url", f"TLS with {where} failed: {error.reason or error}") from None
    except TimeoutError:
        raise HostProblem("host.url", f"{where}: no TLS answer within {raw.gettimeout():g}s") from None
    except (ConnectionResetError, BrokenPipeError):
        raise HostProblem("host.cert", _client_cert_cause(host, "the connection was reset")) from None


def _server_cert_cause(error: ssl.SSLCertVerificationError, name: str, where: str) -> tuple[str, str]:
    code = error.verify_code
    if code in (18, 19, 20, 21):  # self-signed / unknown issuer: not this CA
        return "host.ca", f"the server's certificate at {where} is not signed by this CA"
    if code == 10:
        return "host.url", f"the server's certificate at {where} has expired"
    if code == 9:
        return "host.url", f"the server's certificate at {where} is not valid yet (clock skew?)"
    if code == 62:
        return "host.url", f"the server's certificate at {where} is not issued for {name} (no such name or IP in it)"
    return "host.ca", f"the server's certificate at {where} does not verify: {error.verify_message}"


def _client_cert_cause(host: HostSettings, alert: str) -> str:
    """Why the server refused our certificate: its alert, plus what we can tell from the certificate itself."""
    assert host.cert is not None and host.ca is not None
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(host.cert.get_secret_value().encode())
    now = dt.datetime.now(dt.UTC)
    why = alert.removeprefix("SSLV3_ALERT_").removeprefix("TLSV13_ALERT_").removeprefix("TLSV1_ALERT_")
    why = why.replace("_", " ").lower()
    if cert.not_valid_after_utc < now:
        return f"the server refused the client certificate ({why}): it expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_before_utc > now:
        return f"the server refused the client certificate ({why}): it is not valid before " \
               f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    return f"the server refused the client certificate ({why}): it is not signed by a CA the engine trusts " \
           f"(dockerd --tlscacert)"


def _plain_http(raw: socket.socket, where: str) -> bytes:
    try:
        answer = _exchange(raw)
    except TimeoutError:
        raise HostProblem("host.url", f"{where}: no answer within {raw.gettimeout():g}s") from None
    except ConnectionResetError:
        raise HostProblem("host.url", f"{where} reset the connection (a TLS port? then set ca, cert and key)") from None
    if b"Client sent an HTTP request to an HTTPS server" in answer:
        raise HostProblem("host.cert", f"{where} speaks TLS: set host.ca, host.cert and host.key "
                                       "(the provider uses TLS only with a client certificate)")
    return answer


def _tcp_warnings(host: HostSettings) -> list[str]:
    if host.url.startswith("tcp://") and host.ca is not None and host.cert is None:
        return ["berth:host.ca: the provider uses TLS only with host.cert and host.key; without them ca is "
                "ignored and the engine is reached over plain HTTP"]
    return []


# -- HTTP over whatever stream ---------------------------------------------------------------------


def _exchange(sock: socket.socket) -> bytes:
    """Send /_ping and /version; everything the engine answers until it closes."""
    sock.sendall(_REQUESTS)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _engine(answer: bytes) -> Engine:
    """The /version body from the two answers; anything else is not a Docker engine."""
    answers = _responses(answer)
    if len(answers) != 2 or answers[0] != (200, b"OK") or answers[1][0] != 200:
        status = answers[0][0] if answers else "no HTTP answer"
        raise HostProblem("host.url", f"the other side is not a Docker engine (/_ping: {status})")
    try:
        version = json.loads(answers[1][1])
        engine = Engine(version=str(version["Version"]), api=str(version["ApiVersion"]))
        engine.api_tuple  # noqa: B018 - "1.41" or it is not Docker's answer
        return engine
    except (ValueError, KeyError, TypeError):
        raise HostProblem("host.url", "the engine's /version answer is not Docker's") from None


def _responses(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each HTTP/1.1 response in a byte stream; the engine sends Content-Length."""
    found: list[tuple[int, bytes]] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        words = status_line.split()
        if not sep or len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
            break
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(b":") for line in lines)}
        length = int(headers.get(b"content-length", len(data)))
        found.append((int(words[1]), data[:length]))
        data = data[length:]
    return found


def _os_cause(error: OSError) -> str:
    return {errno.EHOSTUNREACH: "no route to host", errno.ENETUNREACH: "network unreachable"}.get(
        error.errno or 0, error.strerror or str(error))
