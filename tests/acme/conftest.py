"""ACME tier: a stack in tls.mode letsencrypt on the real Docker engine, against a real Pebble.

Uses the engine tier's instruments (tests/engine: the applier, the probes, the image builder). The
stack is environment `acme` (docker names `berth-acme-*`) on free loopback ports, so it never meets
another tier's stack on the shared engine. Missing Pebble, Docker or images FAIL the tier; nothing skips.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

ENGINE = Path(__file__).resolve().parents[1] / "engine"
sys.path.insert(0, str(ENGINE))

from engine_host import client, load_build_module, ping  # noqa: E402
from measured import METRICS  # noqa: E402
from pebble import Pebble, PebbleMissing, free_port  # noqa: E402

IMAGES = ("nginx", "standin", "certbot")


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The local engine with the images this tier runs."""
    if not ping():
        pytest.fail("the ACME tier needs a running Docker engine (bash .ci/engine.sh)")
    build = load_build_module()
    try:
        # Every image already built from its current directory: no need to queue for the build lock
        # behind other tiers' builds. Anything missing or changed is built under the lock.
        base = build._image_id(build.BASE)
        if base is None or any(build._image_id(f"{build.PREFIX}/{name}:{build.content_key(build.HERE / name, base)}")
                               is None for name in IMAGES):
            build.ensure_images(IMAGES)
    except (build.BuildError, OSError, subprocess.SubprocessError) as error:
        pytest.fail(f"the ACME tier's images could not be built: {error}")
    engine_client = client()
    yield engine_client
    engine_client.close()


@pytest.fixture(scope="session")
def ports() -> tuple[int, int]:
    """(http, https) the stack's nginx publishes on 127.0.0.1."""
    return free_port(), free_port()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory, ports: tuple[int, int]) -> Iterator[Pebble]:
    """Pebble validating HTTP-01 on the stack's published http port."""
    try:
        ca = Pebble(tmp_path_factory.mktemp("pebble"), http_port=ports[0]).start()
    except PebbleMissing as error:
        pytest.fail(str(error))
    yield ca
    ca.stop()
    print(f"pebble log: {ca.log}", flush=True)


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest's hook signature
    if METRICS:
        terminalreporter.section("ACME tier measurements")
        for name, values in METRICS.items():
            terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@pytest.fixture(scope="session", autouse=True)
def acme_clock() -> Iterator[None]:
    begin = time.monotonic()
    yield
    METRICS.setdefault("acme tier", {})["seconds"] = round(time.monotonic() - begin, 1)
