"""berth's nginx.conf in Debian's real nginx: ``nginx -t``, then real proxying on loopback.

For two fixture stacks defined here and every blueprint in blueprints/*.yaml, nginx runs the rendered
config (one nginx per stack, module-scoped) in front of stub upstreams and a stub DNS server standing
in for Docker's. Each alias the proxy routes to gets its own loopback address (127.x.y.z) from the stub
DNS, and a stub HTTP server listens there on the app's real port and echoes who it is and what it got,
so two apps sharing a port are still told apart. Never skipped: without nginx or openssl the tests fail.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import math
import os
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dnsstub  # tests/ is not a package: pytest puts this directory on sys.path
import pytest
from servers import free_ports, tool

from berth.errors import ConfigError
from berth.plan.nginx import TLS_CERT, TLS_KEY, render_nginx_conf
from berth.settings import ProxySettings, Route, Settings, Site, load_settings

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINTS = sorted(path.stem for path in (ROOT / "blueprints").glob("*.yaml"))
# Where a console route goes, written out independently of berth.plan.nginx.
CONSOLE_TARGETS = {"kibana": ("kibana", 5601), "minio-console": ("minio", 9001)}
# The host name used to reach a "_" (catch-all) site.
UNKNOWN_HOST = "unknown-host.invalid"
# TLS 1.2 suites nginx must refuse: CBC (no AEAD), and RSA key exchange (no forward secrecy).
CBC_SUITES = "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:@SECLEVEL=0"
DNS_SETTLE = 2.5     # seconds after a DNS change: longer than the proxy's valid=1s, with slack
SSE_GAP = 1.5        # seconds the SSE stub waits between its two events
STARTUP = 20.0       # seconds nginx may take to answer its healthcheck on a loaded machine
TIMEOUT = 20.0       # client timeout for ordinary requests

FIXTURES: dict[str, dict] = {
    # TLS with redirect; every route feature; two apps on one port; a console; a "_" default site.
    "fixture-tls": {
        "environment": "dev",
        "domain": "example.test",
        "apps": {
            "web": {"image": "x/web:1", "port": 3000},
            "api": {"image": "x/api:1", "port": 8000, "extra_ports": [8001]},
            "stream": {"image": "x/stream:1", "port": 8000},
        },
        "minio": {},
        "proxy": {
            "rate_limits": {"api": {"rate": "5r/s", "burst": 4},
                            "slow": {"rate": "1r/s", "burst": 2, "nodelay": False}},
            "content_security_policy": "default-src 'self'; img-src 'self' data:",
            "sites": [
                {"server_names": ["{domain}", "www.{domain}"], "routes": [
                    {"path": "/", "app": "web", "static_cache": "1d"},
                    {"path": "/api/", "app": "api", "strip_prefix": True, "rate_limit": "api"},
                    {"path": "/api/slow", "app": "api", "rate_limit": "slow"},
                    {"path": "/events/", "app": "stream", "sse": True},
                    {"path": "/ws", "app": "stream", "websocket": True, "strip_prefix": True},
                    {"path": "/storage/", "app": "minio-console", "strip_prefix": True},
                ]},
                {"server_names": ["_"], "routes": [{"path": "/", "app": "api", "port": 8001}]},
            ],
        },
    },
    # Plain HTTP only: no TLS, no redirect, no security headers, no gzip.
    "fixture-plain": {
        "environment": "dev",
        "domain": "example.test",
        "apps": {"web": {"image": "x/web:1", "port": 3000}},
        "proxy": {
            "tls": {"mode": "none"}, "http_redirect": False, "security_headers": False, "gzip": False,
            "rate_limits": {"live": {"rate": "2r/s", "burst": 1}},
            "sites": [{"server_names": ["{domain}"], "routes": [
                {"path": "/", "app": "web"},
                {"path": "/live/", "app": "web", "sse": True, "rate_limit": "live"},
            ]}],
        },
    },
}
CASES = [*FIXTURES, *BLUEPRINTS]


def load_case(name: str) -> Settings:
    if name in FIXTURES:
        return load_settings(FIXTURES[name])
    return load_settings({"environment": "dev"}, blueprint=name)


def cases_with(feature: Callable[[Settings], bool]) -> list[str]:
    """The cases that have a feature; a case that does not load is kept, so its fixture fails loudly."""
    chosen = []
    for name in CASES:
        try:
            settings = load_case(name)
        except ConfigError:
            chosen.append(name)
            continue
        if feature(settings):
            chosen.append(name)
    return chosen


def routes(settings: Settings) -> list[Route]:
    return [route for site in _proxy(settings).sites for route in site.routes]


def _proxy(settings: Settings) -> ProxySettings:
    assert settings.proxy is not None
    return settings.proxy


TLS_CASES = cases_with(lambda s: _proxy(s).tls.mode != "none")
REDIRECT_CASES = cases_with(lambda s: _proxy(s).http_redirect)
SSE_CASES = cases_with(lambda s: any(r.sse for r in routes(s)))
WEBSOCKET_CASES = cases_with(lambda s: any(r.websocket for r in routes(s)))
STATIC_CASES = cases_with(lambda s: any(r.static_cache for r in routes(s)))
RATE_LIMIT_CASES = cases_with(lambda s: any(r.rate_limit for r in routes(s)))


# -- expectations, written from the settings independently of berth.plan.nginx -------------------


def target(settings: Settings, route: Route) -> tuple[str, int]:
    """The alias and port a route must reach."""
    if route.app in settings.enabled_apps:
        return route.app, route.port or settings.enabled_apps[route.app].port
    host, port = CONSOLE_TARGETS[route.app]
    return host, route.port or port


def host_names(settings: Settings, site: Site) -> list[str]:
    return [UNKNOWN_HOST if name == "_" else name.replace("{domain}", settings.domain) for name in site.server_names]


def probe(route: Route, leaf: str = "berth-probe") -> str:
    return route.path + ("" if route.path.endswith("/") else "/") + leaf


def served_by(site: Site, path: str) -> Route:
    """The route nginx picks for a path: the longest matching prefix."""
    return max((r for r in site.routes if path.startswith(r.path)), key=lambda r: len(r.path))


def upstream_path(route: Route, path: str) -> str:
    return "/" + path[len(route.path):].lstrip("/") if route.strip_prefix else path


def expected_headers(settings: Settings) -> dict[str, str]:
    proxy = _proxy(settings)
    headers = {}
    if proxy.security_headers:
        headers |= {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN",
                    "Referrer-Policy": "strict-origin-when-cross-origin"}
    if proxy.content_security_policy:
        headers["Content-Security-Policy"] = proxy.content_security_policy
    if proxy.tls.mode != "none":
        headers["Strict-Transport-Security"] = f"max-age={int(proxy.tls.hsts_max_age.total_seconds())}" + (
            "; includeSubDomains" if proxy.tls.hsts_include_subdomains else "")
    return headers


# -- stub upstreams ------------------------------------------------------------------------------


class UpstreamServer(ThreadingHTTPServer):
    """An app stand-in on (address, port) that reports its alias, port and the request it got."""

    daemon_threads = True
    request_queue_size = 256  # a burst must not meet a full backlog (SYN retries outlast connect_timeout)

    def __init__(self, address: str, port: int, alias: str) -> None:
        self.alias, self.port = alias, port
        self.second_event_sent: dict[str, float] = {}
        super().__init__((address, port), UpstreamHandler)


class UpstreamHandler(BaseHTTPRequestHandler):
    server: UpstreamServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = parse_qs(urlsplit(self.path).query)
        if "sse" in query:
            self._events(query["sse"][0])
        elif self._asks_upgrade():
            self._echo_after_upgrade()
        else:
            self._report()

    def _asks_upgrade(self) -> bool:
        # As a WebSocket server requires (RFC 6455 4.2.1): Upgrade: websocket and Connection: upgrade.
        connection = {token.strip().lower() for token in self.headers.get("Connection", "").split(",")}
        return self.headers.get("Upgrade", "").lower() == "websocket" and "upgrade" in connection

    def _report(self) -> None:
        body = json.dumps({"alias": self.server.alias, "port": self.server.port, "path": self.path,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # nginx must replace or drop these: its own Cache-Control on assets, its security headers.
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Powered-By", "stub")
        self.end_headers()
        self.wfile.write(body)

    def _events(self, token: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(b"data: first\n\n")
        self.wfile.flush()
        time.sleep(SSE_GAP)
        self.server.second_event_sent[token] = time.monotonic()
        self.wfile.write(b"data: second\n\n")
        self.wfile.flush()

    def _echo_after_upgrade(self) -> None:
        self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        self.wfile.flush()
        self.connection.settimeout(TIMEOUT)
        data = self.connection.recv(1024)
        if data:
            self.connection.sendall(b"echo:" + data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass


# -- the running stack ---------------------------------------------------------------------------


@dataclass
class Stack:
    name: str
    settings: Settings
    conf: str
    http_port: int
    https_port: int
    health_port: int
    dns: dnsstub.DnsStub
    addresses: dict[str, str]
    upstreams: dict[tuple[str, int], UpstreamServer]
    spare_address: Callable[[], str]
    log: Path
    tls: bool = field(init=False)

    def __post_init__(self) -> None:
        self.tls = _proxy(self.settings).tls.mode != "none"

    def connection(self, host: str, *, timeout: float = TIMEOUT, source: str | None = None,
                   context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
        """A connection to the proxy as a browser would open it for ``host``: HTTPS with SNI when TLS is on."""
        source_address = (source, 0) if source else None
        if not self.tls:
            return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout,
                                              source_address=source_address)
        return SniConnection(self.https_port, host, context or client_context(), timeout, source_address)

    def get(self, host: str, path: str, headers: dict[str, str] | None = None, source: str | None = None) -> Response:
        conn = self.connection(host, source=source)
        try:
            conn.request("GET", path, headers={"Host": host, **(headers or {})})
            resp = conn.getresponse()
            return Response(resp.status, resp.headers, resp.read())
        finally:
            conn.close()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class SniConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 that sends ``sni`` as the TLS server name (no certificate check)."""

    def __init__(self, port: int, sni: str, context: ssl.SSLContext, timeout: float,
                 source_address: tuple[str, int] | None) -> None:
        super().__init__("127.0.0.1", port, timeout=timeout, context=context, source_address=source_address)
        self._sni, self._tls = sni, context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._sni)


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context




