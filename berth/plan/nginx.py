"""The proxy's nginx.conf: sites by server name, TLS, per-request upstream resolution, limits and headers.

Pure: settings in, text out (no pulumi import). ``render_nginx_conf`` builds a plain view model here and
``templates/nginx.conf.j2`` renders it, so every rule of the config lives in one of those two places.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import jinja2

from berth.settings import CONSOLES, ProxySettings, Route, Settings, Site

# File names of the certificate and its key inside the proxy's tls_dir.
TLS_CERT = "cert.pem"
TLS_KEY = "key.pem"
# Shared by certbot (read-write) and nginx (read-only) in tls.mode letsencrypt: the webroot of the
# HTTP-01 challenges, served on port 80 for every name, and the certificate (berth/plan/acme.py).
ACME_SHARED = "/var/lib/berth-acme"
ACME_ROOT = f"{ACME_SHARED}/webroot"
# tls.mode letsencrypt: the file nginx serves, key and chain in one, kept current by nginx-tls.sh.
TLS_COMBINED = "tls.pem"
# The host a console route reaches: its network alias (the port comes from CONSOLES).
CONSOLE_HOSTS = {"kibana": "kibana", "minio-console": "minio"}
# An SSE stream or a WebSocket stays open between messages: its read timeout is at least this long.
STREAM_READ_TIMEOUT = timedelta(hours=1)
PERMISSIONS_POLICY = "camera=(), geolocation=(), microphone=(), payment=(), usb=()"
# Assets under a static_cache route that get Cache-Control immutable: Next.js' hashed build output,
# and files by extension.
STATIC_EXTENSIONS = ("avif", "css", "eot", "gif", "ico", "jpeg", "jpg", "js", "map", "mjs", "otf", "png",
                     "svg", "ttf", "webp", "woff", "woff2")
STATIC_PATTERN = r"^/_next/static/|\.(?:" + "|".join(STATIC_EXTENSIONS) + r")$"
# text/html is always compressed; text/event-stream never is (an SSE stream must not wait for a buffer).
GZIP_TYPES = ("application/javascript", "application/json", "application/manifest+json", "application/xml",
              "image/svg+xml", "text/css", "text/javascript", "text/plain", "text/xml")
# Headers the proxy sets itself, so an upstream's copy is dropped rather than sent twice.
ALWAYS_HIDDEN = ("X-Powered-By",)
# What nginx reads as one bare word; anything else is written as a quoted string.
_BARE_TOKEN = re.compile(r"""[^\s;{}"'#]+""")
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Header:
    """One ``add_header``: name and the already-quoted value."""

    name: str
    value: str


@dataclass(frozen=True)
class Zone:
    """One ``limit_req_zone``."""

    name: str
    size: str
    rate: str


@dataclass(frozen=True)
class Limit:
    """A route's ``limit_req``."""

    zone: str
    burst: int
    nodelay: bool


@dataclass(frozen=True)
class Location:
    """One route as a location block; ``static`` is the Cache-Control max-age in seconds, if any."""

    path: str
    variable: str
    target: str
    rewrites: tuple[tuple[str, str], ...]
    limit: Limit | None
    read_timeout: str
    client_max_body_size: str | None
    sse: bool
    websocket: bool
    static: int | None


@dataclass(frozen=True)
class Server:
    """One site as a server block: its listen parameters, names and routes."""

    listens: tuple[str, ...]
    names: tuple[str, ...]
    default: bool
    locations: tuple[Location, ...]
    acme: bool = False  # serves the HTTP-01 webroot (letsencrypt, on the plain port)


def render_nginx_conf(settings: Settings, *, resolver: str = "127.0.0.11", http_port: int = 80,
                      https_port: int = 443, tls_dir: str = "/etc/nginx/tls", health_listen: str = "127.0.0.1:8081",
                      pid: str = "/tmp/nginx.pid", temp_dir: str = "/tmp") -> str:
    """Render the complete nginx.conf of the stack's proxy.

    The ports are the ones nginx listens on inside its container; ``resolver`` is Docker's embedded
    DNS, through which every upstream is looked up per request. ``tls_dir`` holds ``TLS_CERT`` and
    ``TLS_KEY``. The pid file and temp directories go to /tmp so the image's root can stay read-only.
    """
    proxy = settings.proxy
    if proxy is None or not proxy.enabled:
        raise ValueError("settings.proxy is not enabled: there is no nginx.conf to render")
    ports = _ports(proxy, http_port, https_port)
    servers = tuple(_server(settings, proxy, site, ports) for site in proxy.sites)
    headers = _headers(proxy)
    return _template().render(
        resolver=resolver, http_port=http_port, tls_dir=tls_dir, health_listen=health_listen, pid=pid,
        temp_dir=temp_dir, acme_root=ACME_ROOT, acme=proxy.tls.mode == "letsencrypt",
        tls_cert=TLS_COMBINED if proxy.tls.mode == "letsencrypt" else TLS_CERT,
        tls_key=TLS_COMBINED if proxy.tls.mode == "letsencrypt" else TLS_KEY,
        tls=proxy.tls.mode != "none", redirect=proxy.http_redirect, redirect_to=_redirect_to(proxy),
        gzip=proxy.gzip, gzip_types=GZIP_TYPES, client_max_body_size=_size(proxy.client_max_body_size),
        zones=[Zone(name, _size(rule.zone_size), rule.rate) for name, rule in sorted(proxy.rate_limits.items())],
        websocket=any(loc.websocket for server in servers for loc in server.locations),
        headers=headers, hidden=sorted({header.name for header in headers} | set(ALWAYS_HIDDEN)),
        static_pattern=STATIC_PATTERN, servers=servers,
        catch_all=() if any(server.default for server in servers) else tuple(f"{p} default_server" for p in ports),
    )


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=False, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("nginx.conf.j2")


