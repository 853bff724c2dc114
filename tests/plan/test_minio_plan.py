"""MinIO's liveness healthcheck, run by real bash against a stub server (the image has no curl or wget)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import urllib.parse
from http.server import BaseHTTPRequestHandler

import pytest
from httpstub import serving

from berth.plan.minio import LIVE_PATH, healthcheck_test, mc_host


@contextlib.contextmanager
def stub(status: int):
    """An HTTP server answering `status` on the liveness path and 404 elsewhere; yields (port, paths seen)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(status if self.path == LIVE_PATH else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with serving(Handler) as port:
        yield port, seen


def probe(port: int) -> int:
    test = healthcheck_test(port)
    assert test[:3] == ["CMD", "bash", "-c"]
    bash = shutil.which("bash")
    assert bash, "bash is required"
    return subprocess.run([bash, "-c", test[3]], capture_output=True, timeout=10, check=False).returncode


def test_live_server_passes_and_the_path_is_the_liveness_one():
    with stub(200) as (port, seen):
        assert probe(port) == 0
    assert seen == [LIVE_PATH] == ["/minio/health/live"]


@pytest.mark.parametrize("status", [503, 500, 403])
def test_any_other_status_fails(status):
    with stub(status) as (port, _):
        assert probe(port) != 0


def test_nothing_listening_fails():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        assert probe(port) != 0


def test_default_port_is_the_api_port():
    assert "/dev/tcp/127.0.0.1/9000" in healthcheck_test()[3]


def test_mc_host_percent_encodes_the_credentials():
    url = mc_host("berth-admin", "p@ss/w#rd:1")
    assert url == "http://berth-admin:p%40ss%2Fw%23rd%3A1@minio:9000"
    parts = urllib.parse.urlsplit(url)
    assert (parts.hostname, parts.port, urllib.parse.unquote(parts.password or "")) == ("minio", 9000, "p@ss/w#rd:1")
