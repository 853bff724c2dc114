"""The local Docker engine of the engine tier: start, restart and reach dockerd; the image build lock.

Shared by conftest.py, the tests and bench/engine_bench.py (a module of its own: `conftest` is not
importable by name when several test directories have one).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import requests

HERE = Path(__file__).resolve().parent
SOCKET = "unix:///var/run/docker.sock"
DOCKERD_LOG = Path("/tmp/dockerd.log")
DOCKERD_PID = Path("/var/run/docker.pid")
DOCKERD_START_TIMEOUT = 90
# Numbers the tier measures, printed once more at the end of the session.
METRICS: dict[str, dict[str, object]] = {}


class EngineUnavailable(RuntimeError):
    """dockerd could not be reached or started."""


# -- dockerd -----------------------------------------------------------------------------------


def client() -> docker.DockerClient:
    return docker.DockerClient(base_url=SOCKET, timeout=300, max_pool_size=32)


def ping() -> bool:
    try:
        engine = client()
        try:
            return bool(engine.ping())
        finally:
            engine.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def start_dockerd() -> subprocess.Popen:
    """Start dockerd in its own session (log: /tmp/dockerd.log) and wait until it answers."""
    with DOCKERD_LOG.open("ab") as log:
        process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    deadline = time.monotonic() + DOCKERD_START_TIMEOUT
    while time.monotonic() < deadline:
        if ping():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.5)
    tail = DOCKERD_LOG.read_text(errors="replace").splitlines()[-20:]
    raise EngineUnavailable("dockerd did not come up (see /tmp/dockerd.log):\n" + "\n".join(tail))


def dockerd_pid() -> int:
    """The running dockerd's pid, from its pid file."""
    return int(DOCKERD_PID.read_text().strip())


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Hold the image build lock (tests/engine/images/build.py): no image build runs meanwhile."""
    module = load_build_module()
    module.LOCK_FILE.touch(exist_ok=True)
    with module.LOCK_FILE.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def restart_dockerd(timeout: float = 240) -> float:
    """SIGTERM dockerd (it stops the containers, as on a host shutdown), start it again; seconds it took."""
    begin = time.monotonic()
    pid = dockerd_pid()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
        if " Z " in stat:  # a zombie: it has exited (its parent just has not reaped it)
            break
        if time.monotonic() > deadline:
            raise EngineUnavailable(f"dockerd (pid {pid}) did not exit within {timeout:.0f}s of SIGTERM")
        time.sleep(0.2)
    start_dockerd()
    return time.monotonic() - begin


def load_build_module():
    """tests/engine/images/build.py as a module (its directory is not a package)."""
    if "berth_engine_images_build" in sys.modules:
        return sys.modules["berth_engine_images_build"]
    spec = importlib.util.spec_from_file_location("berth_engine_images_build", HERE / "images" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module




def ready_engine(tier: str, extra_images: tuple[str, ...] = ()) -> docker.DockerClient:
    """A client of the local engine (dockerd started if none answers) with every berth-engine/* image built.

    extra_images: images built only when named (build.ON_DEMAND), e.g. the backup tier's minio.

    Shared by the session `engine` fixtures of the engine, backup and promote tiers. Nothing is
    skipped: a missing engine or image FAILS the tier, named in the message.
    """
    import pytest  # a test helper; bench/engine_bench.py imports this module without pytest's plugins

    if not ping():
        print(f"{tier} tier: docker info fails; starting dockerd (log: {DOCKERD_LOG})", flush=True)
        try:
            start_dockerd()
        except (EngineUnavailable, OSError) as error:
            pytest.fail(f"the {tier} tier needs a Docker engine: {error}")
    build = load_build_module()
    begin = time.monotonic()
    try:
        # under the shared build lock; reuses what is built (by content)
        images = build.ensure_images((*build.IMAGES, *extra_images))
    except (build.BuildError, OSError, subprocess.SubprocessError) as error:
        pytest.fail(f"the {tier} tier's images could not be built: {error}")
    print(f"{tier} tier: images ready in {time.monotonic() - begin:.1f}s: {images}", flush=True)
    engine = client()
    for ref in (*images.values(), *(ref.replace(":latest", ":v2") for ref in images.values())):
        try:
            engine.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            engine.close()
            pytest.fail(f"image {ref} is missing after ensure_images()")
    return engine
