"""berth.plan.nginx: the rendered nginx.conf, directive by directive (tests/render runs it in real nginx)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.plan.nginx import TLS_CERT, TLS_KEY, render_nginx_conf
from berth.settings import load_settings
from berth.units import parse_duration

BASE = {
    "environment": "dev",
    "domain": "example.com",
    "apps": {"frontend": {"image": "x/f:1", "port": 3000}, "backend": {"image": "x/b:1", "port": 8000,
                                                                               "extra_ports": [8001]}},
}
WEB = {"server_names": ["{domain}", "www.{domain}"], "routes": [{"path": "/", "app": "frontend"}]}
SECURITY_HEADERS = [
    'add_header Permissions-Policy "camera=(), geolocation=(), microphone=(), payment=(), usb=()" always;',
    'add_header Referrer-Policy "strict-origin-when-cross-origin" always;',
    'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;',
    'add_header X-Content-Type-Options "nosniff" always;',
    'add_header X-Frame-Options "SAMEORIGIN" always;',
]
HIDDEN = [
    "proxy_hide_header Permissions-Policy;",
    "proxy_hide_header Referrer-Policy;",
    "proxy_hide_header Strict-Transport-Security;",
    "proxy_hide_header X-Content-Type-Options;",
    "proxy_hide_header X-Frame-Options;",
    "proxy_hide_header X-Powered-By;",
]
PROXY_HEADERS = [
    "proxy_set_header Host $host;",
    "proxy_set_header X-Real-IP $remote_addr;",
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
]
STATIC_OPENER = (r"location ~* ^/_next/static/|\.(?:avif|css|eot|gif|ico|jpeg|jpg|js|map|mjs|otf|png|svg|ttf|webp"
                 r"|woff|woff2)$ {")


def render(proxy: dict, extra: dict | None = None, **kwargs: object) -> str:
    return render_nginx_conf(load_settings({**BASE, **(extra or {}), "proxy": proxy}), **kwargs)


def site(*routes: dict, names: tuple[str, ...] = ("api.{domain}",)) -> dict:
    return {"server_names": list(names), "routes": list(routes)}


def blocks(text: str, opener: str) -> list[str]:
    """Every block whose opening line is ``opener`` (stripped), as text from that line to its closing brace."""
    lines, found = text.splitlines(), []
    for start, line in enumerate(lines):
        if line.strip() != opener:
            continue
        depth = 0
        for end in range(start, len(lines)):
            depth += lines[end].count("{") - lines[end].count("}")
            if depth == 0:
                found.append("\n".join(lines[start:end + 1]))
                break
    return found


def block(text: str, opener: str, containing: str | None = None) -> str:
    """The one block opened by ``opener`` whose direct lines include ``containing``."""
    matches = [b for b in blocks(text, opener) if containing is None or containing in direct(b)]
    assert len(matches) == 1, f"{len(matches)} blocks {opener!r} containing {containing!r}"
    return matches[0]


def direct(block_text: str) -> list[str]:
    """The stripped lines directly inside a block: nested blocks show as their opening line only."""
    out, depth = [], 0
    for line in block_text.splitlines()[1:-1]:
        if depth == 0 and line.strip():
            out.append(line.strip())
        depth += line.count("{") - line.count("}")
    return out


def server(text: str, names: str) -> str:
    return block(text, "server {", f"server_name {names};")


def location(text: str, names: str, path: str) -> list[str]:
    return direct(block(server(text, names), f"location {path} {{"))


def test_server_names_take_the_domain() -> None:
    conf = render({"sites": [WEB, site({"path": "/", "app": "backend"})]})
    assert re.findall(r"server_name .*;", conf) == [
        "server_name _;", "server_name _;", "server_name example.com www.example.com;",
        "server_name api.example.com;",
    ]


def test_https_sites_with_redirect_listen_on_443_only() -> None:
    conf = render({"sites": [WEB]})
    assert direct(server(conf, "example.com www.example.com"))[:2] == ["listen 443 ssl http2;",
                                                                       "server_name example.com www.example.com;"]


def test_redirect_server_sends_plain_http_to_https_but_keeps_acme() -> None:
    conf = render({"sites": [WEB]})
    redirect = block(conf, "server {", "listen 80 default_server;")
    assert direct(redirect) == ["listen 80 default_server;", "server_name _;",
                                "location /.well-known/acme-challenge/ {", "location / {"]
    assert direct(block(redirect, "location / {")) == ["return 301 https://$host$request_uri;"]
    assert direct(block(redirect, "location /.well-known/acme-challenge/ {")) == ["root /var/lib/berth-acme/webroot;"]


def test_redirect_names_a_published_https_port_other_than_443() -> None:
    conf = render({"https_port": 8443, "sites": [WEB]})
    assert "return 301 https://$host:8443$request_uri;" in conf
    # The published port is the host's business: nginx still listens on its own https_port.
    assert "listen 443 ssl http2;" in conf


def test_underscore_site_is_the_default_server_and_replaces_the_catch_all() -> None:
    conf = render({"sites": [site({"path": "/", "app": "backend"}, names=("_",))]}, https_port=8443)
    default = direct(block(conf, "server {", "listen 8443 ssl http2 default_server;"))
    assert default[:2] == ["listen 8443 ssl http2 default_server;", "server_name _;"]
    assert default[-1] == "location / {"
    assert "return 444;" not in conf


def test_unknown_hosts_are_closed_by_a_catch_all() -> None:
    conf = render({"sites": [WEB]})
    assert direct(block(conf, "server {", "return 444;")) == [
        "listen 443 ssl http2 default_server;", "server_name _;", "return 444;"]


def test_upstreams_are_resolved_per_request_with_fast_failover() -> None:
    conf = render({"sites": [WEB]}, resolver="10.0.0.2:5353")
    http = direct(block(conf, "http {"))
    for line in ("resolver 10.0.0.2:5353 valid=1s ipv6=off;", "proxy_http_version 1.1;",
                 "proxy_connect_timeout 250ms;", "proxy_next_upstream error timeout http_502 http_503;",
                 "proxy_next_upstream_tries 3;"):
        assert line in http
    assert "resolver 127.0.0.11 valid=1s ipv6=off;" in render({"sites": [WEB]})
    # POSTs are not retried once sent: nginx's default, so no non_idempotent anywhere.
    assert "non_idempotent" not in conf
    # No static upstream{} block: that would pin the addresses resolved at start-up.
    assert not re.search(r"^\s*upstream ", conf, re.MULTILINE)


def test_route_proxies_through_a_variable_to_the_app_alias_and_port() -> None:
    conf = render({"sites": [WEB, site({"path": "/", "app": "backend"}, {"path": "/admin/", "app": "backend",
                                                                           "port": 8001})]})
    assert location(conf, "example.com www.example.com", "/")[:2] == [
        "set $up_frontend http://frontend:3000;", "proxy_pass $up_frontend;"]
    assert location(conf, "api.example.com", "/")[:2] == ["set $up_backend http://backend:8000;",
                                                          "proxy_pass $up_backend;"]
    assert location(conf, "api.example.com", "/admin/")[0] == "set $up_backend http://backend:8001;"


def test_plain_route_location_in_full() -> None:
    conf = render({"sites": [WEB]})
    assert location(conf, "example.com www.example.com", "/") == [
        "set $up_frontend http://frontend:3000;", "proxy_pass $up_frontend;", *PROXY_HEADERS,
        'proxy_set_header Connection "";', "proxy_read_timeout 60s;", *SECURITY_HEADERS, *HIDDEN,
    ]


def test_strip_prefix_rewrites_after_set_and_before_proxy_pass() -> None:
    conf = render({"sites": [site({"path": "/api/", "app": "backend", "strip_prefix": True},
                                  {"path": "/v1.2", "app": "backend", "strip_prefix": True},
                                  {"path": "/keep/", "app": "backend"})]})
    assert location(conf, "api.example.com", "/api/")[:3] == [
        "set $up_backend http://backend:8000;", "rewrite ^/api/(.*)$ /$1 break;", "proxy_pass $up_backend;"]
    assert location(conf, "api.example.com", "/v1.2")[1:3] == [
        r"rewrite ^/v1\.2$ / break;", r"rewrite ^/v1\.2/(.*)$ /$1 break;"]
    assert not [line for line in location(conf, "api.example.com", "/keep/") if line.startswith("rewrite")]


def test_console_routes_reach_the_service_alias_on_the_console_port() -> None:
    conf = render({"sites": [site({"path": "/kibana/", "app": "kibana"}, {"path": "/minio/", "app": "minio-console"},
                                  names=("ops.{domain}",))]}, extra={"minio": {}, "elk": {}})
    assert location(conf, "ops.example.com", "/kibana/")[:2] == ["set $up_kibana http://kibana:5601;",
                                                                 "proxy_pass $up_kibana;"]
    assert location(conf, "ops.example.com", "/minio/")[:2] == ["set $up_minio_console http://minio:9001;",
                                                                "proxy_pass $up_minio_console;"]


def test_rate_limits_are_zones_and_per_route_limits() -> None:
    conf = render({
        "rate_limits": {"uploads": {"rate": "2r/s", "burst": 5, "nodelay": False, "zone_size": "1m"},
                        "api": {"rate": "10r/s", "burst": 20}},
        "sites": [site({"path": "/", "app": "backend", "rate_limit": "api"},
                       {"path": "/upload/", "app": "backend", "rate_limit": "uploads"},
                       {"path": "/free/", "app": "backend"})],
    })
    assert re.findall(r"limit_req_zone .*;", conf) == [
        "limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;",
        "limit_req_zone $binary_remote_addr zone=uploads:1m rate=2r/s;",
    ]
    assert location(conf, "api.example.com", "/")[1:3] == ["limit_req zone=api burst=20 nodelay;",
                                                           "limit_req_status 429;"]
    assert location(conf, "api.example.com", "/upload/")[1:3] == ["limit_req zone=uploads burst=5;",
                                                                  "limit_req_status 429;"]
    assert not [line for line in location(conf, "api.example.com", "/free/") if line.startswith("limit_req")]


def test_sse_location_streams_unbuffered_with_long_reads() -> None:
    conf = render({"sites": [site({"path": "/events/", "app": "backend", "sse": True},
                                  {"path": "/slow-events/", "app": "backend", "sse": True, "read_timeout": "2h"})]})
    assert location(conf, "api.example.com", "/events/") == [
        "set $up_backend http://backend:8000;", "proxy_pass $up_backend;", *PROXY_HEADERS,
        'proxy_set_header Connection "";', "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;",
        "proxy_buffering off;", "proxy_cache off;", "chunked_transfer_encoding on;", "gzip off;",
        *SECURITY_HEADERS, *HIDDEN,
    ]
    assert "proxy_read_timeout 7200s;" in location(conf, "api.example.com", "/slow-events/")
    assert "text/event-stream" not in conf


def test_websocket_routes_pass_the_upgrade() -> None:
    conf = render({"sites": [site({"path": "/ws/", "app": "backend", "websocket": True},
                                  {"path": "/", "app": "backend"})]})
    assert direct(block(conf, "map $http_upgrade $connection_upgrade {")) == ["default upgrade;", '"" close;']
    ws = location(conf, "api.example.com", "/ws/")
    assert ws[6:10] == ["proxy_set_header Upgrade $http_upgrade;", "proxy_set_header Connection $connection_upgrade;",
                        "proxy_read_timeout 3600s;", "proxy_send_timeout 3600s;"]
    assert 'proxy_set_header Connection "";' in location(conf, "api.example.com", "/")
    assert "map $http_upgrade" not in render({"sites": [WEB]})


def test_tls_self_signed_settings() -> None:
    conf = render({"sites": [WEB]}, tls_dir="/certs")
    http = direct(block(conf, "http {"))
    assert (TLS_CERT, TLS_KEY) == ("cert.pem", "key.pem")
    for line in ("ssl_certificate /certs/cert.pem;", "ssl_certificate_key /certs/key.pem;",
                 "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_session_cache shared:SSL:10m;", "ssl_session_tickets off;",
                 "ssl_prefer_server_ciphers off;"):
        assert line in http
    ciphers = next(line for line in http if line.startswith("ssl_ciphers "))
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers[12:-1].split(":"))


def test_hsts_follows_its_settings() -> None:
    conf = render({"tls": {"hsts_max_age": "24h", "hsts_include_subdomains": False}, "sites": [WEB]})
    assert 'add_header Strict-Transport-Security "max-age=86400" always;' in direct(
        server(conf, "example.com www.example.com"))


def test_without_tls_routes_are_served_on_port_80_and_there_is_no_hsts() -> None:
    conf = render({"tls": {"mode": "none"}, "http_redirect": False, "sites": [WEB]}, http_port=8080)
    web = direct(server(conf, "example.com www.example.com"))
    assert web[:2] == ["listen 8080;", "server_name example.com www.example.com;"]
    assert "Strict-Transport-Security" not in conf
    assert "ssl" not in conf and "443" not in conf and "return 301" not in conf
    assert direct(block(conf, "server {", "return 444;"))[0] == "listen 8080 default_server;"


def test_tls_without_redirect_serves_both_ports() -> None:
    conf = render({"http_redirect": False, "sites": [WEB]})
    assert direct(server(conf, "example.com www.example.com"))[:2] == ["listen 80;", "listen 443 ssl http2;"]
    assert "return 301" not in conf


def test_security_headers_are_repeated_in_every_location() -> None:
    csp = "default-src 'self'; img-src 'self' data:"
    conf = render({"content_security_policy": csp, "sites": [WEB, site(
        {"path": "/", "app": "backend", "sse": True},
        {"path": "/static/", "app": "frontend", "static_cache": "1h"})]})
    expected = [f'add_header Content-Security-Policy "{csp}" always;', *SECURITY_HEADERS]
    for names in ("example.com www.example.com", "api.example.com"):
        assert [line for line in direct(server(conf, names)) if line.startswith("add_header")] == expected
    locations = [b for opener in ("location / {", "location /static/ {", STATIC_OPENER) for b in blocks(conf, opener)]
    site_locations = [b for b in locations if "return 301" not in b]
    assert len(site_locations) == 4
    for body in site_locations:
        added = [line for line in direct(body) if line.startswith("add_header")]
        assert added[:len(expected)] == expected
        assert "proxy_hide_header Content-Security-Policy;" in direct(body)


def test_no_security_headers_and_no_tls_mean_no_add_header() -> None:
    conf = render({"security_headers": False, "tls": {"mode": "none"}, "http_redirect": False, "sites": [WEB]})
    assert "add_header" not in conf
    assert location(conf, "example.com www.example.com", "/")[-1] == "proxy_hide_header X-Powered-By;"


def test_static_cache_is_a_nested_location_proxied_the_same_way() -> None:
    conf = render({"sites": [site({"path": "/assets/", "app": "frontend", "static_cache": "720h",
                                   "strip_prefix": True})]})
    route = block(server(conf, "api.example.com"), "location /assets/ {")
    assert direct(route)[-1] == STATIC_OPENER
    static = direct(block(route, STATIC_OPENER))
    assert static[:3] == ["set $up_frontend http://frontend:3000;", "rewrite ^/assets/(.*)$ /$1 break;",
                          "proxy_pass $up_frontend;"]
    assert static[-2:] == ["proxy_hide_header Cache-Control;",
                           'add_header Cache-Control "public, max-age=2592000, immutable" always;']
    assert "Cache-Control" not in "\n".join(direct(route))


def test_gzip_and_body_size() -> None:
    conf = render({"client_max_body_size": "1g", "sites": [site(
        {"path": "/", "app": "backend", "client_max_body_size": "50m"}, {"path": "/small/", "app": "backend",
                                                                          "client_max_body_size": 1500})]})
    http = direct(block(conf, "http {"))
    assert "client_max_body_size 1024m;" in http
    assert http.index("gzip on;") < http.index("gzip_types application/javascript application/json "
                                               "application/manifest+json application/xml image/svg+xml text/css "
                                               "text/javascript text/plain text/xml;")
    assert {"gzip_vary on;", "gzip_proxied any;"} <= set(http)
    assert "client_max_body_size 50m;" in location(conf, "api.example.com", "/")
    assert "client_max_body_size 1500;" in location(conf, "api.example.com", "/small/")
    assert "gzip" not in render({"gzip": False, "sites": [WEB]})


@pytest.mark.parametrize(("timeout", "rendered"), [("1500ms", "1500ms"), ("90s", "90s"), ("2m", "120s"), (45, "45s")])
def test_durations_are_in_nginx_units(timeout: object, rendered: str) -> None:
    conf = render({"sites": [site({"path": "/", "app": "backend", "read_timeout": timeout})]})
    assert f"proxy_read_timeout {rendered};" in location(conf, "api.example.com", "/")


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=10 * 86_400_000))
def test_durations_round_trip(ms: int) -> None:
    conf = render({"sites": [site({"path": "/", "app": "backend", "read_timeout": f"{ms}ms"})]})
    line = next(line for line in location(conf, "api.example.com", "/") if line.startswith("proxy_read_timeout"))
    assert parse_duration(line.split()[1].rstrip(";")) == timedelta(milliseconds=ms)


def test_health_server() -> None:
    conf = render({"sites": [WEB]}, health_listen="127.0.0.1:9999")
    health = block(conf, "server {", "listen 127.0.0.1:9999;")
    assert direct(health) == ["listen 127.0.0.1:9999;", "location = /healthz {"]
    assert direct(block(health, "location = /healthz {")) == [
        "access_log off;", "default_type text/plain;", r'return 200 "ok\n";']


def test_main_context_and_paths() -> None:
    conf = render({"sites": [WEB]})
    assert conf.splitlines()[1:4] == ["worker_processes auto;", "pid /tmp/nginx.pid;", "error_log stderr warn;"]
    assert direct(block(conf, "events {")) == ["worker_connections 1024;"]
    http = direct(block(conf, "http {"))
    assert http[:3] == ["include /etc/nginx/mime.types;", "default_type application/octet-stream;",
                        "types_hash_max_size 2048;"]
    assert {"access_log /dev/stdout;", "server_tokens off;", "client_max_body_size 10m;",
            "proxy_temp_path /tmp/nginx-proxy;"} <= set(http)
    paths = set(re.findall(r"(?<![\w$^~])/(?:etc|tmp|dev|var|run|usr|srv|opt|home)/[^\s;]*", conf))
    assert paths == {"/etc/nginx/mime.types", "/etc/nginx/tls/cert.pem", "/etc/nginx/tls/key.pem", "/dev/stdout",
                     "/tmp/nginx.pid", "/tmp/nginx-client-body", "/tmp/nginx-proxy", "/tmp/nginx-fastcgi",
                     "/tmp/nginx-uwsgi", "/tmp/nginx-scgi", "/var/lib/berth-acme/webroot"}
    moved = render({"sites": [WEB]}, pid="/run/x.pid", temp_dir="/var/cache/nginx")
    assert "pid /run/x.pid;" in moved and "client_body_temp_path /var/cache/nginx/nginx-client-body;" in moved


def test_paths_nginx_cannot_read_bare_are_quoted() -> None:
    conf = render({"sites": [site({"path": "/a;b", "app": "backend", "strip_prefix": True})]})
    route = location(conf, "api.example.com", '"/a;b"')
    assert route[1:3] == ['rewrite "^/a;b$" / break;', 'rewrite "^/a;b/(.*)$" /$1 break;']


FULL = {
    "rate_limits": {"api": {"rate": "10r/s", "burst": 20}},
    "content_security_policy": "default-src 'self'",
    "sites": [WEB, site({"path": "/", "app": "backend", "rate_limit": "api", "websocket": True},
                        {"path": "/events/", "app": "backend", "sse": True},
                        {"path": "/static/", "app": "frontend", "static_cache": "1d", "strip_prefix": True})],
}


def test_output_is_deterministic_and_tidy() -> None:
    conf = render(FULL)
    assert conf == render(FULL)
    assert conf.endswith("}\n") and not conf.endswith("\n\n")
    assert conf.count("{") == conf.count("}")
    for number, line in enumerate(conf.splitlines(), 1):
        assert line == line.rstrip(), f"line {number} has trailing whitespace: {line!r}"
        assert "\t" not in line
        assert (len(line) - len(line.lstrip())) % 4 == 0, f"line {number} is not indented by 4s: {line!r}"
    assert "\n\n\n" not in conf


def test_proxy_must_be_enabled() -> None:
    with pytest.raises(ValueError, match="settings.proxy is not enabled"):
        render_nginx_conf(load_settings(BASE))
    with pytest.raises(ValueError, match="settings.proxy is not enabled"):
        render({"enabled": False})


def test_module_is_pure() -> None:
    code = "import sys, berth.plan.nginx; print(sorted(m for m in sys.modules if m.split('.')[0] == 'pulumi' " \
           "or m.startswith('pulumi_')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
