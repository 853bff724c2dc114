"""MinIO plan: the liveness healthcheck. Pure: no pulumi import."""

from __future__ import annotations

from urllib.parse import quote

API_PORT = 9000
CONSOLE_PORT = 9001
LIVE_PATH = "/minio/health/live"


def mc_host(user: str, password: str, host: str = "minio") -> str:
    """An ``MC_HOST_<alias>`` value, ``http://user:password@host:9000``, with both credentials percent-encoded."""
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{API_PORT}"


def healthcheck_test(port: int = API_PORT) -> list[str]:
    """GET ``/minio/health/live`` and require a 200, with bash builtins alone.

    The MinIO image has bash but neither curl nor wget since late 2023 (minio/minio#18373), so the
    request goes through bash's ``/dev/tcp``; ``read`` takes the status line's code. A server that
    never answers is cut off by the healthcheck's timeout.
    """
    request = f"GET {LIVE_PATH} HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n"
    script = (f"exec 3<>/dev/tcp/127.0.0.1/{port} && printf '{request}' >&3 && "
              'read -r _ code _ <&3 && [ "$code" = 200 ]')
    return ["CMD", "bash", "-c", script]