@pytest.fixture(scope="session")
def nginx() -> str:
    return tool("nginx")



def nginx_test(nginx: str, prefix: Path, conf: Path) -> str:
    result = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True,
                            timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def wait_healthy(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"nginx exited with {proc.returncode}:\n{log.read_text()}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nginx did not answer /healthz within {STARTUP}s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """Fast shutdown (SIGTERM); if nginx hangs, kill its whole process group (master and workers)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="module", params=CASES)
def stack(request: pytest.FixtureRequest, nginx: str, tls_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The case's nginx, running on free loopback ports in front of its stub upstreams."""
    name = request.param
    settings = load_case(name)
    prefix = tmp_path_factory.mktemp(name)
    # A /24 of loopback addresses for this stack: one per alias, spares for client addresses.
    rng = random.Random(f"{os.getpid()}-{name}")
    net = f"127.{rng.randrange(100, 250)}.{rng.randrange(0, 250)}"
    aliases = sorted({target(settings, route)[0] for route in routes(settings)})
    addresses = {alias: f"{net}.{i}" for i, alias in enumerate(aliases, 1)}
    spare = iter(range(100, 250))

    upstreams: dict[tuple[str, int], UpstreamServer] = {}
    try:
        for alias, port in sorted({target(settings, route) for route in routes(settings)}):
            try:
                upstreams[alias, port] = UpstreamServer(addresses[alias], port, alias)
            except PermissionError as error:
                raise AssertionError(f"{alias}:{port}: binding a stub upstream below 1024 needs root") from error
            threading.Thread(target=upstreams[alias, port].serve_forever, daemon=True).start()
        with dnsstub.DnsStub({alias: [address] for alias, address in addresses.items()}, default=None) as dns:
            ports = dict(zip(("http_port", "https_port", "health_port"), free_ports(3), strict=True))
            text = render_nginx_conf(settings, resolver=dns.address, http_port=ports["http_port"],
                                     https_port=ports["https_port"], tls_dir=str(tls_dir),
                                     health_listen=f"127.0.0.1:{ports['health_port']}",
                                     pid=str(prefix / "nginx.pid"), temp_dir=str(prefix))
            conf, log = prefix / "nginx.conf", prefix / "nginx.log"
            conf.write_text(text)
            nginx_test(nginx, prefix, conf)
            with log.open("wb") as out:
                proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_healthy(proc, ports["health_port"], log)
                yield Stack(name, settings, text, dns=dns, addresses=addresses, upstreams=upstreams,
                            spare_address=lambda: f"{net}.{next(spare)}", log=log, **ports)
            finally:
                stop(proc)
    finally:
        for server in upstreams.values():
            server.shutdown()
            server.server_close()


# -- nginx -t on the config as deployed -----------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_nginx_accepts_the_config_as_deployed(name: str, nginx: str, tls_dir: Path, tmp_path: Path) -> None:
    # Production values (Docker's resolver, ports 80/443, health on 8081): nginx -t binds no port.
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(load_case(name), tls_dir=str(tls_dir), pid=str(tmp_path / "nginx.pid"),
                                      temp_dir=str(tmp_path)))
    output = nginx_test(nginx, tmp_path, conf)
    assert "test is successful" in output
    assert "[warn]" not in output and "[emerg]" not in output, output


