"""Pure Redis values: the config file, the URL and the healthcheck."""

from __future__ import annotations

from urllib.parse import quote

from berth.settings.services import RedisSettings
from berth.units import mebibytes

CONF_PATH = "/usr/local/etc/redis/berth.conf"
PORT = 6379


def redis_conf(settings: RedisSettings, password: str) -> str:
    """redis.conf: listen inside the stack, require the password, persist to /data."""
    lines = [
        "bind * -::*",
        "protected-mode no",
        f"port {PORT}",
        "dir /data",
        f'requirepass "{_escape(password)}"',
        f"appendonly {'yes' if settings.persistence == 'aof' else 'no'}",
        "appendfsync everysec",
    ]
    # RDB snapshots: keep Redis's defaults for rdb and aof (a snapshot speeds restarts); none turns them off.
    lines.append('save ""' if settings.persistence == "none" else "save 3600 1 300 100 60 10000")
    if settings.maxmemory is not None:
        lines.append(f"maxmemory {mebibytes(settings.maxmemory)}mb")
    return "\n".join(lines) + "\n"


def redis_url(password: str, host: str) -> str:
    """``redis://:<password>@host:6379/0`` with the password percent-encoded."""
    return f"redis://:{quote(password, safe='')}@{host}:{PORT}/0"


def healthcheck_test() -> list[str]:
    """``redis-cli ping`` must answer PONG; the password comes from REDISCLI_AUTH in the env."""
    return ["CMD-SHELL", "redis-cli -h 127.0.0.1 ping | grep -q PONG"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
