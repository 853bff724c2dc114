"""Shared test fixtures: a valid baseline stack config and the one-bad-key helper built on it.

The baseline switches on every settings section (host, registries, logging, secrets, all five data
services, a job, two apps and the proxy), so a single changed key can exercise any rule.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from berth.errors import ConfigError
from berth.settings import Settings, load_settings

DIGEST = "sha256:" + "a" * 64

BASELINE: dict[str, Any] = {
    "environment": "prod",
    "domain": "example.com",
    "protect_data": True,
    "host": {"url": "ssh://deploy@prod.example.com:22", "ssh_opts": ["-o", "StrictHostKeyChecking=yes"]},
    "images": {"nginx": "registry.example.com:5000/mirror/nginx"},
    "registries": [{"address": "ghcr.io", "username": "bot", "password": "registry-password-123"}],
    "logging": {"driver": "json-file", "max_size": "20m", "max_file": 5},
    "secrets": {"jwt": {"length": 48}, "api-key": {"value": "given-api-key-value"}},
    "postgres": {"databases": {"shop": {"owner": "shop_owner"}, "analytics": {}}},
    "redis": {"persistence": "rdb", "maxmemory": "256m"},
    "rabbitmq": {
        "vhosts": ["/", "events"],
        "users": {"worker": {"vhosts": ["events"]}},
        "queues": [{"name": "jobs", "vhost": "events"}],
    },
    "minio": {"buckets": ["uploads"]},
    "elk": {},
    "jobs": {
        "migrate": {
            "image": "ghcr.io/acme/backend:1.2.3",
            "command": ["migrate"],
            "secrets": {"DATABASE_URL": "postgres.databases.shop.url"},
            "depends_on": ["postgres"],
        },
    },
    "apps": {
        "backend": {
            "image": "ghcr.io/acme/backend:1.2.3",
            "port": 8000,
            "resources": {"limits": {"cpus": 2, "memory": "4g"}, "reservations": {"cpus": 1, "memory": "2g"}},
            "healthcheck": {"http": "/health", "interval": "30s"},
            "env": {"BASE_URL": "https://{domain}"},
            "secrets": {
                "DATABASE_URL": "postgres.databases.shop.url",
                "REDIS_URL": "redis.url",
                "JWT_SECRET": "secrets.jwt",
            },
            "volumes": {"uploads": "/app/uploads"},
            "depends_on": ["postgres", "redis", "migrate"],
        },
        "frontend": {
            "image": f"ghcr.io/acme/frontend@{DIGEST}",
            "port": 3000,
            "replicas": 2,
            "healthcheck": {"command": ["wget", "-q", "-O-", "http://127.0.0.1:3000/"]},
            "depends_on": ["backend"],
        },
    },
    "proxy": {
        "rate_limits": {"api": {"rate": "10r/s", "burst": 20}},
        "sites": [
            {"server_names": ["{domain}", "www.{domain}"], "routes": [{"path": "/", "app": "frontend"}]},
            {"server_names": ["api.{domain}"], "routes": [{"path": "/", "app": "backend", "rate_limit": "api"}]},
        ],
    },
}

# Marks a key to be removed by `changed()`.
DELETE = object()
_STEP = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def parse_path(path: str) -> list[str | int]:
    """``proxy.sites[1].routes[0].app`` -> ["proxy", "sites", 1, "routes", 0, "app"] (the loader's path form)."""
    steps: list[str | int] = []
    for index, key in _STEP.findall(path):
        steps.append(int(index) if index else key)
    return steps


def format_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """The inverse of `parse_path`, as ConfigError prints paths."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def changed(changes: Mapping[str, object] | None = None) -> dict[str, Any]:
    """A fresh copy of the baseline with each ``path: value`` applied (DELETE removes the key)."""
    raw = copy.deepcopy(BASELINE)
    for path, value in (changes or {}).items():
        steps = parse_path(path)
        node: Any = raw
        for step, following in zip(steps, steps[1:], strict=False):
            if isinstance(step, str) and step not in node:
                node[step] = [] if isinstance(following, int) else {}
            node = node[step]
        last = steps[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(last, int) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    return raw


@pytest.fixture(scope="session")
def raw_config() -> Callable[..., dict[str, Any]]:
    """``raw_config({"apps.backend.port": 9000})`` -> the baseline with that change, as a fresh dict."""
    return changed


@pytest.fixture(scope="session")
def format_loc() -> Callable[[tuple[str | int, ...]], str]:
    """("proxy", "sites", 1) -> "proxy.sites[1]", the path form of ConfigError."""
    return format_path


@pytest.fixture(scope="session")
def valid() -> Callable[..., Settings]:
    """Validate the baseline with changes that must be accepted."""

    def load(changes: Mapping[str, object] | None = None) -> Settings:
        return load_settings(changed(changes))

    return load


@pytest.fixture(scope="session")
def assert_config_error() -> Callable[..., ConfigError]:
    """Assert that the baseline with `changes` fails with exactly one problem at `path` whose rule has `rule`."""

    def check(path: str, rule: str, changes: Mapping[str, object]) -> ConfigError:
        with pytest.raises(ConfigError) as caught:
            load_settings(changed(changes))
        error = caught.value
        assert error.problems == [(path, error.problems[0][1])], str(error)
        assert rule in error.problems[0][1], str(error)
        assert str(error) == f"berth:{path}: {error.problems[0][1]}"
        return error

    return check