# -- on the running proxy -------------------------------------------------------------------------


def test_healthcheck_answers(stack: Stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.health_port, timeout=TIMEOUT)
    conn.request("GET", "/healthz")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"ok\n")


def test_routes_reach_their_upstreams_with_proxy_headers(stack: Stack) -> None:
    # Each test is its own client (address): rate limits are per client address.
    source = stack.spare_address()
    checked = []
    for site in _proxy(stack.settings).sites:
        names = host_names(stack.settings, site)
        # Every route under the site's first name, and the first route under each other name.
        requests = [(names[0], probe(route) + "?q=1") for route in site.routes]
        requests += [(name, probe(site.routes[0]) + "?q=1") for name in names[1:]]
        for host, path in requests:
            route = served_by(site, path)
            resp = stack.get(host, path, source=source)
            assert resp.status == 200, (host, path, resp.status, resp.body[:200])
            body = resp.json()
            alias, port = target(stack.settings, route)
            assert (body["alias"], body["port"], body["path"]) == (alias, port, upstream_path(route, path)), host
            sent = body["headers"]
            assert sent["host"] == host
            assert sent["x-forwarded-proto"] == ("https" if stack.tls else "http")
            assert (sent["x-real-ip"], sent["x-forwarded-for"]) == (source, source)
            assert "upgrade" not in sent and sent.get("connection", "close") == "close"
            checked.append((host, path))
    assert len(checked) == sum(len(s.routes) + len(s.server_names) - 1 for s in _proxy(stack.settings).sites)
    for alias in stack.addresses:
        assert stack.dns.asked(alias) >= 1, f"nginx never asked the resolver for {alias}"


