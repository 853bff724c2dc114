"""Backup tier: blueprints deployed with their backup container on the real engine, backed up, broken, restored.

It reuses the engine tier's instruments (tests/engine: dockerd, the local images, the applier) under
its own stack file (Pulumi.backup.yaml: environment `backup`, so every docker object is named
`<system>-backup-*`), and drives the backups through berth's own CLI (`python -m berth backup|restore`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "engine"))

from applier import Applier, cleanup  # noqa: E402
from engine_config import _blueprint_without, overrides  # noqa: E402
from engine_host import ready_engine  # noqa: E402

from berth.settings import deep_merge, from_stack_files, load_settings  # noqa: E402
from berth.synth import synth  # noqa: E402

STACK = "backup"
PYTHON = sys.executable
# The tier's own schedule: every minute (the schedule test waits for two runs); checks never by themselves.
BACKUPS: dict[str, Any] = {
    "enabled": True,  # the engine tier's overrides switch backups off
    "schedule": "* * * * *",
    "check_schedule": "0 0 1 1 *",
    "retention": {"last": 100},  # the round trip restores by snapshot ID; retention has its own test
    "healthcheck": {"interval": "2s", "timeout": "10s", "retries": 1, "start_period": "0s"},
}


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    """The local engine (started if needed) with the engine tier's images built."""
    # ...and a real MinIO server (its binary from `go install`; scripts/test.sh installs it).
    engine_client = ready_engine("backup", extra_images=("minio",))
    yield engine_client
    engine_client.close()


@dataclass
class Deployed:
    """One blueprint applied with backups on, and the ways the tests talk to it."""

    blueprint: str
    settings: Any
    result: dict[str, Any]
    applier: Applier
    engine: docker.DockerClient

    def name(self, *parts: str) -> str:
        return "-".join((self.settings.name, self.settings.environment, *parts))

    def berth(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`python -m berth ARGS --stack backup --blueprint B`, as an operator runs it."""
        command, *rest = args
        cmd = [PYTHON, "-m", "berth", command, "--stack", STACK, "--blueprint", self.blueprint, *rest]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def exec(self, container: str, *cmd: str, check: bool = True, env: dict[str, str] | None = None) -> str:
        """A command in one of the stack's containers; its stdout."""
        box = self.engine.containers.get(container)
        code, out = box.exec_run(list(cmd), environment=env, demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in out)
        if check and code != 0:
            raise AssertionError(f"{container}: {' '.join(cmd)} exited {code}: {stdout}{stderr}")
        return stdout

    def snapshots(self, repository: str = "local") -> list[dict[str, Any]]:
        out = self.exec(self.name("backup"), "sh", "/berth/restic.sh", repository, "snapshots", "--json")
        return json.loads(out)

    def latest_ids(self, repository: str = "local") -> dict[str, str]:
        """tag -> short ID of the newest snapshot with that tag."""
        found: dict[str, tuple[str, str]] = {}
        for snap in self.snapshots(repository):
            for tag in snap.get("tags") or []:
                if tag != "berth" and (tag not in found or snap["time"] > found[tag][0]):
                    found[tag] = (snap["time"], snap["short_id"])
        return {tag: short for tag, (_, short) in found.items()}

    def health(self) -> str:
        return self.engine.api.inspect_container(self.name("backup"))["State"]["Health"]["Status"]

    def wait_health(self, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.health() != status:
            if time.monotonic() > deadline:
                raise AssertionError(f"backup container not {status} after {timeout}s (is {self.health()})")
            time.sleep(1)


def deploy(engine: docker.DockerClient, blueprint: str, extra: dict[str, Any], raw_extra: dict[str, Any] | None = None,
           drops: list[tuple[str, ...]] | None = None) -> Iterator[Deployed]:
    """Apply the blueprint (proxy off, backups as BACKUPS + extra); always torn down, volumes included.

    raw_extra goes over the engine tier's overrides (e.g. a service it switches off, switched on);
    drops replaces the keys the engine tier leaves out of the blueprint as it is read.
    """
    with _blueprint_without(blueprint, drops):
        written = load_settings({**from_stack_files(STACK), "blueprint": blueprint})
        # Probe the stand-in apps every 2s: the tier is about data, not about the apps' start-up cadence.
        fast = {name: {"healthcheck": {"interval": "2s", "start_period": "0s"}}
                for name, app in written.enabled_apps.items() if app.healthcheck is not None}
        raw = overrides(blueprint, deep_merge({"proxy": {"enabled": False}, "apps": fast,
                                               "backups": deep_merge(BACKUPS, extra)}, raw_extra or {}))
        result = synth(STACK, blueprint, reveal=True, raw_overrides=raw)
        settings = load_settings({**deep_merge(from_stack_files(STACK), raw), "blueprint": blueprint})
    applier = Applier(engine, result)
    prefix = f"{settings.name}-{settings.environment}-"
    cleanup(engine, applier.stack, prefix)
    try:
        report = applier.apply()
        print(f"backup tier: {blueprint}: {report['containers']} containers ready in {report['seconds']:.1f}s",
              flush=True)
        yield Deployed(blueprint, settings, result, applier, engine)
    finally:
        applier.teardown(keep_retained=False)
        cleanup(engine, applier.stack, prefix)


os.environ.setdefault("DOCKER_BUILDKIT", "0")
