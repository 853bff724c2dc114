"""Probes of a deployed blueprint: HTTP(S) through the proxy, the containers' own ports, docker exec,
throwaway probe containers, and a steady load generator. No assertions here; test_engine.py decides.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from applier import CONTAINER, Applier

from berth.settings import Settings

STANDIN = "berth-engine/standin:latest"


@dataclass
class Response:
    """An HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class SniHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address (127.0.0.1) with a server name for SNI and certificate checks."""

    def __init__(self, address: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(address, port, context=context, timeout=timeout)
        self.server_name = server_name

    def connect(self) -> None:
        """TCP to the address, TLS with the server name."""
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)  # type: ignore[attr-defined]


@dataclass
class Deployment:
    """One blueprint applied to the engine, and the ways to look at it."""

    blueprint: str
    settings: Settings
    result: dict[str, Any]
    applier: Applier
    client: docker.DockerClient
    apply_report: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    # -- the desired state ---------------------------------------------------------------------

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    @property
    def proxy(self) -> str:
        return self.resource_with_alias("proxy")

    def resource_with_alias(self, alias: str) -> str:
        """The container resource answering to `alias` (postgres, redis, rabbitmq, proxy)."""
        found = [r["name"] for r in self.applier.container_records()
                 if any(alias in (n.get("aliases") or []) for n in r["inputs"].get("networksAdvanced", []))]
        if len(found) != 1:
            raise KeyError(f"{self.blueprint}: {len(found)} containers answer to {alias!r}: {found}")
        return found[0]

    def has_alias(self, alias: str) -> bool:
        return any(alias in (n.get("aliases") or []) for r in self.applier.container_records()
                   for n in r["inputs"].get("networksAdvanced", []))

    def app_resources(self, app: str) -> list[str]:
        """The container resources of one app (its replicas)."""
        return [r["name"] for r in self.applier.container_records()
                if r["parent"] == app and not r["inputs"].get("attach")]

    def app_of(self, resource: str) -> str:
        """The app (component) a container resource belongs to."""
        return self.applier.record(resource)["parent"]

    def app_of_hostname(self, hostname: str) -> str | None:
        resource = self.applier.hostnames.get(hostname)
        return None if resource is None else self.app_of(resource)

    def env(self, resource: str) -> dict[str, str]:
        """A container's env as synth gave it (revealed)."""
        return dict(item.split("=", 1) for item in self.applier.record(resource)["inputs"].get("envs", []))

    def upload(self, resource: str, suffix: str) -> str:
        uploads = self.applier.record(resource)["inputs"].get("uploads", [])
        return next(u["content"] for u in uploads if u["file"].endswith(suffix))

    def server_names(self) -> list[tuple[int, str]]:
        """(site index, server name) with {domain} filled in."""
        assert self.settings.proxy is not None
        return [(i, name.replace("{domain}", self.settings.domain))
                for i, site in enumerate(self.settings.proxy.sites) for name in site.server_names]

    # -- the engine ----------------------------------------------------------------------------

    def cid(self, resource: str) -> str:
        return self.applier.created(resource).docker_id

    def inspect(self, resource: str) -> dict[str, Any]:
        return self.api.inspect_container(self.cid(resource))

    def ips(self, resource: str) -> dict[str, str]:
        """network name -> address of a container."""
        nets = self.inspect(resource)["NetworkSettings"]["Networks"]
        return {name: value["IPAddress"] for name, value in nets.items() if value.get("IPAddress")}

    def ip(self, resource: str, network: str = "edge") -> str:
        return next(ip for name, ip in self.ips(resource).items() if name.endswith(f"-{network}"))

    def network(self, suffix: str) -> str:
        return next(r["inputs"]["name"] for r in self.applier.records
                    if r["type"].endswith("network:Network") and r["inputs"]["name"].endswith(f"-{suffix}"))

    def exec(self, resource: str, cmd: list[str], timeout: float = 60) -> tuple[int, str]:
        """Run cmd in the container; (exit code, stdout+stderr)."""
        exec_id = self.api.exec_create(self.cid(resource), cmd)["Id"]
        output = self.api.exec_start(exec_id).decode(errors="replace")
        deadline = time.monotonic() + timeout
        while (info := self.api.exec_inspect(exec_id))["Running"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} in {resource} still running after {timeout}s")
            time.sleep(0.1)
        return int(info["ExitCode"]), output

    def healthcheck_now(self, resource: str) -> tuple[int, str]:
        """Run the container's own healthcheck command once, now (docker would run it at the next interval)."""
        test = self.applier.record(resource)["inputs"]["healthcheck"]["tests"]
        cmd = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
        return self.exec(resource, cmd)

    def psql(self, sql: str, database: str | None = None) -> tuple[int, str]:
        """SQL as the superuser inside the Postgres container."""
        assert self.settings.postgres is not None
        pg = self.settings.postgres
        return self.exec(self.resource_with_alias("postgres"),
                         ["psql", "-v", "ON_ERROR_STOP=1", "-tA", "-U", pg.user, "-d", database or pg.database,
                          "-h", "127.0.0.1", "-c", sql])

    def redis_cli(self, *args: str) -> tuple[int, str]:
        """redis-cli in the Redis container (REDISCLI_AUTH is in its env)."""
        return self.exec(self.resource_with_alias("redis"), ["redis-cli", "-h", "127.0.0.1", *args])

    # -- HTTP ----------------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        assert self.settings.proxy is not None
        return self.settings.proxy.http_port

    @property
    def https_port(self) -> int:
        assert self.settings.proxy is not None
        return self.settings.proxy.https_port

    @property
    def bind(self) -> str:
        assert self.settings.proxy is not None
        return self.settings.proxy.bind

    def tls_context(self, minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None,
                    legacy: bool = False) -> ssl.SSLContext:
        """Trusts exactly the proxy's certificate (as uploaded) and checks the server name against it."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=self.upload(self.proxy, "cert.pem"))
        if legacy:  # let this client offer TLS 1.0/1.1 at all, so a refusal is the server's
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
            context.options &= ~ssl.OP_NO_TLSv1 & ~ssl.OP_NO_TLSv1_1  # type: ignore[attr-defined]
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
        return context

    def https_connection(self, host: str, timeout: float = 10, context: ssl.SSLContext | None = None
                         ) -> SniHTTPSConnection:
        return SniHTTPSConnection(self.bind, self.https_port, host, context or self.tls_context(), timeout)

    def https(self, host: str, path: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
        connection = self.https_connection(host, timeout)
        try:
            return request(connection, host, path, method, body, headers)
        finally:
            connection.close()

    def http(self, host: str, path: str) -> Response:
        connection = http.client.HTTPConnection(self.bind, self.http_port, timeout=10)
        try:
            return request(connection, host, path)
        finally:
            connection.close()

    def app_get(self, resource: str, path: str, port: int | None = None, timeout: float = 10) -> Response:
        """GET straight to a container's port on the edge network (from the host)."""
        port = port or int(self.env(resource)["PORT"])
        connection = http.client.HTTPConnection(self.ip(resource), port, timeout=timeout)
        try:
            return request(connection, None, path)
        finally:
            connection.close()

    def app_post(self, resource: str, path: str, body: bytes) -> Response:
        connection = http.client.HTTPConnection(self.ip(resource), int(self.env(resource)["PORT"]), timeout=10)
        try:
            return request(connection, None, path, "POST", body)
        finally:
            connection.close()

    # -- throwaway probe containers ------------------------------------------------------------

    def run_probe(self, network: str, script: str, timeout: float = 120, volumes: dict[str, str] | None = None,
                  args: list[str] | None = None) -> Any:
        """Run python3 `script` in a stand-in container on `network` only; its last stdout line as JSON.

        `volumes` maps volume name -> mount path (read-only).
        """
        mounts = [docker.types.Mount(target=path, source=name, type="volume", read_only=True)
                  for name, path in (volumes or {}).items()]
        container = self.api.create_container(
            STANDIN, entrypoint=["python3", "-c", script], command=args or [], user="0:0",
            name=f"{self.applier.stack}-probe-{uuid.uuid4().hex[:6]}",
            labels={"berth.engine.stack": self.applier.stack}, use_config_proxy=False,
            host_config=self.api.create_host_config(network_mode=network, mounts=mounts or None))
        cid = container["Id"]
        try:
            self.api.start(cid)
            code = self.api.wait(cid, timeout=timeout)["StatusCode"]
            logs = self.api.logs(cid, stdout=True, stderr=True).decode(errors="replace")
            if code != 0:
                raise AssertionError(f"probe on {network} exited {code}:\n{logs}")
            return json.loads(logs.strip().splitlines()[-1])
        finally:
            self.api.remove_container(cid, force=True)