def test_security_headers_on_every_route(stack: Stack) -> None:
    expected, source = expected_headers(stack.settings), stack.spare_address()
    for site in _proxy(stack.settings).sites:
        host = host_names(stack.settings, site)[0]
        for route in site.routes:
            resp = stack.get(host, probe(route), source=source)
            for header, value in expected.items():
                assert resp.headers.get_all(header) == [value], (route.path, header)
            if _proxy(stack.settings).security_headers:
                assert "camera=()" in resp.headers["Permissions-Policy"]
            else:
                # Nothing added, and the upstream's own X-Frame-Options passes through untouched.
                assert resp.headers.get_all("X-Frame-Options") == ["DENY"]
                assert "X-Content-Type-Options" not in resp.headers
            if not stack.tls:
                assert "Strict-Transport-Security" not in resp.headers
            assert "X-Powered-By" not in resp.headers
            assert resp.headers["Server"] == "nginx"  # server_tokens off: no version


def test_unknown_host(stack: Stack) -> None:
    sites = _proxy(stack.settings).sites
    default = next((site for site in sites if "_" in site.server_names), None)
    if default is not None:
        resp = stack.get("someone-else.invalid", probe(default.routes[0]), source=stack.spare_address())
        assert resp.status == 200
        assert resp.json()["alias"] == target(stack.settings, served_by(default, probe(default.routes[0])))[0]
    else:
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, ssl.SSLEOFError)):
            stack.get("someone-else.invalid", "/", source=stack.spare_address())


