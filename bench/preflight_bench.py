"""Host preflight time per transport, against the bare connection it rides on, in one run.

Starts the preflight tier's real servers (tests/preflight/preflight_servers.py: an sshd on loopback
with a deploy user in the docker group, a second dockerd with --tlsverify), then prints, as the median
of N runs: the preflight over unix, tcp+TLS and ssh, and each one's floor (the same connection doing
nothing: a lone GET /_ping on the socket, a TCP connect plus TLS handshake, `ssh ... true`) with the ratio to it.

usage: .venv/bin/python bench/preflight_bench.py [--runs N]   (as root: it creates the deploy user)
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "preflight")]

from preflight_servers import running_sshd, running_tls_engine  # noqa: E402

from berth import preflight  # noqa: E402
from berth.settings.host import HostSettings  # noqa: E402

SOCKET = "/var/run/docker.sock"


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def checked(host: HostSettings) -> Callable[[], None]:
    def run() -> None:
        report = preflight.check_host(host)
        assert not report.problems, report.problems

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory(prefix="berth-preflight-bench-") as folder:
        base = Path(folder)
        (base / "sshd").mkdir()
        (base / "dockerd").mkdir()
        with running_sshd(base / "sshd") as sshd, running_tls_engine(base / "dockerd") as engine:
            known = sshd.known_hosts("bench", [sshd.entry()])
            ssh = HostSettings(url=sshd.url, ssh_key=str(sshd.client_key),
                               ssh_opts=["-F", "/dev/null", "-o", f"UserKnownHostsFile={known}"])
            tls = HostSettings(url=engine.url, ca=engine.ca, cert=engine.client.cert, key=engine.client.key)

            def unix_floor() -> None:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(SOCKET)
                    sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
                    while sock.recv(65536):
                        pass

            def tls_floor() -> None:
                context = preflight._tls_context(tls)
                with socket.create_connection(("127.0.0.1", engine.port)) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    pass

            ssh_true = [*preflight.ssh_command(ssh)[:-3], "true"]

            def ssh_floor() -> None:
                subprocess.run(ssh_true, check=True, capture_output=True)

            rows = [("unix", checked(HostSettings(url=f"unix://{SOCKET}")), unix_floor, "GET /_ping alone"),
                    ("tcp+TLS", checked(tls), tls_floor, "TCP connect + TLS handshake"),
                    ("ssh", checked(ssh), ssh_floor, "ssh ... true")]
            print(f"host preflight, median of {runs} runs")
            for name, action, floor, what in rows:
                took, bare = median_ms(action, runs), median_ms(floor, runs)
                print(f"  {name:8} {took:8.1f} ms   floor ({what}) {bare:7.1f} ms   ratio {took / bare:5.2f}x")


if __name__ == "__main__":
    main()
