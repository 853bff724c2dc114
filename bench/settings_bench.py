"""Reading hostile stack files costs no more than reading a good one, in one run.

Prints the time and peak memory of reading and validating the prod stack (the baseline), then of
refusing the worst inputs the bounded reader knows: a billion-laughs alias bomb (10^10 nodes once
expanded), a merge-key bomb, YAML nested 100,000 deep, a 1 MiB file, and a 1,200-app depends_on
ring; each as a ratio to the baseline measured in the same run.

usage: .venv/bin/python bench/settings_bench.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from berth.errors import ConfigError  # noqa: E402
from berth.settings import from_stack_files, load_settings  # noqa: E402


def laughs(levels: int, merge: bool = False) -> str:
    first = "a0: &a0 {" + ", ".join(f"k{i}: x" for i in range(10)) + "}" if merge else "a0: &a0 [" + ", ".join(
        ["lol"] * 10) + "]"
    lines = [first] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    use = f"{{web: {{<<: *a{levels - 1}}}}}" if merge else f"*a{levels - 1}"
    return "\n".join(lines) + f"\nconfig:\n  berth:environment: bench\n  berth:apps: {use}\n"


def ring(size: int) -> str:
    apps = "".join(f"    a{i}: {{image: r/app:1, port: 8000, depends_on: [a{(i + 1) % size}]}}\n" for i in range(size))
    return f"config:\n  berth:environment: bench\n  berth:apps:\n{apps}"


CASES = {
    "alias bomb (10^10 nodes)": laughs(10),
    "merge-key bomb": laughs(7, merge=True),
    "nested 100,000 deep": "config:\n  berth:apps: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "1 MiB file": "config:\n  berth:environment: bench\n" + "#" * 1024 * 1024 + "\n",
    "1,200-app depends_on ring": ring(1200),
}


def measure(read: Callable[[], object], runs: int) -> tuple[float, int]:
    times, peaks = [], []
    for _ in range(runs):
        tracemalloc.start()
        start = time.perf_counter()
        try:
            read()
        except ConfigError:
            pass
        times.append(time.perf_counter() - start)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    work = Path(tempfile.mkdtemp(prefix="berth-settings-bench-"))
    try:
        shutil.copyfile(ROOT / "Pulumi.yaml", work / "Pulumi.yaml")
        shutil.copyfile(ROOT / "Pulumi.prod.yaml", work / "Pulumi.prod.yaml")
        base_time, base_peak = measure(lambda: load_settings(from_stack_files("prod", work)), runs)
        print(f"{'prod stack (praxifi), accepted':34} {base_time * 1000:8.1f} ms {base_peak / 2**20:7.1f} MiB  1.00x")
        for name, text in CASES.items():
            (work / "Pulumi.bench.yaml").write_text(text)
            took, peak = measure(lambda: load_settings(from_stack_files("bench", work)), runs)
            print(f"{name + ', refused':34} {took * 1000:8.1f} ms {peak / 2**20:7.1f} MiB  "
                  f"{took / base_time:5.2f}x time  {peak / base_peak:5.2f}x memory")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