@pytest.mark.parametrize("stack", REDIRECT_CASES, indirect=True)
def test_plain_http_redirects_to_https(stack: Stack) -> None:
    https_port = _proxy(stack.settings).https_port
    suffix = "" if https_port == 443 else f":{https_port}"
    for site in _proxy(stack.settings).sites:
        for host in host_names(stack.settings, site):
            conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=TIMEOUT)
            conn.request("GET", "/some/page?x=1", headers={"Host": host})
            resp = conn.getresponse()
            assert resp.status == 301
            assert resp.headers["Location"] == f"https://{host}{suffix}/some/page?x=1"
            conn.close()
    # ACME HTTP-01 challenges are answered on port 80 (from the webroot), not redirected.
    conn = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=TIMEOUT)
    conn.request("GET", "/.well-known/acme-challenge/berth-token", headers={"Host": "example.test"})
    assert conn.getresponse().status == 404


@pytest.mark.parametrize("stack", TLS_CASES, indirect=True)
def test_tls_versions_and_http2(stack: Stack, tls11_client_works: None) -> None:
    host = host_names(stack.settings, _proxy(stack.settings).sites[0])[0]
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        context = client_context()
        context.minimum_version = context.maximum_version = version
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", stack.https_port), timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                assert (tls.version(), tls.selected_alpn_protocol()) == (name, "h2")
    with pytest.raises(ssl.SSLError):
        handshake(stack.https_port, host, ssl.TLSVersion.TLSv1_1)
    # TLS 1.2 with CBC suites (no AEAD) or RSA key exchange (no forward secrecy) is refused too.
    with pytest.raises(ssl.SSLError):
        handshake(stack.https_port, host, ssl.TLSVersion.TLSv1_2, ciphers=CBC_SUITES)


def handshake(port: int, host: str, version: ssl.TLSVersion, ciphers: str = "DEFAULT:@SECLEVEL=0") -> str | None:
    context = client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        context.minimum_version = context.maximum_version = version
    context.set_ciphers(ciphers)  # let the local OpenSSL offer old versions and suites at all
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.version()


