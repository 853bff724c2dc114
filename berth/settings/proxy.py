"""The nginx proxy: sites by server name, path routes, TLS, rate limits and headers."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from berth.errors import Problems
from berth.settings import grammar
from berth.settings.apps import HttpPath
from berth.settings.base import (
    BerthModel,
    ByteSize,
    Cadence,
    Duration,
    ImageRef,
    Name,
    Pem,
    Port,
    ResourceAmounts,
    Resources,
    in_range,
    matching,
)
from berth.settings.tls import AcmeSettings

# A leading "*." wildcard is nginx's; a bare "*" or "*foo" is not a server name nginx accepts.
# Labels are 1-63 characters (RFC 1123); the whole name's length is checked once {domain} is filled in.
ServerName = Annotated[str, AfterValidator(matching(
    r"(\*\.)?(\{domain\}|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.(\{domain\}|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?))*|_",
    "a host name such as www.{domain}, *.example.com, api.example.com or _ (labels of 1-63 characters)"))]
# Printable ASCII without '"' (it would end nginx's quoted value), '$' (a variable) or '\\'; a CR, LF
# or NUL would split the response header.
HeaderValue = Annotated[str, AfterValidator(matching(r"[ !#%-\[\]-~]{1,4096}",
                                                     "a header value of printable ASCII without $, \" or \\"))]
# nginx's own memory is a few MiB per worker plus the rate-limit zones: a guardrail, not a budget.
PROXY_MEMORY = 256 * 1024 * 1024
Rate = Annotated[str, AfterValidator(matching(r"[1-9][0-9]{0,8}r/[sm]", "a rate like 10r/s or 30r/m"))]
# nginx refuses a limit_req zone under 32k ("zone is too small"; 8 pages of 4k).
ZoneSize = Annotated[ByteSize, AfterValidator(in_range(32 * 1024, 1024**3))]


def _ipv4(text: str) -> str:
    if not grammar.ipv4(text):
        raise ValueError(f"{text!r} is not an IPv4 address (four ASCII octets 0-255)")
    return text


class RateLimit(BerthModel):
    """A limit_req zone: requests per client address."""

    rate: Rate
    burst: Annotated[int, AfterValidator(in_range(0, 100000))] = 0
    nodelay: bool = True
    zone_size: ZoneSize = 10 * 1024 * 1024


class Route(BerthModel):
    """A path prefix routed to an app (or a service's web UI) inside the stack."""

    path: HttpPath = "/"
    app: Name
    port: Port | None = None           # defaults to the app's port
    strip_prefix: bool = False
    rate_limit: Name | None = None
    sse: bool = False                  # server-sent events: no buffering, long reads
    websocket: bool = False
    static_cache: Duration | None = None  # Cache-Control max-age for static assets under this route
    read_timeout: Duration = timedelta(seconds=60)
    client_max_body_size: ByteSize | None = None


class Site(BerthModel):
    """A server block: its names and its routes."""

    server_names: Annotated[list[ServerName], Field(min_length=1)]
    routes: Annotated[list[Route], Field(min_length=1)]

    @model_validator(mode="after")
    def _routes_distinct(self) -> Site:
        paths = [route.path for route in self.routes]
        for path in paths:
            if paths.count(path) > 1:
                raise ValueError(f"routes: path {path} is routed twice")
        return self


class TlsSettings(BerthModel):
    """How the proxy gets its certificate, and HSTS.

    self-signed: made by pulumi-tls; letsencrypt: ordered and renewed by certbot with ``acme``;
    provided: ``certificate`` (the PEM chain, leaf first) and ``key`` given as secret config.
    """

    mode: Literal["self-signed", "letsencrypt", "provided", "none"] = "self-signed"
    hsts_max_age: Duration = timedelta(days=365)
    hsts_include_subdomains: bool = True
    acme: AcmeSettings | None = None
    certificate: Pem | None = None
    key: Pem | None = None

    @model_validator(mode="after")
    def _source_given(self) -> TlsSettings:
        if self.mode == "letsencrypt" and self.acme is None:
            raise ValueError("acme: tls.mode letsencrypt needs acme (at least acme.email for Let's Encrypt)")
        if self.mode != "letsencrypt" and self.acme is not None:
            raise ValueError(f"acme: is only for tls.mode letsencrypt, not {self.mode}")
        for field in ("certificate", "key"):
            if self.mode == "provided" and getattr(self, field) is None:
                raise ValueError(f"{field}: tls.mode provided needs certificate and key (PEM, secret)")
            if self.mode != "provided" and getattr(self, field) is not None:
                raise ValueError(f"{field}: is only for tls.mode provided, not {self.mode}")
        return self


class ProxySettings(BerthModel):
    """nginx in front of the apps: the only container that publishes host ports."""

    enabled: bool = True
    image: ImageRef = "nginx:1.27-alpine"
    http_port: Port = 80
    https_port: Port = 443
    # Host address the ports are published on; 0.0.0.0 for the public, 127.0.0.1 for a local dev box.
    bind: Annotated[str, AfterValidator(_ipv4)] = "0.0.0.0"
    tls: TlsSettings = TlsSettings()
    http_redirect: bool = True
    rate_limits: dict[Name, RateLimit] = {}
    security_headers: bool = True
    # nginx would read "$" as a variable and '"' would end the header value.
    content_security_policy: HeaderValue | None = None
    gzip: bool = True
    client_max_body_size: ByteSize = 10 * 1024 * 1024
    sites: list[Site] = []
    healthcheck: Cadence = Cadence(interval=timedelta(seconds=5), start_period=timedelta(seconds=10))
    resources: Resources = Resources(limits=ResourceAmounts(memory=PROXY_MEMORY))

    @model_validator(mode="after")
    def _consistent(self) -> ProxySettings:
        found: list[tuple[str, str]] = []
        if self.http_port == self.https_port:
            found.append(("https_port", f"{self.https_port} is also http_port; they need a port each"))
        if self.http_redirect and self.tls.mode == "none":
            found.append(("", "http_redirect needs tls.mode other than none"))
        for i, site in enumerate(self.sites):
            for j, route in enumerate(site.routes):
                if route.rate_limit is not None and route.rate_limit not in self.rate_limits:
                    found.append((f"sites[{i}].routes[{j}].rate_limit",
                                  f"{route.rate_limit!r} is not one of {sorted(self.rate_limits)}"))
        Problems.check(found)
        return self