def _redirect_to(proxy: ProxySettings) -> str:
    # The host publishes proxy.https_port; a browser sent to another port than 443 must be told which.
    port = "" if proxy.https_port == 443 else f":{proxy.https_port}"
    return f"https://$host{port}$request_uri"


def _ports(proxy: ProxySettings, http_port: int, https_port: int) -> tuple[str, ...]:
    # The listen parameters of a site: with http_redirect, port 80 belongs to the redirect server.
    # "listen ... http2" rather than "http2 on": the directive only exists from nginx 1.25.1, while
    # the listen flag works on Debian's 1.22 (the render tests) and, deprecated, on 1.25+.
    plain = () if proxy.http_redirect else (f"{http_port}",)
    return plain + ((f"{https_port} ssl http2",) if proxy.tls.mode != "none" else ())


def _server(settings: Settings, proxy: ProxySettings, site: Site, ports: tuple[str, ...]) -> Server:
    names = _names(settings, site)
    default = "_" in names
    listens = tuple(f"{port} default_server" if default else port for port in ports)
    locations = tuple(_location(settings, proxy, route) for route in site.routes)
    acme = proxy.tls.mode == "letsencrypt" and not proxy.http_redirect
    return Server(listens, names, default, locations, acme)


def _location(settings: Settings, proxy: ProxySettings, route: Route) -> Location:
    host, port = _upstream(settings, route)
    streams = route.sse or route.websocket
    read_timeout = max(route.read_timeout, STREAM_READ_TIMEOUT) if streams else route.read_timeout
    limit = None
    if route.rate_limit is not None:
        rule = proxy.rate_limits[route.rate_limit]
        limit = Limit(route.rate_limit, rule.burst, rule.nodelay)
    return Location(
        path=_token(route.path), variable="$up_" + route.app.replace("-", "_"), target=f"http://{host}:{port}",
        rewrites=_strip(route.path) if route.strip_prefix else (), limit=limit, read_timeout=_duration(read_timeout),
        client_max_body_size=None if route.client_max_body_size is None else _size(route.client_max_body_size),
        sse=route.sse, websocket=route.websocket,
        static=None if route.static_cache is None else round(route.static_cache.total_seconds()),
    )


def _upstream(settings: Settings, route: Route) -> tuple[str, int]:
    # An app's name is its network alias; a console is reached on its service's alias.
    if route.app in settings.enabled_apps:
        return route.app, route.port or settings.enabled_apps[route.app].port
    return CONSOLE_HOSTS[route.app], route.port or CONSOLES[route.app]


def _strip(path: str) -> tuple[tuple[str, str], ...]:
    # With a variable in proxy_pass nginx sends the request URI as is, unless a rewrite ... break
    # changed it: that rewrite is how the prefix is dropped. "/api" strips "/api" and "/api/x", not "/apix".
    if path == "/":
        return ()
    prefix = re.escape(path.rstrip("/"))
    if path.endswith("/"):
        return ((_token(f"^{prefix}/(.*)$"), "/$1"),)
    return ((_token(f"^{prefix}$"), "/"), (_token(f"^{prefix}/(.*)$"), "/$1"))


def _headers(proxy: ProxySettings) -> list[Header]:
    headers: dict[str, str] = {}
    if proxy.security_headers:
        headers |= {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "SAMEORIGIN",
                    "Referrer-Policy": "strict-origin-when-cross-origin", "Permissions-Policy": PERMISSIONS_POLICY}
    if proxy.content_security_policy:
        headers["Content-Security-Policy"] = proxy.content_security_policy
    if proxy.tls.mode != "none":
        max_age = round(proxy.tls.hsts_max_age.total_seconds())
        headers["Strict-Transport-Security"] = f"max-age={max_age}" + (
            "; includeSubDomains" if proxy.tls.hsts_include_subdomains else "")
    return [Header(name, _quote(value)) for name, value in sorted(headers.items())]


def _duration(value: timedelta) -> str:
    """Write a duration in nginx units: whole seconds as ``Ns``, anything finer as ``Nms``."""
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _size(value: int) -> str:
    """Write bytes in nginx units: ``m`` or ``k`` when they divide evenly (not every size takes ``g``)."""
    for unit, factor in (("m", 1024 * 1024), ("k", 1024)):
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(text: str) -> str:
    """Write text as one bare nginx word when it can be (no space, ; { } # or quotes), else quoted."""
    return text if _BARE_TOKEN.fullmatch(text) else _quote(text)


def _names(settings: Settings, site: Site) -> tuple[str, ...]:
    return tuple(name.replace("{domain}", settings.domain) for name in site.server_names)


def server_names(settings: Settings) -> list[str]:
    """Every name the proxy serves, {domain} filled in (the certificate's names); the domain if none."""
    proxy = settings.proxy
    sites = proxy.sites if proxy is not None and proxy.enabled else []
    names = [name for site in sites for name in _names(settings, site) if name != "_"]
    return names or [settings.domain]


def site_urls(settings: Settings) -> list[str]:
    """The URL of every named site, as users reach it through the published ports."""
    proxy = settings.proxy
    if proxy is None or not proxy.enabled:
        return []
    tls = proxy.tls.mode != "none"
    scheme, port, default = ("https", proxy.https_port, 443) if tls else ("http", proxy.http_port, 80)
    suffix = "" if port == default else f":{port}"
    return [f"{scheme}://{name}{suffix}" for name in server_names(settings) if "*" not in name]