@pytest.fixture(scope="session")
def tls11_client_works(tls_dir: Path) -> None:
    """Our client can offer TLS 1.1 (to a server that allows it): a failed 1.1 handshake is the server refusing."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls_dir / TLS_CERT, tls_dir / TLS_KEY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server_context.minimum_version = ssl.TLSVersion.TLSv1
    server_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server_context.wrap_socket(conn, server_side=True).close()
            except (ssl.SSLError, OSError):
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert handshake(listener.getsockname()[1], "localhost", ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
        thread.join(timeout=TIMEOUT)


@pytest.mark.parametrize("stack", SSE_CASES, indirect=True)
def test_server_sent_events_arrive_unbuffered(stack: Stack) -> None:
    streams, source = 0, stack.spare_address()
    for site in _proxy(stack.settings).sites:
        host = host_names(stack.settings, site)[0]
        for route in (r for r in site.routes if r.sse):
            token = f"{stack.name}-{route.path}"
            conn = stack.connection(host, timeout=SSE_GAP + TIMEOUT, source=source)
            conn.request("GET", probe(route) + f"?sse={token}",
                         headers={"Host": host, "Accept": "text/event-stream", "Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            assert "Content-Encoding" not in resp.headers
            assert resp.readline() == b"data: first\n"
            first_received = time.monotonic()
            rest = resp.read()
            conn.close()
            assert b"data: second\n" in rest
            second_sent = stack.upstreams[target(stack.settings, route)].second_event_sent[token]
            # The first event was delivered while the stub still held the second back.
            assert second_sent - first_received > SSE_GAP / 3, (first_received, second_sent)
            streams += 1
    assert streams == sum(r.sse for r in routes(stack.settings))


@pytest.mark.parametrize("stack", WEBSOCKET_CASES, indirect=True)
def test_websocket_upgrade_is_tunnelled(stack: Stack) -> None:
    source = stack.spare_address()
    for site in _proxy(stack.settings).sites:
        host = host_names(stack.settings, site)[0]
        for route in (r for r in site.routes if r.websocket):
            assert upgrade_and_echo(stack, host, probe(route), source) == b"echo:ping"
        for route in (r for r in site.routes if not r.websocket and served_by(site, probe(r)) is r):
            # An ordinary route does not pass the upgrade: the stub answers as usual.
            assert upgrade_and_echo(stack, host, probe(route), source).startswith(b"HTTP/1.1 200")


def upgrade_and_echo(stack: Stack, host: str, path: str, source: str) -> bytes:
    """Ask for a WebSocket upgrade; after a 101, send "ping" and return the answer, else the response head."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    port = stack.https_port if stack.tls else stack.http_port
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0))
    sock = client_context().wrap_socket(raw, server_hostname=host) if stack.tls else raw
    with sock:
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {head!r}"
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            return head
        sock.sendall(b"ping")
        return sock.recv(1024)


@pytest.mark.parametrize("stack", STATIC_CASES, indirect=True)
def test_static_assets_get_long_cache_control(stack: Stack) -> None:
    expected, source = expected_headers(stack.settings), stack.spare_address()
    for site in _proxy(stack.settings).sites:
        host = host_names(stack.settings, site)[0]
        for route in (r for r in site.routes if r.static_cache):
            immutable = f"public, max-age={int(route.static_cache.total_seconds())}, immutable"
            leaves = ["berth/app.css", "logo.png", "font.woff2"]
            if route.path == "/":
                leaves.append("_next/static/chunks/main-1a2b")
            for leaf in leaves:
                path = probe(route, leaf)
                if served_by(site, path) is not route:
                    continue
                resp = stack.get(host, path, source=source)
                assert resp.status == 200
                assert resp.headers.get_all("Cache-Control") == [immutable], path
                # The nested location is proxied like its route and keeps the security headers.
                assert resp.json()["path"] == upstream_path(route, path)
                for header, value in expected.items():
                    assert resp.headers.get_all(header) == [value], (path, header)
            # Not an asset: the upstream's own Cache-Control.
            page = stack.get(host, probe(route, "page"), source=source)
            assert page.headers.get_all("Cache-Control") == ["no-cache"]


