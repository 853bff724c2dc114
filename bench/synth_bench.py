"""Synth speed against the import floor, in one run.

Prints: the floor (`python -c "import pulumi, pulumi_docker"`), `berth synth` for each blueprint,
and synth with 10/100/500 generated apps; every figure as the median of N fresh processes and as a
ratio to the floor taken in the same run. Targets: largest blueprint <= 1.3x floor; growth <= 2 ms/app.

usage: .venv/bin/python bench/synth_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "import pulumi, pulumi_docker"
SYNTH = "from berth.synth import synth; import json, sys; synth('dev', {bp!r}, raw_overrides=json.loads(sys.argv[1]))"
# The Pulumi SDK's own cost per app, without berth: the same three resources berth declares per app
# (a component, a RemoteImage, a Container with just an image), registered under the same mocks.
SDK = """
import sys, pulumi, pulumi_docker as docker
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await
from berth.synth import RecordingMonitor, SynthMocks

def app(i):
    parent = pulumi.ComponentResource("bench:app:App", f"app{i}")
    image = docker.RemoteImage(f"image{i}", name=f"ghcr.io/bench/app{i}:1", opts=pulumi.ResourceOptions(parent=parent))
    docker.Container(f"app{i}-0", image=image.image_id, opts=pulumi.ResourceOptions(parent=parent))

mocks = SynthMocks()
pulumi.runtime.set_mocks(mocks, project="bench", stack="bench", preview=False, monitor=RecordingMonitor(mocks, False))
_sync_await(run_pulumi_func(lambda: [app(i) for i in range(int(sys.argv[1]))]))
"""


def timed(code: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def median(code: str, runs: int, *args: str) -> float:
    return statistics.median(timed(code, *args) for _ in range(runs))


def generated_apps(count: int) -> dict:
    apps = {f"app{i}": {"image": f"ghcr.io/bench/app{i}:1", "port": 8000,
                        "healthcheck": {"http": "/health"}, "secrets": {"REDIS_URL": "redis.url"},
                        "depends_on": ["redis"]} for i in range(count)}
    return {"apps": apps, "redis": {}, "proxy": {"sites": []}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    floor = median(FLOOR, runs)
    print(f"import floor: {floor * 1000:7.0f} ms  (1.00x)  [{FLOOR}]")
    for path in sorted((ROOT / "blueprints").glob("*.yaml")):
        t = median(SYNTH.format(bp=path.stem), runs, "{}")
        print(f"synth {path.stem:<18} {t * 1000:7.0f} ms  ({t / floor:.2f}x)")
    sizes = {}
    for count in (10, 100, 500):
        sizes[count] = median(SYNTH.format(bp=None), runs, json.dumps(generated_apps(count)))
        print(f"synth {count:>3} apps          {sizes[count] * 1000:7.0f} ms  ({sizes[count] / floor:.2f}x)")
    slope = (sizes[500] - sizes[100]) / 400 * 1000
    print(f"growth 100->500 apps: {slope:.2f} ms/app")
    sdk = {n: median(SDK, runs, str(n)) for n in (100, 500)}
    per_app_floor = (sdk[500] - sdk[100]) / 400 * 1000
    print(f"Pulumi SDK alone, 100->500 bare apps: {per_app_floor:.2f} ms/app "
          f"(a component, an image and a container with only an image, as berth declares per app)")


if __name__ == "__main__":
    main()
