"""Promotion engine tier: a real Docker engine, a real registry (Debian's docker-registry), two stacks.

The engine tier's instruments (tests/engine: the applier, the probes, the engine host) are shared;
nothing here is skipped: a missing engine, image or registry binary FAILS the tier.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from engine_host import ready_engine  # noqa: E402
from registry import free_port  # noqa: E402

REGISTRY_BINARY = Path("/usr/bin/docker-registry")  # Debian's docker-registry (distribution v2)
REGISTRY_CONFIG = """version: 0.1
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """A client of the local engine, started if none answers, with the berth-engine/* images built."""
    engine_client = ready_engine("promotion")
    yield engine_client
    engine_client.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real image registry on loopback (dockerd trusts 127.0.0.0/8 without TLS): its host:port."""
    if not REGISTRY_BINARY.is_file():
        pytest.fail(f"{REGISTRY_BINARY} is missing: apt-get install docker-registry (scripts/test.sh does)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    log = (root / "registry.log").open("w")
    process = subprocess.Popen([str(REGISTRY_BINARY), "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://{address}/v2/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not answer on {address}: {(root / 'registry.log').read_text()}")
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(10)
        log.close()