@pytest.mark.parametrize("stack", ["fixture-tls"], indirect=True)
def test_upstream_follows_dns_within_seconds(stack: Stack) -> None:
    # A replaced container comes back under its alias at a new address: nginx must follow without a reload.
    site = _proxy(stack.settings).sites[0]
    alias, port = target(stack.settings, served_by(site, "/berth-probe"))
    replacement = UpstreamServer(stack.spare_address(), port, f"{alias}-replacement")
    threading.Thread(target=replacement.serve_forever, daemon=True).start()

    def aliases_seen() -> set[str | None]:
        # Concurrent requests, so that every nginx worker (each has its own resolver cache) serves some.
        def alias_of(i: int) -> str | None:
            resp = stack.get("example.test", f"/berth-probe-{i}")
            return resp.json()["alias"] if resp.status == 200 else None

        with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
            return set(pool.map(alias_of, range(36)))

    try:
        assert aliases_seen() == {alias}
        stack.dns.set(alias, replacement.server_address[0])
        time.sleep(DNS_SETTLE)
        assert aliases_seen() == {f"{alias}-replacement"}
        stack.dns.set(alias, stack.addresses[alias])
        time.sleep(DNS_SETTLE)
        assert aliases_seen() == {alias}
    finally:
        stack.dns.set(alias, stack.addresses[alias])
        replacement.shutdown()
        replacement.server_close()


@pytest.mark.parametrize("stack", ["fixture-tls"], indirect=True)
def test_dead_address_of_an_alias_is_skipped(stack: Stack) -> None:
    # An alias with a dead replica (nothing listens there): connect fails fast and nginx tries the next.
    site = _proxy(stack.settings).sites[0]
    alias, _ = target(stack.settings, served_by(site, "/berth-probe"))
    dead = stack.spare_address()
    stack.dns.set(alias, dead, stack.addresses[alias])
    try:
        time.sleep(DNS_SETTLE)  # nginx has asked again and holds both addresses
        statuses = [stack.get("example.test", f"/berth-probe-{i}").status for i in range(12)]
    finally:
        stack.dns.set(alias, stack.addresses[alias])
    assert statuses == [200] * 12
    assert "connect() failed" in stack.log.read_text() and dead in stack.log.read_text()


# Last in the module, so its burst cannot interfere with the tests above (it also uses its own
# client address, and limits are per client address).
@pytest.mark.parametrize("stack", RATE_LIMIT_CASES, indirect=True)
def test_a_burst_beyond_the_rate_limit_is_refused(stack: Stack) -> None:
    proxy = _proxy(stack.settings)
    zones_checked = set()
    for site in proxy.sites:
        host = host_names(stack.settings, site)[0]
        for route in site.routes:
            if route.rate_limit is None or route.rate_limit in zones_checked:
                continue
            rule = proxy.rate_limits[route.rate_limit]
            number, unit = rule.rate.split("r/")
            per_second = int(number) / (1 if unit == "s" else 60)
            statuses = burst(stack, host, probe(route), rule.burst + 10 + math.ceil(2 * per_second),
                             wait=TIMEOUT if rule.nodelay else 5.0)
            refused, passed = statuses.count(429), statuses.count(200)
            assert refused >= 1 and passed >= 1, (route.path, statuses)
            # nodelay answers at once; without it the excess within burst waits (and may outlast our wait).
            assert set(statuses) <= ({200, 429} if rule.nodelay else {200, 429, "waiting"}), statuses
            if rule.nodelay:
                assert passed >= rule.burst + 1, statuses
            zones_checked.add(route.rate_limit)
    assert zones_checked == {r.rate_limit for r in routes(stack.settings) if r.rate_limit}


def burst(stack: Stack, host: str, path: str, count: int, wait: float) -> list[int | str]:
    """Send ``count`` requests at once from a fresh client address; their statuses ("waiting" if no answer)."""
    source = stack.spare_address()
    conns = [stack.connection(host, timeout=wait, source=source) for _ in range(count)]
    for conn in conns:
        conn.connect()
    start = threading.Barrier(count)

    def send(conn: http.client.HTTPConnection) -> int | str:
        start.wait(timeout=TIMEOUT)
        try:
            conn.request("GET", path, headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except TimeoutError:
            return "waiting"
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(send, conns))