def request(connection: http.client.HTTPConnection, host: str | None, path: str, method: str = "GET",
            body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
    """One request on a (possibly kept-alive) connection."""
    all_headers = {"Host": host} if host else {}
    all_headers.update(headers or {})
    connection.request(method, path, body=body, headers=all_headers)
    answer = connection.getresponse()
    data = answer.read()
    return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)


def probe_id() -> str:
    return "berth-probe-" + uuid.uuid4().hex[:10]


# -- steady load -------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float          # time.monotonic() when the answer (or the error) came
    ok: bool
    status: int
    host: str | None  # the stand-in's hostname, i.e. which container answered
    error: str = ""
    latency: float = 0.0


class Load:
    """GETs at `get_rate`/s over `threads` keep-alive HTTPS connections, plus POSTs at `post_rate`/s.

    Each thread keeps its own schedule; a thread that fell behind (a slow answer) catches up at once.

    With `retry_idle_close`, a GET whose reused keep-alive connection the server closed before any
    answer is sent once more on a new connection, as browsers and curl do (RFC 9112 section 9.3.1: a
    client may retry idempotent requests on a connection that closed); each such retry is counted in
    `retried`, and a retry that fails too is a failed sample.
    """

    def __init__(self, dep: Deployment, host: str, path: str, get_rate: float, post_rate: float,
                 threads: int = 8, retry_idle_close: bool = False) -> None:
        self.dep, self.host, self.path = dep, host, path
        self.get_rate, self.post_rate, self.threads = get_rate, post_rate, threads
        self.retry_idle_close = retry_idle_close
        self.retried = 0
        self.gets: list[Sample] = []
        self.posts: list[Sample] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.t_begin = self.t_end = 0.0

    def start(self) -> None:
        self.t_begin = time.monotonic()
        interval = self.threads / self.get_rate
        for n in range(self.threads):
            worker = threading.Thread(target=self._run, args=("GET", interval, n * interval / self.threads,
                                                              self.gets), daemon=True)
            self._workers.append(worker)
        if self.post_rate > 0:
            self._workers.append(threading.Thread(target=self._run, args=("POST", 1 / self.post_rate, 0.0,
                                                                          self.posts), daemon=True))
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        self.t_end = time.monotonic()

    def _run(self, method: str, interval: float, offset: float, sink: list[Sample]) -> None:
        context = self.dep.tls_context()
        connection: SniHTTPSConnection | None = None
        due = self.t_begin + offset
        n = 0
        while not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            due += interval
            n += 1
            reused = connection is not None
            if connection is None:
                connection = self.dep.https_connection(self.host, 10, context)
            sent = time.monotonic()
            try:
                body = json.dumps({"n": n}).encode() if method == "POST" else None
                try:
                    answer = request(connection, self.host, f"{self.path}?n={n}", method, body,
                                     {"Content-Type": "application/json"} if body else None)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    if not (self.retry_idle_close and reused and method == "GET"):
                        raise
                    connection.close()
                    connection = self.dep.https_connection(self.host, 10, context)
                    with self._lock:
                        self.retried += 1
                    answer = request(connection, self.host, f"{self.path}?n={n}", method, body, None)
                host = None
                if answer.status == 200:
                    try:
                        host = answer.json().get("host")
                    except ValueError:
                        pass
                sample = Sample(time.monotonic(), answer.status == 200 and host is not None, answer.status, host,
                                latency=time.monotonic() - sent)
                if answer.headers.get("connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                sample = Sample(time.monotonic(), False, 0, None, f"{type(error).__name__}: {error}",
                                latency=time.monotonic() - sent)
                connection.close()
                connection = None
            with self._lock:
                sink.append(sample)
        if connection is not None:
            connection.close()


def wait_until(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):  # noqa: ANN001
    """Poll a cheap predicate (an HTTP probe) until it holds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:.0f}s")
        time.sleep(interval)


__all__ = ["CONTAINER", "Deployment", "Load", "Response", "Sample", "probe_id", "request", "wait_until"]
